//! mlx-rs seeds its default random state from macOS's `mach_approximate_time` (through
//! the `mach-sys` crate), which does not exist on Linux: the link fails as soon as any code
//! reaches that path. This definition provides it with the same meaning: a monotonic clock
//! in nanoseconds. Reproducible code seeds explicitly and never calls it.

use std::sync::OnceLock;
use std::time::Instant;

/// Monotonic nanoseconds since the first call, never zero (mlx-rs uses it as a seed).
#[unsafe(no_mangle)]
pub extern "C" fn mach_approximate_time() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX) | 1
}
