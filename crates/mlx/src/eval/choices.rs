//! Multiple-choice scoring by likelihood, as lm-eval-harness's `acc` does: each choice is
//! put in the reply position of its example (through the chat template, as training sees
//! it) and scored by the summed log-probability of its reply tokens given the prompt.
//! The reply's end-of-turn tokens are scored too, so a choice that is the start of another
//! (`run` against `running`) is not favoured for being short. The answer is the choice with
//! the highest log-likelihood; on a tie, the first listed.

use super::{EvalError, example_ids, length_batches};
use crate::chat::ChatTemplate;
use crate::models::llama::Llama;
use crate::tokenizer::Tokenizer;
use mlx_rs::{Array, Dtype, error::Exception};
use pipe_engine::data::Example;
use serde::Serialize;

/// One choice and how likely the model finds it as the reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceScore {
    /// The choice.
    pub choice: String,
    /// Summed log-probability (nats) of its reply tokens given the prompt.
    pub log_likelihood: f64,
    /// Reply tokens scored.
    pub tokens: usize,
}

/// Scores every choice of a multiple-choice example, in the order listed.
/// `index` locates the example in error messages.
pub fn score_choices(
    model: &mut Llama,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    example: &Example,
    index: usize,
) -> Result<Vec<ChoiceScore>, EvalError> {
    let mut scores = score_choices_batched(model, tok, template, &[(index, example)])?;
    Ok(scores.pop().unwrap_or_default())
}

/// [`score_choices`] for many examples (each with its index for error messages), every
/// choice of every example scored in padded batches of similar length: one forward pass
/// per batch instead of one per choice. Right padding never reaches a scored position
/// (attention is causal), so each score equals scoring that choice alone.
pub fn score_choices_batched(
    model: &mut Llama,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    examples: &[(usize, &Example)],
) -> Result<Vec<Vec<ChoiceScore>>, EvalError> {
    let mut scores: Vec<Vec<ChoiceScore>> = Vec::with_capacity(examples.len());
    let mut candidates = Vec::new();
    for (row, &(index, example)) in examples.iter().enumerate() {
        let Example::Completion {
            prompt, choices, ..
        } = example
        else {
            return Err(EvalError::Record {
                index,
                reason: "multiple choice needs prompt/completion records with `choices`".into(),
            });
        };
        let mut row_scores = Vec::with_capacity(choices.len());
        for (slot, choice) in choices.iter().enumerate() {
            let candidate = Example::Completion {
                prompt: prompt.clone(),
                completion: choice.clone(),
                category: None,
                choices: Vec::new(),
            };
            let (prompt_ids, reply_ids) = example_ids(&candidate, tok, template, index)?;
            let score_from = prompt_ids.len().max(1);
            let ids = [prompt_ids.as_slice(), &reply_ids].concat();
            candidates.push(Candidate {
                row,
                slot,
                ids,
                score_from,
            });
            row_scores.push(ChoiceScore {
                choice: choice.clone(),
                log_likelihood: 0.0,
                tokens: 0,
            });
        }
        scores.push(row_scores);
    }
    candidates.sort_by_key(|c| c.ids.len());
    for chunk in length_batches(&candidates, |c| c.ids.len()) {
        for (c, (nll_sum, tokens)) in chunk.iter().zip(batch_nll(model, chunk, tok.pad_id())?) {
            let score = &mut scores[c.row][c.slot];
            score.log_likelihood = -nll_sum;
            score.tokens = tokens;
        }
    }
    Ok(scores)
}

/// One choice of one example as the model reads it.
struct Candidate {
    row: usize,
    slot: usize,
    ids: Vec<u32>,
    /// Targets at positions `>= score_from` are the reply's.
    score_from: usize,
}

/// Per candidate, the summed negative log-likelihood of its reply tokens and their count.
fn batch_nll(
    model: &mut Llama,
    chunk: &[Candidate],
    pad: u32,
) -> Result<Vec<(f64, usize)>, Exception> {
    let width = chunk.iter().map(|c| c.ids.len()).max().unwrap_or(0);
    if width < 2 {
        return Ok(vec![(0.0, 0); chunk.len()]);
    }
    let cols = width - 1;
    let mut input = Vec::with_capacity(chunk.len() * cols);
    let mut target = Vec::with_capacity(chunk.len() * cols);
    let mut weight = Vec::with_capacity(chunk.len() * cols);
    let mut counts = Vec::with_capacity(chunk.len());
    for c in chunk {
        let padded = |j: usize| c.ids.get(j).copied().unwrap_or(pad) as i32;
        let scored = |j: usize| j >= c.score_from && j < c.ids.len();
        input.extend((0..cols).map(padded));
        target.extend((1..width).map(padded));
        weight.extend((1..width).map(|j| if scored(j) { 1.0f32 } else { 0.0 }));
        counts.push((1..width).filter(|&j| scored(j)).count());
    }
    let shape = [chunk.len() as i32, cols as i32];
    let logits = model
        .forward_tokens(&Array::from_slice(&input, &shape), None, None)?
        .as_dtype(Dtype::Float32)?;
    let targets = Array::from_slice(&target, &[shape[0], shape[1], 1]);
    let picked = logits.take_along_axis(&targets, -1)?.squeeze_axes(&[-1])?;
    let nll = logits.logsumexp_axis(-1, None)?.subtract(&picked)?;
    let sums = nll
        .multiply(Array::from_slice(&weight, &shape))?
        .sum_axis(-1, None)?;
    let sums: Vec<f32> = sums.as_slice::<f32>().to_vec();
    Ok(sums
        .into_iter()
        .zip(counts)
        .map(|(s, n)| (f64::from(s), n))
        .collect())
}

/// The most likely choice (the first on a tie); `None` for no choices.
pub fn most_likely(scores: &[ChoiceScore]) -> Option<&ChoiceScore> {
    scores.iter().fold(None, |best, s| match best {
        Some(b) if b.log_likelihood >= s.log_likelihood => Some(b),
        _ => Some(s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::llama::tiny_random;

    fn score(choice: &str, log_likelihood: f64) -> ChoiceScore {
        ChoiceScore {
            choice: choice.into(),
            log_likelihood,
            tokens: 1,
        }
    }

    #[test]
    fn the_most_likely_choice_wins_and_ties_go_to_the_first() {
        let scores = [score("a", -3.0), score("b", -1.0), score("c", -1.0)];
        assert_eq!(most_likely(&scores).unwrap().choice, "b");
        assert!(most_likely(&[]).is_none());
    }

    #[test]
    fn a_choice_scores_the_loss_of_the_same_example_answered_with_it() {
        // Without a chat template, prompt and reply are encoded apart: the choice's
        // log-likelihood is minus the loss sum dataset_loss gives that completion.
        let mut model = tiny_random(3, 300, 1, false).unwrap();
        let tok = Tokenizer::from_gguf(&crate::tokenizer::toy("smollm")).unwrap();
        let example = Example::Completion {
            prompt: "Past tense of go?".into(),
            completion: "went".into(),
            category: None,
            choices: vec!["goed".into(), "went".into()],
        };
        let scores = score_choices(&mut model, &tok, None, &example, 0).unwrap();
        assert_eq!(scores.len(), 2);
        for s in &scores {
            let alone = Example::Completion {
                prompt: "Past tense of go?".into(),
                completion: s.choice.clone(),
                category: None,
                choices: Vec::new(),
            };
            let loss = super::super::dataset_loss(&mut model, &tok, None, &[alone]).unwrap();
            assert_eq!(s.tokens, loss.tokens);
            assert!(
                (s.log_likelihood + loss.nll_sum).abs() < 1e-4,
                "{s:?} {loss:?}"
            );
        }
    }

    /// Padded batches of choices of many lengths, more than one batch holds, score what
    /// each choice scores alone.
    #[test]
    fn batched_choices_score_as_each_choice_alone() {
        let mut model = tiny_random(3, 300, 2, false).unwrap();
        let tok = Tokenizer::from_gguf(&crate::tokenizer::toy("smollm")).unwrap();
        let examples: Vec<Example> = (0..super::super::LOSS_BATCH_ROWS + 5)
            .map(|i| Example::Completion {
                prompt: format!("Question {i}: {}?", "why ".repeat(i % 6)),
                completion: "yes".into(),
                category: None,
                choices: vec![
                    "yes".into(),
                    format!("no {}", "x".repeat(i % 3)),
                    "maybe".into(),
                ],
            })
            .collect();
        let rows: Vec<(usize, &Example)> = examples.iter().enumerate().collect();
        let batched = score_choices_batched(&mut model, &tok, None, &rows).unwrap();
        assert_eq!(batched.len(), examples.len());
        for (i, (example, scores)) in examples.iter().zip(&batched).enumerate() {
            for (choice, score) in example.choices().iter().zip(scores) {
                let alone = Example::Completion {
                    prompt: format!("Question {i}: {}?", "why ".repeat(i % 6)),
                    completion: choice.clone(),
                    category: None,
                    choices: Vec::new(),
                };
                let (mut ids, reply) = example_ids(&alone, &tok, None, i).unwrap();
                let from = ids.len().max(1);
                ids.extend(reply);
                let nll = super::super::sequence_nll(&mut model, &ids, from).unwrap();
                assert_eq!(score.choice, *choice);
                assert_eq!(score.tokens, nll.tokens, "{i} {choice}");
                assert!(
                    (score.log_likelihood + nll.nll_sum).abs() < 1e-3,
                    "{i} {choice}: {score:?} vs {nll:?}"
                );
            }
        }
    }
}
