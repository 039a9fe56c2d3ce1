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
    CREATE TABLE log_meta (
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
];

/// Brings the schema to [`SCHEMA_VERSION`], or refuses a newer one.
pub(crate) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StateError> {
    let tx = client.transaction().await.map_err(pg)?;
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
                    &[&vec!["receipts", "log_head", "checkpoints"]],
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
