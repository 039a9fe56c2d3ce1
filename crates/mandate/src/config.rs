//! `mandate serve` settings: defaults, config file, environment, flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::cli::{LogFormat, ReceiptArguments, ServeArgs};

/// Settings that `MANDATE_<NAME>` environment variables can set.
const ENV_KEYS: [&str; 10] = [
    "listen",
    "data_dir",
    "policies",
    "max_body_bytes",
    "reload_interval_ms",
    "log_format",
    "signing_key_file",
    "checkpoint_interval_ms",
    "receipt_arguments",
    "receipt_redact",
];

/// Resolved settings for `mandate serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub policies: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub reload_interval_ms: u64,
    pub log_format: LogFormat,
    pub signing_key_file: Option<PathBuf>,
    pub checkpoint_interval_ms: u64,
    pub receipt_arguments: ReceiptArguments,
    pub receipt_redact: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            data_dir: PathBuf::from("mandate-data"),
            policies: None,
            max_body_bytes: 1024 * 1024,
            reload_interval_ms: 1000,
            log_format: LogFormat::Text,
            signing_key_file: None,
            checkpoint_interval_ms: 5000,
            receipt_arguments: ReceiptArguments::Copy,
            receipt_redact: Vec::new(),
        }
    }
}

impl Settings {
    /// Defaults, then the config file, then `MANDATE_*`, then flags.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &args.config {
            anyhow::ensure!(
                path.is_file(),
                "config file `{}` does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment
            // Only known names: other MANDATE_* variables belong to other tools.
            .merge(Env::prefixed("MANDATE_").only(&ENV_KEYS))
            .merge(Serialized::defaults(args));
        let settings: Settings = figment.extract().context("invalid configuration")?;
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
        if let Some(bad) = settings
            .receipt_redact
            .iter()
            .find(|p| p.is_empty() || p.split('.').any(str::is_empty))
        {
            anyhow::bail!(
                "`receipt_redact` path `{bad}` is not a dot-separated list of argument keys (like `body` or `payment.card`)"
            );
        }
        Ok(settings)
    }

    /// The policy directory: configured, or `DATA_DIR/policies`.
    pub fn policy_dir(&self) -> PathBuf {
        self.policies
            .clone()
            .unwrap_or_else(|| self.data_dir.join("policies"))
    }
}
