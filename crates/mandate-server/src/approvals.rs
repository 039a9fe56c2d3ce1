//! Approvals at the gateway: who the approvers are, opening an approval for
//! an `approval_required` decision, resolving it, releasing the approved
//! call, expiring the unanswered, and telling a webhook about new ones.
//!
//! The state machine is [`mandate_core::Approval`]; the rows are in the
//! state database ([`mandate_store::approvals`]). Every resolution and
//! release runs under one lock (approvals are rare, and this makes "check,
//! write the receipt, store the change" one step in this process), and
//! each store change is a compare-and-swap on the status as well.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use mandate_auth::TokenDigest;
use mandate_core::api::ApprovalView;
use mandate_core::{
    Approval, ApprovalId, ApprovalStatus, DecisionRequest, DecisionResponse, Requester,
};
use mandate_ledger::Receipt;
use mandate_ledger::receipt::ApprovalRef;
use mandate_store::{ApprovalRecord, ApprovalsLock, StateError, StateStore};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::{Mutex, MutexGuard, watch};

/// Policy id of a deny given because an approval did not release the call.
pub const APPROVAL_POLICY: &str = "mandate:approval";

/// How long a `?wait=` may hold a request.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Prefix of approver tokens minted by `mandate approvals token`, so that a
/// leaked one is recognisable.
pub const APPROVER_TOKEN_PREFIX: &str = "mnd_apr_";

/// An approver, as configured: a name and the SHA-256 of their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproverToken {
    /// Who the approver is (for example an email address); it is what
    /// receipts name.
    pub name: String,
    digest: TokenDigest,
}

impl ApproverToken {
    /// An approver named `name` whose token digests to `token_sha256` (64
    /// hex digits).
    pub fn new(name: &str, token_sha256: &str) -> Result<Self, ApprovalsError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ApprovalsError::Invalid(
                "an `[[approvers]]` entry has an empty `name`".into(),
            ));
        }
        // Approvers are people; a workload identity never approves.
        if name.to_ascii_lowercase().starts_with("spiffe://") {
            return Err(ApprovalsError::Invalid(format!(
                "approver `{name}` is a SPIFFE ID, an agent's identity; approvers are people (name them by email or user name)"
            )));
        }
        let digest = TokenDigest::parse_hex(token_sha256).ok_or_else(|| {
            ApprovalsError::Invalid(format!(
                "approver `{name}`: `token_sha256` must be 64 hex digits (the SHA-256 of the token); `mandate approvals token` prints one"
            ))
        })?;
        Ok(Self {
            name: name.to_owned(),
            digest,
        })
    }
}

/// Where new pending approvals are announced.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The URL POSTed to.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Mandate-Signature`.
    pub secret: Vec<u8>,
}

/// Approval settings, as configured.
#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    /// How long an approval waits when its gate sets no `@approval_expires`.
    pub default_ttl: Duration,
    /// Whether the person a task acts for may approve its requests.
    pub allow_self_approval: bool,
    /// Who may approve.
    pub approvers: Vec<ApproverToken>,
    /// Where to announce new approvals.
    pub webhook: Option<Webhook>,
    /// How many approvals one agent may have pending at once; beyond it a
    /// call that needs approval is denied, so that no agent floods the
    /// people who answer.
    pub max_pending_per_agent: u64,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(300),
            allow_self_approval: false,
            approvers: Vec::new(),
            webhook: None,
            max_pending_per_agent: 20,
        }
    }
}

/// How many `?wait=` long polls may be held at once; beyond it a request
/// is answered at once, as without `wait`.
pub const MAX_WAITERS: usize = 1024;

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalsError {
    /// What is wrong and how to fix it.
    #[error("{0}")]
    Invalid(String),
}

/// Held while an approval is resolved, released or expired; see
/// [`Approvals::lock`].
pub struct ApprovalsGuard<'a> {
    // Released in this order: the shared lock first, then this process's.
    _shared: ApprovalsLock,
    _local: MutexGuard<'a, ()>,
}

/// The approvals part of the gateway's state.
pub struct Approvals {
    settings: ApprovalSettings,
    /// Bumped on every change, for long polls and the console.
    changes: watch::Sender<u64>,
    /// Held while an approval is resolved, released or expired.
    lock: Mutex<()>,
    /// Permits for long polls.
    waiters: std::sync::Arc<tokio::sync::Semaphore>,
    http: reqwest::Client,
}

impl Approvals {
    /// Approvals with `settings`.
    pub fn new(settings: ApprovalSettings) -> Result<Self, ApprovalsError> {
        if settings.default_ttl.is_zero() || settings.default_ttl > mandate_core::MAX_APPROVAL_TTL {
            return Err(ApprovalsError::Invalid(
                "`approval_ttl_seconds` must be between 1 second and a week".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for approver in &settings.approvers {
            if !names.insert(&approver.name) {
                return Err(ApprovalsError::Invalid(format!(
                    "approver `{}` is configured twice",
                    approver.name
                )));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ApprovalsError::Invalid(format!("webhook client: {e}")))?;
        Ok(Self {
            settings,
            changes: watch::channel(0).0,
            lock: Mutex::new(()),
            waiters: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_WAITERS)),
            http,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &ApprovalSettings {
        &self.settings
    }

    /// The approver whose token is `token`, if any. Tokens are compared by
    /// their SHA-256: the configuration never holds a token itself, and a
    /// digest comparison leaks nothing usable about the token.
    pub fn approver(&self, token: &str) -> Option<&str> {
        let digest = TokenDigest::of(token);
        self.settings
            .approvers
            .iter()
            .find(|a| a.digest == digest)
            .map(|a| a.name.as_str())
    }

    /// Whether any approver is configured.
    pub fn has_approvers(&self) -> bool {
        !self.settings.approvers.is_empty()
    }

    /// How long an approval asked for by a gate with `gate_ttl` waits.
    pub fn ttl(&self, gate_ttl: Option<Duration>) -> Duration {
        gate_ttl.unwrap_or(self.settings.default_ttl)
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tells waiters that something changed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How many long polls are waiting now.
    pub fn long_polls(&self) -> usize {
        MAX_WAITERS.saturating_sub(self.waiters.available_permits())
    }

    /// A permit to hold a long poll, if fewer than [`MAX_WAITERS`] are held.
    pub fn waiter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        std::sync::Arc::clone(&self.waiters)
            .try_acquire_owned()
            .ok()
    }

    /// The lock every resolution, release and expiry holds: this process's,
    /// then the one `store` shares with every other process using it (one
    /// in the database with several instances; none on SQLite).
    pub async fn lock(&self, store: &dyn StateStore) -> Result<ApprovalsGuard<'_>, StateError> {
        let local = self.lock.lock().await;
        let shared = store.lock_approvals().await?;
        Ok(ApprovalsGuard {
            _shared: shared,
            _local: local,
        })
    }

    /// Announces a new pending approval to the webhook, if one is set, in
    /// the background. Delivery is best effort: three tries, and a failure
    /// is logged, never fatal.
    pub fn announce(&self, record: &ApprovalRecord, now: DateTime<Utc>) {
        let Some(webhook) = self.settings.webhook.clone() else {
            return;
        };
        let body = json!({
            "type": "approval.pending",
            "approval": approval_detail(record, now),
        });
        let Ok(body) = serde_json::to_vec(&body) else {
            return;
        };
        let http = self.http.clone();
        let id = record.approval.id.clone();
        tokio::spawn(async move {
            for attempt in 1..=3u32 {
                let timestamp = Utc::now().timestamp().to_string();
                let signature = sign_webhook(&webhook.secret, &timestamp, &body);
                let sent = http
                    .post(&webhook.url)
                    .header("content-type", "application/json")
                    .header("x-mandate-timestamp", &timestamp)
                    .header("x-mandate-signature", signature)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => {
                        tracing::warn!(approval_id = %id, status = %r.status(), attempt, "approval webhook refused the notification");
                    }
                    Err(e) => {
                        tracing::warn!(approval_id = %id, error = %e, attempt, "approval webhook unreachable");
                    }
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        });
    }
}

/// `v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`, the webhook signature.
pub fn sign_webhook(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex(&mac.finalize().into_bytes()))
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC-SHA256 accepts keys of every length")
}

/// What an approval is bound to: the digest of who asked (agent, person),
/// under which task and delegation chain (a verified credential's; empty
/// without one, so a call without the credential never releases an
/// approval given under it), for which tool and with which arguments, taken
/// from the request's receipt draft.
pub fn request_binding(receipt: &Receipt) -> Result<String, mandate_ledger::ReceiptError> {
    mandate_ledger::digest_json(&json!({
        "agent": receipt.principal.id,
        "on_behalf_of": receipt.principal.on_behalf_of,
        "task": receipt.task.as_ref().map(|t| &t.id),
        "delegation": receipt.delegation,
        "server": receipt.call.server,
        "tool": receipt.call.tool,
        "arguments_sha256": receipt.arguments_sha256,
    }))
}

/// Who asked, as an approval records it: the requester (for the
/// self-approval rules) and the task's intent (for the approver).
pub(crate) struct Asker {
    requester: Requester,
    intent: Option<String>,
}

impl Asker {
    /// The asker of `request` (with its task filled in from a credential).
    /// A chain a caller writes into a request without a credential is kept
    /// too: it only adds names that may not approve.
    pub(crate) fn of(request: &DecisionRequest) -> Self {
        let task = &request.context.task;
        Self {
            requester: Requester {
                agent: request.principal.id.clone(),
                chain: task.chain.iter().map(|hop| hop.agent.clone()).collect(),
                on_behalf_of: request.principal.on_behalf_of.clone(),
            },
            intent: (!task.intent.is_empty()).then(|| task.intent.clone()),
        }
    }
}

/// An approval the gate opens for an `approval_required` decision.
pub(crate) struct Opening {
    /// Its id.
    pub(crate) id: ApprovalId,
    /// What it is bound to.
    pub(crate) binding: String,
    /// How long it waits.
    pub(crate) ttl: Duration,
    /// The top-level argument names that the policies of the pack that
    /// decided read, for the approver to check first.
    pub(crate) arguments_read: Vec<String>,
}

/// The approval for an `approval_required` decision, and what an approver
/// is shown of it. `receipt` is the decision's receipt (with its index).
pub(crate) fn open(
    opening: Opening,
    receipt: &Receipt,
    asker: Asker,
    decided: &DecisionResponse,
    now: DateTime<Utc>,
) -> Result<ApprovalRecord, mandate_ledger::ReceiptError> {
    let Opening {
        id,
        binding,
        ttl,
        arguments_read,
    } = opening;
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let Asker { requester, intent } = asker;
    let summary = json!({
        // Under a task credential the agent, its person and its chain were
        // verified; without one they are what the caller wrote.
        "verified": !receipt.delegation.is_empty(),
        "agent": requester.agent,
        "on_behalf_of": requester.on_behalf_of,
        "chain": receipt.delegation,
        "task": receipt.task.as_ref().map(|t| json!({"id": t.id, "intent": intent})),
        "server": receipt.call.server,
        "tool": receipt.call.tool,
        // As the receipt keeps them: redacted paths are digests, and with
        // `receipt_arguments = "digest"` there is only the digest.
        "arguments": receipt.arguments,
        "arguments_omitted_bytes": receipt.arguments_omitted_bytes,
        "arguments_sha256": receipt.arguments_sha256,
        // Top-level names of the arguments the pack's policies read: the
        // only ones that can change its decision.
        "arguments_read": arguments_read,
        "policies": decided.policies,
        "reasons": decided.reasons,
    });
    let approval = Approval::new(
        id,
        decided.decision_id.clone(),
        binding,
        requester,
        now,
        ttl,
    );
    Ok(ApprovalRecord {
        approval,
        task_id: receipt.task.as_ref().map(|t| t.id.clone()),
        summary,
        receipt: serde_json::to_value(receipt).map_err(mandate_ledger::ReceiptError::from)?,
    })
}

/// The receipt of an approval's resolution (approved, denied, expired or
/// withdrawn),
/// from the receipt of the decision that asked.
pub fn resolution_receipt(
    record: &ApprovalRecord,
    now: DateTime<Utc>,
) -> Result<Receipt, serde_json::Error> {
    let mut receipt: Receipt = serde_json::from_value(record.receipt.clone())?;
    let approval = &record.approval;
    receipt.kind = "approval".to_owned();
    receipt.decision_id = approval.id.to_string();
    // A person's answer is not evaluated by any pack.
    receipt.shadow.clear();
    receipt.time = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    receipt.decision = approval.status.into();
    receipt.reasons = match (&approval.status, &approval.reason) {
        (ApprovalStatus::Expired, _) => vec![format!(
            "nobody answered before {}; the request is denied",
            approval
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )],
        (_, Some(reason)) => vec![reason.clone()],
        (_, None) => Vec::new(),
    };
    receipt.errors = Vec::new();
    receipt.approver = approval.resolved_by.clone();
    receipt.approval = Some(ApprovalRef {
        id: approval.id.to_string(),
        requested_by: approval.decision_id.to_string(),
    });
    Ok(receipt)
}

/// Everything an approver sees of `record` at `now`: the status fields
/// ([`ApprovalView::status`]) and what was asked.
pub fn approval_detail(record: &ApprovalRecord, now: DateTime<Utc>) -> ApprovalView {
    ApprovalView {
        released_by: record.approval.released_by.clone(),
        task_id: record.task_id.clone(),
        summary: Some(record.summary.clone()),
        request_sha256: Some(record.approval.request_sha256.clone()),
        ..ApprovalView::status(&record.approval, now)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_by_digest() {
        let (token, digest) = mandate_auth::new_token(APPROVER_TOKEN_PREFIX);
        let digest = digest.to_hex();
        let approvals = Approvals::new(ApprovalSettings {
            approvers: vec![ApproverToken::new("alice", &digest).unwrap()],
            ..ApprovalSettings::default()
        })
        .unwrap();
        assert_eq!(approvals.approver(&token), Some("alice"));
        assert_eq!(approvals.approver(&format!("{token}x")), None);
        assert_eq!(approvals.approver(&digest), None);
    }

    #[test]
    fn bad_digests_and_duplicates_are_refused() {
        assert!(ApproverToken::new("alice", "abc").is_err());
        assert!(ApproverToken::new("", &"0".repeat(64)).is_err());
        let a = ApproverToken::new("alice", &"0".repeat(64)).unwrap();
        assert!(
            Approvals::new(ApprovalSettings {
                approvers: vec![a.clone(), a],
                ..ApprovalSettings::default()
            })
            .is_err()
        );
    }

    #[test]
    fn webhook_signature_is_hmac_sha256_of_timestamp_and_body() {
        // Expected value from Python's hmac module, an independent HMAC.
        let signature = sign_webhook(b"Jefe", "1795435200", br#"{"type":"approval.pending"}"#);
        assert_eq!(
            signature,
            "v1=909de60f3b69afc95efe364759ca136a2782eaa42e858e1910ad0f56e25b744b"
        );
    }
}
