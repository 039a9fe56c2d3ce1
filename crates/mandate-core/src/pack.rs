//! Loading a policy pack: parse, name, partition, validate, index.
//!
//! A pack is a set of Cedar policy texts plus an optional schema extension.
//! Loading is all-or-nothing: any parse or validation error rejects the whole
//! pack with every problem located (file, line, column), so a server can keep
//! the pack already in force.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use cedar_policy::{
    Effect, EntityUid, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator,
};
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
    /// The top-level argument names the policies read.
    arguments_read: BTreeSet<String>,
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
        let schema_name = schema.map_or_else(|| PACK_SCHEMA_FILE.to_owned(), |s| s.name.clone());
        let (composed, mut problems) = match compose_schema(schema, &schema_name) {
            Ok(composed) => (Some(composed), Vec::new()),
            Err(problem) => (None, vec![problem]),
        };
        let (named, naming_problems) = name_policies(policies);
        problems.extend(naming_problems);
        if let Some(composed) = &composed {
            problems.extend(validate(composed, &named, policies));
        }
        let (composed, warnings) = reject_on_errors(composed, problems)?;
        require_policies(&named, policies)?;
        let declared = declared_types(&composed, &schema_name)?;
        Ok(Self::indexed(
            named,
            declared,
            warnings,
            version_hash(policies, schema),
        ))
    }

    /// The loaded pack: the named policies split into the base set and the
    /// approval gate, each indexed for slicing.
    fn indexed(
        named: NamedPolicies,
        declared: DeclaredTypes,
        warnings: Vec<PolicyProblem>,
        version: String,
    ) -> Self {
        let NamedPolicies { all, origins, .. } = named;
        let (approval, base): (Vec<Policy>, Vec<Policy>) = all.iter().cloned().partition(|p| {
            origins
                .get(p.id())
                .is_some_and(|o| o.kind == PolicyKind::Approval)
        });
        let arguments_read = crate::reads::arguments_read(&all, &declared.arguments);
        PolicyPack {
            base: PolicyIndex::new(base),
            approval: PolicyIndex::new(approval),
            origins,
            all,
            version,
            warnings,
            declared,
            arguments_read,
        }
    }

    /// A digest of the pack's sources (SHA-256, hex): equal packs have equal versions.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The top-level names of the arguments that the pack's policies read
    /// (through `context.arguments`): the only arguments that can change a
    /// decision, since undeclared ones are dropped before evaluation and
    /// strict validation allows reading only declared ones.
    pub fn arguments_read(&self) -> &BTreeSet<String> {
        &self.arguments_read
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

/// A pack's policies, each under its own id, in load order.
#[derive(Default)]
struct NamedPolicies {
    /// Every policy, carrying its id.
    all: Vec<Policy>,
    /// Where each policy came from and which set it joins.
    origins: HashMap<PolicyId, Origin>,
    /// The index, among the pack's sources, of each policy's file.
    sources: HashMap<PolicyId, usize>,
}

/// The full schema: Mandate's base schema plus the pack's extension. A
/// problem is reported against the extension file, located when Cedar gives
/// an offset into it.
fn compose_schema(
    schema: Option<&PolicySource>,
    schema_name: &str,
) -> Result<Schema, PolicyProblem> {
    schema::compose(schema.map(|s| s.text.as_str())).map_err(|e| {
        let (line, column) = match (e.offset, schema) {
            (Some(o), Some(s)) => line_col(&s.text, o),
            _ => (None, None),
        };
        PolicyProblem {
            severity: Severity::Error,
            file: schema_name.to_owned(),
            line,
            column,
            policy: None,
            message: e.message,
        }
    })
}

/// Parses every file and names its policies, with the problems found on the
/// way. A file that does not parse contributes only its parse errors. A
/// policy whose id is already taken is reported and left out, so the ids of
/// the named policies are unique.
fn name_policies(policies: &[PolicySource]) -> (NamedPolicies, Vec<PolicyProblem>) {
    let mut named = NamedPolicies::default();
    let mut problems = Vec::new();
    for (source_index, source) in policies.iter().enumerate() {
        let parsed = match parse_source(source) {
            Ok(set) => set,
            Err(errors) => {
                problems.extend(errors);
                continue;
            }
        };
        problems.extend(template_problem(source, &parsed));
        for (n, (offset, policy)) in in_source_order(&parsed, &source.text)
            .into_iter()
            .enumerate()
        {
            let (line, _) = line_col(&source.text, offset);
            let id = policy_id(&policy, source, n);
            let (origin, found) = read_policy(&policy, &id, source, line);
            problems.extend(found);
            if let Some(earlier) = named.origins.get(&id) {
                problems.push(policy_problem(
                    source,
                    line,
                    &id,
                    format!(
                        "duplicate policy id (also used at {}:{}); give each policy a unique `@id`",
                        earlier.file, earlier.line
                    ),
                ));
                continue;
            }
            named.origins.insert(id.clone(), origin);
            named.sources.insert(id.clone(), source_index);
            named.all.push(policy.new_id(id));
        }
    }
    (named, problems)
}

/// Parses one file's policies, or gives every parse error, located.
fn parse_source(source: &PolicySource) -> Result<PolicySet, Vec<PolicyProblem>> {
    source.text.parse::<PolicySet>().map_err(|errors| {
        errors
            .iter()
            .map(|e| located(Severity::Error, source, None, e))
            .collect()
    })
}

/// The error for a file that holds policy templates: Mandate never links
/// them, so a template would silently apply to nothing.
fn template_problem(source: &PolicySource, set: &PolicySet) -> Option<PolicyProblem> {
    set.templates().next().is_some().then(|| PolicyProblem {
        severity: Severity::Error,
        file: source.name.clone(),
        line: None,
        column: None,
        policy: None,
        message:
            "policy templates (`?principal`, `?resource`) are not supported; write static policies"
                .into(),
    })
}

/// A policy's id: its `@id` when not blank, otherwise `FILE#N`, counting
/// the file's policies from 1 (`n` counts from 0), so the id says where to look.
fn policy_id(policy: &Policy, source: &PolicySource, n: usize) -> PolicyId {
    let id = match policy.annotation(ID_ANNOTATION) {
        Some(id) if !id.trim().is_empty() => id.to_owned(),
        _ => format!("{}#{}", source.name, n + 1),
    };
    PolicyId::new(id)
}

/// One policy's [`Origin`], read from its annotations, with the problems
/// found in it: entities no request can match, `@approval` on a forbid, and
/// a misplaced or malformed `@approval_expires`.
fn read_policy(
    policy: &Policy,
    id: &PolicyId,
    source: &PolicySource,
    line: Option<usize>,
) -> (Origin, Vec<PolicyProblem>) {
    let kind = policy_kind(policy);
    let problem = |message: String| policy_problem(source, line, id, message);
    let mut problems: Vec<PolicyProblem> = policy
        .entity_literals()
        .iter()
        .filter_map(unmatchable)
        .map(&problem)
        .collect();
    if kind == PolicyKind::Approval && policy.effect() == Effect::Forbid {
        problems.push(problem(
            "`@approval` marks a permit that asks for a person's approval; a forbid cannot carry it (write a plain forbid to deny)".into(),
        ));
    }
    let approval_ttl = match approval_expires(policy, kind) {
        Ok(ttl) => ttl,
        Err(message) => {
            problems.push(problem(message));
            None
        }
    };
    let origin = Origin {
        file: source.name.clone(),
        line: line.unwrap_or(1),
        kind,
        reason: policy_reason(policy, kind),
        approval_ttl,
    };
    (origin, problems)
}

/// The set a policy joins: the approval gate when it carries `@approval`,
/// the base set otherwise.
fn policy_kind(policy: &Policy) -> PolicyKind {
    if policy.annotation(APPROVAL_ANNOTATION).is_some() {
        PolicyKind::Approval
    } else {
        PolicyKind::Base
    }
}

/// How long the approvals of a gate wait (`@approval_expires`), `None` when
/// it does not say, or why the annotation is wrong: on a base policy, not a
/// positive duration, or longer than an approval may wait.
fn approval_expires(
    policy: &Policy,
    kind: PolicyKind,
) -> Result<Option<std::time::Duration>, String> {
    match policy.annotation(APPROVAL_EXPIRES_ANNOTATION) {
        None => Ok(None),
        Some(_) if kind != PolicyKind::Approval => Err(
            "`@approval_expires` belongs on an `@approval` permit (it sets how long that approval waits)".into(),
        ),
        Some(text) => match humantime::parse_duration(text.trim()) {
            Ok(ttl) if ttl > crate::approval::MAX_APPROVAL_TTL => Err(format!(
                "`@approval_expires(\"{text}\")` is longer than a week, the longest an approval may wait"
            )),
            Ok(ttl) if !ttl.is_zero() => Ok(Some(ttl)),
            _ => Err(format!(
                "`@approval_expires(\"{text}\")` is not a duration; write e.g. \"90s\", \"15m\" or \"1h\""
            )),
        },
    }
}

/// The reason a policy gives in decisions: `@approval` for a gate, `@reason`
/// for a base policy. A blank one counts as none.
fn policy_reason(policy: &Policy, kind: PolicyKind) -> Option<String> {
    match kind {
        PolicyKind::Approval => policy.annotation(APPROVAL_ANNOTATION),
        PolicyKind::Base => policy.annotation(REASON_ANNOTATION),
    }
    .filter(|r| !r.trim().is_empty())
    .map(ToOwned::to_owned)
}

/// An error in one policy, located at the line it starts on.
fn policy_problem(
    source: &PolicySource,
    line: Option<usize>,
    id: &PolicyId,
    message: String,
) -> PolicyProblem {
    PolicyProblem {
        severity: Severity::Error,
        file: source.name.clone(),
        line,
        column: None,
        policy: Some(id.to_string()),
        message,
    }
}

/// Validates the named policies in strict mode against the composed schema:
/// the errors and warnings, each located in its policy's file.
fn validate(
    schema: &Schema,
    named: &NamedPolicies,
    policies: &[PolicySource],
) -> Vec<PolicyProblem> {
    let mut problems = Vec::new();
    let mut set = PolicySet::new();
    for p in &named.all {
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
    let source_of = |id: &PolicyId| named.sources.get(id).and_then(|i| policies.get(*i));
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
    problems
}

/// The composed schema and the warnings, or every problem when any is an
/// error or the schema did not compose: loading is all-or-nothing.
fn reject_on_errors(
    composed: Option<Schema>,
    problems: Vec<PolicyProblem>,
) -> Result<(Schema, Vec<PolicyProblem>), LoadError> {
    match composed {
        Some(s) if !problems.iter().any(|p| p.severity == Severity::Error) => Ok((s, problems)),
        _ => Err(LoadError { problems }),
    }
}

/// Refuses a pack without policies: it would deny everything, and that is
/// almost surely a wrong path.
fn require_policies(named: &NamedPolicies, policies: &[PolicySource]) -> Result<(), LoadError> {
    if !named.all.is_empty() {
        return Ok(());
    }
    Err(LoadError {
        problems: vec![PolicyProblem {
            severity: Severity::Error,
            file: policies.first().map(|s| s.name.clone()).unwrap_or_default(),
            line: None,
            column: None,
            policy: None,
            message: "the pack has no policies; point Mandate at a directory of `.cedar` files"
                .into(),
        }],
    })
}

/// The types the composed schema declares for the request's free data.
/// Refuses a schema that does not declare Mandate's request shape, since
/// no request could then be evaluated.
fn declared_types(schema: &Schema, schema_name: &str) -> Result<DeclaredTypes, LoadError> {
    let names = &*NAMES;
    DeclaredTypes::from_schema(schema, &names.call_tool, &names.agent).ok_or_else(|| LoadError {
        problems: vec![PolicyProblem {
            severity: Severity::Error,
            file: schema_name.to_owned(),
            line: None,
            column: None,
            policy: None,
            message: "the schema does not declare Mandate's request shape (`Mandate::Action::\"call_tool\"` context and `Mandate::Agent`)".into(),
        }],
    })
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
