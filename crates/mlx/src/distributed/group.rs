//! A safe handle on an MLX distributed group (mlx-c's `mlx_distributed_group`), with the
//! collectives training needs. mlx-rs has no wrapper for these yet.

use super::role::Launched;
use anyhow::bail;
use mlx_rs::Array;
use mlx_rs::error::Exception;

/// An initialized group of ranks. Collectives are lazy MLX ops: the exchange happens when
/// the result is evaluated, so a dead peer shows up as an error at evaluation.
pub struct Group {
    raw: mlx_sys::mlx_distributed_group,
    rank: usize,
    size: usize,
}

// SAFETY: the group is an immutable handle on MLX's process-wide communicator; mlx-c's
// collectives take it by value and may be called from any thread.
unsafe impl Send for Group {}
// SAFETY: as above; nothing mutates the handle after `init`.
unsafe impl Sync for Group {}

impl Group {
    /// Joins the group `launched` describes, with the backend it names (MLX's `ring`
    /// backend reads `MLX_RANK` and `MLX_HOSTFILE`; `mpi` reads the MPI launcher's).
    pub fn init(launched: &Launched) -> anyhow::Result<Self> {
        ensure_error_handler();
        let backend = std::ffi::CString::new(launched.backend.name()).expect("no NUL");
        // SAFETY: `raw` is written by mlx-c on success; the backend name outlives the call.
        let (status, raw) = unsafe {
            if !mlx_sys::mlx_distributed_is_available(backend.as_ptr()) {
                bail!(
                    "MLX's `{}` distributed backend is not available in this build",
                    launched.backend.name()
                );
            }
            let mut raw = mlx_sys::mlx_distributed_group_new();
            let status = mlx_sys::mlx_distributed_init(&mut raw, true, backend.as_ptr());
            (status, raw)
        };
        if status != 0 || raw.ctx.is_null() {
            bail!(
                "cannot join the distributed group as rank {} ({}); check the hostfile and that every rank was started",
                launched.rank,
                launched.describe()
            );
        }
        // SAFETY: `raw` is a valid group from here on.
        let (rank, size) = unsafe {
            (
                mlx_sys::mlx_distributed_group_rank(raw),
                mlx_sys::mlx_distributed_group_size(raw),
            )
        };
        let group = Self {
            raw,
            rank: usize::try_from(rank).unwrap_or(0),
            size: usize::try_from(size).unwrap_or(1),
        };
        if let Some(expected) = launched.size
            && expected != group.size
        {
            bail!(
                "the launcher says {expected} ranks but MLX's group has {}; check the hostfile",
                group.size
            );
        }
        Ok(group)
    }

    /// This process's rank, from 0.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many ranks the group has.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The elementwise sum of `x` over every rank (every rank gets the same result).
    pub fn all_sum(&self, x: &Array) -> Result<Array, Exception> {
        self.collective(x, mlx_sys::mlx_distributed_all_sum, "all_sum")
    }

    /// The elementwise minimum of `x` over every rank.
    pub fn all_min(&self, x: &Array) -> Result<Array, Exception> {
        self.collective(x, mlx_sys::mlx_distributed_all_min, "all_min")
    }

    /// Every rank's `x`, concatenated along the first axis in rank order.
    pub fn all_gather(&self, x: &Array) -> Result<Array, Exception> {
        self.collective(x, mlx_sys::mlx_distributed_all_gather, "all_gather")
    }

    fn collective(
        &self,
        x: &Array,
        op: unsafe extern "C" fn(
            *mut mlx_sys::mlx_array,
            mlx_sys::mlx_array,
            mlx_sys::mlx_distributed_group,
            mlx_sys::mlx_stream,
        ) -> i32,
        name: &str,
    ) -> Result<Array, Exception> {
        ensure_error_handler();
        // The default stream, as mlx.nn.average_gradients uses: MLX routes the exchange to
        // the device its backend supports.
        let stream = mlx_rs::Stream::new();
        // SAFETY: `out` is a fresh array handle written by mlx-c on success and freed here
        // on failure; `x`, the group and the stream are valid for the call.
        unsafe {
            let mut out = mlx_sys::mlx_array_new();
            if op(&mut out, x.as_ptr(), self.raw, stream.as_ptr()) != 0 {
                mlx_sys::mlx_array_free(out);
                return Err(Exception::custom(format!("MLX distributed {name} failed")));
            }
            Ok(Array::from_ptr(out))
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: the handle came from `mlx_distributed_init` and is freed once.
        unsafe {
            mlx_sys::mlx_distributed_group_free(self.raw);
        }
    }
}

/// mlx-rs installs the handler that turns MLX errors into results (instead of exiting the
/// process) on its first operation; make sure that happened before calling mlx-c directly.
fn ensure_error_handler() {
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| drop(Array::from_f32(0.0).abs()));
}
