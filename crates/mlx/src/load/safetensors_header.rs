//! A safetensors file's header, checked in Rust before MLX loads the file.
//!
//! MLX's reader refuses most damage itself, but it multiplies a tensor's shape in 64-bit
//! integers that overflow: a header claiming a `[2³¹, 2³¹]` float32 tensor in 0 bytes
//! passes, and the tensor comes back with a negative shape (found by hand on a trained
//! adapter). Its messages also carry C++ source paths. So the header is read here first:
//! the length prefix, the JSON, every dtype, shape and byte range, with checked arithmetic,
//! each problem one message naming the tensor.
//!
//! The format: a little-endian `u64` header length, that many bytes of JSON mapping each
//! tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets into the data
//! after the header) and an optional `__metadata__` of strings, then the data.

use std::io::Read;
use std::path::Path;

/// Headers larger than this are refused (the format's own reference limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// Bytes per element of each dtype the format defines.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Checks the safetensors file at `path`; returns the number of tensors.
pub fn check(path: &Path) -> Result<usize, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut prefix = [0u8; 8];
    if len < 8 {
        return Err(format!(
            "{len} bytes is too short for a safetensors file: an incomplete download or a corrupt file"
        ));
    }
    file.read_exact(&mut prefix).map_err(|e| e.to_string())?;
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER || header_len > len - 8 {
        return Err(format!(
            "the header length says {header_len} bytes, but the file has {len}: an incomplete download or a corrupt file"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    check_header(&header, len - 8 - header_len)
}

/// Checks a header's JSON against `data_len` bytes of data after it.
pub fn check_header(header: &[u8], data_len: u64) -> Result<usize, String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| format!("the header is not a JSON object: {e}"))?;
    let mut ranges = Vec::new();
    for (name, info) in &map {
        if name == "__metadata__" {
            // MLX writes `null` when there is none.
            let strings = info.is_null()
                || info
                    .as_object()
                    .is_some_and(|m| m.values().all(serde_json::Value::is_string));
            if !strings {
                return Err("`__metadata__` must map names to strings".into());
            }
            continue;
        }
        let dtype = info["dtype"]
            .as_str()
            .ok_or_else(|| format!("tensor `{name}` has no `dtype`"))?;
        let size = dtype_size(dtype).ok_or_else(|| {
            format!("tensor `{name}` has dtype `{dtype}`, which safetensors does not define")
        })?;
        let shape = info["shape"]
            .as_array()
            .ok_or_else(|| format!("tensor `{name}` has no `shape` list"))?;
        let shown = serde_json::Value::Array(shape.clone());
        let mut elements = 1u64;
        for d in shape {
            // MLX holds dimensions as 32-bit integers.
            let d = d
                .as_u64()
                .filter(|&d| d <= i32::MAX as u64)
                .ok_or_else(|| {
                    format!(
                        "tensor `{name}` has dimension {d}, not an integer from 0 to {}",
                        i32::MAX
                    )
                })?;
            elements = elements
                .checked_mul(d)
                .ok_or_else(|| format!("tensor `{name}` has shape {shown}, too large"))?;
        }
        let bytes = elements
            .checked_mul(size)
            .ok_or_else(|| format!("tensor `{name}` has shape {shown}, too large"))?;
        let offsets = info["data_offsets"]
            .as_array()
            .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)))
            .filter(|_| {
                info["data_offsets"]
                    .as_array()
                    .is_some_and(|o| o.len() == 2)
            })
            .ok_or_else(|| format!("tensor `{name}` has no `data_offsets: [begin, end]`"))?;
        let (begin, end) = offsets;
        if begin > end || end > data_len {
            return Err(format!(
                "tensor `{name}` claims bytes {begin}..{end} of {data_len}: an incomplete download or a corrupt file"
            ));
        }
        if end - begin != bytes {
            return Err(format!(
                "tensor `{name}` ({dtype}, shape {shown}) needs {bytes} bytes but claims {}: a corrupt file",
                end - begin
            ));
        }
        ranges.push((begin, end, name));
    }
    ranges.sort();
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(format!(
                "tensors `{}` and `{}` overlap in the data: a corrupt file",
                pair[0].2, pair[1].2
            ));
        }
    }
    Ok(ranges.len())
}

/// Tensors by name, as MLX loads them.
pub type Tensors = std::collections::HashMap<String, mlx_rs::Array>;

/// A file's `__metadata__`.
pub type Metadata = std::collections::HashMap<String, String>;

/// MLX's `load_safetensors` after [`check`]; the error is one line (MLX's own loses its
/// C++ source location).
pub fn load(path: &Path) -> Result<Tensors, String> {
    Ok(load_with_metadata(path)?.0)
}

/// [`load`], with the file's `__metadata__`.
pub fn load_with_metadata(path: &Path) -> Result<(Tensors, Metadata), String> {
    check(path)?;
    mlx_rs::Array::load_safetensors_with_metadata(path).map_err(|e| {
        let text = e.to_string();
        // `"[load_safetensors] What went wrong. at /path/to/io.cpp:76" at /rustc/...`
        let text = text.trim_start_matches('"');
        let text = text.split(" at /").next().unwrap_or(text);
        text.trim_end_matches('"').trim().to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn header(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn good() -> serde_json::Value {
        json!({
            "__metadata__": {"format": "mlx"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
        })
    }

    #[test]
    fn a_valid_header_passes() {
        assert_eq!(check_header(&header(good()), 32), Ok(2));
        // As MLX writes a file without metadata.
        let mut v = good();
        v["__metadata__"] = serde_json::Value::Null;
        assert_eq!(check_header(&header(v), 32), Ok(2));
    }

    #[test]
    fn lies_are_named() {
        let cases = [
            // MLX took this one: 2⁶² float32 elements in 0 bytes, after overflow.
            (
                json!({"a": {"dtype": "F32", "shape": [2147483648u64, 2147483648u64], "data_offsets": [0, 0]}}),
                "not an integer from 0 to",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [2147483647, 2147483647, 2147483647], "data_offsets": [0, 0]}}),
                "too large",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}),
                "needs 24 bytes but claims 20",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 240]}}),
                "claims bytes 0..240 of 32",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}),
                "claims bytes 8..0",
            ),
            (
                json!({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}}),
                "dtype `Q4`",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [2]}}),
                "no `data_offsets",
            ),
            (
                json!({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}),
                "overlap",
            ),
            (json!({"__metadata__": {"n": 1}}), "`__metadata__`"),
        ];
        for (v, says) in cases {
            let e = check_header(&header(v.clone()), 32).unwrap_err();
            assert!(e.contains(says), "{v}: {e}");
        }
        assert!(
            check_header(b"[1, 2]", 0)
                .unwrap_err()
                .contains("not a JSON object")
        );
    }

    #[test]
    fn the_length_prefix_is_checked_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.safetensors");
        let h = header(good());
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend(&h);
        bytes.extend([0u8; 32]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(check(&path), Ok(2));
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(
            check(&path)
                .unwrap_err()
                .contains("claims bytes 24..32 of 31")
        );
        let mut lying = bytes.clone();
        lying[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        std::fs::write(&path, &lying).unwrap();
        assert!(check(&path).unwrap_err().contains("header length says"));
        std::fs::write(&path, [1u8, 2]).unwrap();
        assert!(check(&path).unwrap_err().contains("too short"));
    }

    proptest::proptest! {
        // 2,000 cases in CI (a fraction of a second); `PROPTEST_CASES=N` for a long run.
        #![proptest_config(proptest::test_runner::Config::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
        ))]

        /// Any bytes as a header, any data size: an answer, never a panic.
        #[test]
        fn arbitrary_headers_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            data_len in 0u64..1 << 20,
        ) {
            let _ = check_header(&bytes, data_len);
        }

        /// A valid header with any numbers put in its fields: what passes is consistent.
        #[test]
        fn headers_with_any_numbers_pass_only_when_consistent(
            d0 in 0u64..u64::MAX, d1 in 0u64..u64::MAX, begin in 0u64..64, end in 0u64..64,
            dtype in proptest::sample::select(vec!["F32", "F16", "I64", "U8", "X"]),
        ) {
            let v = json!({"t": {"dtype": dtype, "shape": [d0 % 70_000, d1 % 70_000], "data_offsets": [begin, end]}});
            if check_header(&header(v), 64).is_ok() {
                let size = dtype_size(dtype).unwrap();
                proptest::prop_assert_eq!((d0 % 70_000) * (d1 % 70_000) * size, end - begin);
            }
        }
    }
}
