//! Validation diagnostics: one problem = one [`Diagnostic`] with a `file:line:col`, the
//! offending source line with a caret under the spot, and `hint:` lines.
//!
//! Every check in [`crate::spec`] and [`crate::dag`] reports through this type so users see
//! one consistent format, and so that all problems in a pipeline are listed at once instead
//! of one per run.

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based position in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Pos {
    /// Line, from 1 (0 when unknown).
    pub line: usize,
    /// Column in characters, from 1 (0 when unknown).
    pub col: usize,
}

/// One validation problem, located in a source file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Where in the file.
    pub pos: Pos,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The source line at `pos` (empty when unknown).
    pub source_line: String,
    /// How long the caret underline is (at least 1).
    pub width: usize,
    /// Suggestions, each rendered on its own `hint:` line.
    pub hints: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic at `pos` of `file`, whose text is `source` (used for the quoted line).
    pub fn new(file: &Path, source: &str, pos: Pos, message: impl Into<String>) -> Self {
        // The YAML parser puts an unexpected end of file on the line after the last one,
        // and counts a lone `\r` as a line break where `str::lines` does not: point at the
        // end of the last line instead of quoting a line the file does not have (found by
        // tests `fuzz_inputs`).
        let last = source.lines().count();
        let pos = if pos.line > last && last > 0 {
            let text = source.lines().last().unwrap_or("");
            Pos {
                line: last,
                col: text.chars().count() + 1,
            }
        } else {
            pos
        };
        let source_line = if pos.line > 0 {
            source.lines().nth(pos.line - 1).unwrap_or("").to_owned()
        } else {
            String::new()
        };
        // Underline the word at the caret: a key, a value or a path.
        let width = source_line
            .chars()
            .skip(pos.col.saturating_sub(1))
            .take_while(|c| !c.is_whitespace() && !matches!(c, ':' | ',' | ']' | '}'))
            .count()
            .max(1);
        Self {
            file: file.to_owned(),
            pos,
            message: message.into(),
            source_line,
            width,
            hints: Vec::new(),
        }
    }

    /// Adds a `hint:` line.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Adds a "did you mean" hint when one of `candidates` is close to `word`, else (when
    /// there are few) a hint listing them, so every such error says what would be valid.
    pub fn suggest<'a>(self, word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Self {
        let all: Vec<&str> = candidates.into_iter().collect();
        match did_you_mean(word, all.iter().copied()) {
            Some(best) => self.hint(format!("did you mean `{best}`?")),
            None if all.is_empty() => self,
            None if all.len() <= 16 => {
                let list: Vec<String> = all.iter().map(|c| format!("`{c}`")).collect();
                self.hint(format!("expected one of {}", list.join(", ")))
            }
            None => self,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.message)?;
        if self.pos.line == 0 {
            write!(f, "  --> {}", self.file.display())?;
        } else {
            let gutter = self.pos.line.to_string().len();
            writeln!(
                f,
                "{:gutter$}--> {}:{}:{}",
                "",
                self.file.display(),
                self.pos.line,
                self.pos.col
            )?;
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", self.pos.line, self.source_line)?;
            write!(
                f,
                "{:gutter$} | {:pad$}{}",
                "",
                "",
                "^".repeat(self.width),
                pad = self.pos.col.saturating_sub(1)
            )?;
        }
        for hint in &self.hints {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// A diagnostic for a bad key inside a stage's `with:` (or a job file): `prefix` is the
    /// path of the mapping the [`pipe_schema::FieldError`]'s path starts from
    /// (`["stages", "train", "with"]`, or nothing for a whole file). It points at the
    /// offending key itself, or at its nearest ancestor that can be found (a key that comes
    /// from an `extends` preset is not in this file), and suggests a close known key for a
    /// misspelt one.
    pub fn at_field(
        file: &Path,
        source: &str,
        prefix: &[&str],
        fallback: Pos,
        context: &str,
        error: &pipe_schema::FieldError,
    ) -> Self {
        let locator = super::locate::Locator::new(source);
        let mut path: Vec<&str> = prefix.to_vec();
        path.extend(error.path.iter().map(String::as_str));
        let pos = match locator.key(&path) {
            Pos { line: 0, .. } => fallback,
            pos => in_flow_mapping(source, pos, error.path.last().map(String::as_str)),
        };
        let d = Self::new(file, source, pos, format!("{context}{error}"));
        match error.path.last() {
            Some(key) if !error.expected.is_empty() => {
                d.suggest(key, error.expected.iter().map(String::as_str))
            }
            _ => d,
        }
    }
}

/// `pos` moved onto `key` when the line at `pos` holds it in a flow mapping after `pos`
/// (`lora: {rank: 0}`): the locator follows block structure only, so it stops at `lora`.
fn in_flow_mapping(source: &str, pos: Pos, key: Option<&str>) -> Pos {
    let (Some(key), Some(line)) = (key, source.lines().nth(pos.line.saturating_sub(1))) else {
        return pos;
    };
    let start: usize = line
        .chars()
        .take(pos.col.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    let rest = &line[start.min(line.len())..];
    let Some(brace) = rest.find('{') else {
        return pos;
    };
    let mut from = brace;
    while let Some(off) = rest[from..].find(key) {
        let at = from + off;
        let before = rest[..at].chars().next_back();
        let after = rest[at + key.len()..].trim_start();
        if matches!(before, Some('{' | ' ' | ',')) && after.starts_with(':') {
            return Pos {
                line: pos.line,
                col: line[..start + at].chars().count() + 1,
            };
        }
        from = at + key.len();
    }
    pos
}

/// All the problems found in a pipeline; rendered one after another.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "\n\nerror: ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n\n{} problems found; nothing was run", self.0.len())?;
        }
        Ok(())
    }
}

/// The candidate closest to `word` by edit distance (Levenshtein with transpositions), if it is closer than 3 edits
/// (the threshold cargo and clap use: closer suggestions are almost always typos).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(word, c), c))
        .filter(|(d, c)| *d < 3 && *d < word.len().max(c.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_past_the_last_line_points_at_the_end_of_the_file() {
        let d = Diagnostic::new(
            Path::new("p.yaml"),
            "a: 1\nb: [",
            Pos { line: 3, col: 1 },
            "x",
        );
        assert_eq!((d.pos.line, d.pos.col), (2, 5));
        assert_eq!(d.source_line, "b: [");
        let d = Diagnostic::new(Path::new("p.yaml"), "\r\"", Pos { line: 2, col: 2 }, "x");
        assert_eq!(d.pos.line, 1);
    }

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(did_you_mean("dpes", ["deps", "outs"]), Some("deps"));
        assert_eq!(did_you_mean("zzzzzz", ["deps", "outs"]), None);
        let d = Diagnostic::new(Path::new("p"), "", Pos::default(), "x")
            .suggest("zzzzzz", ["deps", "outs"]);
        assert_eq!(d.hints, ["expected one of `deps`, `outs`"]);
    }

    #[test]
    fn a_key_in_a_flow_mapping_is_found_on_its_line() {
        let src = "stages:\n  t:\n    with:\n      lora: {alpha: 8, rank: 0}\n";
        let at = in_flow_mapping(src, Pos { line: 4, col: 7 }, Some("rank"));
        assert_eq!(at, Pos { line: 4, col: 24 });
        let block = in_flow_mapping(src, Pos { line: 4, col: 7 }, Some("nope"));
        assert_eq!(block, Pos { line: 4, col: 7 });
    }

    #[test]
    fn renders_caret_under_column() {
        let src = "stages:\n  a:\n    dpes: [x]\n";
        let d = Diagnostic::new(
            Path::new("p.yaml"),
            src,
            Pos { line: 3, col: 5 },
            "unknown key `dpes`",
        )
        .suggest("dpes", ["deps"]);
        let text = d.to_string();
        assert!(text.contains("--> p.yaml:3:5"), "{text}");
        assert!(text.contains("3 |     dpes: [x]"), "{text}");
        assert!(text.contains("  |     ^^^^\n"), "{text}");
        assert!(text.contains("hint: did you mean `deps`?"), "{text}");
    }
}
