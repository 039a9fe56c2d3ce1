//! `mandate store migrate`: a single-process deployment onto PostgreSQL.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use mandate_store::postgres::{ImportError, PgStore, redact};
use mandate_store::{LedgerConfig, LedgerError, StateError};
use serde_json::json;

use crate::cli::StoreMigrateArgs;
use crate::data_lock;
use crate::exit::Code;
use crate::output::emit;
use crate::{ledger_files, task_files};

pub fn migrate(args: StoreMigrateArgs) -> anyhow::Result<Code> {
    let state_db = task_files::state_path(&args.from);
    let ledger_db = ledger_files::ledger_path(&args.from);
    for (path, what) in [
        (&state_db, "state database"),
        (&ledger_db, "receipt ledger"),
    ] {
        if !path.is_file() {
            eprintln!(
                "error: no {what} at `{}`: --from names the data directory of a single-process `mandate serve`",
                path.display()
            );
            return Ok(Code::Input);
        }
    }
    if !(args.to.starts_with("postgres://") || args.to.starts_with("postgresql://")) {
        eprintln!(
            "error: --to must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE (got `{}`)",
            redact(&args.to)
        );
        return Ok(Code::Input);
    }
    // The server must be stopped: a receipt written during the copy would
    // be left behind.
    let _lock = match data_lock::acquire(&args.from)
        .with_context(|| format!("cannot lock `{}`", args.from.display()))?
    {
        Ok(lock) => lock,
        Err(in_use) => {
            eprintln!("error: {in_use}; stop it before moving its data");
            return Ok(Code::Input);
        }
    };
    let key_path = args
        .signing_key_file
        .clone()
        .unwrap_or_else(|| ledger_files::default_key_path(&args.from));
    let key = match ledger_files::read_key(&key_path) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Code::Input);
        }
    };
    let task_key_path = args
        .task_signing_key_file
        .clone()
        .unwrap_or_else(|| task_files::default_key_path(&args.from));
    let task_key = if task_key_path.is_file() {
        match task_files::load_or_generate_key(&args.from, Some(&task_key_path), false) {
            Ok(authority) => Some(format!("ed25519/{}", authority.public_key_hex())),
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(Code::Input);
            }
        }
    } else {
        None
    };

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = match PgStore::connect(&args.to).await {
            Ok(store) => store,
            Err(e @ StateError::Unsupported(_)) => {
                eprintln!("error: {e}");
                return Ok(Code::Input);
            }
            Err(e) => {
                eprintln!("error: cannot open `{}`: {e}", redact(&args.to));
                return Ok(Code::Failure);
            }
        };
        let show_progress = std::io::stderr().is_terminal();
        let imported = store
            .import_sqlite(&state_db, &ledger_db, |n| {
                if show_progress {
                    eprint!("\rcopied {n} receipts");
                }
            })
            .await;
        if show_progress {
            eprintln!();
        }
        let imported = match imported {
            Ok(imported) => imported,
            Err(e @ ImportError::NotEmpty(_)) => {
                eprintln!("error: {e}");
                return Ok(Code::Input);
            }
            Err(e) => {
                eprintln!("error: nothing was moved: {e}");
                return Ok(Code::Failure);
            }
        };
        if let Some(task_key) = &task_key
            && let Err(e) = store.agree("task_public_key", task_key).await
        {
            eprintln!("error: {e}");
            return Ok(Code::Failure);
        }
        // Opening the log is the check every instance makes at start: the
        // copied leaves must hash to the newest checkpoint, signed by this
        // key.
        let config = LedgerConfig {
            checkpoint_interval: Duration::from_secs(3600),
            ..LedgerConfig::default()
        };
        let log = match store.log(key, config).await {
            Ok(log) => log,
            Err(e @ LedgerError::KeyMismatch { .. }) => {
                eprintln!("error: {e}");
                return Ok(Code::Input);
            }
            Err(e) => {
                eprintln!("error: the copied log does not check: {e}");
                return Ok(Code::Failure);
            }
        };
        let checkpoint = log.close().await?;
        let text = if args.json {
            format!(
                "{}\n",
                serde_json::to_string_pretty(&json!({
                    "store": store.url(),
                    "receipts": imported.receipts,
                    "checkpoints": imported.checkpoints,
                    "tasks": imported.tasks,
                    "approvals": imported.approvals,
                    "journaled": imported.journaled,
                    "checkpoint_size": checkpoint.size,
                }))?
            )
        } else {
            format!(
                "moved {} receipts, {} checkpoints, {} tasks, {} approvals and {} journaled decisions to {}; the log checks against its newest checkpoint (size {}).\nStart each instance with store = that URL and this data directory's keys (docs/deployment.md).\n",
                imported.receipts,
                imported.checkpoints,
                imported.tasks,
                imported.approvals,
                imported.journaled,
                store.url(),
                checkpoint.size
            )
        };
        emit(&text)?;
        Ok(Code::Ok)
    })
}
