//! Parsers for Linux's `/proc/cpuinfo` and `/proc/meminfo`.

use super::Machine;
use std::collections::BTreeSet;

/// What `/proc/cpuinfo` tells about the CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// The `model name` of the first processor (x86), or a description built from the
    /// implementer and part fields (arm64), or "unknown".
    pub model: String,
    /// Number of `processor` entries.
    pub logical: usize,
    /// Distinct (physical id, core id) pairs, when those fields are present.
    pub physical: Option<usize>,
}

/// Parses the text of `/proc/cpuinfo`.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut model = None;
    let mut logical = 0;
    let mut cores = BTreeSet::new();
    let mut physical_id = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => logical += 1,
            "model name" | "Model" | "Hardware" if model.is_none() && !value.is_empty() => {
                model = Some(value.to_owned());
            }
            "physical id" => physical_id = Some(value.to_owned()),
            "core id" => {
                cores.insert((physical_id.clone().unwrap_or_default(), value.to_owned()));
            }
            _ => {}
        }
    }
    CpuInfo {
        model: model.unwrap_or_else(|| "unknown".to_owned()),
        logical,
        physical: (!cores.is_empty()).then_some(cores.len()),
    }
}

/// Total and available memory from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable` (the kernel's estimate, which counts reclaimable page cache), or
    /// `MemFree` on kernels older than 3.14.
    pub available: u64,
}

/// Parses the text of `/proc/meminfo`; `None` when `MemTotal` is missing.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?.trim();
            let (number, unit) = rest.split_once(' ').unwrap_or((rest, ""));
            let value: u64 = number.parse().ok()?;
            Some(if unit.eq_ignore_ascii_case("kB") {
                value * 1024
            } else {
                value
            })
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable").or_else(|| field("MemFree"))?;
    Some(MemInfo { total, available })
}

pub(super) fn fill(machine: &mut Machine) {
    if let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") {
        let cpu = parse_cpuinfo(&text);
        machine.chip = cpu.model;
        machine.physical_cores = cpu.physical;
    }
    if let Some(mem) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .as_deref()
        .and_then(parse_meminfo)
    {
        machine.memory_total_bytes = mem.total;
        machine.memory_available_bytes = mem.available;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPYC_2_VCPU: &str = "processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC 9654 96-Core Processor
physical id\t: 0
core id\t\t: 0
cpu cores\t: 2

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
physical id\t: 0
core id\t\t: 1
cpu cores\t: 2
";

    const HYPERTHREADED: &str = "processor : 0
model name : Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
physical id : 0
core id : 0

processor : 1
model name : Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
physical id : 0
core id : 0
";

    const RASPBERRY_PI: &str = "processor\t: 0
BogoMIPS\t: 108.00
CPU implementer\t: 0x41

processor\t: 1
BogoMIPS\t: 108.00

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
";

    #[test]
    fn cpuinfo_x86() {
        let cpu = parse_cpuinfo(EPYC_2_VCPU);
        assert_eq!(cpu.model, "AMD EPYC 9654 96-Core Processor");
        assert_eq!(cpu.logical, 2);
        assert_eq!(cpu.physical, Some(2));
    }

    #[test]
    fn cpuinfo_counts_hyperthreads_once() {
        let cpu = parse_cpuinfo(HYPERTHREADED);
        assert_eq!(cpu.logical, 2);
        assert_eq!(cpu.physical, Some(1));
    }

    #[test]
    fn cpuinfo_arm_without_core_ids() {
        let cpu = parse_cpuinfo(RASPBERRY_PI);
        assert_eq!(cpu.logical, 2);
        assert_eq!(cpu.physical, None);
        assert_eq!(cpu.model, "BCM2835");
    }

    #[test]
    fn cpuinfo_empty() {
        let cpu = parse_cpuinfo("");
        assert_eq!(cpu.model, "unknown");
        assert_eq!(cpu.logical, 0);
    }

    #[test]
    fn meminfo_modern_kernel() {
        let text = "MemTotal:       24567892 kB\nMemFree:         1000000 kB\nMemAvailable:   23000000 kB\nBuffers: 1 kB\n";
        let mem = parse_meminfo(text).unwrap();
        assert_eq!(mem.total, 24567892 * 1024);
        assert_eq!(mem.available, 23000000 * 1024);
    }

    #[test]
    fn meminfo_old_kernel_falls_back_to_free() {
        let text = "MemTotal: 2048 kB\nMemFree: 1024 kB\n";
        let mem = parse_meminfo(text).unwrap();
        assert_eq!(mem.available, 1024 * 1024);
    }

    #[test]
    fn meminfo_without_total_is_none() {
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    }
}
