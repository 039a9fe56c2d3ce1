//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

const EXIT_CODES: &str = "\
Exit codes:
  0  success; for `check`, allow
  1  failures found (invalid policies, failed policy tests) or an unexpected error
  2  usage or input error (bad flags, unreadable or malformed input, a pack that does not load)
  3  `check`: deny
  4  `check`: approval required";

const SERVE_SETTINGS: &str = "\
Every option can also be set in the TOML config file (`--config`, keys named like the
options with `_`: listen, data_dir, policies, max_body_bytes, reload_interval_ms,
log_format) and from MANDATE_<KEY> environment variables. Precedence: flag, then
environment, then config file, then default. Any non-200 answer from /v1/decide
means no decision was made: the caller must deny.";

/// Runtime authorization for AI agents: decides every tool call as it is attempted,
/// with Cedar policies and live task context.
#[derive(Debug, Parser)]
#[command(name = "mandate", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the decision server (HTTP API, metrics, policy hot reload).
    #[command(after_help = SERVE_SETTINGS)]
    Serve(ServeArgs),
    /// Decide one request offline, from a JSON file, and exit with the outcome.
    #[command(after_help = EXIT_CODES)]
    Check(CheckArgs),
    /// Validate, test and inspect policy packs.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// Options of `mandate serve`. Each can also come from the config file
/// (`--config`, TOML, same names with `_`) or from `MANDATE_<NAME>`.
/// Precedence: flag, then environment, then config file, then default.
#[derive(Debug, Args, Serialize)]
pub struct ServeArgs {
    /// TOML config file
    #[arg(long, env = "MANDATE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8181] [env: MANDATE_LISTEN]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Where the server keeps its state [default: ./mandate-data] [env: MANDATE_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Policy pack directory, reloaded on change [default: DATA_DIR/policies, seeded
    /// with the example pack on first start] [env: MANDATE_POLICIES]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<PathBuf>,
    /// Largest request body accepted, in bytes [default: 1048576] [env: MANDATE_MAX_BODY_BYTES]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// How often to look for policy changes, in milliseconds [default: 1000]
    /// [env: MANDATE_RELOAD_INTERVAL_MS]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload_interval_ms: Option<u64>,
    /// Log format [default: text] [env: MANDATE_LOG_FORMAT]; the level comes from RUST_LOG
    #[arg(long, value_enum, value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The decision request (JSON, as for POST /v1/decide; `-` reads stdin).
    /// Unlike the server, it may set `context.time`.
    #[arg(value_name = "REQUEST.json")]
    pub request: PathBuf,
    /// Policy pack directory [default: the built-in example pack]
    #[arg(long, env = "MANDATE_POLICIES", value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Print the decision as JSON
    #[arg(long)]
    pub json: bool,
    /// Also show, for every policy, whether its scope matched and what each condition came to
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and validate a pack against Mandate's schema; report every problem with file and line.
    Validate(ValidateArgs),
    /// Run a pack's policy tests (DIR/tests/*.json) and report each case.
    Test(TestArgs),
    /// Print Mandate's base Cedar schema (what policies can read).
    Schema,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Policy pack directory
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Policy pack directory
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Test file, or directory of test files (`*.json`, searched recursively)
    /// [default: DIR/tests, or DIR when it has no tests/ directory]
    #[arg(long, value_name = "PATH")]
    pub tests: Option<PathBuf>,
    /// Print the results as JSON
    #[arg(long)]
    pub json: bool,
    /// List passing cases too
    #[arg(short, long)]
    pub verbose: bool,
}
