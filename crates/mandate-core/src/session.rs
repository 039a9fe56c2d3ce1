//! A session's earlier calls, condensed into what policies read.
//!
//! Policies never see a session's history entry by entry: they see counts,
//! the tools and action classes used, and the data labels that came in
//! ([`SessionSummary`]). A summary is built one call and one result at a
//! time, so whoever keeps a session can keep its summary up to date as it
//! goes instead of replaying the history on every decision:
//!
//! * the server keeps one per task, updated in the same transaction as the
//!   task's history, so a decision under a task credential reads one row
//!   however long the task has run;
//! * a caller keeping its own session (the MCP gateway without a task
//!   credential) may send its summary instead of its history;
//! * a history sent in a request is folded into a summary before it is
//!   evaluated, so every path gives policies the same facts.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::decision::Decision;
use crate::provenance::Grounds;
use crate::request::{ActionClass, Hints, SessionInput, ToolAnnotations};

/// What policies know of a session's earlier calls (`context.session`).
///
/// A *use* is an earlier call whose decision was `allow`: only those ran.
/// Positions order the calls of the session: each call is recorded at a
/// position greater than the one before it, and the labels its result
/// brought in are recorded at the same position, whenever they arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionSummary {
    /// Earlier decisions, whatever their outcome.
    #[serde(default)]
    pub calls: u64,
    /// How many of them were denials.
    #[serde(default)]
    pub denials: u64,
    /// Uses per server, then per tool name. Uses recorded without a server
    /// are under `""` and count for a tool of that name on every server.
    #[serde(default)]
    pub uses: BTreeMap<String, BTreeMap<String, u64>>,
    /// Action classes of the uses whose annotations were known.
    #[serde(default)]
    pub action_classes: BTreeSet<ActionClass>,
    /// Labels of all data that entered the session.
    #[serde(default)]
    pub labels: BTreeSet<String>,
    /// The labels among `labels` that entered after the latest use and not
    /// before it: no call has been allowed since they arrived.
    #[serde(default)]
    pub new_labels: BTreeSet<String>,
    /// Position of the latest use, which decides whether labels arriving
    /// late (a result reported after a later call) are new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_use: Option<u64>,
    /// Keyed digests of the values the session saw (in the prompt, the
    /// task, tool outputs), by where each was seen: what a destination's
    /// provenance is looked up in.
    #[serde(default, skip_serializing_if = "Grounds::is_empty")]
    pub grounds: Grounds,
}

impl SessionSummary {
    /// Records a call decided at `position` (after every call recorded so
    /// far). An allowed call is a use: every label so far stops being new.
    pub fn record_call(
        &mut self,
        position: u64,
        server: &str,
        tool: &str,
        decision: Decision,
        annotations: Option<&ToolAnnotations>,
    ) {
        self.calls = self.calls.saturating_add(1);
        match decision {
            Decision::Allow => {
                let count = self
                    .uses
                    .entry(server.to_owned())
                    .or_default()
                    .entry(tool.to_owned())
                    .or_default();
                *count = count.saturating_add(1);
                if let Some(annotations) = annotations {
                    self.action_classes
                        .insert(Hints::from(annotations).action_class());
                }
                self.new_labels.clear();
                self.last_use = Some(position);
            }
            Decision::Deny => self.denials = self.denials.saturating_add(1),
            Decision::ApprovalRequired => {}
        }
    }

    /// Records labels that the result of the call at `position` brought in.
    /// They are new unless a call was allowed after that call (it ran with
    /// them in the session) or they were in the session already.
    pub fn record_labels<I>(&mut self, position: u64, labels: I)
    where
        I: IntoIterator<Item = String>,
    {
        let after_last_use = self.last_use.is_none_or(|last| position >= last);
        for label in labels {
            if after_last_use {
                if !self.labels.contains(&label) {
                    self.new_labels.insert(label.clone());
                }
            } else {
                self.new_labels.remove(&label);
            }
            self.labels.insert(label);
        }
    }

    /// Earlier uses of `tool` on `server` (or recorded without a server).
    pub fn uses_of(&self, server: &str, tool: &str) -> u64 {
        let count = |server: &str| {
            self.uses
                .get(server)
                .and_then(|tools| tools.get(tool))
                .copied()
                .unwrap_or(0)
        };
        if server.is_empty() {
            count("")
        } else {
            count(server).saturating_add(count(""))
        }
    }

    /// Names (without server) of the tools used.
    pub fn tools_called(&self) -> BTreeSet<&str> {
        self.uses
            .values()
            .flat_map(|tools| tools.keys().map(String::as_str))
            .collect()
    }
}

/// The label of content from a tool that reaches the open world.
pub const UNTRUSTED: &str = "untrusted";

impl SessionSummary {
    /// Records a decision in a session Mandate keeps itself (a task's, or
    /// an agent's named session): the call, as [`record_call`](Self::record_call)
    /// (Self::record_call) does, and, for an allowed call of a tool whose
    /// output is untrusted ([`ToolAnnotations::untrusted_output`]: as the
    /// operator's catalog says, else one that reaches the open world, the
    /// MCP default when the annotations are unknown), the label
    /// [`UNTRUSTED`] at once.
    ///
    /// Tainting as the call is allowed, not when its result is reported,
    /// is what makes the taint impossible to lose: whatever the call
    /// returns (a result, an error carrying the page's text, progress, a
    /// stream cut short) reaches the agent after this is recorded, and a
    /// result that is never reported taints all the same.
    pub fn record_decision(
        &mut self,
        position: u64,
        server: &str,
        tool: &str,
        decision: Decision,
        annotations: Option<&ToolAnnotations>,
    ) {
        self.record_call(position, server, tool, decision, annotations);
        if decision == Decision::Allow && annotations.is_none_or(ToolAnnotations::untrusted_output)
        {
            self.record_labels(position, [UNTRUSTED.to_owned()]);
        }
    }
}

/// The name of a session Mandate keeps for an agent that decides without a
/// task credential (`context.session.id`): 1 to 128 ASCII letters, digits
/// and `. _ - : @ / +`.
///
/// The session is the agent's: the same id under another principal is
/// another session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

/// Longest session id accepted.
const MAX_SESSION_ID: usize = 128;

impl SessionId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-:@/+".contains(c);
        if value.is_empty() || value.len() > MAX_SESSION_ID || !value.chars().all(allowed) {
            return Err(format!(
                "session id `{}` must be 1 to {MAX_SESSION_ID} ASCII letters, digits and `. _ - : @ / +`",
                value.escape_debug()
            ));
        }
        Ok(SessionId(value))
    }
}

impl std::str::FromStr for SessionId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> Self {
        id.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SessionInput> for SessionSummary {
    /// Folds a history sent by a caller, oldest entry first. Labels sent
    /// without an entry came in at an unknown time: they count as having
    /// entered before the first entry.
    fn from(session: SessionInput) -> Self {
        if let Some(summary) = session.summary {
            return summary;
        }
        let mut summary = SessionSummary::default();
        summary.record_labels(0, session.labels);
        for (position, entry) in (0u64..).zip(session.history) {
            summary.record_call(
                position,
                &entry.server,
                &entry.tool,
                entry.decision,
                entry.annotations.as_ref(),
            );
            summary.record_labels(position, entry.labels);
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::OutputTrust;

    fn labels(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn output_trust_is_the_catalogs_word_over_open_world() {
        let sent = ToolAnnotations {
            read_only_hint: Some(false),
            open_world_hint: Some(true),
            output: Some(OutputTrust::Trusted),
            ..ToolAnnotations::default()
        };
        let mut summary = SessionSummary::default();
        summary.record_decision(1, "mail", "send_email", Decision::Allow, Some(&sent));
        assert!(
            summary.labels.is_empty(),
            "a mail sent returns no one's text"
        );
        let read = ToolAnnotations {
            open_world_hint: Some(false),
            output: Some(OutputTrust::Untrusted),
            ..ToolAnnotations::default()
        };
        summary.record_decision(2, "mail", "read_inbox", Decision::Allow, Some(&read));
        assert_eq!(labels(&summary.labels), ["untrusted"], "a mail read does");
        // On the wire, under Mandate's own key; an MCP server's annotations
        // do not carry it, and unknown values are refused.
        let parsed: ToolAnnotations =
            serde_json::from_str(r#"{"openWorldHint": true, "mandate/output": "trusted"}"#)
                .unwrap_or_default();
        assert!(!parsed.untrusted_output());
        assert!(serde_json::from_str::<ToolAnnotations>(r#"{"mandate/output": "maybe"}"#).is_err());
    }

    #[test]
    fn an_allowed_open_world_call_taints_the_session_as_it_is_allowed() {
        let closed = ToolAnnotations {
            read_only_hint: Some(true),
            open_world_hint: Some(false),
            ..ToolAnnotations::default()
        };
        let open = ToolAnnotations {
            open_world_hint: Some(true),
            ..closed.clone()
        };
        let mut summary = SessionSummary::default();
        summary.record_decision(1, "fs", "read", Decision::Allow, Some(&closed));
        assert!(summary.labels.is_empty());
        // Denied or waiting calls did not run: nothing came in.
        summary.record_decision(2, "web", "fetch", Decision::Deny, Some(&open));
        summary.record_decision(3, "web", "fetch", Decision::ApprovalRequired, None);
        assert!(summary.labels.is_empty());
        summary.record_decision(4, "web", "fetch", Decision::Allow, Some(&open));
        assert_eq!(labels(&summary.labels), ["untrusted"]);
        assert_eq!(labels(&summary.new_labels), ["untrusted"]);
        // Unknown annotations take the MCP default: open world.
        let mut unknown = SessionSummary::default();
        unknown.record_decision(1, "x", "y", Decision::Allow, None);
        assert_eq!(labels(&unknown.new_labels), ["untrusted"]);
    }

    #[test]
    fn session_ids_have_a_grammar() {
        for good in ["research-1", "spiffe://x/a", "0190a1b2-c3d4", "a.b_c:d@e+f"] {
            assert!(good.parse::<SessionId>().is_ok(), "{good}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            " x",
            "x y",
            "wip\u{435}",
            "a\u{200b}b",
            "tab\t",
            long.as_str(),
        ] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_late_result_of_an_earlier_call_is_not_new() {
        let mut summary = SessionSummary::default();
        summary.record_call(1, "web", "fetch", Decision::Allow, None);
        summary.record_call(2, "mail", "read", Decision::Allow, None);
        // fetch's result is reported after read was allowed: read ran with
        // it in the session, so it is not new.
        summary.record_labels(1, ["untrusted".to_owned()]);
        assert_eq!(labels(&summary.labels), ["untrusted"]);
        assert!(summary.new_labels.is_empty());
        // read's own result is.
        summary.record_labels(2, ["confidential".to_owned()]);
        assert_eq!(labels(&summary.new_labels), ["confidential"]);
    }

    #[test]
    fn a_label_seen_before_the_last_use_stops_being_new() {
        let mut summary = SessionSummary::default();
        summary.record_call(1, "s", "a", Decision::Allow, None);
        summary.record_call(2, "s", "b", Decision::Allow, None);
        summary.record_labels(2, ["untrusted".to_owned()]);
        assert_eq!(labels(&summary.new_labels), ["untrusted"]);
        summary.record_labels(1, ["untrusted".to_owned()]);
        assert!(summary.new_labels.is_empty());
        // A label already in the session is not new when it comes again.
        summary.record_labels(2, ["untrusted".to_owned()]);
        assert!(summary.new_labels.is_empty());
    }

    #[test]
    fn denied_and_waiting_calls_are_counted_but_are_no_uses() {
        let mut summary = SessionSummary::default();
        summary.record_labels(0, ["untrusted".to_owned()]);
        summary.record_call(0, "s", "a", Decision::Deny, None);
        summary.record_call(1, "s", "a", Decision::ApprovalRequired, None);
        assert_eq!((summary.calls, summary.denials), (2, 1));
        assert_eq!(summary.uses_of("s", "a"), 0);
        assert_eq!(labels(&summary.new_labels), ["untrusted"]);
        assert_eq!(summary.last_use, None);
    }

    #[test]
    fn a_summary_sent_by_the_caller_is_taken_as_is() {
        let sent: SessionSummary = serde_json::from_value(serde_json::json!({
            "calls": 3, "uses": {"mail": {"send": 2}}, "labels": ["untrusted"],
            "action_classes": ["write"]
        }))
        .unwrap();
        let folded = SessionSummary::from(SessionInput {
            summary: Some(sent.clone()),
            ..SessionInput::default()
        });
        assert_eq!(folded, sent);
        assert_eq!(folded.uses_of("mail", "send"), 2);
        assert_eq!(folded.tools_called(), BTreeSet::from(["send"]));
    }

    #[test]
    fn it_reads_back_what_it_wrote() {
        let mut summary = SessionSummary::default();
        let annotations = ToolAnnotations {
            read_only_hint: Some(true),
            ..ToolAnnotations::default()
        };
        summary.record_call(7, "web", "fetch", Decision::Allow, Some(&annotations));
        summary.record_labels(7, ["untrusted".to_owned()]);
        let text = serde_json::to_string(&summary).unwrap();
        assert_eq!(
            serde_json::from_str::<SessionSummary>(&text).unwrap(),
            summary
        );
        assert!(text.contains(r#""action_classes":["read"]"#), "{text}");
    }
}
