//! The decision service: one tool call in, one recorded decision out, with
//! no HTTP in sight. `POST /v1/decide` is one front end of it; any other
//! (gRPC, ext_authz) parses its own request, calls [`Decider::decide`] and
//! maps [`DecideError`] to its own status codes.
//!
//! One decision, in order:
//!
//! 1. the request's server-filled fields are checked (`context.time`
//!    always; `context.task` and `context.session` under a credential);
//! 2. under a task credential ([`Authority::Task`]), the principal must be
//!    its holder, and `context.task` and `context.session` are filled from
//!    the task record, the credential (its effective tools, its delegation
//!    chain) and the task's history; without one, a request naming a
//!    session the server keeps (`context.session.id`) gets that session's
//!    summary;
//! 3. a tool the credential does not grant is denied before any policy
//!    runs ([`CREDENTIAL_SCOPE`]); otherwise the pack in force decides;
//! 4. the approval gate turns `approval_required` into a new approval, a
//!    wait, a release (`allow`) or a deny;
//! 5. the receipt, with the decision's journal entry (the request as
//!    evaluated, for replay), is appended and durable, then the decision joins the
//!    task's history or the agent's session, then a new approval is
//!    stored; only then is the answer returned. Any failure on the way is
//!    an error, and the caller must treat the call as denied.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use mandate_auth::{CredentialError, VerifiedCredential};
use mandate_core::provenance::{self, Grounds, Lookup};
use mandate_core::{
    CallRequest, Decision, DecisionId, DecisionRequest, DecisionResponse, HopInput, PolicyPack,
    SessionId, SessionInput, TaskInput, Verdict,
};
use mandate_ledger::Receipt;
use mandate_store::{HistoryEntry as RecordedEntry, JournalEntry, SessionDecision, StateError};
use serde_json::Value;
use tracing::Instrument as _;

use crate::approval_flow::{self, Gate, GateError};
use crate::approvals::{self, Asker};
use crate::callers::DecideAccess;
use crate::receipts::{canonical_request, record_delegation, record_verdict};
use crate::state::AppState;

/// The policy id of a deny because the task credential the call was made
/// under does not grant the tool. It is enforced in code, before Cedar, so
/// no policy can permit what the credential does not hold.
pub const CREDENTIAL_SCOPE: &str = "mandate:credential-scope";

/// Under what a call is decided.
#[derive(Debug, Clone)]
pub enum Authority {
    /// A verified task credential: the task and its history are the
    /// context, and the credential's tools the limit.
    Task(Arc<VerifiedCredential>),
    /// No credential: the request carries its own context, or names a
    /// session the server keeps for its agent. Whether the caller may ask
    /// at all is the front end's to check.
    Request,
}

impl Authority {
    fn credential(&self) -> Option<&VerifiedCredential> {
        match self {
            Authority::Task(credential) => Some(credential),
            Authority::Request => None,
        }
    }
}

/// Why no decision was made. Every variant means the call is denied; the
/// front end says which in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The credential does not hold for this call: its task is unknown to
    /// this server or has ended, or it names no agent.
    #[error("{0}")]
    InvalidCredential(String),
    /// The principal (or the person it acts for) is not the credential's.
    #[error("{0}")]
    NotHolder(String),
    /// The request sets a field the server fills.
    #[error("{0}")]
    FieldNotAllowed(String),
    /// The request is well-formed but cannot be evaluated.
    #[error("{0}")]
    InvalidRequest(String),
    /// The receipt could not be appended to the ledger.
    #[error("the decision could not be recorded in the receipt ledger")]
    ReceiptUnavailable,
    /// The decision could not be recorded where later decisions read it
    /// (the task's history, the agent's session), or a new approval could
    /// not be stored: says which.
    #[error("{0}")]
    StateUnavailable(&'static str),
    /// The state database failed while the context was read.
    #[error(transparent)]
    Store(#[from] StateError),
    /// A bug: the decision cannot be completed.
    #[error("{0}")]
    Internal(&'static str),
}

/// How every front end answers a [`DecideError`]: the HTTP API's status
/// and error code for it, and the message for the caller. Other front ends
/// map the status to their own (gRPC codes, an ext_authz denial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The HTTP status the HTTP API answers with.
    pub status: StatusCode,
    /// The error code (`invalid_token`, `state_unavailable`, …).
    pub code: &'static str,
    /// What went wrong, for the caller.
    pub message: String,
}

impl Refused {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl DecideError {
    /// The answer for this error; a failure of the server's own is logged
    /// here, and its details kept out of the message.
    pub fn refused(self) -> Refused {
        let message = self.to_string();
        match self {
            DecideError::InvalidCredential(_) => {
                Refused::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
            }
            DecideError::NotHolder(_) => {
                Refused::new(StatusCode::FORBIDDEN, "insufficient_scope", message)
            }
            DecideError::FieldNotAllowed(_) => Refused::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "field_not_allowed",
                message,
            ),
            DecideError::InvalidRequest(_) => {
                Refused::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
            }
            DecideError::ReceiptUnavailable => Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "receipt_unavailable",
                "the decision could not be recorded in the receipt ledger; treat this call as denied",
            ),
            DecideError::StateUnavailable(what) => Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "state_unavailable",
                format!("{what}; treat this call as denied"),
            ),
            DecideError::Store(StateError::TaskNotFound(id)) => Refused::new(
                StatusCode::NOT_FOUND,
                "task_not_found",
                format!("no task `{}`", id.as_str()),
            ),
            DecideError::Store(e @ StateError::TaskEnded { .. }) => {
                Refused::new(StatusCode::UNAUTHORIZED, "task_ended", e.to_string())
            }
            DecideError::Store(e @ (StateError::Invalid(_) | StateError::Conflict(_))) => {
                tracing::error!(error = %e, "the state database refused a task record");
                Refused::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the task could not be recorded",
                )
            }
            DecideError::Store(e) => {
                tracing::error!(error = %e, "state database unavailable");
                Refused::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "state_unavailable",
                    "the state database cannot answer now; see the server log",
                )
            }
            DecideError::Internal(what) => Refused::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("{what}; treat this call as denied"),
            ),
        }
    }
}

impl From<GateError> for DecideError {
    fn from(error: GateError) -> Self {
        match error {
            GateError::Binding(e) => DecideError::InvalidRequest(e.to_string()),
            GateError::Store(e) => DecideError::Store(e),
        }
    }
}

/// The front end a decision came through: what its metrics and spans
/// are labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// `POST /v1/decide`.
    Http,
    /// `mandate.v1.DecisionService/Decide`.
    Grpc,
    /// `envoy.service.auth.v3.Authorization/Check`.
    ExtAuthz,
}

impl FrontEnd {
    /// The name in `mandate.front_end`.
    pub fn as_str(self) -> &'static str {
        match self {
            FrontEnd::Http => "http",
            FrontEnd::Grpc => "grpc",
            FrontEnd::ExtAuthz => "ext_authz",
        }
    }
}

/// Why a caller may not have a call decided at all: the bearer token it
/// presented (or its absence) does not let it ask. Every front end checks
/// this before reading the request, and says it in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// No token, where the server decides without a task credential only
    /// for configured callers (`decide_access = "callers"`).
    #[error(
        "this server decides without a task credential only for configured callers: present a task credential, or a caller's token (`[[callers]]`, `mandate callers token`) as `Authorization: Bearer`"
    )]
    CallerRequired,
    /// An identity token (a JWT) where a task credential belongs.
    #[error(
        "decisions are made under a task credential, not an identity token: start a task with the identity token (POST /v1/tasks) and present its credential"
    )]
    IdentityToken,
    /// A task credential that does not verify now.
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

/// A decision made and recorded.
#[derive(Debug)]
pub struct Decided {
    /// The answer for the caller.
    pub response: DecisionResponse,
    /// The server and tool decided, for the front end's log.
    pub server: String,
    /// The tool decided.
    pub tool: String,
}

/// The decision service over the gateway's state. Cheap to make: it holds
/// a clone of the shared state.
#[derive(Clone)]
pub struct Decider {
    state: AppState,
}

impl Decider {
    /// The service deciding with `state`'s pack, ledger, tasks and approvals.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Counts a request of `front_end` answered with a client error
    /// (`code`) in `mandate_requests_rejected_total`.
    pub fn count_rejected(&self, front_end: FrontEnd, code: &'static str) {
        self.state
            .metrics()
            .count_rejected(front_end.as_str(), code);
    }

    /// Under what a caller presenting `bearer` (the token of its
    /// `Authorization: Bearer`, if any) may have a call decided at `now`: a
    /// configured caller's token decides on the request's own context, any
    /// other token must be a task credential that verifies, and no token is
    /// enough only where the server lets anyone decide (`decide_access`).
    pub fn authority(
        &self,
        bearer: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Authority, AuthorityError> {
        let state = &self.state;
        match bearer {
            Some(token) if state.callers().caller(token).is_some() => Ok(Authority::Request),
            // A JWT has dots; a task credential (Biscuit, base64url) none.
            Some(token) if token.contains('.') => Err(AuthorityError::IdentityToken),
            Some(token) => Ok(Authority::Task(
                state.tasks().credentials().verify_credential(token, now)?,
            )),
            None if state.callers().access() == DecideAccess::Callers => {
                Err(AuthorityError::CallerRequired)
            }
            None => Ok(Authority::Request),
        }
    }

    /// Decides `request` under `authority` at `now`, records the decision
    /// (receipt, then the task's history or the agent's session, then a new
    /// approval), and returns the answer. An error means no decision: deny.
    ///
    /// The decision runs to its end in a task of its own, even when the
    /// caller stops waiting (a client gone, a front end's time limit):
    /// abandoned half-way, an approval could be spent with no receipt, or a
    /// receipt written with no history entry.
    pub async fn decide(
        &self,
        authority: &Authority,
        request: DecisionRequest,
        now: DateTime<Utc>,
    ) -> Result<Decided, DecideError> {
        let decider = self.clone();
        let authority = authority.clone();
        tokio::spawn(
            async move { decider.decide_to_the_end(&authority, request, now).await }
                .instrument(tracing::Span::current()),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "a decision task failed");
            DecideError::Internal("the decision failed")
        })?
    }

    async fn decide_to_the_end(
        &self,
        authority: &Authority,
        mut request: DecisionRequest,
        now: DateTime<Utc>,
    ) -> Result<Decided, DecideError> {
        let started = Instant::now();
        let state = &self.state;
        if request.context.time.is_some() {
            return Err(DecideError::FieldNotAllowed(
                "`context.time` is set by the server's clock; remove it (only `mandate check` and policy tests take a time)".to_owned(),
            ));
        }
        // Grounds are digests under the server's key: a caller's own summary
        // has none that could mean anything, and may not bring any.
        if request
            .context
            .session
            .summary
            .as_ref()
            .is_some_and(|s| !s.grounds.is_empty())
        {
            return Err(DecideError::FieldNotAllowed(
                "`context.session.summary.grounds` is kept by the server; send a summary without it".to_owned(),
            ));
        }
        if request.context.provenance.is_some() {
            return Err(DecideError::FieldNotAllowed(
                "`context.provenance` is filled by the server from the task and its session; remove it (only `mandate check` and policy tests take one)".to_owned(),
            ));
        }
        let agent_session = match authority {
            Authority::Task(credential) => {
                self.fill_from_task(credential, &mut request).await?;
                None
            }
            Authority::Request => self.fill_from_agent_session(&mut request).await?,
        };
        // Where each destination came from, from the task and the session
        // as filled: part of what is evaluated, digested and journaled.
        let provenance = provenance::of_call(
            &request.arguments,
            &request.action.annotations.arguments,
            Lookup {
                params: &request.context.task.params,
                grounds: request
                    .context
                    .session
                    .summary
                    .as_ref()
                    .map(|s| (&s.grounds, state.tasks().grounding_key())),
            },
        );
        request.context.provenance = Some(provenance).filter(|p| !p.is_empty());
        // The grounds have done their work: no policy reads them (only
        // `context.provenance`, just computed), and as keyed digests they
        // mean nothing to an auditor. Left in, up to 512 of them would go
        // into every receipt's digest and every journal entry.
        if let Some(summary) = request.context.session.summary.as_mut() {
            summary.grounds = Grounds::default();
        }
        // The server's clock goes into the request, so that the receipt's
        // context digest covers exactly what was evaluated.
        request.context.time = Some(now);
        let approval_id = request.approval_id.take();
        // Canonicalised once: the receipt digests these bytes, the journal
        // keeps them.
        let canonical =
            canonical_request(&request).map_err(|e| DecideError::InvalidRequest(e.to_string()))?;
        let draft = state
            .receipts()
            .draft(&request, &canonical, now)
            .map_err(|e| DecideError::InvalidRequest(e.to_string()))?;
        let journal = state
            .journal()
            .draft(&request, &canonical)
            .map_err(|e| DecideError::InvalidRequest(e.to_string()))?;
        drop(canonical);
        let annotations = request.action.annotations.clone();
        let asker = Asker::of(&request);
        let call = CallRequest::try_from(request)
            .map_err(|e| DecideError::InvalidRequest(e.to_string()))?;
        let pack = state.pack();
        let credential = authority.credential();
        let scope = credential.map(|c| &c.tools);
        let mut verdict = evaluate(&pack, scope, &call, now);
        // What the pack said, before any approval turns it: the journal
        // keeps it beside the decision answered.
        let pack_verdict = journal
            .is_some()
            .then(|| (verdict.decision, verdict.policies.clone()));
        // The shadow packs see the same request, before any approval turns
        // the live outcome into a release or a refusal.
        let shadow = state
            .shadows()
            .outcomes(&verdict, |shadow| evaluate(shadow, scope, &call, now));
        for outcome in &shadow {
            state
                .metrics()
                .count_shadow(&outcome.pack, verdict.decision, outcome.decision);
        }
        let decision_id = DecisionId::mint();
        let mut receipt = draft;
        if let Some(credential) = credential {
            record_delegation(&mut receipt, &credential.chain);
        }
        // An approval can only turn `approval_required` into `allow` (or
        // into a deny when it does not cover this request); it never
        // touches a deny.
        let gate = approval_flow::gate(
            state,
            &pack,
            approval_id,
            &mut verdict,
            &receipt,
            credential.map(|c| &c.task_id),
            &decision_id,
            now,
        )
        .await?;
        record_verdict(&mut receipt, &decision_id, &verdict, pack.version());
        let journal = journal.zip(pack_verdict).map(|(draft, pack_verdict)| {
            let scope = credential.map(|c| c.tools.iter().cloned().collect());
            draft.complete(pack_verdict, verdict.decision, scope, pack.version())
        });
        receipt.shadow = shadow;
        receipt.approval = gate.approval_ref(&decision_id);
        if let Gate::Released(approval) = &gate {
            receipt.approver.clone_from(&approval.resolved_by);
        }
        let opening = matches!(gate, Gate::Open(_)).then(|| receipt.clone());

        // No answer leaves before its receipt is on disk: a caller never
        // acts on a decision the log could lose.
        let index = self.append(receipt, journal, &decision_id, &gate).await?;

        // Nor before it is in the task's history, which later decisions of
        // the task are made on: a call the history would not show could be
        // followed by one that policies would have stepped up. Only after
        // the receipt: the history names decisions that a token exchange or
        // a result report may then refer to, so it never holds one the log
        // does not (writing both at once was measured faster, and rejected
        // for that; design-decisions.md).
        if let Some(credential) = credential {
            let entry = RecordedEntry {
                decision_id: decision_id.clone(),
                task_id: credential.task_id.clone(),
                agent: holder(credential)?.to_owned(),
                server: call.server().to_owned(),
                tool: call.tool().to_owned(),
                decision: verdict.decision,
                decided_at: now,
                result: None,
                annotations: match serde_json::to_value(&annotations) {
                    Ok(Value::Object(map)) => Some(map),
                    _ => None,
                },
            };
            self.record_in_task(credential, entry).await?;
        }

        // Likewise for an agent's session: every gateway of the agent
        // decides on it, and an allowed open-world call taints it here,
        // before the answer releases the call.
        if let Some(session) = agent_session {
            let decided = SessionDecision {
                agent: call.principal().to_owned(),
                session,
                server: call.server().to_owned(),
                tool: call.tool().to_owned(),
                decision: verdict.decision,
                annotations: Some(annotations),
                decided_at: now,
            };
            state
                .tasks()
                .store()
                .record_session_decision(decided)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, %decision_id, "decision not recorded in the agent's session; answering an error");
                    DecideError::StateUnavailable(
                        "the decision could not be recorded in the agent's session",
                    )
                })?;
        }

        let mut response = DecisionResponse::new(decision_id, verdict);
        response.receipt_index = Some(index);
        self.settle_gate(gate, opening, index, asker, &mut response, now)
            .await?;
        state
            .metrics()
            .observe_decision(response.decision, started.elapsed().as_secs_f64());
        Ok(Decided {
            response,
            server: call.server().to_owned(),
            tool: call.tool().to_owned(),
        })
    }

    /// Appends the decision's receipt and journal entry; returns its index.
    /// A released approval is put back when the receipt fails (the call is
    /// not run, and the approval may release it on a later try).
    async fn append(
        &self,
        receipt: Receipt,
        journal: Option<JournalEntry>,
        decision_id: &DecisionId,
        gate: &Gate,
    ) -> Result<u64, DecideError> {
        let state = &self.state;
        let appending = Instant::now();
        match state.ledger().append(receipt, journal).await {
            Ok(appended) => {
                state
                    .metrics()
                    .observe_receipt_append(appending.elapsed().as_secs_f64());
                Ok(appended.index)
            }
            Err(e) => {
                tracing::error!(error = %e, %decision_id, "receipt not recorded; answering an error");
                state.metrics().count_receipt_failure();
                if let Gate::Released(approval) = gate {
                    approval_flow::unrelease(state, approval).await;
                }
                Err(DecideError::ReceiptUnavailable)
            }
        }
    }

    /// Records a decision made under `credential` in its task's history,
    /// with the credential it was made under, which a token exchange of
    /// this decision must present (`POST /v1/token`).
    async fn record_in_task(
        &self,
        credential: &VerifiedCredential,
        entry: RecordedEntry,
    ) -> Result<(), DecideError> {
        let made_under = credential.revocation_ids.last().cloned();
        let decision_id = entry.decision_id.clone();
        self.state
            .tasks()
            .store()
            .record_decision(entry, made_under)
            .await
            .map_err(|e| {
                // The task ended while this was being decided: its end is
                // acknowledged, so nothing is given under it any more.
                if let StateError::TaskEnded { .. } = e {
                    tracing::info!(%decision_id, "the task ended while the call was decided; refused");
                    return DecideError::InvalidCredential(format!(
                        "{}: {e}",
                        CredentialError::Revoked
                    ));
                }
                tracing::error!(error = %e, %decision_id, "decision not recorded in its task's history; answering an error");
                DecideError::StateUnavailable(
                    "the decision could not be recorded in the task's history",
                )
            })
    }

    /// Completes what the gate began, once the receipt is durable: a new
    /// approval is stored before the answer names it (so that the agent
    /// can wait on it at once); a wait or a release is named in the answer.
    async fn settle_gate(
        &self,
        gate: Gate,
        opening: Option<Receipt>,
        index: u64,
        asker: Asker,
        response: &mut DecisionResponse,
        now: DateTime<Utc>,
    ) -> Result<(), DecideError> {
        let state = &self.state;
        match gate {
            Gate::Open(approval) => {
                let Some(mut asked) = opening else {
                    return Err(DecideError::Internal("the approval's receipt went missing"));
                };
                asked.index = index;
                let record = approvals::open(approval, &asked, asker, response, now)
                    .map_err(|e| DecideError::InvalidRequest(e.to_string()))?;
                response.approval_id = Some(record.approval.id.clone());
                response.approval_expires_at = Some(record.approval.expires_at);
                let to_store = record.clone();
                state
                    .tasks()
                    .store()
                    .create_approval(to_store)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, decision_id = %response.decision_id, "approval not stored; answering an error");
                        DecideError::StateUnavailable("the approval could not be stored")
                    })?;
                state.metrics().count_approval("opened");
                state.approvals().announce(&record, now);
                state.approvals().changed();
            }
            Gate::Waiting(approval) => {
                response.approval_id = Some(approval.id);
                response.approval_expires_at = Some(approval.expires_at);
            }
            Gate::Joined(approval) => {
                response.approval_id = Some(approval.id);
                response.approval_expires_at = Some(approval.expires_at);
                state.metrics().count_approval("joined");
            }
            Gate::Released(approval) => {
                response.approval_id = Some(approval.id);
                response.approver = approval.resolved_by;
                state.metrics().count_approval("released");
                state.approvals().changed();
            }
            Gate::Pass | Gate::Refused(_) => {}
        }
        Ok(())
    }

    /// Checks that `request` is made by the credential's holder for the
    /// task's person and leaves the task and session to Mandate; then fills
    /// them from the task record, the credential and the task's history.
    async fn fill_from_task(
        &self,
        credential: &VerifiedCredential,
        request: &mut DecisionRequest,
    ) -> Result<(), DecideError> {
        let holder = holder(credential)?;
        let principal = &mut request.principal;
        if principal.id != holder {
            return Err(DecideError::NotHolder(format!(
                "the credential is held by `{holder}`; `principal.id` is `{}`",
                principal.id
            )));
        }
        match (&principal.on_behalf_of, &credential.on_behalf_of) {
            (None, person) => principal.on_behalf_of.clone_from(person),
            (Some(sent), Some(person)) if sent == person => {}
            (Some(sent), Some(person)) => {
                return Err(DecideError::NotHolder(format!(
                    "task `{}` acts for `{person}`; `principal.on_behalf_of` is `{sent}`",
                    credential.task_id
                )));
            }
            (Some(sent), None) => {
                return Err(DecideError::NotHolder(format!(
                    "task `{}` acts for no one; `principal.on_behalf_of` is `{sent}`",
                    credential.task_id
                )));
            }
        }
        for (field, set, source) in [
            (
                "context.task",
                !request.context.task.is_empty(),
                "the task credential and its task",
            ),
            (
                "context.session",
                !request.context.session.is_empty(),
                "the task's history",
            ),
        ] {
            if set {
                return Err(DecideError::FieldNotAllowed(format!(
                    "`{field}` is filled from {source} when a task credential is presented; remove it"
                )));
            }
        }

        let context = self
            .state
            .tasks()
            .store()
            .task_context(&credential.task_id)
            .await?;
        let Some((task, session)) = context else {
            return Err(DecideError::InvalidCredential(format!(
                "the credential's task `{}` is not known to this server",
                credential.task_id
            )));
        };
        // The task may have ended after the credential was checked against
        // the revoked ids: its end is on disk before the ids are revoked in
        // memory.
        if task.is_ended() {
            return Err(DecideError::InvalidCredential(format!(
                "{}: task `{}` has ended",
                CredentialError::Revoked,
                task.id
            )));
        }

        request.context.task = TaskInput {
            id: task.id.into(),
            intent: task.intent,
            tools: bare_tools(&credential.tools),
            labels: task.labels,
            params: task.params,
            chain: credential
                .chain
                .iter()
                .map(|hop| HopInput {
                    agent: hop.agent.clone(),
                    depth: hop.depth,
                })
                .collect(),
        };
        request.context.session = SessionInput {
            summary: Some(session),
            ..SessionInput::default()
        };
        Ok(())
    }

    /// For a request naming a session the server keeps
    /// (`context.session.id`), fills `context.session.summary` from the
    /// principal's session of that id, and returns the id: the decision is
    /// recorded into it. A request naming one may not send its own session.
    async fn fill_from_agent_session(
        &self,
        request: &mut DecisionRequest,
    ) -> Result<Option<SessionId>, DecideError> {
        let session = &request.context.session;
        let Some(id) = session.id.clone() else {
            return Ok(None);
        };
        if session.summary.is_some() || !session.history.is_empty() || !session.labels.is_empty() {
            return Err(DecideError::FieldNotAllowed(
                "`context.session.id` names a session the server keeps and fills: send no `history`, `labels` or `summary` with it".to_owned(),
            ));
        }
        let (agent, key) = (request.principal.id.clone(), id.clone());
        let summary = self
            .state
            .tasks()
            .store()
            .agent_session(&agent, &key)
            .await?;
        request.context.session.summary = Some(summary);
        Ok(Some(id))
    }
}

/// The verdict before the approval gate: under a task credential granting
/// `scope` (`server/tool`), a tool it does not grant is denied whatever the
/// policies say (they see bare tool names, and a pack may permit more than
/// was granted); otherwise the pack decides. Replay decides the same way.
pub(crate) fn evaluate(
    pack: &PolicyPack,
    scope: Option<&BTreeSet<String>>,
    call: &CallRequest,
    now: DateTime<Utc>,
) -> Verdict {
    if let Some(granted) = scope {
        let tool = format!("{}/{}", call.server(), call.tool());
        if !granted.contains(&tool) {
            return outside_scope(&tool);
        }
    }
    pack.decide(call, now)
}

/// The agent holding `credential`: the last hop of its chain.
fn holder(credential: &VerifiedCredential) -> Result<&str, DecideError> {
    credential
        .holder()
        .map(|hop| hop.agent.as_str())
        .ok_or_else(|| {
            DecideError::InvalidCredential("the task credential names no agent".to_owned())
        })
}

/// The credential's tools (`server/tool`) as policies see them: bare tool
/// names, like `resource.name`. The server part is enforced in code
/// ([`CREDENTIAL_SCOPE`]).
fn bare_tools(tools: &BTreeSet<String>) -> Vec<String> {
    let bare: BTreeSet<&str> = tools
        .iter()
        .map(|tool| tool.split_once('/').map_or(tool.as_str(), |(_, name)| name))
        .collect();
    bare.into_iter().map(str::to_owned).collect()
}

/// The deny of a call whose tool the credential does not grant.
fn outside_scope(tool: &str) -> Verdict {
    Verdict {
        decision: Decision::Deny,
        policies: vec![CREDENTIAL_SCOPE.to_owned()],
        reasons: vec![format!(
            "the task credential does not grant the tool `{tool}`"
        )],
        errors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_see_bare_tool_names_once() {
        let tools = ["mail/send", "web/send", "web/fetch", "x/a/b"]
            .map(str::to_owned)
            .into();
        assert_eq!(bare_tools(&tools), ["a/b", "fetch", "send"]);
    }
}
