//! A stage's `with:`: rendered, then resolved by its kind into the typed configuration the
//! stage's process receives ([`crate::stages::Resolved`]). A bad key is reported at its
//! own line inside `with:` ([`Diagnostic::at_field`]); the paths the configuration names
//! become deps and outs without being repeated.

use super::diag::{Diagnostic, Pos};
use super::normalize_path;
use super::resolve::{Resolver, Spots};
use super::values::to_json;
use crate::stages::Kind;
use serde_json::Value;
use serde_yaml::Mapping;

impl Resolver<'_> {
    /// The resolved configuration and whether the stage uses the accelerator
    /// (`Value::Null` and `false` when `with:` is bad, which is then reported).
    #[allow(
        clippy::too_many_arguments,
        reason = "one stage expansion's context, threaded from `expansion`"
    )]
    pub(super) fn with(
        &mut self,
        base: &str,
        map: &Mapping,
        kind: Option<Kind>,
        ctx: &Value,
        at: Pos,
        deps: &mut Vec<String>,
        outs: &mut Vec<String>,
        spots: &mut Spots,
    ) -> (Value, bool) {
        let with_pos = if map.contains_key("with") {
            self.loc.key(&["stages", base, "with"])
        } else {
            at
        };
        let with = match map.get("with") {
            Some(v) => self.render_value(&to_json(v), ctx, with_pos),
            None => Value::Null,
        };
        let Some(kind) = kind else {
            return (Value::Null, false);
        };
        let resolved = match kind.resolve(&with) {
            Ok(resolved) => resolved,
            Err(e) => {
                self.diags.push(Diagnostic::at_field(
                    self.file,
                    self.source,
                    &["stages", base, "with"],
                    with_pos,
                    &format!("stage `{base}`: "),
                    &e,
                ));
                return (Value::Null, false);
            }
        };
        for (list, found, spots) in [
            (deps, resolved.deps, &mut spots.deps),
            (outs, resolved.outs, &mut spots.outs),
        ] {
            for raw in found {
                match normalize_path(&raw) {
                    Ok(p) if !list.contains(&p) => {
                        list.push(p);
                        spots.push(with_pos);
                    }
                    Ok(_) => {}
                    Err(why) => {
                        self.error(with_pos, format!("bad path `{raw}` in `with`: {why}"));
                    }
                }
            }
        }
        (resolved.config, resolved.uses_mlx)
    }
}
