//! The integration test binary: one file per feature (`mod model;` for the MLX model core).

mod model;
