//! Seeded train/valid/test splits that stay put when the data is edited.
//!
//! Each example goes to a split by a hash of the seed and its input (its prompt, see
//! [`Example::split_key`]), not by its position in a shuffled list. Editing, adding or
//! removing one row therefore touches only that row's split (editing an answer never moves
//! it); every other example keeps its split, so downstream stages whose split did not change
//! are cut off early instead of retraining. The price is that split sizes match the
//! requested fractions only approximately (binomially), which is stated in the stats.

use super::Example;
use serde::{Deserialize, Serialize};

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data.
    Train,
    /// Validation data (early stopping, model selection).
    Valid,
    /// Held-out test data.
    Test,
}

impl Split {
    /// All splits in file order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// The split's file stem: `train`, `valid`, `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

pub use pipe_schema::ingest::SplitSpec;

/// The split an example belongs to under `spec`.
pub fn assign_split(example: &Example, spec: &SplitSpec) -> Split {
    split_of_draw(split_draw(example, spec), spec)
}

/// The split that draw `u` (see [`split_draw`]) falls in under `spec`.
pub fn split_of_draw(u: f64, spec: &SplitSpec) -> Split {
    if u < spec.test {
        Split::Test
    } else if u < spec.test + spec.valid {
        Split::Valid
    } else {
        Split::Train
    }
}

/// The example's uniform draw in `[0, 1)` under `spec`: it picks the split, and orders the
/// rows within one, so that any first rows of a split (a `max_examples` limit) are a random
/// sample of it rather than the first rows of the source, which is often sorted (by word,
/// by length, by category).
pub fn split_draw(example: &Example, spec: &SplitSpec) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"pipe-split-v1");
    hasher.update(&spec.seed.to_le_bytes());
    hasher.update(example.split_key().as_bytes());
    let bytes: [u8; 8] = hasher.finalize().as_bytes()[..8]
        .try_into()
        .expect("8 bytes");
    // 53 bits give a uniform double in [0, 1).
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(i: usize) -> Example {
        Example::Text {
            text: format!("example {i}"),
        }
    }

    #[test]
    fn fractions_are_close_on_many_rows() {
        let spec = SplitSpec::default();
        let n = 10_000;
        let mut counts = [0usize; 3];
        for i in 0..n {
            counts[assign_split(&text(i), &spec) as usize] += 1;
        }
        // Binomial sd at p=0.1, n=10k is 30; allow 5 sd.
        assert!((counts[1] as i64 - 1000).abs() < 150, "{counts:?}");
        assert!((counts[2] as i64 - 1000).abs() < 150, "{counts:?}");
    }

    #[test]
    fn seed_changes_the_assignment() {
        let a = SplitSpec::default();
        let b = SplitSpec { seed: 1, ..a };
        let moved = (0..1000)
            .filter(|&i| assign_split(&text(i), &a) != assign_split(&text(i), &b))
            .count();
        assert!(moved > 100, "{moved}");
    }

    #[test]
    fn the_same_prompt_always_lands_in_the_same_split() {
        let spec = SplitSpec::default();
        for i in 0..200 {
            let a = Example::Completion {
                prompt: format!("q{i}"),
                completion: "x".into(),
                category: None,
                choices: Vec::new(),
            };
            let b = Example::Completion {
                prompt: format!("q{i}"),
                completion: "y".into(),
                category: None,
                choices: Vec::new(),
            };
            assert_eq!(assign_split(&a, &spec), assign_split(&b, &spec));
        }
    }

    #[test]
    fn bad_fractions_are_rejected() {
        assert!(
            SplitSpec {
                valid: 0.5,
                test: 0.5,
                seed: 0
            }
            .validate()
            .is_err()
        );
        assert!(
            SplitSpec {
                valid: -0.1,
                test: 0.1,
                seed: 0
            }
            .validate()
            .is_err()
        );
        assert!(SplitSpec::default().validate().is_ok());
    }

    proptest! {
        #[test]
        fn editing_one_row_moves_no_other_row(n in 2usize..200, edited in 0usize..200, seed in 0u64..1000) {
            let edited = edited % n;
            let spec = SplitSpec { seed, ..SplitSpec::default() };
            let before: Vec<_> = (0..n).map(|i| assign_split(&text(i), &spec)).collect();
            let after: Vec<_> = (0..n)
                .map(|i| if i == edited { Example::Text { text: "changed".into() } } else { text(i) })
                .map(|e| assign_split(&e, &spec))
                .collect();
            for i in (0..n).filter(|&i| i != edited) {
                prop_assert_eq!(before[i], after[i]);
            }
        }
    }
}
