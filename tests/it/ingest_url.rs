//! Ingest sources at http(s) URLs pinned by hash, against a real HTTP server
//! (`python3 -m http.server` on a free loopback port): downloaded once into the user cache,
//! verified, no network on no-op runs; a wrong pin or an unpinned URL is a clear error.

use crate::support::Ws;
use sha2::{Digest, Sha256};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real HTTP server serving `dir`, stopped when dropped. Its request log (one line per
/// request) goes to `log`.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, log: PathBuf) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 runs the test HTTP server");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the HTTP server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, log }
    }

    fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }

    /// How many GET requests for `file` the server answered.
    fn gets(&self, file: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("\"GET /{file} ")))
            .count()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rows(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"prompt\":\"q{i}\",\"completion\":\"a{i}\"}}\n"))
        .collect()
}

/// `pipe run` in `ws` with the user cache in the workspace.
fn run(ws: &Ws, args: &[&str]) -> crate::support::Run {
    let out = ws
        .pipe()
        .env("PIPE_CACHE_DIR", ws.path("user-cache"))
        .arg("run")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    crate::support::Run {
        code: out.status.code().unwrap_or(-1),
        events: String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn pinned_urls_are_downloaded_once_and_no_op_runs_need_no_network() {
    let served = tempfile::tempdir().unwrap();
    let jsonl = rows(30);
    let csv: String = std::iter::once("question,answer\n".to_owned())
        .chain((0..20).map(|i| format!("why {i},because {i}\n")))
        .collect();
    std::fs::write(served.path().join("qa.jsonl"), &jsonl).unwrap();
    std::fs::write(served.path().join("qa.csv"), &csv).unwrap();
    let ws = Ws::new();
    let mut server = Server::start(served.path(), ws.path("server.log"));
    let b3 = blake3::hash(csv.as_bytes()).to_hex().to_string();
    ws.pipeline(&format!(
        r#"stages:
  web:
    kind: ingest
    with:
      source: {{url: "{}", sha256: {}}}
      out: web
  csv:
    kind: ingest
    with:
      source: {{url: "{}", blake3: {b3}, name: qa.csv}}
      fields: {{prompt: question, completion: answer}}
      out: csv
"#,
        server.url("qa.jsonl"),
        sha256(jsonl.as_bytes()),
        server.url("qa.csv?raw=1"),
    ));
    let first = run(&ws, &[]);
    assert_eq!(first.code, 0, "{}\n{:#?}", first.stderr, first.events);
    assert_eq!(first.ran(), crate::support::set(&["web", "csv"]));
    let stats: serde_json::Value = serde_json::from_str(&ws.read("web/stats.json")).unwrap();
    assert_eq!(stats["source"]["url"], server.url("qa.jsonl"));
    assert_eq!(stats["source"]["sha256"], sha256(jsonl.as_bytes()));
    let total: u64 = ["train", "valid", "test"]
        .iter()
        .map(|s| stats["splits"][s]["examples"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 30);
    assert!(
        ws.read("csv/train.jsonl")
            .contains("\"completion\":\"because ")
    );
    let cached = ws
        .path("user-cache/downloads")
        .join(format!("sha256-{}", sha256(jsonl.as_bytes())))
        .join("qa.jsonl");
    assert_eq!(std::fs::read_to_string(cached).unwrap(), jsonl);
    assert_eq!(
        (server.gets("qa.jsonl"), server.gets("qa.csv?raw=1")),
        (1, 1)
    );

    // The fingerprint is the pin: with the server gone nothing runs and nothing fails,
    // and a forced rerun reads the verified copy in the user cache.
    server.stop();
    let again = run(&ws, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.started().is_empty(), "{:?}", again.started());
    let forced = run(&ws, &["--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(forced.ran(), crate::support::set(&["web", "csv"]));
}

#[test]
fn a_wrong_pin_names_expected_and_actual_hash_and_keeps_nothing() {
    let served = tempfile::tempdir().unwrap();
    let body = rows(5);
    std::fs::write(served.path().join("qa.jsonl"), &body).unwrap();
    let ws = Ws::new();
    let server = Server::start(served.path(), ws.path("server.log"));
    let wrong = sha256(b"something else");
    ws.pipeline(&format!(
        "stages:\n  web:\n    kind: ingest\n    with: {{source: {{url: \"{}\", sha256: {wrong}}}, out: web}}\n",
        server.url("qa.jsonl")
    ));
    let r = run(&ws, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let log = ws.read("cache/logs/pipe/web.log");
    let want = format!(
        "sha256 mismatch for {}: expected {wrong}, got {}",
        server.url("qa.jsonl"),
        sha256(body.as_bytes())
    );
    assert!(log.contains(&want), "{log}");
    assert!(!ws.exists("web"));
    let kept: Vec<_> = walk(&ws.path("user-cache/downloads"));
    assert!(
        kept.is_empty(),
        "nothing unverified stays in the cache: {kept:?}"
    );

    // A missing file is an HTTP error, named as such.
    ws.pipeline(&format!(
        "stages:\n  web:\n    kind: ingest\n    with: {{source: {{url: \"{}\", sha256: {wrong}}}, out: web}}\n",
        server.url("nope.jsonl")
    ));
    let r = run(&ws, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let log = ws.read("cache/logs/pipe/web.log");
    assert!(
        log.contains(&format!("cannot download {}", server.url("nope.jsonl")))
            && log.contains("404"),
        "{log}"
    );
}

/// Every file under `dir` except lock files.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.file_name().is_some_and(|n| n != ".lock") {
            out.push(path);
        }
    }
    out
}

#[test]
fn an_unpinned_url_is_a_validation_error_with_a_hint() {
    let ws = Ws::new();
    ws.pipeline(
        "stages:\n  web:\n    kind: ingest\n    with:\n      source: {url: \"https://example.org/qa.jsonl\"}\n      out: web\n",
    );
    let out = ws.pipe().arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pipe.yaml:5:"), "{err}");
    assert!(
        err.contains("the URL source https://example.org/qa.jsonl is not pinned"),
        "{err}"
    );
    assert!(
        err.contains("curl -sL https://example.org/qa.jsonl | sha256sum"),
        "{err}"
    );
    assert!(!ws.exists("pipe.lock"));
}
