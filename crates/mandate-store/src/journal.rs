//! The decision journal: for every decision, the exact request that was
//! evaluated, kept next to its receipt so that it can be evaluated again
//! (`mandate policy replay`).
//!
//! A journal entry is written in the same transaction as its receipt, so
//! that a decision has both or neither, at no extra fsync. It is not part of
//! the signed log: the receipt's `context_sha256` is the digest of the
//! canonical request, so an entry with nothing redacted is bound to its
//! receipt by that digest; pruning the journal (by age and size) never
//! touches a receipt.

use std::time::Duration;

use mandate_core::Decision;
use serde::{Deserialize, Serialize};

/// What the journal keeps of one decision, besides what its receipt says
/// (index, id, time, task, tool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Canonical JSON (RFC 8785) of the request as evaluated: principal,
    /// action, arguments, the task, delegation chain and session context as
    /// the server filled them, and `context.time`. With nothing redacted,
    /// its SHA-256 is the receipt's `context_sha256`.
    pub request: String,
    /// The argument paths redaction changed (`body`, `payment.card`), each
    /// with what was done: `hash` (replaced by its digest) or `drop`.
    pub redacted: Vec<Redacted>,
    /// The tools (`server/tool`) of the task credential the call was made
    /// under; `None` without one. A tool outside them is denied before any
    /// policy runs, whatever the pack.
    pub scope: Option<Vec<String>>,
    /// The pack's outcome, before an approval turned it into a release or
    /// a refusal (what a candidate pack is compared with).
    pub decision: Decision,
    /// The decision answered, after the approval gate: `allow` for a call a
    /// person's approval released, `deny` for one an approval refused.
    pub outcome: Decision,
    /// The policies that determined that outcome.
    pub policies: Vec<String>,
    /// Version hash of the pack that decided.
    pub policy_version: String,
}

/// One redacted argument path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redacted {
    /// The path, dot-separated from the arguments record.
    pub path: String,
    /// What was done to its value: `hash` or `drop`.
    pub action: String,
}

/// A journal entry as read back, with the receipt fields it is filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournaledDecision {
    /// The receipt's index.
    pub index: u64,
    /// The decision's id.
    pub decision_id: String,
    /// When it was decided (RFC 3339, as in the receipt).
    pub time: String,
    /// The task it was made under, if any.
    pub task_id: Option<String>,
    /// `server/tool`.
    pub tool: String,
    /// What the journal kept.
    pub entry: JournalEntry,
}

/// Which journaled decisions to read, oldest first.
#[derive(Debug, Clone, Default)]
pub struct JournalQuery {
    /// Decided at or after this time (RFC 3339, compared as text: every
    /// stored time has the same fixed-width form).
    pub since: Option<String>,
    /// Receipt indices from (inclusive).
    pub from_index: Option<u64>,
    /// Receipt indices to (inclusive).
    pub to_index: Option<u64>,
    /// Only decisions of this task.
    pub task: Option<String>,
}

/// How much of the journal is kept. Pruning takes the oldest entries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRetention {
    /// Entries older than this are removed.
    pub max_age: Option<Duration>,
    /// The stored bytes of the entries kept stay under this.
    pub max_bytes: Option<u64>,
}

impl Default for JournalRetention {
    fn default() -> Self {
        Self {
            max_age: Some(DEFAULT_MAX_AGE),
            max_bytes: Some(DEFAULT_MAX_BYTES),
        }
    }
}

/// Entries are kept 30 days by default.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// And at most 1 GiB of them.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// How many entries one pruning step removes at most, so that a step never
/// holds the writer long.
pub(crate) const PRUNE_STEP: i64 = 5000;

impl JournalEntry {
    /// The bytes the entry takes in storage, as retention counts them.
    pub fn stored_bytes(&self) -> u64 {
        let lists: usize = self.policies.iter().map(String::len).sum::<usize>()
            + self.scope.iter().flatten().map(String::len).sum::<usize>()
            + self
                .redacted
                .iter()
                .map(|r| r.path.len() + r.action.len())
                .sum::<usize>();
        u64::try_from(self.request.len() + lists + self.policy_version.len()).unwrap_or(u64::MAX)
    }

    /// The columns holding lists, as JSON text.
    pub(crate) fn list_columns(&self) -> (Option<String>, Option<String>, String) {
        let redacted = (!self.redacted.is_empty())
            .then(|| serde_json::to_string(&self.redacted).unwrap_or_default());
        let scope = self
            .scope
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap_or_default());
        let policies = serde_json::to_string(&self.policies).unwrap_or_default();
        (redacted, scope, policies)
    }

    /// An entry from its stored columns; `None` when a column does not
    /// parse (the caller names the row).
    pub(crate) fn from_columns(
        request: String,
        redacted: Option<&str>,
        scope: Option<&str>,
        (decision, outcome): (&str, &str),
        policies: &str,
        policy_version: String,
    ) -> Result<Self, String> {
        let redacted = match redacted {
            Some(text) => serde_json::from_str(text).map_err(|e| format!("redacted: {e}"))?,
            None => Vec::new(),
        };
        let scope = scope
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| format!("scope: {e}"))?;
        let parse = |text: &str| match text {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            "approval_required" => Ok(Decision::ApprovalRequired),
            other => Err(format!("decision `{other}`")),
        };
        let (decision, outcome) = (parse(decision)?, parse(outcome)?);
        let policies = serde_json::from_str(policies).map_err(|e| format!("policies: {e}"))?;
        Ok(Self {
            request,
            redacted,
            scope,
            decision,
            outcome,
            policies,
            policy_version,
        })
    }
}
