//! Mandate's Cedar schema, and how a policy pack extends it.
//!
//! The base schema (`schema/mandate.cedarschema` in the repository) fixes the
//! shape of every request. Four record types are left open for the pack:
//! [`OPEN_TYPES`]. A pack defines the ones its policies read in its own schema
//! file, in the empty namespace; Mandate defines the rest as empty records, so
//! strict validation rejects a policy that reads an undeclared argument.

use cedar_policy::{Schema, SchemaFragment};

/// The base schema, as published in `schema/mandate.cedarschema`.
pub const BASE_SCHEMA: &str = include_str!("../../../schema/mandate.cedarschema");

/// The record types a policy pack may define: the call's arguments, the task's
/// free parameters, the agent's free attributes and the caller's extra context.
pub const OPEN_TYPES: [&str; 4] = ["Arguments", "TaskParams", "AgentAttributes", "Extra"];

/// File name of a pack's schema extension.
pub const PACK_SCHEMA_FILE: &str = "schema.cedarschema";

/// A schema problem: message and, where known, the byte offset in the extension text.
#[derive(Debug, Clone)]
pub(crate) struct SchemaProblem {
    pub message: String,
    pub offset: Option<usize>,
}

impl SchemaProblem {
    fn from_diagnostic(d: &dyn miette::Diagnostic) -> Self {
        let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
        let mut message = d.to_string();
        if let Some(help) = d.help() {
            message.push_str(&format!(" ({help})"));
        }
        Self { message, offset }
    }
}

/// Builds the full schema from the base and an optional pack extension.
pub(crate) fn compose(extension: Option<&str>) -> Result<Schema, SchemaProblem> {
    let base = SchemaFragment::from_cedarschema_str(BASE_SCHEMA)
        .map(|(fragment, _warnings)| fragment)
        .map_err(|e| SchemaProblem {
            message: format!("base schema: {e}"),
            offset: None,
        })?;
    let mut text = extension.unwrap_or_default().to_owned();
    let defined = match extension {
        Some(ext) => {
            let (fragment, _warnings) = SchemaFragment::from_cedarschema_str(ext)
                .map_err(|e| SchemaProblem::from_diagnostic(&e))?;
            defined_common_types(fragment)?
        }
        None => Vec::new(),
    };
    // Appended at the end, so offsets of problems in the pack's own text hold.
    for open in OPEN_TYPES {
        if !defined.iter().any(|d| d == open) {
            text.push_str(&format!("\ntype {open} = {{}};"));
        }
    }
    let (extension, _warnings) = SchemaFragment::from_cedarschema_str(&text)
        .map_err(|e| SchemaProblem::from_diagnostic(&e))?;
    Schema::from_schema_fragments([base, extension]).map_err(|e| SchemaProblem::from_diagnostic(&e))
}

/// Common types a fragment defines in the empty namespace.
fn defined_common_types(fragment: SchemaFragment) -> Result<Vec<String>, SchemaProblem> {
    let json = fragment.to_json_value().map_err(|e| SchemaProblem {
        message: e.to_string(),
        offset: None,
    })?;
    Ok(json
        .get("")
        .and_then(|ns| ns.get("commonTypes"))
        .and_then(|t| t.as_object())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_schema_composes_without_an_extension() {
        compose(None).unwrap();
    }

    #[test]
    fn extension_defines_some_open_types() {
        compose(Some("type Arguments = { to?: String };")).unwrap();
    }

    #[test]
    fn broken_extension_names_the_place() {
        let err = compose(Some("type Arguments = { to?: Strin };")).unwrap_err();
        assert!(err.message.contains("Strin"), "{}", err.message);
    }
}
