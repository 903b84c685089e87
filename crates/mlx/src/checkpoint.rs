//! Gradient checkpointing: run a function so that, when a gradient is taken through it,
//! its intermediate arrays are recomputed in the backward pass instead of being kept alive
//! from the forward pass.
//!
//! mlx-rs does not wrap MLX's `checkpoint` transform, so this calls mlx-c's
//! `mlx_checkpoint` through `mlx_sys`. MLX implements it as a custom VJP: the forward keeps
//! only the function's inputs and outputs; the VJP calls the function again on the inputs
//! and differentiates that. Two rules follow for callers:
//! - Arrays that need gradients (trainable parameters, activations) must be passed as
//!   `inputs`; arrays the function captures are constants to the gradient.
//! - The function must compute the same thing every time it is called (it runs once in the
//!   forward and again in the backward): no fresh random draws, no side effects.
//!
//! Without a gradient transform around it, a checkpointed call costs one extra graph node.

use mlx_rs::Array;
use mlx_rs::error::Exception;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    /// The Rust error of the last failed call of a checkpointed function on this thread.
    static FAILURE: RefCell<Option<Exception>> = const { RefCell::new(None) };
}

/// A checkpointed function: `f(inputs)` now, recomputed from `inputs` in the backward.
///
/// `f` must own what it captures (`'static`): MLX keeps the function for as long as the
/// graph that uses it lives, which can outlast the caller's frame.
pub fn checkpoint<F>(inputs: &[Array], f: F) -> Result<Vec<Array>, Exception>
where
    F: FnMut(&[Array]) -> Result<Vec<Array>, Exception> + 'static,
{
    // mlx-rs installs its error handler (which records MLX errors instead of exiting) on the
    // first operation it runs; make sure that happened before calling mlx-c directly.
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| drop(Array::from_f32(0.0).abs()));
    FAILURE.with(|slot| slot.borrow_mut().take());
    let payload = Box::into_raw(Box::new(f)).cast::<std::ffi::c_void>();
    // SAFETY: the payload is a leaked `Box<F>` that `drop_payload::<F>` frees exactly once,
    // when mlx-c drops the last copy of the closure; `call::<F>` only borrows it.
    unsafe {
        let inner = mlx_sys::mlx_closure_new_func_payload(
            Some(call::<F>),
            payload,
            Some(drop_payload::<F>),
        );
        let mut wrapped = mlx_sys::mlx_closure_new();
        let status = mlx_sys::mlx_checkpoint(&mut wrapped, inner);
        mlx_sys::mlx_closure_free(inner);
        if status != 0 {
            mlx_sys::mlx_closure_free(wrapped);
            return Err(Exception::custom("mlx_checkpoint failed"));
        }
        let args = mlx_sys::mlx_vector_array_new();
        for a in inputs {
            mlx_sys::mlx_vector_array_append_value(args, a.as_ptr());
        }
        let mut out = mlx_sys::mlx_vector_array_new();
        let status = mlx_sys::mlx_closure_apply(&mut out, wrapped, args);
        mlx_sys::mlx_vector_array_free(args);
        mlx_sys::mlx_closure_free(wrapped);
        let result = if status == 0 {
            let n = mlx_sys::mlx_vector_array_size(out);
            let mut arrays = Vec::with_capacity(n);
            for i in 0..n {
                let mut a = mlx_sys::mlx_array_new();
                if mlx_sys::mlx_vector_array_get(&mut a, out, i) != 0 {
                    mlx_sys::mlx_array_free(a);
                    mlx_sys::mlx_vector_array_free(out);
                    return Err(Exception::custom("cannot read a checkpointed output"));
                }
                arrays.push(Array::from_ptr(a));
            }
            Ok(arrays)
        } else {
            Err(FAILURE
                .with(|slot| slot.borrow_mut().take())
                .unwrap_or_else(|| Exception::custom("a checkpointed function failed")))
        };
        mlx_sys::mlx_vector_array_free(out);
        result
    }
}

/// The trampoline mlx-c calls: borrows the arrays, runs the Rust function, returns a new
/// vector (mlx-c takes ownership of `*ret`).
extern "C" fn call<F>(
    ret: *mut mlx_sys::mlx_vector_array,
    args: mlx_sys::mlx_vector_array,
    payload: *mut std::ffi::c_void,
) -> i32
where
    F: FnMut(&[Array]) -> Result<Vec<Array>, Exception>,
{
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), Exception> {
        // SAFETY: `payload` is the `Box<F>` made in `checkpoint`, alive until `drop_payload`.
        let f = unsafe { &mut *payload.cast::<F>() };
        let inputs = unsafe {
            let n = mlx_sys::mlx_vector_array_size(args);
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                let mut a = mlx_sys::mlx_array_new();
                if mlx_sys::mlx_vector_array_get(&mut a, args, i) != 0 {
                    mlx_sys::mlx_array_free(a);
                    return Err(Exception::custom("cannot read a checkpoint input"));
                }
                v.push(Array::from_ptr(a));
            }
            v
        };
        let outputs = f(&inputs)?;
        // SAFETY: a fresh vector handed to mlx-c, which frees it.
        unsafe {
            let v = mlx_sys::mlx_vector_array_new();
            for a in &outputs {
                mlx_sys::mlx_vector_array_append_value(v, a.as_ptr());
            }
            *ret = v;
        }
        Ok(())
    }));
    let error = match outcome {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => e,
        Err(panic) => Exception::custom(format!(
            "a checkpointed function panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    };
    FAILURE.with(|slot| *slot.borrow_mut() = Some(error));
    1
}

extern "C" fn drop_payload<F>(payload: *mut std::ffi::c_void) {
    if !payload.is_null() {
        // SAFETY: made by `Box::into_raw` in `checkpoint`; mlx-c calls this once.
        let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
            drop(Box::from_raw(payload.cast::<F>()));
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::transforms;

    /// The gradient through a checkpointed function equals the plain gradient, including
    /// through a captured constant and a second input.
    #[test]
    fn gradients_through_a_checkpoint_equal_the_plain_ones() {
        let w = Array::from_slice(&[0.5f32, -1.0, 2.0, 0.25], &[2, 2]);
        let plain = |x: &Array, w: &Array| -> Result<Array, Exception> {
            mlx_rs::ops::tanh(x.matmul(w)?)?.square()?.sum(None)
        };
        let x = Array::from_slice(&[1.0f32, 2.0, -0.5, 0.3], &[2, 2]);
        let wc = w.clone();
        let mut g_plain = transforms::grad(move |x: &Array| plain(x, &wc));
        let wc = w.clone();
        let mut g_ckpt = transforms::grad(move |x: &Array| {
            let w = wc.clone();
            let out = checkpoint(std::slice::from_ref(x), move |a| {
                Ok(vec![mlx_rs::ops::tanh(a[0].matmul(&w)?)?])
            })?;
            out[0].square()?.sum(None)
        });
        let (a, b) = (g_plain(&x).unwrap(), g_ckpt(&x).unwrap());
        let d = crate::test_support::max_abs_diff(&a, &b);
        assert!(d < 1e-6, "{d}: {a:?} vs {b:?}");
        assert!(a.abs().unwrap().max(None).unwrap().item_exact::<f32>() > 0.1);
    }

    #[test]
    fn a_failing_function_reports_its_error() {
        let x = Array::from_f32(1.0);
        let err = checkpoint(&[x], |_| Err(Exception::custom("boom in block 3"))).unwrap_err();
        assert!(err.to_string().contains("boom in block 3"), "{err}");
    }
}
