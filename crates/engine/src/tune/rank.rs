//! `lora: {rank: auto}`: a LoRA rank from how much the data asks the model to learn.
//!
//! The rule, from three measurements of the training set:
//! - `tokens`: loss-carrying (completion) tokens in the training set;
//! - `base_loss`: the base model's mean loss on them (nats per token, on a sample), i.e. how
//!   surprising the targets are to the model before training;
//! - `diversity`: distinct token ids among those tokens divided by their number (1 when
//!   every target token is different, near 0 for a few answers repeated).
//!
//! `nats = tokens × base_loss × (0.5 + diversity)` estimates the information the adapter
//! has to absorb: more examples, targets the model finds harder, and less repetition all
//! raise it. The rank grows with its square root (a rank-`r` update has `r (d_in + d_out)`
//! parameters, and more data supports more parameters at a diminishing rate):
//! `rank = 2^round(log2(sqrt(nats / 200)))`, clamped to `[4, 64]`. The constant 200 puts
//! the quickstart's data (about 4,000 answer tokens of English past tenses that
//! SmolLM2 finds very surprising in the chat format) at rank 8, the rank found good by hand
//! there; a ten-times larger or much harder dataset lands at 16 to 32.

use serde::{Deserialize, Serialize};

/// The smallest rank the rule picks.
pub const MIN_RANK: u32 = 4;
/// The largest rank the rule picks.
pub const MAX_RANK: u32 = 64;
const NATS_PER_RANK_SQUARED: f64 = 200.0;

/// What was measured, the rank chosen, and why (written to `rank.json` in a train out_dir).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankChoice {
    /// The rank.
    pub rank: u32,
    /// Loss-carrying tokens in the training set.
    pub tokens: u64,
    /// The base model's mean loss on a sample of them (nats per token).
    pub base_loss: f64,
    /// Distinct token ids / tokens.
    pub diversity: f64,
    /// Examples the base loss was measured on.
    pub sampled_examples: usize,
    /// The rule applied to these numbers, in words.
    pub reason: String,
}

/// Applies the rule (see the module doc).
pub fn choose_rank(tokens: u64, base_loss: f64, diversity: f64, sampled: usize) -> RankChoice {
    let base_loss = if base_loss.is_finite() {
        base_loss.max(0.0)
    } else {
        0.0
    };
    let diversity = diversity.clamp(0.0, 1.0);
    let nats = tokens as f64 * base_loss * (0.5 + diversity);
    let raw = (nats / NATS_PER_RANK_SQUARED).sqrt();
    let pow2 = if raw > 0.0 {
        raw.log2().round().clamp(0.0, 30.0) as u32
    } else {
        0
    };
    let rank = (1u32 << pow2).clamp(MIN_RANK, MAX_RANK);
    let reason = format!(
        "{tokens} answer tokens x base loss {base_loss:.2} nats x (0.5 + diversity {diversity:.2}) = {nats:.0} nats to learn; sqrt({nats:.0} / {NATS_PER_RANK_SQUARED}) = {raw:.1}, nearest power of two {}, within [{MIN_RANK}, {MAX_RANK}]: rank {rank}",
        1u64 << pow2
    );
    RankChoice {
        rank,
        tokens,
        base_loss,
        diversity,
        sampled_examples: sampled,
        reason,
    }
}

/// Distinct values among `ids` divided by their number (0 for none).
pub fn diversity(ids: impl IntoIterator<Item = u32>) -> f64 {
    let mut all: Vec<u32> = ids.into_iter().collect();
    let n = all.len();
    if n == 0 {
        return 0.0;
    }
    all.sort_unstable();
    all.dedup();
    all.len() as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn larger_harder_and_more_varied_data_get_a_higher_rank() {
        let base = choose_rank(4_000, 3.0, 0.4, 64);
        assert_eq!(base.rank, 8, "{}", base.reason);
        let larger = choose_rank(40_000, 3.0, 0.4, 64);
        let harder = choose_rank(4_000, 12.0, 0.4, 64);
        let repetitive = choose_rank(4_000, 3.0, 0.0, 64);
        assert!(larger.rank > base.rank, "{}", larger.reason);
        assert!(harder.rank > base.rank, "{}", harder.reason);
        assert!(repetitive.rank < base.rank, "{}", repetitive.reason);
        // Monotone in each input.
        let mut last = 0;
        for tokens in [10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000] {
            let r = choose_rank(tokens, 2.0, 0.5, 8).rank;
            assert!(r >= last);
            last = r;
        }
        assert!(base.reason.contains("4000 answer tokens") && base.reason.contains("rank 8"));
    }

    #[test]
    fn the_rank_stays_in_bounds_on_extreme_or_broken_input() {
        assert_eq!(choose_rank(0, 3.0, 0.5, 0).rank, MIN_RANK);
        assert_eq!(choose_rank(10, f64::NAN, 0.5, 1).rank, MIN_RANK);
        assert_eq!(choose_rank(u64::MAX / 2, 50.0, 1.0, 64).rank, MAX_RANK);
        assert_eq!(diversity([1, 1, 2, 3]), 0.75);
        assert_eq!(diversity([]), 0.0);
    }
}
