//! `mandate serve` settings: defaults, config file, environment, flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use figment::Figment;
use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::cli::{LogFormat, PackArgs, ReceiptArguments, ServeArgs};

/// The prefix of the environment variables that set settings.
const ENV_PREFIX: &str = "MANDATE_";

/// Every setting: the top-level keys of the config file, and the settings
/// `MANDATE_<NAME>` environment variables can set.
const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "store",
    "policies",
    "shadow_policies",
    "max_body_bytes",
    "reload_interval_ms",
    "log_format",
    "signing_key_file",
    "checkpoint_interval_ms",
    "receipt_arguments",
    "receipt_redact",
    "receipt_max_argument_bytes",
    "journal",
    "journal_max_age_seconds",
    "journal_max_bytes",
    "journal_redact",
    "issuers",
    "audience",
    "resource",
    "task_max_ttl_seconds",
    "task_signing_key_file",
    "approvers",
    "approval_ttl_seconds",
    "allow_self_approval",
    "approval_webhook_url",
    "approval_webhook_secret",
    "max_pending_approvals_per_agent",
    "downstream",
    "header_timeout_ms",
    "body_timeout_ms",
    "idle_timeout_ms",
    "max_connections",
    "decide_access",
    "callers",
    "grpc_listen",
    "ext_authz_listen",
    "ext_authz_routes",
    "otel_endpoint",
    "otel_protocol",
];

/// Resolved settings for `mandate serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(deserialize_with = "crate::listen::deserialize")]
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where state and receipts live: `sqlite` (files in the data
    /// directory) or a `postgres://` URL that several instances share.
    pub store: String,
    pub policies: Option<PathBuf>,
    /// Candidate packs evaluated beside the live pack on every decision,
    /// never deciding: one directory, or named ones.
    pub shadow_policies: ShadowPolicies,
    pub max_body_bytes: usize,
    pub reload_interval_ms: u64,
    pub log_format: LogFormat,
    pub signing_key_file: Option<PathBuf>,
    pub checkpoint_interval_ms: u64,
    pub receipt_arguments: ReceiptArguments,
    pub receipt_redact: Vec<String>,
    /// The largest copy of a call's arguments a receipt keeps (canonical
    /// JSON bytes); a larger one is left out, its digest and size kept.
    pub receipt_max_argument_bytes: usize,
    /// Whether the decision journal keeps each request as evaluated, for
    /// `mandate policy replay`.
    pub journal: bool,
    /// Journal entries older than this are pruned.
    pub journal_max_age_seconds: u64,
    /// The journal is pruned, oldest first, to stay under this many bytes.
    pub journal_max_bytes: u64,
    /// What the journal keeps of each tool's arguments (`[[journal_redact]]`).
    pub journal_redact: Vec<JournalRedactSettings>,
    /// Trusted issuers of agents' identity tokens; none: no task can start.
    pub issuers: Vec<IssuerSettings>,
    /// Audience of the task credentials Mandate mints.
    pub audience: String,
    /// This server's resource identifier; `http://<listen>` when unset.
    pub resource: Option<String>,
    pub task_max_ttl_seconds: u64,
    pub task_signing_key_file: Option<PathBuf>,
    /// Who may approve calls that need a person; none: nobody can approve,
    /// so every approval expires (a deny).
    pub approvers: Vec<ApproverSettings>,
    /// How long an approval waits when its gate sets no `@approval_expires`.
    pub approval_ttl_seconds: u64,
    /// Whether the person a task acts for may approve its requests.
    pub allow_self_approval: bool,
    /// Where new pending approvals are POSTed.
    pub approval_webhook_url: Option<String>,
    /// The webhook's HMAC key (prefer `MANDATE_APPROVAL_WEBHOOK_SECRET`).
    pub approval_webhook_secret: Option<String>,
    /// How many approvals one agent may have waiting at once.
    pub max_pending_approvals_per_agent: u64,
    /// Downstream resources that take Mandate-minted JWTs (`POST /v1/token`).
    pub downstream: Vec<DownstreamSettings>,
    /// Time for a request's headers, from when the connection waits for
    /// them; also how long an idle keep-alive connection is kept.
    pub header_timeout_ms: u64,
    /// Time for a request's whole body, from its headers.
    pub body_timeout_ms: u64,
    /// Time a connection may go without a byte moving either way.
    pub idle_timeout_ms: u64,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Who may ask for decisions without a task credential: `anyone` or
    /// `callers`; unset: `anyone` on a loopback address, else `callers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decide_access: Option<DecideAccessSetting>,
    /// The enforcement points that may decide without a task credential.
    pub callers: Vec<CallerSettings>,
    /// Where the gRPC decision API listens; off when unset.
    #[serde(default, deserialize_with = "crate::listen::deserialize_optional")]
    pub grpc_listen: Option<SocketAddr>,
    /// Where the Envoy ext_authz service listens; off when unset.
    #[serde(default, deserialize_with = "crate::listen::deserialize_optional")]
    pub ext_authz_listen: Option<SocketAddr>,
    /// Which HTTP requests the ext_authz service decides as which tool calls.
    pub ext_authz_routes: Vec<mandate_grpc::RouteSettings>,
    /// Where decision spans are exported over OTLP (the base URL, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`); off unless this or that is set.
    pub otel_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`; else `OTEL_EXPORTER_OTLP_PROTOCOL`, else
    /// `http/protobuf`.
    pub otel_protocol: Option<String>,
}

/// `decide_access` in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecideAccessSetting {
    /// Anyone who reaches the address.
    Anyone,
    /// Only `[[callers]]`.
    Callers,
}

/// One caller of the decision API (`[[callers]]` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSettings {
    /// Who the caller is (the logs name it).
    pub name: String,
    /// SHA-256 (hex) of its token (`mandate callers token` makes one).
    pub token_sha256: String,
}

/// One downstream resource that takes Mandate-minted JWTs (`[[downstream]]`
/// in the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamSettings {
    /// Its resource identifier (RFC 8707): the tokens' `aud`.
    pub resource: String,
    /// The tools it serves, `server/tool`.
    pub tools: Vec<String>,
    /// Lifetime of its tokens, in seconds (default 60, at most 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

impl DownstreamSettings {
    /// The resource, checked.
    pub fn to_downstream(&self) -> anyhow::Result<mandate_auth::Downstream> {
        let ttl = self.ttl_seconds.map_or(
            mandate_auth::exchange::DEFAULT_DOWNSTREAM_TTL,
            std::time::Duration::from_secs,
        );
        Ok(mandate_auth::Downstream::new(
            self.resource.clone(),
            self.tools.iter().cloned(),
            ttl,
        )?)
    }
}

/// `shadow_policies`: one directory (the pack is named `shadow`), or a list
/// of named ones (`[[shadow_policies]]` with `name` and `dir`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ShadowPolicies {
    /// `shadow_policies = "DIR"`, or `MANDATE_SHADOW_POLICIES=DIR`.
    One(PathBuf),
    /// `[[shadow_policies]]` tables.
    Named(Vec<ShadowPackSettings>),
}

impl ShadowPolicies {
    /// Each shadow pack's name and directory, in the order configured.
    pub fn packs(&self) -> Vec<(String, PathBuf)> {
        match self {
            Self::One(dir) => vec![("shadow".to_owned(), dir.clone())],
            Self::Named(packs) => packs
                .iter()
                .map(|p| (p.name.clone(), p.dir.clone()))
                .collect(),
        }
    }
}

/// One named shadow pack (`[[shadow_policies]]` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowPackSettings {
    /// Its name in receipts and metrics.
    pub name: String,
    /// The directory its `.cedar` files (and schema) are read from.
    pub dir: PathBuf,
}

/// One redaction rule of the decision journal (`[[journal_redact]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalRedactSettings {
    /// The tools it covers: `*`, `server/*` or `server/tool`.
    pub tool: String,
    /// The argument path, dot-separated (`body`, `payment.card`).
    pub path: String,
    /// `hash` (the value's digest is kept), `drop`, or `keep`.
    pub action: JournalRedactAction,
}

/// What a `[[journal_redact]]` rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalRedactAction {
    /// Keep the value (exempts a tool from a broader rule).
    Keep,
    /// Keep only the value's digest.
    Hash,
    /// Keep nothing of it.
    Drop,
}

impl JournalRedactSettings {
    /// The rule, checked.
    pub fn to_rule(&self) -> anyhow::Result<mandate_server::journal::RedactionRule> {
        use mandate_server::journal::RedactAction;
        let action = match self.action {
            JournalRedactAction::Keep => RedactAction::Keep,
            JournalRedactAction::Hash => RedactAction::Hash,
            JournalRedactAction::Drop => RedactAction::Drop,
        };
        mandate_server::journal::RedactionRule::new(&self.tool, &self.path, action)
            .map_err(anyhow::Error::msg)
    }
}

/// One approver (`[[approvers]]` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverSettings {
    /// Who the approver is; receipts name them so.
    pub name: String,
    /// SHA-256 (hex) of their token (`mandate approvals token` makes one).
    pub token_sha256: String,
}

/// One trusted issuer of identity tokens (`[[issuers]]` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// `oidc` (default) or `spiffe`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// The tokens' `iss`: required for OIDC, optional for SPIFFE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The SPIFFE trust domain (`kind = "spiffe"` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Accepted `aud` values; empty: the server's `resource`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The issuer's JWKS (for SPIFFE, the trust domain's JWT bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// The issuer's JWKS URL (`https://`, or `http://` to a loopback
    /// address), instead of `jwks_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// How often the JWKS is read again, in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_refresh_seconds: Option<u64>,
    /// The claim naming the human the agent acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of_claim: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default 30, at most 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway_seconds: Option<u64>,
    /// Longest token lifetime (`exp - iat`) accepted; unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_lifetime_seconds: Option<u64>,
}

/// What kind of tokens an issuer hands out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuerKind {
    /// OIDC (or plain OAuth) JWTs, selected by their `iss`.
    #[default]
    Oidc,
    /// SPIFFE JWT-SVIDs, selected by the trust domain of their `sub`.
    Spiffe,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            data_dir: PathBuf::from("mandate-data"),
            store: "sqlite".to_owned(),
            policies: None,
            shadow_policies: ShadowPolicies::Named(Vec::new()),
            max_body_bytes: 1024 * 1024,
            reload_interval_ms: 1000,
            log_format: LogFormat::Text,
            signing_key_file: None,
            checkpoint_interval_ms: 5000,
            receipt_arguments: ReceiptArguments::Copy,
            receipt_redact: Vec::new(),
            receipt_max_argument_bytes: mandate_server::receipts::DEFAULT_MAX_ARGUMENT_BYTES,
            journal: true,
            journal_max_age_seconds: mandate_store::journal::DEFAULT_MAX_AGE.as_secs(),
            journal_max_bytes: mandate_store::journal::DEFAULT_MAX_BYTES,
            journal_redact: Vec::new(),
            issuers: Vec::new(),
            audience: "mandate".to_owned(),
            resource: None,
            task_max_ttl_seconds: 3600,
            task_signing_key_file: None,
            approvers: Vec::new(),
            approval_ttl_seconds: 300,
            allow_self_approval: false,
            approval_webhook_url: None,
            approval_webhook_secret: None,
            max_pending_approvals_per_agent: 20,
            downstream: Vec::new(),
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            max_connections: 1024,
            decide_access: None,
            callers: Vec::new(),
            grpc_listen: None,
            ext_authz_listen: None,
            ext_authz_routes: Vec::new(),
            otel_endpoint: None,
            otel_protocol: None,
        }
    }
}

/// Where state and receipts live (`store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// `state.db` and `ledger.db` in the data directory: one process.
    Sqlite,
    /// One PostgreSQL database, shared by every instance (the URL).
    Postgres(String),
}

/// The layers settings are read from, lowest first: defaults, the config
/// file, `<env_prefix>*` variables, flags. `serve` reads every setting from
/// them; `check` and `policy` read where the policy pack is ([`PackDir`]).
fn layers(
    config: Option<&Path>,
    env_prefix: &str,
    flags: &impl Serialize,
) -> anyhow::Result<Figment> {
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(path) = config {
        anyhow::ensure!(
            path.is_file(),
            "config file `{}` does not exist",
            path.display()
        );
        figment = figment.merge(Toml::file_exact(path));
    }
    Ok(figment
        // Only known names: other MANDATE_* variables belong to other tools.
        .merge(Env::prefixed(env_prefix).only(KEYS))
        .merge(Serialized::defaults(flags)))
}

/// Reads `T` from `figment`, with errors that say what to change.
fn extract<'a, T: Deserialize<'a>>(figment: &Figment) -> anyhow::Result<T> {
    figment.extract().map_err(|error| {
        let lines: Vec<String> = error.into_iter().map(describe).collect();
        anyhow::anyhow!("invalid configuration: {}", lines.join("\n"))
    })
}

/// One configuration error in words. Figment's own text for an unknown key
/// or value quotes the list of expected ones twice (``expected ``a` or
/// `b```), and says nothing about the commonest cause of an unknown key in
/// a table: a top-level setting written below a table header, which TOML
/// puts in that table.
fn describe(mut error: figment::Error) -> String {
    let file = error
        .metadata
        .as_ref()
        .and_then(|m| m.source.as_ref())
        .and_then(figment::Source::file_path)
        .map(Path::to_owned);
    let message = match &error.kind {
        Kind::UnknownField(field, expected) => {
            let table = error.path.first().filter(|_| error.path.len() > 1);
            match (table, &file) {
                (Some(table), Some(file)) if KEYS.contains(&field.as_str()) => {
                    return format!(
                        "`{field}` is a top-level setting but appears inside [[{table}]]: move it above the first table in `{}` (in TOML, every key after a table header belongs to that table)",
                        file.display()
                    );
                }
                _ => format!("unknown key `{field}`, expected {}", one_of(expected)),
            }
        }
        Kind::UnknownVariant(value, expected) => {
            format!("unknown value `{value}`, expected {}", one_of(expected))
        }
        _ => return error.to_string(),
    };
    error.kind = Kind::Message(message);
    error.to_string()
}

/// `` `a` ``, `` `a` or `b` ``, `` one of `a`, `b`, `c` ``.
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "nothing".to_owned(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        all => format!("one of {}", all.join(", ")),
    }
}

/// The settings as `check` and `policy` read them: every layer, with
/// `listen` left out. It may name a host that only the server's network
/// resolves (a CI job testing the production pack is elsewhere), and it has
/// no bearing on the pack or the data directory.
fn pack_settings(args: &PackArgs, env_prefix: &str) -> anyhow::Result<Settings> {
    let figment = layers(args.config.as_deref(), env_prefix, args)?
        .merge(Serialized::default("listen", "127.0.0.1:0"));
    extract(&figment)
}

/// Where the policy pack is, as `serve` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackDir {
    /// `policies` is set (flag, environment or config file): the directory
    /// is used as it is, never written to.
    Configured(PathBuf),
    /// `policies` is not set: `DATA_DIR/policies`, which `serve` seeds with
    /// the example pack while it holds no policy.
    InDataDir(PathBuf),
}

impl PackDir {
    /// The one rule: `policies` if set, else `DATA_DIR/policies`.
    fn of(data_dir: &Path, policies: Option<&Path>) -> Self {
        match policies {
            Some(dir) => Self::Configured(dir.to_owned()),
            None => Self::InDataDir(data_dir.join("policies")),
        }
    }

    /// The pack `serve` would load with these flags, the config file they
    /// name and the environment: the same layers, parsed the same way (a
    /// file `serve` cannot parse is refused here too), and the same rule.
    /// The other settings are not checked: `serve` does that as it starts.
    pub fn resolve(args: &PackArgs) -> anyhow::Result<Self> {
        Self::resolve_in(args, ENV_PREFIX)
    }

    fn resolve_in(args: &PackArgs, env_prefix: &str) -> anyhow::Result<Self> {
        Ok(pack_settings(args, env_prefix)?.pack_dir())
    }

    /// The data directory `serve` would use with these flags, config file
    /// and environment (where its journal is).
    pub fn data_dir(args: &PackArgs) -> anyhow::Result<PathBuf> {
        Ok(pack_settings(args, ENV_PREFIX)?.data_dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        match self {
            Self::Configured(dir) | Self::InDataDir(dir) => dir,
        }
    }
}

impl Settings {
    /// The `store` setting, read.
    pub fn store_kind(&self) -> anyhow::Result<Store> {
        let store = self.store.trim();
        if store == "sqlite" {
            Ok(Store::Sqlite)
        } else if store.starts_with("postgres://") || store.starts_with("postgresql://") {
            Ok(Store::Postgres(store.to_owned()))
        } else {
            anyhow::bail!(
                "`store` must be `sqlite` (files in the data directory) or a PostgreSQL URL such as postgres://mandate:PASSWORD@db.internal:5432/mandate; got `{}`",
                mandate_store::postgres::redact(store)
            )
        }
    }

    /// Defaults, then the config file, then `MANDATE_*`, then flags.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        Self::resolve_in(args, ENV_PREFIX)
    }

    /// [`Settings::resolve`] with the variables of another prefix (tests).
    fn resolve_in(args: &ServeArgs, env_prefix: &str) -> anyhow::Result<Self> {
        let settings: Settings = extract(&layers(args.config.as_deref(), env_prefix, args)?)?;
        settings.store_kind()?;
        // Routes are checked with the rest of the configuration, before
        // anything is created.
        mandate_grpc::Routes::new(&settings.ext_authz_routes)?;
        anyhow::ensure!(
            settings.ext_authz_listen.is_none() || !settings.ext_authz_routes.is_empty(),
            "`ext_authz_listen` is set but no `[[ext_authz_routes]]` are configured, so every check would be denied: add routes to the config file (docs/integrations.md)"
        );
        anyhow::ensure!(
            settings.max_body_bytes > 0,
            "`max_body_bytes` must be positive"
        );
        anyhow::ensure!(
            settings.reload_interval_ms > 0,
            "`reload_interval_ms` must be positive"
        );
        anyhow::ensure!(
            settings.checkpoint_interval_ms > 0,
            "`checkpoint_interval_ms` must be positive"
        );
        anyhow::ensure!(
            settings.header_timeout_ms > 0 && settings.body_timeout_ms > 0,
            "`header_timeout_ms` and `body_timeout_ms` must be positive"
        );
        // A long poll waits in silence for up to MAX_WAIT; a shorter idle
        // timeout would cut every one of them.
        let longest_poll = mandate_server::approvals::MAX_WAIT.as_millis();
        anyhow::ensure!(
            u128::from(settings.idle_timeout_ms) > longest_poll,
            "`idle_timeout_ms` must be more than {longest_poll} (the longest `wait` of `GET /v1/approvals/{{id}}`, which sends nothing while it waits)"
        );
        anyhow::ensure!(
            settings.max_connections > 0,
            "`max_connections` must be positive"
        );
        if let Some(bad) = settings
            .receipt_redact
            .iter()
            .find(|p| p.is_empty() || p.split('.').any(str::is_empty))
        {
            anyhow::bail!(
                "`receipt_redact` path `{bad}` is not a dot-separated list of argument keys (like `body` or `payment.card`)"
            );
        }
        anyhow::ensure!(
            settings.journal_max_age_seconds > 0 && settings.journal_max_bytes > 0,
            "`journal_max_age_seconds` and `journal_max_bytes` must be positive (to keep no journal, set `journal = false`)"
        );
        for (i, rule) in settings.journal_redact.iter().enumerate() {
            rule.to_rule()
                .with_context(|| format!("invalid `journal_redact` entry {}", i + 1))?;
        }
        anyhow::ensure!(
            settings.task_max_ttl_seconds > 0,
            "`task_max_ttl_seconds` must be positive"
        );
        anyhow::ensure!(
            !settings.audience.trim().is_empty(),
            "`audience` (of the task credentials Mandate mints) must not be empty"
        );
        anyhow::ensure!(
            settings.approval_ttl_seconds > 0
                && settings.approval_ttl_seconds <= mandate_core::MAX_APPROVAL_TTL.as_secs(),
            "`approval_ttl_seconds` must be between 1 and {} (a week)",
            mandate_core::MAX_APPROVAL_TTL.as_secs()
        );
        anyhow::ensure!(
            settings.max_pending_approvals_per_agent > 0,
            "`max_pending_approvals_per_agent` must be positive"
        );
        match (
            &settings.approval_webhook_url,
            settings.approval_webhook_secret.as_deref(),
        ) {
            (Some(url), secret) => {
                anyhow::ensure!(
                    url.starts_with("http://") || url.starts_with("https://"),
                    "`approval_webhook_url` (`{url}`) must be an http:// or https:// URL"
                );
                anyhow::ensure!(
                    secret.is_some_and(|s| s.len() >= 16),
                    "`approval_webhook_url` needs `approval_webhook_secret` (at least 16 characters; set MANDATE_APPROVAL_WEBHOOK_SECRET) to sign notifications"
                );
            }
            (None, Some(_)) => {
                anyhow::bail!("`approval_webhook_secret` is set but `approval_webhook_url` is not")
            }
            (None, None) => {}
        }
        for (i, issuer) in settings.issuers.iter().enumerate() {
            issuer
                .check()
                .with_context(|| format!("invalid `issuers` entry {}", i + 1))?;
        }
        let mut resources = std::collections::BTreeSet::new();
        for (i, downstream) in settings.downstream.iter().enumerate() {
            downstream
                .to_downstream()
                .with_context(|| format!("invalid `downstream` entry {}", i + 1))?;
            anyhow::ensure!(
                resources.insert(&downstream.resource),
                "invalid `downstream` entry {}: resource `{}` is configured twice",
                i + 1,
                downstream.resource
            );
        }
        Ok(settings)
    }

    /// This server's resource identifier: configured, or `http://<listen>`.
    pub fn resource(&self) -> String {
        self.resource
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// The policy directory: configured, or `DATA_DIR/policies`.
    pub fn pack_dir(&self) -> PackDir {
        PackDir::of(&self.data_dir, self.policies.as_deref())
    }
}

impl IssuerSettings {
    /// The fields an issuer of its kind needs, and none it cannot use.
    fn check(&self) -> anyhow::Result<()> {
        match (&self.jwks_file, &self.jwks_url) {
            (Some(_), Some(_)) => anyhow::bail!(
                "set `jwks_file` or `jwks_url`, not both: the issuer's keys come from one place"
            ),
            (None, None) => anyhow::bail!(
                "`jwks_file` or `jwks_url` is required: the issuer's JWKS (for SPIFFE, the trust domain's JWT bundle)"
            ),
            (None, Some(url)) => {
                mandate_server::jwks::KeySource::url(url).map_err(anyhow::Error::msg)?;
            }
            (Some(_), None) => {}
        }
        anyhow::ensure!(
            self.jwks_refresh_seconds
                .is_none_or(|s| (1..=86_400).contains(&s)),
            "`jwks_refresh_seconds` must be from 1 to 86400"
        );
        match self.kind {
            IssuerKind::Oidc => {
                anyhow::ensure!(
                    self.issuer.as_deref().is_some_and(|i| !i.is_empty()),
                    "an OIDC issuer needs `issuer` (the tokens' `iss`)"
                );
                anyhow::ensure!(
                    self.trust_domain.is_none(),
                    "`trust_domain` is for `kind = \"spiffe\"` issuers"
                );
            }
            IssuerKind::Spiffe => anyhow::ensure!(
                self.trust_domain.is_some(),
                "a SPIFFE issuer needs `trust_domain` (like `example.org`)"
            ),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::Parser as _;
    use serde_json::Value;

    use super::*;
    use crate::cli::{Cli, Command};

    /// No variable has this prefix: the tests read no environment.
    const NO_ENV: &str = "MANDATE_TEST_UNSET_PREFIX_";

    /// The shipped example, `examples/mandate.toml`.
    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mandate.toml")
    }

    fn serve_args(argv: &[&str]) -> ServeArgs {
        let mut all = vec!["mandate", "serve"];
        all.extend(argv);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Serve(args) => args,
            other => panic!("not serve: {other:?}"),
        }
    }

    fn pack_args(argv: &[&str]) -> PackArgs {
        let mut all = vec!["mandate", "check", "request.json"];
        all.extend(argv);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Check(args) => args.pack,
            other => panic!("not check: {other:?}"),
        }
    }

    /// Loads a config file's text with the real loader, as `serve
    /// --config` would (without the environment).
    fn load(text: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mandate.toml");
        std::fs::write(&path, text).unwrap();
        Settings::resolve_in(&serve_args(&["--config", path.to_str().unwrap()]), NO_ENV)
    }

    /// The keys the loader knows, in the top level (`None`) or in one of
    /// its tables, as serde names them when it meets one it does not know.
    fn known_keys(table: Option<&str>) -> Vec<&'static str> {
        let probe = match table {
            None => "unknown_probe_key = 1".to_owned(),
            Some(table) => format!("[[{table}]]\nunknown_probe_key = 1"),
        };
        let error = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(&probe))
            .extract::<Settings>()
            .unwrap_err();
        match error.kind {
            Kind::UnknownField(_, expected) => expected.to_vec(),
            other => panic!("no list of keys for {table:?}: {other:?}"),
        }
    }

    /// The tables of the config file.
    const TABLES: &[&str] = &["issuers", "approvers", "downstream", "callers"];

    /// The example with every setting uncommented: `#key = …` and
    /// `#[[table]]` lines lose their `#`; explanations (`# …`) stay.
    fn uncommented(example: &str) -> String {
        example
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_example_config_loads_as_shipped_and_with_every_setting_set() {
        let example = std::fs::read_to_string(example_path()).unwrap();
        // As shipped, every setting is commented out: the defaults.
        let shipped = load(&example).unwrap();
        assert_eq!(
            serde_json::to_value(&shipped).unwrap(),
            serde_json::to_value(Settings::default()).unwrap()
        );
        // With every line uncommented, it still loads, and what `serve`
        // builds from it (approvers, callers) is accepted too.
        let all = load(&uncommented(&example))
            .unwrap_or_else(|e| panic!("the uncommented example does not load: {e:#}"));
        crate::commands::serve::approval_settings(&all).unwrap();
        crate::commands::serve::decision_callers(&all).unwrap();
        for table in TABLES {
            let value = serde_json::to_value(&all).unwrap();
            assert!(
                value[*table].as_array().is_some_and(|t| !t.is_empty()),
                "the example shows no [[{table}]]"
            );
        }
    }

    #[test]
    fn the_example_config_names_every_key_the_loader_knows_with_its_default() {
        let example = uncommented(&std::fs::read_to_string(example_path()).unwrap());
        let written: Value = Figment::from(Toml::string(&example)).extract().unwrap();
        let top: BTreeSet<&str> = written
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in known_keys(None) {
            assert!(
                top.contains(key),
                "examples/mandate.toml lacks the setting `{key}`"
            );
        }
        for table in TABLES {
            let entries = written[*table].as_array().unwrap();
            for key in known_keys(Some(table)) {
                assert!(
                    entries.iter().any(|e| e.get(key).is_some()),
                    "examples/mandate.toml lacks `{key}` in [[{table}]]"
                );
            }
        }
        // The values shown are the defaults, where there is one.
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let shown = serde_json::to_value(load(&example).unwrap()).unwrap();
        for (key, default) in defaults.as_object().unwrap() {
            let has_default =
                !default.is_null() && default.as_array().is_none_or(|a| !a.is_empty());
            if has_default {
                assert_eq!(
                    &shown[key], default,
                    "examples/mandate.toml shows `{key}` with another value than its default"
                );
            }
        }
    }

    #[test]
    fn every_setting_can_come_from_the_environment() {
        let known: BTreeSet<&str> = known_keys(None).into_iter().collect();
        let keys: BTreeSet<&str> = KEYS.iter().copied().collect();
        assert_eq!(keys, known, "KEYS must list every setting");
    }

    #[test]
    fn a_top_level_setting_below_a_table_is_named_as_such() {
        let error = load(
            "listen = \"127.0.0.1:8181\"\n\n[[approvers]]\nname = \"you@example.com\"\n\
             token_sha256 = \"2119bb2c4bc201243b97aa37044fbb95f42426b05c901b79b3057aac5d30966f\"\n\
             task_max_ttl_seconds = 60\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(
                "`task_max_ttl_seconds` is a top-level setting but appears inside [[approvers]]: move it above the first table"
            ),
            "{error}"
        );
        assert!(error.contains("mandate.toml"), "{error}");

        // In another table too.
        let error =
            load("[[callers]]\nname = \"gw\"\ntoken_sha256 = \"00\"\nlisten = \"127.0.0.1:1\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("`listen` is a top-level setting but appears inside [[callers]]"),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_and_values_list_what_is_expected_quoted_once() {
        let error = load("[[approvers]]\nname = \"a\"\ntoken_sha256 = \"b\"\nnope = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown key `nope`, expected `name` or `token_sha256`"),
            "{error}"
        );
        assert!(!error.contains("``"), "{error}");

        let error = load("listen_addr = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown key `listen_addr`, expected one of `listen`, `data_dir`"),
            "{error}"
        );
        assert!(!error.contains("``"), "{error}");

        let error = load("log_format = \"xml\"\n").unwrap_err().to_string();
        assert!(
            error.contains("unknown value `xml`, expected `text` or `json`"),
            "{error}"
        );
    }

    #[test]
    fn the_pack_is_found_as_serve_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mandate.toml");
        let config_arg = config.to_str().unwrap();
        let resolve = |argv: &[&str]| PackDir::resolve_in(&pack_args(argv), NO_ENV).unwrap();
        let serve = |argv: &[&str]| {
            Settings::resolve_in(&serve_args(argv), NO_ENV)
                .unwrap()
                .pack_dir()
        };

        // Nothing set: DATA_DIR/policies of the default data directory.
        assert_eq!(
            resolve(&[]),
            PackDir::InDataDir(PathBuf::from("mandate-data/policies"))
        );
        assert_eq!(resolve(&[]), serve(&[]));
        // The data directory moves it.
        assert_eq!(
            resolve(&["--data-dir", "/srv/m"]),
            PackDir::InDataDir(PathBuf::from("/srv/m/policies"))
        );
        // The config file's data directory and policies, under the flags.
        std::fs::write(&config, "data_dir = \"/srv/file\"\n").unwrap();
        assert_eq!(
            resolve(&["--config", config_arg]),
            PackDir::InDataDir(PathBuf::from("/srv/file/policies"))
        );
        assert_eq!(
            resolve(&["--config", config_arg]),
            serve(&["--config", config_arg])
        );
        std::fs::write(
            &config,
            "data_dir = \"/srv/file\"\npolicies = \"/etc/p\"\n\n[[approvers]]\nname = \"a\"\ntoken_sha256 = \"b\"\n",
        )
        .unwrap();
        assert_eq!(
            resolve(&["--config", config_arg]),
            PackDir::Configured(PathBuf::from("/etc/p"))
        );
        assert_eq!(
            resolve(&["--config", config_arg, "--policies", "/x"]),
            PackDir::Configured(PathBuf::from("/x"))
        );
        assert_eq!(
            resolve(&["--config", config_arg, "--policies", "/x"]),
            serve(&["--config", config_arg, "--policies", "/x"])
        );
        // A listen host this machine cannot resolve does not matter here.
        std::fs::write(&config, "listen = \"mandate.invalid:8181\"\n").unwrap();
        assert_eq!(
            resolve(&["--config", config_arg]),
            PackDir::InDataDir(PathBuf::from("mandate-data/policies"))
        );
        // A config file that does not exist is an error, as for serve.
        let missing = dir.path().join("missing.toml");
        let error =
            PackDir::resolve_in(&pack_args(&["--config", missing.to_str().unwrap()]), NO_ENV)
                .unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
    }
}
