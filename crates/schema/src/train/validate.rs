//! The value checks of the trainer options, run when a pipeline loads (and by the trainer
//! for options built in code), each naming the key it concerns.

use super::options::{ALL_TARGETS, Method, TrainConfig, TrainOptionsAuto};
use crate::{Auto, FieldError};

impl TrainConfig {
    /// The checks of [`TrainOptionsAuto::validate`], for options built in code.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.clone()
            .with_sizes(Auto::Value(self.batch_size), Auto::Value(self.lora.rank))
            .validate()
    }
}

impl TrainOptionsAuto {
    /// Checks every value that can be checked before anything runs. The first problem is
    /// returned with the path of its key.
    pub fn validate(&self) -> Result<(), FieldError> {
        let lora = &self.lora;
        if let Auto::Value(rank) = lora.rank
            && rank < 1
        {
            return Err(FieldError::at(
                "lora.rank",
                format!("must be at least 1 (or `auto`), got {rank}"),
            ));
        }
        if !(0.0..1.0).contains(&lora.dropout) {
            return Err(FieldError::at(
                "lora.dropout",
                format!("must be in [0, 1), got {}", lora.dropout),
            ));
        }
        if let Some(alpha) = lora.alpha
            && !is_positive(f64::from(alpha))
        {
            return Err(FieldError::at(
                "lora.alpha",
                format!("must be positive, got {alpha}"),
            ));
        }
        if let Some(n) = lora.num_layers
            && n < 1
        {
            return Err(FieldError::at(
                "lora.num_layers",
                format!("must be at least 1, got {n}"),
            ));
        }
        if let Some(t) = lora
            .targets
            .iter()
            .find(|t| !ALL_TARGETS.contains(&t.as_str()))
        {
            return Err(FieldError::at(
                "lora.targets",
                format!(
                    "unknown target `{t}`; expected some of {}",
                    ALL_TARGETS.join(", ")
                ),
            ));
        }
        if lora.targets.is_empty() {
            return Err(FieldError::at(
                "lora.targets",
                format!("is empty; name some of {}", ALL_TARGETS.join(", ")),
            ));
        }
        if ![4, 8].contains(&self.quantize_bits) {
            return Err(FieldError::at(
                "quantize_bits",
                format!("must be 4 or 8, got {}", self.quantize_bits),
            ));
        }
        if ![32, 64].contains(&self.quantize_group_size) {
            return Err(FieldError::at(
                "quantize_group_size",
                format!("must be 32 or 64, got {}", self.quantize_group_size),
            ));
        }
        if self.iters < 1 {
            return Err(FieldError::at("iters", "must be at least 1"));
        }
        let ranks = self.distributed.ranks;
        if ranks == 0 {
            return Err(FieldError::at(
                "distributed.ranks",
                "must be at least 1 (1: a single process)",
            ));
        }
        if let Auto::Value(batch) = self.batch_size
            && batch > 0
            && !batch.is_multiple_of(ranks as usize)
        {
            return Err(FieldError::at(
                "distributed.ranks",
                format!(
                    "{ranks} ranks cannot split a batch_size of {batch} evenly; use a batch_size that is a multiple of {ranks}"
                ),
            ));
        }
        if self.batch_size == Auto::Value(0) {
            return Err(FieldError::at(
                "batch_size",
                "must be at least 1 (or `auto`)",
            ));
        }
        if self.grad_accum < 1 {
            return Err(FieldError::at("grad_accum", "must be at least 1"));
        }
        if self.batch_size.is_auto() {
            if self.grad_accum != 1 {
                return Err(FieldError::at(
                    "grad_accum",
                    "`batch_size: auto` chooses the rows per step and splits them into micro-batches and accumulation itself; remove `grad_accum`",
                ));
            }
            if let Some(Auto::Value(n)) = self.micro_batch {
                return Err(FieldError::at(
                    "micro_batch",
                    format!(
                        "`batch_size: auto` takes the micro-batch from the memory probe; remove `micro_batch: {n}` (`memory_budget_mb` sets the budget)"
                    ),
                ));
            }
        }
        match (self.micro_batch, self.batch_size) {
            (Some(Auto::Value(0)), _) => {
                return Err(FieldError::at(
                    "micro_batch",
                    "must be at least 1 (or `auto`)",
                ));
            }
            (Some(Auto::Value(n)), Auto::Value(b)) => {
                let effective = b * self.grad_accum as usize;
                if !effective.is_multiple_of(n) {
                    return Err(FieldError::at(
                        "micro_batch",
                        format!(
                            "{n} does not divide the effective batch of {effective} rows (batch_size × grad_accum); use a divisor or `auto`"
                        ),
                    ));
                }
            }
            _ => {}
        }
        if self.memory_budget_mb == Some(0) {
            return Err(FieldError::at("memory_budget_mb", "must be positive"));
        }
        // The budget steers the memory probe only; with a fixed split nothing would honour
        // it, and a run the user capped would use what it needs without a word.
        if self.memory_budget_mb.is_some()
            && !self.batch_size.is_auto()
            && self.micro_batch != Some(Auto::Auto)
        {
            return Err(FieldError::at(
                "memory_budget_mb",
                "is the budget of `micro_batch: auto` (or `batch_size: auto`), which this job does not use; add `micro_batch: auto` so the split is chosen to fit it, or remove it",
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(FieldError::at(
                "learning_rate",
                format!("must be positive, got {}", self.learning_rate),
            ));
        }
        if !(self.min_lr >= 0.0 && self.min_lr <= self.learning_rate) {
            return Err(FieldError::at(
                "min_lr",
                format!(
                    "must be between 0 and learning_rate ({}), got {}",
                    self.learning_rate, self.min_lr
                ),
            ));
        }
        if self.warmup_steps > self.iters {
            return Err(FieldError::at(
                "warmup_steps",
                format!(
                    "{} is more than iters ({}); the learning rate would never reach its peak",
                    self.warmup_steps, self.iters
                ),
            ));
        }
        if let Some(norm) = self.max_grad_norm
            && !is_positive(f64::from(norm))
        {
            return Err(FieldError::at(
                "max_grad_norm",
                format!("must be positive (or null for no clipping), got {norm}"),
            ));
        }
        let (b1, b2) = self.optimizer.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return Err(FieldError::at(
                "optimizer.betas",
                format!("both must be in [0, 1), got ({b1}, {b2})"),
            ));
        }
        if !is_positive(f64::from(self.optimizer.eps)) {
            return Err(FieldError::at("optimizer.eps", "must be positive"));
        }
        if self.optimizer.weight_decay < 0.0 {
            return Err(FieldError::at(
                "optimizer.weight_decay",
                "must not be negative",
            ));
        }
        if self.max_seq_len < 1 {
            return Err(FieldError::at("max_seq_len", "must be at least 1"));
        }
        if self.pad_multiple < 1 {
            return Err(FieldError::at("pad_multiple", "must be at least 1"));
        }
        if self.valid_batches == Some(0) {
            return Err(FieldError::at(
                "valid_batches",
                "must be at least 1 (or unset: all)",
            ));
        }
        if self.patience == Some(0) {
            return Err(FieldError::at(
                "patience",
                "must be at least 1 (or unset: no early stopping)",
            ));
        }
        if !is_positive(self.divergence_factor - 1.0) {
            return Err(FieldError::at(
                "divergence_factor",
                format!("must be greater than 1, got {}", self.divergence_factor),
            ));
        }
        if self.grad_checkpoint && self.method != Method::Full && lora.dropout > 0.0 {
            return Err(FieldError::at(
                "grad_checkpoint",
                "recomputes each block in the backward pass, which would draw new dropout masks; set lora.dropout to 0 or turn grad_checkpoint off",
            ));
        }
        Ok(())
    }
}

/// Greater than zero (NaN is not).
fn is_positive(x: f64) -> bool {
    x.partial_cmp(&0.0) == Some(std::cmp::Ordering::Greater)
}
