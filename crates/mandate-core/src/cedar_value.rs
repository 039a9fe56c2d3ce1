//! Free JSON (arguments, params, attributes) into Cedar values.
//!
//! Cedar has no null and no floating point, so the mapping is explicit:
//! null means absent, integers are `Long`, other numbers are `decimal` when
//! Cedar can hold them exactly enough (at most four fractional digits) and are
//! rejected otherwise, rather than silently changed.

use cedar_policy::RestrictedExpression;
use serde_json::{Map, Number, Value};

use crate::request::RequestError;

/// How deep free JSON may nest. Deeper input is rejected at the edge.
pub const MAX_DEPTH: usize = 32;

/// Converts a JSON object into a Cedar record; `path` names it in errors.
pub(crate) fn record(
    map: &Map<String, Value>,
    path: &str,
) -> Result<RestrictedExpression, RequestError> {
    record_at(map, path, 1)
}

fn record_at(
    map: &Map<String, Value>,
    path: &str,
    depth: usize,
) -> Result<RestrictedExpression, RequestError> {
    if depth > MAX_DEPTH {
        return Err(RequestError::TooDeep {
            path: path.to_owned(),
            max: MAX_DEPTH,
        });
    }
    let mut fields = Vec::with_capacity(map.len());
    for (key, value) in map {
        let child = format!("{path}.{key}");
        if let Some(v) = value_at(value, &child, depth + 1)? {
            fields.push((key.clone(), v));
        }
    }
    RestrictedExpression::new_record(fields).map_err(|e| RequestError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn value_at(
    value: &Value,
    path: &str,
    depth: usize,
) -> Result<Option<RestrictedExpression>, RequestError> {
    if depth > MAX_DEPTH {
        return Err(RequestError::TooDeep {
            path: path.to_owned(),
            max: MAX_DEPTH,
        });
    }
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => number(n, path)?,
        Value::Array(items) => {
            let mut elements = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(v) = value_at(item, &format!("{path}[{i}]"), depth + 1)? {
                    elements.push(v);
                }
            }
            RestrictedExpression::new_set(elements)
        }
        Value::Object(map) => record_at(map, path, depth)?,
    }))
}

/// Largest magnitude a Cedar decimal holds (i64 with four fractional digits).
const DECIMAL_LIMIT: f64 = 922_337_203_685_477.0;

fn number(n: &Number, path: &str) -> Result<RestrictedExpression, RequestError> {
    if let Some(i) = n.as_i64() {
        return Ok(RestrictedExpression::new_long(i));
    }
    let unrepresentable = || RequestError::Number {
        path: path.to_owned(),
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
    Ok(RestrictedExpression::new_decimal(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn convert(v: Value) -> Result<RestrictedExpression, RequestError> {
        match v {
            Value::Object(m) => record(&m, "arguments"),
            _ => unreachable!(),
        }
    }

    #[test]
    fn decimals_with_up_to_four_digits_are_kept() {
        assert!(convert(json!({"amount": 12.5, "rate": 0.1234, "n": 3})).is_ok());
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
