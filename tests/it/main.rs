//! pipe's integration tests: one binary, one module per feature. Each module runs the real
//! `pipe` binary or the library on real inputs in a temporary directory and checks what a
//! user would see.

mod foundation;
mod model;
mod train;
