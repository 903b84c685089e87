//! What machine this is: chip, cores and memory, read from the OS.
//!
//! Parsing is separate from reading so every parser is tested on fixture strings:
//! [`linux`] parses `/proc/cpuinfo` and `/proc/meminfo`; [`apple`] parses the sysctl brand
//! string of Apple silicon (M1–M4 and their Pro/Max/Ultra variants) and `vm_stat`.

pub mod apple;
pub mod linux;

use serde::Serialize;

/// The machine pipe runs on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `linux` or `macos` (Rust's `std::env::consts::OS`).
    pub os: &'static str,
    /// `x86_64` or `aarch64`.
    pub arch: &'static str,
    /// The chip as its vendor names it, e.g. "Apple M2 Pro" or "AMD EPYC 9654 96-Core Processor".
    pub chip: String,
    /// The Apple silicon family and variant, when this is one.
    pub apple_chip: Option<apple::AppleChip>,
    /// Logical CPUs available to this process.
    pub logical_cores: usize,
    /// Physical cores, when the OS says.
    pub physical_cores: Option<usize>,
    /// Total memory in bytes.
    pub memory_total_bytes: u64,
    /// Memory available for new work in bytes (free plus reclaimable cache).
    pub memory_available_bytes: u64,
}

impl Machine {
    /// Reads the machine's description from the OS. Fields the OS does not reveal are
    /// left empty rather than failing: doctor must work on odd machines too.
    pub fn detect() -> Self {
        let logical_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut machine = Machine {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            chip: String::from("unknown"),
            apple_chip: None,
            logical_cores,
            physical_cores: None,
            memory_total_bytes: 0,
            memory_available_bytes: 0,
        };
        if cfg!(target_os = "macos") {
            apple::fill(&mut machine);
        } else {
            linux::fill(&mut machine);
        }
        machine
    }
}

/// Formats a byte count in GiB with one decimal.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Versions of the runtimes this process runs on (`[("mlx", "0.32.2")]` in `pipe-mlx`),
/// for reports; set once at start by the binary that links them.
pub fn runtime_versions() -> &'static [(String, String)] {
    RUNTIME_VERSIONS.get().map_or(&[], Vec::as_slice)
}

/// Records the runtimes' versions ([`runtime_versions`]); later calls are ignored.
pub fn set_runtime_versions(versions: Vec<(String, String)>) {
    let _ = RUNTIME_VERSIONS.set(versions);
}

static RUNTIME_VERSIONS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
