//! Reading typed fields of a stage (flags, string lists) and rendering templates with
//! minijinja. Undefined names are errors (strict mode), reported at the field's position.

use super::diag::Pos;
use super::resolve::Resolver;
use super::values::scalar_name;
use serde_json::Value;
use serde_yaml::{Mapping, Value as Yaml};

impl Resolver<'_> {
    pub(super) fn flag(&mut self, base: &str, field: &str, map: &Mapping) -> bool {
        match map.get(field) {
            None => false,
            Some(Yaml::Bool(b)) => *b,
            Some(_) => {
                let pos = self.loc.key(&["stages", base, field]);
                self.error(pos, format!("`{field}` must be true or false"));
                false
            }
        }
    }

    /// A field that is a string or a list of strings.
    pub(super) fn strings(&mut self, base: &str, field: &str, map: &Mapping) -> Vec<String> {
        match map.get(field) {
            None | Some(Yaml::Null) => Vec::new(),
            Some(Yaml::String(s)) => vec![s.clone()],
            Some(Yaml::Sequence(seq)) if seq.iter().all(|v| scalar_name(v).is_some()) => {
                seq.iter().filter_map(scalar_name).collect()
            }
            Some(_) => {
                let pos = self.loc.key(&["stages", base, field]);
                self.error(
                    pos,
                    format!("`{field}` must be a string or a list of strings"),
                );
                Vec::new()
            }
        }
    }

    pub(super) fn render(&mut self, template: &str, ctx: &Value, pos: Pos) -> String {
        if !template.contains("{{") && !template.contains("{%") {
            return template.to_owned();
        }
        match self.env.render_str(template, ctx) {
            Ok(s) => s,
            Err(e) => {
                let mut detail = e.to_string();
                if let Some(more) = e.detail() {
                    detail = format!("{detail} ({more})");
                }
                self.error(pos, format!("template error in `{template}`: {detail}"))
                    .hints
                    .push("templates can use `params`, `vars`, `matrix` and `stage.name`".into());
                template.to_owned()
            }
        }
    }

    pub(super) fn render_value(&mut self, v: &Value, ctx: &Value, pos: Pos) -> Value {
        match v {
            Value::String(s) => {
                let rendered = self.render(s, ctx, pos);
                // A value that is one whole `{{ expr }}` keeps the type of what it renders
                // to, so `iters: "{{ params.train.iters }}"` is the number 60, not "60".
                let t = s.trim();
                let whole =
                    t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1;
                match serde_yaml::from_str::<Value>(&rendered) {
                    Ok(v @ (Value::Number(_) | Value::Bool(_))) if whole => v,
                    _ => Value::String(rendered),
                }
            }
            Value::Array(a) => {
                Value::Array(a.iter().map(|x| self.render_value(x, ctx, pos)).collect())
            }
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.render_value(x, ctx, pos)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}
