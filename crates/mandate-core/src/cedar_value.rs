//! Free JSON (arguments, params, attributes) into Cedar values.
//!
//! Cedar has no null and no floating point, so the mapping is explicit:
//! null means absent, integers are `Long`, other numbers are `decimal` when
//! Cedar can hold them exactly (at most four fractional digits). Any other
//! number is never silently changed: it becomes an [unrepresentable]
//! placeholder, which the projection onto the pack's schema drops when the
//! schema does not declare it (no policy can read it, so it cannot matter)
//! and refuses when it does.
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
        Json::Number(n) => number(n),
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

fn number(n: &Number) -> Value {
    if let Some(i) = n.as_i64() {
        return Value::from(i);
    }
    let Some(f) = n
        .as_f64()
        .filter(|f| f.is_finite() && f.abs() < DECIMAL_LIMIT)
    else {
        return placeholder(n);
    };
    // Rust prints the shortest text that reads back as the same f64.
    let text = f.to_string();
    let text = if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    };
    let fraction = text.split_once('.').map_or(0, |(_, frac)| frac.len());
    if fraction > 4 || text.contains(['e', 'E']) {
        return placeholder(n);
    }
    extension_value(&DECIMAL, &text).unwrap_or_else(|| placeholder(n))
}

/// The record attribute that marks a number Cedar cannot hold. Request data
/// that happens to use it is treated the same way: refused where declared.
const UNREPRESENTABLE: &str = "__mandate_unrepresentable_number";

/// A number Cedar cannot hold, as it was sent.
fn placeholder(n: &Number) -> Value {
    Value::record([(UNREPRESENTABLE, Value::from(n.to_string()))], None)
}

/// The number a placeholder stands for, if `value` is one.
pub(crate) fn unrepresentable(value: &Value) -> Option<String> {
    use cedar_policy_core::ast::{Literal, ValueKind};
    let ValueKind::Record(fields) = &value.value else {
        return None;
    };
    if fields.len() != 1 {
        return None;
    }
    match &fields.get(UNREPRESENTABLE)?.value {
        ValueKind::Lit(Literal::String(text)) => Some(text.to_string()),
        _ => None,
    }
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
    fn numbers_cedar_cannot_hold_become_placeholders_of_the_number_sent() {
        let v = convert(
            json!({"x": {"y": 0.12345}, "big": 18446744073709551615u64, "huge": 1e300, "ok": 1.5}),
        )
        .unwrap();
        let cedar_policy_core::ast::ValueKind::Record(fields) = &v.value else {
            panic!("{v}");
        };
        let of = |name: &str| unrepresentable(fields.get(name).unwrap());
        let cedar_policy_core::ast::ValueKind::Record(x) = &fields.get("x").unwrap().value else {
            panic!("{v}");
        };
        assert_eq!(
            unrepresentable(x.get("y").unwrap()).as_deref(),
            Some("0.12345")
        );
        assert_eq!(of("big").as_deref(), Some("18446744073709551615"));
        assert_eq!(of("huge").as_deref(), Some("1e+300"));
        assert_eq!(of("ok"), None);
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
