//! OpenBLAS's kernel choice on Linux, where MLX's CPU backend does its matmuls.
//!
//! OpenBLAS picks its kernels from the CPU model it reads at load time. Virtual machines and
//! sandboxes often hide the model (`Intel(R) Xeon(R) Processor`); OpenBLAS then falls back
//! to its generic `Prescott` kernels, which run matmul 6 to 12 times slower than the CPU
//! can (16-30 GFLOP/s against 194 with AVX-512 kernels on one such 2-core machine). The
//! instruction-set flags are still visible, so the kernels can be chosen from them.
//!
//! The choice has to be in the environment before OpenBLAS loads, which is before `main`:
//! [`reexec_with_kernels`] runs the binary again, once, with `OPENBLAS_CORETYPE` set. A
//! value the user set is left alone.

/// The environment variable OpenBLAS reads at load time.
pub const CORETYPE_VAR: &str = "OPENBLAS_CORETYPE";

/// The OpenBLAS kernels the instruction sets in a `/proc/cpuinfo` text allow, fastest first:
/// AVX-512 (the subsets OpenBLAS's SkylakeX kernels use), then AVX2 with FMA; `None` when
/// neither is there (OpenBLAS's own choice stands).
pub fn kernels_for(cpuinfo: &str) -> Option<&'static str> {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "flags").then_some(value)
        })?
        .split_whitespace()
        .collect();
    let has = |wanted: &[&str]| wanted.iter().all(|f| flags.contains(f));
    if has(&["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]) {
        Some("SkylakeX")
    } else if has(&["avx2", "fma"]) {
        Some("Haswell")
    } else {
        None
    }
}

/// Runs this executable again with [`CORETYPE_VAR`] set from the CPU's flags, unless it is
/// already set or there is nothing to choose. Returns only when no re-exec happened (or it
/// failed, in which case OpenBLAS's own choice stands: slower, never wrong).
#[cfg(target_os = "linux")]
pub fn reexec_with_kernels() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(CORETYPE_VAR).is_some() {
        return;
    }
    let Some(kernels) = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .as_deref()
        .and_then(kernels_for)
    else {
        return;
    };
    let mut args = std::env::args_os();
    let Some(arg0) = args.next() else {
        return;
    };
    // `exec` keeps the process id, the streams and the signal dispositions.
    let _ = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(CORETYPE_VAR, kernels)
        .exec();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx512_gets_skylakex_kernels_avx2_haswell_and_older_cpus_openblas_own_choice() {
        let cpu = |flags: &str| {
            format!(
                "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: {flags}\nbogomips\t: 4000\n"
            )
        };
        let sandboxed_xeon =
            cpu("fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl");
        assert_eq!(kernels_for(&sandboxed_xeon), Some("SkylakeX"));
        // avx512f alone (Knights Landing) lacks what the SkylakeX kernels use.
        assert_eq!(kernels_for(&cpu("avx avx2 fma avx512f")), Some("Haswell"));
        assert_eq!(kernels_for(&cpu("fpu sse2 avx avx2 fma")), Some("Haswell"));
        assert_eq!(kernels_for(&cpu("fpu sse2 avx")), None);
        // `avx2` must be a whole flag, and a file without flags chooses nothing.
        assert_eq!(kernels_for(&cpu("avx2x fma")), None);
        assert_eq!(kernels_for("processor\t: 0\n"), None);
    }
}
