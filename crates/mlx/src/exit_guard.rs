//! Ending a process that used MLX on Linux without OpenBLAS's exit-time hang.
//!
//! MLX's CPU backend calls OpenBLAS from its own worker threads. After that, OpenBLAS's
//! library destructor (`gotoblas_quit` -> `blas_thread_shutdown_`, run by `_dl_fini` at
//! `exit`) can wait forever to join one of its workers; gdb shows it on Debian 12's
//! libopenblas0-pthread after generation, in the `pipe` binary and in test binaries alike.
//! The guard registers, with glibc's `on_exit`, a handler that flushes Rust's stdout and
//! stderr and ends the process with the same status through `_exit`. Handlers registered
//! after start-up run before `_dl_fini`, so library destructors never run. Everything pipe
//! writes is complete (atomically written) before exit, so nothing is lost.

/// Installs the guard once per process (a no-op off Linux, where OpenBLAS is not used).
pub fn install() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: registers a handler with a 'static function pointer and no argument.
            unsafe {
                on_exit(end_now, std::ptr::null_mut());
            }
        });
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe extern "C" {
    fn on_exit(
        function: extern "C" fn(libc::c_int, *mut libc::c_void),
        arg: *mut libc::c_void,
    ) -> libc::c_int;
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn end_now(status: libc::c_int, _arg: *mut libc::c_void) {
    pipe_engine::process::exit_now(status)
}
