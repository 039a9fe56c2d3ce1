//! PostgreSQL: the state and the receipt log of several gateway instances
//! in one database.
//!
//! [`PgStore::connect`] opens a pool on a `postgres://` URL and brings the
//! schema up to date (`schema.rs`); [`PgStore::log`] then serves the
//! [`ReceiptLog`](crate::ReceiptLog) on it ([`PgLog`]) and
//! [`PgStore::state`] the [`StateStore`](crate::StateStore) ([`PgState`]). Every instance
//! pointed at the same database sees the same log: indices are handed out
//! under a row lock on the log's head, so receipts from every instance form
//! one sequence without gaps (see `log.rs`).

mod import;
mod log;
mod notify;
mod schema;
mod state;
mod tls;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

pub use import::{ImportError, Imported};
pub use log::PgLog;
pub use notify::HeldLock;
pub use schema::SCHEMA_VERSION;
pub use state::PgState;
pub use tls::{Roots, TlsMode};

use crate::StateError;

/// How long a connection may take to open, and a caller may wait for one
/// from the pool, before the call fails (and its decision is denied with
/// 503) rather than hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits every session sets (unless the URL sets `options`).
const SESSION_OPTIONS: &str =
    "-c statement_timeout=30s -c lock_timeout=10s -c idle_in_transaction_session_timeout=60s";

/// Connections per instance: enough for group commit, the readers and the
/// approval listener, few enough that three instances fit PostgreSQL's
/// default `max_connections` of 100 many times over.
const POOL_SIZE: usize = 16;

/// A connection pool on one PostgreSQL database, its schema up to date.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The URL without its password, for messages.
    shown: String,
    /// What the listener hears other instances change.
    changes: tokio::sync::broadcast::Sender<crate::StateChange>,
    /// The listener runs while any clone of the store is alive.
    _alive: std::sync::Arc<()>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.shown).finish()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`,
    /// or any form `tokio-postgres` reads) and migrates its schema. TLS is
    /// set in the URL with `sslmode` (`verify-full`, `verify-ca`, `disable`)
    /// and `sslrootcert`, as libpq reads them; see [`TlsMode`].
    ///
    /// Refused with [`StateError::Unsupported`] for a URL that does not
    /// parse, a TLS setting that would not verify the server, or a
    /// database whose schema is newer than this build's;
    /// [`StateError::Unavailable`] when the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        let tls::Split { url: plain, mode } = tls::split(url)?;
        let mut config = tokio_postgres::Config::from_str(&plain).map_err(|e| {
            StateError::Unsupported(format!(
                "`{}` is not a PostgreSQL URL ({e}); write postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                redact(url)
            ))
        })?;
        config.ssl_mode(mode.ssl_mode());
        let connector = mode.connector()?;
        if mode == TlsMode::Disable && !local(&config) {
            tracing::warn!(
                url = %redact(url),
                "the connection to PostgreSQL is not encrypted; add `?sslmode=verify-full` to the URL unless the network between them is private"
            );
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        // A database that stops answering (a partition, not a refusal) must
        // not hold decisions forever: dead peers are found by keepalives,
        // stuck statements and lock waits end, and a transaction left open
        // is rolled back by the server. A URL that sets `options` keeps its own.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_options().is_none() {
            config.options(SESSION_OPTIONS);
        }
        if config.get_application_name().is_none() {
            config.application_name("mandate");
        }
        let listen_config = config.clone();
        let manager = Manager::from_config(
            config,
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StateError::Unsupported(format!("PostgreSQL pool: {e}")))?;
        let alive = std::sync::Arc::new(());
        let (changes, _) = tokio::sync::broadcast::channel(256);
        let store = Self {
            pool,
            shown: redact(url),
            changes: changes.clone(),
            _alive: std::sync::Arc::clone(&alive),
        };
        let mut client = store.client().await?;
        schema::migrate(&mut client).await?;
        drop(client);
        tokio::spawn(notify::listen(
            listen_config,
            connector,
            changes,
            std::sync::Arc::downgrade(&alive),
        ));
        Ok(store)
    }

    /// Serves the receipt log in this database, signing with `key`; see
    /// [`PgLog::open`].
    pub async fn log(
        &self,
        key: mandate_ledger::LogKey,
        config: crate::LedgerConfig,
    ) -> Result<PgLog, crate::LedgerError> {
        PgLog::open(self.pool.clone(), key, config).await
    }

    /// Serves the state in this database; see [`PgState`].
    pub fn state(&self) -> PgState {
        PgState::new(
            self.pool.clone(),
            self.changes.clone(),
            std::sync::Arc::clone(&self._alive),
        )
    }

    /// Records `value` under `name` in the database's settings if none is
    /// recorded, else checks it is the recorded one: what every instance
    /// must share (the task signing key's public half). Another value is a
    /// [`StateError::Conflict`] naming both.
    pub async fn agree(&self, name: &str, value: &str) -> Result<(), StateError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO mandate_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&name, &value],
            )
            .await
            .map_err(StateError::Postgres)?;
        let stored: String = client
            .query_one("SELECT value FROM mandate_meta WHERE key = $1", &[&name])
            .await
            .map_err(StateError::Postgres)?
            .try_get(0)
            .map_err(StateError::Postgres)?;
        if stored == value {
            Ok(())
        } else {
            Err(StateError::Conflict(format!(
                "the database records {name} `{stored}`, this instance has `{value}`"
            )))
        }
    }

    /// Copies a single-process deployment's `state_db` and `ledger_db`
    /// into this database, which must hold no Mandate data yet, in one
    /// transaction; `progress` hears the receipts copied so far. See
    /// `import.rs` for what is copied and why the log stays the same log.
    pub async fn import_sqlite(
        &self,
        state_db: &std::path::Path,
        ledger_db: &std::path::Path,
        progress: impl FnMut(u64),
    ) -> Result<Imported, ImportError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let imported = import::import(&tx, state_db, ledger_db, progress).await?;
        tx.commit().await?;
        Ok(imported)
    }

    /// Writes the whole receipt log as JSON Lines from one snapshot, in
    /// the format and order of [`LedgerReader::export`](crate::LedgerReader::export):
    /// what `mandate receipts verify` checks offline. `progress` hears the
    /// receipts written so far.
    pub async fn export(
        &self,
        out: &mut dyn std::io::Write,
        progress: impl FnMut(u64),
    ) -> Result<crate::ExportSummary, crate::LedgerError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| crate::LedgerError::Unavailable(format!("PostgreSQL: {e}")))?;
        log::export(&mut client, out, progress).await
    }

    /// Journaled decisions matching `query`, oldest first, from one
    /// snapshot, each handed to `each` as it is read; returns how many.
    pub async fn journal(
        &self,
        query: &crate::JournalQuery,
        each: impl FnMut(crate::JournaledDecision) -> Result<(), crate::LedgerError>,
    ) -> Result<u64, crate::LedgerError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| crate::LedgerError::Unavailable(format!("PostgreSQL: {e}")))?;
        log::journal(&mut client, query, each).await
    }

    /// The receipt index of decision `decision_id`, if the log holds it.
    pub async fn receipt_index(
        &self,
        decision_id: &str,
    ) -> Result<Option<u64>, crate::LedgerError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| crate::LedgerError::Unavailable(format!("PostgreSQL: {e}")))?;
        let row = client
            .query_opt(
                "SELECT idx FROM receipts WHERE decision_id = $1",
                &[&decision_id],
            )
            .await?;
        row.map(|row| {
            let idx: i64 = row.try_get(0)?;
            Ok(u64::try_from(idx).unwrap_or(0))
        })
        .transpose()
    }

    /// The URL, without its password.
    pub fn url(&self) -> &str {
        &self.shown
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StateError> {
        self.pool.get().await.map_err(|e| {
            StateError::Unavailable(format!("PostgreSQL at {}: {}", self.shown, causes(&e)))
        })
    }
}

/// `error` and its sources, outermost first: the pool's "error performing
/// TLS handshake" alone would not say that the certificate was refused.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// `url` with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Whether every host of `config` is on this machine (a Unix socket or a
/// loopback address), where TLS would protect nothing.
fn local(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://mandate:s3cret@db:5432/mandate"),
            "postgres://mandate:***@db:5432/mandate"
        );
        assert_eq!(
            redact("postgres://mandate@db/mandate"),
            "postgres://mandate@db/mandate"
        );
        assert_eq!(redact("host=db user=x"), "host=db user=x");
    }
}
