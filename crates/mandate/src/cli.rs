//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

const EXIT_CODES: &str = "\
Exit codes:
  0  success; for `check`, allow; for `receipts verify`, the log verifies; for
     `health`, the server is healthy
  1  failures found (invalid policies, failed policy tests, a log that does not
     verify), for `task` and `approvals`, the server refused (401/403/404/409), for
     `health`, a server that is not healthy or cannot be reached, or an unexpected error
  2  usage or input error (bad flags, unreadable or malformed input, a pack that does not
     load; for `task` and `approvals`, a server that cannot be reached)
  3  `check`: deny
  4  `check`: approval required
  5  `policy replay`: the candidate pack decides some journaled decision another way";

const REPLAY_EXIT_CODES: &str = "\
The journal keeps, next to each receipt, the request exactly as it was evaluated (with
the server's clock and fills; redacted as `[[journal_redact]]` says), so the candidate
sees what the live pack saw. Outcomes are compared before approvals: a gate that a
person approved is still `approval_required`. See docs/policy-lifecycle.md.

Exit codes:
  0  no decision changes
  1  an unexpected error (the journal cannot be read)
  2  usage or input error: bad flags, a candidate pack that does not load, no ledger in
     the data directory, a --from or --to decision the log does not hold
  5  changes found: the candidate decides some decision another way";

const RECEIPTS_EXIT_CODES: &str = "\
Exit codes:
  0  success; for `verify`, the export or the receipt bundle verifies
  1  `verify`: any problem found; `prove`: the receipt is not yet covered by a signed
     checkpoint; `export`: the output file cannot be created
  2  usage or input error: bad flags, no ledger in the data directory, no receipt for the
     decision id, no key or not a verifier key, an unreadable input";

const TASK_EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the server refused (401, 403, 404, 409: printed as `error: CODE: message`) or an
     unexpected error (any other answer, 5xx included)
  2  usage or input error: bad flags, a --param value that is not JSON, no token or an
     unreadable --token-file, a bad --server URL, a server that cannot be reached, or a
     request the server rejected as malformed (400, 413, 415, 422)";

const HEALTH_EXIT_CODES: &str = "\
Exit codes:
  0  the server answered and serves decisions: status `ok`, or `degraded` (the last
     policy reload was rejected; the previous policies are in force)
  1  not healthy: the server cannot be reached or did not answer within --timeout,
     answered anything but its health, or reported `failing` (its receipt log refuses
     receipts, so every decision is answered 503)
  2  usage error: bad flags, a --server that is not an http:// URL, a bad --timeout";

const STORE_EXIT_CODES: &str = "\
Exit codes:
  0  moved, and the copied log checks against its newest checkpoint
  1  PostgreSQL cannot be reached or refused a write (nothing was moved), or the copied
     log does not check
  2  usage or input error: no state.db or ledger.db in the directory, a server still
     running on it, a key that is missing or not the log's, a URL that is not
     PostgreSQL's, or a database that holds Mandate data already";

const SERVE_SETTINGS: &str = "\
Every option can also be set in the TOML config file (`--config`, keys named like the
options with `_`: listen, grpc_listen, ext_authz_listen, data_dir, store, policies,
max_body_bytes, reload_interval_ms, log_format, signing_key_file, checkpoint_interval_ms,
receipt_arguments, receipt_redact, audience, resource, task_max_ttl_seconds,
task_signing_key_file, approval_ttl_seconds, allow_self_approval, approval_webhook_url,
approval_webhook_secret, max_pending_approvals_per_agent), plus settings with no flag:
header_timeout_ms, body_timeout_ms, idle_timeout_ms, max_connections, decide_access, callers,
ext_authz_routes, otel_endpoint, otel_protocol, shadow_policies, journal,
journal_max_age_seconds, journal_max_bytes, journal_redact (docs/configuration.md)
and from MANDATE_<KEY> environment variables (a list as
MANDATE_RECEIPT_REDACT='[body, payment.card]'). Precedence: flag, then
environment, then config file, then default. Any non-200 answer from /v1/decide
means no decision was made: the caller must deny.

Identity issuers (whose agents may start tasks) have no flag: set them in the config
file, one table each:

  [[issuers]]
  issuer = \"https://idp.example.com\"          # the tokens' iss (OIDC)
  jwks_file = \"/etc/mandate/idp-jwks.json\"    # the issuer's keys, or jwks_url = \"https://…\"
  audiences = [\"https://mandate.example.com\"] # optional [default: the resource]
  on_behalf_of_claim = \"obo\"                  # optional: names the human

For a SPIFFE trust domain: kind = \"spiffe\", trust_domain = \"example.org\" and its
JWT bundle as jwks_file. Or in the environment, as a list of tables:
MANDATE_ISSUERS='[{issuer = \"https://idp.example.com\", jwks_file = \"jwks.json\"}]'.
Without any, the task endpoints answer 401 (decisions work as before). Keys are
read again every jwks_refresh_seconds (default 300) and on an unknown kid.

Downstream tools that only take JWTs get one per allowed call from POST /v1/token
(RFC 8693), if configured, one table each (or MANDATE_DOWNSTREAM='[{…}]'):

  [[downstream]]
  resource = \"https://tools.example.com/mail\"  # the tokens' aud, named exactly
  tools = [\"mail/send_email\"]                  # the tools it serves
  ttl_seconds = 60                             # optional [default: 60, at most 3600]

Approvers (people who answer calls that need approval) are tables too; each names
the SHA-256 of its token, which `mandate approvals token --name NAME` prints:

  [[approvers]]
  name = \"bob@example.com\"
  token_sha256 = \"2119bb2c…\"

Without any, calls that need approval expire into a deny (docs/approvals.md).";

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
    /// Ask a running server whether it is healthy (GET /v1/health); the exit code is
    /// the answer, for container health checks and other probes.
    #[command(after_help = HEALTH_EXIT_CODES)]
    Health(HealthArgs),
    /// Decide one request offline, from a JSON file, and exit with the outcome.
    #[command(after_help = CHECK_NOTES)]
    Check(CheckArgs),
    /// Validate, test and inspect policy packs.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Export, verify and prove receipts of the decision log.
    #[command(subcommand, after_help = RECEIPTS_EXIT_CODES)]
    Receipts(ReceiptsCommand),
    /// Show or generate the receipt signing key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Start, delegate, show and end tasks on a running server (HTTP client).
    #[command(subcommand, after_help = TASK_EXIT_CODES)]
    Task(TaskCommand),
    /// List, show, approve and deny calls waiting for a person, on a running
    /// server (HTTP client); make approver tokens.
    #[command(subcommand, after_help = TASK_EXIT_CODES)]
    Approvals(ApprovalsCommand),
    /// Put Mandate in front of MCP servers: every tools/call is decided by a running
    /// Mandate server before it reaches the MCP server (docs/mcp.md).
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Make tokens for the enforcement points that may ask for decisions without
    /// a task credential (`[[callers]]`; required beyond loopback by default).
    #[command(subcommand)]
    Callers(CallersCommand),
    /// Move a deployment between stores (docs/deployment.md).
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The Mandate server's base URL (plain HTTP, asked directly: never through a proxy)
    #[arg(
        long,
        env = "MANDATE_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:8181"
    )]
    pub server: String,
    /// How long to wait for the answer, connecting included
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub timeout: String,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a stopped single-process deployment (its data directory's state.db and
    /// ledger.db) into an empty PostgreSQL database, in one transaction, then check the
    /// copied log against its newest checkpoint. The receipts keep their indices and
    /// signatures: the log on PostgreSQL is the same log.
    #[command(after_help = STORE_EXIT_CODES)]
    Migrate(StoreMigrateArgs),
}

#[derive(Debug, Args)]
pub struct StoreMigrateArgs {
    /// The data directory to move (its server must be stopped)
    #[arg(long = "from", value_name = "DATA_DIR")]
    pub from: PathBuf,
    /// The PostgreSQL database to move it to, postgres://USER:PASSWORD@HOST:PORT/DATABASE
    /// (prefer the environment for a URL with a password)
    #[arg(long = "to", env = "MANDATE_STORE", value_name = "URL")]
    pub to: String,
    /// The receipt signing key, if the server is configured with one
    /// [default: DATA_DIR/keys/ledger.key]
    #[arg(long, env = "MANDATE_SIGNING_KEY_FILE", value_name = "FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// The task signing key, if the server is configured with one
    /// [default: DATA_DIR/keys/tasks.key]
    #[arg(long, env = "MANDATE_TASK_SIGNING_KEY_FILE", value_name = "FILE")]
    pub task_signing_key_file: Option<PathBuf>,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CallersCommand {
    /// Make a caller's token: prints it once, and the [[callers]] entry (its
    /// SHA-256) for `mandate serve`'s config file. Talks to no server.
    Token(CallersTokenArgs),
}

#[derive(Debug, Args)]
pub struct CallersTokenArgs {
    /// The caller's name, as the server's logs will show it
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Print the token and its digest as JSON
    #[arg(long)]
    pub json: bool,
    /// Write the token to FILE (mode 0600, never overwritten) instead of printing
    /// it; stdout then carries only the entry, to append to the config file
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
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

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals, newest first (GET /v1/approvals): by default the pending queue.
    #[command(after_help = TASK_EXIT_CODES)]
    List(ApprovalsListArgs),
    /// Show one approval: what was asked, by whom, and its status
    /// (GET /v1/approvals/{id}).
    #[command(after_help = TASK_EXIT_CODES)]
    Show(ApprovalShowArgs),
    /// Approve a pending approval, with a reason (POST /v1/approvals/{id}/approve).
    #[command(after_help = TASK_EXIT_CODES)]
    Approve(ApprovalResolveArgs),
    /// Deny a pending approval, with a reason (POST /v1/approvals/{id}/deny).
    #[command(after_help = TASK_EXIT_CODES)]
    Deny(ApprovalResolveArgs),
    /// Make a new random approver token and print it with the `[[approvers]]`
    /// entry (its SHA-256) for the server's config file. Talks to no server.
    Token(ApprovalTokenArgs),
}

/// Where the server is and the approver token to present.
#[derive(Debug, Args)]
pub struct ApproverArgs {
    /// The Mandate server's base URL (plain HTTP)
    #[arg(
        long,
        env = "MANDATE_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:8181"
    )]
    pub server: String,
    /// The approver token (see `mandate approvals token`)
    #[arg(
        long,
        env = "MANDATE_APPROVER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Read the approver token from FILE (surrounding whitespace is ignored);
    /// wins over --token and MANDATE_APPROVER_TOKEN
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the server's JSON answer
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ApprovalsListArgs {
    #[command(flatten)]
    pub server: ApproverArgs,
    /// Which approvals: pending, approved, denied, expired, used, withdrawn or all
    #[arg(long, value_name = "STATUS", default_value = "pending")]
    pub status: String,
    /// At most this many
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct ApprovalShowArgs {
    /// The approval's id
    #[arg(value_name = "APPROVAL_ID")]
    pub approval_id: String,
    #[command(flatten)]
    pub server: ApproverArgs,
    /// While it is pending, wait up to this long for an answer (`30s`, at most `60s`)
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApprovalResolveArgs {
    /// The approval's id
    #[arg(value_name = "APPROVAL_ID")]
    pub approval_id: String,
    #[command(flatten)]
    pub server: ApproverArgs,
    /// Why; it goes into the receipt and back to the agent
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct ApprovalTokenArgs {
    /// The approver's name, as receipts will show it (such as an email address)
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Print the token and its digest as JSON
    #[arg(long)]
    pub json: bool,
    /// Write the token to FILE (mode 0600, never overwritten) instead of printing
    /// it; stdout then carries only the entry, to append to the config file
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
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
    /// The person's instruction the task carries out; the destinations it
    /// names ground the task's calls (only their keyed digests are kept)
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// A destination the task may use (an address, account, URL, handle or
    /// phone number, or a list of them separated by `,`); repeat for more
    #[arg(long = "grounded-value", value_name = "VALUE")]
    pub grounded_values: Vec<String>,
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
    /// Export from this store instead of DATA_DIR's ledger: a postgres:// URL that
    /// instances share (`sqlite` reads DATA_DIR) [env: MANDATE_STORE]
    #[arg(long, env = "MANDATE_STORE", value_name = "STORE", hide_env = true)]
    pub store: Option<String>,
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
    /// Address to listen on, IP:PORT or HOST:PORT [default: 127.0.0.1:8181] [env:
    /// MANDATE_LISTEN]
    #[arg(long, value_name = "ADDR", value_parser = crate::listen::parse)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Also serve the decision API over gRPC (mandate.v1.DecisionService, with
    /// reflection) on this address, IP:PORT or HOST:PORT [default: off] [env:
    /// MANDATE_GRPC_LISTEN]
    #[arg(long, value_name = "ADDR", value_parser = crate::listen::parse)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    /// Also serve Envoy's ext_authz gRPC service on this address, deciding the HTTP
    /// requests that `ext_authz_routes` (config file) map to tool calls [default: off]
    /// [env: MANDATE_EXT_AUTHZ_LISTEN]
    #[arg(long, value_name = "ADDR", value_parser = crate::listen::parse)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_authz_listen: Option<SocketAddr>,
    /// Where the server keeps its state [default: ./mandate-data] [env: MANDATE_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Where state and receipts live: `sqlite` (files in DATA_DIR, one process) or
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE, shared by several instances (prefer
    /// the environment for a URL with a password; add ?sslmode=verify-full for TLS)
    /// [default: sqlite] [env: MANDATE_STORE]
    #[arg(long, value_name = "STORE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
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

/// Which policy pack a command uses: the one `mandate serve` would load,
/// found the same way (flags, then `MANDATE_*`, then the config file), unless
/// a directory is named.
#[derive(Debug, Args, Serialize)]
pub struct PackArgs {
    /// Policy pack directory [default: the pack `mandate serve` would load:
    /// `policies` from the config file, else DATA_DIR/policies, or the built-in
    /// example pack while that holds no policy] [env: MANDATE_POLICIES]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<PathBuf>,
    /// The server's data directory, whose `policies` directory is the default
    /// pack [default: ./mandate-data] [env: MANDATE_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The server's TOML config file, read for `policies` and `data_dir`
    #[arg(long, env = "MANDATE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

const PACK_NOTE: &str = "\
The pack used is named on stderr (with --json, as \"pack\" in the output). Without a
directory, it is the pack `mandate serve` would load with the same --config,
MANDATE_* variables and --data-dir: what you test is what the server decides with.";

const TEST_NOTES: &str = "\
The pack used is named on stderr (with --json, as \"pack\" in the output). Without a
directory, it is the pack `mandate serve` would load with the same --config,
MANDATE_* variables and --data-dir: what you test is what the server decides with.

--record reads each decision's request from the decision journal (of --data-dir, or
--store) and appends it as a case to DIR/tests/recorded.json (created if needed; a
decision already recorded there is skipped). The case expects the outcome the live
pack gave, with its policies, or --expect's: a surprising production decision becomes
a test that fails until the pack decides it as it should. It then runs the new cases.

Exit codes:
  0  the tests pass; with --record, the cases were written
  1  a case failed (not with --record: a new case that fails is the point)
  2  usage or input error: no test files, a pack or test file that does not load; with
     --record, no ledger, a decision the log does not hold or whose entry is not kept, a
     decision made by the credential's grant rather than by policies";

const CHECK_NOTES: &str = "\
The pack used is named on stderr (with --json, as \"pack\" in the output). Without
--policies, it is the pack `mandate serve` would load with the same --config,
MANDATE_* variables and --data-dir: the decision is the one the server would make.

Exit codes (the outcome):
  0  allow
  2  usage or input error: bad flags, an unreadable or invalid request, an unreadable
     policy directory, a pack that does not load, an invalid config file
  3  deny
  4  approval required
  1  an unexpected error";

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The decision request (JSON, as for POST /v1/decide; `-` reads stdin).
    /// Unlike the server, it may set `context.time`.
    #[arg(value_name = "REQUEST.json")]
    pub request: PathBuf,
    #[command(flatten)]
    pub pack: PackArgs,
    /// Print the decision as JSON
    #[arg(long)]
    pub json: bool,
    /// Also show, for every policy, whether it applied and why: which part of its scope did not
    /// match, or each condition's value and the part of it that decided
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and validate a pack against Mandate's schema; report every problem with file and line.
    #[command(after_help = PACK_NOTE)]
    Validate(ValidateArgs),
    /// Run a pack's policy tests (DIR/tests/*.json) and report each case; or, with
    /// --record, turn journaled decisions into test cases.
    #[command(after_help = TEST_NOTES)]
    Test(TestArgs),
    /// Print Mandate's base Cedar schema (what policies can read).
    Schema,
    /// Evaluate journaled decisions again against a candidate pack and report what would
    /// change: counts per transition, the policies responsible, explained examples.
    #[command(after_help = REPLAY_EXIT_CODES)]
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The candidate policy pack directory
    #[arg(long, value_name = "DIR")]
    pub candidate: PathBuf,
    #[command(flatten)]
    pub data: DataDirArg,
    /// Read the journal from this store instead of DATA_DIR's ledger: a postgres:// URL
    /// that instances share (`sqlite` reads DATA_DIR) [env: MANDATE_STORE]
    #[arg(long, env = "MANDATE_STORE", value_name = "STORE", hide_env = true)]
    pub store: Option<String>,
    /// Only decisions of the last SPAN (`90s`, `30m`, `24h`, `7d`, `2w`) or since a time
    /// (RFC 3339)
    #[arg(long, value_name = "SPAN", conflicts_with_all = ["from", "to"])]
    pub since: Option<String>,
    /// Only decisions from this one on (its id, as POST /v1/decide returned it)
    #[arg(long, value_name = "DECISION_ID")]
    pub from: Option<String>,
    /// Only decisions up to this one (inclusive)
    #[arg(long, value_name = "DECISION_ID")]
    pub to: Option<String>,
    /// Only decisions of this task
    #[arg(long, value_name = "TASK_ID")]
    pub task: Option<String>,
    /// Examples shown per changed transition
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub examples: usize,
    /// Recompute each task's (and agent session's) session under the candidate instead
    /// of using the recorded one: a call the candidate would not have let run never
    /// tainted it. Reports the decisions this changes. Runs on one core.
    #[arg(long)]
    pub resimulate: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Policy pack directory (the same as --policies) [default: the pack
    /// `mandate serve` would load]
    #[arg(value_name = "DIR", conflicts_with = "policies")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub pack: PackArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Policy pack directory (the same as --policies) [default: the pack
    /// `mandate serve` would load]
    #[arg(value_name = "DIR", conflicts_with = "policies")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub pack: PackArgs,
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
    /// Instead of running the tests, add these journaled decisions to the pack's tests
    /// as cases (DIR/tests/recorded.json, or the --tests file), their arguments as the
    /// journal kept them
    #[arg(long, value_name = "DECISION_ID", num_args = 1..)]
    pub record: Vec<String>,
    /// With --record: the outcome the new cases expect [default: the one the live pack
    /// gave, with its policies]
    #[arg(long, value_enum, value_name = "OUTCOME")]
    pub expect: Option<Outcome>,
    /// With --record: read the journal from this store instead of the data directory's
    /// ledger: a postgres:// URL (`sqlite` reads the data directory) [env: MANDATE_STORE]
    #[arg(long, env = "MANDATE_STORE", value_name = "STORE", hide_env = true)]
    pub store: Option<String>,
}

/// A decision's outcome, as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Outcome {
    /// `allow`
    Allow,
    /// `deny`
    Deny,
    /// `approval_required`
    #[value(name = "approval_required")]
    ApprovalRequired,
}

impl From<Outcome> for mandate_core::Decision {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Allow => Self::Allow,
            Outcome::Deny => Self::Deny,
            Outcome::ApprovalRequired => Self::ApprovalRequired,
        }
    }
}

const MCP_NOTES: &str = "\
Every tools/call is decided by the Mandate server at --gateway (POST /v1/decide).
Allowed calls go to the MCP server and their results are recorded; denied calls
never reach it and are answered with an MCP tool error (isError: true) naming the
reason and the decision id. If no decision can be had (server down, non-200
answer, timeout), the call is denied. Everything else is relayed unchanged.

Principal: with a task credential (MANDATE_TASK_CREDENTIAL or --credential-file),
decisions are made under its task and principal.id is the credential's holder
(or --agent, which must then be the holder). Without one, --agent is required and
the decisions carry the [task] context of --config and the agent's session
(--session), which the Mandate server keeps. See docs/mcp.md.";

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Wrap a stdio MCP server: be an MCP server on stdin/stdout, run the real
    /// server (the command after `--`) as a child, relay everything and decide
    /// every tools/call.
    #[command(after_help = MCP_NOTES)]
    Wrap(McpWrapArgs),
    /// Front MCP servers that speak streamable HTTP: each `--upstream NAME=URL`
    /// is served at /NAME/mcp; /mcp is the only upstream, or with several, one
    /// merged MCP server with the tools of all, named NAME__tool. Every
    /// tools/call decided.
    #[command(after_help = MCP_NOTES)]
    Proxy(McpProxyArgs),
    /// Make a token for a client of `mandate mcp proxy`: prints it once, and the
    /// [[clients]] entry (its SHA-256) for the proxy's --config file. Talks to
    /// no server.
    ClientToken(McpClientTokenArgs),
}

#[derive(Debug, Args)]
pub struct McpClientTokenArgs {
    /// The client's name, as the proxy's logs will show it
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Print the token and its digest as JSON
    #[arg(long)]
    pub json: bool,
    /// Write the token to FILE (mode 0600, never overwritten) instead of printing
    /// it; stdout then carries only the entry, to append to the config file
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// How the MCP gateway asks for decisions.
#[derive(Debug, Args)]
pub struct McpGatewayArgs {
    /// The Mandate server that decides (plain HTTP)
    #[arg(
        long,
        env = "MANDATE_GATEWAY",
        value_name = "URL",
        default_value = "http://127.0.0.1:8181"
    )]
    pub gateway: String,
    /// The agent's identity (principal.id). Required without a task credential;
    /// with one, it must be the credential's holder [default: the holder]
    #[arg(long, env = "MANDATE_AGENT", value_name = "ID")]
    pub agent: Option<String>,
    /// Without a task credential: the agent's session, kept by the Mandate
    /// server and shared by every gateway of the agent naming it (1 to 128
    /// letters, digits and . _ - : @ / +) [default: session from --config,
    /// else the [task] id, else `default`]
    #[arg(long, env = "MANDATE_SESSION", value_name = "ID")]
    pub session: Option<String>,
    /// Without a task credential: this gateway's caller token (`mandate callers
    /// token`), which a Mandate server beyond loopback requires for decisions
    /// without a credential (prefer the variable or --caller-token-file)
    #[arg(
        long,
        env = "MANDATE_CALLER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub caller_token: Option<String>,
    /// Read the caller token from FILE; wins over --caller-token
    #[arg(long, value_name = "FILE")]
    pub caller_token_file: Option<PathBuf>,
    /// A task credential (prefer the environment variable or --credential-file:
    /// command lines are visible to other users)
    #[arg(
        long,
        env = "MANDATE_TASK_CREDENTIAL",
        value_name = "CREDENTIAL",
        hide_env_values = true
    )]
    pub credential: Option<String>,
    /// Read the task credential from FILE (surrounding whitespace is ignored);
    /// wins over --credential and MANDATE_TASK_CREDENTIAL
    #[arg(long, value_name = "FILE")]
    pub credential_file: Option<PathBuf>,
    /// The gateway's TOML config: annotation overrides ([tools."NAME"]),
    /// hide_denied_tools, approval_wait_seconds, on_behalf_of, session, [task],
    /// [[servers]] (docs/mcp.md)
    #[arg(long, env = "MANDATE_MCP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How long a call that needs a person's approval is held before it is
    /// denied: seconds, or a number with s, m or h [default: 60s, or
    /// approval_wait_seconds from --config]
    #[arg(long, env = "MANDATE_APPROVAL_WAIT", value_name = "DURATION")]
    pub approval_wait: Option<String>,
    /// Hide from tools/list the tools the task can never call (the credential
    /// does not grant them, or [task] tools does not name them); also settable
    /// as hide_denied_tools in --config
    #[arg(long)]
    pub hide_denied_tools: bool,
    /// The largest message relayed, in bytes (4 MiB)
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
}

#[derive(Debug, Args)]
pub struct McpWrapArgs {
    #[command(flatten)]
    pub gateway: McpGatewayArgs,
    /// The MCP server's name in decisions (action.server) [default: the name the
    /// server gives in its initialize answer; set it: a server chooses its own]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The MCP server to run: its program and arguments, after `--`; without
    /// it, the [[servers]] of --config run behind one endpoint, their tools
    /// named NAME__tool
    #[arg(last = true, value_name = "COMMAND", num_args = 1..)]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct McpProxyArgs {
    #[command(flatten)]
    pub gateway: McpGatewayArgs,
    /// Address to listen on, IP:PORT or HOST:PORT (port 0: any free port,
    /// printed on stderr)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8282", value_parser = crate::listen::parse)]
    pub listen: SocketAddr,
    /// An MCP server to front, as NAME=URL (its streamable HTTP endpoint); NAME
    /// is its path (/NAME/mcp), its server name in decisions and, with several
    /// upstreams, its tools' prefix on /mcp (NAME__tool: NAME must not contain
    /// `__` nor end with `_`); repeat for more
    #[arg(long, value_name = "NAME=URL", required = true)]
    pub upstream: Vec<String>,
    /// End a client session after it has been idle this long (seconds, or a
    /// number with s, m or h); its next request gets 404 and the client must
    /// initialize again [default: 1h]
    #[arg(long, env = "MANDATE_MCP_SESSION_IDLE", value_name = "DURATION")]
    pub session_idle: Option<String>,
}
