//! The `cmd` kind: run a shell command (`sh -c`) or an argv list, in the workspace root
//! (the process is built by [`crate::exec::launch`]).
//!
//! The child gets `PIPE_STAGE` (its stage name) and `PIPE_ROOT`, and the directory of the
//! running `pipe` executable first on `PATH` so a command can call `pipe` itself and get
//! this very version. stdout and stderr both go to the stage's log file. The child runs
//! in its own process group so an interrupt can stop it and everything it spawned.

/// The `cmd` kind: its `with:` is not read (the command is the stage's `cmd:`).
pub struct Cmd;

impl super::StageKind for Cmd {
    fn name(&self) -> &'static str {
        "cmd"
    }
    fn impl_version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "run a shell command or an argv list"
    }
    fn resolve(
        &self,
        with: &serde_json::Value,
    ) -> Result<super::Resolved, pipe_schema::FieldError> {
        Ok(super::Resolved {
            config: with.clone(),
            deps: Vec::new(),
            outs: Vec::new(),
            uses_mlx: false,
        })
    }
    fn with_schema(&self, _: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"description": "not read by `cmd` stages"})
    }
}
