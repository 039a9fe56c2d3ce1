//! Tasks and who may act under them: the trusted identity issuers, the task
//! authority that mints credentials, the verified-credential cache, the
//! state database and the set of revoked credential ids.
//!
//! [`Tasks`] is the part of [`AppState`](crate::AppState) the task endpoints
//! use, and what `POST /v1/decide` and result reports use to accept a task
//! credential ([`Tasks::verify_credential`]). Revocation is checked on every
//! call from an in-memory set, loaded from the state database at start and
//! updated whenever a task ends (by a caller, or by [`expire_tasks`] when its
//! TTL runs out) before anyone is told about the end.
//!
//! The issuers' keys are kept fresh by [`jwks`](crate::jwks); the JWTs
//! minted for downstream tools in exchange for a credential (`POST
//! /v1/token`) by the [`TokenExchange`] here.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mandate_auth::{
    CredentialError, CredentialVerifier, Downstream, ExchangeConfigError, IdentityConfigError,
    IdentityError, IdentityVerifier, IssuerConfig, TaskAuthority, TokenExchange, TokenSigner,
    VerificationCache, VerifiedCredential, VerifiedIdentity,
};
use mandate_store::{END_REASON_ENDED, EndedTask, StateError, StateStore};

use crate::jwks::{IssuerKeys, KeySource};

/// Where the token endpoint (RFC 8693) is, below the resource.
pub const TOKEN_PATH: &str = "/v1/token";

/// Where the JWKS of the tokens Mandate mints is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The path of the RFC 9728 protected resource metadata, before the
/// resource's own path.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The deepest delegation a task may allow (`max_depth`). Each hop adds a
/// block of a few hundred bytes to the credential.
pub const MAX_DELEGATION_DEPTH: u32 = 16;

/// How long after its task's expiry a revoked id is still held: a margin
/// over the credential's own expiry check, which needs none.
const REVOKED_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// What the task endpoints need from the configuration.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// Audience of the task credentials Mandate mints and accepts.
    pub audience: String,
    /// This server's resource identifier (RFC 8707, RFC 9728), an absolute
    /// `http` or `https` URL without query or fragment.
    pub resource: String,
    /// The longest lifetime a task may be started with.
    pub max_ttl: Duration,
}

/// Why the task part of the state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TasksError {
    /// An identity issuer is misconfigured.
    #[error(transparent)]
    Identity(#[from] IdentityConfigError),
    /// The state database could not be read.
    #[error(transparent)]
    Store(#[from] StateError),
    /// The resource identifier is not an absolute URL Mandate can serve
    /// metadata for.
    #[error(
        "`resource` `{0}` must be an absolute http:// or https:// URL with a host and without query or fragment"
    )]
    Resource(String),
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The token exchange (downstream resources) is misconfigured.
    #[error(transparent)]
    Exchange(#[from] ExchangeConfigError),
}

/// Identity issuers, the task authority, credential verification, the state
/// database and the revoked ids. Shared by every handler through
/// [`AppState::tasks`](crate::AppState::tasks).
pub struct Tasks {
    identity: IssuerKeys,
    exchange: TokenExchange,
    authorization_servers: Vec<String>,
    authority: TaskAuthority,
    verifier: CredentialVerifier,
    cache: VerificationCache,
    store: Arc<dyn StateStore>,
    /// Revoked credential ids, each until its task's expiry (no
    /// credential of the task is accepted after it anyway).
    revoked: RwLock<HashMap<String, DateTime<Utc>>>,
    resource: String,
    metadata_url: String,
    metadata_path: String,
    max_ttl: Duration,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("issuers", &self.identity.len())
            .field("authority", &self.authority)
            .field("audience", &self.verifier.audience())
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

impl Tasks {
    /// Validates the issuers and the resource identifier, and loads the
    /// revoked ids from `store`. No issuers is allowed: every task endpoint
    /// then answers 401 (fail closed).
    pub async fn new(
        issuers: Vec<IssuerConfig>,
        authority: TaskAuthority,
        store: Arc<dyn StateStore>,
        settings: TaskSettings,
    ) -> Result<Self, TasksError> {
        let (metadata_url, metadata_path) = check_settings(&settings)?;
        let authorization_servers = issuers
            .iter()
            .filter(|i| !i.issuer.is_empty())
            .map(|i| i.issuer.clone())
            .collect();
        let identity = IssuerKeys::fixed(issuers)?;
        let exchange = TokenExchange::new(
            settings.resource.clone(),
            TokenSigner::derive(&authority)?,
            Vec::new(),
        )?;
        let verifier = authority.verifier(settings.audience);
        let revoked = store.revoked_ids(Utc::now()).await?;
        Ok(Self {
            identity,
            exchange,
            authorization_servers,
            authority,
            verifier,
            cache: VerificationCache::default(),
            store,
            revoked: RwLock::new(revoked),
            resource: settings.resource,
            metadata_url,
            metadata_path,
            max_ttl: settings.max_ttl,
        })
    }

    /// Checks the issuers and the settings as [`new`](Self::new) does,
    /// without a key or a store: for a caller that creates those only for a
    /// configuration that is valid.
    pub fn check_config(
        issuers: &[IssuerConfig],
        settings: &TaskSettings,
    ) -> Result<(), TasksError> {
        check_settings(settings)?;
        IdentityVerifier::new(issuers.to_vec())?;
        Ok(())
    }

    /// The same, with the issuers' keys read from `sources` (one per issuer,
    /// in the order given to [`new`](Self::new), with its refresh
    /// interval) and kept fresh by [`background`](crate::background).
    /// An issuer whose source is a URL is given with its keys pending
    /// ([`IssuerConfig::with_keys_pending`]).
    pub fn with_key_sources(
        mut self,
        sources: Vec<(KeySource, Duration)>,
    ) -> Result<Self, TasksError> {
        self.identity = IssuerKeys::with_sources(self.identity.configs().to_vec(), sources)?;
        Ok(self)
    }

    /// The same, minting tokens for these downstream resources (`POST
    /// /v1/token`). None by default: every exchange is `invalid_target`.
    pub fn with_downstream(mut self, downstream: Vec<Downstream>) -> Result<Self, TasksError> {
        self.exchange = TokenExchange::new(
            self.resource.clone(),
            TokenSigner::derive(&self.authority)?,
            downstream,
        )?;
        Ok(self)
    }

    /// Whether any identity issuer is configured. Without one, no task can
    /// be started or used.
    pub fn has_issuers(&self) -> bool {
        !self.identity.is_empty()
    }

    /// Keys the identity verifier skipped, for the operator's log.
    pub fn identity_warnings(&self) -> Vec<String> {
        self.identity.warnings()
    }

    /// The issuers' keys, and their refresh.
    pub fn issuer_keys(&self) -> &IssuerKeys {
        &self.identity
    }

    /// Verifies an agent's workload identity token (JWT) at `now`. A token
    /// naming a key its issuer's set does not hold makes the set be read
    /// again first (rate-limited; see [`jwks`](crate::jwks)).
    pub async fn verify_identity(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedIdentity, IdentityError> {
        self.identity.verify(token, now).await
    }

    /// The downstream resources and the key that signs their tokens.
    pub fn exchange(&self) -> &TokenExchange {
        &self.exchange
    }

    /// The URL of the token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}{TOKEN_PATH}", self.resource.trim_end_matches('/'))
    }

    /// The URL of the JWKS of the tokens Mandate mints.
    pub fn jwks_uri(&self) -> String {
        format!("{}{JWKS_PATH}", self.resource.trim_end_matches('/'))
    }

    /// Verifies a task credential at `now`: from the cache when it was
    /// verified before, and against the revoked ids on every call.
    pub fn verify_credential(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<VerifiedCredential>, CredentialError> {
        self.cache
            .get_or_verify(&self.verifier, token, now, |ids| self.is_revoked(ids))
    }

    /// Whether any of `ids` is revoked.
    pub fn is_revoked(&self, ids: &[String]) -> bool {
        let revoked = self.revoked.read().unwrap_or_else(PoisonError::into_inner);
        ids.iter().any(|id| revoked.contains_key(id))
    }

    /// Adds `ids` to the revoked set, effective for every later call, until
    /// `until` (their task's expiry) has passed.
    pub fn revoke<'a>(&self, ids: impl IntoIterator<Item = &'a String>, until: DateTime<Utc>) {
        let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
        revoked.extend(ids.into_iter().map(|id| (id.clone(), until)));
    }

    /// Forgets revoked ids whose task expired more than
    /// [`REVOKED_GRACE`] before `now`: their credentials are refused as
    /// expired. Keeps the set as large as the tasks alive, not as every
    /// task ever ended.
    fn forget_expired_revocations(&self, now: DateTime<Utc>) {
        let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
        revoked.retain(|_, until| *until + REVOKED_GRACE > now);
    }

    /// How many revoked ids are held in memory.
    pub fn revoked_in_memory(&self) -> usize {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The authority that mints and delegates task credentials.
    pub fn authority(&self) -> &TaskAuthority {
        &self.authority
    }

    /// The audience of the task credentials Mandate mints.
    pub fn audience(&self) -> &str {
        self.verifier.audience()
    }

    /// The authority's public key as `ed25519/<hex>`, which verifies every
    /// task credential offline.
    pub fn public_key(&self) -> String {
        format!("ed25519/{}", self.authority.public_key_hex())
    }

    /// This server's resource identifier.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The issuers of the configured identity tokens, as RFC 9728
    /// `authorization_servers` (SPIFFE trust domains without an `issuer` are
    /// not listed).
    pub fn authorization_servers(&self) -> &[String] {
        &self.authorization_servers
    }

    /// The URL of the protected resource metadata (RFC 9728 §3.1).
    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// The path this server serves the metadata at, besides
    /// [`METADATA_PATH`] (the same, when the resource has no path).
    pub fn metadata_path(&self) -> &str {
        &self.metadata_path
    }

    /// The longest lifetime a task may be started with.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// The state database.
    pub fn store(&self) -> &dyn StateStore {
        self.store.as_ref()
    }

    /// Ends task `id` at `now` (a caller's end) and revokes every credential
    /// issued under it, in the state database and then in memory. Returns
    /// the task as ended with the revoked ids. Ending an ended task changes
    /// nothing and returns the same.
    pub async fn end(&self, id: &str, now: DateTime<Utc>) -> Result<EndedTask, StateError> {
        let ended = self.store.end_task(id, now, END_REASON_ENDED).await?;
        self.revoke(&ended.revoked, ended.task.expires_at);
        Ok(ended)
    }

    /// Ends every task whose TTL has run out at `now` and revokes its
    /// credentials; returns how many tasks ended.
    pub async fn end_expired(&self, now: DateTime<Utc>) -> Result<usize, StateError> {
        let ended = self.store.end_expired(now).await?;
        for (task_id, ids) in &ended {
            // The task's expiry is `now` or earlier.
            self.revoke(ids, now);
            tracing::info!(%task_id, credentials = ids.len(), "task expired; its credentials are revoked");
        }
        self.cache.purge(now, |ids| self.is_revoked(ids));
        self.forget_expired_revocations(now);
        Ok(ended.len())
    }
}

/// Checks the settings; returns the metadata URL and path.
fn check_settings(settings: &TaskSettings) -> Result<(String, String), TasksError> {
    let location = metadata_location(&settings.resource)
        .ok_or_else(|| TasksError::Resource(settings.resource.clone()))?;
    if settings.audience.trim().is_empty() {
        return Err(TasksError::Invalid(
            "`audience` (of task credentials) must not be empty".to_owned(),
        ));
    }
    if settings.max_ttl.is_zero() {
        return Err(TasksError::Invalid(
            "`task_max_ttl_seconds` must be positive".to_owned(),
        ));
    }
    Ok(location)
}

/// Where the protected resource metadata of `resource` lives (RFC 9728
/// §3.1: the well-known path goes between the host and the resource's
/// path): its URL, and the path this server answers on.
fn metadata_location(resource: &str) -> Option<(String, String)> {
    let (scheme, rest) = resource.split_once("://")?;
    if !matches!(scheme, "http" | "https") || resource.contains(['?', '#']) {
        return None;
    }
    if resource
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return None;
    }
    let path = format!("{METADATA_PATH}{}", path.trim_end_matches('/'));
    Some((format!("{scheme}://{authority}{path}"), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_goes_between_host_and_path() {
        assert_eq!(
            metadata_location("https://mandate.example.com"),
            Some((
                "https://mandate.example.com/.well-known/oauth-protected-resource".to_owned(),
                METADATA_PATH.to_owned()
            ))
        );
        assert_eq!(
            metadata_location("http://127.0.0.1:8181/"),
            Some((
                "http://127.0.0.1:8181/.well-known/oauth-protected-resource".to_owned(),
                METADATA_PATH.to_owned()
            ))
        );
        assert_eq!(
            metadata_location("https://gw.example.com/mandate"),
            Some((
                "https://gw.example.com/.well-known/oauth-protected-resource/mandate".to_owned(),
                "/.well-known/oauth-protected-resource/mandate".to_owned()
            ))
        );
        for bad in [
            "mandate",
            "ftp://x",
            "https://",
            "https:///path",
            "https://x/?q",
            "https://x#f",
            "https://x y",
        ] {
            assert_eq!(metadata_location(bad), None, "{bad}");
        }
    }
}
