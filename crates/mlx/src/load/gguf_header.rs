//! A GGUF file's header, walked in Rust before MLX sees the file.
//!
//! MLX parses GGUF with gguflib (C), which trusts the counts and lengths it reads: a
//! header that says 2⁴⁰ tensors, or a key 2⁵⁰ bytes long, makes it read past its buffer
//! and the process dies of SIGSEGV (found by hand, then kept as tests below). Every
//! count, length, type and offset is checked here against the file's real size first, so
//! a corrupt or truncated download is one message naming the file and the field, and MLX
//! only ever parses headers that hold together.
//!
//! The format (GGUF v2 and v3, little-endian): magic `GGUF`, version, tensor count,
//! key/value count; the key/values (`u64` length + bytes keys, typed values, arrays of
//! values); the tensor infos (name, dimensions, ggml type, offset); then the tensor data,
//! aligned to `general.alignment` (32 by default).

use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// Nested arrays deeper than this are refused (no real file nests at all).
const MAX_DEPTH: u32 = 4;
/// Dimensions of a tensor at most (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

/// The ggml tensor types MLX reads: `(id, name, elements per block, bytes per block)`.
const READABLE: [(u32, &str, u64, u64); 5] = [
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (8, "Q8_0", 32, 34),
];

/// What the walk found: enough to say what the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The format version.
    pub version: u32,
    /// Key/value pairs.
    pub metadata: u64,
    /// Tensors.
    pub tensors: u64,
    /// Where the tensor data starts.
    pub data_start: u64,
}

/// Checks the header of the GGUF file at `path`; the error says what is wrong and where.
pub fn check(path: &Path) -> Result<Summary, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    check_reader(BufReader::with_capacity(1 << 16, file), len)
}

/// [`check`] over any reader of `len` bytes.
pub fn check_reader(reader: impl Read + Seek, len: u64) -> Result<Summary, String> {
    let mut r = Cursor {
        inner: reader,
        pos: 0,
        len,
    };
    let magic: [u8; 4] = r.array("the magic number")?;
    if &magic != b"GGUF" {
        return Err(format!(
            "not a GGUF file (it starts with {magic:?}, not \"GGUF\")"
        ));
    }
    let version = r.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version} is not supported (2 and 3 are); convert the model again with a current llama.cpp"
        ));
    }
    let tensors = r.u64("the tensor count")?;
    let metadata = r.u64("the metadata count")?;
    // Each key/value takes at least 12 bytes and each tensor info at least 24: counts that
    // the file cannot hold are lies, whatever follows.
    if metadata > r.left() / 12 || tensors > r.left() / 24 {
        return Err(format!(
            "the header claims {metadata} metadata entries and {tensors} tensors, more than its {len} bytes can hold: an incomplete download or a corrupt file"
        ));
    }
    let mut alignment = 32u64;
    for i in 0..metadata {
        let key = r.string(&format!("metadata key {i}"))?;
        let ty = r.u32(&format!("the type of `{key}`"))?;
        if key == "general.alignment" {
            if ty != 4 {
                return Err(format!("`general.alignment` has type {ty}, not uint32"));
            }
            alignment = u64::from(r.u32("`general.alignment`")?);
            if alignment == 0 || !alignment.is_power_of_two() {
                return Err(format!(
                    "`general.alignment` is {alignment}, not a power of two"
                ));
            }
        } else {
            r.skip_value(ty, &key, 0)?;
        }
    }
    let mut infos = Vec::new();
    for i in 0..tensors {
        let name = r.string(&format!("the name of tensor {i}"))?;
        let dims = r.u32(&format!("the dimension count of `{name}`"))?;
        if dims == 0 || dims > MAX_DIMS {
            return Err(format!(
                "tensor `{name}` has {dims} dimensions (1 to {MAX_DIMS} allowed)"
            ));
        }
        let mut shape = Vec::with_capacity(dims as usize);
        for d in 0..dims {
            shape.push(r.u64(&format!("dimension {d} of `{name}`"))?);
        }
        let ty = r.u32(&format!("the type of `{name}`"))?;
        let offset = r.u64(&format!("the offset of `{name}`"))?;
        let Some(&(_, type_name, block, block_bytes)) = READABLE.iter().find(|t| t.0 == ty) else {
            let names: Vec<&str> = READABLE.iter().map(|t| t.1).collect();
            return Err(format!(
                "tensor `{name}` has ggml type {ty}, which MLX cannot read (it reads {}); convert or quantize the model to one of those",
                names.join(", ")
            ));
        };
        let elements = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                format!("tensor `{name}` has shape {shape:?}, which is empty or too large")
            })?;
        if shape[0] % block != 0 {
            return Err(format!(
                "tensor `{name}` ({type_name}) has a first dimension of {}, not a multiple of its block of {block}",
                shape[0]
            ));
        }
        let bytes = (elements / block)
            .checked_mul(block_bytes)
            .ok_or_else(|| format!("tensor `{name}` is too large"))?;
        infos.push((name, offset, bytes));
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    let data_len = len.saturating_sub(data_start);
    for (name, offset, bytes) in &infos {
        if offset % alignment != 0 {
            return Err(format!(
                "tensor `{name}` starts at offset {offset}, not aligned to {alignment}"
            ));
        }
        if offset.checked_add(*bytes).is_none_or(|end| end > data_len) {
            return Err(format!(
                "tensor `{name}` ({bytes} bytes at offset {offset}) extends past the end of the file ({data_len} bytes of tensor data): an incomplete download or a corrupt file"
            ));
        }
    }
    Ok(Summary {
        version,
        metadata,
        tensors,
        data_start,
    })
}

/// A reader that knows how much of the file is left, so no length it reads can send it
/// past the end.
struct Cursor<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Cursor<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn need(&self, n: u64, what: &str) -> Result<(), String> {
        if n > self.left() {
            return Err(format!(
                "{what} needs {n} bytes at offset {}, past the end of the file ({} bytes): an incomplete download or a corrupt file",
                self.pos, self.len
            ));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        self.need(N as u64, what)?;
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("{what}: {e}"))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        self.need(n, what)?;
        let n_i64 = i64::try_from(n).map_err(|_| format!("{what} is too long"))?;
        self.inner
            .seek_relative(n_i64)
            .map_err(|e| format!("{what}: {e}"))?;
        self.pos += n;
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.u64(what)?;
        // Names are short; a long one is read only far enough to be shown.
        self.need(n, what)?;
        let shown = n.min(256);
        let mut buf = vec![0u8; shown as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("{what}: {e}"))?;
        self.pos += shown;
        self.skip(n - shown, what)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Skips one value of GGUF type `ty`.
    fn skip_value(&mut self, ty: u32, key: &str, depth: u32) -> Result<(), String> {
        match ty {
            0 | 1 | 7 => self.skip(1, key),
            2 | 3 => self.skip(2, key),
            4..=6 => self.skip(4, key),
            10..=12 => self.skip(8, key),
            8 => {
                let n = self.u64(key)?;
                self.skip(n, key)
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("`{key}` nests arrays more than {MAX_DEPTH} deep"));
                }
                let elem = self.u32(key)?;
                let count = self.u64(key)?;
                let fixed = match elem {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                };
                match fixed {
                    Some(size) => {
                        let bytes = count
                            .checked_mul(size)
                            .ok_or_else(|| format!("`{key}` claims {count} elements"))?;
                        self.skip(bytes, key)
                    }
                    None => {
                        // Strings and arrays take at least 8 bytes each.
                        if count > self.left() / 8 {
                            return Err(format!(
                                "`{key}` claims {count} elements, more than the file can hold: an incomplete download or a corrupt file"
                            ));
                        }
                        for _ in 0..count {
                            self.skip_value(elem, key, depth + 1)?;
                        }
                        Ok(())
                    }
                }
            }
            other => Err(format!(
                "`{key}` has value type {other}, which GGUF does not define"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid GGUF v3: two metadata entries (a string and an array of strings) and
    /// two F32 tensors.
    fn tiny() -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, text: &str| {
            b.extend((text.len() as u64).to_le_bytes());
            b.extend(text.as_bytes());
        };
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        s(&mut b, "general.name");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "tiny");
        s(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        s(&mut b, "a");
        s(&mut b, "b");
        for (name, offset) in [("w", 0u64), ("v", 32)] {
            s(&mut b, name);
            b.extend(2u32.to_le_bytes());
            b.extend(4u64.to_le_bytes());
            b.extend(2u64.to_le_bytes());
            b.extend(0u32.to_le_bytes());
            b.extend(offset.to_le_bytes());
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for i in 0..16u32 {
            b.extend((i as f32).to_le_bytes());
        }
        b
    }

    fn check_bytes(bytes: &[u8]) -> Result<Summary, String> {
        check_reader(std::io::Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn a_valid_file_passes_with_its_counts() {
        let s = check_bytes(&tiny()).unwrap();
        assert_eq!((s.version, s.metadata, s.tensors), (3, 2, 2));
        assert_eq!(s.data_start % 32, 0);
    }

    /// The three lies that crashed MLX's parser (SIGSEGV), each now one message.
    #[test]
    fn counts_and_lengths_that_lie_are_refused() {
        let good = tiny();
        let mut huge_tensors = good.clone();
        huge_tensors[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = check_bytes(&huge_tensors).unwrap_err();
        assert!(e.contains("more than its"), "{e}");
        let mut huge_kv = good.clone();
        huge_kv[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(check_bytes(&huge_kv).unwrap_err().contains("more than its"));
        let mut long_key = good.clone();
        long_key[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes());
        let e = check_bytes(&long_key).unwrap_err();
        assert!(e.contains("past the end of the file"), "{e}");
    }

    #[test]
    fn truncation_types_and_offsets_are_named() {
        let good = tiny();
        let e = check_bytes(&good[..good.len() - 4]).unwrap_err();
        assert!(
            e.contains("tensor `v`") && e.contains("extends past the end"),
            "{e}"
        );
        for cut in [40, 60, 100] {
            let e = check_bytes(&good[..cut]).unwrap_err();
            assert!(e.contains("a corrupt file"), "{cut}: {e}");
        }
        let e = check_bytes(b"PK\x03\x04 not gguf at all").unwrap_err();
        assert!(e.contains("not a GGUF file"), "{e}");
        // The second tensor's type (Q6_K, 14) and offset (unaligned).
        let mut k_quant = good.clone();
        let type_at = find_type_of_v(&good);
        k_quant[type_at..type_at + 4].copy_from_slice(&14u32.to_le_bytes());
        let e = check_bytes(&k_quant).unwrap_err();
        assert!(e.contains("ggml type 14, which MLX cannot read"), "{e}");
        let mut unaligned = good.clone();
        unaligned[type_at + 4..type_at + 12].copy_from_slice(&33u64.to_le_bytes());
        let e = check_bytes(&unaligned).unwrap_err();
        assert!(e.contains("not aligned to 32"), "{e}");
    }

    /// The byte offset of tensor `v`'s type field in [`tiny`].
    fn find_type_of_v(bytes: &[u8]) -> usize {
        let needle = [1u64.to_le_bytes().as_slice(), b"v"].concat();
        let at = bytes
            .windows(needle.len())
            .rposition(|w| w == needle.as_slice())
            .unwrap();
        at + needle.len() + 4 + 8 + 8
    }

    proptest::proptest! {
        // 2,000 cases in CI (a fraction of a second); `PROPTEST_CASES=N` for a long run.
        #![proptest_config(proptest::test_runner::Config::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
        ))]

        /// Any bytes: an answer, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = check_bytes(&bytes);
        }

        /// The valid file with bytes overwritten or cut: an answer, never a panic; and
        /// what passes still has every tensor inside the file.
        #[test]
        fn damaged_files_never_panic(
            edits in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..6),
            cut in 0usize..600,
        ) {
            let mut bytes = tiny();
            for (at, value) in edits {
                if at < bytes.len() {
                    bytes[at] = value;
                }
            }
            bytes.truncate(cut.max(4));
            if let Ok(summary) = check_bytes(&bytes) {
                proptest::prop_assert!(summary.data_start <= bytes.len() as u64 + 31);
            }
        }
    }
}
