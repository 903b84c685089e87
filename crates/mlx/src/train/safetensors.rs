//! Safetensors files that training writes (adapters, checkpoints, optimizer state), written
//! through [`pipe_engine::atomic_write`] like every other output: a reader sees the old
//! file or the new one, never a part.
//!
//! MLX serializes the tensors into memory through mlx-c's writer interface
//! (`mlx_save_safetensors_writer`; mlx-rs wraps only the file form), so the bytes are
//! exactly what `Array::save_safetensors` would put in a file. The whole file is held in
//! memory while it is written: negligible for adapters, one more copy of the trained
//! weights for a full fine-tune's checkpoint.

use mlx_rs::Array;
use mlx_rs::error::Exception;
use std::collections::HashMap;
use std::ffi::{CString, c_char, c_int, c_void};
use std::path::Path;

/// Writes `tensors` (name, array) and `metadata` as a safetensors file at `path`, atomically.
pub fn write<I, S, V>(
    path: &Path,
    tensors: I,
    metadata: &HashMap<String, String>,
) -> anyhow::Result<()>
where
    I: IntoIterator<Item = (S, V)>,
    S: AsRef<str>,
    V: AsRef<Array>,
{
    let bytes = to_bytes(tensors, metadata)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    pipe_engine::atomic_write::write_atomic(path, &bytes)?;
    Ok(())
}

/// The safetensors bytes MLX writes for `tensors` and `metadata`.
pub fn to_bytes<I, S, V>(
    tensors: I,
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>, Exception>
where
    I: IntoIterator<Item = (S, V)>,
    S: AsRef<str>,
    V: AsRef<Array>,
{
    // mlx-rs installs its error handler (which records MLX errors instead of exiting) on
    // its first operation; make sure that happened before calling mlx-c directly.
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| drop(Array::from_f32(0.0).abs()));
    // Inserted in name order: MLX lays the file out in its map's iteration order, which
    // follows the insertion order, so the same tensors give the same bytes in every run
    // (a HashMap's order changes from process to process, and so would the file's hash).
    let mut names = tensors
        .into_iter()
        .map(|(name, array)| Ok((c_string(name.as_ref())?, array)))
        .collect::<Result<Vec<_>, Exception>>()?;
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut metadata = metadata
        .iter()
        .map(|(k, v)| Ok((c_string(k)?, c_string(v)?)))
        .collect::<Result<Vec<_>, Exception>>()?;
    metadata.sort();
    let mut sink = Sink::default();
    // SAFETY: the maps and the writer are freed before returning; the writer's descriptor
    // points at `sink`, which outlives it (mlx-c calls back only during the save, and
    // `free` does nothing).
    let status = unsafe {
        let arrays = mlx_sys::mlx_map_string_to_array_new();
        let strings = mlx_sys::mlx_map_string_to_string_new();
        let mut status = 0;
        for (name, array) in &names {
            status |= mlx_sys::mlx_map_string_to_array_insert(
                arrays,
                name.as_ptr(),
                array.as_ref().as_ptr(),
            );
        }
        for (key, value) in &metadata {
            status |=
                mlx_sys::mlx_map_string_to_string_insert(strings, key.as_ptr(), value.as_ptr());
        }
        if status == 0 {
            let writer = mlx_sys::mlx_io_writer_new((&raw mut sink).cast(), SINK_VTABLE);
            status = mlx_sys::mlx_save_safetensors_writer(writer, arrays, strings);
            mlx_sys::mlx_io_writer_free(writer);
        }
        mlx_sys::mlx_map_string_to_array_free(arrays);
        mlx_sys::mlx_map_string_to_string_free(strings);
        status
    };
    if status != 0 {
        return Err(Exception::custom("MLX cannot serialize the tensors"));
    }
    Ok(sink.bytes)
}

fn c_string(s: &str) -> Result<CString, Exception> {
    CString::new(s).map_err(|_| Exception::custom(format!("`{s}` contains a NUL byte")))
}

/// An in-memory file that mlx-c writes to (and may seek in).
#[derive(Default)]
struct Sink {
    bytes: Vec<u8>,
    at: usize,
}

const SINK_VTABLE: mlx_sys::mlx_io_vtable = mlx_sys::mlx_io_vtable {
    is_open: Some(sink_ok),
    good: Some(sink_ok),
    tell: Some(sink_tell),
    seek: Some(sink_seek),
    read: None,
    read_at_offset: None,
    write: Some(sink_write),
    label: Some(sink_label),
    free: Some(sink_free),
};

/// # Safety
/// `desc` is the `Sink` given to `mlx_io_writer_new` (so for every callback below).
unsafe fn sink<'a>(desc: *mut c_void) -> &'a mut Sink {
    // SAFETY: see the function's contract.
    unsafe { &mut *desc.cast::<Sink>() }
}

unsafe extern "C" fn sink_ok(_desc: *mut c_void) -> bool {
    true
}

unsafe extern "C" fn sink_tell(desc: *mut c_void) -> usize {
    // SAFETY: mlx-c passes back the descriptor it was given.
    unsafe { sink(desc) }.at
}

unsafe extern "C" fn sink_seek(desc: *mut c_void, off: i64, whence: c_int) -> c_int {
    // SAFETY: mlx-c passes back the descriptor it was given.
    let sink = unsafe { sink(desc) };
    let base = match whence {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => sink.at as i64,
        libc::SEEK_END => sink.bytes.len() as i64,
        _ => return -1,
    };
    match usize::try_from(base + off) {
        Ok(at) => {
            sink.at = at;
            0
        }
        Err(_) => -1,
    }
}

unsafe extern "C" fn sink_write(desc: *mut c_void, data: *const c_char, n: usize) -> usize {
    // SAFETY: mlx-c passes back the descriptor it was given, and `n` readable bytes.
    let (sink, data) = unsafe { (sink(desc), std::slice::from_raw_parts(data.cast::<u8>(), n)) };
    let end = sink.at + n;
    if sink.bytes.len() < end {
        sink.bytes.resize(end, 0);
    }
    sink.bytes[sink.at..end].copy_from_slice(data);
    sink.at = end;
    n
}

unsafe extern "C" fn sink_label(_desc: *mut c_void) -> *const c_char {
    c"memory".as_ptr()
}

unsafe extern "C" fn sink_free(_desc: *mut c_void) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes are what MLX writes to a file, and read back as the same tensors.
    #[test]
    fn bytes_equal_mlxs_own_file() {
        let a = Array::from_slice(&[1.0f32, -2.5, 3.25, 4.0, 5.0, 6.0], &[2, 3]);
        let b = Array::from_slice(&[7i32, 8, 9], &[3]);
        // A transposed (non-contiguous) view is written in its logical order.
        let t = a.t();
        let tensors = [("a", &a), ("b", &b), ("t", &t)];
        let metadata = HashMap::from([("step".to_owned(), "12".to_owned())]);
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("mlx.safetensors");
        Array::save_safetensors(tensors, &metadata, &reference).unwrap();
        let ours = dir.path().join("ours.safetensors");
        write(&ours, tensors, &metadata).unwrap();
        assert_eq!(
            std::fs::read(&ours).unwrap(),
            std::fs::read(&reference).unwrap()
        );
        let (loaded, meta) = Array::load_safetensors_with_metadata(&ours).unwrap();
        assert_eq!(meta, metadata);
        assert_eq!(loaded["t"].shape(), &[3, 2]);
        assert_eq!(
            loaded["t"].as_slice::<f32>(),
            [1.0, 4.0, -2.5, 5.0, 3.25, 6.0]
        );
        assert_eq!(loaded["b"].as_slice::<i32>(), [7, 8, 9]);
    }

    #[test]
    fn the_same_tensors_give_the_same_bytes_in_any_order() {
        let arrays: Vec<(String, Array)> = (0..40)
            .map(|i| {
                (
                    format!("layer.{i}.w"),
                    Array::from_slice(&[i as f32; 6], &[2, 3]),
                )
            })
            .collect();
        let forward = to_bytes(arrays.iter().map(|(n, a)| (n, a)), &HashMap::new()).unwrap();
        let backward = to_bytes(arrays.iter().rev().map(|(n, a)| (n, a)), &HashMap::new()).unwrap();
        assert_eq!(forward, backward);
    }
}
