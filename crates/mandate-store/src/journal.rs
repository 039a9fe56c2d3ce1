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

use chrono::{DateTime, SecondsFormat, Utc};
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

/// One pruning step's walk over the oldest entries, the same on every
/// store: entries are taken oldest first while they are past the age limit
/// or the journal is over its size, and the step removes every entry up to
/// the last one taken.
#[derive(Debug)]
pub(crate) struct Pruning {
    /// Entries stored before this time (RFC 3339 with microseconds, as the
    /// journal stores times, so that text order is time order) are expired.
    cutoff: Option<String>,
    max_bytes: Option<u64>,
    /// The journal's stored bytes before the step.
    total: u64,
    /// The newest entry taken so far, and the bytes taken.
    last: Option<i64>,
    removed: u64,
}

impl Pruning {
    /// A step under `retention` at `now`, on a journal of `total` bytes.
    pub(crate) fn new(retention: &JournalRetention, now: DateTime<Utc>, total: u64) -> Self {
        let cutoff = retention
            .max_age
            .and_then(|age| chrono::Duration::from_std(age).ok())
            .and_then(|age| now.checked_sub_signed(age))
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
        Self {
            cutoff,
            max_bytes: retention.max_bytes,
            total,
            last: None,
            removed: 0,
        }
    }

    /// Whether any entry could go: an age limit, or a journal over its size.
    pub(crate) fn may_remove(&self) -> bool {
        self.cutoff.is_some() || self.over(self.total)
    }

    /// Whether the step can remove anything, given the oldest entry's
    /// time (`None`: the journal is empty).
    pub(crate) fn is_due(&self, oldest: Option<&str>) -> bool {
        oldest.is_some_and(|time| self.expired(time) || self.over(self.total))
    }

    /// Takes entry `idx` (stored at `time`, `bytes` long), the next oldest,
    /// if it goes; returns whether it did (the walk stops at the first
    /// entry that stays).
    pub(crate) fn take(&mut self, idx: i64, time: &str, bytes: u64) -> bool {
        if !self.expired(time) && !self.over(self.total.saturating_sub(self.removed)) {
            return false;
        }
        self.last = Some(idx);
        self.removed = self.removed.saturating_add(bytes);
        true
    }

    /// The newest entry to remove and the bytes removed with it, if any.
    pub(crate) fn through(&self) -> Option<(i64, u64)> {
        self.last.map(|last| (last, self.removed))
    }

    fn expired(&self, time: &str) -> bool {
        self.cutoff.as_deref().is_some_and(|cutoff| time < cutoff)
    }

    fn over(&self, bytes: u64) -> bool {
        self.max_bytes.is_some_and(|max| bytes > max)
    }
}

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(time: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(time).unwrap().into()
    }

    #[test]
    fn a_step_takes_expired_entries_then_stops_at_the_first_kept() {
        let retention = JournalRetention {
            max_age: Some(Duration::from_secs(3600)),
            max_bytes: None,
        };
        let mut pruning = Pruning::new(&retention, at("2026-12-07T12:00:00Z"), 300);
        assert!(pruning.may_remove());
        assert!(pruning.is_due(Some("2026-12-07T10:00:00.000000Z")));
        assert!(pruning.take(1, "2026-12-07T10:00:00.000000Z", 100));
        assert!(pruning.take(2, "2026-12-07T10:59:59.999999Z", 100));
        assert!(!pruning.take(3, "2026-12-07T11:00:00.000001Z", 100));
        assert_eq!(pruning.through(), Some((2, 200)));
        assert!(
            !pruning.is_due(None),
            "an empty journal has nothing to prune"
        );
    }

    #[test]
    fn a_step_takes_the_oldest_until_the_journal_fits() {
        let retention = JournalRetention {
            max_age: None,
            max_bytes: Some(250),
        };
        let now = at("2026-12-07T12:00:00Z");
        assert!(!Pruning::new(&retention, now, 250).may_remove());
        let mut pruning = Pruning::new(&retention, now, 400);
        assert!(pruning.is_due(Some("2026-12-07T11:59:00.000000Z")));
        assert!(pruning.take(1, "2026-12-07T11:59:00.000000Z", 100));
        assert!(pruning.take(2, "2026-12-07T11:59:01.000000Z", 100));
        // 200 bytes left: within the limit.
        assert!(!pruning.take(3, "2026-12-07T11:59:02.000000Z", 100));
        assert_eq!(pruning.through(), Some((2, 200)));
    }
}
