//! Which of a call's arguments the pack's policies read.
//!
//! Strict validation lets a policy read only the arguments the pack's schema
//! declares, and undeclared ones are dropped before evaluation, so the
//! top-level names a policy reads through `context.arguments` are the only
//! arguments that can change a decision. An approver is shown them first:
//! they are what the pack took for the deciding facts.
//!
//! The names are found once, when the pack loads, by walking each policy's
//! JSON form for an attribute access (`.` or `has`) on `context.arguments`.
//! A policy that uses the record as a whole (`context.arguments == …`)
//! reads every declared argument.

use std::collections::BTreeSet;

use cedar_policy::Policy;
use cedar_policy_core::validator::types::Type;
use serde_json::Value;

/// The top-level argument names read by any of `policies`; `declared` is the
/// declared type of the arguments record.
pub(crate) fn arguments_read<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    declared: &Type,
) -> BTreeSet<String> {
    let mut found = Found::default();
    for policy in policies {
        if let Ok(est) = policy.to_json() {
            walk(&est, &mut found);
        }
    }
    if found.whole_record
        && let Type::Record { attrs, .. } = declared
    {
        found.names.extend(attrs.keys().map(ToString::to_string));
    }
    found.names
}

#[derive(Default)]
struct Found {
    names: BTreeSet<String>,
    whole_record: bool,
}

/// `context.arguments` in a policy's JSON form.
fn is_arguments(expr: &Value) -> bool {
    let Some(access) = expr.get(".") else {
        return false;
    };
    access.get("attr").and_then(Value::as_str) == Some("arguments")
        && access
            .get("left")
            .and_then(|left| left.get("Var"))
            .and_then(Value::as_str)
            == Some("context")
}

fn walk(value: &Value, found: &mut Found) {
    match value {
        Value::Object(map) => {
            if is_arguments(value) {
                // Reached other than through an attribute access below.
                found.whole_record = true;
                return;
            }
            for op in [".", "has"] {
                let Some(access) = map.get(op) else {
                    continue;
                };
                if let (Some(left), Some(attr)) = (
                    access.get("left"),
                    access.get("attr").and_then(Value::as_str),
                ) && is_arguments(left)
                {
                    found.names.insert(attr.to_owned());
                    return;
                }
            }
            for child in map.values() {
                walk(child, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::{PolicyPack, PolicySource};

    const SCHEMA: &str = "type Arguments = { amount?: Long, payee?: { iban: String }, \
                          memo?: String, to?: String };";

    fn pack(policies: &str) -> PolicyPack {
        PolicyPack::load(
            &[PolicySource::new("p.cedar", policies)],
            Some(&PolicySource::new("schema.cedarschema", SCHEMA)),
        )
        .unwrap()
    }

    fn read(pack: &PolicyPack) -> Vec<&str> {
        pack.arguments_read().iter().map(String::as_str).collect()
    }

    #[test]
    fn attribute_reads_and_has_tests_name_top_level_arguments() {
        let pack = pack(
            r#"permit (principal, action, resource);
               forbid (principal, action, resource)
               when { context.arguments has amount && context.arguments.amount > 1000000 };
               forbid (principal, action, resource)
               when { context.arguments has payee && context.arguments.payee.iban like "XX*" };"#,
        );
        assert_eq!(read(&pack), ["amount", "payee"]);
    }

    #[test]
    fn a_pack_that_reads_no_argument_reads_none() {
        let pack = pack(
            r#"permit (principal, action, resource) when { resource.name == "pay" };
               forbid (principal, action, resource) when { context.task.tools.isEmpty() };"#,
        );
        assert!(pack.arguments_read().is_empty());
    }

    #[test]
    fn using_the_whole_record_reads_every_declared_argument() {
        let pack = pack(
            r#"permit (principal, action, resource);
               forbid (principal, action, resource)
               when { context.arguments == context.arguments && resource.name == "x" };"#,
        );
        assert_eq!(read(&pack), ["amount", "memo", "payee", "to"]);
    }
}
