//! What a task credential says about itself, read **without verifying it**:
//! who holds it (the principal the gateway must name in its decision
//! requests) and which tools it grants (what `hide_denied_tools` keeps).
//!
//! Nothing here is trusted. The Mandate server verifies the credential on
//! every `POST /v1/decide` and refuses a principal that is not its holder
//! (`403`, a deny here) and a tool the credential does not grant
//! (`mandate:credential-scope`, a deny). Reading the facts locally only
//! saves the operator from repeating the agent's identity, and lets
//! `tools/list` hide what the server would refuse anyway.
//!
//! The facts follow the credential format of `mandate-auth`: block `d` holds
//! `hop("<agent>", d)` and `hop_tool(d, "<server/tool>")`.

use std::collections::BTreeSet;

use biscuit_auth::UnverifiedBiscuit;

/// A task credential and what it claims.
#[derive(Clone)]
pub struct TaskCredential {
    token: String,
    /// The last hop's agent: the credential's holder.
    pub holder: String,
    /// The tools every hop grants (`server/tool`).
    pub tools: BTreeSet<String>,
}

impl std::fmt::Debug for TaskCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCredential")
            .field("holder", &self.holder)
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

/// A credential that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("the task credential cannot be read: {0}")]
pub struct CredentialReadError(String);

impl TaskCredential {
    /// Reads a credential (base64url Biscuit, surrounding whitespace ignored).
    pub fn read(token: &str) -> Result<Self, CredentialReadError> {
        let token = token.trim();
        let biscuit = UnverifiedBiscuit::from_base64(token)
            .map_err(|e| CredentialReadError(e.to_string()))?;
        let mut holder: Option<(i64, String)> = None;
        let mut tools: Option<BTreeSet<String>> = None;
        for index in 0..biscuit.block_count() {
            let source = biscuit
                .print_block_source(index)
                .map_err(|e| CredentialReadError(e.to_string()))?;
            let mut block_tools = BTreeSet::new();
            let mut is_hop = false;
            for line in source.lines() {
                let line = line.trim();
                if let Some(rest) = line.strip_prefix("hop(") {
                    if let Some((agent, rest)) = string_literal(rest) {
                        let depth = rest
                            .trim_start_matches([',', ' '])
                            .trim_end_matches([')', ';'])
                            .parse::<i64>()
                            .unwrap_or(-1);
                        is_hop = true;
                        if holder.as_ref().is_none_or(|(d, _)| depth >= *d) {
                            holder = Some((depth, agent));
                        }
                    }
                } else if let Some(rest) = line.strip_prefix("hop_tool(")
                    && let Some((_, rest)) = rest.split_once(", ")
                    && let Some((tool, _)) = string_literal(rest)
                {
                    block_tools.insert(tool);
                }
            }
            if is_hop {
                tools = Some(match tools {
                    None => block_tools,
                    Some(tools) => tools.intersection(&block_tools).cloned().collect(),
                });
            }
        }
        let (_, holder) = holder
            .ok_or_else(|| CredentialReadError("it names no agent (`hop` fact)".to_owned()))?;
        Ok(Self {
            token: token.to_owned(),
            holder,
            tools: tools.unwrap_or_default(),
        })
    }

    /// The token, for `Authorization: Bearer …`.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// Reads a Datalog string literal at the start of `text`; returns it and
/// the rest after the closing quote.
fn string_literal(text: &str) -> Option<(String, &str)> {
    let text = text.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, text.get(i + 1..)?)),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals() {
        assert_eq!(
            string_literal(r#""a\"b", 1)"#),
            Some(("a\"b".to_owned(), ", 1)"))
        );
        assert_eq!(string_literal("x"), None);
        assert_eq!(string_literal("\"open"), None);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(TaskCredential::read("not a credential").is_err());
    }
}
