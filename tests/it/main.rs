//! pipe's integration tests: one binary, one module per feature. Each module runs the real
//! `pipe` binary in a temporary directory and checks what a user would see.

mod foundation;
