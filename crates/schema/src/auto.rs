//! `auto` or a value: options that pipe can measure when the stage runs.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value written as `auto` (measured when the stage runs) or given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auto<T> {
    /// Chosen by pipe when the stage runs, from the data and the machine.
    #[default]
    Auto,
    /// As written.
    Value(T),
}

impl<T: Copy> Auto<T> {
    /// The given value, if any.
    pub fn value(self) -> Option<T> {
        match self {
            Auto::Auto => None,
            Auto::Value(v) => Some(v),
        }
    }

    /// Whether this is `auto`.
    pub fn is_auto(self) -> bool {
        matches!(self, Auto::Auto)
    }
}

impl<T: Serialize> Serialize for Auto<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Auto::Auto => s.serialize_str("auto"),
            Auto::Value(v) => v.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Auto<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Value(T),
            Word(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Value(v)) => Ok(Auto::Value(v)),
            Ok(Raw::Word(w)) if w == "auto" => Ok(Auto::Auto),
            Ok(Raw::Word(w)) => Err(serde::de::Error::custom(format!(
                "expected a number or `auto`, not `{w}`"
            ))),
            Err(_) => Err(serde::de::Error::custom("expected a number or `auto`")),
        }
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Auto<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Auto_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [{"const": "auto"}, generator.subschema_for::<T>()],
            "description": "`auto` (chosen when the stage runs) or a value"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auto_and_numbers() {
        let a: Auto<u32> = serde_json::from_str("\"auto\"").unwrap();
        assert_eq!(a, Auto::Auto);
        let v: Auto<u32> = serde_json::from_str("8").unwrap();
        assert_eq!(v, Auto::Value(8));
        let e = serde_json::from_str::<Auto<u32>>("\"big\"").unwrap_err();
        assert!(e.to_string().contains("not `big`"), "{e}");
        assert_eq!(
            serde_json::to_string(&Auto::<u32>::Auto).unwrap(),
            "\"auto\""
        );
    }
}
