//! What a receipt says, and its canonical bytes.
//!
//! A receipt's identity is its canonical form: the receipt as JSON,
//! canonicalised per RFC 8785 (JCS). Anyone can recompute it from the JSON
//! alone, in any language, without this crate's types. The Merkle leaf is
//! those bytes; the receipt signature covers them too.

use mandate_core::{ApprovalStatus, Decision};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Version of the receipt format written by this build.
pub const RECEIPT_VERSION: u32 = 1;

/// What a receipt records: a decision, or an approval's resolution. On the
/// wire it is the outcome's name alone (the two sets of names are
/// disjoint), so receipts read the same as when this field was a string;
/// a name outside both sets is refused when a receipt is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Outcome {
    /// The decision on an attempted call.
    Decision(Decision),
    /// An approval's resolution (or its release: `used`).
    Resolution(ApprovalStatus),
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision(d) => d.as_str(),
            Self::Resolution(s) => s.as_str(),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Decision> for Outcome {
    fn from(decision: Decision) -> Self {
        Self::Decision(decision)
    }
}

impl From<ApprovalStatus> for Outcome {
    fn from(status: ApprovalStatus) -> Self {
        Self::Resolution(status)
    }
}

/// One decision or one approval resolution, as the log records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Receipt format version.
    pub v: u32,
    /// Position in the log (the Merkle leaf index), from 0.
    pub index: u64,
    /// What kind of event the receipt records: `decision`, or `approval`
    /// for the resolution of an approval (its `decision` is then
    /// `approved`, `denied`, `expired` or `withdrawn`).
    pub kind: String,
    /// The decision's id, as returned to the caller.
    pub decision_id: String,
    /// When the decision was made (RFC 3339, UTC, microseconds).
    pub time: String,
    /// The agent that attempted the call.
    pub principal: Principal,
    /// Every hop from the task's root agent to this principal, root first,
    /// from the task credential the call was made under. Empty when the
    /// call was not made under a task credential.
    pub delegation: Vec<DelegationHop>,
    /// The task the call belonged to, if the caller named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    /// The session Mandate kept for the agent (`context.session.id`) that
    /// the decision was made in and recorded into; with `principal.id`, it
    /// names the session. Absent under a task credential, whose session is
    /// the task's, and when the caller sent its own session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The tool call.
    pub call: CallRef,
    /// `sha256:` digest of the canonical JSON of the full arguments.
    pub arguments_sha256: String,
    /// The arguments as stored: redacted paths replaced by their digests.
    /// Absent when arguments are stored only as a digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// Set when the copy of the arguments was left out for its size: the
    /// bytes of its canonical JSON, over the server's
    /// `receipt_max_argument_bytes`. `arguments_sha256` still covers the
    /// full arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments_omitted_bytes: Option<u64>,
    /// `sha256:` digest of the canonical JSON of the whole request evaluated,
    /// with the server's time filled in.
    pub context_sha256: String,
    /// Version hash of the policy pack in force.
    pub policy_version: String,
    /// Ids of the policies that determined the outcome.
    pub policies: Vec<String>,
    /// The decision (`allow`, `deny`, `approval_required`), or the status
    /// an approval's resolution moved it to (`approved`, `denied`, …).
    pub decision: Outcome,
    /// Reasons given for the outcome.
    pub reasons: Vec<String>,
    /// Policy evaluation errors (any makes the decision a deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Who resolved an approval, when the receipt records one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// The approval a receipt of kind `approval` resolves, or the one that
    /// released a call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRef>,
    /// What each shadow pack (a candidate evaluated beside the live pack,
    /// never deciding) made of the same request. Absent when the server
    /// runs no shadow pack, and in receipts of kind `approval`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<ShadowOutcome>,
}

/// What one shadow pack decided for a request, as a receipt records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowOutcome {
    /// The shadow pack's name (`shadow_policies`).
    pub pack: String,
    /// Version hash of the shadow pack.
    pub policy_version: String,
    /// Its outcome: `allow`, `deny` or `approval_required`.
    pub decision: Decision,
    /// Ids of its policies that determined that outcome.
    pub policies: Vec<String>,
    /// Its reasons.
    pub reasons: Vec<String>,
    /// Whether it decided as the live pack's policies did. Compared before
    /// any approval: a call the live pack sent to a person (and a person
    /// then released or refused) agrees with a shadow pack that would also
    /// have asked, whatever the receipt's final `decision`.
    pub agrees: bool,
}

/// The approval in a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRef {
    /// The approval's id (also the `decision_id` of its resolution's receipt).
    pub id: String,
    /// The decision that asked for the approval.
    pub requested_by: String,
}

/// The agent in a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Workload identity.
    pub id: String,
    /// The person the agent acted for, kept apart from the agent's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// One hop of a delegation chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationHop {
    /// The agent at this hop.
    pub agent: String,
    /// Depth from the task's root agent (0 for the root).
    pub depth: u32,
}

/// The task in a receipt: its id and a digest of its intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// Task id.
    pub id: String,
    /// `sha256:` digest of the task's intent text.
    pub intent_sha256: String,
}

/// The tool call in a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRef {
    /// Server offering the tool.
    pub server: String,
    /// Tool name.
    pub tool: String,
    /// The Cedar action evaluated.
    pub action: String,
}

/// Why a receipt could not be encoded or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The receipt is not JSON that can be canonicalised.
    #[error("receipt cannot be canonicalised: {0}")]
    Canonical(#[from] serde_json::Error),
    /// The receipt JSON carries no usable `index`.
    #[error("receipt has no unsigned integer `index`")]
    NoIndex,
}

/// A receipt as a log leaf: its canonical bytes and the log key's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log.
    pub index: u64,
    /// RFC 8785 canonical JSON of the receipt; the Merkle leaf data.
    pub canonical: Vec<u8>,
    /// Ed25519 signature over [`Entry::signed_message`].
    pub signature: Vec<u8>,
}

/// Prefix of every receipt signature's message, so that a receipt signature
/// can never pass for a signature of anything else (a checkpoint note, say).
pub const RECEIPT_SIGNATURE_CONTEXT: &[u8] = b"mandate receipt v1\n";

impl Entry {
    /// The message a receipt signature covers: a fixed context string, then
    /// the canonical bytes.
    pub fn signed_message(canonical: &[u8]) -> Vec<u8> {
        let mut message = Vec::with_capacity(RECEIPT_SIGNATURE_CONTEXT.len() + canonical.len());
        message.extend_from_slice(RECEIPT_SIGNATURE_CONTEXT);
        message.extend_from_slice(canonical);
        message
    }

    /// The RFC 6962 leaf hash of this entry.
    pub fn leaf_hash(&self) -> tlog_tiles::Hash {
        leaf_hash(&self.canonical)
    }
}

impl Receipt {
    /// The receipt's canonical bytes (RFC 8785).
    pub fn canonical(&self) -> Result<Vec<u8>, ReceiptError> {
        Ok(serde_json_canonicalizer::to_vec(self)?)
    }
}

/// The RFC 6962 leaf hash of a receipt's canonical bytes: SHA-256(0x00 || bytes).
pub fn leaf_hash(canonical: &[u8]) -> tlog_tiles::Hash {
    tlog_tiles::record_hash(canonical)
}

/// Canonical bytes of any JSON value (RFC 8785); how a verifier recomputes a
/// leaf from receipt JSON it did not write, whatever fields it holds. Any
/// serialisable value, without building a `Value` first.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ReceiptError> {
    Ok(serde_json_canonicalizer::to_vec(value)?)
}

/// `sha256:<hex>` of the canonical JSON of `value`.
pub fn digest_json<T: Serialize>(value: &T) -> Result<String, ReceiptError> {
    let bytes = serde_json_canonicalizer::to_vec(value)?;
    Ok(digest_bytes(&bytes))
}

/// `sha256:<hex>` of raw bytes.
pub fn digest_bytes(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        use std::fmt::Write;
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Replaces each value at a redacted path of `arguments` with
/// `{"redacted_sha256": "<digest of the value>"}`.
///
/// A path is a dot-separated list of object keys (`body`, `payment.card`).
/// Paths that do not exist are ignored. The digest lets someone holding the
/// original value prove it was the one used, without the receipt revealing it.
pub fn redact(arguments: &mut Value, paths: &[Vec<String>]) -> Result<(), ReceiptError> {
    for path in paths {
        if let Some(value) = value_at(arguments, path) {
            let digest = digest_json(value)?;
            *value = serde_json::json!({ "redacted_sha256": digest });
        }
    }
    Ok(())
}

fn value_at<'a>(root: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(root, |node, key| node.get_mut(key.as_str()))
        .filter(|_| !path.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn an_outcome_is_its_bare_name_on_the_wire() {
        let names = [
            ("allow", Outcome::Decision(Decision::Allow)),
            ("deny", Outcome::Decision(Decision::Deny)),
            (
                "approval_required",
                Outcome::Decision(Decision::ApprovalRequired),
            ),
            ("pending", Outcome::Resolution(ApprovalStatus::Pending)),
            ("approved", Outcome::Resolution(ApprovalStatus::Approved)),
            ("denied", Outcome::Resolution(ApprovalStatus::Denied)),
            ("expired", Outcome::Resolution(ApprovalStatus::Expired)),
            ("used", Outcome::Resolution(ApprovalStatus::Used)),
            ("withdrawn", Outcome::Resolution(ApprovalStatus::Withdrawn)),
        ];
        for (name, outcome) in names {
            assert_eq!(serde_json::to_value(outcome).unwrap(), json!(name));
            assert_eq!(
                serde_json::from_value::<Outcome>(json!(name)).unwrap(),
                outcome
            );
            assert_eq!(outcome.as_str(), name);
        }
        for unknown in ["Allow", "", "granted", "approval-required"] {
            assert!(
                serde_json::from_value::<Outcome>(json!(unknown)).is_err(),
                "{unknown}"
            );
        }
    }

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let value = json!({"b": 1, "a": {"d": [1, 2], "c": "x"}});
        let bytes = canonical_json(&value).unwrap();
        assert_eq!(bytes, br#"{"a":{"c":"x","d":[1,2]},"b":1}"#);
    }

    #[test]
    fn redaction_replaces_the_value_with_its_digest() {
        let mut args = json!({"to": "a@b.c", "body": "secret", "meta": {"card": "4111"}});
        let paths = vec![
            vec!["body".to_owned()],
            vec!["meta".to_owned(), "card".to_owned()],
            vec!["missing".to_owned(), "x".to_owned()],
        ];
        redact(&mut args, &paths).unwrap();
        assert_eq!(args["to"], "a@b.c");
        assert_eq!(
            args["body"]["redacted_sha256"],
            digest_json(&json!("secret")).unwrap()
        );
        assert!(!args.to_string().contains("secret"));
        assert!(!args.to_string().contains("4111"));
    }
}
