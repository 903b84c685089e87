//! The GGUF v3 container: header, typed metadata, tensor infos, aligned tensor data.
//!
//! Layout (ggml's `docs/gguf.md`, gguf-py's `GGUFWriter`), all little-endian:
//!
//! ```text
//! "GGUF" u32:3 u64:n_tensors u64:n_kv
//! n_kv × (string key, u32 value_type, value)            strings are u64 length + bytes
//! n_tensors × (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
//! zero padding to ALIGNMENT
//! tensor data, each tensor starting at a multiple of ALIGNMENT from the data start
//! ```
//!
//! `ne` is ggml's dimension order, the reverse of the row-major shape (`ne[0]` is the row
//! length). Value types matter: llama.cpp checks each key's type when it reads it (a count
//! written as int32 where it expects uint32 is refused), which is why this writer exists
//! instead of MLX's `save_gguf`, which picks the types itself and cannot write Q8_0.
//!
//! Tensors are written one at a time from a callback, so an export holds the model plus one
//! encoded tensor, not the whole file.

use std::io::{self, Write};

/// Tensor data starts at multiples of this (GGUF's default `general.alignment`).
pub const ALIGNMENT: u64 = 32;

const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;

/// A metadata value, with the GGUF type it is written as.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `UINT32` (4): counts, token ids, file type.
    U32(u32),
    /// `FLOAT32` (6): epsilons, RoPE base, LoRA alpha.
    F32(f32),
    /// `BOOL` (7).
    Bool(bool),
    /// `STRING` (8).
    Str(String),
    /// `ARRAY` (9) of `STRING`: tokens, merges.
    StrArray(Vec<String>),
    /// `ARRAY` (9) of `INT32` (5): token types.
    I32Array(Vec<i32>),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U32(_) => 4,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::StrArray(_) | Value::I32Array(_) => 9,
        }
    }
}

/// The ggml tensor types an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorType {
    /// `GGML_TYPE_F32` (0).
    F32,
    /// `GGML_TYPE_F16` (1).
    F16,
    /// `GGML_TYPE_Q8_0` (8): blocks of 32 values, one f16 scale and 32 int8.
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl TensorType {
    /// ggml's type number.
    pub fn ggml_id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 8,
        }
    }

    /// Bytes of `elements` values of this type (Q8_0: whole blocks only).
    pub fn byte_size(self, elements: u64) -> u64 {
        match self {
            TensorType::F32 => elements * 4,
            TensorType::F16 => elements * 2,
            TensorType::Q8_0 => elements / 32 * 34,
        }
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// The row-major shape (numpy order); written reversed, as ggml's `ne`.
    pub shape: Vec<u64>,
    /// How its data is encoded.
    pub ty: TensorType,
}

impl TensorInfo {
    /// The size of its encoded data.
    pub fn byte_size(&self) -> u64 {
        self.ty.byte_size(self.shape.iter().product())
    }
}

fn padding(len: u64) -> u64 {
    (ALIGNMENT - len % ALIGNMENT) % ALIGNMENT
}

/// Counts what goes through it, so padding can be computed without `Seek`.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn string(&mut self, s: &str) -> io::Result<()> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s.as_bytes())
    }

    fn pad(&mut self) -> io::Result<()> {
        let zeros = [0u8; ALIGNMENT as usize];
        self.put(&zeros[..padding(self.written) as usize])
    }

    fn value(&mut self, v: &Value) -> io::Result<()> {
        match v {
            Value::U32(x) => self.put(&x.to_le_bytes()),
            Value::F32(x) => self.put(&x.to_le_bytes()),
            Value::Bool(x) => self.put(&[u8::from(*x)]),
            Value::Str(s) => self.string(s),
            Value::StrArray(items) => {
                self.put(&8u32.to_le_bytes())?;
                self.put(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|s| self.string(s))
            }
            Value::I32Array(items) => {
                self.put(&5u32.to_le_bytes())?;
                self.put(&(items.len() as u64).to_le_bytes())?;
                items.iter().try_for_each(|x| self.put(&x.to_le_bytes()))
            }
        }
    }
}

/// Writes a GGUF v3 file: `metadata` in order, then the tensors in order, the data of
/// tensor `i` produced by `data(i)` (which must return exactly `tensors[i].byte_size()`
/// bytes). Returns the bytes written.
pub fn write<W: Write, E>(
    out: W,
    metadata: &[(String, Value)],
    tensors: &[TensorInfo],
    mut data: impl FnMut(usize) -> Result<Vec<u8>, E>,
) -> Result<u64, WriteError<E>> {
    let mut w = Counting {
        inner: out,
        written: 0,
    };
    w.put(MAGIC)?;
    w.put(&VERSION.to_le_bytes())?;
    w.put(&(tensors.len() as u64).to_le_bytes())?;
    w.put(&(metadata.len() as u64).to_le_bytes())?;
    for (key, value) in metadata {
        w.string(key)?;
        w.put(&value.type_id().to_le_bytes())?;
        w.value(value)?;
    }
    let mut offset = 0u64;
    for t in tensors {
        w.string(&t.name)?;
        w.put(&(t.shape.len() as u32).to_le_bytes())?;
        for dim in t.shape.iter().rev() {
            w.put(&dim.to_le_bytes())?;
        }
        w.put(&t.ty.ggml_id().to_le_bytes())?;
        w.put(&offset.to_le_bytes())?;
        let size = t.byte_size();
        offset += size + padding(size);
    }
    w.pad()?;
    for (i, t) in tensors.iter().enumerate() {
        let bytes = data(i).map_err(WriteError::Data)?;
        if bytes.len() as u64 != t.byte_size() {
            return Err(WriteError::Size {
                tensor: t.name.clone(),
                expected: t.byte_size(),
                found: bytes.len() as u64,
            });
        }
        w.put(&bytes)?;
        w.pad()?;
    }
    w.inner.flush()?;
    Ok(w.written)
}

/// Why writing failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The output could not be written.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Producing a tensor's data failed.
    #[error(transparent)]
    Data(E),
    /// A tensor's data does not have the size its header entry announced (a bug).
    #[error("tensor `{tensor}`: {found} bytes of data, but its header says {expected}")]
    Size {
        /// The tensor.
        tensor: String,
        /// From its shape and type.
        expected: u64,
        /// What the producer returned.
        found: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte layout of a small file, checked field by field against the format.
    #[test]
    fn header_fields_and_alignment_follow_the_format() {
        let metadata = vec![
            ("a".to_owned(), Value::U32(7)),
            (
                "b".to_owned(),
                Value::StrArray(vec!["x".into(), "yz".into()]),
            ),
            ("c".to_owned(), Value::Bool(true)),
        ];
        let tensors = vec![
            TensorInfo {
                name: "t0".into(),
                shape: vec![2, 3],
                ty: TensorType::F32,
            },
            TensorInfo {
                name: "t1".into(),
                shape: vec![1, 32],
                ty: TensorType::Q8_0,
            },
        ];
        let mut buf = Vec::new();
        let n = write(&mut buf, &metadata, &tensors, |i| {
            Ok::<_, std::convert::Infallible>(vec![i as u8 + 1; tensors[i].byte_size() as usize])
        })
        .unwrap();
        assert_eq!(n as usize, buf.len());
        assert_eq!(&buf[..4], b"GGUF");
        let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(4), 3);
        assert_eq!(u64_at(8), 2);
        assert_eq!(u64_at(16), 3);
        // "a": len 1, 'a', type 4, 7
        assert_eq!(u64_at(24), 1);
        assert_eq!(buf[32], b'a');
        assert_eq!(u32_at(33), 4);
        assert_eq!(u32_at(37), 7);
        // "b": string array of two
        assert_eq!(u32_at(50), 9);
        assert_eq!(u32_at(54), 8);
        assert_eq!(u64_at(58), 2);
        // t0's dims are written reversed: ne = [3, 2].
        let t0 = buf.windows(2).position(|w| w == b"t0").unwrap();
        assert_eq!(u32_at(t0 + 2), 2);
        assert_eq!(u64_at(t0 + 6), 3);
        assert_eq!(u64_at(t0 + 14), 2);
        assert_eq!(u32_at(t0 + 22), 0);
        assert_eq!(u64_at(t0 + 26), 0);
        // t1 starts at the next multiple of 32 after t0's 24 bytes.
        let t1 = buf.windows(2).position(|w| w == b"t1").unwrap();
        assert_eq!(u32_at(t1 + 22), 8);
        assert_eq!(u64_at(t1 + 26), 32);
        let data_start = t1 + 34 + padding((t1 + 34) as u64) as usize;
        assert_eq!(data_start % 32, 0);
        assert!(buf[data_start..data_start + 24].iter().all(|&b| b == 1));
        assert!(
            buf[data_start + 24..data_start + 32]
                .iter()
                .all(|&b| b == 0)
        );
        assert!(
            buf[data_start + 32..data_start + 66]
                .iter()
                .all(|&b| b == 2)
        );
        assert_eq!(buf.len(), data_start + 96);
    }

    #[test]
    fn a_producer_returning_the_wrong_size_is_caught() {
        let tensors = vec![TensorInfo {
            name: "t".into(),
            shape: vec![4],
            ty: TensorType::F16,
        }];
        let err = write(Vec::new(), &[], &tensors, |_| {
            Ok::<_, std::convert::Infallible>(vec![0; 3])
        })
        .unwrap_err();
        assert!(err.to_string().contains("3 bytes"), "{err}");
    }
}
