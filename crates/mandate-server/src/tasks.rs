//! The task side of the server, one part per job: who the agents are
//! ([`IssuerKeys`], kept fresh by [`jwks`](crate::jwks)), the credentials
//! issued under tasks and their revocation ([`Credentials`]), this server
//! as a protected resource ([`ResourceMetadata`]), the tokens minted for
//! downstream tools in exchange for a credential (`POST /v1/token`,
//! [`TokenExchange`]), and the state database ([`StateStore`]).
//!
//! [`Tasks`] checks the settings and holds the parts; handlers reach it
//! through [`AppState::tasks`](crate::AppState::tasks), and a decision under
//! a credential through [`Tasks::credentials`].

use std::sync::Arc;
use std::time::Duration;

use mandate_auth::{
    Downstream, ExchangeConfigError, IdentityConfigError, IdentityVerifier, IssuerConfig,
    TaskAuthority, TokenExchange, TokenSigner,
};
use mandate_core::provenance::GroundingKey;
use mandate_store::{StateError, StateStore};

use crate::credentials::Credentials;
use crate::jwks::{IssuerKeys, KeySource};
use crate::resource::ResourceMetadata;

/// The deepest delegation a task may allow (`max_depth`). Each hop adds a
/// block of a few hundred bytes to the credential.
pub const MAX_DELEGATION_DEPTH: u32 = 16;

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

/// The task side's parts. Shared by every handler through
/// [`AppState::tasks`](crate::AppState::tasks).
pub struct Tasks {
    identity: IssuerKeys,
    credentials: Credentials,
    resource: ResourceMetadata,
    exchange: TokenExchange,
    store: Arc<dyn StateStore>,
    max_ttl: Duration,
    grounding: GroundingKey,
}

/// Names the secret that keys the digests of the values a task's session
/// saw, derived from the task signing key so that every instance sharing
/// the key shares it.
const GROUNDING_LABEL: &[u8] = b"mandate grounding key v1\0";

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("issuers", &self.identity.len())
            .field("credentials", &self.credentials)
            .field("resource", &self.resource.resource())
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
        let resource = check_settings(&settings, &issuers)?;
        let identity = IssuerKeys::fixed(issuers)?;
        let exchange = TokenExchange::new(
            settings.resource.clone(),
            TokenSigner::derive(&authority)?,
            Vec::new(),
        )?;
        let grounding = GroundingKey::new(authority.derive_secret(GROUNDING_LABEL));
        let credentials =
            Credentials::new(authority, settings.audience, Arc::clone(&store)).await?;
        Ok(Self {
            identity,
            credentials,
            resource,
            exchange,
            store,
            max_ttl: settings.max_ttl,
            grounding,
        })
    }

    /// Checks the issuers and the settings as [`new`](Self::new) does,
    /// without a key or a store: for a caller that creates those only for a
    /// configuration that is valid.
    pub fn check_config(
        issuers: &[IssuerConfig],
        settings: &TaskSettings,
    ) -> Result<(), TasksError> {
        check_settings(settings, issuers)?;
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
            self.resource.resource().to_owned(),
            TokenSigner::derive(self.credentials.authority())?,
            downstream,
        )?;
        Ok(self)
    }

    /// The identity issuers and their keys: who the agents are.
    pub fn identities(&self) -> &IssuerKeys {
        &self.identity
    }

    /// The key of the value digests in task and agent sessions.
    pub fn grounding_key(&self) -> &GroundingKey {
        &self.grounding
    }

    /// The task authority, credential verification and revocation.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// This server as a protected resource (RFC 9728).
    pub fn resource(&self) -> &ResourceMetadata {
        &self.resource
    }

    /// The downstream resources and the key that signs their tokens.
    pub fn exchange(&self) -> &TokenExchange {
        &self.exchange
    }

    /// The state database.
    pub fn store(&self) -> &dyn StateStore {
        self.store.as_ref()
    }

    /// The longest lifetime a task may be started with.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }
}

/// Checks the settings; returns the resource's metadata.
fn check_settings(
    settings: &TaskSettings,
    issuers: &[IssuerConfig],
) -> Result<ResourceMetadata, TasksError> {
    let authorization_servers = issuers
        .iter()
        .filter(|i| !i.issuer.is_empty())
        .map(|i| i.issuer.clone())
        .collect();
    let resource = ResourceMetadata::new(&settings.resource, authorization_servers)
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
    Ok(resource)
}
