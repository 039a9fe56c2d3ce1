//! Loading a policy pack: parse, name, partition, validate, index.
//!
//! A pack is a set of Cedar policy texts plus an optional schema extension.
//! Loading is all-or-nothing: any parse or validation error rejects the whole
//! pack with every problem located (file, line, column), so a server can keep
//! the pack already in force.

use std::collections::HashMap;
use std::fmt;

use cedar_policy::{Effect, EntityUid, Policy, PolicyId, PolicySet, ValidationMode, Validator};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::declared::DeclaredTypes;
use crate::evaluate::NAMES;
use crate::index::PolicyIndex;
use crate::names;
use crate::schema::{self, PACK_SCHEMA_FILE};

/// One policy file's text and the name to report it under (usually its path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// Where the text came from, as shown in messages.
    pub name: String,
    /// The Cedar text.
    pub text: String,
}

impl PolicySource {
    /// A source from a name and its text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// Which of the two policy sets a policy belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Permits and forbids that decide allow or deny.
    Base,
    /// Permits annotated `@approval`: a match means a person must approve.
    Approval,
}

/// How serious a [`PolicyProblem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The pack cannot load.
    Error,
    /// The pack loads, but a policy is likely wrong (for example it can never apply).
    Warning,
}

/// A located problem in a policy pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyProblem {
    /// Error or warning.
    pub severity: Severity,
    /// The file, as named in its [`PolicySource`].
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The policy concerned, when known.
    pub policy: Option<String>,
    /// What is wrong, and how to fix it where Cedar says.
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}", self.file)?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(column) = self.column {
                    write!(f, ":{column}")?;
                }
            }
            f.write_str(": ")?;
        }
        f.write_str(match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })?;
        if let Some(policy) = &self.policy {
            write!(f, " in policy `{policy}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A pack that failed to load, with every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy pack rejected: {}", .problems.iter().filter(|p| p.severity == Severity::Error).map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct LoadError {
    /// Errors (and any warnings) found, in file order.
    pub problems: Vec<PolicyProblem>,
}

/// Where a policy came from, for messages and explanations.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub file: String,
    pub line: usize,
    pub kind: PolicyKind,
    /// `@approval` text for the gate, `@reason` text for the base set.
    pub reason: Option<String>,
    /// `@approval_expires` of a gate: how long a person has to answer.
    pub approval_ttl: Option<std::time::Duration>,
}

/// A validated, indexed policy pack, ready to decide.
#[derive(Debug)]
pub struct PolicyPack {
    pub(crate) base: PolicyIndex,
    pub(crate) approval: PolicyIndex,
    pub(crate) origins: HashMap<PolicyId, Origin>,
    /// Every policy, for explanations and listing.
    pub(crate) all: Vec<Policy>,
    version: String,
    warnings: Vec<PolicyProblem>,
    /// The declared types of the request's free data.
    pub(crate) declared: DeclaredTypes,
}

/// Annotation that gives a policy its id.
const ID_ANNOTATION: &str = "id";
/// Annotation that puts a permit in the approval gate; its value is the reason.
pub(crate) const APPROVAL_ANNOTATION: &str = "approval";
/// Annotation of a gate: how long its approvals wait for a person (`15m`).
pub(crate) const APPROVAL_EXPIRES_ANNOTATION: &str = "approval_expires";
/// Annotation with the human-readable reason of a base policy.
pub(crate) const REASON_ANNOTATION: &str = "reason";

impl PolicyPack {
    /// Parses, validates (strict mode, against the base schema plus `schema`)
    /// and indexes the policies. `schema` is the pack's schema extension.
    pub fn load(
        policies: &[PolicySource],
        schema: Option<&PolicySource>,
    ) -> Result<Self, LoadError> {
        let mut problems = Vec::new();
        let schema_name = schema.map_or_else(|| PACK_SCHEMA_FILE.to_owned(), |s| s.name.clone());
        let composed = match schema::compose(schema.map(|s| s.text.as_str())) {
            Ok(s) => Some(s),
            Err(e) => {
                let (line, column) = match (e.offset, schema) {
                    (Some(o), Some(s)) => line_col(&s.text, o),
                    _ => (None, None),
                };
                problems.push(PolicyProblem {
                    severity: Severity::Error,
                    file: schema_name.clone(),
                    line,
                    column,
                    policy: None,
                    message: e.message,
                });
                None
            }
        };

        let mut all = Vec::new();
        let mut origins: HashMap<PolicyId, Origin> = HashMap::new();
        let mut texts: HashMap<PolicyId, usize> = HashMap::new();
        for (source_index, source) in policies.iter().enumerate() {
            let parsed = match source.text.parse::<PolicySet>() {
                Ok(set) => set,
                Err(errors) => {
                    for e in errors.iter() {
                        problems.push(located(Severity::Error, source, None, e));
                    }
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                problems.push(PolicyProblem {
                    severity: Severity::Error,
                    file: source.name.clone(),
                    line: None,
                    column: None,
                    policy: None,
                    message: "policy templates (`?principal`, `?resource`) are not supported; write static policies".into(),
                });
            }
            for (n, (offset, policy)) in in_source_order(&parsed, &source.text)
                .into_iter()
                .enumerate()
            {
                let (line, _) = line_col(&source.text, offset);
                let id = match policy.annotation(ID_ANNOTATION) {
                    Some(id) if !id.trim().is_empty() => id.to_owned(),
                    _ => format!("{}#{}", source.name, n + 1),
                };
                let id = PolicyId::new(id);
                let kind = if policy.annotation(APPROVAL_ANNOTATION).is_some() {
                    PolicyKind::Approval
                } else {
                    PolicyKind::Base
                };
                let problem = |message: String| PolicyProblem {
                    severity: Severity::Error,
                    file: source.name.clone(),
                    line,
                    column: None,
                    policy: Some(id.to_string()),
                    message,
                };
                for literal in policy.entity_literals() {
                    if let Some(message) = unmatchable(&literal) {
                        problems.push(problem(message));
                    }
                }
                if kind == PolicyKind::Approval && policy.effect() == Effect::Forbid {
                    problems.push(problem(
                        "`@approval` marks a permit that asks for a person's approval; a forbid cannot carry it (write a plain forbid to deny)".into(),
                    ));
                }
                let approval_ttl = match policy.annotation(APPROVAL_EXPIRES_ANNOTATION) {
                    None => None,
                    Some(_) if kind != PolicyKind::Approval => {
                        problems.push(problem(
                            "`@approval_expires` belongs on an `@approval` permit (it sets how long that approval waits)".into(),
                        ));
                        None
                    }
                    Some(text) => match humantime::parse_duration(text.trim()) {
                        Ok(ttl) if ttl > crate::approval::MAX_APPROVAL_TTL => {
                            problems.push(problem(format!(
                                "`@approval_expires(\"{text}\")` is longer than a week, the longest an approval may wait"
                            )));
                            None
                        }
                        Ok(ttl) if !ttl.is_zero() => Some(ttl),
                        _ => {
                            problems.push(problem(format!(
                                "`@approval_expires(\"{text}\")` is not a duration; write e.g. \"90s\", \"15m\" or \"1h\""
                            )));
                            None
                        }
                    },
                };
                if let Some(earlier) = origins.get(&id) {
                    problems.push(problem(format!(
                        "duplicate policy id (also used at {}:{}); give each policy a unique `@id`",
                        earlier.file, earlier.line
                    )));
                    continue;
                }
                let reason = match kind {
                    PolicyKind::Approval => policy.annotation(APPROVAL_ANNOTATION),
                    PolicyKind::Base => policy.annotation(REASON_ANNOTATION),
                }
                .filter(|r| !r.trim().is_empty())
                .map(ToOwned::to_owned);
                origins.insert(
                    id.clone(),
                    Origin {
                        file: source.name.clone(),
                        line: line.unwrap_or(1),
                        kind,
                        reason,
                        approval_ttl,
                    },
                );
                texts.insert(id.clone(), source_index);
                all.push(policy.new_id(id));
            }
        }

        if let Some(schema) = &composed {
            let mut set = PolicySet::new();
            for p in &all {
                if let Err(e) = set.add(p.clone()) {
                    problems.push(PolicyProblem {
                        severity: Severity::Error,
                        file: String::new(),
                        line: None,
                        column: None,
                        policy: Some(p.id().to_string()),
                        message: e.to_string(),
                    });
                }
            }
            let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
            let source_of = |id: &PolicyId| texts.get(id).and_then(|i| policies.get(*i));
            for e in result.validation_errors() {
                if let Some(source) = source_of(e.policy_id()) {
                    problems.push(located(Severity::Error, source, Some(e.policy_id()), e));
                }
            }
            for w in result.validation_warnings() {
                if let Some(source) = source_of(w.policy_id()) {
                    problems.push(located(Severity::Warning, source, Some(w.policy_id()), w));
                }
            }
        }

        let composed = match composed {
            Some(s) if !problems.iter().any(|p| p.severity == Severity::Error) => s,
            _ => return Err(LoadError { problems }),
        };
        if all.is_empty() {
            // An empty pack would deny everything; that is almost surely a wrong path.
            return Err(LoadError {
                problems: vec![PolicyProblem {
                    severity: Severity::Error,
                    file: policies.first().map(|s| s.name.clone()).unwrap_or_default(),
                    line: None,
                    column: None,
                    policy: None,
                    message:
                        "the pack has no policies; point Mandate at a directory of `.cedar` files"
                            .into(),
                }],
            });
        }

        let names = &*crate::evaluate::NAMES;
        let Some(declared) = DeclaredTypes::from_schema(&composed, &names.call_tool, &names.agent)
        else {
            return Err(LoadError {
                problems: vec![PolicyProblem {
                    severity: Severity::Error,
                    file: schema_name,
                    line: None,
                    column: None,
                    policy: None,
                    message: "the schema does not declare Mandate's request shape (`Mandate::Action::\"call_tool\"` context and `Mandate::Agent`)".into(),
                }],
            });
        };
        let (approval, base): (Vec<Policy>, Vec<Policy>) = all.iter().cloned().partition(|p| {
            origins
                .get(p.id())
                .is_some_and(|o| o.kind == PolicyKind::Approval)
        });
        Ok(PolicyPack {
            base: PolicyIndex::new(base),
            approval: PolicyIndex::new(approval),
            origins,
            all,
            version: version_hash(policies, schema),
            warnings: problems,
            declared,
        })
    }

    /// A digest of the pack's sources (SHA-256, hex): equal packs have equal versions.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Warnings found while loading (the pack loaded despite them).
    pub fn warnings(&self) -> &[PolicyProblem] {
        &self.warnings
    }

    /// How long an approval asked for by the gates `policies` waits: the
    /// shortest `@approval_expires` among them, or `None` when none sets one.
    pub fn approval_ttl<S: AsRef<str>>(&self, policies: &[S]) -> Option<std::time::Duration> {
        policies
            .iter()
            .filter_map(|id| self.origins.get(&PolicyId::new(id.as_ref())))
            .filter_map(|origin| origin.approval_ttl)
            .min()
    }

    /// Number of policies in the base set and in the approval gate.
    pub fn counts(&self) -> (usize, usize) {
        (self.base.len(), self.approval.len())
    }

    /// Ids of every policy, with the set each belongs to, in load order.
    pub fn policy_ids(&self) -> impl Iterator<Item = (&str, PolicyKind)> {
        self.all.iter().map(|p| {
            let kind = self
                .origins
                .get(p.id())
                .map_or(PolicyKind::Base, |o| o.kind);
            (AsRef::<str>::as_ref(p.id()), kind)
        })
    }
}

/// Why an entity a policy names can never be the principal, server or tool
/// of a request: a name outside the grammar requests are held to. A
/// `forbid` on `Mandate::Server::"Bank"` would never match anything, since
/// requests for `Bank` are refused and `bank` is another name.
fn unmatchable(literal: &EntityUid) -> Option<String> {
    let names = &*NAMES;
    let id = literal.id().unescaped();
    let checked = if *literal.type_name() == names.agent {
        names::agent(id)
    } else if *literal.type_name() == names.server {
        names::server(id)
    } else if *literal.type_name() == names.tool {
        names::tool_ref(id)
    } else {
        return None;
    };
    checked
        .err()
        .map(|e| format!("`{literal}` can never match a request: {e}"))
}

/// Policies of one file in source order, each with its byte offset.
///
/// Cedar names parsed policies `policy0`, `policy1`, … in source order and
/// keeps each one's original text, which is found again in the file to locate
/// it (Cedar does not expose a parsed policy's span).
fn in_source_order(set: &PolicySet, text: &str) -> Vec<(usize, Policy)> {
    let mut numbered: Vec<(usize, &Policy)> = set
        .policies()
        .map(|p| {
            let n = AsRef::<str>::as_ref(p.id())
                .strip_prefix("policy")
                .and_then(|n| n.parse().ok());
            (n.unwrap_or(usize::MAX), p)
        })
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    let mut from = 0;
    numbered
        .into_iter()
        .map(|(_, p)| {
            let own = p.to_string();
            let offset = text
                .get(from..)
                .and_then(|rest| rest.find(own.as_str()))
                .map_or(from, |i| from + i);
            from = offset + own.len();
            (offset, p.clone())
        })
        .collect()
}

fn located(
    severity: Severity,
    source: &PolicySource,
    policy: Option<&PolicyId>,
    d: &dyn miette::Diagnostic,
) -> PolicyProblem {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let (line, column) = offset.map_or((None, None), |o| line_col(&source.text, o));
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message.push_str(&format!("; {help}"));
    }
    PolicyProblem {
        severity,
        file: source.name.clone(),
        line,
        column,
        policy: policy.map(ToString::to_string),
        message,
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (Option<usize>, Option<usize>) {
    let Some(before) = text.get(..offset.min(text.len())) else {
        return (None, None);
    };
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(1, |l| l.chars().count() + 1);
    (Some(line), Some(column))
}

fn version_hash(policies: &[PolicySource], schema: Option<&PolicySource>) -> String {
    let mut sources: Vec<&PolicySource> = policies.iter().chain(schema).collect();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = Sha256::new();
    for s in sources {
        // Length-prefixed, so moving text between files changes the hash.
        for part in [s.name.as_bytes(), s.text.as_bytes()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
