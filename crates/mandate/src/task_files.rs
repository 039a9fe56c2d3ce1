//! Where the task state and the task authority's key live, and the identity
//! issuers' keys: JWKS files read at start, JWKS URLs fetched by the server
//! (`mandate_server::jwks`), both refreshed while it runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use mandate_auth::identity::JwkSet;
use mandate_auth::{IssuerConfig, TaskAuthority, parse_jwks};
use mandate_server::jwks::{DEFAULT_REFRESH, KeySource};

use crate::config::{IssuerKind, Settings};
use crate::ledger_files::write_private;

/// The state database (tasks, credentials, revocations, history) in a data
/// directory.
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state.db")
}

/// The generated task signing key in a data directory.
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("tasks.key")
}

/// Reads the key that signs task credentials: the configured file, or the
/// data directory's, generated (mode 0600) if the data directory has none.
/// `issued_before` says whether the state holds tasks, whose credentials a
/// new key stops verifying: only then is generating one worth a warning (on
/// a first start it is what happens).
pub fn load_or_generate_key(
    data_dir: &Path,
    configured: Option<&Path>,
    issued_before: bool,
) -> anyhow::Result<TaskAuthority> {
    if let Some(path) = configured {
        return read_key(path);
    }
    let path = default_key_path(data_dir);
    if path.exists() {
        return read_key(&path);
    }
    if issued_before {
        // Credentials signed by the lost key stop verifying: fail closed.
        tracing::warn!(path = %path.display(), "the task signing key is missing; generating a new one: credentials issued before no longer verify");
    }
    let authority = TaskAuthority::generate();
    write_private(&path, &authority.private_key_hex())?;
    tracing::info!(path = %path.display(), public_key = %format!("ed25519/{}", authority.public_key_hex()), "generated the task signing key");
    Ok(authority)
}

/// Reads a task signing key file (64 hex digits).
fn read_key(path: &Path) -> anyhow::Result<TaskAuthority> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the task signing key `{}`", path.display()))?;
    TaskAuthority::from_private_key_hex(&text).with_context(|| {
        format!(
            "`{}` is not a task signing key (64 hex digits of an Ed25519 private key)",
            path.display()
        )
    })
}

/// Where each configured issuer's keys come from, and how often they are
/// read again (in the order of [`issuers`]).
pub fn key_sources(settings: &Settings) -> Vec<(KeySource, Duration)> {
    settings
        .issuers
        .iter()
        .map(|issuer| {
            let source = match (&issuer.jwks_url, &issuer.jwks_file) {
                (Some(url), _) => KeySource::Url(url.clone()),
                (None, Some(path)) => KeySource::File(path.clone()),
                (None, None) => KeySource::File(PathBuf::new()),
            };
            let refresh = issuer
                .jwks_refresh_seconds
                .map_or(DEFAULT_REFRESH, Duration::from_secs);
            (source, refresh)
        })
        .collect()
}

/// The configured identity issuers, with their JWKS files read; an issuer
/// with a `jwks_url` has its keys pending (the server fetches them).
pub fn issuers(settings: &Settings) -> anyhow::Result<Vec<IssuerConfig>> {
    let resource = settings.resource();
    settings
        .issuers
        .iter()
        .enumerate()
        .map(|(i, issuer)| {
            let entry = i + 1;
            let keys = match (&issuer.jwks_file, &issuer.jwks_url) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
                        format!(
                            "`issuers` entry {entry}: cannot read the JWKS `{}`",
                            path.display()
                        )
                    })?;
                    parse_jwks(&text)
                        .with_context(|| format!("`issuers` entry {entry}: `{}`", path.display()))?
                }
                (None, Some(_)) => JwkSet { keys: Vec::new() },
                (None, None) => {
                    anyhow::bail!("`issuers` entry {entry} has no `jwks_file` or `jwks_url`")
                }
            };
            let audiences = if issuer.audiences.is_empty() {
                vec![resource.clone()]
            } else {
                issuer.audiences.clone()
            };
            let mut config = match issuer.kind {
                IssuerKind::Oidc => {
                    IssuerConfig::oidc(issuer.issuer.clone().unwrap_or_default(), audiences, keys)
                }
                IssuerKind::Spiffe => {
                    let config = IssuerConfig::spiffe(
                        issuer.trust_domain.clone().unwrap_or_default(),
                        audiences,
                        keys,
                    );
                    match &issuer.issuer {
                        Some(iss) => config.with_issuer(iss.clone()),
                        None => config,
                    }
                }
            };
            if let Some(claim) = &issuer.on_behalf_of_claim {
                config = config.with_on_behalf_of_claim(claim.clone());
            }
            if let Some(leeway) = issuer.leeway_seconds {
                config = config.with_leeway(Duration::from_secs(leeway));
            }
            if let Some(max) = issuer.max_token_lifetime_seconds {
                config = config.with_max_lifetime(Duration::from_secs(max));
            }
            if issuer.jwks_url.is_some() {
                config = config.with_keys_pending();
            }
            Ok(config)
        })
        .collect()
}
