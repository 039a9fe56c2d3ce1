//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

const EXIT_CODES: &str = "\
Exit codes:
  0  success; for `check`, allow; for `receipts verify`, the log verifies
  1  failures found (invalid policies, failed policy tests, a log that does not
     verify), for `task`, the server refused (401/403/404/409), or an unexpected error
  2  usage or input error (bad flags, unreadable or malformed input, a pack that does not
     load; for `task`, a server that cannot be reached)
  3  `check`: deny
  4  `check`: approval required";

const TASK_EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the server refused (401, 403, 404, 409: printed as `error: CODE: message`) or an
     unexpected error (any other answer, 5xx included)
  2  usage or input error: bad flags, a --param value that is not JSON, no token or an
     unreadable --token-file, a bad --server URL, a server that cannot be reached, or a
     request the server rejected as malformed (400, 413, 415, 422)";

const SERVE_SETTINGS: &str = "\
Every option can also be set in the TOML config file (`--config`, keys named like the
options with `_`: listen, data_dir, policies, max_body_bytes, reload_interval_ms,
log_format, signing_key_file, checkpoint_interval_ms, receipt_arguments,
receipt_redact, audience, resource, task_max_ttl_seconds, task_signing_key_file)
and from MANDATE_<KEY> environment variables (a list as
MANDATE_RECEIPT_REDACT='[body, payment.card]'). Precedence: flag, then
environment, then config file, then default. Any non-200 answer from /v1/decide
means no decision was made: the caller must deny.

Identity issuers (whose agents may start tasks) have no flag: set them in the config
file, one table each:

  [[issuers]]
  issuer = \"https://idp.example.com\"          # the tokens' iss (OIDC)
  jwks_file = \"/etc/mandate/idp-jwks.json\"    # the issuer's keys, read at start
  audiences = [\"https://mandate.example.com\"] # optional [default: the resource]
  on_behalf_of_claim = \"obo\"                  # optional: names the human

For a SPIFFE trust domain: kind = \"spiffe\", trust_domain = \"example.org\" and its
JWT bundle as jwks_file. Or in the environment, as a list of tables:
MANDATE_ISSUERS='[{issuer = \"https://idp.example.com\", jwks_file = \"jwks.json\"}]'.
Without any, the task endpoints answer 401 (decisions work as before).";

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
    /// Run the decision server (HTTP API, tasks, metrics, policy hot reload).
    #[command(after_help = SERVE_SETTINGS)]
    Serve(ServeArgs),
    /// Decide one request offline, from a JSON file, and exit with the outcome.
    #[command(after_help = EXIT_CODES)]
    Check(CheckArgs),
    /// Validate, test and inspect policy packs.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Export, verify and prove receipts of the decision log.
    #[command(subcommand, after_help = EXIT_CODES)]
    Receipts(ReceiptsCommand),
    /// Show or generate the receipt signing key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Start, delegate, show and end tasks on a running server (HTTP client).
    #[command(subcommand, after_help = TASK_EXIT_CODES)]
    Task(TaskCommand),
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Start a task (POST /v1/tasks) with the agent's identity token (a JWT) and
    /// print its root credential.
    #[command(after_help = TASK_EXIT_CODES)]
    Start(TaskStartArgs),
    /// Issue a narrower credential of a task for a sub-agent
    /// (POST /v1/tasks/{id}/delegate), with the delegating agent's credential.
    #[command(after_help = TASK_EXIT_CODES)]
    Delegate(TaskDelegateArgs),
    /// End a task and revoke all its credentials (DELETE /v1/tasks/{id}), with its
    /// root credential or the root agent's identity token.
    #[command(after_help = TASK_EXIT_CODES)]
    End(TaskIdArgs),
    /// Show a task, its delegation tree and its history (GET /v1/tasks/{id}), with
    /// a credential of the task or the root agent's identity token.
    #[command(after_help = TASK_EXIT_CODES)]
    Show(TaskIdArgs),
}

/// Where the server is and how to authenticate to it.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The Mandate server's base URL (plain HTTP)
    #[arg(
        long,
        env = "MANDATE_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:8181"
    )]
    pub server: String,
    /// The bearer token: an identity token (JWT) or a task credential
    #[arg(
        long,
        env = "MANDATE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Read the bearer token from FILE (surrounding whitespace is ignored); wins
    /// over --token and MANDATE_TOKEN
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the server's JSON answer
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TaskStartArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// What the task is for, in words
    #[arg(long, value_name = "TEXT")]
    pub intent: String,
    /// A tool the task may call, as `server/tool`; repeat for more
    #[arg(long = "tool", value_name = "SERVER/TOOL", required = true)]
    pub tools: Vec<String>,
    /// A label of the data in the task's scope; repeat for more
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// A task parameter, its value as JSON (`recipients='["a@example.com"]'`,
    /// `note='"text"'`); repeat for more
    #[arg(long = "param", value_name = "KEY=JSON")]
    pub params: Vec<String>,
    /// The task's lifetime in seconds (at most the server's task_max_ttl_seconds)
    #[arg(long, value_name = "SECONDS")]
    pub ttl: u64,
    /// How many delegation hops may follow the root agent [server default: 0]
    #[arg(long, value_name = "N")]
    pub max_depth: Option<u32>,
    /// Print only the credential
    #[arg(long, conflicts_with = "json")]
    pub credential_only: bool,
}

#[derive(Debug, Args)]
pub struct TaskDelegateArgs {
    /// The task's id
    #[arg(value_name = "TASK_ID")]
    pub task_id: String,
    #[command(flatten)]
    pub server: ServerArgs,
    /// The sub-agent's identity, such as its SPIFFE ID
    #[arg(long, value_name = "ID")]
    pub agent: String,
    /// A tool the sub-agent may call (a subset of the delegating credential's); repeat
    #[arg(long = "tool", value_name = "SERVER/TOOL", required = true)]
    pub tools: Vec<String>,
    /// A data label kept (a subset of the delegating credential's); repeat
    /// [default: all of them]
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// The sub-agent credential's lifetime in seconds [default: until the
    /// delegating credential expires]
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    /// Print only the credential
    #[arg(long, conflicts_with = "json")]
    pub credential_only: bool,
}

#[derive(Debug, Args)]
pub struct TaskIdArgs {
    /// The task's id
    #[arg(value_name = "TASK_ID")]
    pub task_id: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The data directory, for commands that read a gateway's state.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The gateway's data directory
    #[arg(
        long,
        env = "MANDATE_DATA_DIR",
        value_name = "DIR",
        default_value = "mandate-data"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ReceiptsCommand {
    /// Write the whole receipt log (receipts and signed checkpoints) as JSON Lines.
    /// Safe while the server runs: it reads one consistent snapshot.
    Export(ExportArgs),
    /// Check an exported log offline: every receipt signature, the Merkle tree,
    /// every checkpoint signature and the consistency between checkpoints. Names
    /// each receipt changed, removed, inserted or reordered. With `--proof`,
    /// checks one receipt bundle from `prove` or GET /v1/receipts/{id} instead.
    Verify(VerifyArgs),
    /// Print one decision's receipt with its inclusion proof and the signed
    /// checkpoint it is against (JSON), for a third party to check.
    Prove(ProveArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// Write to FILE instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the summary as JSON (on stderr when the log goes to stdout)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The export (JSON Lines from `receipts export`; `-` reads stdin), or with
    /// `--proof` a receipt bundle
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// The log's verifier key, as `mandate keys show` prints it
    #[arg(
        long,
        value_name = "KEY",
        conflicts_with = "key_file",
        required_unless_present = "key_file"
    )]
    pub key: Option<String>,
    /// File holding the log's verifier key
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// A signed checkpoint obtained earlier (GET /v1/checkpoint); the log must
    /// contain and extend it. Catches a log cut short together with its last
    /// checkpoints. Repeat for more.
    #[arg(long = "checkpoint", value_name = "FILE", conflicts_with = "proof")]
    pub checkpoints: Vec<PathBuf>,
    /// FILE is one receipt bundle (`receipts prove`, GET /v1/receipts/{id})
    #[arg(long)]
    pub proof: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProveArgs {
    /// The decision's id, as POST /v1/decide returned it
    #[arg(value_name = "DECISION_ID")]
    pub decision_id: String,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the receipt log's verifier key (signed-note format) for auditors.
    Show(KeysShowArgs),
    /// Write a new signing key to a file (mode 0600), to configure with
    /// `--signing-key-file`.
    Generate(KeysGenerateArgs),
}

#[derive(Debug, Args)]
pub struct KeysShowArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// The signing key file, if the server is configured with one
    /// [default: DATA_DIR/keys/ledger.key]
    #[arg(long, env = "MANDATE_SIGNING_KEY_FILE", value_name = "FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeysGenerateArgs {
    /// Where to write the private key; never overwritten
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The log's origin (the key's name), like `mandate.example.com/prod`
    /// [default: mandate.local/<random>]
    #[arg(long, value_name = "NAME")]
    pub origin: Option<String>,
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
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
    /// Receipt signing key (signed-note private key) [default: DATA_DIR/keys/ledger.key,
    /// generated on first start] [env: MANDATE_SIGNING_KEY_FILE]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
    /// Longest wait before new receipts are covered by a signed checkpoint, in
    /// milliseconds [default: 5000] [env: MANDATE_CHECKPOINT_INTERVAL_MS]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval_ms: Option<u64>,
    /// What receipts keep of the arguments: a copy (with `--receipt-redact` paths
    /// digested) or only a digest [default: copy] [env: MANDATE_RECEIPT_ARGUMENTS]
    #[arg(long, value_enum, value_name = "WHAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_arguments: Option<ReceiptArguments>,
    /// Argument path kept only as a digest in receipts, like `body` or `payment.card`;
    /// repeat for more [env: MANDATE_RECEIPT_REDACT]
    #[arg(long = "receipt-redact", value_name = "PATH")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub receipt_redact: Vec<String>,
    /// Audience of the task credentials Mandate mints and accepts [default: mandate]
    /// [env: MANDATE_AUDIENCE]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// This server's resource identifier (RFC 8707/9728), the URL agents reach it at,
    /// and the default audience of identity tokens [default: http://LISTEN]
    /// [env: MANDATE_RESOURCE]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Longest lifetime a task may be started with, in seconds [default: 3600]
    /// [env: MANDATE_TASK_MAX_TTL_SECONDS]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_max_ttl_seconds: Option<u64>,
    /// Key that signs task credentials (hex Ed25519 private key) [default:
    /// DATA_DIR/keys/tasks.key, generated on first start] [env: MANDATE_TASK_SIGNING_KEY_FILE]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_signing_key_file: Option<PathBuf>,
}

/// What receipts keep of a call's arguments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptArguments {
    /// A copy, with redacted paths replaced by their digests.
    #[default]
    Copy,
    /// Only the digest of the arguments.
    Digest,
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
