//! A run's live event stream: `runs/history/<id>/events.jsonl`, every executor event of the
//! run (stage progress included) as one `pipe run --json` line, appended as it happens.
//!
//! `run.json` says where a run stands; this file says how it got there, step by step, so a
//! watcher (the web UI) can follow a run that another process drives, and pick up after a
//! disconnect exactly where it stopped: a reader asks for the lines after a byte offset
//! ([`read_from`]) and gets the offset to ask from next. The offset is the SSE event id, so
//! a browser's `Last-Event-ID` resumes with no gap and no repeat.
//!
//! Each line is appended with one `write` on a file opened for appending, so lines never
//! interleave and a reader sees whole lines plus, at worst, the beginning of the next one,
//! which [`read_from`] leaves for later. A crash can leave such a partial last line; it is
//! never returned, since no newline ends it.

use crate::exec::Event;
use crate::exec::events::{Stamped, utc_now};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The file name in the run's folder.
pub const FILE: &str = "events.jsonl";

/// The event stream of run `id`.
pub fn path(root: &Path, id: &str) -> PathBuf {
    super::run_dir(root, id).join(FILE)
}

/// The open stream a run appends to.
#[derive(Debug)]
pub struct EventLog {
    file: std::fs::File,
}

impl EventLog {
    /// Opens (creating) the stream at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self { file })
    }

    /// Appends `event`, stamped with the time, as one line in one write. Not synced: the
    /// stream is for watching; `run.json` is the record that must survive a crash.
    pub fn append(&mut self, event: &Event) -> std::io::Result<()> {
        let stamped = Stamped {
            ts: utc_now(),
            event,
        };
        let mut line = serde_json::to_vec(&stamped)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// At most this many bytes are returned by one [`read_from`], so a reader catching up on a
/// long run gets it in pieces rather than one huge answer.
pub const READ_LIMIT: u64 = 1 << 20;

/// The whole lines of the stream at `path` that start at or after byte `offset`, each with
/// the offset just past it (where the next read should start). A missing file has no lines
/// yet; an offset past the end (a stream replaced, or a client's stale id) starts over at 0.
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<(u64, String)>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = if offset > len { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    Read::by_ref(&mut file)
        .take(READ_LIMIT)
        .read_to_end(&mut bytes)?;
    let mut lines = Vec::new();
    let mut at = start;
    let mut rest = &bytes[..];
    if start > 0 && !follows_newline(&mut file, start)? {
        // Not a line boundary (an offset this module never hands out): resume at the next.
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        at += end as u64 + 1;
        rest = &rest[end + 1..];
    }
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        at += end as u64 + 1;
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        if !line.trim().is_empty() {
            lines.push((at, line));
        }
        rest = &rest[end + 1..];
    }
    if lines.is_empty() && rest.len() as u64 == READ_LIMIT {
        // One line longer than the limit: no event is that big, so the stream is not ours.
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: a line longer than {READ_LIMIT} bytes; not an event stream",
                path.display()
            ),
        ));
    }
    Ok(lines)
}

/// Whether the byte before `offset` is a newline.
fn follows_newline(file: &mut std::fs::File, offset: u64) -> std::io::Result<bool> {
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset - 1))?;
    file.read_exact(&mut byte)?;
    Ok(byte[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(step: u64) -> Event {
        Event::StageProgress {
            stage: "train".into(),
            progress: crate::exec::progress::Progress {
                step,
                total: Some(3),
                loss: Some(1.0 / step as f64),
                valid_loss: None,
                tokens_per_second: None,
            },
        }
    }

    #[test]
    fn resumes_after_the_last_line_read_and_leaves_a_partial_line_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r").join(FILE);
        assert!(read_from(&path, 0).unwrap().is_empty(), "no stream yet");
        let mut log = EventLog::open(&path).unwrap();
        log.append(&progress(1)).unwrap();
        log.append(&progress(2)).unwrap();
        let first = read_from(&path, 0).unwrap();
        assert_eq!(first.len(), 2);
        let v: serde_json::Value = serde_json::from_str(&first[1].1).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["step"].as_u64()),
            (Some("stage-progress"), Some(2))
        );
        assert!(v["ts"].is_string());

        // A writer caught mid-line: the partial line is not returned, then is once whole.
        let resume = first[1].0;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"event\":\"stage-pro")
            .unwrap();
        assert!(read_from(&path, resume).unwrap().is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"gress\",\"stage\":\"x\",\"step\":3}\n")
            .unwrap();
        let next = read_from(&path, resume).unwrap();
        assert_eq!(next.len(), 1);
        assert!(next[0].1.contains("\"step\":3"));
        assert_eq!(next[0].0, std::fs::metadata(&path).unwrap().len());

        // An offset inside a line resumes at the next whole line.
        let inside = read_from(&path, first[0].0 + 5).unwrap();
        assert_eq!(inside.len(), 1);
        assert!(inside[0].1.contains("\"step\":3"));

        // A stale offset past the end starts over.
        assert_eq!(read_from(&path, 1 << 40).unwrap().len(), 3);
    }
}
