//! Free JSON (arguments, params, attributes) into Cedar values.
//!
//! Cedar has no null and no floating point, so the mapping is explicit:
//! null means absent, integers are `Long`, other numbers are `decimal` when
//! Cedar can hold them exactly enough (at most four fractional digits) and are
//! rejected otherwise, rather than silently changed.
//!
//! Values are built directly (`cedar_policy_core::ast::Value`) rather than as
//! restricted expressions that Cedar would evaluate again on every request:
//! that evaluation cost more than the policies themselves.

use std::sync::LazyLock;

use cedar_policy_core::ast::{ExtensionFunction, Name, PartialValue, Value};
use cedar_policy_core::extensions::Extensions;
use serde_json::{Map, Number};

use crate::request::RequestError;

/// How deep free JSON may nest. Deeper input is rejected at the edge.
pub const MAX_DEPTH: usize = 32;

/// Converts a JSON object into a Cedar record; `path` names it in errors.
pub(crate) fn record(
    map: &Map<String, serde_json::Value>,
    path: &str,
) -> Result<Value, RequestError> {
    record_at(map, path, 1)
}

fn record_at(
    map: &Map<String, serde_json::Value>,
    path: &str,
    depth: usize,
) -> Result<Value, RequestError> {
    if depth > MAX_DEPTH {
        return Err(RequestError::TooDeep {
            path: path.to_owned(),
            max: MAX_DEPTH,
        });
    }
    let mut fields = Vec::with_capacity(map.len());
    for (key, value) in map {
        if let Some(v) = value_at(value, &|| format!("{path}.{key}"), depth + 1)? {
            fields.push((key.as_str(), v));
        }
    }
    Ok(Value::record(fields, None))
}

fn value_at(
    value: &serde_json::Value,
    path: &dyn Fn() -> String,
    depth: usize,
) -> Result<Option<Value>, RequestError> {
    use serde_json::Value as Json;
    if depth > MAX_DEPTH {
        return Err(RequestError::TooDeep {
            path: path(),
            max: MAX_DEPTH,
        });
    }
    Ok(Some(match value {
        Json::Null => return Ok(None),
        Json::Bool(b) => Value::from(*b),
        Json::String(s) => Value::from(s.as_str()),
        Json::Number(n) => number(n, path)?,
        Json::Array(items) => {
            let mut elements = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(v) = value_at(item, &|| format!("{}[{i}]", path()), depth + 1)? {
                    elements.push(v);
                }
            }
            Value::set(elements, None)
        }
        Json::Object(map) => record_at(map, &path(), depth)?,
    }))
}

/// Largest magnitude a Cedar decimal holds (i64 with four fractional digits).
const DECIMAL_LIMIT: f64 = 922_337_203_685_477.0;

fn number(n: &Number, path: &dyn Fn() -> String) -> Result<Value, RequestError> {
    if let Some(i) = n.as_i64() {
        return Ok(Value::from(i));
    }
    let unrepresentable = || RequestError::Number {
        path: path(),
        number: n.to_string(),
    };
    let f = n
        .as_f64()
        .filter(|f| f.is_finite() && f.abs() < DECIMAL_LIMIT)
        .ok_or_else(unrepresentable)?;
    // Rust prints the shortest text that reads back as the same f64.
    let text = f.to_string();
    let text = if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    };
    let fraction = text.split_once('.').map_or(0, |(_, frac)| frac.len());
    if fraction > 4 || text.contains(['e', 'E']) {
        return Err(unrepresentable());
    }
    extension_value(&DECIMAL, &text).ok_or_else(unrepresentable)
}

/// Cedar's own constructor functions, looked up once.
pub(crate) static DECIMAL: LazyLock<Option<&'static ExtensionFunction>> =
    LazyLock::new(|| constructor("decimal"));
pub(crate) static DATETIME: LazyLock<Option<&'static ExtensionFunction>> =
    LazyLock::new(|| constructor("datetime"));

fn constructor(name: &str) -> Option<&'static ExtensionFunction> {
    let name: Name = name.parse().ok()?;
    Extensions::all_available().func(&name).ok()
}

/// Calls an extension constructor (`decimal`, `datetime`) on a string.
pub(crate) fn extension_value(
    function: &Option<&'static ExtensionFunction>,
    text: &str,
) -> Option<Value> {
    match function.as_ref()?.call(&[Value::from(text)]).ok()? {
        PartialValue::Value(v) => Some(v),
        PartialValue::Residual(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn convert(v: serde_json::Value) -> Result<Value, RequestError> {
        record(v.as_object().unwrap(), "arguments")
    }

    #[test]
    fn decimals_with_up_to_four_digits_are_kept() {
        let v = convert(json!({"amount": 12.5, "rate": 0.1234, "n": 3})).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{amount: decimal("12.5"), n: 3, rate: decimal("0.1234")}"#
        );
    }

    #[test]
    fn numbers_cedar_cannot_hold_are_rejected_with_their_path() {
        let err = convert(json!({"x": {"y": 0.12345}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "number `0.12345` at `arguments.x.y` cannot be represented in Cedar (integers must fit in 64 bits; other numbers may have at most 4 fractional digits)"
        );
        assert!(convert(json!({"big": 18446744073709551615u64})).is_err());
        assert!(convert(json!({"huge": 1e300})).is_err());
    }

    #[test]
    fn nulls_are_absent_and_arrays_are_sets() {
        let v = convert(json!({"gone": null, "to": ["a", null, "b"]})).unwrap();
        assert_eq!(v.to_string(), r#"{to: ["a", "b"]}"#);
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = json!(1);
        for _ in 0..MAX_DEPTH + 1 {
            v = json!({ "a": v });
        }
        assert!(matches!(convert(v), Err(RequestError::TooDeep { .. })));
        let mut ok = json!(1);
        for _ in 0..MAX_DEPTH - 1 {
            ok = json!({ "a": ok });
        }
        assert!(convert(ok).is_ok());
    }
}
