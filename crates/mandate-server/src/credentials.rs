//! Task credentials once issued: the authority that mints and delegates
//! them, their verification (with a cache), and revocation.
//!
//! Revocation is checked on every call from an in-memory set, loaded from
//! the state database at start and updated whenever a task ends (by a
//! caller, or by [`Credentials::end_expired`] when its TTL runs out) after
//! the end is stored and before anyone is told about it. With a store that
//! several instances share, an end on another instance reloads the set when
//! the store announces it ([`Credentials::reload_revoked`]); until then a
//! decision still refuses the credential, because it reads its task from
//! the store and finds it ended.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use mandate_auth::{
    CredentialError, CredentialVerifier, TaskAuthority, VerificationCache, VerifiedCredential,
};
use mandate_core::TaskId;
use mandate_store::{END_REASON_ENDED, EndedTask, StateError, StateStore};

/// How long after its task's expiry a revoked id is still held: a margin
/// over the credential's own expiry check, which needs none.
const REVOKED_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// The task authority, credential verification and the revoked ids.
pub struct Credentials {
    authority: TaskAuthority,
    verifier: CredentialVerifier,
    cache: VerificationCache,
    store: Arc<dyn StateStore>,
    /// Revoked credential ids, each until its task's expiry (no
    /// credential of the task is accepted after it anyway).
    revoked: RwLock<HashMap<String, DateTime<Utc>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("authority", &self.authority)
            .field("audience", &self.verifier.audience())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials of `authority` for `audience`, with the revoked ids read
    /// from `store` (which records every later end).
    pub async fn new(
        authority: TaskAuthority,
        audience: String,
        store: Arc<dyn StateStore>,
    ) -> Result<Self, StateError> {
        let revoked = store.revoked_ids(Utc::now()).await?;
        Ok(Self {
            verifier: authority.verifier(audience),
            authority,
            cache: VerificationCache::default(),
            store,
            revoked: RwLock::new(revoked),
        })
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

    /// Reads the revoked ids from the store again, replacing those held: a
    /// store several instances share announces that another ended a task.
    /// Cached verifications of credentials now revoked are dropped.
    pub async fn reload_revoked(&self, now: DateTime<Utc>) -> Result<(), StateError> {
        let revoked = self.store.revoked_ids(now).await?;
        *self.revoked.write().unwrap_or_else(PoisonError::into_inner) = revoked;
        self.cache.purge(now, |ids| self.is_revoked(ids));
        Ok(())
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

    /// Ends task `id` at `now` (a caller's end) and revokes every credential
    /// issued under it, in the state database and then in memory. Returns
    /// the task as ended with the revoked ids. Ending an ended task changes
    /// nothing and returns the same.
    pub async fn end(&self, id: &TaskId, now: DateTime<Utc>) -> Result<EndedTask, StateError> {
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
