//! What the decision journal keeps of a request, and how it is redacted.
//!
//! The journal keeps the request exactly as it was evaluated (the server's
//! fills included), so that `mandate policy replay` can evaluate it again.
//! Redaction rules (`[[journal_redact]]`) apply per tool and argument path
//! before anything is stored: `hash` replaces the value with the text of
//! its digest (`"sha256:…"`, the digest receipts keep of a redacted value;
//! text, so that a string argument keeps its type and a policy reading it
//! still evaluates, on the digest), `drop` removes it,
//! `keep` keeps it (to exempt one tool from a broader rule). For each path
//! the most specific rule whose tool matches wins: `server/tool`, then
//! `server/*`, then `*`.

use mandate_core::{Decision, DecisionRequest};
use mandate_ledger::{ReceiptError, canonical_json, digest_json};
use mandate_store::JournalEntry;

use crate::receipts::{DEFAULT_MAX_ARGUMENT_BYTES, ReceiptSettings};
use mandate_store::journal::Redacted;
use serde_json::Value;

/// What is done to a redacted argument's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedactAction {
    /// Kept as it is (overrides a broader rule).
    Keep,
    /// Replaced by `"sha256:…"`, the digest of its canonical JSON.
    Hash,
    /// Removed.
    Drop,
}

impl RedactAction {
    /// The configured name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Hash => "hash",
            Self::Drop => "drop",
        }
    }
}

/// Which tools a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ToolPattern {
    /// `*`: every tool.
    Any,
    /// `server/*`: every tool of a server.
    Server(String),
    /// `server/tool`.
    Tool(String, String),
}

impl ToolPattern {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        match text.split_once('/') {
            Some((server, "*")) if !server.is_empty() && !server.contains('*') => {
                Ok(Self::Server(server.to_owned()))
            }
            Some((server, tool))
                if !server.is_empty()
                    && !tool.is_empty()
                    && !server.contains('*')
                    && !tool.contains('*') =>
            {
                Ok(Self::Tool(server.to_owned(), tool.to_owned()))
            }
            _ => Err(format!(
                "`{text}` is not a tool pattern: write `*`, `server/*` or `server/tool`"
            )),
        }
    }

    /// How specifically the pattern covers `server/tool`; `None` if not.
    fn covers(&self, server: &str, tool: &str) -> Option<u8> {
        match self {
            Self::Any => Some(0),
            Self::Server(s) => (s == server).then_some(1),
            Self::Tool(s, t) => (s == server && t == tool).then_some(2),
        }
    }
}

/// One redaction rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionRule {
    tool: ToolPattern,
    path: Vec<String>,
    action: RedactAction,
}

impl RedactionRule {
    /// The rule for tools matching `tool` (`*`, `server/*`, `server/tool`)
    /// and the argument at `path` (dot-separated keys, `body` or
    /// `payment.card`).
    pub fn new(tool: &str, path: &str, action: RedactAction) -> Result<Self, String> {
        let tool = ToolPattern::parse(tool)?;
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(format!(
                "`{path}` is not an argument path: write dot-separated keys, like `body` or `payment.card`"
            ));
        }
        Ok(Self {
            tool,
            path: path.split('.').map(str::to_owned).collect(),
            action,
        })
    }
}

/// The path an entry's redactions name when its arguments were left out
/// for their size.
pub const OMITTED: &str = "*";

/// What the journal keeps, and whether there is one.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    /// Whether decisions are journaled at all.
    pub enabled: bool,
    rules: Vec<RedactionRule>,
    /// The largest copy of the arguments kept (canonical JSON bytes, after
    /// redaction), as for receipts: a larger one is left out, so that no
    /// request makes an entry as large as its body.
    max_argument_bytes: usize,
    /// Argument paths receipts keep only as digests (`receipt_redact`):
    /// the journal never keeps more of them, whatever its own rules say.
    receipt_redact: Vec<Vec<String>>,
    /// Whether receipts keep a copy of the arguments at all
    /// (`receipt_arguments = "copy"`); without one, neither does the
    /// journal.
    arguments: bool,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self::new(true, Vec::new())
    }
}

/// A request's journal text before its verdict is known.
#[derive(Debug, Clone)]
pub struct JournalDraft {
    request: String,
    redacted: Vec<Redacted>,
}

impl JournalSettings {
    /// A journal (`enabled`) redacting with `rules`, keeping arguments of
    /// up to [`DEFAULT_MAX_ARGUMENT_BYTES`].
    pub fn new(enabled: bool, rules: Vec<RedactionRule>) -> Self {
        Self {
            enabled,
            rules,
            max_argument_bytes: DEFAULT_MAX_ARGUMENT_BYTES,
            receipt_redact: Vec::new(),
            arguments: true,
        }
    }

    /// The same, never keeping more of the arguments than receipts do
    /// (`receipts`): their redacted paths are hashed at least, and when
    /// they keep only a digest the journal keeps no arguments. An operator
    /// who keeps a value out of the receipts keeps it out of the database.
    #[must_use]
    pub fn within(mut self, receipts: &ReceiptSettings) -> Self {
        self.receipt_redact.clone_from(&receipts.redact);
        self.arguments = !receipts.digest_only;
        self.max_argument_bytes = receipts.max_argument_bytes;
        self
    }

    /// The same, keeping arguments of at most `bytes`.
    #[must_use]
    pub fn with_max_argument_bytes(mut self, bytes: usize) -> Self {
        self.max_argument_bytes = bytes;
        self
    }

    /// No journal.
    pub fn off() -> Self {
        Self::new(false, Vec::new())
    }

    /// What the journal keeps of `request`, whose canonical JSON is
    /// `canonical` (the bytes the receipt's `context_sha256` digests); `None`
    /// with no journal.
    pub fn draft(
        &self,
        request: &DecisionRequest,
        canonical: &[u8],
    ) -> Result<Option<JournalDraft>, ReceiptError> {
        if !self.enabled {
            return Ok(None);
        }
        let mut applied = self.applying(&request.action.server, &request.action.tool);
        for path in &self.receipt_redact {
            match applied.iter_mut().find(|(p, _)| p == path) {
                Some((_, action)) if *action == RedactAction::Keep => *action = RedactAction::Hash,
                Some(_) => {}
                None => applied.push((path, RedactAction::Hash)),
            }
        }
        let too_large = |bytes: Vec<u8>| bytes.len() > self.max_argument_bytes;
        // The arguments kept when they differ from those evaluated, with
        // what was done to them. Most calls have nothing to redact: their
        // arguments are measured in place, not copied.
        let changed: Option<(Value, Vec<Redacted>)> = if applied.is_empty() && self.arguments {
            too_large(canonical_json(&request.arguments)?).then(left_out)
        } else {
            let mut arguments = Value::Object(request.arguments.clone());
            let mut redacted = Vec::new();
            for (path, action) in applied {
                if redact_at(&mut arguments, path, action)? {
                    redacted.push(Redacted {
                        path: path.join("."),
                        action: action.as_str().to_owned(),
                    });
                }
            }
            // Too large a copy is left out whole, as is every copy when
            // receipts keep none: the entry says so, and a replay treats
            // every argument as redacted.
            if !self.arguments || too_large(canonical_json(&arguments)?) {
                Some(left_out())
            } else {
                (!redacted.is_empty()).then_some((arguments, redacted))
            }
        };
        let (request, redacted) = match changed {
            None => (String::from_utf8_lossy(canonical).into_owned(), Vec::new()),
            Some((arguments, redacted)) => {
                let mut value = serde_json::to_value(request)?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("arguments".to_owned(), arguments);
                }
                let text = String::from_utf8_lossy(&canonical_json(&value)?).into_owned();
                (text, redacted)
            }
        };
        Ok(Some(JournalDraft { request, redacted }))
    }

    /// For each path some rule covering `server/tool` names, the action of
    /// the most specific such rule (the last configured among equals).
    fn applying(&self, server: &str, tool: &str) -> Vec<(&[String], RedactAction)> {
        let mut chosen: Vec<(&[String], u8, RedactAction)> = Vec::new();
        for rule in &self.rules {
            let Some(rank) = rule.tool.covers(server, tool) else {
                continue;
            };
            match chosen.iter_mut().find(|(path, _, _)| *path == rule.path) {
                Some(slot) if slot.1 <= rank => *slot = (&rule.path, rank, rule.action),
                Some(_) => {}
                None => chosen.push((&rule.path, rank, rule.action)),
            }
        }
        chosen
            .into_iter()
            .map(|(path, _, action)| (path, action))
            .collect()
    }
}

impl JournalDraft {
    /// The entry, with the pack's outcome and policies before the approval gate, the
    /// decision answered after it, the credential's tools (if any) and the
    /// pack's version.
    pub fn complete(
        self,
        (decision, policies): (Decision, Vec<String>),
        outcome: Decision,
        scope: Option<Vec<String>>,
        policy_version: &str,
    ) -> JournalEntry {
        JournalEntry {
            request: self.request,
            redacted: self.redacted,
            scope,
            decision,
            outcome,
            policies,
            policy_version: policy_version.to_owned(),
        }
    }
}

/// Arguments left out whole: none kept, and the mark that says so.
fn left_out() -> (Value, Vec<Redacted>) {
    (
        Value::Object(serde_json::Map::new()),
        vec![Redacted {
            path: OMITTED.to_owned(),
            action: "omitted".to_owned(),
        }],
    )
}

/// Applies `action` at `path` in `arguments`; whether a value was there
/// and changed.
fn redact_at(
    arguments: &mut Value,
    path: &[String],
    action: RedactAction,
) -> Result<bool, ReceiptError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(false);
    };
    let parent = parents
        .iter()
        .try_fold(&mut *arguments, |node, key| node.get_mut(key.as_str()));
    let Some(Value::Object(parent)) = parent else {
        return Ok(false);
    };
    if !parent.contains_key(last) {
        return Ok(false);
    }
    match action {
        RedactAction::Keep => Ok(false),
        RedactAction::Drop => Ok(parent.remove(last).is_some()),
        RedactAction::Hash => {
            let Some(value) = parent.get_mut(last) else {
                return Ok(false);
            };
            *value = Value::String(digest_json(value)?);
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn request(server: &str, tool: &str, arguments: Value) -> DecisionRequest {
        serde_json::from_value(json!({
            "principal": {"id": "agent"},
            "action": {"server": server, "tool": tool},
            "arguments": arguments,
        }))
        .unwrap()
    }

    fn kept(settings: &JournalSettings, request: &DecisionRequest) -> (Value, Vec<String>) {
        let canonical = canonical_json(&serde_json::to_value(request).unwrap()).unwrap();
        let draft = settings.draft(request, &canonical).unwrap().unwrap();
        let value: Value = serde_json::from_str(&draft.request).unwrap();
        let paths = draft
            .redacted
            .iter()
            .map(|r| format!("{}:{}", r.path, r.action))
            .collect();
        (value["arguments"].clone(), paths)
    }

    #[test]
    fn the_most_specific_rule_wins_per_path() {
        let rules = vec![
            RedactionRule::new("*", "body", RedactAction::Hash).unwrap(),
            RedactionRule::new("mail/*", "card.number", RedactAction::Drop).unwrap(),
            RedactionRule::new("notes/add", "body", RedactAction::Keep).unwrap(),
        ];
        let settings = JournalSettings::new(true, rules);
        let args = json!({"body": "secret", "card": {"number": "4111", "cvc": "1"}, "to": "a@b"});

        let (mail, paths) = kept(&settings, &request("mail", "send", args.clone()));
        assert_eq!(paths, ["body:hash", "card.number:drop"]);
        assert_eq!(mail["to"], "a@b");
        assert_eq!(mail["card"], json!({"cvc": "1"}));
        assert_eq!(
            mail["body"].as_str().unwrap(),
            digest_json(&json!("secret")).unwrap(),
            "{mail}"
        );

        let (notes, paths) = kept(&settings, &request("notes", "add", args.clone()));
        assert!(paths.is_empty());
        assert_eq!(notes, args);
    }

    #[test]
    fn an_unredacted_entry_is_the_bytes_the_receipt_digests() {
        let settings = JournalSettings::default();
        let request = request("mail", "send", json!({"to": "x@y", "n": 1}));
        let canonical = canonical_json(&serde_json::to_value(&request).unwrap()).unwrap();
        let draft = settings.draft(&request, &canonical).unwrap().unwrap();
        assert_eq!(draft.request.as_bytes(), canonical.as_slice());
        assert!(
            JournalSettings::off()
                .draft(&request, &canonical)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_journal_keeps_no_more_than_receipts_do() {
        let receipts = ReceiptSettings::new(false, &["body".to_owned(), "card.number".to_owned()]);
        let rules = vec![
            RedactionRule::new("*", "body", RedactAction::Keep).unwrap(),
            RedactionRule::new("*", "card.number", RedactAction::Drop).unwrap(),
        ];
        let settings = JournalSettings::new(true, rules).within(&receipts);
        let args = json!({"body": "secret", "card": {"number": "4111"}, "to": "a@b"});
        let (stored, paths) = kept(&settings, &request("mail", "send", args));
        assert_eq!(
            paths,
            ["body:hash", "card.number:drop"],
            "keep cannot undo a receipt's redaction"
        );
        assert_eq!(stored["body"], digest_json(&json!("secret")).unwrap());
        assert_eq!(stored["card"], json!({}));

        let digest_only = ReceiptSettings::new(true, &[]);
        let settings = JournalSettings::default().within(&digest_only);
        let (args, paths) = kept(&settings, &request("m", "t", json!({"a": 1})));
        assert_eq!(args, json!({}));
        assert_eq!(paths, ["*:omitted"]);
    }

    #[test]
    fn too_large_arguments_are_left_out_whole() {
        let settings = JournalSettings::default().with_max_argument_bytes(64);
        let (small, paths) = kept(&settings, &request("m", "t", json!({"a": 1})));
        assert_eq!(small, json!({"a": 1}));
        assert!(paths.is_empty());
        let big = request("m", "t", json!({"a": "x".repeat(100)}));
        let (args, paths) = kept(&settings, &big);
        assert_eq!(args, json!({}));
        assert_eq!(paths, ["*:omitted"]);
    }

    #[test]
    fn patterns_and_paths_have_a_grammar() {
        for bad in [
            "",
            "mail",
            "*/send",
            "mail/",
            "/send",
            "ma*l/send",
            "mail/se*",
        ] {
            assert!(
                RedactionRule::new(bad, "body", RedactAction::Hash).is_err(),
                "{bad}"
            );
        }
        for bad in ["", ".", "a..b", "a."] {
            assert!(
                RedactionRule::new("*", bad, RedactAction::Hash).is_err(),
                "{bad}"
            );
        }
    }
}
