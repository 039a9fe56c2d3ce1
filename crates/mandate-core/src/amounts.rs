//! The amounts a call moves, as the tool catalog declares them
//! (`mandate/amounts`), for policies that cap amounts across tools
//! (`context.amounts`).
//!
//! Tools name and write amounts differently (`amount: 84.2`, `"total":
//! "1,190.00"`); the catalog says which arguments are amounts, and Mandate
//! reads each as a decimal of at most four fractional digits, so one rule
//! ("more than 1,000 needs a person") covers every tool. An amount that
//! cannot be read counts as the largest one there is: a limit rule fires
//! rather than waves it through.

use serde_json::{Map, Value};

use crate::provenance::{AtPath, at_path};

/// Fractional digits Cedar's `decimal` holds.
const SCALE: i64 = 10_000;

/// The amounts of one call, in ten-thousandths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CallAmounts {
    /// Whether the call sends any declared amount argument.
    pub declared: bool,
    /// The largest magnitude among them (0 without any).
    pub max: i64,
    /// Whether one of them could not be read as an amount.
    pub unreadable: bool,
}

impl CallAmounts {
    /// The amounts at `paths` (dotted) of `arguments`; an argument the
    /// call does not send is left out.
    pub(crate) fn of(arguments: &Map<String, Value>, paths: &[String]) -> Self {
        let mut amounts = CallAmounts::default();
        for path in paths {
            let value = match at_path(arguments, path) {
                AtPath::Absent => continue,
                AtPath::Found(value) => Some(value),
                AtPath::Blocked => None,
            };
            amounts.declared = true;
            match value.and_then(amount) {
                Some(units) => amounts.max = amounts.max.max(units),
                None => {
                    amounts.unreadable = true;
                    amounts.max = i64::MAX;
                }
            }
        }
        amounts
    }

    /// `max` as Cedar `decimal` text.
    pub(crate) fn max_text(self) -> String {
        format!("{}.{:04}", self.max / SCALE, self.max % SCALE)
    }
}

/// The magnitude of an amount in ten-thousandths: a JSON number, or text of
/// digits with `,` between groups of three and at most four digits after a
/// `.` (`"1,190.00"`, `"-84.2"`). `None` for anything else, or a value
/// beyond what a decimal holds.
fn amount(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(|i| i.checked_abs()?.checked_mul(SCALE))
            .or_else(|| from_text(&n.to_string())),
        Value::String(text) => from_text(text),
        _ => None,
    }
}

fn from_text(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text
        .strip_prefix('-')
        .or_else(|| text.strip_prefix('+'))
        .unwrap_or(text);
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 4 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let groups: Vec<&str> = whole.split(',').collect();
    let grouped_right = groups.iter().enumerate().all(|(i, g)| {
        !g.is_empty()
            && g.bytes().all(|b| b.is_ascii_digit())
            && (groups.len() == 1 || if i == 0 { g.len() <= 3 } else { g.len() == 3 })
    });
    if !grouped_right {
        return None;
    }
    let digits: String = groups.concat();
    let whole: i64 = digits.parse().ok()?;
    let fraction: i64 = format!("{fraction:0<4}").parse().ok()?;
    whole.checked_mul(SCALE)?.checked_add(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(arguments: Value, paths: &[&str]) -> CallAmounts {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        CallAmounts::of(arguments.as_object().unwrap(), &paths)
    }

    #[test]
    fn amounts_are_read_as_tools_write_them() {
        assert_eq!(amount(&json!(84.2)), Some(842_000));
        assert_eq!(amount(&json!(1190)), Some(11_900_000));
        assert_eq!(amount(&json!("1,190.00")), Some(11_900_000));
        assert_eq!(amount(&json!("-84.2")), Some(842_000));
        assert_eq!(amount(&json!("0.0001")), Some(1));
        for unreadable in [
            json!("1.190,00"),
            json!("12,34"),
            json!("1.23456"),
            json!("ten"),
            json!(""),
            json!(true),
            json!("99999999999999999999"),
        ] {
            assert_eq!(amount(&unreadable), None, "{unreadable}");
        }
    }

    #[test]
    fn the_largest_amount_counts_and_an_unreadable_one_is_the_largest() {
        let amounts = of(
            json!({"amount": "250.00", "fee": {"value": 1.5}}),
            &["amount", "fee.value", "tip"],
        );
        assert_eq!(
            amounts,
            CallAmounts {
                declared: true,
                max: 2_500_000,
                unreadable: false
            }
        );
        assert_eq!(amounts.max_text(), "250.0000");
        let amounts = of(json!({"amount": "about 200"}), &["amount"]);
        assert!(amounts.unreadable);
        assert_eq!(amounts.max, i64::MAX);
        assert_eq!(of(json!({}), &["amount"]), CallAmounts::default());
        // A path through a non-object is an amount Mandate cannot read.
        assert!(of(json!({"fee": "5"}), &["fee.value"]).unreadable);
    }
}
