//! Apple silicon: the chip family from sysctl's brand string, and memory from `vm_stat`.

use super::Machine;
use serde::Serialize;

/// An Apple silicon chip, parsed from `machdep.cpu.brand_string` (e.g. "Apple M2 Pro").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AppleChip {
    /// The generation: 1 for M1, 4 for M4.
    pub generation: u8,
    /// Base, Pro, Max or Ultra.
    pub variant: AppleVariant,
}

/// The tier within a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppleVariant {
    /// The plain chip (M1, M2, ...).
    Base,
    /// Pro.
    Pro,
    /// Max.
    Max,
    /// Ultra.
    Ultra,
}

impl std::fmt::Display for AppleChip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Apple M{}", self.generation)?;
        match self.variant {
            AppleVariant::Base => Ok(()),
            AppleVariant::Pro => write!(f, " Pro"),
            AppleVariant::Max => write!(f, " Max"),
            AppleVariant::Ultra => write!(f, " Ultra"),
        }
    }
}

/// Parses a brand string such as "Apple M3 Max"; `None` for Intel Macs and anything else.
pub fn parse_brand(brand: &str) -> Option<AppleChip> {
    let mut words = brand.split_whitespace();
    if words.next()? != "Apple" {
        return None;
    }
    let generation = words.next()?.strip_prefix('M')?.parse().ok()?;
    let variant = match words.next() {
        None => AppleVariant::Base,
        Some("Pro") => AppleVariant::Pro,
        Some("Max") => AppleVariant::Max,
        Some("Ultra") => AppleVariant::Ultra,
        Some(_) => return None,
    };
    Some(AppleChip {
        generation,
        variant,
    })
}

/// Available memory from `vm_stat` output: free, inactive, speculative and purgeable pages
/// are what macOS can hand to a new process without swapping.
pub fn parse_vm_stat_available(text: &str) -> Option<u64> {
    let first = text.lines().next()?;
    let page_size: u64 = first
        .split("page size of ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let pages = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| {
                let rest = line.strip_prefix(name)?.trim();
                rest.trim_end_matches('.').parse::<u64>().ok()
            })
            .unwrap_or(0)
    };
    let free = pages("Pages free:")
        + pages("Pages inactive:")
        + pages("Pages speculative:")
        + pages("Pages purgeable:");
    Some(free * page_size)
}

fn sysctl(name: &str) -> Option<String> {
    let out = std::process::Command::new("sysctl")
        .args(["-n", name])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(super) fn fill(machine: &mut Machine) {
    if let Some(brand) = sysctl("machdep.cpu.brand_string") {
        machine.apple_chip = parse_brand(&brand);
        machine.chip = brand;
    }
    machine.physical_cores = sysctl("hw.physicalcpu").and_then(|s| s.parse().ok());
    machine.memory_total_bytes = sysctl("hw.memsize")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    machine.memory_available_bytes = std::process::Command::new("vm_stat")
        .output()
        .ok()
        .and_then(|out| parse_vm_stat_available(&String::from_utf8_lossy(&out.stdout)))
        .unwrap_or(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brands_m1_to_m4() {
        let cases = [
            ("Apple M1", 1, AppleVariant::Base),
            ("Apple M1 Pro", 1, AppleVariant::Pro),
            ("Apple M1 Max", 1, AppleVariant::Max),
            ("Apple M1 Ultra", 1, AppleVariant::Ultra),
            ("Apple M2", 2, AppleVariant::Base),
            ("Apple M2 Pro", 2, AppleVariant::Pro),
            ("Apple M2 Ultra", 2, AppleVariant::Ultra),
            ("Apple M3 Max", 3, AppleVariant::Max),
            ("Apple M4", 4, AppleVariant::Base),
            ("Apple M4 Pro", 4, AppleVariant::Pro),
            ("Apple M4 Max", 4, AppleVariant::Max),
        ];
        for (brand, generation, variant) in cases {
            let chip = parse_brand(brand).unwrap_or_else(|| panic!("{brand} did not parse"));
            assert_eq!(chip.generation, generation, "{brand}");
            assert_eq!(chip.variant, variant, "{brand}");
            assert_eq!(chip.to_string(), brand);
        }
    }

    #[test]
    fn intel_mac_and_junk_are_not_apple_silicon() {
        assert_eq!(
            parse_brand("Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz"),
            None
        );
        assert_eq!(parse_brand("Apple"), None);
        assert_eq!(parse_brand("Apple MX"), None);
        assert_eq!(parse_brand("Apple M2 Turbo"), None);
        assert_eq!(parse_brand(""), None);
    }

    #[test]
    fn vm_stat_available() {
        let text = "Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               10000.
Pages active:                            200000.
Pages inactive:                           30000.
Pages speculative:                         5000.
Pages throttled:                              0.
Pages wired down:                         90000.
Pages purgeable:                           1000.
";
        assert_eq!(
            parse_vm_stat_available(text),
            Some((10000 + 30000 + 5000 + 1000) * 16384)
        );
        assert_eq!(parse_vm_stat_available("garbage"), None);
    }
}
