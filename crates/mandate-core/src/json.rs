//! JSON read strictly, for everything Mandate reads from a caller or an
//! auditor: each name at most once per object.
//!
//! RFC 8259 leaves duplicate names to the parser, and parsers disagree:
//! serde keeps the last, others keep the first. Where one party checks a
//! message and another acts on it (a policy decides on `to`, the tool sends
//! to `to`; an auditor verifies a receipt another program displays), a
//! duplicate lets each see a different value, so [`from_slice`] refuses
//! them at any depth. RFC 8785 (the canonical form receipts are signed in)
//! requires unique names too.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a JSON text was refused by [`from_slice`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The text is not JSON.
    #[error(transparent)]
    Syntax(SyntaxError),
    /// An object has the same name twice.
    #[error(transparent)]
    DuplicateKey(DuplicateKeyError),
}

/// The text is not JSON; the message says where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(serde_json::Error);

/// An object has the same name twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duplicate key `{key}` in {at}")]
pub struct DuplicateKeyError {
    key: String,
    at: String,
}

impl DuplicateKeyError {
    /// The repeated name.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Parses a JSON text, refusing an object that has the same name twice, at
/// any depth.
pub fn from_slice(bytes: &[u8]) -> Result<Value, ParseError> {
    let found = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = UniqueSeed {
        at: &Path::Root,
        found: &found,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, found.take()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(duplicate)) => Err(ParseError::DuplicateKey(duplicate)),
        (Err(e), None) => Err(ParseError::Syntax(SyntaxError(e))),
    }
}

/// Where in a document a value is, for messages.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => write!(f, "{key}"),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Builds a [`Value`] as serde_json does, but fails on a repeated name and
/// leaves the name and its place in `found`.
struct UniqueSeed<'a> {
    at: &'a Path<'a>,
    found: &'a Cell<Option<DuplicateKeyError>>,
}

impl<'de> DeserializeSeed<'de> for UniqueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json's own `Value`: JSON text has no infinities or NaN.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(UniqueSeed {
            at: &Path::Index(self.at, items.len()),
            found: self.found,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let at = match self.at {
                    Path::Root => "the top-level object".to_owned(),
                    at => format!("`{at}`"),
                };
                let duplicate = DuplicateKeyError { key, at };
                let message = duplicate.to_string();
                self.found.set(Some(duplicate));
                return Err(de::Error::custom(message));
            }
            let value = map.next_value_seed(UniqueSeed {
                at: &Path::Key(self.at, &key),
                found: self.found,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Why [`from_value`] could not build the type: the path of the value and
/// what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(serde_path_to_error::Error<serde_json::Error>);

/// Builds `T` from `value` as `serde_json::from_value` does; the error names
/// the path of the value that does not fit.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ShapeError> {
    serde_path_to_error::deserialize(value).map_err(ShapeError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(from_slice(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_ok());
        for (text, message) in [
            (
                r#"{"method":"tools/call","method":"ping"}"#,
                "duplicate key `method` in the top-level object",
            ),
            (
                r#"{"arguments":{"to":"mallory@evil.example","to":"carol@example.com"}}"#,
                "duplicate key `to` in `arguments`",
            ),
            (
                r#"{"a":[{"x":1},{"y":2,"y":3}]}"#,
                "duplicate key `y` in `a[1]`",
            ),
        ] {
            match from_slice(text.as_bytes()) {
                Err(ParseError::DuplicateKey(e)) => assert_eq!(e.to_string(), message),
                other => panic!("{text}: {other:?}"),
            }
        }
        // The same key in sibling objects is fine.
        assert!(from_slice(br#"{"a":{"k":1},"b":{"k":2},"c":[{"k":3},{"k":4}]}"#).is_ok());
        assert!(matches!(
            from_slice(b"not json"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(from_slice(b"{} {}"), Err(ParseError::Syntax(_))));
        assert!(matches!(from_slice(b""), Err(ParseError::Syntax(_))));
    }

    #[test]
    fn parses_what_serde_json_parses() {
        let text =
            r#"{"a":[1,-2,3.5,"s",null,true,{"b":{}}],"big":18446744073709551615,"e":1e300}"#;
        let strict = from_slice(text.as_bytes()).unwrap();
        let loose: Value = serde_json::from_str(text).unwrap();
        assert_eq!(strict, loose);
    }
}
