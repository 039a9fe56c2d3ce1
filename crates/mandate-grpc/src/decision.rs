//! `mandate.v1.DecisionService/Decide`: `POST /v1/decide` over gRPC.
//!
//! The request becomes the JSON the HTTP API reads and goes through the
//! same checks ([`mandate_core::json`]); the bearer token comes from the
//! `authorization` metadata and is read as the HTTP header is. Errors carry
//! the HTTP API's error code in the [`ERROR_CODE_METADATA`] entry, with the
//! gRPC status closest to its HTTP status.

use chrono::Utc;
use http::StatusCode;
use mandate_core::json;
use mandate_core::{Decision, DecisionRequest, DecisionResponse};
use mandate_server::telemetry::{DecisionSpan, FrontEnd};
use mandate_server::{
    Authority, AuthorityError, BearerProblem, DecideError, Decider, bearer_of, credential_refusal,
};
use serde_json::{Map, Value};
use tonic::{Code, Request, Response, Status};
use tracing::Instrument as _;

use crate::ERROR_CODE_METADATA;
use crate::pb;
use crate::structs::object;

/// The gRPC decision API over a [`Decider`].
#[derive(Clone)]
pub struct DecisionApi {
    decider: Decider,
}

impl DecisionApi {
    /// The API deciding with `decider`.
    pub fn new(decider: Decider) -> Self {
        Self { decider }
    }

    /// The tonic service, accepting messages up to `max_message_bytes`.
    pub fn into_service(
        self,
        max_message_bytes: usize,
    ) -> pb::decision_service_server::DecisionServiceServer<Self> {
        pb::decision_service_server::DecisionServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
    }
}

#[tonic::async_trait]
impl pb::decision_service_server::DecisionService for DecisionApi {
    async fn decide(
        &self,
        request: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::DecideResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        let span = DecisionSpan::start(FrontEnd::Grpc, &headers);
        self.decide_in(&headers, request.into_inner(), &span)
            .instrument(span.span().clone())
            .await
            .map(Response::new)
            .map_err(|refused| {
                span.refused(refused.error_code);
                if refused.is_client_error() {
                    self.decider
                        .count_rejected(FrontEnd::Grpc, refused.error_code);
                }
                refused.into_status()
            })
    }
}

impl DecisionApi {
    async fn decide_in(
        &self,
        headers: &http::HeaderMap,
        message: pb::DecideRequest,
        span: &DecisionSpan,
    ) -> Result<pb::DecideResponse, Refusal> {
        let bearer = bearer_of(headers).map_err(bearer_refused)?;
        let authority = self
            .decider
            .authority(bearer.as_deref(), Utc::now())
            .map_err(unauthorised)?;
        let request = decision_request(message)?;
        let decided = self
            .decider
            .decide(&authority, request, Utc::now())
            .await
            .map_err(refusal)?;
        span.decided(&decided, &authority);
        tracing::debug!(
            decision_id = %decided.response.decision_id,
            decision = %decided.response.decision,
            server = decided.server,
            tool = decided.tool,
            task_id = match &authority {
                Authority::Task(credential) => Some(credential.task_id.as_str()),
                Authority::Request => None,
            },
            "decided over gRPC"
        );
        Ok(response(decided.response))
    }
}

/// The decision request `message` stands for, read as the HTTP API reads
/// its body.
pub(crate) fn decision_request(message: pb::DecideRequest) -> Result<DecisionRequest, Refusal> {
    let invalid = |message: String| error(Code::InvalidArgument, "invalid_request", message);
    let principal = message
        .principal
        .ok_or_else(|| invalid("`principal` is required".to_owned()))?;
    let action = message
        .action
        .ok_or_else(|| invalid("`action` is required".to_owned()))?;
    let mut principal_json = Map::new();
    principal_json.insert("id".into(), Value::String(principal.id));
    if let Some(person) = principal.on_behalf_of {
        principal_json.insert("on_behalf_of".into(), Value::String(person));
    }
    let number = |e: crate::structs::NumberError| invalid(e.to_string());
    principal_json.insert(
        "attributes".into(),
        Value::Object(object(principal.attributes, "principal.attributes").map_err(number)?),
    );
    let mut request = Map::new();
    request.insert("principal".into(), Value::Object(principal_json));
    request.insert(
        "action".into(),
        serde_json::json!({
            "server": action.server,
            "tool": action.tool,
            "annotations": object(action.annotations, "action.annotations").map_err(number)?,
        }),
    );
    request.insert(
        "arguments".into(),
        Value::Object(object(message.arguments, "arguments").map_err(number)?),
    );
    request.insert(
        "context".into(),
        Value::Object(object(message.context, "context").map_err(number)?),
    );
    if let Some(approval) = message.approval_id {
        request.insert("approval_id".into(), Value::String(approval));
    }
    let request = Value::Object(request);
    json::check_exact_numbers(&request).map_err(|e| invalid(e.to_string()))?;
    json::from_value(request).map_err(|e| invalid(format!("the request does not fit: {e}")))
}

/// The answer as a message.
pub(crate) fn response(response: DecisionResponse) -> pb::DecideResponse {
    pb::DecideResponse {
        decision: match response.decision {
            Decision::Allow => pb::Decision::Allow,
            Decision::Deny => pb::Decision::Deny,
            Decision::ApprovalRequired => pb::Decision::ApprovalRequired,
        }
        .into(),
        decision_id: response.decision_id.to_string(),
        policies: response.policies,
        reasons: response.reasons,
        errors: response
            .errors
            .into_iter()
            .map(|e| pb::EvaluationProblem {
                policy: e.policy,
                message: e.message,
            })
            .collect(),
        receipt_index: response.receipt_index,
        approval_id: response.approval_id.map(|id| id.to_string()),
        approval_expires_at: response
            .approval_expires_at
            .map(|at| prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
            }),
        approver: response.approver,
    }
}

/// Why a call got no decision: the gRPC status code, the HTTP API's error
/// code, and the message.
#[derive(Debug)]
pub(crate) struct Refusal {
    code: Code,
    error_code: &'static str,
    message: String,
}

impl Refusal {
    /// Whether the caller is at fault (the HTTP API's 4xx).
    fn is_client_error(&self) -> bool {
        matches!(
            self.code,
            Code::InvalidArgument | Code::Unauthenticated | Code::PermissionDenied | Code::NotFound
        )
    }

    /// The status, with the error code in the [`ERROR_CODE_METADATA`] entry.
    fn into_status(self) -> Status {
        let mut status = Status::new(self.code, self.message);
        status.metadata_mut().insert(
            ERROR_CODE_METADATA,
            tonic::metadata::MetadataValue::from_static(self.error_code),
        );
        status
    }
}

/// A refusal with the HTTP API's error code.
fn error(code: Code, error_code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        error_code,
        message: message.into(),
    }
}

fn bearer_refused(problem: BearerProblem) -> Refusal {
    match problem {
        BearerProblem::Several => error(
            Code::InvalidArgument,
            "invalid_request",
            "send exactly one `authorization` metadata entry",
        ),
        BearerProblem::OtherScheme => error(
            Code::Unauthenticated,
            "missing_token",
            "only bearer tokens are accepted: send `authorization: Bearer <token>`",
        ),
        BearerProblem::Empty => error(
            Code::Unauthenticated,
            "invalid_token",
            "the bearer token is empty",
        ),
    }
}

/// What a refused authority means over gRPC.
fn unauthorised(refused: AuthorityError) -> Refusal {
    let message = refused.to_string();
    match refused {
        AuthorityError::CallerRequired => error(Code::Unauthenticated, "caller_required", message),
        AuthorityError::IdentityToken => error(Code::Unauthenticated, "invalid_token", message),
        AuthorityError::Credential(e) => {
            let (status, error_code) = credential_refusal(&e);
            match status {
                StatusCode::INTERNAL_SERVER_ERROR => {
                    tracing::error!(error = %e, "task credential could not be handled");
                    error(
                        Code::Internal,
                        error_code,
                        "mandate failed to handle the task credential; see the server log",
                    )
                }
                status => error(grpc_code(status), error_code, e.to_string()),
            }
        }
    }
}

/// What a decision refused means over gRPC: the HTTP API's code, with the
/// status closest to its HTTP status.
fn refusal(refused: DecideError) -> Refusal {
    let refused = refused.refused();
    error(grpc_code(refused.status), refused.code, refused.message)
}

/// The gRPC status code for an HTTP status of the decision API.
pub(crate) fn grpc_code(status: StatusCode) -> Code {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::Internal,
    }
}
