//! Evaluation: loss and perplexity on a text or a dataset, and accuracy of greedy answers.
//!
//! Loss is the mean next-token negative log-likelihood in nats over the scored tokens;
//! perplexity is `exp(loss)`. A long text is scored in consecutive windows of at most
//! `window` tokens (each window starts with no context: a slight overestimate next to a
//! sliding window, stated so numbers compare). Datasets are the engine's [`Example`]s; for
//! prompt/completion and chat examples only the completion (the last message) is scored:
//! the prompt is masked, as in training.
//!
//! Accuracy greedily generates an answer per example and compares it with the reference
//! after [`normalize`]: Unicode lower-casing, punctuation removed, whitespace collapsed to
//! single spaces and trimmed. `exact` needs equal normalized strings; `contains` needs the
//! normalized reference inside the normalized answer. A multiple-choice example (one with
//! `choices`) is answered with its most likely choice instead ([`choices`]).

pub mod choices;

use crate::chat::ChatTemplate;
use crate::generate::{self, GenerateError, GenerateOptions};
use crate::models::llama::Llama;
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::train::batch::{BatchSpec, TokenizedExample, pad_batch};
use crate::train::loss::{LossBatch, masked_lm_loss};
use mlx_rs::Array;
use mlx_rs::error::Exception;
use mlx_rs::ops::indexing::IndexOp;
use pipe_engine::data::{Example, Message, Role};
use serde::Serialize;

/// An evaluation failure.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// MLX failed.
    #[error("evaluation failed in MLX: {0}")]
    Mlx(#[from] Exception),
    /// Tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A chat template failed.
    #[error(transparent)]
    Chat(#[from] crate::chat::ChatError),
    /// Generation failed.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// A dataset record (an [`Example`]) cannot be used.
    #[error("record {index}: {reason}")]
    Record {
        /// 0-based index of the example.
        index: usize,
        /// Why.
        reason: String,
    },
}

/// Summed loss over scored tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LossStats {
    /// Scored tokens.
    pub tokens: usize,
    /// Sum of negative log-likelihoods (nats).
    pub nll_sum: f64,
}

impl LossStats {
    /// Mean loss in nats per token.
    pub fn loss(&self) -> f64 {
        self.nll_sum / self.tokens.max(1) as f64
    }

    /// `exp(loss)`.
    pub fn perplexity(&self) -> f64 {
        self.loss().exp()
    }

    fn add(&mut self, other: LossStats) {
        self.tokens += other.tokens;
        self.nll_sum += other.nll_sum;
    }
}

/// Negative log-likelihood of `ids[1..]` given their prefixes, scoring only targets at
/// positions `>= score_from` (position i predicts `ids[i]`).
pub fn sequence_nll(
    model: &mut Llama,
    ids: &[u32],
    score_from: usize,
) -> Result<LossStats, Exception> {
    if ids.len() < 2 {
        return Ok(LossStats::default());
    }
    let n = ids.len() as i32;
    let input: Vec<i32> = ids[..ids.len() - 1].iter().map(|&x| x as i32).collect();
    let target: Vec<i32> = ids[1..].iter().map(|&x| x as i32).collect();
    let tokens = Array::from_slice(&input, &[1, n - 1]);
    let logits = model
        .forward_tokens(&tokens, None, None)?
        .as_dtype(mlx_rs::Dtype::Float32)?;
    let targets = Array::from_slice(&target, &[1, n - 1, 1]);
    let picked = logits.take_along_axis(&targets, -1)?.squeeze_axes(&[-1])?;
    let nll = logits.logsumexp_axis(-1, None)?.subtract(&picked)?;
    let from = score_from.max(1) as i32 - 1;
    let scored = nll.index((.., from..));
    let sum = scored.sum(None)?.item_exact::<f32>();
    Ok(LossStats {
        tokens: (n - 1 - from).max(0) as usize,
        nll_sum: f64::from(sum),
    })
}

/// Perplexity of a text, in windows of at most `window` tokens.
pub fn text_loss(
    model: &mut Llama,
    tok: &Tokenizer,
    text: &str,
    window: usize,
) -> Result<LossStats, EvalError> {
    let ids = tok.encode(text, true)?;
    let mut stats = LossStats::default();
    for chunk in ids.chunks(window.max(2)) {
        stats.add(sequence_nll(model, chunk, 1)?);
    }
    Ok(stats)
}

/// The prompt and the scored part of an example, as token ids.
pub fn example_ids(
    example: &Example,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    index: usize,
) -> Result<(Vec<u32>, Vec<u32>), EvalError> {
    let need_template = || EvalError::Record {
        index,
        reason: "chat records need a model with a chat template".into(),
    };
    match example {
        Example::Text { text } => Ok((Vec::new(), tok.encode(text, true)?)),
        Example::Completion {
            prompt, completion, ..
        } => match template {
            Some(t) => {
                let messages = [Message::new(Role::User, prompt)];
                chat_split(t, tok, &messages, completion)
            }
            None => Ok((tok.encode(prompt, true)?, tok.encode(completion, false)?)),
        },
        Example::Chat { messages, .. } => {
            let (last, history) = messages.split_last().ok_or(EvalError::Record {
                index,
                reason: "no messages".into(),
            })?;
            chat_split(
                template.ok_or_else(need_template)?,
                tok,
                history,
                &last.content,
            )
        }
    }
}

/// Renders the prompt with the generation prompt, then the full conversation, and
/// scores the tokens after the prompt's.
fn chat_split(
    t: &ChatTemplate,
    tok: &Tokenizer,
    history: &[Message],
    reply: &str,
) -> Result<(Vec<u32>, Vec<u32>), EvalError> {
    let prompt = t.render(history, true)?;
    let mut all = history.to_vec();
    all.push(Message::new(Role::Assistant, reply));
    let full = t.render(&all, false)?;
    let p = tok.encode(&prompt, false)?;
    let f = tok.encode(&full, false)?;
    if f.starts_with(&p) {
        Ok((p.clone(), f[p.len()..].to_vec()))
    } else {
        // The template renders the prompt differently inside the full conversation:
        // fall back to the rendered reply alone.
        let reply_ids = tok.encode(full.strip_prefix(&prompt).unwrap_or(reply), false)?;
        Ok((p, reply_ids))
    }
}

/// Loss over dataset examples (completions only where there is a prompt).
///
/// The examples are scored in batches of similar length, through the trainer's loss: each
/// batch's shared prompt prefix runs once and the LM head runs only where loss is taken.
/// Right padding never reaches a scored position (attention is causal), so the sum equals
/// scoring every example alone with [`sequence_nll`].
pub fn dataset_loss(
    model: &mut Llama,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    examples: &[Example],
) -> Result<LossStats, EvalError> {
    let rows: Vec<(usize, &Example)> = examples.iter().enumerate().collect();
    loss_of(model, tok, template, &rows)
}

/// [`dataset_loss`] of some examples, each with its index for error messages.
fn loss_of(
    model: &mut Llama,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    examples: &[(usize, &Example)],
) -> Result<LossStats, EvalError> {
    let mut rows = Vec::with_capacity(examples.len());
    for &(i, e) in examples {
        let (mut ids, scored) = example_ids(e, tok, template, i)?;
        let from = ids.len().max(1);
        ids.extend(scored);
        let loss_mask = (0..ids.len()).map(|j| j >= from).collect();
        rows.push(TokenizedExample { ids, loss_mask });
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (rows[i].len(), i));
    let spec = BatchSpec {
        batch_size: LOSS_BATCH_ROWS,
        max_seq_len: usize::MAX,
        pad_multiple: 1,
        keep_partial: true,
    };
    let mut stats = LossStats::default();
    for chunk in length_batches(&order, |&i| rows[i].len()) {
        let chunk: Vec<&TokenizedExample> = chunk.iter().map(|&i| &rows[i]).collect();
        let batch = LossBatch::from_padded_shared(&pad_batch(&chunk, &spec, tok.pad_id()));
        if batch.loss_tokens == 0 {
            continue;
        }
        let mean = masked_lm_loss(model, &batch)?.item_exact::<f32>();
        stats.add(LossStats {
            tokens: batch.loss_tokens,
            nll_sum: f64::from(mean) * batch.loss_tokens as f64,
        });
    }
    Ok(stats)
}

/// Splits `items`, sorted by length, into consecutive batches of at most
/// [`LOSS_BATCH_ROWS`] items and [`LOSS_BATCH_TOKENS`] tokens once padded to the batch's
/// longest (its last item); a longer item goes alone.
fn length_batches<T>(items: &[T], len: impl Fn(&T) -> usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let fits = |n: usize| n * len(&rest[n - 1]) <= LOSS_BATCH_TOKENS;
        let n = (1..=rest.len().min(LOSS_BATCH_ROWS))
            .take_while(|&n| n == 1 || fits(n))
            .last()
            .unwrap_or(1);
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        Some(batch)
    })
}

/// Rows scored together in one forward pass ([`dataset_loss`], multiple choice), at most.
const LOSS_BATCH_ROWS: usize = 16;
/// Padded tokens in one batch, at most (a longer example goes alone): a text example
/// carries loss everywhere, and its float32 logits are `tokens × vocab`.
const LOSS_BATCH_TOKENS: usize = 2048;

/// Normalization for answer matching; see the module documentation.
pub fn normalize(s: &str) -> String {
    let lowered = s.to_lowercase();
    let kept: String = lowered
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `answer` matches `reference` exactly, after [`normalize`].
pub fn exact_match(answer: &str, reference: &str) -> bool {
    normalize(answer) == normalize(reference)
}

/// Whether the normalized `reference` occurs in the normalized `answer`.
pub fn contains_match(answer: &str, reference: &str) -> bool {
    let reference = normalize(reference);
    !reference.is_empty() && normalize(answer).contains(&reference)
}

/// Accuracy counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Accuracy {
    /// Examples scored.
    pub total: usize,
    /// Normalized answer equals normalized reference.
    pub exact: usize,
    /// Normalized reference occurs in the normalized answer.
    pub contains: usize,
    /// Per example: (answer, reference) for inspection.
    pub answers: Vec<(String, String)>,
}

impl Accuracy {
    /// Exact-match rate.
    pub fn exact_rate(&self) -> f64 {
        self.exact as f64 / self.total.max(1) as f64
    }

    /// Contains-match rate.
    pub fn contains_rate(&self) -> f64 {
        self.contains as f64 / self.total.max(1) as f64
    }
}

/// Answers to prompt/completion or chat examples (greedy, or the most likely choice of a
/// multiple-choice one), scored against the reference.
pub fn accuracy(
    model: &mut Llama,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    examples: &[Example],
    max_tokens: usize,
) -> Result<Accuracy, EvalError> {
    Ok(answer(model, tok, template, examples, max_tokens)?.0)
}

/// [`dataset_loss`] and [`accuracy`] of the same examples, with one forward pass fewer
/// over the multiple-choice rows: a row's loss is that of its reference answer, which is
/// one of its choices, already scored to pick the answer (the choice's log-likelihood is
/// minus the row's loss sum, over the same tokens).
pub fn loss_and_accuracy(
    model: &mut Llama,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    examples: &[Example],
    max_tokens: usize,
) -> Result<(LossStats, Accuracy), EvalError> {
    let (acc, choice_scores) = answer(model, tok, template, examples, max_tokens)?;
    let mut loss = LossStats::default();
    let mut from_choices = vec![false; examples.len()];
    for (i, scores) in choice_scores {
        let Example::Completion { completion, .. } = &examples[i] else {
            continue;
        };
        if let Some(right) = scores.iter().find(|s| s.choice == *completion) {
            loss.add(LossStats {
                tokens: right.tokens,
                nll_sum: -right.log_likelihood,
            });
            from_choices[i] = true;
        }
    }
    let rest: Vec<(usize, &Example)> = examples
        .iter()
        .enumerate()
        .filter(|(i, _)| !from_choices[*i])
        .collect();
    if !rest.is_empty() {
        loss.add(loss_of(model, tok, template, &rest)?);
    }
    Ok((loss, acc))
}

/// Every multiple-choice row's index with the scores of its choices.
type ChoiceScoresByRow = Vec<(usize, Vec<choices::ChoiceScore>)>;

/// [`accuracy`], and the scores of every multiple-choice row's choices by row index.
fn answer(
    model: &mut Llama,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    examples: &[Example],
    max_tokens: usize,
) -> Result<(Accuracy, ChoiceScoresByRow), EvalError> {
    let mut acc = Accuracy::default();
    let options = GenerateOptions {
        max_tokens,
        ..Default::default()
    };
    // Answers in example order, filled in below: most likely choices, then generations.
    let mut answers: Vec<Option<String>> = Vec::with_capacity(examples.len());
    let mut references: Vec<String> = Vec::with_capacity(examples.len());
    let mut pending: Vec<(usize, Vec<u32>)> = Vec::with_capacity(examples.len());
    let mut multiple_choice: Vec<(usize, &Example)> = Vec::new();
    for (i, e) in examples.iter().enumerate() {
        let reference = match e {
            Example::Completion { completion, .. } => completion.clone(),
            Example::Chat { messages, .. } => messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default(),
            Example::Text { .. } => {
                return Err(EvalError::Record {
                    index: i,
                    reason: "accuracy needs prompt/completion or chat records".into(),
                });
            }
        };
        references.push(reference);
        answers.push(None);
        if e.choices().is_empty() {
            let (prompt, _) = example_ids(e, tok, template, i)?;
            pending.push((i, prompt));
        } else {
            multiple_choice.push((i, e));
        }
    }
    let scored = choices::score_choices_batched(model, tok, template, &multiple_choice)?;
    for (scores, (i, _)) in scored.iter().zip(&multiple_choice) {
        answers[*i] = choices::most_likely(scores).map(|s| s.choice.clone());
    }
    // Greedy answers in padded batches (batched equals unbatched: tested in `generate`);
    // each decoding step then reads the weights once for the whole batch. Prompts of
    // similar length go together, so little of a batch is padding.
    pending.sort_by_key(|(i, prompt)| (prompt.len(), *i));
    for chunk in pending.chunks(ACCURACY_BATCH) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|(_, p)| p.clone()).collect();
        let (generations, _) = generate::generate_batch(model, tok, &prompts, &options)?;
        for (g, (i, _)) in generations.into_iter().zip(chunk) {
            answers[*i] = Some(g.text);
        }
    }
    for (answer, reference) in answers.into_iter().zip(references) {
        let answer = answer.unwrap_or_default();
        acc.total += 1;
        acc.exact += usize::from(exact_match(&answer, &reference));
        acc.contains += usize::from(contains_match(&answer, &reference));
        acc.answers.push((answer, reference));
    }
    let choice_scores = multiple_choice
        .iter()
        .map(|(i, _)| *i)
        .zip(scored)
        .collect();
    Ok((acc, choice_scores))
}

/// Examples answered together by [`accuracy`].
const ACCURACY_BATCH: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::llama::tiny_random;

    #[test]
    fn normalization_is_as_documented() {
        assert_eq!(
            normalize("  The  Capital,\tis PARIS! "),
            "the capital is paris"
        );
        assert_eq!(normalize("Élan—vital."), "élan vital");
    }

    #[test]
    fn masked_loss_scores_only_the_completion() {
        let mut model = tiny_random(5, 40, 1, false).unwrap();
        let ids = [1u32, 5, 9, 13, 17, 21];
        let all = sequence_nll(&mut model, &ids, 1).unwrap();
        let tail = sequence_nll(&mut model, &ids, 4).unwrap();
        assert_eq!(all.tokens, 5);
        assert_eq!(tail.tokens, 2);
        // Per-token losses add up: head + tail = all.
        let head = sequence_nll(&mut model, &ids[..4], 1).unwrap();
        assert!((head.nll_sum + tail.nll_sum - all.nll_sum).abs() < 1e-3);
        // Random logits over 40 tokens: loss near ln(40).
        assert!(all.loss() > 1.0 && all.loss() < 10.0);
    }

    /// Batched, prefix-shared and padded, the dataset loss is still each example's own.
    #[test]
    fn dataset_loss_equals_scoring_each_example_alone() {
        let mut model = tiny_random(3, 300, 2, false).unwrap();
        let tok = Tokenizer::from_gguf(&crate::tokenizer::toy("smollm")).unwrap();
        let completion = |prompt: &str, completion: &str| Example::Completion {
            prompt: prompt.into(),
            completion: completion.into(),
            category: None,
            choices: Vec::new(),
        };
        // A shared preamble (run once per batch), rows of different lengths, a text
        // record scored everywhere, and more rows than one batch holds.
        let mut examples: Vec<Example> = (0..LOSS_BATCH_ROWS + 3)
            .map(|i| {
                let verb = ["go", "walk", "sing", "be", "jump"][i % 5];
                completion(
                    &format!("The past tense of the verb {verb}, number {i}, is"),
                    &format!("{verb}ed {}", "x".repeat(i % 4)),
                )
            })
            .collect();
        examples.push(Example::Text {
            text: "A plain text record, scored from its second token.".into(),
        });
        let batched = dataset_loss(&mut model, &tok, None, &examples).unwrap();
        let mut alone = LossStats::default();
        for (i, e) in examples.iter().enumerate() {
            let (mut ids, scored) = example_ids(e, &tok, None, i).unwrap();
            let from = ids.len().max(1);
            ids.extend(scored);
            alone.add(sequence_nll(&mut model, &ids, from).unwrap());
        }
        assert_eq!(batched.tokens, alone.tokens);
        assert!(
            (batched.nll_sum - alone.nll_sum).abs() < 1e-3 * alone.nll_sum.max(1.0),
            "{batched:?} vs {alone:?}"
        );
    }

    /// The loss taken from the choices' scores is the dataset loss, and the answers are
    /// accuracy's, on multiple-choice rows (one whose reference is not a choice), and
    /// generated ones mixed.
    #[test]
    fn loss_and_accuracy_equal_the_two_passes() {
        let mut model = tiny_random(3, 300, 2, false).unwrap();
        let tok = Tokenizer::from_gguf(&crate::tokenizer::toy("smollm")).unwrap();
        let row = |i: usize, completion: &str, choices: &[&str]| Example::Completion {
            prompt: format!("Question {i}: {}?", "why ".repeat(i % 5)),
            completion: completion.into(),
            category: None,
            choices: choices.iter().map(|c| c.to_string()).collect(),
        };
        let mut examples: Vec<Example> = (0..LOSS_BATCH_ROWS + 2)
            .map(|i| row(i, ["yes", "no"][i % 2], &["yes", "no"]))
            .collect();
        examples.push(row(40, "perhaps", &["yes", "no"]));
        examples.push(row(41, "went", &[]));
        examples.push(row(42, "walked far", &[]));
        let (loss, acc) = loss_and_accuracy(&mut model, &tok, None, &examples, 3).unwrap();
        let two_passes = dataset_loss(&mut model, &tok, None, &examples).unwrap();
        let answers = accuracy(&mut model, &tok, None, &examples, 3).unwrap();
        assert_eq!(loss.tokens, two_passes.tokens);
        assert!(
            (loss.nll_sum - two_passes.nll_sum).abs() < 1e-3 * two_passes.nll_sum.max(1.0),
            "{loss:?} vs {two_passes:?}"
        );
        assert_eq!(acc.answers, answers.answers);
        assert_eq!((acc.exact, acc.total), (answers.exact, answers.total));
    }
}
