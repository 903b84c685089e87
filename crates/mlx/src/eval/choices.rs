//! Multiple-choice scoring by likelihood, as lm-eval-harness's `acc` does: each choice is
//! put in the reply position of its example (through the chat template, as training sees
//! it) and scored by the summed log-probability of its reply tokens given the prompt.
//! The reply's end-of-turn tokens are scored too, so a choice that is the start of another
//! (`run` against `running`) is not favoured for being short. The answer is the choice with
//! the highest log-likelihood; on a tie, the first listed.

use super::{EvalError, example_ids, sequence_nll};
use crate::chat::ChatTemplate;
use crate::models::llama::Llama;
use crate::tokenizer::Tokenizer;
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
    let Example::Completion {
        prompt, choices, ..
    } = example
    else {
        return Err(EvalError::Record {
            index,
            reason: "multiple choice needs prompt/completion records with `choices`".into(),
        });
    };
    choices
        .iter()
        .map(|choice| {
            let candidate = Example::Completion {
                prompt: prompt.clone(),
                completion: choice.clone(),
                category: None,
                choices: Vec::new(),
            };
            let (prompt_ids, reply_ids) = example_ids(&candidate, tok, template, index)?;
            let ids = [prompt_ids.as_slice(), &reply_ids].concat();
            let nll = sequence_nll(model, &ids, prompt_ids.len().max(1))?;
            Ok(ChoiceScore {
                choice: choice.clone(),
                log_likelihood: -nll.nll_sum,
                tokens: nll.tokens,
            })
        })
        .collect()
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
}
