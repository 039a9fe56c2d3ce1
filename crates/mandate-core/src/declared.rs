//! What the pack's schema declares for the request's free data, and the
//! projection of request values onto it.
//!
//! Strict validation lets a policy read only declared attributes, so values
//! the schema does not declare can never matter to a decision; they are
//! dropped before evaluation. What remains is type-checked against the schema
//! (by Cedar) before any policy runs: Cedar compares values of different types
//! as unequal rather than failing, so a mistyped value could otherwise slip
//! past a forbid that tests it with `==`.

use std::sync::Arc;

use cedar_policy::{EntityTypeName, EntityUid, Schema};
use cedar_policy_core::ast::{Value, ValueKind};
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

/// `value` with every record attribute the type does not declare removed.
pub(crate) fn project(value: &Value, ty: &Type) -> Value {
    match (&value.value, ty) {
        (ValueKind::Record(fields), Type::Record { attrs, .. }) => Value::record(
            fields.iter().filter_map(|(name, v)| {
                attrs
                    .get_attr(name)
                    .map(|declared| (name.clone(), project(v, &declared.attr_type)))
            }),
            None,
        ),
        (
            ValueKind::Set(set),
            Type::Set {
                element_type: Some(element),
            },
        ) if matches!(**element, Type::Record { .. }) => {
            Value::set(set.iter().map(|v| project(v, element)), None)
        }
        _ => value.clone(),
    }
}
