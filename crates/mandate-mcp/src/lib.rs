//! Mandate's MCP gateway: a policy enforcement point in front of MCP
//! servers. Every `tools/call` is decided by a running Mandate server
//! (`POST /v1/decide`) before it reaches the MCP server; everything else is
//! relayed as it came.
//!
//! * [`stdio::wrap`]: the stdio wrapper (`mandate mcp wrap -- CMD ARGS…`),
//!   an MCP server to its client that runs the real server as a child.
//! * [`stdio::wrap_servers`]: several stdio servers behind one stdio
//!   endpoint (`mandate mcp wrap` with `[[servers]]` in its config), their
//!   tools named `NAME__tool` ([`merge`]).
//! * [`http::serve`]: the streamable HTTP proxy (`mandate mcp proxy`), in
//!   front of one or more MCP servers reached over streamable HTTP.
//! * [`Pep`]: asking for decisions, waiting for approvals, recording
//!   results; fail closed on any trouble.
//! * [`meta`]: the decision behind each `tools/call` answer, told to the
//!   client in the result's `_meta` under `mandate/decision`.
//!
//! See `docs/mcp.md` for how to run it and `docs/design-decisions.md` for why
//! it relays JSON-RPC messages itself and uses `rmcp` for the protocol's
//! types only.

pub mod catalog;
pub mod config;
pub mod credential;
pub mod frame;
pub mod http;
pub mod jsonrpc;
pub mod merge;
pub mod meta;
pub mod pep;
pub mod stdio;
pub mod trace;

pub use config::{ConfigError, GatewayConfig, StdioServer};
pub use credential::TaskCredential;
pub use meta::{DECISION_KEY, DecisionMeta};
pub use pep::{Pep, PepSettings, Principal};
