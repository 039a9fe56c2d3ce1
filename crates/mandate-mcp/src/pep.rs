//! The policy enforcement point: asks a running Mandate server for the
//! decision of each tool call (`POST /v1/decide`), waits for approvals,
//! and reports what allowed calls returned.
//!
//! The gateway holds no policy and no ledger: the server decides and records
//! the receipt before it answers. Whatever keeps the gateway from getting a
//! decision (the server down, a non-200 answer, a timeout, an answer it
//! cannot read) is a deny: fail closed, with the reason in the tool error.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mandate_client::{CallOutcome, Client};
use mandate_core::provenance::FoundValues;
use mandate_core::{
    ApprovalId, ApprovalStatus, ContextInput, Decision, DecisionRequest, DecisionResponse,
    PrincipalInput, SessionId, SessionInput, TaskInput, ToolAnnotations, ToolCall,
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::credential::TaskCredential;
use crate::jsonrpc::{self, IdKey};
use crate::meta::DecisionMeta;
use crate::trace::{self, CallSpan, TraceContext};
use tracing::Instrument as _;

/// The default wait for an approval.
pub const DEFAULT_APPROVAL_WAIT: Duration = Duration::from_secs(60);
/// The longest single long-poll of `GET /v1/approvals/{id}`.
const APPROVAL_POLL: Duration = Duration::from_secs(30);
/// How long one decision request may take.
const DECIDE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who the calls are made as.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A configured agent identity: decisions carry the task context of the
    /// configuration and name the agent's session, which the Mandate server
    /// keeps (shared by every gateway of the agent naming it).
    Agent {
        /// `principal.id`.
        id: String,
        /// `context.session.id`.
        session: SessionId,
        /// The gateway's own token as a caller of the decision API
        /// (`[[callers]]` on the server), which a server beyond loopback
        /// requires for decisions without a task credential.
        caller_token: Option<String>,
    },
    /// A task credential: the server fills the task and the session from it
    /// and from the task's history; `principal.id` is its holder (or the
    /// agent given explicitly, which the server checks is the holder).
    Credential {
        /// The credential.
        credential: TaskCredential,
        /// `principal.id`.
        id: String,
    },
}

impl Principal {
    /// The principal's id, as sent in `principal.id`.
    pub fn id(&self) -> &str {
        match self {
            Principal::Agent { id, .. } | Principal::Credential { id, .. } => id,
        }
    }
}

/// The enforcement point's settings.
#[derive(Debug, Clone)]
pub struct PepSettings {
    /// The Mandate server's base URL, such as `http://127.0.0.1:8181`.
    pub gateway: String,
    /// Who the calls are made as.
    pub principal: Principal,
    /// The configuration file's contents.
    pub config: GatewayConfig,
    /// How long a call waiting for an approval is held before it is denied.
    pub approval_wait: Duration,
}

/// A call the server allowed: the only thing that lets a call go upstream.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The allow (its id is its receipt's key), told to the client in the
    /// call's result ([`DecisionMeta::add_to_response`]).
    pub decision: DecisionMeta,
    /// The tool's free-text output fields beyond the usual ones, for
    /// finding the destinations its result names.
    pub text_fields: Vec<String>,
    /// The call's span, ended when the call's answer is recorded
    /// ([`Pep::record_result`]).
    pub span: Option<CallSpan>,
}

impl Allowed {
    /// Puts the call's trace context in the forwarded call (`params._meta`)
    /// for the upstream server, when tracing.
    pub fn propagate_into(&self, message: &mut Value) {
        if let Some(span) = &self.span {
            span.propagate_into(message);
        }
    }

    /// The same in the forwarded HTTP request's headers (`traceparent`).
    pub fn propagate_into_headers(&self, headers: &mut axum::http::HeaderMap) {
        if let Some(span) = &self.span {
            span.propagate_into_headers(headers);
        }
    }
}

/// A call that must not go upstream, and how the client is told.
#[derive(Debug, Clone)]
pub struct Denied {
    /// The tool error's text, for the model: why, and the decision's id.
    pub text: String,
    /// The decision that stopped the call; `None` when the gateway could
    /// not get one (the call is denied all the same: fail closed).
    pub decision: Option<DecisionMeta>,
}

impl Denied {
    /// The `tools/call` result that answers the call: a tool error with
    /// the text and, when there was a decision, the decision in `_meta`.
    pub fn result(&self) -> Value {
        let mut result = jsonrpc::tool_error(self.text.clone());
        if let Some(decision) = &self.decision {
            decision.add_to_result(&mut result);
        }
        result
    }

    /// A deny without a decision: the gateway could not get one.
    fn undecided(text: String) -> Self {
        Self {
            text,
            decision: None,
        }
    }
}

/// The answer for one call.
#[derive(Debug)]
pub enum Gate {
    /// Forward the call.
    Allow(Allowed),
    /// Do not forward it; answer the client with [`Denied::result`].
    Deny(Denied),
}

/// The enforcement point, shared by every session of a gateway.
#[derive(Debug)]
pub struct Pep {
    client: Client,
    settings: PepSettings,
}

/// An approval a call waits on. Unless the server answered it, it is
/// withdrawn when the wait ends, however it ends: the gateway gave up, the
/// server could not be read, or the call was cancelled (its decision
/// dropped mid-wait). So nobody answers a request nobody waits for.
struct Waiting<'a> {
    pep: &'a Pep,
    approval_id: &'a ApprovalId,
    /// Why it would be withdrawn now.
    why: &'static str,
    /// The server gave it a status other than `pending`.
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.pep.withdraw(self.approval_id, self.why);
        }
    }
}

/// One client session's state: the calls being decided. The session policies see
/// is not here: the Mandate server keeps it (the task's, or the agent's
/// named session), so that every gateway of the agent, and a gateway
/// restarted, decide on the same one.
#[derive(Debug, Default)]
pub struct Session {
    /// `tools/call` requests being decided, by id, each with the token its
    /// cancellation fires: a cancelled call never goes upstream, and stops
    /// waiting (for an approval, say) at once.
    deciding: Mutex<HashMap<IdKey, CancellationToken>>,
}

impl Pep {
    /// An enforcement point asking the server at `settings.gateway`.
    pub fn new(settings: PepSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(50))
            .build()?;
        let client = Client::new(settings.gateway.clone(), http).with_timeout(DECIDE_TIMEOUT);
        Ok(Self { client, settings })
    }

    /// The configuration in force.
    pub fn config(&self) -> &GatewayConfig {
        &self.settings.config
    }

    /// Whether the task may ever call `tool` of `server`: in credential mode,
    /// whether the credential grants `server/tool`; in agent mode, whether
    /// the configured `[task] tools` name it (every tool when none are
    /// configured). Policies may still deny a call of a tool kept here, by
    /// its arguments or the session; `hide_denied_tools` hides only the
    /// tools no call of which can be allowed.
    pub fn may_call(&self, server: &str, tool: &str) -> bool {
        match &self.settings.principal {
            Principal::Credential { credential, .. } => {
                credential.tools.contains(&format!("{server}/{tool}"))
            }
            Principal::Agent { .. } => self
                .settings
                .config
                .task
                .as_ref()
                .and_then(|t| t.tools.as_ref())
                .is_none_or(|tools| tools.iter().any(|t| t == tool)),
        }
    }

    /// The annotations a call is decided with: the upstream's hints (only
    /// the four booleans MCP defines; anything else is dropped, and a
    /// missing hint takes the MCP default on the server), with the
    /// configuration's overrides on top.
    pub fn annotations(
        &self,
        server: &str,
        tool: &str,
        upstream: Option<&Value>,
    ) -> ToolAnnotations {
        let hint = |key: &str| {
            upstream
                .and_then(|given| given.get(key))
                .and_then(Value::as_bool)
        };
        let mut annotations = ToolAnnotations {
            read_only_hint: hint("readOnlyHint"),
            destructive_hint: hint("destructiveHint"),
            idempotent_hint: hint("idempotentHint"),
            open_world_hint: hint("openWorldHint"),
            // The operator's catalog alone says whether output is trusted.
            output: None,
            // What the input schema marks (the catalog derived it; an
            // upstream's own `mandate/` keys were dropped there). Declaring
            // a destination only ever adds a check.
            arguments: upstream
                .and_then(|given| given.get("mandate/arguments"))
                .and_then(|a| serde_json::from_value(a.clone()).ok())
                .unwrap_or_default(),
            text_fields: Vec::new(),
            amounts: Vec::new(),
        };
        if let Some(o) = self.settings.config.override_for(server, tool) {
            o.apply(&mut annotations);
        }
        annotations
    }

    /// Decides one call of `tool` on `server`: asks the server, waits for an
    /// approval when one is required, and fails closed on any trouble.
    /// `shown` is the tool's name as the client called it (`fs__write_file`
    /// behind a merged endpoint), which a deny's text names.
    /// `trace` is the trace context the client sent with the call: the
    /// call's span ([`CallSpan`]) is its child, and lives in the
    /// [`Allowed`] until the call's answer is recorded.
    pub async fn decide(
        &self,
        server: &str,
        tool: &str,
        shown: &str,
        annotations: ToolAnnotations,
        arguments: Map<String, Value>,
        trace: &TraceContext,
    ) -> Gate {
        let span = CallSpan::start(server, tool, trace);
        let mut gate = self
            .decide_in_span(server, tool, shown, annotations, arguments)
            .instrument(span.span().clone())
            .await;
        match &mut gate {
            Gate::Allow(allowed) => {
                span.decided(&allowed.decision);
                allowed.span = Some(span);
            }
            Gate::Deny(Denied {
                decision: Some(decision),
                ..
            }) => span.decided(decision),
            Gate::Deny(Denied { decision: None, .. }) => span.failed("undecided"),
        }
        gate
    }

    async fn decide_in_span(
        &self,
        server: &str,
        tool: &str,
        shown: &str,
        annotations: ToolAnnotations,
        arguments: Map<String, Value>,
    ) -> Gate {
        let body = self.decide_body(server, tool, annotations, arguments);
        let answer = match self.ask(&body).await {
            Ok(answer) => answer,
            Err(reason) => return Gate::Deny(Denied::undecided(could_not_decide(shown, &reason))),
        };
        match answer.decision {
            Decision::Allow => Gate::Allow(Allowed {
                decision: DecisionMeta::of(&answer),
                text_fields: body.action.annotations.text_fields.clone(),
                span: None,
            }),
            Decision::ApprovalRequired => self.await_approval(&body, answer, shown).await,
            Decision::Deny => Gate::Deny(denied(shown, &answer)),
        }
    }

    fn decide_body(
        &self,
        server: &str,
        tool: &str,
        annotations: ToolAnnotations,
        arguments: Map<String, Value>,
    ) -> DecisionRequest {
        let mut context = ContextInput::default();
        if let Principal::Agent { session, .. } = &self.settings.principal {
            if let Some(task) = &self.settings.config.task {
                context.task = TaskInput {
                    id: task.id.clone().unwrap_or_default(),
                    intent: task.intent.clone().unwrap_or_default(),
                    tools: task.tools.clone().unwrap_or_default(),
                    labels: task.labels.clone().unwrap_or_default(),
                    params: task.params.clone().unwrap_or_default(),
                    chain: Vec::new(),
                };
            }
            context.session = SessionInput {
                id: Some(session.clone()),
                ..SessionInput::default()
            };
        }
        DecisionRequest {
            principal: PrincipalInput {
                id: self.settings.principal.id().to_owned(),
                on_behalf_of: self.settings.config.on_behalf_of.clone(),
                attributes: Map::new(),
            },
            action: ToolCall {
                server: server.to_owned(),
                tool: tool.to_owned(),
                annotations,
            },
            arguments,
            context,
            approval_id: None,
        }
    }

    /// The task credential, for the calls made under it.
    fn credential_token(&self) -> Option<&str> {
        match &self.settings.principal {
            Principal::Credential { credential, .. } => Some(credential.token()),
            Principal::Agent { .. } => None,
        }
    }

    /// What authenticates a decision request: the task credential, or the
    /// gateway's caller token in agent mode.
    fn decide_token(&self) -> Option<&str> {
        match &self.settings.principal {
            Principal::Agent {
                caller_token: Some(token),
                ..
            } => Some(token),
            _ => self.credential_token(),
        }
    }

    /// One `POST /v1/decide`; any answer but a readable `200` is an error.
    async fn ask(&self, body: &DecisionRequest) -> Result<DecisionResponse, String> {
        self.client
            .decide_in_trace(body, self.decide_token(), &trace::current_headers())
            .await
            .map_err(|e| e.to_string())
    }

    /// Holds a call until a person approves or denies it, or the wait ends;
    /// an approved call is decided again with the approval's id.
    async fn await_approval(
        &self,
        body: &DecisionRequest,
        answer: DecisionResponse,
        tool: &str,
    ) -> Gate {
        // A call held and not released is answered with the decision that
        // held it (`approval_required`, with its approval).
        let asked = DecisionMeta::of(&answer);
        let Some(approval_id) = answer.approval_id.clone() else {
            return Gate::Deny(Denied {
                text: format!(
                    "Mandate requires a person's approval for `{tool}` ({}), but the server holds no approval request for it; the call is denied. Decision {}.",
                    reasons(&answer),
                    answer.decision_id
                ),
                decision: Some(asked),
            });
        };
        let wait = self.settings.approval_wait;
        let deadline = Instant::now() + wait;
        // Withdrawn on the server unless it is answered while we wait.
        let mut waiting = Waiting {
            pep: self,
            approval_id: &approval_id,
            why: "the MCP client cancelled the call",
            answered: false,
        };
        let held = |why: String| {
            Gate::Deny(Denied {
                text: format!(
                    "Mandate held `{tool}` for a person's approval ({}) and {why}; the call is denied. Decision {}, approval {approval_id}.",
                    reasons(&answer),
                    answer.decision_id
                ),
                decision: Some(asked.clone()),
            })
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                waiting.why = "nobody answered within the MCP gateway's approval wait";
                return held(format!("no one answered within {}s", wait.as_secs()));
            }
            // The status is public; a task credential here would be taken
            // for an approver's token and refused.
            let read = self
                .client
                .approval(&approval_id, left.min(APPROVAL_POLL))
                .await;
            let status = match read {
                Ok(status) => status,
                Err(e) => {
                    waiting.why = "the MCP gateway cannot read the approval's state";
                    return held(format!("the approval's state cannot be read ({e})"));
                }
            };
            if status.status != ApprovalStatus::Pending {
                waiting.answered = true;
            }
            match status.status {
                ApprovalStatus::Pending => continue,
                ApprovalStatus::Approved => break,
                ApprovalStatus::Denied => {
                    let by = status
                        .resolved_by
                        .map(|b| format!(" by `{b}`"))
                        .unwrap_or_default();
                    let why = status.reason.map(|r| format!(": {r}")).unwrap_or_default();
                    return held(format!("it was denied{by}{why}"));
                }
                other => return held(format!("the approval is `{}`", other.as_str())),
            }
        }
        // Approved: the same request again, bound to the approval.
        let mut again = body.clone();
        again.approval_id = Some(approval_id.to_string());
        match self.ask(&again).await {
            Ok(answer) => {
                // The call went through this approval whether or not the
                // server's answer names it again.
                let mut decision = DecisionMeta::of(&answer);
                decision.approval_id.get_or_insert(approval_id.clone());
                if answer.decision == Decision::Allow {
                    Gate::Allow(Allowed {
                        decision,
                        text_fields: body.action.annotations.text_fields.clone(),
                        span: None,
                    })
                } else {
                    let mut deny = denied(tool, &answer);
                    deny.decision = Some(decision);
                    Gate::Deny(deny)
                }
            }
            Err(reason) => Gate::Deny(Denied::undecided(could_not_decide(tool, &reason))),
        }
    }

    /// Withdraws approval `id` on the server (`POST
    /// /v1/approvals/{id}/withdraw`) in the background: best effort, as
    /// the call it was for is denied here whatever the answer.
    fn withdraw(&self, id: &ApprovalId, why: &'static str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let token = self.credential_token().map(str::to_owned);
        let id = id.clone();
        runtime.spawn(async move {
            match client.withdraw(&id, why, token.as_deref()).await {
                Ok(()) => {
                    tracing::info!(approval_id = %id, reason = why, "approval withdrawn");
                }
                // Answered meanwhile (409), or the server is away: nothing
                // waits on it here either way.
                Err(e @ mandate_client::ClientError::Refused { .. }) => {
                    tracing::debug!(approval_id = %id, error = %e, "approval not withdrawn");
                }
                Err(e) => {
                    tracing::warn!(approval_id = %id, error = %e, "approval not withdrawn");
                }
            }
        });
    }

    /// Reports what an allowed call returned, in the background. Under a
    /// task credential the status goes into the task's history (`POST
    /// /v1/decisions/{id}/result`), with the destinations the result
    /// (`response`, the JSON-RPC answer, when one reached the client)
    /// names; an agent's session has no per-call results. Nothing waits
    /// for it: the labels a result brings were recorded when the call was
    /// allowed (the server taints the session at once for a tool whose
    /// output is untrusted), so no report can arrive too late for the next
    /// decision. A destination it names grounds later calls once the
    /// report is in; until then it is unseen (stricter, never looser).
    pub fn record_result(&self, allowed: Allowed, failed: bool, response: Option<&Value>) {
        if failed && let Some(span) = &allowed.span {
            span.failed("tool_error");
        }
        let Principal::Credential { credential, .. } = &self.settings.principal else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let token = credential.token().to_owned();
        let outcome = if failed {
            CallOutcome::Error
        } else {
            CallOutcome::Ok
        };
        let values = response
            .and_then(|r| r.get("result"))
            .map(|result| FoundValues::of_output(result, &allowed.text_fields).reported())
            .unwrap_or_default();
        let decision_id = allowed.decision.decision_id;
        runtime.spawn(async move {
            if let Err(e) = client
                .report_result(&decision_id, outcome, values, &token)
                .await
            {
                tracing::warn!(%decision_id, error = %e, "the call's result was not recorded");
            }
        });
    }
}

impl Session {
    /// Whether call `id` is being decided.
    pub fn is_deciding(&self, id: &IdKey) -> bool {
        self.deciding_calls().contains_key(id)
    }

    /// Notes that call `id` is being decided; the token is cancelled when
    /// the client cancels the call, so that the decision stops waiting.
    pub fn start_deciding(&self, id: IdKey) -> CancellationToken {
        let token = CancellationToken::new();
        self.deciding_calls().insert(id, token.clone());
        token
    }

    /// Cancels call `id` if it is still being decided; returns whether it
    /// was (the upstream never saw it, so the cancellation is the gateway's
    /// to act on, not to pass on).
    pub fn cancel_deciding(&self, id: &IdKey) -> bool {
        match self.deciding_calls().get(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Ends the decision of call `id`; returns whether the call was
    /// cancelled meanwhile (or was not being decided), so that it must not
    /// go upstream.
    pub fn finish_deciding(&self, id: &IdKey) -> bool {
        self.deciding_calls()
            .remove(id)
            .is_none_or(|token| token.is_cancelled())
    }

    fn deciding_calls(&self) -> std::sync::MutexGuard<'_, HashMap<IdKey, CancellationToken>> {
        self.deciding.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn reasons(answer: &DecisionResponse) -> String {
    let mut reasons = answer.reasons.join("; ");
    if reasons.is_empty() {
        reasons = "no reason given".to_owned();
    }
    for error in &answer.errors {
        reasons.push_str("; ");
        reasons.push_str(&error.message);
    }
    reasons
}

/// The tool error of a deny the server answered.
fn denied(tool: &str, answer: &DecisionResponse) -> Denied {
    let policies = if answer.policies.is_empty() {
        String::new()
    } else {
        format!(" (policies: {})", answer.policies.join(", "))
    };
    Denied {
        text: format!(
            "Mandate denied `{tool}`: {}{policies}. Decision {}.",
            reasons(answer),
            answer.decision_id
        ),
        decision: Some(DecisionMeta::of(answer)),
    }
}

/// The tool error text when no decision could be had.
fn could_not_decide(tool: &str, reason: &str) -> String {
    format!("Mandate could not decide `{tool}`, so the call is denied: {reason}.")
}
