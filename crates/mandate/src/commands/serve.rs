//! `mandate serve`: resolve settings, prepare the data directory, serve.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use mandate_server::{AppState, ReceiptSettings, ServerConfig, policy_dir, reload};
use mandate_store::{Ledger, LedgerConfig, StoreError};

use crate::cli::{LogFormat, ReceiptArguments, ServeArgs};
use crate::config::Settings;
use crate::exit::Code;
use crate::ledger_files;

pub fn run(args: ServeArgs) -> anyhow::Result<Code> {
    let settings = match Settings::resolve(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Code::Input);
        }
    };
    init_logging(settings.log_format);

    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory `{}`",
            settings.data_dir.display()
        )
    })?;
    let dir = settings.policy_dir();
    if settings.policies.is_none() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        if policy_dir::seed_example(&dir)? {
            tracing::info!(directory = %dir.display(), "wrote the example policy pack; edit it, or point --policies elsewhere");
        }
    }
    let sources = match policy_dir::read(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Code::Input);
        }
    };
    let pack = match sources.load() {
        Ok(pack) => pack,
        Err(e) => {
            for p in &e.problems {
                eprintln!("{p}");
            }
            eprintln!(
                "error: the policy pack in `{}` does not load; fix it and start again",
                dir.display()
            );
            return Ok(Code::Input);
        }
    };
    for w in pack.warnings() {
        tracing::warn!("{w}");
    }
    tracing::info!(directory = %dir.display(), version = %pack.version(), policies = ?pack.counts(), "policies loaded");

    let config = ServerConfig {
        listen: settings.listen,
        max_body_bytes: settings.max_body_bytes,
        reload_interval: Duration::from_millis(settings.reload_interval_ms),
    };
    // A missing or wrong key is a configuration mistake (exit 2), like a bad flag.
    let key = match ledger_files::load_or_generate_key(
        &settings.data_dir,
        settings.signing_key_file.as_deref(),
    ) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Code::Input);
        }
    };
    let ledger_path = ledger_files::ledger_path(&settings.data_dir);
    ledger_files::create_ledger_file(&ledger_path)?;
    let ledger = match Ledger::open(
        &ledger_path,
        key,
        LedgerConfig {
            checkpoint_interval: Duration::from_millis(settings.checkpoint_interval_ms),
            ..LedgerConfig::default()
        },
    ) {
        Ok(ledger) => ledger,
        Err(e @ StoreError::KeyMismatch { .. }) => {
            eprintln!("error: {e}");
            return Ok(Code::Input);
        }
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
    let receipts = ReceiptSettings::new(
        settings.receipt_arguments == ReceiptArguments::Digest,
        &settings.receipt_redact,
    );
    let state = AppState::new(pack, dir, Utc::now(), ledger.clone(), receipts);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        tokio::spawn(reload::watch(
            state.clone(),
            sources,
            config.reload_interval,
        ));
        let served = mandate_server::serve(config.clone(), state)
            .await
            .with_context(|| format!("cannot serve on {}", config.listen));
        // Sign a last checkpoint so that the log's head covers every receipt.
        match ledger.close().await {
            Ok(checkpoint) => tracing::info!(size = checkpoint.size, "receipt ledger closed"),
            Err(e) => tracing::error!(error = %e, "receipt ledger did not close cleanly; it recovers on next start"),
        }
        served
    })?;
    Ok(Code::Ok)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
