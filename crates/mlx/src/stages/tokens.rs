//! The `.tokens` file: one split's token ids and loss masks, written by the `tokenize` kind
//! and read by `train` (`with: {tokens: DIR}`), so training skips tokenization.
//!
//! ## Layout (version 1)
//!
//! Every integer is little-endian. With `n` examples holding `t` tokens in all:
//!
//! | offset                 | size             | field                                        |
//! |------------------------|------------------|----------------------------------------------|
//! | 0                      | 8                | magic `PIPETOKS`                             |
//! | 8                      | 4                | format version, `u32` = 1                    |
//! | 12                     | 4                | reserved, `u32` = 0                          |
//! | 16                     | 8                | `n`, examples, `u64`                         |
//! | 24                     | 8                | `t`, tokens, `u64`                           |
//! | 32                     | 8 × (n + 1)      | offsets, `u64`: example `i` is tokens `offsets[i]..offsets[i+1]`; `offsets[0] = 0`, `offsets[n] = t` |
//! | 40 + 8n                | 4 × t            | token ids, `u32`                             |
//! | 40 + 8n + 4t           | ⌈t / 8⌉          | loss mask, one bit per token: bit `j % 8` of byte `j / 8` is set when token `j` is a training target |
//!
//! Nothing follows: the file is exactly `40 + 8n + 4t + ⌈t/8⌉` bytes, which the reader
//! checks, so a truncated or padded file is an error rather than wrong tokens. The
//! tokenizer that made the ids is named in the folder's `manifest.json`.

use crate::train::batch::TokenizedExample;
use std::path::Path;

/// The first 8 bytes of every `.tokens` file.
pub const MAGIC: &[u8; 8] = b"PIPETOKS";
/// The layout version written.
pub const VERSION: u32 = 1;
const HEADER: usize = 32;

/// Why a `.tokens` file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a valid `.tokens` file.
    #[error("{path} is not a valid .tokens file: {why} (rerun the tokenize stage that wrote it)")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// Encodes examples in the layout above.
pub fn encode(examples: &[TokenizedExample]) -> Vec<u8> {
    let n = examples.len();
    let t: usize = examples.iter().map(TokenizedExample::len).sum();
    let mut out = Vec::with_capacity(HEADER + 8 * (n + 1) + 4 * t + t.div_ceil(8));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&(t as u64).to_le_bytes());
    let mut at = 0u64;
    out.extend_from_slice(&at.to_le_bytes());
    for e in examples {
        at += e.len() as u64;
        out.extend_from_slice(&at.to_le_bytes());
    }
    for e in examples {
        for id in &e.ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    let mut mask = vec![0u8; t.div_ceil(8)];
    let bits = examples.iter().flat_map(|e| e.loss_mask.iter());
    for (j, &m) in bits.enumerate() {
        if m {
            mask[j / 8] |= 1 << (j % 8);
        }
    }
    out.extend_from_slice(&mask);
    out
}

/// Decodes a `.tokens` file's bytes; `path` names it in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Vec<TokenizedExample>, TokensError> {
    let bad = |why: String| TokensError::Invalid {
        path: path.display().to_string(),
        why,
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad(
            "it does not start with the magic bytes `PIPETOKS`".into()
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32_at(8);
    if version != VERSION {
        return Err(bad(format!(
            "format version {version}, this pipe reads version {VERSION}"
        )));
    }
    let (n, t) = (u64_at(16), u64_at(24));
    let expected = (n as u128 + 1) * 8 + t as u128 * 4 + (t as u128).div_ceil(8) + HEADER as u128;
    if expected != bytes.len() as u128 {
        return Err(bad(format!(
            "{n} examples of {t} tokens need {expected} bytes, the file has {}",
            bytes.len()
        )));
    }
    let (n, t) = (n as usize, t as usize);
    let offsets: Vec<usize> = (0..=n).map(|i| u64_at(HEADER + 8 * i) as usize).collect();
    if offsets[0] != 0 || offsets[n] != t || offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(bad(
            "the example offsets are not increasing from 0 to the token count".into(),
        ));
    }
    let ids_at = HEADER + 8 * (n + 1);
    let mask_at = ids_at + 4 * t;
    let mask_bit = |j: usize| bytes[mask_at + j / 8] >> (j % 8) & 1 == 1;
    Ok(offsets
        .windows(2)
        .map(|w| TokenizedExample {
            ids: (w[0]..w[1]).map(|j| u32_at(ids_at + 4 * j)).collect(),
            loss_mask: (w[0]..w[1]).map(mask_bit).collect(),
        })
        .collect())
}

/// Writes examples to `path` atomically.
pub fn write(path: &Path, examples: &[TokenizedExample]) -> std::io::Result<()> {
    pipe_engine::atomic_write::write_atomic(path, &encode(examples))
}

/// Reads a `.tokens` file.
pub fn read(path: &Path) -> Result<Vec<TokenizedExample>, TokensError> {
    let bytes = fs_err::read(path).map_err(|source| TokensError::Io {
        path: path.display().to_string(),
        source,
    })?;
    decode(&bytes, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example(ids: &[u32], mask: &[bool]) -> TokenizedExample {
        TokenizedExample {
            ids: ids.to_vec(),
            loss_mask: mask.to_vec(),
        }
    }

    #[test]
    fn layout_is_the_documented_one() {
        let bytes = encode(&[
            example(&[1, 70000], &[false, true]),
            example(&[], &[]),
            example(&[2], &[true]),
        ]);
        assert_eq!(&bytes[..8], b"PIPETOKS");
        assert_eq!(&bytes[8..12], &[1, 0, 0, 0]);
        assert_eq!(&bytes[16..24], &3u64.to_le_bytes());
        assert_eq!(&bytes[24..32], &3u64.to_le_bytes());
        let offsets: Vec<u64> = (0..4)
            .map(|i| u64::from_le_bytes(bytes[32 + 8 * i..40 + 8 * i].try_into().unwrap()))
            .collect();
        assert_eq!(offsets, [0, 2, 2, 3]);
        assert_eq!(&bytes[64..68], &1u32.to_le_bytes());
        assert_eq!(&bytes[68..72], &70000u32.to_le_bytes());
        assert_eq!(bytes[76], 0b110, "tokens 1 and 2 carry loss");
        assert_eq!(bytes.len(), 77);
    }

    #[test]
    fn damaged_files_are_refused_with_the_path() {
        let good = encode(&[example(&[5, 6, 7], &[false, true, true])]);
        let path = Path::new("tok/train.tokens");
        for (bytes, needle) in [
            (good[..good.len() - 1].to_vec(), "need"),
            ([good.clone(), vec![0]].concat(), "need"),
            (b"GARBAGE!".to_vec(), "magic"),
            (
                [&good[..8], &[9, 0, 0, 0], &good[12..]].concat(),
                "version 9",
            ),
        ] {
            let err = decode(&bytes, path).unwrap_err().to_string();
            assert!(
                err.contains("tok/train.tokens") && err.contains(needle),
                "{err}"
            );
        }
        let mut shuffled = good.clone();
        shuffled[40..48].copy_from_slice(&9u64.to_le_bytes());
        assert!(decode(&shuffled, path).is_err(), "offsets past the end");
    }

    proptest! {
        #[test]
        fn round_trips(rows in proptest::collection::vec(
            proptest::collection::vec((any::<u32>(), any::<bool>()), 0..40), 0..20)) {
            let examples: Vec<TokenizedExample> = rows
                .iter()
                .map(|r| TokenizedExample {
                    ids: r.iter().map(|x| x.0).collect(),
                    loss_mask: r.iter().map(|x| x.1).collect(),
                })
                .collect();
            let back = decode(&encode(&examples), Path::new("x.tokens")).unwrap();
            prop_assert_eq!(back, examples);
        }

        /// Whatever the bytes, reading answers (an error for a damaged file), never panics
        /// or allocates what the header claims before checking it against the file size.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes, Path::new("x.tokens"));
        }

        /// A real file cut short anywhere, or with any one byte changed, is refused or read;
        /// a cut file is always refused.
        #[test]
        fn damaged_real_files_never_panic(
            rows in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 0..12), 1..6),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let examples: Vec<TokenizedExample> = rows
                .iter()
                .map(|ids| TokenizedExample { loss_mask: vec![true; ids.len()], ids: ids.clone() })
                .collect();
            let good = encode(&examples);
            let at = cut.index(good.len());
            prop_assert!(decode(&good[..at], Path::new("x.tokens")).is_err());
            let mut changed = good.clone();
            changed[flip.index(good.len())] = byte;
            let _ = decode(&changed, Path::new("x.tokens"));
        }
    }
}
