//! BIG-bench's `boolean_expressions` task, built to the definition in its `task.py`.
//!
//! The task (bigbench 0.0.1 on PyPI, the one BIG-bench sdist PyPI still serves) ships no
//! examples: its `task.py` enumerates every expression of 1 to 8 tokens over `True`,
//! `False`, `not`, `and`, `or` and parentheses, and asks the model whether `"<expression>
//! is "` continues with `True` or `False` (a two-way multiple choice). The grammar here is
//! that file's: after the start, an operator or `(` comes a constant, `not` or `(`; after a
//! constant or `)` comes `and`, `or` or `)`; an expression ends on a constant or `)` with
//! its parentheses balanced. The answer is Python's: `not` binds tighter than `and`, and
//! `and` tighter than `or`. [`check_definition`] refuses a `task.py` whose grammar differs.

use super::{Example, Task};
use anyhow::bail;

/// The lengths `task.py` evaluates (`expression_lengths = tuple(range(1, 9))`).
pub const LENGTHS: std::ops::RangeInclusive<usize> = 1..=8;

/// The parts of `task.py` this module reproduces: its defaults, its prompt and its scoring.
const DEFINITION: [&str; 6] = [
    "expression_lengths: tuple = tuple(range(1, 9))",
    r#"constants: tuple = ("True", "False")"#,
    r#"binary_ops: tuple = ("or", "and")"#,
    r#"unary_ops: tuple = ("not",)"#,
    r#"prompt = f"{prompt} is ""#,
    r#"targets=[["True", "False"]]"#,
];

/// Refuses a `task.py` that no longer defines the task this module builds.
pub fn check_definition(task_py: &str) -> anyhow::Result<()> {
    match DEFINITION.iter().find(|part| !task_py.contains(*part)) {
        Some(part) => bail!(
            "BIG-bench's boolean_expressions/task.py no longer reads `{part}`; the task built \
             from it would not be BIG-bench's"
        ),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    True,
    False,
    Not,
    And,
    Or,
    Open,
    Close,
}

impl Token {
    fn text(self) -> &'static str {
        match self {
            Token::True => "True",
            Token::False => "False",
            Token::Not => "not",
            Token::And => "and",
            Token::Or => "or",
            Token::Open => "(",
            Token::Close => ")",
        }
    }

    /// What may follow this token (`None`: the start of an expression).
    fn next(after: Option<Token>) -> &'static [Token] {
        const START: &[Token] = &[Token::True, Token::False, Token::Not, Token::Open];
        const CONTINUE: &[Token] = &[Token::Or, Token::And, Token::Close];
        match after {
            None | Some(Token::Not | Token::And | Token::Or | Token::Open) => START,
            Some(Token::True | Token::False | Token::Close) => CONTINUE,
        }
    }
}

/// Every expression of exactly `length` tokens, as `task.py`'s `_yield_expression` gives.
fn expressions(length: usize) -> Vec<Vec<Token>> {
    fn extend(prefix: &mut Vec<Token>, open: usize, left: usize, out: &mut Vec<Vec<Token>>) {
        if left == 0 {
            let ends = matches!(
                prefix.last(),
                Some(Token::True | Token::False | Token::Close)
            );
            if open == 0 && ends {
                out.push(prefix.clone());
            }
            return;
        }
        for &t in Token::next(prefix.last().copied()) {
            let open = match t {
                Token::Open => open + 1,
                Token::Close if open == 0 => continue,
                Token::Close => open - 1,
                _ => open,
            };
            prefix.push(t);
            extend(prefix, open, left - 1, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    extend(&mut Vec::with_capacity(length), 0, length, &mut out);
    out
}

/// The value of a well-formed expression, with Python's precedence.
fn evaluate(tokens: &[Token]) -> bool {
    struct Parser<'a> {
        tokens: &'a [Token],
        at: usize,
    }
    impl Parser<'_> {
        fn eat(&mut self, t: Token) -> bool {
            let hit = self.tokens.get(self.at) == Some(&t);
            self.at += usize::from(hit);
            hit
        }
        fn or(&mut self) -> bool {
            let mut value = self.and();
            while self.eat(Token::Or) {
                value |= self.and();
            }
            value
        }
        fn and(&mut self) -> bool {
            let mut value = self.not();
            while self.eat(Token::And) {
                value &= self.not();
            }
            value
        }
        fn not(&mut self) -> bool {
            if self.eat(Token::Not) {
                return !self.not();
            }
            if self.eat(Token::Open) {
                let value = self.or();
                self.eat(Token::Close);
                value
            } else {
                let value = self.tokens.get(self.at) == Some(&Token::True);
                self.at += 1;
                value
            }
        }
    }
    Parser { tokens, at: 0 }.or()
}

/// The task as task.json bytes: of each length, every expression when there are at most
/// `per_length`, else `per_length` of them picked by the blake3 of the text (the same on
/// every machine), listed by length then text. Each is a two-way multiple choice
/// (`target_scores`) with the `"<expression> is "` input BIG-bench prompts with, and its
/// length as the category (BIG-bench scores each length as a subtask).
pub fn boolean_expressions(task_py: &str, per_length: usize) -> anyhow::Result<Vec<u8>> {
    check_definition(task_py)?;
    let mut examples = Vec::new();
    for length in LENGTHS {
        let mut texts: Vec<(String, bool)> = expressions(length)
            .into_iter()
            .map(|e| {
                let text: Vec<&str> = e.iter().map(|t| t.text()).collect();
                (text.join(" "), evaluate(&e))
            })
            .collect();
        texts.sort_by_cached_key(|(text, _)| *blake3::hash(text.as_bytes()).as_bytes());
        texts.truncate(per_length);
        texts.sort_unstable();
        examples.extend(texts.into_iter().map(|(text, value)| {
            Example::two_way(
                format!("{text} is "),
                value,
                ("True", "False"),
                format!("{length} tokens"),
            )
        }));
    }
    let task = Task {
        name: "boolean_expressions",
        description: "BIG-bench boolean_expressions: evaluate a random Boolean expression",
        examples,
    };
    Ok(serde_json::to_vec_pretty(&task)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many expressions BIG-bench's own generator yields per length (measured by
    /// running `_yield_expression` of bigbench 0.0.1's task.py, and how many are true).
    #[test]
    fn the_enumeration_is_bigbench_s() {
        let measured = [
            (2, 1),
            (2, 1),
            (12, 6),
            (22, 11),
            (90, 47),
            (216, 114),
            (770, 421),
            (2122, 1173),
        ];
        for (length, (count, true_count)) in LENGTHS.zip(measured) {
            let all = expressions(length);
            assert_eq!(all.len(), count, "length {length}");
            let trues = all.iter().filter(|e| evaluate(e)).count();
            assert_eq!(trues, true_count, "length {length}");
        }
    }

    #[test]
    fn precedence_is_python_s() {
        use Token::*;
        // not True or True: (not True) or True.
        assert!(evaluate(&[Not, True, Or, True]));
        // True or True and False: True or (True and False).
        assert!(evaluate(&[True, Or, True, And, False]));
        // not ( True or False ) and True.
        assert!(!evaluate(&[Not, Open, True, Or, False, Close, And, True]));
        // False or not not True.
        assert!(evaluate(&[False, Or, Not, Not, True]));
        // ( False ) and True.
        assert!(!evaluate(&[Open, False, Close, And, True]));
    }

    #[test]
    fn a_changed_definition_is_refused() {
        let good = DEFINITION.join("\n");
        let task: serde_json::Value =
            serde_json::from_slice(&boolean_expressions(&good, 5).unwrap()).unwrap();
        let examples = task["examples"].as_array().unwrap();
        // Lengths 1 and 2 have two expressions each; the others give five.
        assert_eq!(examples.len(), 2 + 2 + 5 * 6);
        assert_eq!(examples[0]["input"], "False is ");
        assert_eq!(examples[0]["target"], "False");
        assert_eq!(examples[0]["target_scores"]["True"], 0);
        assert_eq!(examples[0]["comment"], "1 tokens");
        let changed = good.replace(r#"("or", "and")"#, r#"("or", "and", "xor")"#);
        let err = boolean_expressions(&changed, 5).unwrap_err().to_string();
        assert!(err.contains("binary_ops"), "{err}");
    }
}
