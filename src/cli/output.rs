//! All user-facing output goes through [`Printer`]: it knows whether to be quiet, verbose,
//! colored (only on a terminal, never under `NO_COLOR`) and where each kind of line goes.
//! Results go to stdout; progress, warnings and errors to stderr.

use std::io::{IsTerminal, Write};

/// When to color output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Color when stderr is a terminal and `NO_COLOR` is unset.
    Auto,
    /// Always color.
    Always,
    /// Never color.
    Never,
}

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// The normal amount.
    Normal,
    /// Extra detail (`-v`).
    Verbose,
    /// Everything (`-vv`).
    Debug,
}

/// The one place output is written from.
#[derive(Debug, Clone)]
pub struct Printer {
    verbosity: Verbosity,
    color: bool,
    interactive: bool,
}

impl Printer {
    /// A printer configured from the global flags and the environment.
    pub fn new(args: &super::GlobalArgs) -> Self {
        let verbosity = match (args.quiet, args.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Verbose,
            (false, _) => Verbosity::Debug,
        };
        let interactive = std::io::stderr().is_terminal();
        let color = match args.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => interactive && std::env::var_os("NO_COLOR").is_none(),
        };
        Self {
            verbosity,
            color,
            interactive,
        }
    }

    /// How much to print.
    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// Whether stderr is a terminal (live progress displays only make sense there).
    pub fn is_interactive(&self) -> bool {
        self.interactive && self.verbosity > Verbosity::Quiet
    }

    /// Whether colors are on.
    pub fn color(&self) -> bool {
        self.color
    }

    /// A result line on stdout (always printed: it is what the user asked for).
    pub fn result(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }

    /// Part of a result on stdout, without a newline, flushed at once (streamed text).
    pub fn result_fragment(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// A status line on stderr, hidden by `--quiet`.
    pub fn status(&self, line: &str) {
        if self.verbosity >= Verbosity::Normal {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }

    /// A detail line on stderr, shown with `-v`.
    pub fn verbose(&self, line: &str) {
        if self.verbosity >= Verbosity::Verbose {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }

    /// A warning on stderr, hidden by `--quiet`.
    pub fn warn(&self, message: &str) {
        if self.verbosity >= Verbosity::Normal {
            let label = self.paint("warning", "1;33");
            let _ = writeln!(std::io::stderr().lock(), "{label}: {message}");
        }
    }

    /// An error on stderr, always shown.
    pub fn error(&self, message: &str) {
        let label = self.paint("error", "1;31");
        let _ = writeln!(std::io::stderr().lock(), "{label}: {message}");
    }

    /// Wraps `text` in an ANSI style when colors are on.
    pub fn paint(&self, text: &str, sgr: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Writes a value as one line of JSON on stdout.
    pub fn json<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, value)?;
        writeln!(out)?;
        Ok(())
    }
}
