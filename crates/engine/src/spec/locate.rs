//! Finding where a key or value sits in YAML source text, for error positions.
//!
//! serde_yaml 0.9 drops spans once a document is parsed into a `Value`, and a span-keeping
//! YAML parser would be a heavy dependency for error messages alone. Pipelines are written
//! in block style, where a key path can be followed by indentation: this module walks the
//! lines that way. When a key cannot be found (flow style, anchors) it falls back to the
//! nearest ancestor that can, so an error always points somewhere sensible.

use super::diag::Pos;

/// Indexes a YAML source for key-path lookups.
pub struct Locator<'a> {
    lines: Vec<(usize, &'a str)>,
}

impl<'a> Locator<'a> {
    /// Indexes `source`.
    pub fn new(source: &'a str) -> Self {
        let lines = source
            .lines()
            .map(|l| {
                let indent = l.len() - l.trim_start_matches(' ').len();
                (indent, l)
            })
            .collect();
        Self { lines }
    }

    fn is_content(&self, i: usize) -> bool {
        let t = self.lines[i].1.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    }

    /// The end (exclusive) of the block opened by the line `i`.
    fn block_end(&self, i: usize) -> usize {
        let indent = self.key_indent(i);
        (i + 1..self.lines.len())
            .find(|&j| self.is_content(j) && self.lines[j].0 <= indent)
            .unwrap_or(self.lines.len())
    }

    /// Indent of the key on line `i` (a `- key:` list item counts from the key).
    fn key_indent(&self, i: usize) -> usize {
        let (indent, line) = self.lines[i];
        let rest = &line[indent..];
        match rest.strip_prefix("- ") {
            Some(r) => indent + 2 + (r.len() - r.trim_start().len()),
            None => indent,
        }
    }

    /// Line index and column of `key` among the direct children of lines `start..end`.
    fn child(&self, key: &str, start: usize, end: usize) -> Option<(usize, usize)> {
        let first = (start..end).find(|&j| self.is_content(j))?;
        let child_indent = self.key_indent(first);
        (first..end).find_map(|j| {
            if !self.is_content(j) || self.key_indent(j) != child_indent {
                return None;
            }
            let col = self.key_indent(j);
            let text = &self.lines[j].1[col..];
            let unquoted = text
                .strip_prefix('"')
                .and_then(|t| t.strip_prefix(key))
                .and_then(|t| t.strip_prefix('"'))
                .or_else(|| {
                    text.strip_prefix('\'')
                        .and_then(|t| t.strip_prefix(key))
                        .and_then(|t| t.strip_prefix('\''))
                })
                .or_else(|| text.strip_prefix(key))?;
            unquoted
                .trim_start()
                .starts_with(':')
                .then_some((j, col + 1))
        })
    }

    /// Position of the key at `path` (e.g. `["stages", "train", "deps"]`), or of its nearest
    /// ancestor that can be found.
    pub fn key(&self, path: &[&str]) -> Pos {
        self.key_span(path).map_or(Pos::default(), |(pos, _)| pos)
    }

    fn key_span(&self, path: &[&str]) -> Option<(Pos, usize)> {
        let (mut start, mut end) = (0, self.lines.len());
        let mut found = None;
        for key in path {
            match self.child(key, start, end) {
                Some((line, col)) => {
                    found = Some((
                        Pos {
                            line: line + 1,
                            col,
                        },
                        line,
                    ));
                    start = line + 1;
                    end = self.block_end(line);
                }
                None => break,
            }
        }
        found
    }

    /// Position of the scalar `value` inside the block of the key at `path` (a list item or
    /// a flow sequence on the key's line), else the key's position.
    pub fn value(&self, path: &[&str], value: &str) -> Pos {
        let Some((pos, line)) = self.key_span(path) else {
            return Pos::default();
        };
        let end = self.block_end(line);
        for j in line..end {
            let text = self.lines[j].1;
            // Skip the key itself on its own line so `deps: [deps]` points at the value.
            let from = if j == line {
                text.find(':').map_or(0, |c| c + 1)
            } else {
                0
            };
            if let Some(off) = find_word(&text[from..], value) {
                return Pos {
                    line: j + 1,
                    col: text[..from + off].chars().count() + 1,
                };
            }
        }
        pos
    }
}

/// Byte offset of `word` in `text` where it is not part of a longer word.
fn find_word(text: &str, word: &str) -> Option<usize> {
    if word.is_empty() {
        return None;
    }
    let boundary = |c: Option<char>| {
        c.is_none_or(|c| {
            c.is_whitespace() || matches!(c, '[' | ']' | ',' | '"' | '\'' | '-' | ':' | '{' | '}')
        })
    };
    let mut from = 0;
    while let Some(off) = text[from..].find(word) {
        let at = from + off;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if boundary(before) && boundary(after) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "name: demo\nstages:\n  prep:\n    cmd: echo hi\n    deps:\n      - data/raw\n  train:\n    deps: [data/clean, x]\n    needs: [prep]\n";

    #[test]
    fn finds_nested_keys() {
        let l = Locator::new(SRC);
        assert_eq!(
            l.key(&["stages", "train", "needs"]),
            Pos { line: 9, col: 5 }
        );
        assert_eq!(l.key(&["stages", "prep"]), Pos { line: 3, col: 3 });
        // Missing leaf: falls back to the parent.
        assert_eq!(l.key(&["stages", "train", "nope"]), Pos { line: 7, col: 3 });
    }

    #[test]
    fn finds_values_in_block_and_flow_lists() {
        let l = Locator::new(SRC);
        assert_eq!(
            l.value(&["stages", "prep", "deps"], "data/raw"),
            Pos { line: 6, col: 9 }
        );
        assert_eq!(
            l.value(&["stages", "train", "deps"], "x"),
            Pos { line: 8, col: 24 }
        );
    }
}
