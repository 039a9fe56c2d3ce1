//! JSON read strictly, for everything Mandate reads from a caller or an
//! auditor: each name at most once per object, and a struct only from an
//! object.
//!
//! RFC 8259 leaves duplicate names to the parser, and parsers disagree:
//! serde keeps the last, others keep the first. Where one party checks a
//! message and another acts on it (a policy decides on `to`, the tool sends
//! to `to`; an auditor verifies a receipt another program displays), a
//! duplicate lets each see a different value, so [`from_slice`] refuses
//! them at any depth. RFC 8785 (the canonical form receipts are signed in)
//! requires unique names too.
//!
//! serde's derived structs also accept a JSON array, read field by field in
//! declaration order. Nobody writes requests that way on purpose, and
//! positional fields silently change meaning when a field is added, so
//! [`from_value`] builds structs from objects only.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    Visitor,
};
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

/// The largest integer magnitude JSON numbers carry exactly everywhere:
/// 2^53 − 1. RFC 8785 (the canonical form receipts and their digests are
/// made in) writes numbers as IEEE 754 doubles, and so do JavaScript and
/// many other readers; beyond this, two integers share one double.
pub const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// An integer beyond [`MAX_EXACT_INTEGER`]: the path of the number and the
/// number as sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{path}`: the integer {number} is beyond ±{MAX_EXACT_INTEGER} (2^53 − 1), the largest that receipts (RFC 8785 JSON) record exactly; send it as a string"
)]
pub struct InexactNumberError {
    path: String,
    number: String,
}

impl InexactNumberError {
    /// Where the number is, such as `arguments.amount` or `a[2]`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Refuses an integer, at any depth, whose magnitude is beyond
/// [`MAX_EXACT_INTEGER`]. Numbers with a fraction or an exponent were read
/// as doubles already, so they are what the canonical form writes.
pub fn check_exact_numbers(value: &Value) -> Result<(), InexactNumberError> {
    check_numbers_at(value, &Path::Root)
}

fn check_numbers_at(value: &Value, at: &Path<'_>) -> Result<(), InexactNumberError> {
    match value {
        Value::Number(n) => {
            let magnitude = n.as_u64().or_else(|| n.as_i64().map(i64::unsigned_abs));
            if magnitude.is_some_and(|m| m > MAX_EXACT_INTEGER) {
                return Err(InexactNumberError {
                    path: at.to_string(),
                    number: n.to_string(),
                });
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_numbers_at(item, &Path::Index(at, i))),
        Value::Object(object) => object
            .iter()
            .try_for_each(|(key, item)| check_numbers_at(item, &Path::Key(at, key))),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

/// Why [`from_value`] could not build the type: the path of the value and
/// what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(serde_path_to_error::Error<serde_json::Error>);

/// Builds `T` from `value` as `serde_json::from_value` does, except that a
/// struct (at any depth) must be a JSON object, never an array read
/// positionally. The error names the path of the value that does not fit.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ShapeError> {
    serde_path_to_error::deserialize(Strict(value)).map_err(ShapeError)
}

/// A [`Value`] as a deserializer whose structs come from objects only.
struct Strict(Value);

/// What a JSON value is, for type errors.
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Unexpected::Unsigned(u),
            (_, Some(i), _) => Unexpected::Signed(i),
            (_, _, f) => Unexpected::Float(f.unwrap_or_default()),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

impl<'de> de::Deserializer<'de> for Strict {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => {
                let length = items.len();
                let mut seq = StrictSeq(items.into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                if seq.0.len() == 0 {
                    Ok(value)
                } else {
                    Err(de::Error::invalid_length(length, &"fewer elements"))
                }
            }
            Value::Object(object) => visitor.visit_map(StrictMap {
                entries: object.into_iter(),
                value: None,
            }),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(object) => visitor.visit_map(StrictMap {
                entries: object.into_iter(),
                value: None,
            }),
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a JSON object with named fields",
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Strict(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // The API's enums are names (`"allow"`, `"ok"`); serde_json's own
        // handling of them is the strict one already.
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
        ignored_any
    }
}

struct StrictSeq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for StrictSeq {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|item| seed.deserialize(Strict(item)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct StrictMap {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for StrictMap {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(IntoDeserializer::<serde_json::Error>::into_deserializer(
            key,
        ))
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| <serde_json::Error as de::Error>::custom("a value was read twice"))?;
        seed.deserialize(Strict(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

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

    #[test]
    fn integers_beyond_two_to_the_53_are_refused_with_their_path() {
        let ok = serde_json::json!({"a": [9007199254740991u64, -9007199254740991i64, 1.5e300]});
        assert!(check_exact_numbers(&ok).is_ok());
        for (value, path) in [
            (serde_json::json!({"n": 9007199254740993u64}), "n"),
            (
                serde_json::json!({"a": {"b": [0, -9007199254740993i64]}}),
                "a.b[1]",
            ),
            (serde_json::json!({"x": u64::MAX}), "x"),
        ] {
            assert_eq!(check_exact_numbers(&value).unwrap_err().path(), path);
        }
        assert_eq!(
            check_exact_numbers(&serde_json::json!({"n": 9007199254740993u64}))
                .unwrap_err()
                .to_string(),
            "`n`: the integer 9007199254740993 is beyond ±9007199254740991 (2^53 − 1), the largest that receipts (RFC 8785 JSON) record exactly; send it as a string"
        );
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        free: Map<String, Value>,
        maybe: Option<Inner>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        name: String,
    }

    #[test]
    fn structs_come_from_objects_only() {
        let ok: Outer = from_value(serde_json::json!({
            "inner": {"name": "a"}, "list": [{"name": "b"}], "free": {"x": [1, {"y": 2}]},
            "maybe": null,
        }))
        .unwrap();
        assert_eq!(ok.list, vec![Inner { name: "b".into() }]);
        assert_eq!(ok.free["x"], serde_json::json!([1, {"y": 2}]));
        // serde_json itself would read these arrays field by field.
        for (value, message) in [
            (
                serde_json::json!([{"name": "a"}]),
                "invalid type: sequence, expected a JSON object with named fields",
            ),
            (
                serde_json::json!({"inner": ["a"]}),
                "inner: invalid type: sequence, expected a JSON object with named fields",
            ),
            (
                serde_json::json!({"inner": {"name": "a"}, "list": [["b"]]}),
                "list[0]: invalid type: sequence, expected a JSON object with named fields",
            ),
            (
                serde_json::json!({"inner": {"name": "a"}, "maybe": ["c"]}),
                "maybe: invalid type: sequence, expected a JSON object with named fields",
            ),
        ] {
            let err = from_value::<Outer>(value).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        let err =
            from_value::<Outer>(serde_json::json!({"inner": {"name": "a"}, "x": 1})).unwrap_err();
        assert!(err.to_string().starts_with("x: unknown field `x`"), "{err}");
    }
}
