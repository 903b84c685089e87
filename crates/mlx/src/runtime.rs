//! Start-up check and description of the MLX runtime.

use anyhow::{Context, bail};
use mlx_rs::{Array, Device, DeviceType};
use serde::Serialize;

/// The compute backend MLX runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Apple GPU through Metal.
    Metal,
    /// The CPU backend (Linux, or a Mac without Metal).
    Cpu,
}

/// What MLX reports about itself.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeInfo {
    /// The MLX library version, e.g. "0.32.2".
    pub mlx_version: String,
    /// The backend that runs the default device.
    pub backend: Backend,
    /// The default device, e.g. "gpu:0" or "cpu:0".
    pub default_device: String,
    /// Whether the Metal backend is compiled in and found a GPU.
    pub metal_available: bool,
}

/// The MLX library version string.
pub fn mlx_version() -> anyhow::Result<String> {
    // SAFETY: the string is created here, filled by mlx_version, copied, then freed.
    unsafe {
        let mut handle = mlx_sys::mlx_string_new();
        let rc = mlx_sys::mlx_version(&mut handle);
        let text = (rc == 0).then(|| {
            std::ffi::CStr::from_ptr(mlx_sys::mlx_string_data(handle))
                .to_string_lossy()
                .into_owned()
        });
        mlx_sys::mlx_string_free(handle);
        text.ok_or_else(|| anyhow::anyhow!("MLX did not report its version"))
    }
}

/// Whether Metal is available to MLX.
pub fn metal_available() -> bool {
    let mut available = false;
    // SAFETY: writes one bool.
    let rc = unsafe { mlx_sys::mlx_metal_is_available(&mut available) };
    rc == 0 && available
}

/// Starts MLX, runs one tiny computation to prove it works, and describes the runtime.
/// Fails with a clear message when MLX cannot compute.
pub fn start() -> anyhow::Result<RuntimeInfo> {
    crate::exit_guard::install();
    let device = Device::try_default().context("MLX could not pick a default device")?;
    let kind = device
        .get_type()
        .context("MLX could not tell the default device's type")?;
    let index = device.get_index().unwrap_or(0);
    let backend = match kind {
        DeviceType::Gpu => Backend::Metal,
        DeviceType::Cpu => Backend::Cpu,
    };
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    let product = a
        .matmul(&a)
        .and_then(|p| p.eval().map(|()| p))
        .context("MLX failed to run a 2x2 matmul on the default device")?;
    if product.as_slice::<f32>() != [7.0, 10.0, 15.0, 22.0] {
        bail!(
            "MLX computed a wrong 2x2 matmul ({:?}); the MLX library or its BLAS is broken",
            product.as_slice::<f32>()
        );
    }
    Ok(RuntimeInfo {
        mlx_version: mlx_version()?,
        backend,
        default_device: format!(
            "{}:{index}",
            match kind {
                DeviceType::Gpu => "gpu",
                DeviceType::Cpu => "cpu",
            }
        ),
        metal_available: metal_available(),
    })
}

/// MLX's peak-memory counter is one per process. A training run resets and reads it (its
/// step log, and the probes of `micro_batch: auto`), so two runs in one process must not
/// overlap, or one's reset erases the other's peak. The CLI trains once per process; tests
/// train several tiny models at once and serialise through this.
static PEAK_MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds MLX's peak-memory counter for the caller until the guard drops.
pub fn own_peak_memory() -> std::sync::MutexGuard<'static, ()> {
    PEAK_MEMORY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
