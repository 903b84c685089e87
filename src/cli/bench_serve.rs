//! `pipe bench serve`: a load generator for any OpenAI-compatible server (`pipe serve`,
//! `mlx_lm.server`, ...). For each concurrency level, that many clients send streamed chat
//! requests back to back (fixed prompts, fixed `max_tokens`, greedy) and the run reports
//! aggregate generated tokens/s, time to first token and inter-token latency percentiles.
//!
//! Tokens are counted from the server's `usage` (asked for with
//! `stream_options.include_usage`); a server that sends none is counted one token per
//! content chunk. Inter-token latency is the gap between content chunks divided by the
//! tokens they carried (a chunk holding held-back text counts all its tokens at once).
//! Needs no MLX: it runs in `pipe` itself.

use super::output::Printer;
use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

/// Arguments of `pipe bench serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The server's base URL (without `/v1`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The `model` field of the requests.
    #[arg(long, default_value = "base")]
    pub model: String,
    /// Concurrency levels, run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub concurrency: Vec<usize>,
    /// Requests each client sends per level.
    #[arg(long, default_value_t = 3)]
    pub requests_per_client: usize,
    /// `max_tokens` of every request.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// A label for the report (e.g. the server's name).
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Bearer token, if the server wants one.
    #[arg(long, env = "PIPE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print one JSON object per level.
    #[arg(long)]
    pub json: bool,
}

/// Topics of the fixed prompts (request `i` uses topic `i mod len`).
const TOPICS: [&str; 16] = [
    "a lighthouse keeper",
    "a lost robot",
    "a mountain village",
    "a river journey",
    "an old library",
    "a desert caravan",
    "a winter festival",
    "a clockmaker",
    "a secret garden",
    "a space station",
    "a fishing town",
    "a traveling circus",
    "a forgotten castle",
    "a rainy city",
    "a young inventor",
    "a sailing ship",
];

/// Attempts after a connection-level failure.
const CONNECT_RETRIES: u64 = 5;

/// One request's timings.
struct Sample {
    ttft: f64,
    itl: Vec<f64>,
    tokens: usize,
}

/// The figures of one concurrency level.
#[derive(Debug, Serialize)]
pub struct LevelReport {
    /// Server label.
    pub label: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Requests completed.
    pub requests: usize,
    /// Generated tokens over all requests.
    pub tokens: usize,
    /// Wall seconds of the level.
    pub seconds: f64,
    /// Generated tokens per wall second, all clients together.
    pub tokens_per_second: f64,
    /// Time to first token, median, ms.
    pub ttft_p50_ms: f64,
    /// Time to first token, 99th percentile, ms.
    pub ttft_p99_ms: f64,
    /// Inter-token latency, median, ms.
    pub itl_p50_ms: f64,
    /// Inter-token latency, 99th percentile, ms.
    pub itl_p99_ms: f64,
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

fn one_request(agent: &ureq::Agent, args: &ServeArgs, i: usize) -> anyhow::Result<Sample> {
    let body = json!({
        "model": args.model,
        "messages": [{"role": "user", "content":
            format!("Write a long story about {}.", TOPICS[i % TOPICS.len()])}],
        "max_tokens": args.max_tokens,
        "temperature": 0.0,
        "stream": true,
        "stream_options": {"include_usage": true},
        "ignore_eos": true,
    });
    let url = format!("{}/v1/chat/completions", args.url.trim_end_matches('/'));
    let send = || {
        let mut req = agent.post(&url).header("Content-Type", "application/json");
        if let Some(key) = &args.api_key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        req.send(body.to_string())
    };
    let start = Instant::now();
    // A connection the server refuses or resets before answering (a full listen backlog:
    // Python's http.server keeps 5) is retried, as a client library would; the time to
    // first token still counts from the first attempt.
    let mut attempt = 0;
    let response = loop {
        match send() {
            Err(ureq::Error::Io(_)) if attempt < CONNECT_RETRIES => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100 * attempt));
            }
            r => break r.with_context(|| format!("request to {url} failed"))?,
        }
    };
    let reader = BufReader::new(response.into_body().into_reader());
    let mut first = None;
    let mut last = start;
    let mut chunks = 0usize;
    let mut gaps = Vec::new();
    let mut usage = None;
    for line in reader.lines() {
        let line = line.context("the stream broke off")?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data)
            .with_context(|| format!("the server sent a chunk that is not JSON: {data}"))?;
        if let Some(u) = v.get("usage").and_then(|u| u.get("completion_tokens")) {
            usage = u.as_u64();
        }
        let content = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
        if content.is_empty() {
            continue;
        }
        let now = Instant::now();
        match first {
            None => first = Some(now.duration_since(start).as_secs_f64()),
            Some(_) => gaps.push(now.duration_since(last).as_secs_f64()),
        }
        last = now;
        chunks += 1;
    }
    let Some(ttft) = first else {
        bail!("the server streamed no text");
    };
    let tokens = usage.map_or(chunks, |u| u as usize);
    // Spread the gaps over the tokens after the first (chunks may carry several).
    let per_chunk = (tokens.saturating_sub(1)) as f64 / (chunks.saturating_sub(1)).max(1) as f64;
    let itl = gaps.into_iter().map(|g| g / per_chunk.max(1.0)).collect();
    Ok(Sample { ttft, itl, tokens })
}

fn level(args: &ServeArgs, concurrency: usize) -> anyhow::Result<LevelReport> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1800)))
        .build()
        .into();
    let start = Instant::now();
    let results: Vec<anyhow::Result<Vec<Sample>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..concurrency)
            .map(|c| {
                let agent = agent.clone();
                scope.spawn(move || {
                    (0..args.requests_per_client)
                        .map(|r| one_request(&agent, args, c * args.requests_per_client + r))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a client thread panicked"))
            })
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut samples = Vec::new();
    for r in results {
        samples.extend(r?);
    }
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft * 1e3).collect();
    let mut itl: Vec<f64> = samples
        .iter()
        .flat_map(|s| s.itl.iter().map(|x| x * 1e3))
        .collect();
    Ok(LevelReport {
        label: args.label.clone(),
        concurrency,
        requests: samples.len(),
        tokens,
        seconds,
        tokens_per_second: tokens as f64 / seconds,
        ttft_p50_ms: percentile(&mut ttft, 50.0),
        ttft_p99_ms: percentile(&mut ttft, 99.0),
        itl_p50_ms: percentile(&mut itl, 50.0),
        itl_p99_ms: percentile(&mut itl, 99.0),
    })
}

/// Runs every level and prints a table (or JSON lines).
pub fn run(printer: &Printer, args: &ServeArgs) -> anyhow::Result<()> {
    if args.concurrency.contains(&0) || args.requests_per_client == 0 || args.max_tokens == 0 {
        return Err(super::UsageError(
            "--concurrency levels, --requests-per-client and --max-tokens must be at least 1"
                .into(),
        )
        .into());
    }
    // One unmeasured request first: the server's first call pays for lazy set-up.
    let warm = ServeArgs {
        max_tokens: 4,
        ..args.clone()
    };
    one_request(&ureq::Agent::config_builder().build().into(), &warm, 0)
        .context("the warm-up request failed; is the server running?")?;
    if !args.json {
        printer.result(&format!(
            "{:<12} {:>4} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "server", "conc", "tokens", "tok/s", "ttft p50", "ttft p99", "itl p50", "itl p99"
        ));
    }
    for &c in &args.concurrency {
        let r = level(args, c)?;
        if args.json {
            printer.json(&r)?;
        } else {
            printer.result(&format!(
                "{:<12} {:>4} {:>8} {:>9.1} {:>7.0}ms {:>7.0}ms {:>7.1}ms {:>7.1}ms",
                r.label,
                r.concurrency,
                r.tokens,
                r.tokens_per_second,
                r.ttft_p50_ms,
                r.ttft_p99_ms,
                r.itl_p50_ms,
                r.itl_p99_ms
            ));
        }
    }
    Ok(())
}
