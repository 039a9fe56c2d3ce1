//! The gateway's configuration file (TOML): tool annotation overrides,
//! tools/list filtering, the approval wait, the task context sent when the
//! gateway decides as a configured agent (without a task credential), and
//! the clients the HTTP proxy accepts.
//!
//! ```toml
//! hide_denied_tools = true
//! approval_wait_seconds = 60
//!
//! [[clients]]                   # proxy only: who may connect
//! name = "research-agent"
//! token_sha256 = "…"            # `mandate mcp client-token` prints one
//!
//! [tools."write_file"]          # any upstream's `write_file`
//! destructive = true
//!
//! [tools."fs/read_text_file"]   # only upstream `fs`'s (wins over the above)
//! read_only = true
//! open_world = false
//!
//! [tools."mail/send_email"]     # reaches the open world, returns only a receipt
//! output = "trusted"
//! arguments = { to = "email", cc = "email" }   # destinations and their kinds
//!
//! [tools."bank/transfer"]
//! amounts = ["amount"]          # context.amounts.max
//!
//! [tools."web/fetch"]
//! text_fields = ["page"]        # free text beyond `body`, `text`, …
//!
//! [task]                        # agent mode only: sent as `context.task`
//! intent = "tidy the notes folder"
//! tools = ["read_text_file", "list_directory"]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use mandate_auth::TokenDigest;
use mandate_core::{OutputTrust, SessionId, ToolAnnotations, ValueKind};
use serde::Deserialize;
use serde_json::{Map, Value};

/// What went wrong reading the configuration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the MCP gateway config `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid MCP gateway config `{path}`: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The configuration file's contents.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Hide from `tools/list` the tools the task can never call (see
    /// [`crate::Pep::may_call`]).
    #[serde(default)]
    pub hide_denied_tools: bool,
    /// How long a call waiting for an approval is held, in seconds.
    #[serde(default)]
    pub approval_wait_seconds: Option<u64>,
    /// The person the agent acts for (agent mode: `principal.on_behalf_of`).
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// Annotation overrides, by tool name (`tool` or `server/tool`).
    #[serde(default)]
    pub tools: BTreeMap<String, AnnotationOverride>,
    /// The task context sent with every decision in agent mode.
    #[serde(default)]
    pub task: Option<TaskContext>,
    /// Agent mode: the agent's session on the Mandate server
    /// (`context.session.id`); `None`: the `[task]` id.
    #[serde(default)]
    pub session: Option<SessionId>,
    /// The clients the HTTP proxy accepts; none: any client.
    #[serde(default)]
    pub clients: Vec<ClientToken>,
    /// `wrap` only: stdio servers to run behind one endpoint, their tools
    /// named `NAME__tool` (instead of one server after `--`).
    #[serde(default)]
    pub servers: Vec<StdioServer>,
}

/// A stdio MCP server that `mandate mcp wrap` runs (`[[servers]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioServer {
    /// Its name in decisions (`action.server`) and its tools' prefix.
    pub name: String,
    /// The program.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables added to its environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A client of the HTTP proxy: a name (for the logs) and the SHA-256 of the
/// token it presents as `Proxy-Authorization: Bearer <token>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientToken {
    /// Who the client is.
    pub name: String,
    /// The SHA-256 of its token, 64 hex digits.
    pub token_sha256: TokenDigest,
}

/// Annotations that replace what an upstream says about a tool: servers can
/// lie, and these are the operator's word. Unset fields keep the upstream's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationOverride {
    /// `readOnlyHint`.
    pub read_only: Option<bool>,
    /// `destructiveHint`.
    pub destructive: Option<bool>,
    /// `idempotentHint`.
    pub idempotent: Option<bool>,
    /// `openWorldHint`.
    pub open_world: Option<bool>,
    /// Whether the tool's output is trusted content (`trusted`) or may
    /// carry anyone's (`untrusted`): what decides whether an allowed call
    /// taints the session. Unset: untrusted exactly when the tool reaches
    /// an open world. Upstreams have no say in it.
    pub output: Option<OutputTrust>,
    /// The arguments that name a destination (by dotted path) and the kind
    /// of value each names: `email`, `account`, `url`, `handle` or
    /// `phone`. Merged over what the tool's input schema says (`format`),
    /// these entries winning.
    pub arguments: Option<BTreeMap<String, ValueKind>>,
    /// Field names of the tool's output that hold free text, beyond the
    /// usual ones (`body`, `text`, `description`, …).
    pub text_fields: Option<Vec<String>>,
    /// The arguments that hold an amount, by dotted path
    /// (`context.amounts`).
    pub amounts: Option<Vec<String>>,
}

impl AnnotationOverride {
    /// Writes the set fields over `annotations`.
    pub fn apply(&self, annotations: &mut ToolAnnotations) {
        if self.output.is_some() {
            annotations.output = self.output;
        }
        if let Some(arguments) = &self.arguments {
            annotations
                .arguments
                .extend(arguments.iter().map(|(path, kind)| (path.clone(), *kind)));
        }
        if let Some(fields) = &self.text_fields {
            annotations.text_fields.clone_from(fields);
        }
        if let Some(amounts) = &self.amounts {
            annotations.amounts.clone_from(amounts);
        }
        for (hint, value) in [
            (&mut annotations.read_only_hint, self.read_only),
            (&mut annotations.destructive_hint, self.destructive),
            (&mut annotations.idempotent_hint, self.idempotent),
            (&mut annotations.open_world_hint, self.open_world),
        ] {
            if value.is_some() {
                *hint = value;
            }
        }
    }
}

/// The task context of agent mode, sent as `context.task` (see the
/// `POST /v1/decide` request in docs/http-api.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskContext {
    /// `context.task.id`.
    pub id: Option<String>,
    /// `context.task.intent`.
    pub intent: Option<String>,
    /// `context.task.tools`: bare tool names. Also what `hide_denied_tools`
    /// keeps in agent mode.
    pub tools: Option<Vec<String>>,
    /// `context.task.labels`.
    pub labels: Option<Vec<String>>,
    /// `context.task.params`.
    pub params: Option<Map<String, Value>>,
}

/// The settings written as `key = value` at the top of the file (the others
/// are tables: `[task]`, `[tools."NAME"]`, `[[clients]]`, `[[servers]]`).
const TOP_LEVEL_SETTINGS: &[&str] = &[
    "hide_denied_tools",
    "approval_wait_seconds",
    "on_behalf_of",
    "session",
];

/// A TOML error, with the commonest cause of an unknown key in a table
/// said outright: a top-level setting written below a table header, which
/// TOML puts in that table.
fn describe(error: &toml::de::Error, text: &str) -> String {
    let mut message = error.to_string().trim_end().to_owned();
    let key = error
        .message()
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key)
        .filter(|key| TOP_LEVEL_SETTINGS.contains(key));
    if let Some(key) = key {
        let before = error
            .span()
            .and_then(|span| text.get(..span.start))
            .unwrap_or_default();
        let table = before
            .lines()
            .rev()
            .map(str::trim)
            .find(|line| line.starts_with('['))
            .unwrap_or("a table");
        message.push_str(&format!(
            "\n`{key}` is a top-level setting but appears inside {table}: move it above the first table (in TOML, every key after a table header belongs to that table)"
        ));
    }
    message
}

impl GatewayConfig {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses the TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| describe(&e, text))?;
        let mut names = std::collections::HashSet::new();
        for server in &config.servers {
            if let Err(e) = mandate_core::names::server(&server.name) {
                return Err(format!("`[[servers]]`: {e}"));
            }
            if !crate::merge::prefixable(&server.name) {
                return Err(format!(
                    "`[[servers]]` name `{}` must not contain `__` nor end with `_` (its tools are named NAME__tool)",
                    server.name
                ));
            }
            if !names.insert(server.name.as_str()) {
                return Err(format!("two `[[servers]]` are named `{}`", server.name));
            }
            if server.command.trim().is_empty() {
                return Err(format!(
                    "`[[servers]]` `{}` has an empty `command`",
                    server.name
                ));
            }
        }
        config.check_names()?;
        let mut seen = std::collections::HashSet::new();
        for client in &config.clients {
            if client.name.trim().is_empty() {
                return Err("a `[[clients]]` entry has an empty `name`".to_owned());
            }
            if !seen.insert(client.token_sha256) {
                return Err(format!(
                    "client `{}` has the same `token_sha256` as another: give each client its own token",
                    client.name
                ));
            }
        }
        Ok(config)
    }

    /// Checks the names the config gives to policies, as the server will:
    /// a typo such as `Confidential` fails here, at start, rather than
    /// denying every call.
    fn check_names(&self) -> Result<(), String> {
        use mandate_core::names;
        let Some(task) = &self.task else {
            return Ok(());
        };
        for tool in task.tools.iter().flatten() {
            names::tool(tool).map_err(|e| format!("`[task]` tools: {e}"))?;
        }
        for label in task.labels.iter().flatten() {
            names::label(label).map_err(|e| format!("`[task]` labels: {e}"))?;
        }
        Ok(())
    }

    /// The client whose token is `token`, if one is configured with it.
    pub fn client(&self, token: &str) -> Option<&str> {
        let digest = TokenDigest::of(token);
        self.clients
            .iter()
            .find(|c| c.token_sha256 == digest)
            .map(|c| c.name.as_str())
    }

    /// The override for `tool` of `server`: `server/tool` wins over `tool`.
    pub fn override_for(&self, server: &str, tool: &str) -> Option<&AnnotationOverride> {
        self.tools
            .get(&format!("{server}/{tool}"))
            .or_else(|| self.tools.get(tool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_level_setting_below_a_table_is_named_as_such() {
        let error = GatewayConfig::parse(
            "[task]\nid = \"notes\"\ntools = [\"read_text_file\"]\nhide_denied_tools = true\n",
        )
        .err()
        .unwrap_or_default();
        assert!(
            error.contains(
                "`hide_denied_tools` is a top-level setting but appears inside [task]: move it above the first table"
            ),
            "{error}"
        );
        // Other unknown keys keep TOML's message alone.
        let error = GatewayConfig::parse("[task]\nnope = 1\n")
            .err()
            .unwrap_or_default();
        assert!(error.contains("unknown field `nope`"), "{error}");
        assert!(!error.contains("top-level"), "{error}");
    }

    #[test]
    fn every_top_level_setting_is_known_as_one() {
        // serde lists the fields when it meets one it does not know.
        let error = GatewayConfig::parse("unknown_probe = 1\n")
            .err()
            .unwrap_or_default();
        let tables = ["tools", "task", "clients", "servers"];
        let listed = error
            .split_once("expected one of ")
            .map(|(_, list)| list)
            .unwrap_or_default();
        let fields: Vec<&str> = listed
            .split(", ")
            .map(|f| f.trim().trim_matches('`'))
            .filter(|f| !f.is_empty())
            .collect();
        assert!(fields.len() > 4, "{error}");
        for field in fields {
            assert!(
                tables.contains(&field) || TOP_LEVEL_SETTINGS.contains(&field),
                "`{field}` is neither a table nor in TOP_LEVEL_SETTINGS"
            );
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let config = GatewayConfig::parse(
            r#"
hide_denied_tools = true
approval_wait_seconds = 5
[tools."write_file"]
destructive = true
[tools."fs/write_file"]
read_only = false
[task]
intent = "x"
tools = ["read_file"]
params = { allowed = ["a"] }
"#,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(config.hide_denied_tools);
        assert_eq!(config.approval_wait_seconds, Some(5));
        let fs = config.override_for("fs", "write_file").map(|o| o.read_only);
        assert_eq!(fs, Some(Some(false)));
        let other = config
            .override_for("git", "write_file")
            .map(|o| o.destructive);
        assert_eq!(other, Some(Some(true)));
        let mut annotations = ToolAnnotations {
            destructive_hint: Some(false),
            ..ToolAnnotations::default()
        };
        config.tools["write_file"].apply(&mut annotations);
        assert_eq!(annotations.destructive_hint, Some(true));
    }

    #[test]
    fn clients_are_known_by_their_tokens_digest() {
        let (token, digest) = mandate_auth::new_token("t_");
        let config = GatewayConfig::parse(&format!(
            "[[clients]]\nname = \"agent-a\"\ntoken_sha256 = \"{}\"\n",
            digest.to_hex()
        ))
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(config.client(&token), Some("agent-a"));
        assert_eq!(config.client(&digest.to_hex()), None);
        let twice = format!(
            "[[clients]]\nname = \"a\"\ntoken_sha256 = \"{0}\"\n[[clients]]\nname = \"b\"\ntoken_sha256 = \"{0}\"\n",
            digest.to_hex()
        );
        assert!(GatewayConfig::parse(&twice).is_err_and(|e| e.contains("same `token_sha256`")));
        let bad = GatewayConfig::parse("[[clients]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n");
        assert!(bad.is_err_and(|e| e.contains("64 hex digits")));
    }

    #[test]
    fn servers_are_named_so_that_their_tools_have_one_reading() {
        let config = GatewayConfig::parse(
            r#"
session = "research-1"
[[servers]]
name = "web"
command = "python3"
args = ["-m", "mcp_server_fetch"]
[[servers]]
name = "fs"
command = "npx"
env = { NODE_OPTIONS = "--no-warnings" }
"#,
        )
        .unwrap();
        assert_eq!(config.servers.len(), 2);
        assert_eq!(config.session.unwrap().as_str(), "research-1");
        for bad in ["a__b", "fs_", "a/b", ""] {
            let text = format!("[[servers]]\nname = \"{bad}\"\ncommand = \"x\"\n");
            assert!(GatewayConfig::parse(&text).is_err(), "{bad}");
        }
        let twice = "[[servers]]\nname = \"a\"\ncommand = \"x\"\n[[servers]]\nname = \"a\"\ncommand = \"y\"\n";
        assert!(GatewayConfig::parse(twice).is_err());
        assert!(GatewayConfig::parse("session = \"a b\"").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = GatewayConfig::parse("[tools.x]\ndestructiv = true\n").err();
        assert!(error.is_some_and(|e| e.contains("destructiv")));
    }
}
