//! Build script of `pipe-mlx-core`: on Linux, checks the build layer that links MLX
//! (see `linux_layer.rs`).

#[path = "linux_layer.rs"]
mod linux_layer;

fn main() {
    linux_layer::check();
}
