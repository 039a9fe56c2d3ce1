//! `google.protobuf.Struct` and JSON: the free-form parts of a gRPC request
//! (arguments, context, attributes, annotations) become the JSON the HTTP
//! API reads, so that one parser checks both.
//!
//! Protobuf numbers are doubles. A whole number within ±(2^53 − 1) becomes
//! a JSON integer (what a JSON client would have sent); any other finite
//! number stays a double; NaN and the infinities, which JSON cannot write,
//! are refused, as is a whole number beyond ±(2^53 − 1), which a double
//! does not hold exactly.

use mandate_core::json::MAX_EXACT_INTEGER;
use prost_types::value::Kind;
use prost_types::{Struct, Value as PbValue};
use serde_json::{Map, Number, Value};

/// A number JSON (or a receipt) cannot carry as sent.
#[derive(Debug, thiserror::Error)]
#[error("`{path}`: {problem}")]
pub(crate) struct NumberError {
    path: String,
    problem: &'static str,
}

/// `fields` as a JSON object; `at` names it in errors.
pub(crate) fn object(fields: Option<Struct>, at: &str) -> Result<Map<String, Value>, NumberError> {
    fields
        .map(|s| {
            s.fields
                .into_iter()
                .map(|(key, value)| {
                    let path = format!("{at}.{key}");
                    json(value, &path).map(|value| (key, value))
                })
                .collect()
        })
        .transpose()
        .map(Option::unwrap_or_default)
}

fn json(value: PbValue, at: &str) -> Result<Value, NumberError> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => Value::Number(number(n, at)?),
        Some(Kind::StructValue(s)) => Value::Object(object(Some(s), at)?),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(i, v)| json(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn number(n: f64, at: &str) -> Result<Number, NumberError> {
    let refuse = |problem| NumberError {
        path: at.to_owned(),
        problem,
    };
    if !n.is_finite() {
        return Err(refuse("NaN and the infinities are not JSON numbers"));
    }
    if n.fract() == 0.0 {
        if n.abs() > MAX_EXACT_INTEGER as f64 {
            return Err(refuse(
                "a whole number beyond ±(2^53 − 1) is not carried exactly; send it as a string",
            ));
        }
        // Exact: a whole double within ±(2^53 − 1) is an i64.
        return Ok(Number::from(n as i64));
    }
    Number::from_f64(n).ok_or_else(|| refuse("not a JSON number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn value(kind: Kind) -> PbValue {
        PbValue { kind: Some(kind) }
    }

    #[test]
    fn numbers_become_what_a_json_client_would_send() {
        let fields = BTreeMap::from([
            ("whole".to_owned(), value(Kind::NumberValue(42.0))),
            ("negative".to_owned(), value(Kind::NumberValue(-7.0))),
            ("fraction".to_owned(), value(Kind::NumberValue(2.5))),
            (
                "list".to_owned(),
                value(Kind::ListValue(prost_types::ListValue {
                    values: vec![
                        value(Kind::StringValue("a".into())),
                        value(Kind::BoolValue(true)),
                    ],
                })),
            ),
            ("null".to_owned(), value(Kind::NullValue(0))),
        ]);
        let object = object(Some(Struct { fields }), "arguments").unwrap();
        assert_eq!(
            Value::Object(object),
            serde_json::json!({"whole": 42, "negative": -7, "fraction": 2.5, "list": ["a", true], "null": null})
        );
        assert_eq!(serde_json::json!(42).to_string(), "42");
    }

    #[test]
    fn numbers_json_cannot_carry_exactly_are_refused_with_their_path() {
        for (n, what) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "infinities"),
            (9_007_199_254_740_992.0, "2^53"),
        ] {
            let fields = BTreeMap::from([(
                "inner".to_owned(),
                value(Kind::StructValue(Struct {
                    fields: BTreeMap::from([("n".to_owned(), value(Kind::NumberValue(n)))]),
                })),
            )]);
            let error = object(Some(Struct { fields }), "context").unwrap_err();
            let message = error.to_string();
            assert!(message.starts_with("`context.inner.n`"), "{message}");
            assert!(message.contains(what), "{message}");
        }
        let edge = BTreeMap::from([(
            "n".to_owned(),
            value(Kind::NumberValue(9_007_199_254_740_991.0)),
        )]);
        assert_eq!(
            Value::Object(object(Some(Struct { fields: edge }), "a").unwrap()),
            serde_json::json!({"n": 9_007_199_254_740_991_i64})
        );
    }

    #[test]
    fn an_absent_struct_is_an_empty_object() {
        assert!(object(None, "arguments").unwrap().is_empty());
    }
}
