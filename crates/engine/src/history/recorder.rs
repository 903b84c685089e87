//! Writing a run's record while it runs: [`Recorder::start`] when the run begins,
//! [`Recorder::event`] for each executor event, [`Recorder::finish`] at the end.

use super::events::EventLog;
use super::outcome::Outcome;
use super::record::{
    GitState, Host, RECORD_SCHEMA, RunRecord, RunStatus, Series, StageRecord, StageStatus,
    TrackingTarget,
};
use crate::atomic_write::write_json;
use crate::exec::Event;
use crate::exec::events::utc_now;
use crate::exec::lockfile::LockFile;
use crate::spec::{Pipeline, Stage};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The record of the run in progress.
#[derive(Debug)]
pub struct Recorder {
    root: PathBuf,
    lock_path: PathBuf,
    stages: BTreeMap<String, Stage>,
    started: BTreeMap<String, (u64, PathBuf)>,
    record: RunRecord,
    events: EventLog,
}

impl Recorder {
    /// Opens the record of a new run of `pipeline` and writes it (status `running`).
    pub fn start(
        pipeline: &Pipeline,
        sets: &[String],
        host: Host,
        tracking: Option<TrackingTarget>,
    ) -> std::io::Result<Self> {
        let root = pipeline.root.clone();
        let pipeline_bytes = std::fs::read(&pipeline.file).unwrap_or_default();
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        let file = abs(&pipeline.file);
        let pipeline_file = file
            .strip_prefix(abs(&root))
            .unwrap_or(&file)
            .display()
            .to_string();
        let record = RunRecord {
            schema: RECORD_SCHEMA,
            id: new_id(),
            pipeline: pipeline.name.clone(),
            pipeline_file,
            pipeline_hash: blake3::hash(&pipeline_bytes).to_hex().to_string(),
            sets: sets.to_vec(),
            git: git_state(&root),
            started: utc_now(),
            started_ms: now_ms(),
            tracking,
            ended: None,
            status: RunStatus::Running,
            pid: std::process::id(),
            host,
            stages: Vec::new(),
        };
        let events = EventLog::open(&super::events::path(&root, &record.id))?;
        let recorder = Recorder {
            lock_path: pipeline.lock_path(),
            stages: pipeline
                .stages
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            started: BTreeMap::new(),
            root,
            record,
            events,
        };
        recorder.save()?;
        Ok(recorder)
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The record so far.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Takes one executor event into the record; stage endings are written at once. Every
    /// event, progress included, is also appended to the run's event stream.
    pub fn event(&mut self, event: &Event) -> std::io::Result<()> {
        self.events.append(event)?;
        let (name, status, duration_ms, error) = match event {
            Event::StageStart { stage, log, .. } => {
                self.started.insert(stage.clone(), (now_ms(), log.clone()));
                return Ok(());
            }
            Event::StageFinish {
                stage, duration_ms, ..
            } => (stage, StageStatus::Ran, Some(*duration_ms), None),
            Event::StageRestored { stage, .. } => (stage, StageStatus::Restored, None, None),
            Event::StageCached { stage, .. } => (stage, StageStatus::Cached, None, None),
            Event::StageFailed {
                stage,
                error,
                duration_ms,
                ..
            } => (
                stage,
                StageStatus::Failed,
                Some(*duration_ms),
                Some(error.clone()),
            ),
            Event::StageSkipped { stage, because } => (
                stage,
                StageStatus::Skipped,
                None,
                Some(format!("skipped: `{because}` failed")),
            ),
            Event::StageProgress { .. } | Event::RemoteRefused { .. } | Event::Summary { .. } => {
                return Ok(());
            }
        };
        let Some(stage) = self.stages.get(name).cloned() else {
            return Ok(());
        };
        let record = self.stage_record(&stage, status, duration_ms, error)?;
        self.record.stages.retain(|s| s.name != record.name);
        self.record.stages.push(record);
        self.save()
    }

    /// Ends the record.
    pub fn finish(&mut self, status: RunStatus) -> std::io::Result<()> {
        self.record.status = status;
        self.record.ended = Some(utc_now());
        self.save()
    }

    fn stage_record(
        &self,
        stage: &Stage,
        status: StageStatus,
        duration_ms: Option<u64>,
        error: Option<String>,
    ) -> std::io::Result<StageRecord> {
        let settled = matches!(
            status,
            StageStatus::Ran | StageStatus::Restored | StageStatus::Cached
        );
        let fingerprint = settled
            .then(|| LockFile::load(&self.lock_path).ok())
            .flatten()
            .and_then(|lock| lock.stages.get(&stage.name).map(|e| e.fingerprint.clone()));
        let mut outcome = if settled {
            stage.kind.outcome(&stage.config, &self.root)
        } else {
            Outcome::default()
        };
        for file in &stage.metrics {
            outcome.add_metrics_file(&self.root, file, "");
        }
        let mut series_names = Vec::new();
        if status == StageStatus::Ran && !outcome.series.is_empty() {
            let start = self
                .started
                .get(&stage.name)
                .map_or_else(now_ms, |(ms, _)| *ms);
            let series: Vec<Series> = outcome
                .series
                .iter()
                .map(|s| Series {
                    name: s.name.clone(),
                    points: s
                        .points
                        .iter()
                        .map(|&(k, v, t)| (k, v, start + t))
                        .collect(),
                })
                .collect();
            write_json(&self.series_path(&stage.name), &series)?;
            series_names = series.into_iter().map(|s| s.name).collect();
        }
        let produced_by = match (&fingerprint, status) {
            (Some(f), StageStatus::Ran) => {
                self.note_produced(f, &stage.name)?;
                Some(self.record.id.clone())
            }
            (Some(f), _) => super::read::producer(&self.root, f),
            (None, _) => None,
        };
        Ok(StageRecord {
            name: stage.name.clone(),
            kind: stage.kind.name().to_owned(),
            status,
            fingerprint,
            produced_by,
            ended: utc_now(),
            ended_ms: now_ms(),
            duration_ms,
            error,
            config: match &stage.cmd {
                Some(cmd) => serde_json::json!({ "cmd": cmd }),
                None => stage.config.clone(),
            },
            params: stage.params.clone(),
            metrics: outcome.metrics,
            artifacts: outcome.artifacts,
            trials: outcome.trials,
            tags: outcome.tags,
            recommends: outcome.recommended_train_dir.as_deref().and_then(|dir| {
                let dir = dir.trim_end_matches('/');
                self.stages
                    .values()
                    .find(|s| {
                        s.kind == crate::stages::Kind::TRAIN
                            && s.outs.iter().any(|o| o.trim_end_matches('/') == dir)
                    })
                    .map(|s| s.name.clone())
            }),
            series: series_names,
            log: self.keep_log(&stage.name)?,
        })
    }

    /// Copies the log of a stage that ran into the record (the workspace's copy is
    /// replaced by the next run), keeping the last [`LOG_LIMIT`] bytes of a huge one.
    fn keep_log(&self, stage: &str) -> std::io::Result<Option<String>> {
        let Some((_, log)) = self.started.get(stage) else {
            return Ok(None);
        };
        let Ok(bytes) = std::fs::read(log) else {
            return Ok(None);
        };
        let tail = &bytes[bytes.len().saturating_sub(LOG_LIMIT)..];
        let rel = format!("logs/{}.log", super::file_stem(stage));
        crate::atomic_write::write_atomic(
            &super::run_dir(&self.root, &self.record.id).join(&rel),
            tail,
        )?;
        Ok(Some(rel))
    }

    fn series_path(&self, stage: &str) -> PathBuf {
        super::run_dir(&self.root, &self.record.id)
            .join("series")
            .join(format!("{}.json", super::file_stem(stage)))
    }

    /// Appends `fingerprint -> this run` to the producer index (one short line, appended
    /// in one write, so concurrent runs cannot interleave inside a line).
    fn note_produced(&self, fingerprint: &str, stage: &str) -> std::io::Result<()> {
        let path = super::dir(&self.root).join("produced.jsonl");
        let line =
            serde_json::json!({"fingerprint": fingerprint, "run": self.record.id, "stage": stage});
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        file.write_all(format!("{line}\n").as_bytes())
    }

    fn save(&self) -> std::io::Result<()> {
        write_json(
            &super::run_dir(&self.root, &self.record.id).join("run.json"),
            &self.record,
        )
    }
}

/// The most of a stage's log a record keeps.
const LOG_LIMIT: usize = 4 << 20;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `20261203T191512.517Z-3f2a9c`: the start time to the millisecond (so ids sort as runs
/// started), then randomness so two runs started in the same millisecond never collide.
fn new_id() -> String {
    let ms = now_ms();
    let stamp: String = crate::exec::events::utc(ms / 1000)
        .chars()
        .filter(|c| !"-:Z".contains(*c))
        .collect();
    format!(
        "{stamp}.{:03}Z-{:06x}",
        ms % 1000,
        rand::random::<u32>() & 0xff_ffff
    )
}

/// The commit checked out at `root` and whether tracked files differ from it; `None`
/// outside git (or without git installed).
pub fn git_state(root: &Path) -> Option<GitState> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(GitState { commit, dirty })
}
