//! The PostgreSQL schema and its migrations.
//!
//! Each migration is one step from version `n` to `n + 1`, applied in a
//! transaction under an advisory lock, so that instances starting together
//! migrate once and never see half a schema. A database whose version is
//! newer than this build's is refused, not touched.

use crate::StateError;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Key of the advisory lock migrations run under (any constant: it only has
/// to be the same in every instance).
const MIGRATION_LOCK: i64 = 0x6d61_6e64_6174_6501;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the receipt log.
    "
    CREATE TABLE mandate_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );

    -- One row: the number of receipts committed. Appending locks it, which
    -- orders every instance's receipts into one sequence.
    CREATE TABLE log_head (
        one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        size BIGINT  NOT NULL CHECK (size >= 0)
    );
    INSERT INTO log_head (size) VALUES (0);

    -- One row per receipt; idx is the Merkle leaf index. The columns after
    -- `signature` copy fields of the body so that receipts can be searched.
    CREATE TABLE receipts (
        idx         BIGINT PRIMARY KEY CHECK (idx >= 0),
        decision_id TEXT   NOT NULL UNIQUE,
        leaf_hash   BYTEA  NOT NULL CHECK (length(leaf_hash) = 32),
        body        TEXT   NOT NULL,
        signature   BYTEA  NOT NULL,
        time        TEXT   NOT NULL,
        principal   TEXT   NOT NULL,
        task_id     TEXT,
        tool        TEXT   NOT NULL,
        decision    TEXT   NOT NULL,
        kind        TEXT   NOT NULL
    );
    CREATE INDEX receipts_task ON receipts (task_id, idx);
    CREATE INDEX receipts_principal ON receipts (principal, idx);

    CREATE TABLE checkpoints (
        size       BIGINT      PRIMARY KEY CHECK (size >= 0),
        root       BYTEA       NOT NULL CHECK (length(root) = 32),
        note       TEXT        NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );

    -- Which instance signs the periodic checkpoints, and until when.
    CREATE TABLE checkpoint_lease (
        one    BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (one),
        holder TEXT        NOT NULL,
        until  TIMESTAMPTZ NOT NULL
    );
    ",
    // 2: the state, as SQLite's state.db (schema 7) keeps it: times as
    // fixed-width RFC 3339 text, lists and objects as JSON text.
    "
    CREATE TABLE tasks (
        id                 TEXT   PRIMARY KEY,
        agent              TEXT   NOT NULL,
        on_behalf_of       TEXT,
        intent             TEXT   NOT NULL,
        tools              TEXT   NOT NULL,
        labels             TEXT   NOT NULL,
        params             TEXT   NOT NULL,
        audience           TEXT   NOT NULL,
        max_depth          BIGINT NOT NULL,
        created_at         TEXT   NOT NULL,
        expires_at         TEXT   NOT NULL,
        ended_at           TEXT,
        end_reason         TEXT,
        root_revocation_id TEXT   NOT NULL UNIQUE,
        CHECK ((ended_at IS NULL) = (end_reason IS NULL))
    );
    CREATE INDEX tasks_open_by_expiry ON tasks (expires_at) WHERE ended_at IS NULL;
    CREATE INDEX tasks_by_time ON tasks (created_at DESC, id DESC);

    CREATE TABLE credentials (
        seq                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        revocation_id        TEXT   NOT NULL UNIQUE,
        task_id              TEXT   NOT NULL REFERENCES tasks (id),
        parent_revocation_id TEXT   REFERENCES credentials (revocation_id),
        agent                TEXT   NOT NULL,
        depth                BIGINT NOT NULL,
        tools                TEXT   NOT NULL,
        labels               TEXT   NOT NULL,
        issued_at            TEXT   NOT NULL,
        expires_at           TEXT   NOT NULL
    );
    CREATE INDEX credentials_by_task ON credentials (task_id, seq);

    CREATE TABLE revocations (
        seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        revocation_id TEXT   NOT NULL UNIQUE REFERENCES credentials (revocation_id),
        task_id       TEXT   NOT NULL REFERENCES tasks (id),
        revoked_at    TEXT   NOT NULL
    );
    CREATE INDEX revocations_by_task ON revocations (task_id);

    -- seq is a decision's position in its task's session: under the task's
    -- row lock, a later decision of the task gets a larger one.
    CREATE TABLE history (
        seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        decision_id   TEXT   NOT NULL UNIQUE,
        task_id       TEXT   NOT NULL REFERENCES tasks (id),
        agent         TEXT   NOT NULL,
        server        TEXT   NOT NULL,
        tool          TEXT   NOT NULL,
        decision      TEXT   NOT NULL,
        decided_at    TEXT   NOT NULL,
        result_status TEXT,
        result_labels TEXT,
        result_at     TEXT,
        annotations   TEXT,
        credential    TEXT,
        CHECK ((result_status IS NULL) = (result_at IS NULL)),
        CHECK ((result_status IS NULL) = (result_labels IS NULL))
    );
    CREATE INDEX history_by_task ON history (task_id, seq);

    CREATE TABLE sessions (
        task_id TEXT PRIMARY KEY REFERENCES tasks (id),
        summary TEXT NOT NULL
    );

    CREATE TABLE agent_sessions (
        agent      TEXT NOT NULL,
        session    TEXT NOT NULL,
        summary    TEXT NOT NULL,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (agent, session)
    );

    CREATE TABLE approvals (
        id             TEXT PRIMARY KEY,
        decision_id    TEXT NOT NULL UNIQUE,
        request_sha256 TEXT NOT NULL,
        requester      TEXT NOT NULL,
        agent          TEXT NOT NULL,
        task_id        TEXT,
        status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used', 'withdrawn')),
        created_at     TEXT NOT NULL,
        expires_at     TEXT NOT NULL,
        resolved_at    TEXT,
        resolved_by    TEXT,
        reason         TEXT,
        released_by    TEXT,
        summary        TEXT NOT NULL,
        receipt        TEXT NOT NULL
    );
    CREATE INDEX approvals_pending ON approvals (expires_at) WHERE status = 'pending';
    CREATE INDEX approvals_open_by_agent ON approvals (agent, expires_at)
        WHERE status IN ('pending', 'withdrawn');
    CREATE INDEX approvals_open_by_task ON approvals (task_id, created_at)
        WHERE status IN ('pending', 'withdrawn');
    CREATE INDEX approvals_by_time ON approvals (created_at DESC, id DESC);

    CREATE TABLE token_exchanges (
        decision_id  TEXT PRIMARY KEY REFERENCES history (decision_id),
        task_id      TEXT NOT NULL REFERENCES tasks (id),
        credential   TEXT NOT NULL,
        resource     TEXT NOT NULL,
        token_id     TEXT NOT NULL UNIQUE,
        scope        TEXT NOT NULL,
        exchanged_at TEXT NOT NULL,
        expires_at   TEXT NOT NULL
    );
    ",
    // Version 3: the pending approvals by the request they are bound to,
    // which a repeat of the same request waits on instead of opening
    // another.
    "
    CREATE INDEX approvals_pending_by_request ON approvals (request_sha256)
        WHERE status = 'pending';
    ",
    // Version 4: the decision journal (as SQLite's ledger.db schema 2 keeps
    // it), written in its receipt's transaction, pruned without touching
    // `receipts`; the head counts the journal's bytes for retention.
    "
    CREATE TABLE journal (
        idx            BIGINT PRIMARY KEY CHECK (idx >= 0),
        time           TEXT   NOT NULL,
        bytes          BIGINT NOT NULL,
        task_id        TEXT,
        tool           TEXT   NOT NULL,
        decision_id    TEXT   NOT NULL,
        decision       TEXT   NOT NULL,
        outcome        TEXT   NOT NULL,
        policy_version TEXT   NOT NULL,
        policies       TEXT   NOT NULL,
        scope          TEXT,
        redacted       TEXT,
        request        TEXT   NOT NULL
    );
    ALTER TABLE log_head ADD COLUMN journal_bytes BIGINT NOT NULL DEFAULT 0;
    ",
];

/// Brings the schema to [`SCHEMA_VERSION`], or refuses a newer one.
pub(crate) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StateError> {
    let tx = client.transaction().await.map_err(pg)?;
    // `IF NOT EXISTS` below would log a notice on every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS mandate_schema (
             one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
             version INTEGER NOT NULL
         )",
    )
    .await
    .map_err(pg)?;
    let version: i32 = match tx
        .query_opt("SELECT version FROM mandate_schema", &[])
        .await
        .map_err(pg)?
    {
        Some(row) => row.try_get(0).map_err(pg)?,
        None => {
            // Not a Mandate database yet; refuse one that holds anything
            // else with our table names rather than write into it.
            let taken: i64 = tx
                .query_one(
                    "SELECT count(*) FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_name = ANY($1)",
                    &[&vec![
                        "receipts",
                        "log_head",
                        "checkpoints",
                        "tasks",
                        "approvals",
                    ]],
                )
                .await
                .map_err(pg)?
                .try_get(0)
                .map_err(pg)?;
            if taken > 0 {
                return Err(StateError::Unsupported(
                    "the database holds tables named like Mandate's but no Mandate schema version: give Mandate a database of its own".to_owned(),
                ));
            }
            tx.execute("INSERT INTO mandate_schema (version) VALUES (0)", &[])
                .await
                .map_err(pg)?;
            0
        }
    };
    if version > SCHEMA_VERSION {
        return Err(StateError::Unsupported(format!(
            "the database was written by a newer Mandate (schema {version}, this build knows {SCHEMA_VERSION}): upgrade this instance"
        )));
    }
    let from = usize::try_from(version).unwrap_or(0);
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.batch_execute(sql).await.map_err(pg)?;
        tracing::info!(version = step + 1, "migrated the PostgreSQL schema");
    }
    tx.execute("UPDATE mandate_schema SET version = $1", &[&SCHEMA_VERSION])
        .await
        .map_err(pg)?;
    tx.commit().await.map_err(pg)
}

/// A database error as the state store reports it.
pub(crate) fn pg(e: tokio_postgres::Error) -> StateError {
    StateError::Postgres(e)
}
