//! The compare options live in `pipe_schema::compare`; here, what the engine adds: a
//! variant's value of a metric.

pub use pipe_schema::compare::*;

use crate::report::Variant;

/// The variant's value of `metric`, in the unit of [`Metric::label`].
pub fn metric_value(metric: Metric, v: &Variant) -> Option<f64> {
    let known = |x: f64| (x > 0.0).then_some(x);
    match metric {
        Metric::ExactMatch => v.accuracy_after,
        Metric::ValidLoss => v.valid_loss,
        Metric::TokensPerSecond => known(v.trained_tokens_per_second),
        Metric::TrainSeconds => known(v.train_seconds),
        Metric::PeakMemory => known(v.peak_memory_bytes as f64 / GIB),
        Metric::AdapterBytes => known(v.adapter_bytes as f64 / MIB),
    }
}
