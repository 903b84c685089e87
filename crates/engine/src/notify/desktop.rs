//! A desktop notification on the machine that ran the pipeline (`notify: {desktop: true}`):
//! Notification Center on macOS, through `osascript`; the freedesktop notification service
//! (GNOME, KDE, dunst, …) elsewhere, through libnotify's `notify-send`. Both programs come
//! with such a desktop, so pipe links no GUI library, and a machine without a desktop (a
//! server, cron without a session bus) gets a warning, never a failed run.
//!
//! The text is passed as arguments, never through a shell; what each program would parse
//! (AppleScript string literals, the markup notification servers render in the body) is
//! escaped here, in functions tested on every platform.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest showing a notification may take (a session bus that does not answer must
/// not hold up the end of a nightly run).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What the notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The first line, in bold on most desktops.
    pub title: String,
    /// The text under it.
    pub message: String,
}

/// The program that shows notifications here, and its arguments for `n`.
pub fn command(n: &Notification) -> (&'static str, Vec<String>) {
    if cfg!(target_os = "macos") {
        ("osascript", vec!["-e".into(), applescript(n)])
    } else {
        ("notify-send", notify_send_args(n))
    }
}

/// Shows `n`, waiting at most [`TIMEOUT`]; any failure is an error to report as a warning.
pub fn show(n: &Notification) -> Result<(), String> {
    let (program, args) = command(n);
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound if program == "notify-send" => {
                "`notify-send` is not installed (Debian/Ubuntu: apt install libnotify-bin)".into()
            }
            _ => format!("could not start `{program}`: {e}"),
        })?;
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| format!("`{program}`: {e}"))? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{program}` did not finish within {TIMEOUT:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    let why = stderr.trim();
    let hint = if program == "notify-send" && std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
    {
        " (no DBUS_SESSION_BUS_ADDRESS: this process has no desktop session to notify)"
    } else {
        ""
    };
    Err(format!("`{program}` failed ({status}): {why}{hint}"))
}

/// The AppleScript that shows `n` in Notification Center.
pub fn applescript(n: &Notification) -> String {
    format!(
        "display notification {} with title {}",
        applescript_string(&n.message),
        applescript_string(&n.title)
    )
}

/// `s` as an AppleScript string literal: backslashes and quotes escaped, and control
/// characters (which would end or garble the one-line notification) made spaces.
fn applescript_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `notify-send`'s arguments: after `--`, so a title starting with `-` is not an option;
/// the body with the markup characters escaped, as the freedesktop notification
/// specification asks of servers that render body markup.
pub fn notify_send_args(n: &Notification) -> Vec<String> {
    vec![
        "--app-name=pipe".into(),
        "--".into(),
        n.title.clone(),
        escape_markup(&n.message),
    ]
}

fn escape_markup(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(title: &str, message: &str) -> Notification {
        Notification {
            title: title.into(),
            message: message.into(),
        }
    }

    #[test]
    fn applescript_quotes_what_would_end_the_string() {
        // A golden line, as `osascript -e` gets it on a Mac.
        assert_eq!(
            applescript(&n("pipe: nightly", "failed: stage watch failed (run r1)")),
            r#"display notification "failed: stage watch failed (run r1)" with title "pipe: nightly""#
        );
        // A pipeline name cannot break out of the literal and run a second command.
        let script = applescript(&n(r#"x" & (do shell script "id") & ""#, "a\\b\nc"));
        assert_eq!(
            script,
            r#"display notification "a\\b c" with title "x\" & (do shell script \"id\") & \"""#
        );
    }

    #[test]
    fn notify_send_gets_the_title_after_the_options_and_escaped_markup() {
        assert_eq!(
            notify_send_args(&n("-pipe", "a <b> & c")),
            ["--app-name=pipe", "--", "-pipe", "a &lt;b&gt; &amp; c"]
        );
    }

    #[test]
    fn the_platform_program() {
        let (program, args) = command(&n("t", "m"));
        if cfg!(target_os = "macos") {
            assert_eq!((program, args[0].as_str()), ("osascript", "-e"));
        } else {
            assert_eq!(program, "notify-send");
        }
    }
}
