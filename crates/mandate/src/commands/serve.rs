//! `mandate serve`: resolve settings, prepare the data directory, serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use mandate_core::PolicyPack;
use mandate_grpc::GrpcLimits;
use mandate_ledger::LogKey;
use mandate_server::journal::JournalSettings;
use mandate_server::policy_dir::PackSources;
use mandate_server::shadow::{ShadowName, ShadowPack, Shadows};
use mandate_server::{
    AppState, ApprovalSettings, Approvals, ApproverToken, Callers, ConnectionLimits, DecideAccess,
    Decider, ReceiptSettings, ServerConfig, TaskSettings, Tasks, TasksError, Webhook, policy_dir,
};
use mandate_store::postgres::PgStore;
use mandate_store::{
    JournalRetention, Ledger, LedgerConfig, LedgerError, ReceiptLog, SqliteState, StateError,
    StateStore,
};

use crate::cli::{ReceiptArguments, ServeArgs};
use crate::config::{DecideAccessSetting, JournalRedactSettings, PackDir, Settings, Store};
use crate::data_lock;
use crate::exit::Code;
use crate::ledger_files;
use crate::task_files;

/// What stops the server from starting because of its configuration (exit
/// 2): the lines to print on stderr.
struct Refused(Vec<String>);

impl Refused {
    /// One `error: …` line.
    fn error(message: impl std::fmt::Display) -> Self {
        Self(vec![format!("error: {message}")])
    }
}

/// A step of the start that may be refused (exit 2) or fail (exit 1).
type Step<T> = anyhow::Result<Result<T, Refused>>;

pub fn run(args: ServeArgs) -> anyhow::Result<Code> {
    let settings = match Settings::resolve(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Code::Input);
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // The OTLP exporter's task runs on the runtime, set up with the logging.
    let _in_runtime = runtime.enter();
    let export = match crate::telemetry::Export::resolve(
        settings.otel_endpoint.as_deref(),
        settings.otel_protocol.as_deref(),
    ) {
        Ok(export) => export,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Code::Input);
        }
    };
    let spans = export
        .map(|export| export.start(mandate_server::metrics::spans_dropped()))
        .transpose()?;
    crate::telemetry::init_logging(settings.log_format, "info", spans.as_ref());

    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory `{}`",
            settings.data_dir.display()
        )
    })?;
    // Held until `run` returns: the whole life of the server. Taken before
    // anything in the directory is touched.
    let _data_dir_lock = match data_lock::acquire(&settings.data_dir).with_context(|| {
        format!(
            "cannot lock the data directory `{}`",
            settings.data_dir.display()
        )
    })? {
        Ok(lock) => lock,
        Err(in_use) => {
            eprintln!("error: {in_use}");
            return Ok(Code::Failure);
        }
    };
    let started = runtime.block_on(start(&settings));
    crate::telemetry::flush(spans);
    match started? {
        Ok(()) => Ok(Code::Ok),
        Err(Refused(lines)) => {
            for line in lines {
                eprintln!("{line}");
            }
            Ok(Code::Input)
        }
    }
}

/// Loads everything the server needs from `settings`, then serves until
/// shutdown and closes the ledger.
async fn start(settings: &Settings) -> Step<()> {
    let (dir, sources, pack) = match load_pack(settings)? {
        Ok(loaded) => loaded,
        Err(refused) => return Ok(Err(refused)),
    };
    let (shadows, shadow_sources) = match load_shadows(settings)? {
        Ok(loaded) => loaded,
        Err(refused) => return Ok(Err(refused)),
    };
    let key = match ledger_files::load_or_generate_key(
        &settings.data_dir,
        settings.signing_key_file.as_deref(),
    ) {
        Ok(key) => key,
        Err(e) => return Ok(Err(Refused::error(format!("{e:#}")))),
    };
    let log_config = LedgerConfig {
        checkpoint_interval: Duration::from_millis(settings.checkpoint_interval_ms),
        journal: JournalRetention {
            max_age: Some(Duration::from_secs(settings.journal_max_age_seconds)),
            max_bytes: Some(settings.journal_max_bytes),
        },
        ..LedgerConfig::default()
    };
    let (state_store, ledger, postgres): (Arc<dyn StateStore>, Arc<dyn ReceiptLog>, _) =
        match settings.store_kind()? {
            Store::Sqlite => {
                let state = match open_sqlite_state(settings)? {
                    Ok(state) => state,
                    Err(refused) => return Ok(Err(refused)),
                };
                let ledger = match open_ledger(settings, key, log_config)? {
                    Ok(ledger) => ledger,
                    Err(refused) => return Ok(Err(refused)),
                };
                (Arc::new(state), Arc::new(ledger), None)
            }
            Store::Postgres(url) => match open_postgres(&url, key, log_config).await? {
                Ok((store, log)) => (Arc::new(store.state()), Arc::new(log), Some(store)),
                Err(refused) => return Ok(Err(refused)),
            },
        };
    let tasks = match open_tasks(settings, state_store, postgres.as_ref()).await? {
        Ok(tasks) => tasks,
        Err(e) => return Ok(Err(Refused::error(format!("{e:#}")))),
    };
    let receipts = ReceiptSettings::new(
        settings.receipt_arguments == ReceiptArguments::Digest,
        &settings.receipt_redact,
    )
    .with_max_argument_bytes(settings.receipt_max_argument_bytes);
    let journal = match journal_settings(settings, &receipts) {
        Ok(journal) => journal,
        Err(e) => return Ok(Err(Refused::error(format!("{e:#}")))),
    };
    let approvals = match approval_settings(settings) {
        Ok(approvals) => approvals,
        Err(e) => return Ok(Err(Refused::error(format!("{e:#}")))),
    };
    let callers = match decision_callers(settings) {
        Ok(callers) => callers,
        Err(e) => return Ok(Err(Refused::error(format!("{e:#}")))),
    };
    let state = AppState::new(
        pack,
        dir,
        Utc::now(),
        Arc::clone(&ledger),
        receipts,
        tasks,
        approvals,
    )
    .with_callers(callers)
    .with_shadows(shadows)
    .with_journal(journal);
    let front_ends = match grpc_front_ends(settings, &state).await? {
        Ok(front_ends) => front_ends,
        Err(refused) => return Ok(Err(refused)),
    };
    serve(
        server_config(settings),
        state,
        (sources, shadow_sources),
        ledger,
        front_ends,
    )
    .await?;
    Ok(Ok(()))
}

/// A gRPC front end bound to its address, to be served beside the HTTP API.
struct GrpcFrontEnd {
    what: &'static str,
    listener: tokio::net::TcpListener,
    routes: mandate_grpc::Services,
}

/// The gRPC decision API and the ext_authz service, each where configured,
/// bound now so that an address in use stops the start.
async fn grpc_front_ends(settings: &Settings, state: &AppState) -> Step<Vec<GrpcFrontEnd>> {
    let ext_authz_routes = match mandate_grpc::Routes::new(&settings.ext_authz_routes) {
        Ok(routes) => routes,
        Err(e) => return Ok(Err(Refused::error(e))),
    };
    let mut front_ends = Vec::new();
    let decider = Decider::new(state.clone());
    let max_message_bytes = settings.max_body_bytes;
    if let Some(address) = settings.grpc_listen {
        let routes = mandate_grpc::decision_services(decider.clone(), max_message_bytes)
            .context("gRPC reflection")?;
        front_ends.push(GrpcFrontEnd {
            what: "decision",
            listener: bind(address, "the gRPC decision API").await?,
            routes,
        });
    }
    if let Some(address) = settings.ext_authz_listen {
        let routes = mandate_grpc::ext_authz_services(decider, ext_authz_routes, max_message_bytes);
        front_ends.push(GrpcFrontEnd {
            what: "ext_authz",
            listener: bind(address, "the ext_authz service").await?,
            routes,
        });
    }
    Ok(Ok(front_ends))
}

async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot serve {what} on {address}"))
}

/// The policy directory (seeded with the example pack unless `--policies`
/// names one), its texts, and the pack they load into.
fn load_pack(settings: &Settings) -> Step<(PathBuf, PackSources, PolicyPack)> {
    let pack_dir = settings.pack_dir();
    let dir = pack_dir.path().to_owned();
    if let PackDir::InDataDir(_) = pack_dir {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        if policy_dir::seed_example(&dir)? {
            tracing::info!(directory = %dir.display(), "wrote the example policy pack; edit it, or point --policies elsewhere");
        }
    }
    let (sources, pack) = match read_pack(&dir, "policy pack")? {
        Ok(loaded) => loaded,
        Err(refused) => return Ok(Err(refused)),
    };
    tracing::info!(directory = %dir.display(), version = %pack.version(), policies = ?pack.counts(), "policies loaded");
    Ok(Ok((dir, sources, pack)))
}

/// The texts in `dir` and the pack they load into; `what` names the pack
/// in the refusal.
fn read_pack(dir: &Path, what: &str) -> Step<(PackSources, PolicyPack)> {
    let sources = match policy_dir::read(dir) {
        Ok(s) => s,
        Err(e) => return Ok(Err(Refused::error(e))),
    };
    let pack = match sources.load() {
        Ok(pack) => pack,
        Err(e) => {
            let mut lines: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
            lines.push(format!(
                "error: the {what} in `{}` does not load; fix it and start again",
                dir.display()
            ));
            return Ok(Err(Refused(lines)));
        }
    };
    for w in pack.warnings() {
        tracing::warn!("{w}");
    }
    Ok(Ok((sources, pack)))
}

/// What the decision journal keeps (`journal`, `[[journal_redact]]`).
fn journal_settings(
    settings: &Settings,
    receipts: &ReceiptSettings,
) -> anyhow::Result<JournalSettings> {
    if !settings.journal {
        return Ok(JournalSettings::off());
    }
    let rules = settings
        .journal_redact
        .iter()
        .map(JournalRedactSettings::to_rule)
        .collect::<anyhow::Result<_>>()?;
    Ok(JournalSettings::new(true, rules).within(receipts))
}

/// The shadow packs (`shadow_policies`), each loaded as the live pack is:
/// one that does not load stops the start, as the live pack does.
fn load_shadows(settings: &Settings) -> Step<(Shadows, Vec<PackSources>)> {
    let mut packs = Vec::new();
    let mut sources = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (name, dir) in settings.shadow_policies.packs() {
        let name = match ShadowName::new(&name) {
            Ok(name) => name,
            Err(e) => return Ok(Err(Refused::error(format!("shadow_policies: {e}")))),
        };
        if !names.insert(name.clone()) {
            return Ok(Err(Refused::error(format!(
                "shadow_policies: the name `{name}` is given twice; give each shadow pack its own"
            ))));
        }
        let (texts, pack) = match read_pack(&dir, &format!("shadow pack `{name}`"))? {
            Ok(loaded) => loaded,
            Err(refused) => return Ok(Err(refused)),
        };
        tracing::info!(shadow = %name, directory = %dir.display(), version = %pack.version(), policies = ?pack.counts(), "shadow pack loaded: evaluated beside the live pack, never deciding");
        packs.push(ShadowPack::new(name, dir, pack));
        sources.push(texts);
    }
    Ok(Ok((Shadows::new(packs), sources)))
}

/// The receipt ledger in the data directory, created on first start. A
/// ledger signed with another key is a configuration mistake (exit 2), like
/// a bad flag.
fn open_ledger(settings: &Settings, key: LogKey, config: LedgerConfig) -> Step<Ledger> {
    let ledger_path = ledger_files::ledger_path(&settings.data_dir);
    ledger_files::create_ledger_file(&ledger_path)?;
    let ledger = match Ledger::open(&ledger_path, key, config) {
        Ok(ledger) => ledger,
        Err(e @ LedgerError::KeyMismatch { .. }) => return Ok(Err(Refused::error(e))),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot open the receipt ledger `{}`",
                ledger_path.display()
            )));
        }
    };
    tracing::info!(
        path = %ledger_path.display(),
        receipts = ledger.size(),
        verifier_key = %ledger.verifier().as_text(),
        "receipt ledger open"
    );
    Ok(Ok(ledger))
}

/// The state database in the data directory, created on first start.
fn open_sqlite_state(settings: &Settings) -> Step<SqliteState> {
    let path = task_files::state_path(&settings.data_dir);
    ledger_files::create_ledger_file(&path)?;
    let store = SqliteState::open(&path)
        .with_context(|| format!("cannot open the state database `{}`", path.display()))?;
    Ok(Ok(store))
}

/// State and receipts in one PostgreSQL database, migrated. A database
/// that is not Mandate's, of a newer schema, or whose log has another key
/// is refused (exit 2); one that cannot be reached fails the start (exit 1).
async fn open_postgres(
    url: &str,
    key: LogKey,
    config: LedgerConfig,
) -> Step<(PgStore, mandate_store::postgres::PgLog)> {
    let store = match PgStore::connect(url).await {
        Ok(store) => store,
        Err(e @ StateError::Unsupported(_)) => return Ok(Err(Refused::error(e))),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot open the PostgreSQL store `{}`",
                mandate_store::postgres::redact(url)
            )));
        }
    };
    let log = match store.log(key, config).await {
        Ok(log) => log,
        Err(LedgerError::KeyMismatch { stored, configured }) => {
            return Ok(Err(Refused::error(format!(
                "the receipt log in the database is signed with key `{stored}`, but this instance's key is `{configured}`: every instance on one database needs the same receipt signing key; give this one the first instance's key file (`signing_key_file`)"
            ))));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot open the receipt log in `{}`", store.url())));
        }
    };
    tracing::info!(
        store = %store.url(),
        receipts = log.size(),
        verifier_key = %log.verifier().as_text(),
        "state and receipt log on PostgreSQL"
    );
    Ok(Ok((store, log)))
}

/// Where and within which limits to listen.
fn server_config(settings: &Settings) -> ServerConfig {
    ServerConfig {
        listen: settings.listen,
        max_body_bytes: settings.max_body_bytes,
        reload_interval: Duration::from_millis(settings.reload_interval_ms),
        limits: ConnectionLimits {
            header_timeout: Duration::from_millis(settings.header_timeout_ms),
            body_timeout: Duration::from_millis(settings.body_timeout_ms),
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
            max_connections: settings.max_connections,
        },
    }
}

/// Runs the server and its background loops until ctrl-c or SIGTERM, then
/// signs a last checkpoint.
async fn serve(
    config: ServerConfig,
    state: AppState,
    (sources, shadow_sources): (PackSources, Vec<PackSources>),
    ledger: Arc<dyn ReceiptLog>,
    front_ends: Vec<GrpcFrontEnd>,
) -> anyhow::Result<()> {
    // Issuers' keys from URLs, before the first request; an unreachable
    // one is tried again in the background, its tokens refused meanwhile.
    state.tasks().identities().fetch_pending().await;
    mandate_server::background::spawn(&state, sources, shadow_sources, config.reload_interval);
    let limits = GrpcLimits {
        max_connections: config.limits.max_connections,
        handshake_timeout: config.limits.header_timeout,
        request_timeout: config.limits.body_timeout,
        max_message_bytes: config.max_body_bytes,
        ..GrpcLimits::default()
    };
    let grpc: Vec<_> = front_ends
        .into_iter()
        .map(|front_end| {
            if let Ok(address) = front_end.listener.local_addr() {
                tracing::info!(%address, service = front_end.what, "gRPC front end is listening");
            }
            tokio::spawn(mandate_grpc::serve(
                front_end.listener,
                front_end.routes,
                limits,
                mandate_server::shutdown_signal(),
            ))
        })
        .collect();
    let served = mandate_server::serve(config.clone(), state)
        .await
        .with_context(|| format!("cannot serve on {}", config.listen));
    // The gRPC front ends stop on the same signal; their decisions in
    // flight finish before the ledger closes.
    for front_end in grpc {
        match front_end.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "a gRPC front end failed"),
            Err(e) => tracing::error!(error = %e, "a gRPC front end panicked"),
        }
    }
    // Sign a last checkpoint so that the log's head covers every receipt.
    match ledger.close().await {
        Ok(checkpoint) => tracing::info!(size = checkpoint.size, "receipt ledger closed"),
        Err(e) => {
            tracing::error!(error = %e, "receipt ledger did not close cleanly; it recovers on next start")
        }
    }
    served
}

/// Approvers, approval lifetime and the webhook, checked.
pub(crate) fn approval_settings(settings: &Settings) -> anyhow::Result<Approvals> {
    let approvers = settings
        .approvers
        .iter()
        .map(|a| ApproverToken::new(&a.name, &a.token_sha256))
        .collect::<Result<Vec<_>, _>>()?;
    if approvers.is_empty() {
        tracing::warn!(
            "no approvers configured: calls that need approval will expire (deny); see docs/approvals.md"
        );
    }
    let webhook = match (
        &settings.approval_webhook_url,
        &settings.approval_webhook_secret,
    ) {
        (Some(url), Some(secret)) => Some(Webhook {
            url: url.clone(),
            secret: secret.as_bytes().to_vec(),
        }),
        _ => None,
    };
    Ok(Approvals::new(ApprovalSettings {
        default_ttl: Duration::from_secs(settings.approval_ttl_seconds),
        allow_self_approval: settings.allow_self_approval,
        approvers,
        webhook,
        max_pending_per_agent: settings.max_pending_approvals_per_agent,
    })?)
}

/// Identity issuers, the task signing key and the state database. The inner
/// error is a configuration mistake (exit 2): an issuer or its JWKS, the key
/// file, the resource identifier. The outer one is the state database failing
/// to open (exit 1).
async fn open_tasks(
    settings: &Settings,
    store: Arc<dyn StateStore>,
    postgres: Option<&PgStore>,
) -> anyhow::Result<anyhow::Result<Tasks>> {
    let issuers = match task_files::issuers(settings) {
        Ok(issuers) => issuers,
        Err(e) => return Ok(Err(e)),
    };
    let task_settings = TaskSettings {
        audience: settings.audience.clone(),
        resource: settings.resource(),
        max_ttl: Duration::from_secs(settings.task_max_ttl_seconds),
    };
    // Before any file is created: a mistake leaves the data directory as it was.
    if let Err(e) = Tasks::check_config(&issuers, &task_settings) {
        return Ok(Err(e.into()));
    }
    // A new key is news only where credentials were issued under another.
    let issued_before = !store
        .list_tasks(false, 1)
        .await
        .context("cannot read the state database")?
        .is_empty();
    let authority = match task_files::load_or_generate_key(
        &settings.data_dir,
        settings.task_signing_key_file.as_deref(),
        issued_before,
    ) {
        Ok(authority) => authority,
        Err(e) => return Ok(Err(e)),
    };
    // Instances on one database must sign credentials with one key, or a
    // credential issued by one would not verify on another.
    if let Some(postgres) = postgres {
        let public_key = format!("ed25519/{}", authority.public_key_hex());
        match postgres.agree("task_public_key", &public_key).await {
            Ok(()) => {}
            Err(e @ StateError::Conflict(_)) => {
                return Ok(Err(anyhow::anyhow!(
                    "{e}: every instance on one database needs the same task signing key; give this one the first instance's key file (`task_signing_key_file`)"
                )));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot read the store's task key")),
        }
    }
    let tasks = match Tasks::new(issuers, authority, store, task_settings).await {
        Ok(tasks) => tasks,
        Err(TasksError::Store(e)) => {
            return Err(anyhow::Error::new(e).context("cannot read the state store"));
        }
        Err(e) => return Ok(Err(e.into())),
    };
    // Issuers' keys refreshed from their files or URLs; tokens minted for
    // the downstream resources. Both were checked with the settings.
    let downstream = settings
        .downstream
        .iter()
        .map(crate::config::DownstreamSettings::to_downstream)
        .collect::<anyhow::Result<Vec<_>>>();
    let tasks = match downstream.and_then(|downstream| {
        Ok(tasks
            .with_key_sources(task_files::key_sources(settings))?
            .with_downstream(downstream)?)
    }) {
        Ok(tasks) => tasks,
        Err(e) => return Ok(Err(e)),
    };
    for warning in tasks.identities().warnings() {
        tracing::warn!("{warning}");
    }
    if !tasks.identities().is_empty() {
        tracing::info!(
            issuers = settings.issuers.len(),
            resource = %tasks.resource().resource(),
            audience = %tasks.credentials().audience(),
            public_key = %tasks.credentials().public_key(),
            downstream = tasks.exchange().resources().count(),
            token_key = %tasks.exchange().signer().kid(),
            "tasks ready"
        );
    } else {
        tracing::info!(
            public_key = %tasks.credentials().public_key(),
            "no identity issuer is configured: the task endpoints answer 401 (set `issuers` to start tasks)"
        );
    }
    Ok(Ok(tasks))
}

/// Who may ask for decisions without a task credential, said in the log
/// at start: beyond loopback, by default, only configured callers.
/// Where decisions are asked for without going through a route: the HTTP
/// API and the gRPC decision API. (ext_authz decides only under a task
/// credential.)
fn decision_listeners(settings: &Settings) -> impl Iterator<Item = SocketAddr> {
    std::iter::once(settings.listen).chain(settings.grpc_listen)
}

pub(crate) fn decision_callers(settings: &Settings) -> anyhow::Result<Callers> {
    let access = match settings.decide_access {
        Some(DecideAccessSetting::Anyone) => DecideAccess::Anyone,
        Some(DecideAccessSetting::Callers) => DecideAccess::Callers,
        None => DecideAccess::default_for(decision_listeners(settings)),
    };
    let callers = Callers::new(
        access,
        settings
            .callers
            .iter()
            .map(|c| (c.name.clone(), c.token_sha256.clone())),
    )?;
    let beyond_loopback = decision_listeners(settings).find(|a| !a.ip().is_loopback());
    match access {
        DecideAccess::Anyone if beyond_loopback.is_some() => tracing::warn!(
            listen = %beyond_loopback.unwrap_or(settings.listen),
            "decide_access = \"anyone\" beyond loopback: whoever reaches this address can ask for decisions in any agent's name without a task credential"
        ),
        DecideAccess::Anyone => tracing::info!(
            "decisions without a task credential: anyone who reaches the loopback addresses"
        ),
        DecideAccess::Callers if callers.is_empty() => tracing::warn!(
            "decisions without a task credential: only configured callers, and none is configured, so only task credentials decide; add [[callers]] (`mandate callers token`)"
        ),
        DecideAccess::Callers => tracing::info!(
            callers = callers.len(),
            "decisions without a task credential: only configured callers"
        ),
    }
    Ok(callers)
}
