//! What the pack's schema declares for the request's free data, and the
//! projection of request values onto it.
//!
//! Strict validation lets a policy read only declared attributes, so values
//! the schema does not declare can never matter to a decision; they are
//! dropped before evaluation. What remains is type-checked against the schema
//! before any policy runs: Cedar compares values of different types
//! as unequal rather than failing, so a mistyped value could otherwise slip
//! past a forbid that tests it with `==`.

use std::sync::Arc;

use cedar_policy::{EntityTypeName, EntityUid, Schema};
use cedar_policy_core::ast::{Literal, Value, ValueKind};
use cedar_policy_core::validator::types::Type;

/// The declared types of the four open parts of a request.
#[derive(Debug, Clone)]
pub(crate) struct DeclaredTypes {
    pub agent_attributes: Arc<Type>,
    pub arguments: Arc<Type>,
    pub task_params: Arc<Type>,
    pub extra: Arc<Type>,
}

fn attribute(ty: &Type, name: &str) -> Option<Arc<Type>> {
    match ty {
        Type::Record { attrs, .. } => attrs.get_attr(name).map(|a| Arc::clone(&a.attr_type)),
        _ => None,
    }
}

impl DeclaredTypes {
    /// Reads the declared types from a composed schema; `None` if the base
    /// schema's shape is not what Mandate expects (a bug, reported at load).
    pub(crate) fn from_schema(
        schema: &Schema,
        call_tool: &EntityUid,
        agent: &EntityTypeName,
    ) -> Option<Self> {
        let validator = schema.as_ref();
        let context = validator.context_type(&call_tool.clone().into())?;
        let agent_attributes = validator
            .get_entity_type(agent.as_ref())?
            .attr("attributes")
            .map(|a| Arc::clone(&a.attr_type))?;
        let task = attribute(context, "task")?;
        Some(Self {
            agent_attributes,
            arguments: attribute(context, "arguments")?,
            task_params: attribute(&task, "params")?,
            extra: attribute(context, "extra")?,
        })
    }
}

/// `value` with every record attribute the type does not declare removed,
/// and the rest checked against the declared type. `path` names the value in
/// the error, which says where and what was expected.
pub(crate) fn project(value: &Value, ty: &Type, path: &str) -> Result<Value, String> {
    project_at(value, ty, &|| path.to_owned())
}

/// [`project`] with the path built only when there is an error to report
/// (this runs on every decision).
fn project_at(value: &Value, ty: &Type, path: &dyn Fn() -> String) -> Result<Value, String> {
    // A number Cedar cannot hold is refused only here, where the schema
    // declares it and a policy could read it.
    if let Some(number) = crate::cedar_value::unrepresentable(value) {
        return Err(format!(
            "number `{number}` at `{}` cannot be represented in Cedar, and the policy pack's schema declares it (integers must fit in 64 bits; decimals may have at most 4 fractional digits)",
            path()
        ));
    }
    let mismatch = |expected: &str| {
        Err(format!(
            "`{}` must be {expected}, as the policy pack's schema declares, but is `{value}`",
            path()
        ))
    };
    match (&value.value, ty) {
        (ValueKind::Record(fields), Type::Record { attrs, .. }) => {
            let mut kept = Vec::with_capacity(fields.len());
            for (name, v) in fields.iter() {
                if let Some(declared) = attrs.get_attr(name) {
                    let child = || format!("{}.{name}", path());
                    kept.push((name.clone(), project_at(v, &declared.attr_type, &child)?));
                }
            }
            for (name, declared) in attrs.iter() {
                if declared.is_required && !fields.contains_key(name) {
                    return Err(format!(
                        "`{}.{name}` is required by the policy pack's schema but missing",
                        path()
                    ));
                }
            }
            Ok(Value::record(kept, None))
        }
        (ValueKind::Set(set), Type::Set { element_type }) => match element_type.as_deref() {
            None => Ok(value.clone()),
            Some(element) => {
                // Sets are unordered: name the element by its value, not a position.
                let mut items = Vec::with_capacity(set.len());
                let each = || format!("{}[*]", path());
                for v in set.iter() {
                    items.push(project_at(v, element, &each)?);
                }
                Ok(Value::set(items, None))
            }
        },
        (ValueKind::Lit(Literal::Bool(_)), Type::Bool(_))
        | (ValueKind::Lit(Literal::Long(_)), Type::Long)
        | (ValueKind::Lit(Literal::String(_)), Type::String) => Ok(value.clone()),
        (ValueKind::ExtensionValue(ext), Type::ExtensionType { name })
            if &ext.typename() == name =>
        {
            Ok(value.clone())
        }
        (_, Type::Record { .. }) => mismatch("a record"),
        (_, Type::Set { .. }) => mismatch("a set"),
        (_, Type::Bool(_)) => mismatch("a boolean"),
        (_, Type::Long) => mismatch("an integer"),
        (_, Type::String) => mismatch("a string"),
        (_, Type::ExtensionType { name }) => mismatch(&format!(
            "a `{name}`, which request data cannot carry (Mandate makes only `decimal` values, from JSON numbers)"
        )),
        (_, Type::Entity(_) | Type::Never) => {
            mismatch("an entity reference, which request data cannot carry")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undeclared_attributes_are_dropped_and_declared_ones_checked() {
        let schema = crate::schema::compose(Some(
            "type Arguments = { to?: String, n?: Long, tags?: Set<String> };",
        ))
        .map_err(|e| e.message)
        .unwrap();
        let names = &*crate::evaluate::NAMES;
        let declared = DeclaredTypes::from_schema(&schema, &names.call_tool, &names.agent).unwrap();
        let record = |v: serde_json::Value| {
            crate::cedar_value::record(v.as_object().unwrap(), "arguments").unwrap()
        };

        let kept = project(
            &record(serde_json::json!({"to": "a", "body": "b", "tags": ["x"]})),
            &declared.arguments,
            "arguments",
        );
        assert_eq!(kept.unwrap().to_string(), r#"{tags: ["x"], to: "a"}"#);

        let err = project(
            &record(serde_json::json!({"tags": ["x", 1]})),
            &declared.arguments,
            "arguments",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "`arguments.tags[*]` must be a string, as the policy pack's schema declares, but is `1`"
        );
        let err = project(
            &record(serde_json::json!({"n": "5"})),
            &declared.arguments,
            "arguments",
        )
        .unwrap_err();
        assert!(err.starts_with("`arguments.n` must be an integer"), "{err}");
    }
}
