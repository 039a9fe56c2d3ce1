//! From a decided request to the receipt the ledger stores.
//!
//! What a receipt keeps of the request is configuration: arguments are
//! always digested; a copy is kept unless `receipt_arguments = "digest"`, and
//! the paths in `receipt_redact` are replaced by their digests in that copy.
//! Nothing here reaches logs or metrics.

use chrono::{DateTime, SecondsFormat, Utc};
use mandate_auth::Hop;
use mandate_core::{Decision, DecisionId, DecisionRequest, Verdict};
use mandate_ledger::receipt::{CallRef, DelegationHop, Principal, RECEIPT_VERSION, TaskRef};
use mandate_ledger::{Receipt, ReceiptError, canonical_json, digest_bytes, digest_json, redact};
use serde_json::Value;

/// The Cedar action every tool call is evaluated as.
const CALL_TOOL: &str = "call_tool";

/// The default bound on the copy of a call's arguments a receipt keeps.
pub const DEFAULT_MAX_ARGUMENT_BYTES: usize = 64 * 1024;

/// What receipts keep of the arguments.
#[derive(Debug, Clone)]
pub struct ReceiptSettings {
    /// Keep only the digest of the arguments, no copy.
    pub digest_only: bool,
    /// Argument paths (`body`, `payment.card`) kept only as digests in the copy.
    pub redact: Vec<Vec<String>>,
    /// The largest copy kept (canonical JSON bytes, after redaction); a
    /// larger one is left out and only its size and digest are kept, so
    /// that no request can make a receipt (and an approval, which keeps
    /// the receipt) as large as its body.
    pub max_argument_bytes: usize,
}

impl Default for ReceiptSettings {
    fn default() -> Self {
        Self {
            digest_only: false,
            redact: Vec::new(),
            max_argument_bytes: DEFAULT_MAX_ARGUMENT_BYTES,
        }
    }
}

impl ReceiptSettings {
    /// Settings from the configured redaction paths (dot-separated keys),
    /// with the default bound on the copy.
    pub fn new(digest_only: bool, redact: &[String]) -> Self {
        Self {
            digest_only,
            redact: redact
                .iter()
                .map(|p| p.split('.').map(str::to_owned).collect())
                .collect(),
            max_argument_bytes: DEFAULT_MAX_ARGUMENT_BYTES,
        }
    }

    /// The same, keeping copies of at most `bytes`.
    #[must_use]
    pub fn with_max_argument_bytes(mut self, bytes: usize) -> Self {
        self.max_argument_bytes = bytes;
        self
    }

    /// The receipt for `request` with everything the request tells; the
    /// decision's fields are filled by [`record_verdict`]. `request.context.time`
    /// must hold the decision time, so that the context digest covers the
    /// clock that was used; `canonical` is the request's canonical JSON
    /// ([`canonical_request`]), which that digest covers.
    pub fn draft(
        &self,
        request: &DecisionRequest,
        canonical: &[u8],
        time: DateTime<Utc>,
    ) -> Result<Receipt, ReceiptError> {
        let arguments_sha256 = digest_json(&request.arguments)?;
        let (arguments, arguments_omitted_bytes) = if self.digest_only {
            (None, None)
        } else {
            let mut copy = Value::Object(request.arguments.clone());
            redact(&mut copy, &self.redact)?;
            let size = canonical_json(&copy)?.len();
            if size > self.max_argument_bytes {
                (None, Some(u64::try_from(size).unwrap_or(u64::MAX)))
            } else {
                (Some(copy), None)
            }
        };
        let task = &request.context.task;
        let task = (!task.id.is_empty() || !task.intent.is_empty()).then(|| TaskRef {
            id: task.id.clone(),
            intent_sha256: digest_bytes(task.intent.as_bytes()),
        });
        Ok(Receipt {
            v: RECEIPT_VERSION,
            index: 0,
            kind: "decision".to_owned(),
            decision_id: String::new(),
            time: time.to_rfc3339_opts(SecondsFormat::Micros, true),
            principal: Principal {
                id: request.principal.id.clone(),
                on_behalf_of: request.principal.on_behalf_of.clone(),
            },
            delegation: Vec::new(),
            task,
            session: request.context.session.id.as_ref().map(|id| id.to_string()),
            call: CallRef {
                server: request.action.server.clone(),
                tool: request.action.tool.clone(),
                action: CALL_TOOL.to_owned(),
            },
            arguments_sha256,
            arguments,
            arguments_omitted_bytes,
            context_sha256: digest_bytes(canonical),
            policy_version: String::new(),
            policies: Vec::new(),
            // Set with the verdict; a template is never written as it is.
            decision: Decision::Deny.into(),
            reasons: Vec::new(),
            errors: Vec::new(),
            approver: None,
            approval: None,
            shadow: Vec::new(),
        })
    }
}

/// The canonical JSON (RFC 8785) of a request as evaluated: what the
/// receipt's `context_sha256` digests and the journal keeps.
pub fn canonical_request(request: &DecisionRequest) -> Result<Vec<u8>, ReceiptError> {
    canonical_json(request)
}

/// Fills a draft receipt with the decision made.
pub fn record_verdict(
    receipt: &mut Receipt,
    decision_id: &DecisionId,
    verdict: &Verdict,
    policy_version: &str,
) {
    receipt.decision_id = decision_id.to_string();
    receipt.policy_version = policy_version.to_owned();
    receipt.policies = verdict.policies.clone();
    receipt.decision = verdict.decision.into();
    receipt.reasons = verdict.reasons.clone();
    receipt.errors = verdict.errors.iter().map(ToString::to_string).collect();
}

/// Records the delegation chain of the task credential the call was made
/// under, root first. Only a verified credential's chain goes here: a chain
/// a caller writes into its request is evaluated, not vouched for.
pub fn record_delegation(receipt: &mut Receipt, chain: &[Hop]) {
    receipt.delegation = chain
        .iter()
        .map(|hop| DelegationHop {
            agent: hop.agent.clone(),
            depth: hop.depth,
        })
        .collect();
}
