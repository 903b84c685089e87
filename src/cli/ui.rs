//! `pipe ui`: the web UI over the workspace (the server is [`crate::ui`]).

use super::output::Printer;
use std::net::IpAddr;
use std::path::PathBuf;

/// Arguments of `pipe ui`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs started from the page are ordinary detached `pipe run` processes: \
closing the browser or stopping `pipe ui` leaves them running, and runs started from the \
command line show up live. The playground starts `pipe serve` on a free loopback port when \
first asked, holds one base model at a time, and stops it when idle, when a run's stage takes \
the mlx slot, or with `pipe ui`. Any --host but loopback needs a token (printed in the address; \
set one with PIPE_UI_TOKEN).

Examples:
  pipe ui                              # http://127.0.0.1:7860/
  pipe ui --root ~/work/past-tense --port 8000
  PIPE_UI_TOKEN=secret pipe ui --host 0.0.0.0

Exit status: 0 after Ctrl-C, 1 if the address cannot be bound, 2 a usage error."
)]
pub struct Args {
    /// Workspace root (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Address to bind. Anything but loopback requires the token.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0 picks a free one; the address is printed when ready).
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// The token clients must present on a non-loopback bind (default: a random one).
    #[arg(long, env = "PIPE_UI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest dataset upload, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub max_upload_mb: usize,
    /// The playground's model server (`pipe serve`, started on demand) stops after this
    /// many seconds unused.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub model_idle_secs: u64,
}

pub fn run(printer: &Printer, args: Args) -> anyhow::Result<()> {
    let root = match args.root {
        Some(r) => r,
        None => std::env::current_dir()?,
    };
    if !root.is_dir() {
        return Err(super::UsageError(format!(
            "workspace root {} is not a directory",
            root.display()
        ))
        .into());
    }
    let options = crate::ui::Options {
        root,
        host: args.host,
        port: args.port,
        token: args.token,
        max_upload_bytes: args.max_upload_mb << 20,
        model_idle: std::time::Duration::from_secs(args.model_idle_secs),
    };
    crate::ui::serve(options, |url| {
        // The address is the one line scripts read (stdout); the rest is for people.
        printer.result(&format!("pipe ui: {url}"));
        printer.status("press Ctrl-C to stop the UI (runs it started keep going)");
    })
}
