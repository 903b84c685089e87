//! Encoding float32 tensor data as F32, F16 or Q8_0 bytes, and the rule for which type a
//! tensor gets.
//!
//! Q8_0 (ggml's `block_q8_0`, gguf-py's `quants.Q8_0`): each run of 32 consecutive values
//! of a row becomes one block of 34 bytes, a float16 scale `d = max|x| / 127` and 32 int8
//! `round(x / d)`, rounding half away from zero as C's `roundf` does; `d = 0` quantizes to
//! zeros. The scale is computed in float32 and only stored as float16, as ggml does.
//!
//! Which tensors are quantized follows llama.cpp's `convert_hf_to_gguf.py`
//! (`prepare_tensors`): one-dimensional tensors (norms, biases) stay F32; every other
//! tensor takes the requested type, except that a row length that is not a whole number of
//! Q8_0 blocks falls back to F16 (gguf-py raises `QuantError` there and the converter
//! writes F16).

use super::writer::TensorType;
use half::f16;

/// Values per Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;

/// The file type the user asked for (`--type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// Float16 weights.
    F16,
    /// Q8_0 weights.
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl FileType {
    /// `general.file_type` (llama.cpp's `LLAMA_FTYPE_MOSTLY_F16` = 1, `MOSTLY_Q8_0` = 7).
    pub fn llama_ftype(self) -> u32 {
        match self {
            FileType::F16 => 1,
            FileType::Q8_0 => 7,
        }
    }

    /// The name used in messages and file names.
    pub fn name(self) -> &'static str {
        match self {
            FileType::F16 => "f16",
            FileType::Q8_0 => "q8_0",
        }
    }
}

/// The type a tensor of row-major `shape` is written as under `file_type`.
pub fn tensor_type(shape: &[u64], file_type: FileType) -> TensorType {
    if shape.len() <= 1 {
        return TensorType::F32;
    }
    match file_type {
        FileType::F16 => TensorType::F16,
        FileType::Q8_0 if shape.last().is_some_and(|&n| n % Q8_0_BLOCK as u64 == 0) => {
            TensorType::Q8_0
        }
        FileType::Q8_0 => TensorType::F16,
    }
}

/// `values` (row-major, rows a whole number of Q8_0 blocks for Q8_0) encoded as `ty`.
pub fn encode(values: &[f32], ty: TensorType) -> Vec<u8> {
    match ty {
        TensorType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        TensorType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        TensorType::Q8_0 => quantize_q8_0(values),
    }
}

/// Q8_0 blocks of `values` (its length a multiple of 32).
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / Q8_0_BLOCK * 34);
    for block in values.chunks_exact(Q8_0_BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        // `f32::round` rounds half away from zero, like C's `roundf`.
        out.extend(block.iter().map(|v| ((v * inv).round() as i8) as u8));
    }
    out
}

/// The values Q8_0 `bytes` stand for (for tests and drift checks).
pub fn dequantize_q8_0(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(34)
        .flat_map(|b| {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            b[2..].iter().map(move |&q| f32::from(q as i8) * d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block_layout_and_rounding() {
        // max |x| = 127, so d = 1 exactly and halves must round away from zero (round half
        // to even would give 2, -2 and 0).
        let mut values = vec![0f32; 32];
        values[0] = 127.0;
        values[1] = -127.0;
        values[2] = 2.5;
        values[3] = -2.5;
        values[4] = 0.5;
        values[5] = 0.4;
        let bytes = quantize_q8_0(&values);
        assert_eq!(bytes.len(), 34);
        let d = f16::from_le_bytes([bytes[0], bytes[1]]);
        assert_eq!(d, f16::from_f32(1.0));
        let q: Vec<i8> = bytes[2..].iter().map(|&b| b as i8).collect();
        assert_eq!(&q[..6], &[127, -127, 3, -3, 1, 0]);
        assert!(q[6..].iter().all(|&x| x == 0));
    }

    #[test]
    fn q8_0_round_trip_error_is_within_half_a_step() {
        let values: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let back = dequantize_q8_0(&quantize_q8_0(&values));
        for (block, got) in values.chunks(32).zip(back.chunks(32)) {
            let step = block.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            for (a, b) in block.iter().zip(got) {
                // Half a step from rounding plus the float16 rounding of the scale.
                assert!((a - b).abs() <= step * 0.5 + a.abs() * 1e-3, "{a} vs {b}");
            }
        }
        assert_eq!(dequantize_q8_0(&quantize_q8_0(&[0.0; 32])), vec![0.0; 32]);
    }

    #[test]
    fn type_rules_follow_the_converter() {
        assert_eq!(tensor_type(&[576], FileType::Q8_0), TensorType::F32);
        assert_eq!(tensor_type(&[1536, 576], FileType::Q8_0), TensorType::Q8_0);
        assert_eq!(tensor_type(&[576, 8], FileType::Q8_0), TensorType::F16);
        assert_eq!(tensor_type(&[1536, 576], FileType::F16), TensorType::F16);
    }

    #[test]
    fn f16_is_little_endian_half_precision() {
        assert_eq!(
            encode(&[1.0, -2.0], TensorType::F16),
            vec![0x00, 0x3c, 0x00, 0xc0]
        );
        assert_eq!(encode(&[1.0], TensorType::F32), 1f32.to_le_bytes().to_vec());
    }
}
