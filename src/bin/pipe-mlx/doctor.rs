//! `pipe doctor`: describe the machine and prove MLX computes, with a matmul benchmark.

use anyhow::Context;
use pipe::cli::doctor::Args;
use pipe::cli::output::Printer;
use pipe_engine::hardware::{self, Machine};
use pipe_mlx_core::{bench, runtime};
use serde::Serialize;

#[derive(Serialize)]
struct Report {
    pipe_version: &'static str,
    machine: Machine,
    mlx: runtime::RuntimeInfo,
    matmul: bench::MatmulBench,
    matmul_gflops: f64,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let machine = Machine::detect();
    let mlx = runtime::start().context("MLX cannot start")?;
    let matmul =
        bench::matmul_gflops(args.matmul_size, args.reps).context("the matmul benchmark failed")?;
    let report = Report {
        pipe_version: env!("CARGO_PKG_VERSION"),
        matmul_gflops: matmul.gflops,
        machine,
        mlx,
        matmul,
    };
    if args.json {
        return printer.json(&report);
    }
    let m = &report.machine;
    let cores = match m.physical_cores {
        Some(p) => format!("{} logical, {p} physical", m.logical_cores),
        None => format!("{} logical", m.logical_cores),
    };
    let lines = [
        ("pipe", report.pipe_version.to_owned()),
        ("platform", format!("{} {}", m.os, m.arch)),
        ("chip", m.chip.clone()),
        ("cores", cores),
        (
            "memory",
            format!(
                "{} total, {} available",
                hardware::gib(m.memory_total_bytes),
                hardware::gib(m.memory_available_bytes)
            ),
        ),
        ("mlx", report.mlx.mlx_version.clone()),
        (
            "backend",
            format!(
                "{} (default device {})",
                match report.mlx.backend {
                    runtime::Backend::Metal => "metal",
                    runtime::Backend::Cpu => "cpu",
                },
                report.mlx.default_device
            ),
        ),
        (
            "metal",
            if report.mlx.metal_available {
                "available"
            } else {
                "not available"
            }
            .to_owned(),
        ),
        (
            "matmul",
            format!(
                "{:.1} GFLOP/s (float32, {n}x{n}, best of {})",
                report.matmul.gflops,
                report.matmul.reps,
                n = report.matmul.n
            ),
        ),
    ];
    for (key, value) in lines {
        printer.result(&format!("{:>9}  {value}", printer.paint(key, "1")));
    }
    Ok(())
}
