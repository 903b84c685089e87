//! Per-request token choice for the serving batch: greedy, or temperature sampling with
//! top-k, top-p (nucleus, Holtzman et al. 2019, <https://arxiv.org/abs/1904.09751>) and
//! min-p (Nguyen et al. 2024, <https://arxiv.org/abs/2407.01082>) filters, a repetition
//! penalty (Keskar et al. 2019, CTRL, <https://arxiv.org/abs/1909.05858>) and log
//! probabilities.
//!
//! Rows of one batch ask for different settings, so each row's logits are handled here on
//! the CPU, one row at a time (a 49k-entry row is a few hundred microseconds), with a
//! random stream seeded per request: the same seed gives the same text whatever else is in
//! the batch. Greedy rows with no penalty and no log probabilities never come here: one
//! batched argmax on the device serves them (see [`Sampler::needs_logits`]).
//!
//! Order, as in mlx-lm's `make_logits_processors` + `make_sampler`: penalty on the logits,
//! log probabilities of the penalized logits (before temperature, so they describe the
//! model rather than the sampler), then temperature and the filters.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One request's sampling settings (already validated).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables it.
    pub top_k: usize,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 disables it.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of recent tokens; 1 disables it.
    pub repetition_penalty: f32,
    /// How many recent tokens (prompt and completion) the penalty looks at.
    pub repetition_context: usize,
    /// The random stream's seed.
    pub seed: u64,
    /// Log probabilities to report: `Some(n)` gives the chosen token's and the `n` most
    /// likely alternatives'.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_context: 20,
            seed: 0,
            logprobs: None,
        }
    }
}

/// A chosen token with its log probabilities when they were asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The token id.
    pub id: u32,
    /// Its log probability.
    pub logprob: Option<f32>,
    /// The most likely tokens with theirs, best first.
    pub top: Vec<(u32, f32)>,
}

/// One request's sampler: its settings and random stream.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler whose stream starts at `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Whether this row needs its logits on the CPU (otherwise a device argmax will do).
    pub fn needs_logits(&self) -> bool {
        self.params.temperature > 0.0
            || self.params.repetition_penalty != 1.0
            || self.params.logprobs.is_some()
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Chooses the next token from one row's `logits` (modified in place) given the
    /// sequence so far (`history`: prompt then completion).
    pub fn choose(&mut self, logits: &mut [f32], history: &[u32]) -> Choice {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let from = history.len().saturating_sub(p.repetition_context);
            let mut seen: Vec<u32> = history[from..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        let log_z = log_sum_exp(logits);
        let id = if p.temperature <= 0.0 {
            argmax(logits)
        } else {
            self.sample(logits)
        };
        let p = &self.params;
        let (logprob, top) = match p.logprobs {
            None => (None, Vec::new()),
            Some(n) => {
                let top = top_n(logits, n)
                    .into_iter()
                    .map(|i| (i, logits[i as usize] - log_z))
                    .collect();
                (Some(logits[id as usize] - log_z), top)
            }
        };
        Choice { id, logprob, top }
    }

    /// Temperature, then top-k, top-p and min-p, then a draw from what is left.
    fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // Candidates as (id, unnormalised probability), most likely first.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp()))
            .filter(|(_, w)| *w > 0.0)
            .collect();
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f32 = cand.iter().map(|c| c.1).sum();
        if p.top_p < 1.0 {
            // The smallest prefix whose mass reaches top_p (the top token always stays).
            let mut mass = 0.0;
            let mut keep = 0;
            for c in &cand {
                keep += 1;
                mass += c.1 / total;
                if mass >= p.top_p {
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        if p.min_p > 0.0
            && let Some(&(_, best)) = cand.first()
        {
            let floor = best * p.min_p;
            cand.retain(|c| c.1 >= floor);
        }
        let total: f32 = cand.iter().map(|c| c.1).sum();
        let mut draw = self.rng.random::<f32>() * total;
        for &(id, w) in &cand {
            if draw < w {
                return id;
            }
            draw -= w;
        }
        cand.last().map_or(0, |c| c.0)
    }
}

/// The index of the largest value (the first on ties, as MLX's argmax).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn log_sum_exp(v: &[f32]) -> f32 {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = v.iter().map(|x| (x - max).exp()).sum();
    max + sum.ln()
}

/// The `n` largest entries' indices, largest first.
fn top_n(v: &[f32], n: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..v.len() as u32).collect();
    let n = n.min(idx.len());
    if n == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(n - 1, |a, b| v[*b as usize].total_cmp(&v[*a as usize]));
    idx.truncate(n);
    idx.sort_unstable_by(|a, b| v[*b as usize].total_cmp(&v[*a as usize]));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(f: impl FnOnce(&mut SamplingParams)) -> Sampler {
        let mut p = SamplingParams::default();
        f(&mut p);
        Sampler::new(p)
    }

    #[test]
    fn greedy_picks_the_largest_and_reports_normalised_logprobs() {
        let mut s = sampler(|p| p.logprobs = Some(2));
        let mut logits = vec![0.0, 2.0, 1.0, -1.0];
        let c = s.choose(&mut logits, &[]);
        assert_eq!(c.id, 1);
        let z: f32 = [0.0f32, 2.0, 1.0, -1.0].iter().map(|x| x.exp()).sum();
        assert!((c.logprob.unwrap() - (2.0 - z.ln())).abs() < 1e-5);
        assert_eq!(c.top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn repetition_penalty_demotes_recent_tokens() {
        let mut s = sampler(|p| p.repetition_penalty = 4.0);
        let mut logits = vec![1.0, 3.0, 2.0];
        // Token 1 appeared: 3 / 4 < 2, so token 2 wins.
        assert_eq!(s.choose(&mut logits, &[1]).id, 2);
        // Outside the context window it is not penalised.
        let mut s = sampler(|p| {
            p.repetition_penalty = 4.0;
            p.repetition_context = 1;
        });
        let mut logits = vec![1.0, 3.0, 2.0];
        assert_eq!(s.choose(&mut logits, &[1, 0]).id, 1);
    }

    #[test]
    fn filters_restrict_the_draw() {
        // Probabilities about 0.49, 0.44, 0.07, 0.0004.
        let logits = vec![2.0, 1.9, 0.0, -5.0];
        for seed in 0..50 {
            let mut s = sampler(|p| {
                p.temperature = 1.0;
                p.top_k = 1;
                p.seed = seed;
            });
            assert_eq!(s.choose(&mut logits.clone(), &[]).id, 0);
            let mut s = sampler(|p| {
                p.temperature = 1.0;
                p.top_p = 0.45;
                p.seed = seed;
            });
            assert_eq!(s.choose(&mut logits.clone(), &[]).id, 0);
            let mut s = sampler(|p| {
                p.temperature = 1.0;
                p.min_p = 0.5;
                p.seed = seed;
            });
            assert!(s.choose(&mut logits.clone(), &[]).id <= 1);
        }
    }

    #[test]
    fn a_seed_gives_the_same_draws_and_temperature_spreads_them() {
        let logits = vec![0.5, 0.4, 0.3, 0.2, 0.1];
        let draws = |seed| {
            let mut s = sampler(|p| {
                p.temperature = 1.0;
                p.seed = seed;
            });
            (0..64)
                .map(|_| s.choose(&mut logits.clone(), &[]).id)
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let distinct: std::collections::BTreeSet<u32> = draws(7).into_iter().collect();
        assert!(distinct.len() >= 4, "{distinct:?}");
    }
}
