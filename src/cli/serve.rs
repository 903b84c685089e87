//! `pipe serve`: an OpenAI-compatible HTTP server for a model and its adapters, decoding
//! concurrent requests together (the server itself is `pipe_mlx_core::serve`).

use super::UsageError;
use super::generate::ModelArgs;
use pipe_schema::deploy::ServingFile;
use std::net::IpAddr;
use std::path::PathBuf;

/// Arguments of `pipe serve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, \
GET /health; adapter administration (loopback clients only): GET/POST /admin/adapters, \
DELETE /admin/adapters/NAME; GET /admin/routes, PUT/DELETE /admin/routes/NAME (a public name \
answered by an adapter, moved in one step; the response's `model` names the adapter).

Examples:
  pipe serve
  pipe serve --adapter past=runs/quickstart/lora --port 8080
  curl localhost:8080/v1/chat/completions -d '{\"model\": \"past\", \"messages\": [{\"role\": \"user\", \"content\": \"walk\"}]}'
  curl localhost:8080/admin/adapters -d '{\"name\": \"v2\", \"path\": \"runs/v2/lora\"}'
  curl -X DELETE localhost:8080/admin/adapters/v2
  curl -X PUT localhost:8080/admin/routes/assistant -d '{\"adapter\": \"v2\"}'
  pipe serve --config runs/deploy/serve.yaml   # as a deploy stage wrote it
  PIPE_API_KEY=secret pipe serve --host 0.0.0.0"
)]
pub struct Args {
    /// The base model and how to hold its weights. Requests name it `base` (or by this
    /// value).
    #[command(flatten)]
    pub model: ModelArgs,
    /// An adapter to serve beside the base, as NAME=DIR (mlx-lm or PEFT layout, as `pipe
    /// train` writes); requests choose it with `"model": "NAME"`. Repeatable.
    #[arg(long, value_name = "NAME=DIR", value_parser = parse_adapter)]
    pub adapter: Vec<(String, PathBuf)>,
    /// A serving file (YAML, as a `deploy` stage writes it): its base model, adapters and
    /// routes are loaded at start. `--model` overrides its model; `--adapter` adds to it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to bind. Anything but loopback requires an API key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0 picks a free one; the address is printed when ready).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Bearer token every request must send (`Authorization: Bearer KEY`).
    #[arg(long, env = "PIPE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests decoded together at most (the continuous batch's rows).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_batch: u32,
    /// Requests waiting for a row at most; beyond that the server answers 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: u32,
    /// Prompt plus completion tokens per request at most.
    #[arg(long, default_value_t = 8192)]
    pub max_context: u32,
    /// `max_tokens` when a request gives none.
    #[arg(long, default_value_t = 512)]
    pub default_max_tokens: u32,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_request_bytes: u32,
}

/// Parses `NAME=DIR` (an adapter argument).
pub fn parse_adapter(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(dir)))
        }
        _ => Err(format!(
            "`{s}` is not NAME=DIR (e.g. --adapter past=runs/quickstart/lora)"
        )),
    }
}

/// Reads a serving file (`--config`), with its relative adapter paths made relative to
/// the file's folder. Every problem is a usage error naming the file.
pub fn read_serving_file(path: &std::path::Path) -> Result<ServingFile, UsageError> {
    let bad = |message: String| UsageError(format!("{}: {message}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut file: ServingFile =
        serde_yaml::from_str(&text).map_err(|e| bad(format!("not a serving file: {e}")))?;
    file.check().map_err(bad)?;
    let dir = path.parent().unwrap_or(std::path::Path::new(""));
    for dir_of in file.adapters.values_mut() {
        if dir_of.is_relative() {
            *dir_of = dir.join(&*dir_of);
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_file_resolves_adapters_beside_it_and_names_itself_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(
            &path,
            "model: m\nadapters: {a-1: adapters/a-1}\nroutes: {a: a-1}\n",
        )
        .unwrap();
        let file = read_serving_file(&path).unwrap();
        assert_eq!(file.adapters["a-1"], dir.path().join("adapters/a-1"));
        std::fs::write(&path, "adapters: {}\nroutes: {a: a-2}\n").unwrap();
        let e = read_serving_file(&path).unwrap_err().0;
        assert!(e.contains("serve.yaml") && e.contains("a-2"), "{e}");
        std::fs::write(&path, "adaptors: {}\n").unwrap();
        let e = read_serving_file(&path).unwrap_err().0;
        assert!(e.contains("adaptors"), "{e}");
    }
}
