//! Identity issuers' keys, kept fresh: each issuer's JWKS comes from a file
//! (`jwks_file`) or a URL (`jwks_url`), and is read again every refresh
//! interval and when a token names a key the set does not hold.
//!
//! * **At start** the URLs are fetched once before the server listens
//!   ([`IssuerKeys::fetch_pending`]), each bounded by [`FETCH_TIMEOUT`]. An
//!   issuer whose URL cannot be read does not stop the server: its tokens
//!   are refused (`keys_unavailable`, fail closed) and the URL is tried
//!   again every [`PENDING_RETRY`] until it answers.
//! * **Periodically**, every issuer's refresh interval, the file is read or
//!   the URL fetched again.
//! * **On an unknown `kid`** (a rotation the periodic refresh has not seen
//!   yet), the token's issuer is refreshed at once, at most once per
//!   [`ON_DEMAND_INTERVAL`] per issuer, and the token verified again.
//! * **A failed refresh keeps the last good keys**: an unreachable URL, a
//!   non-200 answer, a body over [`MAX_JWKS_BYTES`], or a JWKS that does not
//!   load (no usable key, a symmetric key, …). Tokens are never accepted on
//!   an empty key set.
//!
//! The fetch is the only network I/O of the identity path; verification
//! itself (`mandate-auth`) is pure and takes the parsed sets.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use mandate_auth::identity::JwkSet;
use mandate_auth::{
    IdentityConfigError, IdentityError, IdentityVerifier, IssuerConfig, VerifiedIdentity,
    parse_jwks,
};

/// The longest a JWKS fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a URL whose keys were never fetched is tried again.
pub const PENDING_RETRY: Duration = Duration::from_secs(5);

/// The shortest time between two refreshes of one issuer caused by unknown
/// key ids: a caller sending made-up `kid`s cannot make Mandate hammer the
/// identity provider.
pub const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(30);

/// The largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The refresh interval unless configured.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS file, read again at every refresh.
    File(PathBuf),
    /// A JWKS URL: `https://`, or `http://` on a loopback address only.
    Url(String),
}

impl KeySource {
    /// A URL source, if `url` is one Mandate fetches keys from: `https`, or
    /// `http` to a loopback address (a local identity provider or a test);
    /// without credentials in the URL or a fragment.
    pub fn url(url: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let loopback = parsed.host_str().is_some_and(|host| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match parsed.scheme() {
            "https" if parsed.host().is_some() => {}
            "http" if loopback => {}
            _ => {
                return Err(format!(
                    "`{url}` must be an https:// URL (plain http:// only to a loopback address): keys fetched in clear text could be replaced on the way"
                ));
            }
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!("`{url}` must not carry credentials"));
        }
        if parsed.fragment().is_some() {
            return Err(format!("`{url}` must not have a fragment"));
        }
        Ok(Self::Url(url.to_owned()))
    }

    fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("`{}`", path.display()),
            Self::Url(url) => format!("`{url}`"),
        }
    }
}

/// One issuer's key source and how its refreshes went.
#[derive(Debug)]
struct Source {
    source: KeySource,
    refresh: Duration,
    /// The last keys that loaded; `None` until a URL answered.
    keys: Option<JwkSet>,
    /// When the source was last read, successfully or not.
    last_attempt: Option<Instant>,
    /// When an unknown `kid` last caused a refresh.
    last_on_demand: Option<Instant>,
}

/// The configured issuers' keys and the verifier built from them.
pub struct IssuerKeys {
    /// The issuers as configured; their keys are replaced from `sources`.
    configs: Vec<IssuerConfig>,
    /// One per issuer; `None` for keys given in place (never refreshed).
    sources: Mutex<Vec<Option<Source>>>,
    verifier: ArcSwap<IdentityVerifier>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Built at the first fetch (it loads the system's trust roots).
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("issuers", &self.configs.len())
            .finish_non_exhaustive()
    }
}

impl IssuerKeys {
    /// Issuers whose keys are given and never refreshed.
    pub fn fixed(configs: Vec<IssuerConfig>) -> Result<Self, IdentityConfigError> {
        let sources = configs.iter().map(|_| None).collect();
        Self::build(configs, sources)
    }

    /// Issuers with a key source each (`configs[i]` from `sources[i]`,
    /// refreshed every `sources[i].1`). A file source's keys are those in
    /// `configs[i]` (read at start); a URL source's config has its keys
    /// pending until [`fetch_pending`](Self::fetch_pending) or a refresh
    /// reads them.
    pub fn with_sources(
        configs: Vec<IssuerConfig>,
        sources: Vec<(KeySource, Duration)>,
    ) -> Result<Self, IdentityConfigError> {
        let sources = configs
            .iter()
            .zip(sources.into_iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(config, source)| {
                source.map(|(source, refresh)| Source {
                    keys: (!config.keys_pending).then(|| config.keys.clone()),
                    source,
                    refresh: refresh.max(Duration::from_secs(1)),
                    last_attempt: None,
                    last_on_demand: None,
                })
            })
            .collect();
        Self::build(configs, sources)
    }

    fn build(
        configs: Vec<IssuerConfig>,
        sources: Vec<Option<Source>>,
    ) -> Result<Self, IdentityConfigError> {
        let verifier = IdentityVerifier::new(configs.clone())?;
        Ok(Self {
            configs,
            sources: Mutex::new(sources),
            verifier: ArcSwap::from_pointee(verifier),
            refreshing: tokio::sync::Mutex::new(()),
            client: std::sync::OnceLock::new(),
        })
    }

    /// How many issuers are configured.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Whether no issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// The issuers as configured.
    pub fn configs(&self) -> &[IssuerConfig] {
        &self.configs
    }

    /// Keys the verifier in force skipped, for the operator's log.
    pub fn warnings(&self) -> Vec<String> {
        self.verifier.load().warnings().to_vec()
    }

    /// Verifies `token` at `now`. A token naming a key the issuer's set
    /// does not hold, or of an issuer whose keys are not fetched yet, makes
    /// that issuer's keys be read again (at most once per
    /// [`ON_DEMAND_INTERVAL`]) and the token verified once more.
    pub async fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedIdentity, IdentityError> {
        let verifier = self.verifier.load_full();
        let error = match verifier.verify(token, now) {
            Ok(identity) => return Ok(identity),
            Err(error) => error,
        };
        if !matches!(error.reason(), "unknown_key" | "keys_unavailable") {
            return Err(error);
        }
        let Some(index) = verifier.issuer_index(token) else {
            return Err(error);
        };
        let _running = self.refreshing.lock().await;
        // Someone else's refresh may have brought the key meanwhile.
        if !Arc::ptr_eq(&verifier, &self.verifier.load_full()) {
            return self.verifier.load().verify(token, now);
        }
        let allowed = {
            let mut sources = self.lock_sources();
            match sources.get_mut(index).and_then(Option::as_mut) {
                Some(source)
                    if source
                        .last_on_demand
                        .is_none_or(|at| at.elapsed() >= ON_DEMAND_INTERVAL) =>
                {
                    source.last_on_demand = Some(Instant::now());
                    true
                }
                _ => false,
            }
        };
        if !allowed {
            return Err(error);
        }
        tracing::info!(issuer = %self.label(index), reason = error.reason(), "a token names a key not in the issuer's set; reading its keys again");
        self.refresh_locked(&[index]).await;
        self.verifier.load().verify(token, now)
    }

    /// Fetches the keys of every issuer that has none yet (URLs at start).
    pub async fn fetch_pending(&self) {
        let _running = self.refreshing.lock().await;
        let pending: Vec<usize> = self
            .lock_sources()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.keys.is_none()))
            .map(|(i, _)| i)
            .collect();
        self.refresh_locked(&pending).await;
    }

    /// Refreshes every issuer whose interval has passed (or, without keys,
    /// [`PENDING_RETRY`]).
    pub async fn refresh_due(&self) {
        let _running = self.refreshing.lock().await;
        let due: Vec<usize> = self
            .lock_sources()
            .iter()
            .enumerate()
            .filter_map(|(i, source)| {
                let source = source.as_ref()?;
                let every = if source.keys.is_none() {
                    PENDING_RETRY.min(source.refresh)
                } else {
                    source.refresh
                };
                source
                    .last_attempt
                    .is_none_or(|at| at.elapsed() >= every)
                    .then_some(i)
            })
            .collect();
        self.refresh_locked(&due).await;
    }

    /// Reads the sources of `indices` (concurrently), keeps each set that
    /// loads, and puts a verifier with the new keys in force if any changed.
    /// The caller holds `refreshing`.
    async fn refresh_locked(&self, indices: &[usize]) {
        if indices.is_empty() {
            return;
        }
        let reads: Vec<(usize, KeySource)> = {
            let mut sources = self.lock_sources();
            indices
                .iter()
                .filter_map(|&i| {
                    let source = sources.get_mut(i)?.as_mut()?;
                    source.last_attempt = Some(Instant::now());
                    Some((i, source.source.clone()))
                })
                .collect()
        };
        let fetched = futures_util::future::join_all(
            reads
                .into_iter()
                .map(|(i, source)| async move { (i, self.read(&source).await) }),
        )
        .await;

        let mut changed = false;
        {
            let mut sources = self.lock_sources();
            for (i, result) in fetched {
                let label = self.label(i);
                let Some(Some(source)) = sources.get_mut(i) else {
                    continue;
                };
                let keys = result.and_then(|keys| self.check(i, keys));
                match keys {
                    Ok(keys) if source.keys.as_ref() == Some(&keys) => {
                        tracing::debug!(issuer = %label, "issuer keys unchanged");
                    }
                    Ok(keys) => {
                        let kids: Vec<String> = keys
                            .keys
                            .iter()
                            .filter_map(|k| k.common.key_id.clone())
                            .collect();
                        tracing::info!(issuer = %label, source = %source.source.describe(), keys = ?kids, "issuer keys loaded");
                        source.keys = Some(keys);
                        changed = true;
                    }
                    Err(error) if source.keys.is_some() => {
                        tracing::warn!(issuer = %label, source = %source.source.describe(), %error, "cannot refresh the issuer's keys; keeping the last good ones");
                    }
                    Err(error) => {
                        tracing::warn!(issuer = %label, source = %source.source.describe(), %error, "cannot read the issuer's keys; its tokens are refused until they can be read");
                    }
                }
            }
        }
        if changed {
            self.swap();
        }
    }

    /// Reads one source.
    async fn read(&self, source: &KeySource) -> Result<JwkSet, String> {
        let text = match source {
            KeySource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?,
            KeySource::Url(url) => self.fetch(url).await?,
        };
        parse_jwks(&text).map_err(|e| e.to_string())
    }

    /// `GET url`: 200, at most [`MAX_JWKS_BYTES`], within [`FETCH_TIMEOUT`].
    async fn fetch(&self, url: &str) -> Result<String, String> {
        let client = self
            .client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .connect_timeout(FETCH_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("mandate/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot set up HTTPS: {}", error_chain(&e)))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let mut response = client
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(|e| format!("cannot fetch `{url}`: {}", error_chain(&e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!(
                "`{url}` answered {} (redirects are not followed)",
                response.status()
            ));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("`{url}` sent more than {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("cannot read `{url}`: {}", error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("`{url}` sent more than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| format!("`{url}` did not send UTF-8 text"))
    }

    /// `keys` if they load for issuer `i` (a usable key, no symmetric key…).
    fn check(&self, i: usize, keys: JwkSet) -> Result<JwkSet, String> {
        let config = self
            .configs
            .get(i)
            .ok_or_else(|| "no such issuer".to_owned())?;
        IdentityVerifier::new(vec![config.clone().with_keys(keys.clone())])
            .map_err(|e| e.to_string())?;
        Ok(keys)
    }

    /// Builds the verifier from the current keys and puts it in force.
    fn swap(&self) {
        let configs: Vec<IssuerConfig> = {
            let sources = self.lock_sources();
            self.configs
                .iter()
                .zip(sources.iter())
                .map(|(config, source)| match source {
                    None => config.clone(),
                    Some(Source {
                        keys: Some(keys), ..
                    }) => config.clone().with_keys(keys.clone()),
                    Some(Source { keys: None, .. }) => config.clone().with_keys_pending(),
                })
                .collect()
        };
        match IdentityVerifier::new(configs) {
            Ok(verifier) => {
                for warning in verifier.warnings() {
                    tracing::warn!("{warning}");
                }
                self.verifier.store(Arc::new(verifier));
            }
            // Each set was checked on its own; this cannot fail, and if it
            // does the keys in force stay.
            Err(error) => {
                tracing::error!(%error, "issuer keys not applied; keeping the keys in force");
            }
        }
    }

    fn label(&self, i: usize) -> String {
        self.configs.get(i).map_or_else(String::new, |c| {
            if c.issuer.is_empty() {
                match &c.kind {
                    mandate_auth::IssuerKind::Spiffe { trust_domain } => {
                        format!("spiffe://{trust_domain}")
                    }
                    mandate_auth::IssuerKind::Oidc => String::new(),
                }
            } else {
                c.issuer.clone()
            }
        })
    }

    fn lock_sources(&self) -> std::sync::MutexGuard<'_, Vec<Option<Source>>> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An error with its sources, on one line (reqwest's own message hides the
/// cause: "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
