//! The decoding engine: one thread that owns the model (MLX state stays on one thread) and
//! runs the continuous batch.
//!
//! Each turn of its loop takes the commands that arrived (new requests, adapter changes),
//! drops requests whose client has gone, admits waiting requests into free rows (prefill
//! alone, first token, then [`BatchCache::join`]), runs one decode step over every live
//! row, and lets finished rows leave ([`BatchCache::retain`]). A request therefore joins
//! the running batch at the next step and leaves it the step it ends; nobody waits for a
//! batch to drain.
//!
//! Results go back to the HTTP side as [`Event`]s on the request's own channel. A closed
//! channel means the client disconnected: its row is dropped before the next step.

use super::adapters::{AdapterError, AdapterInfo, Registry};
use super::batch::{BatchCache, prefill, step_tokens};
use super::sampling::{Choice, Sampler, SamplingParams};
use crate::generate::TextStream;
use crate::models::llama::Llama;
use crate::tokenizer::Tokenizer;
use mlx_rs::error::Exception;
use mlx_rs::ops::indexing::{IndexOp, argmax_axis};
use mlx_rs::{Array, Dtype};
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc::UnboundedSender, oneshot};

/// Why a completion ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` (or the context) reached.
    Length,
}

/// One generated token's log probabilities, as text.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its log probability.
    pub logprob: f32,
    /// The most likely alternatives with theirs.
    pub top: Vec<(String, f32)>,
}

/// What the engine tells a request's HTTP handler.
#[derive(Debug)]
pub enum Event {
    /// New text (possibly empty when held back) and the tokens' log probabilities.
    Text {
        /// The text since the last event.
        text: String,
        /// Log probabilities of the tokens since the last event, when asked for.
        logprobs: Vec<TokenLogprob>,
    },
    /// The completion ended.
    Done {
        /// Why.
        finish: Finish,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Generated tokens (an end-of-sequence token not counted).
        completion_tokens: usize,
    },
    /// The request failed.
    Failed {
        /// HTTP status to answer with (when nothing was sent yet).
        status: u16,
        /// A message for the client.
        message: String,
    },
}

/// Counts requests in the server (waiting or decoding); a slot is freed when its
/// [`Admission`] drops.
#[derive(Debug, Default)]
pub struct Load {
    /// Requests admitted and not finished.
    pub in_flight: AtomicUsize,
    /// Rows in the running batch.
    pub decoding: AtomicUsize,
}

/// A request's hold on a server slot.
#[derive(Debug)]
pub struct Admission(Arc<Load>);

impl Admission {
    /// Takes a slot if fewer than `limit` requests are in flight.
    pub fn try_new(load: &Arc<Load>, limit: usize) -> Option<Self> {
        load.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(load.clone()))
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One completion request, tokenized and validated.
#[derive(Debug)]
pub struct Job {
    /// Prompt ids.
    pub prompt: Vec<u32>,
    /// The adapter, or `None` for the base.
    pub adapter: Option<String>,
    /// The most new tokens.
    pub max_tokens: usize,
    /// Stop strings (not returned).
    pub stop: Vec<String>,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Generate past end-of-sequence tokens, up to `max_tokens`.
    pub ignore_eos: bool,
    /// Where results go.
    pub events: UnboundedSender<Event>,
    /// The request's server slot.
    pub admission: Admission,
}

/// What the engine thread is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Decode a request.
    Generate(Job),
    /// Load an adapter.
    AddAdapter {
        /// Its name.
        name: String,
        /// Its directory.
        path: PathBuf,
        /// The outcome.
        reply: oneshot::Sender<Result<(), AdapterError>>,
    },
    /// Unload an adapter (after its rows in flight finish).
    RemoveAdapter {
        /// Its name.
        name: String,
        /// The outcome.
        reply: oneshot::Sender<Result<(), AdapterError>>,
    },
}

/// A live row of the batch.
struct Row {
    job: Job,
    adapter: Option<Arc<str>>,
    sampler: Sampler,
    stream: TextStream,
    /// Prompt then completion ids (the repetition penalty's context).
    history: Vec<u32>,
    /// The last chosen token: the next step's input.
    last: u32,
    generated: usize,
    finished: bool,
}

/// The engine's state; see the module documentation.
pub struct Engine {
    model: Llama,
    tokenizer: Arc<Tokenizer>,
    registry: Registry,
    /// The adapter list the HTTP side reads.
    adapters: Arc<RwLock<Vec<AdapterInfo>>>,
    load: Arc<Load>,
    max_batch: usize,
    batch: BatchCache,
    rows: Vec<Row>,
    /// Requests waiting for a row, with their adapter (resolved on arrival, so removing
    /// an adapter never fails a request that reached the engine before the removal).
    waiting: VecDeque<(Job, Option<Arc<str>>)>,
}

impl Engine {
    /// An engine over `model` decoding at most `max_batch` rows at once.
    pub fn new(
        model: Llama,
        tokenizer: Arc<Tokenizer>,
        registry: Registry,
        adapters: Arc<RwLock<Vec<AdapterInfo>>>,
        load: Arc<Load>,
        max_batch: usize,
    ) -> Self {
        let batch = BatchCache::new(&model);
        Self {
            model,
            tokenizer,
            registry,
            adapters,
            load,
            max_batch: max_batch.max(1),
            batch,
            rows: Vec::new(),
            waiting: VecDeque::new(),
        }
    }

    /// Loads an adapter before serving starts.
    pub fn add_adapter(&mut self, name: &str, path: &std::path::Path) -> Result<(), AdapterError> {
        self.registry.add(&mut self.model, name, path)?;
        self.publish_adapters();
        Ok(())
    }

    /// Runs until every sender of `commands` is gone.
    pub fn run(mut self, commands: Receiver<Command>) {
        loop {
            if self.rows.is_empty() && self.waiting.is_empty() {
                match commands.recv() {
                    Ok(c) => self.handle(c),
                    Err(_) => return,
                }
            }
            while let Ok(c) = commands.try_recv() {
                self.handle(c);
            }
            self.waiting.retain(|(j, _)| !j.events.is_closed());
            while self.rows.len() < self.max_batch {
                let Some((job, adapter)) = self.waiting.pop_front() else {
                    break;
                };
                if let Err(e) = self.admit(job, adapter) {
                    self.fail_all(&e);
                }
            }
            self.leave();
            if !self.rows.is_empty()
                && let Err(e) = self.step()
            {
                self.fail_all(&e);
            }
            self.leave();
            self.load.decoding.store(self.rows.len(), Ordering::Relaxed);
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Generate(job) => {
                let adapter = match &job.adapter {
                    None => None,
                    Some(name) => match self.registry.lookup(name) {
                        Some(a) => Some(a),
                        None => {
                            let _ = job.events.send(Event::Failed {
                                status: 404,
                                message: format!(
                                    "the model `{name}` does not exist (it was removed)"
                                ),
                            });
                            return;
                        }
                    },
                };
                self.waiting.push_back((job, adapter));
            }
            Command::AddAdapter { name, path, reply } => {
                let r = self.registry.add(&mut self.model, &name, &path);
                self.publish_adapters();
                let _ = reply.send(r);
            }
            Command::RemoveAdapter { name, reply } => {
                let r = self.registry.remove(&name);
                self.publish_adapters();
                let _ = reply.send(r);
            }
        }
    }

    fn publish_adapters(&self) {
        let list = self.registry.list();
        *self
            .adapters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = list;
    }

    /// Prefills a request alone, chooses its first token and adds it to the batch.
    fn admit(&mut self, job: Job, adapter: Option<Arc<str>>) -> Result<(), Exception> {
        self.registry.route(std::slice::from_ref(&adapter));
        let (cache, logits) = prefill(&mut self.model, &job.prompt)?;
        let mut row = Row {
            history: job.prompt.clone(),
            sampler: Sampler::new(job.sampling.clone()),
            adapter,
            job,
            stream: TextStream::new(),
            last: 0,
            generated: 0,
            finished: false,
        };
        let choice = if row.sampler.needs_logits() {
            let mut v = read::<f32>(&logits.index(0).as_dtype(Dtype::Float32)?)?;
            row.sampler.choose(&mut v, &row.history)
        } else {
            let id = argmax_axis(&logits, -1, None)?.as_dtype(Dtype::Uint32)?;
            Choice {
                id: read::<u32>(&id)?.first().copied().unwrap_or(0),
                logprob: None,
                top: Vec::new(),
            }
        };
        self.accept(&mut row, choice);
        if !row.finished {
            self.batch.join(&cache)?;
            self.rows.push(row);
        }
        Ok(())
    }

    /// One decode step over every live row.
    fn step(&mut self) -> Result<(), Exception> {
        let ids: Vec<u32> = self.rows.iter().map(|r| r.last).collect();
        let routes: Vec<Option<Arc<str>>> = self.rows.iter().map(|r| r.adapter.clone()).collect();
        self.registry.route(&routes);
        let mask = self.batch.key_mask(1);
        let positions = self.batch.positions();
        let logits = self
            .model
            .forward_rows(
                &step_tokens(&ids)?,
                self.batch.cache_mut(),
                &mask,
                &positions,
            )?
            .index((.., -1, ..));
        let greedy = argmax_axis(&logits, -1, None)?.as_dtype(Dtype::Uint32)?;
        let wanted: Vec<i32> = (0..self.rows.len())
            .filter(|&i| self.rows[i].sampler.needs_logits())
            .map(|i| i as i32)
            .collect();
        let full = if wanted.is_empty() {
            None
        } else {
            let idx = Array::from_slice(&wanted, &[wanted.len() as i32]);
            Some(logits.take_axis(&idx, 0)?.as_dtype(Dtype::Float32)?)
        };
        match &full {
            Some(f) => mlx_rs::transforms::eval([&greedy, f])?,
            None => greedy.eval()?,
        }
        let greedy = read::<u32>(&greedy)?;
        let vocab = logits.shape()[1] as usize;
        let full: Option<Vec<f32>> = full.map(|f| read::<f32>(&f)).transpose()?;
        let mut rows = std::mem::take(&mut self.rows);
        for (i, row) in rows.iter_mut().enumerate() {
            let choice = match wanted.iter().position(|&w| w as usize == i) {
                Some(k) => {
                    let all = full.as_deref().unwrap_or_default();
                    let mut v = all[k * vocab..(k + 1) * vocab].to_vec();
                    row.sampler.choose(&mut v, &row.history)
                }
                None => Choice {
                    id: greedy[i],
                    logprob: None,
                    top: Vec::new(),
                },
            };
            self.accept(row, choice);
        }
        self.rows = rows;
        Ok(())
    }

    /// Records a chosen token: text, stop checks, the event to the client.
    fn accept(&self, row: &mut Row, choice: Choice) {
        let tok = &self.tokenizer;
        let stops = &row.job.stop;
        let mut finish = None;
        let mut logprobs = Vec::new();
        if tok.eos_ids.contains(&choice.id) && !row.job.ignore_eos {
            finish = Some(Finish::Stop);
        } else {
            row.generated += 1;
            row.history.push(choice.id);
            if let Some(lp) = choice.logprob {
                let text = |id: u32| tok.decode(&[id], false).unwrap_or_default();
                logprobs.push(TokenLogprob {
                    token: text(choice.id),
                    logprob: lp,
                    top: choice.top.iter().map(|&(id, l)| (text(id), l)).collect(),
                });
            }
            match row.stream.push(tok, choice.id, stops) {
                Ok(Some(at)) => {
                    row.stream.text.truncate(at);
                    finish = Some(Finish::Stop);
                }
                Ok(None) if row.generated >= row.job.max_tokens => finish = Some(Finish::Length),
                Ok(None) => {}
                Err(e) => {
                    let _ = row.job.events.send(Event::Failed {
                        status: 500,
                        message: e.to_string(),
                    });
                    row.finished = true;
                    return;
                }
            }
        }
        row.last = choice.id;
        let text = row.stream.delta(stops, finish.is_some());
        let mut sent = true;
        if !text.is_empty() || !logprobs.is_empty() {
            sent = row.job.events.send(Event::Text { text, logprobs }).is_ok();
        }
        if let Some(finish) = finish {
            let _ = row.job.events.send(Event::Done {
                finish,
                prompt_tokens: row.job.prompt.len(),
                completion_tokens: row.generated,
            });
            row.finished = true;
        }
        if !sent {
            row.finished = true;
        }
    }

    /// Drops finished rows and rows whose client is gone; unloads retired adapters.
    fn leave(&mut self) {
        let keep: Vec<usize> = (0..self.rows.len())
            .filter(|&i| !self.rows[i].finished && !self.rows[i].job.events.is_closed())
            .collect();
        if keep.len() != self.rows.len() {
            if let Err(e) = self.batch.retain(&keep) {
                self.fail_all(&e);
                return;
            }
            let mut i = 0;
            self.rows.retain(|_| {
                let k = keep.contains(&i);
                i += 1;
                k
            });
        }
        let in_use: BTreeSet<Arc<str>> = self
            .rows
            .iter()
            .filter_map(|r| r.adapter.clone())
            .chain(self.waiting.iter().filter_map(|(_, a)| a.clone()))
            .collect();
        self.registry.collect(&mut self.model, &in_use);
    }

    /// An MLX failure: every live row fails and the batch starts over.
    fn fail_all(&mut self, e: &Exception) {
        for row in self.rows.drain(..) {
            let _ = row.job.events.send(Event::Failed {
                status: 500,
                message: format!("generation failed in MLX: {e}"),
            });
        }
        self.batch = BatchCache::new(&self.model);
    }
}

/// An evaluated array's elements (an MLX failure is an error, not a panic).
fn read<T: mlx_rs::ArrayElement + Clone>(a: &Array) -> Result<Vec<T>, Exception> {
    let a = a.contiguous()?;
    a.try_as_slice::<T>()
        .map(<[T]>::to_vec)
        .map_err(|e| Exception::custom(format!("cannot read an MLX result: {e}")))
}
