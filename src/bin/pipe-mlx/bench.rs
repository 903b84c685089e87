//! `pipe bench`: throughput measurements. `pipe bench generate` times prompt processing and
//! token generation on a model and reports tokens/s and MLX's peak memory; `pipe bench
//! train` times the reference fine-tuning workload.

use super::generate::load_model;
use pipe::cli::bench::{AllReduceArgs, Command, TrainArgs};
use pipe::cli::output::Printer;
use pipe_mlx_core::generate::{self, GenerateOptions};
use pipe_mlx_core::train::bench::{self as train_bench, TrainBenchOptions};
use serde::Serialize;

#[derive(Serialize)]
struct Report {
    model: String,
    weights: String,
    prompt_tokens: usize,
    generation_tokens: usize,
    prompt_tps: f64,
    generation_tps: f64,
    peak_memory_mib: f64,
}

const PASSAGE: &str = "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Berlin is the capital of Germany. Water boils at 100 degrees Celsius at sea level. ";

pub fn run(printer: &Printer, command: Command) -> anyhow::Result<()> {
    let args = match command {
        Command::Generate(args) => args,
        Command::Train(args) => return run_train(printer, args),
        Command::AllReduce(args) => return run_allreduce(printer, args),
        // The load generator needs no MLX; `pipe` runs it (this path is `pipe-mlx` called
        // directly).
        serve @ Command::Serve(_) => {
            return pipe::cli::run_engine(printer, pipe::cli::Command::Bench(serve));
        }
    };
    let mut m = load_model(printer, &args.model)?;
    let mut ids = Vec::new();
    while ids.len() < args.prompt_tokens.max(1) {
        ids.extend(m.tokenizer.encode(PASSAGE, false)?);
    }
    ids.truncate(args.prompt_tokens.max(1));
    // No eos: a benchmark must generate the same number of tokens every time.
    let mut tokenizer = m.tokenizer.clone();
    tokenizer.eos_ids.clear();
    let options = GenerateOptions {
        max_tokens: args.generation_tokens.max(2),
        ..Default::default()
    };
    mlx_rs::memory::reset_peak_memory()?;
    let mut best = (0.0f64, 0.0f64);
    for rep in 0..=args.reps {
        let (_, s) = generate::generate(&mut m.model, &tokenizer, &ids, &options, &mut |_| {})?;
        printer.verbose(&format!(
            "run {rep}: prompt {:.1} tok/s, generation {:.1} tok/s",
            s.prompt_tps, s.generation_tps
        ));
        if rep > 0 {
            best = (best.0.max(s.prompt_tps), best.1.max(s.generation_tps));
        }
    }
    let report = Report {
        model: m.path.display().to_string(),
        weights: format!("{:?}", args.model.weights).to_lowercase(),
        prompt_tokens: ids.len(),
        generation_tokens: options.max_tokens,
        prompt_tps: best.0,
        generation_tps: best.1,
        peak_memory_mib: mlx_rs::memory::peak_memory()? as f64 / (1u64 << 20) as f64,
    };
    if args.json {
        return printer.json(&report);
    }
    printer.result(&format!(
        "prompt: {:.1} tok/s ({} tokens)  generation: {:.1} tok/s ({} tokens)  peak memory: {:.0} MiB",
        report.prompt_tps,
        report.prompt_tokens,
        report.generation_tps,
        report.generation_tokens,
        report.peak_memory_mib
    ));
    Ok(())
}

fn run_train(printer: &Printer, args: TrainArgs) -> anyhow::Result<()> {
    if !pipe_mlx_core::distributed::take_part(args.ranks)? {
        return Ok(());
    }
    let lead = pipe_mlx_core::distributed::is_lead();
    if lead {
        printer.status("running the reference training workload (this takes a minute or two)");
    }
    let report = train_bench::run(&TrainBenchOptions {
        model: args.model,
        iters: args.iters,
        batch_size: args.batch_size,
        rank: args.rank,
        num_layers: args.num_layers,
        share_prefix: !args.no_share_prefix,
        activation_cache: args.activation_cache || args.activation_cache_dir.is_some(),
        activation_cache_dir: args.activation_cache_dir,
        epochs: args.epochs.map(|e| (e, args.examples)),
        method: args.method,
        grad_checkpoint: args.grad_checkpoint,
        micro_batch: args.micro_batch,
        memory_budget_mb: args.memory_budget_mb,
    })?;
    if !lead {
        return Ok(());
    }
    if args.json {
        return printer.json(&report);
    }
    let rows = [
        (
            "trained tokens/s",
            format!("{:.1}", report.trained_tokens_per_second),
        ),
        (
            "processed tokens/s",
            format!("{:.1}", report.processed_tokens_per_second),
        ),
        (
            "seconds per step",
            format!("{:.2}", report.seconds_per_step),
        ),
        (
            "peak memory",
            format!(
                "{:.0} MiB",
                report.peak_memory_bytes as f64 / (1u64 << 20) as f64
            ),
        ),
        (
            "achieved GFLOP/s",
            format!(
                "{:.1} ({:.0}% of the {:.0} GFLOP/s matmul peak)",
                report.achieved_gflops,
                report.efficiency * 100.0,
                report.matmul_peak_gflops
            ),
        ),
        (
            "final valid loss",
            format!("{:.3}", report.final_valid_loss),
        ),
        (
            "setup",
            format!(
                "{}{}, micro-batch {} x {} accumulated",
                report.method,
                if report.grad_checkpoint {
                    ", grad checkpoint"
                } else {
                    ""
                },
                report.batch.as_ref().map_or(0, |b| b.micro_batch),
                report.batch.as_ref().map_or(0, |b| b.grad_accum)
            ),
        ),
    ];
    for (k, v) in rows {
        printer.result(&format!("{k:>20}  {v}"));
    }
    if !report.seconds_per_step_by_epoch.is_empty() {
        let epochs: Vec<String> = report
            .seconds_per_step_by_epoch
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect();
        printer.result(&format!(
            "{:>20}  {} ({} examples)",
            "s/step by epoch",
            epochs.join(" / "),
            report.train_examples
        ));
    }
    if let Some(c) = &report.activation_cache {
        printer.result(&format!(
            "{:>20}  block {}: {} hits, {} misses ({:.0}% hit rate), {:.0} MiB",
            "activation cache",
            c.block,
            c.hits,
            c.misses,
            c.hit_rate * 100.0,
            c.memory_bytes as f64 / (1u64 << 20) as f64
        ));
        if c.disk_loaded > 0 || c.disk_written > 0 {
            printer.result(&format!(
                "{:>20}  {} entries read, {} hits on them, {} entries written",
                "activation disk", c.disk_loaded, c.disk_hits, c.disk_written
            ));
        }
    }
    Ok(())
}

/// `pipe bench allreduce`: seconds per all-reduce of `--mib` MiB and the bandwidth, as
/// algorithm bandwidth (bytes / time) and bus bandwidth (NCCL's convention: what each
/// link carries in a ring, 2(n-1)/n of the bytes), checked for the right sum.
fn run_allreduce(printer: &Printer, args: AllReduceArgs) -> anyhow::Result<()> {
    use pipe_mlx_core::distributed;
    if !distributed::take_part(args.ranks)? {
        return Ok(());
    }
    let Some(group) = distributed::world() else {
        return Err(pipe::cli::UsageError(
            "an all-reduce needs at least 2 ranks: --ranks 2, or start it under mlx.launch".into(),
        )
        .into());
    };
    let n = group.size();
    let elements = ((args.mib as usize) << 20) / 4;
    let value = (group.rank() + 1) as f32;
    let x = mlx_rs::ops::full::<f32>(&[elements as i32], mlx_rs::array!(value))?;
    x.eval()?;
    let mut seconds = Vec::with_capacity(args.rounds as usize);
    let want = (n * (n + 1) / 2) as f32;
    for round in 0..args.rounds as usize + 2 {
        let started = std::time::Instant::now();
        let summed = group.all_sum(&x)?;
        summed.eval()?;
        let took = started.elapsed().as_secs_f64();
        let last = summed.as_slice::<f32>()[elements - 1];
        if last != want {
            anyhow::bail!("all_sum gave {last} where the ranks' values sum to {want}");
        }
        if round >= 2 {
            seconds.push(took);
        }
    }
    if !distributed::is_lead() {
        return Ok(());
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let bytes = (elements * 4) as f64;
    let algorithm_gbps = bytes / median / 1e9;
    let bus_gbps = algorithm_gbps * 2.0 * (n - 1) as f64 / n as f64;
    let report = serde_json::json!({
        "ranks": n,
        "mib": args.mib,
        "rounds": args.rounds,
        "median_seconds": median,
        "algorithm_gb_per_s": algorithm_gbps,
        "bus_gb_per_s": bus_gbps,
    });
    if args.json {
        return printer.json(&report);
    }
    printer.result(&format!(
        "all_sum of {} MiB over {n} ranks: {:.1} ms (median of {}), {algorithm_gbps:.2} GB/s algorithm, {bus_gbps:.2} GB/s bus",
        args.mib,
        median * 1e3,
        args.rounds
    ));
    Ok(())
}
