//! The ids Mandate gives out, one type for each kind of thing they name:
//! [`TaskId`] (a task), [`DecisionId`] (one decision on a tool call) and
//! [`ApprovalId`] (one request for a person's approval).
//!
//! Mandate mints each as a UUIDv7 (`mint`): unique without coordination
//! between servers, and ordered by time. Where an id comes in (a URL path,
//! a JSON or form body, a command-line argument, a database row) it is
//! parsed once, and passed on as its type from there, so that a decision
//! id cannot be handed where a task id is meant.
//!
//! Parsing is as lenient as Mandate's lookups have always been, not
//! limited to the UUIDs it mints: text it never minted names nothing and
//! is answered as an unknown id. The grammars refuse only what was refused
//! already: an empty id, and a decision id `POST /v1/token` would not
//! read. On the wire, in the state database and in receipts, each id is
//! its text, unchanged.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest decision id, in bytes: the most `POST /v1/token` reads of a
/// `decision_id`. A minted one is 36.
pub const MAX_DECISION_ID: usize = 128;

/// The kind of id, as messages say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A [`TaskId`].
    Task,
    /// A [`DecisionId`].
    Decision,
    /// An [`ApprovalId`].
    Approval,
}

impl IdKind {
    /// What ids of this kind may be.
    pub fn grammar(self) -> &'static str {
        match self {
            IdKind::Task => "a task id is text of at least one byte",
            IdKind::Decision => {
                "a decision id is 1 to 128 bytes of text without control characters"
            }
            IdKind::Approval => "an approval id is text of at least one byte",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            IdKind::Task => "task id",
            IdKind::Decision => "decision id",
            IdKind::Approval => "approval id",
        }
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// Text that is not an id of its kind: which kind, the text, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{shown}` {problem}; {}", .kind.grammar())]
pub struct IdError {
    /// The kind of id the text was to be.
    pub kind: IdKind,
    /// The text, escaped (`\u{7}`) and cut short, so that it shows what it
    /// is on one line.
    pub shown: String,
    /// What is wrong with it.
    pub problem: String,
}

impl IdError {
    fn new(kind: IdKind, text: &str, problem: impl Into<String>) -> Self {
        const MAX_SHOWN: usize = 80;
        let mut shown: String = text.chars().take(MAX_SHOWN).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        Self {
            kind,
            shown: shown.escape_debug().to_string(),
            problem: problem.into(),
        }
    }
}

/// A task id: any text of at least one byte, the one thing the state
/// database checked. (The credential authority refuses a blank one too,
/// in a check of its own.)
fn check_task(text: &str) -> Result<(), IdError> {
    non_empty(IdKind::Task, text)
}

/// A decision id: 1 to [`MAX_DECISION_ID`] bytes without control
/// characters, as `POST /v1/token` requires of a `decision_id`.
fn check_decision(text: &str) -> Result<(), IdError> {
    let kind = IdKind::Decision;
    non_empty(kind, text)?;
    if text.len() > MAX_DECISION_ID {
        return Err(IdError::new(
            kind,
            text,
            format!("is longer than {MAX_DECISION_ID} bytes"),
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(IdError::new(
            kind,
            text,
            format!("has a control character (U+{:04X})", u32::from(c)),
        ));
    }
    Ok(())
}

/// An approval id: any text of at least one byte (an empty one could not
/// be named in a URL; nothing else was ever refused).
fn check_approval(text: &str) -> Result<(), IdError> {
    non_empty(IdKind::Approval, text)
}

fn non_empty(kind: IdKind, text: &str) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::new(kind, text, "is empty"));
    }
    Ok(())
}

/// The same methods and conversions for each id type: parsing is the only
/// way in, besides minting, and the text is the only way out.
macro_rules! id_type {
    ($name:ident, $check:ident) => {
        impl $name {
            /// Parses `text` as an id of this kind; see the type's grammar.
            pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
                let text = text.into();
                $check(&text)?;
                Ok(Self(text))
            }

            /// A fresh id: a UUIDv7, unique without coordination and ordered
            /// by time.
            pub fn mint() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::new(text)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::new(text)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // As the text itself: `{:<36}` pads an id as it padded the string.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

/// The id of a task Mandate started (`POST /v1/tasks`): what its
/// credentials, its history and its revocations are recorded under, and
/// what `/v1/tasks/{id}` names.
///
/// Grammar: text of at least one byte. Mandate mints UUIDv7s
/// ([`TaskId::mint`]); any other text names no task.
///
/// Not every task id in a request is one: a caller deciding without a task
/// credential names its own task in `context.task.id`, which is free text
/// and stays a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

id_type!(TaskId, check_task);

/// The id of one decision on a tool call (`decision_id`): its receipt's
/// id, its entry in a task's history, what a result is reported against
/// and what a token exchange names.
///
/// Grammar: 1 to [`MAX_DECISION_ID`] bytes without control characters.
/// Mandate mints UUIDv7s ([`DecisionId::mint`]), in the server and in
/// `mandate check` alike; any other text names no decision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DecisionId(String);

id_type!(DecisionId, check_decision);

/// The id of one request for a person's approval: its own, not the id of
/// the decision that asked for it ([`Approval::decision_id`](crate::Approval::decision_id)).
/// It is also the id of the receipt of the approval's resolution, and what
/// `/v1/approvals/{id}` names.
///
/// Grammar: text of at least one byte. Mandate mints UUIDv7s
/// ([`ApprovalId::mint`]); any other text names no approval.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApprovalId(String);

id_type!(ApprovalId, check_approval);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_uuidv7_text_and_parse_back() {
        let task = TaskId::mint();
        let decision = DecisionId::mint();
        let approval = ApprovalId::mint();
        for text in [task.as_str(), decision.as_str(), approval.as_str()] {
            let uuid = uuid::Uuid::parse_str(text).unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{text}");
            assert_eq!(uuid.to_string(), text, "the canonical lowercase form");
        }
        assert_eq!(task.as_str().parse::<TaskId>().unwrap(), task);
        assert_eq!(decision.as_str().parse::<DecisionId>().unwrap(), decision);
        assert_eq!(approval.as_str().parse::<ApprovalId>().unwrap(), approval);
        assert_ne!(TaskId::mint(), task, "fresh each time");
    }

    /// Ids Mandate did not mint were always looked up (and not found), so
    /// they still parse; what was always refused still is.
    #[test]
    fn what_was_accepted_before_still_parses() {
        for text in ["t1", "task-0001", "no-such-task", ".", "a/b", "ü", " x "] {
            assert_eq!(TaskId::new(text).unwrap().as_str(), text);
            assert_eq!(ApprovalId::new(text).unwrap().as_str(), text);
            assert_eq!(DecisionId::new(text).unwrap().as_str(), text);
        }
        let long = "d".repeat(MAX_DECISION_ID);
        assert_eq!(DecisionId::new(long.as_str()).unwrap().as_str(), long);
        // Task and approval ids were never bounded.
        let longer = "t".repeat(4096);
        assert!(TaskId::new(longer.as_str()).is_ok());
        assert!(ApprovalId::new(longer.as_str()).is_ok());
    }

    #[test]
    fn bad_ids_are_refused_with_what_is_wrong() {
        let empty = TaskId::new("").unwrap_err();
        assert_eq!(empty.kind, IdKind::Task);
        assert_eq!(
            empty.to_string(),
            "task id `` is empty; a task id is text of at least one byte"
        );
        assert!(ApprovalId::new("").is_err());
        assert!(DecisionId::new("").is_err());
        let long = DecisionId::new("d".repeat(MAX_DECISION_ID + 1)).unwrap_err();
        assert_eq!(long.kind, IdKind::Decision);
        assert!(long.problem.contains("longer than 128 bytes"), "{long}");
        assert!(long.shown.ends_with('…'), "{long}");
        let control = DecisionId::new("d\u{7}1").unwrap_err();
        assert_eq!(control.shown, "d\\u{7}1");
        assert!(control.problem.contains("U+0007"), "{control}");
        assert!("d\n".parse::<DecisionId>().is_err());
    }

    #[test]
    fn on_the_wire_an_id_is_its_text() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Body {
            task: TaskId,
            decision: DecisionId,
            approval: Option<ApprovalId>,
        }
        let body = Body {
            task: TaskId::new("t-1").unwrap(),
            decision: DecisionId::new("d-1").unwrap(),
            approval: Some(ApprovalId::new("a-1").unwrap()),
        };
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(json, r#"{"task":"t-1","decision":"d-1","approval":"a-1"}"#);
        assert_eq!(serde_json::from_str::<Body>(&json).unwrap(), body);
        assert_eq!(body.task.to_string(), "t-1");
        assert_eq!(format!("[{:<5}]", body.task), "[t-1  ]");
        assert_eq!(String::from(body.decision), "d-1");
    }

    #[test]
    fn deserializing_refuses_what_parsing_refuses() {
        for json in [
            r#"{"task":"","decision":"d","approval":null}"#,
            r#"{"task":"t","decision":"","approval":null}"#,
            r#"{"task":"t","decision":"d\u0000","approval":null}"#,
            r#"{"task":"t","decision":"d","approval":""}"#,
            r#"{"task":7,"decision":"d","approval":null}"#,
        ] {
            #[derive(Debug, Deserialize)]
            #[allow(dead_code)]
            struct Body {
                task: TaskId,
                decision: DecisionId,
                approval: Option<ApprovalId>,
            }
            assert!(serde_json::from_str::<Body>(json).is_err(), "{json}");
        }
        let error = serde_json::from_str::<DecisionId>(r#""""#).unwrap_err();
        assert!(
            error.to_string().contains("decision id `` is empty"),
            "{error}"
        );
    }
}
