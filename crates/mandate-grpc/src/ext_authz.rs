//! Envoy's external authorization (`envoy.service.auth.v3.Authorization/
//! Check`): each HTTP request Envoy holds becomes one decision.
//!
//! The request's route ([`Routes`]) names the tool call and where its
//! arguments come from; the caller's `Authorization: Bearer` header must
//! carry a task credential, and the call is decided under it, with its
//! holder as the principal. Every decision made here has its receipt, as
//! on any front end. The answer to Envoy:
//!
//! - allow: OK; the upstream request gets `x-mandate-decision-id` and
//!   `x-mandate-receipt-index`, and loses `x-mandate-approval-id` and
//!   (unless the route forwards it) `authorization`;
//! - deny: `403` with a JSON body naming the decision;
//! - approval required: `403` with `x-mandate-approval-id` and a JSON body
//!   naming the approval; once a person approves it, the client sends the
//!   same request again with `x-mandate-approval-id: <id>`;
//! - no decision (no route, no or a refused credential, a request that
//!   cannot be read, Mandate failing): a denied answer with the status the
//!   HTTP API would give and a JSON `{"error", "message"}` body.
//!
//! Nothing is allowed without a decision: every path that is not an allow
//! denies.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
    HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt as _, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use http::StatusCode;
use mandate_core::json;
use mandate_core::{Decision, DecisionRequest, DecisionResponse};
use mandate_server::telemetry::{DecisionSpan, FrontEnd};
use mandate_server::{
    Authority, AuthorityError, DecideError, Decider, bearer_token, credential_refusal,
};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::routes::{Matched, Routes, Source};

/// The request header a client sends an approved approval's id in.
pub const APPROVAL_HEADER: &str = "x-mandate-approval-id";
/// The upstream request header naming the decision that allowed it.
pub const DECISION_HEADER: &str = "x-mandate-decision-id";
/// The upstream request header with the decision's receipt index.
pub const RECEIPT_HEADER: &str = "x-mandate-receipt-index";

/// Why a check without a task credential is refused.
const NO_CREDENTIAL: &str = "HTTP calls are decided under the caller's task credential: send `Authorization: Bearer <task credential>`";

/// The ext_authz service over a [`Decider`] and the configured routes.
#[derive(Clone)]
pub struct ExtAuthz {
    decider: Decider,
    routes: Arc<Routes>,
}

impl ExtAuthz {
    /// The service deciding with `decider` the requests `routes` map.
    pub fn new(decider: Decider, routes: Routes) -> Self {
        Self {
            decider,
            routes: Arc::new(routes),
        }
    }

    /// The tonic service, accepting messages up to `max_message_bytes`
    /// (a check carries the request's body when Envoy is set to send it).
    pub fn into_service(self, max_message_bytes: usize) -> AuthorizationServer<Self> {
        AuthorizationServer::new(self).max_decoding_message_size(max_message_bytes)
    }

    /// The answer for one check: an allow only from an allow decision.
    async fn answer(&self, check: CheckRequest) -> CheckResponse {
        // The HTTP request and its headers, read once: for the span's parent
        // and for the decision.
        let request = check
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .map(|http| Headers::of(&http).map(|headers| (http, headers)));
        let trace = trace_headers(
            request
                .as_ref()
                .and_then(|r| r.as_ref().ok())
                .map(|(_, headers)| headers),
        );
        let span = DecisionSpan::start(FrontEnd::ExtAuthz, &trace);
        match self
            .decide(request, &span)
            .instrument(span.span().clone())
            .await
        {
            Ok((response, forward_credential)) => answer_decision(response, forward_credential),
            Err(refusal) => {
                span.refused(refusal.code);
                if refusal.status.is_client_error() {
                    self.decider
                        .count_rejected(FrontEnd::ExtAuthz, refusal.code);
                }
                refusal.into_response()
            }
        }
    }

    async fn decide(
        &self,
        request: Option<Result<(HttpRequest, Headers), Refusal>>,
        span: &DecisionSpan,
    ) -> Result<(DecisionResponse, bool), Refusal> {
        let (http, headers) = request.ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the check carries no HTTP request",
            )
        })??;
        let authority = self
            .decider
            .authority(headers.bearer()?.as_deref(), Utc::now())
            .map_err(Refusal::unauthorised)?;
        let Authority::Task(credential) = &authority else {
            return Err(Refusal::challenge("invalid_token", NO_CREDENTIAL));
        };
        let holder = credential
            .holder()
            .map(|hop| hop.agent.clone())
            .ok_or_else(|| {
                Refusal::challenge("invalid_token", "the task credential names no agent")
            })?;
        let (path, query) = http.path.split_once('?').unwrap_or((&http.path, ""));
        check_path(path)?;
        let matched = self
            .routes
            .find(&http.method, &http.host, path)
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::FORBIDDEN,
                    "no_route",
                    format!(
                        "no ext_authz route maps {} {}{path} to a tool call, so it is not allowed",
                        http.method, http.host
                    ),
                )
            })?;
        let arguments = arguments(&matched, query, &headers, &http)?;
        let mut request = json!({
            "principal": {"id": holder},
            "action": {
                "server": matched.route.server,
                "tool": matched.route.tool,
                "annotations": matched.route.annotations,
            },
            "arguments": arguments,
        });
        if let (Some(approval), Some(object)) =
            (headers.one(APPROVAL_HEADER)?, request.as_object_mut())
        {
            object.insert("approval_id".into(), Value::String(approval));
        }
        let request: DecisionRequest = json::from_value(request).map_err(|e| {
            Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("the request does not make a valid tool call: {e}"),
            )
        })?;
        let decided = self
            .decider
            .decide(&authority, request, Utc::now())
            .await
            .map_err(Refusal::undecided)?;
        span.decided(&decided, &authority);
        tracing::debug!(
            decision_id = %decided.response.decision_id,
            decision = %decided.response.decision,
            server = decided.server,
            tool = decided.tool,
            task_id = %credential.task_id.as_str(),
            "decided an ext_authz check"
        );
        Ok((decided.response, matched.route.forward_credential))
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.answer(request.into_inner()).await))
    }
}

/// The W3C trace context of the HTTP request Envoy holds (`traceparent`,
/// `tracestate`), for the decision's span.
fn trace_headers(headers: Option<&Headers>) -> http::HeaderMap {
    let mut trace = http::HeaderMap::new();
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = headers
            .and_then(|h| h.one(name).ok().flatten())
            .and_then(|v| http::HeaderValue::from_str(&v).ok())
        {
            trace.insert(name, value);
        }
    }
    trace
}

/// The answer to Envoy for a decision.
fn answer_decision(response: DecisionResponse, forward_credential: bool) -> CheckResponse {
    let mut answer;
    match response.decision {
        Decision::Allow => {
            let mut ok = OkHttpResponseBuilder::new();
            // Overwrite: a client's own header of that name never reaches
            // the upstream beside Mandate's.
            let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
            ok.add_header(
                DECISION_HEADER,
                response.decision_id.to_string(),
                overwrite,
                false,
            );
            match response.receipt_index {
                Some(index) => {
                    ok.add_header(RECEIPT_HEADER, index.to_string(), overwrite, false);
                }
                None => {
                    ok.remove_header(RECEIPT_HEADER);
                }
            }
            ok.remove_header(APPROVAL_HEADER);
            if !forward_credential {
                ok.remove_header("authorization");
            }
            answer = CheckResponse::with_status(Status::ok("allowed"));
            answer.set_http_response(ok);
        }
        Decision::Deny | Decision::ApprovalRequired => {
            let mut denied = DeniedHttpResponseBuilder::new();
            denied.set_http_status(HttpStatusCode::Forbidden);
            denied.add_header("content-type", "application/json", None, false);
            if let Some(approval) = response
                .approval_id
                .as_ref()
                .filter(|_| response.decision == Decision::ApprovalRequired)
            {
                denied.add_header(APPROVAL_HEADER, approval.to_string(), None, false);
            }
            let body = serde_json::to_string(&response).unwrap_or_default();
            denied.set_body(body);
            answer =
                CheckResponse::with_status(Status::permission_denied(response.decision.as_str()));
            answer.set_http_response(denied);
        }
    }
    answer
}

/// No decision: the check is denied with what the HTTP API would answer.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// An RFC 6750 challenge for the client, when its token is the cause.
    challenge: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: None,
        }
    }

    /// `401`, with a challenge naming the problem.
    fn challenge(code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        let description: String = message
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .take(200)
            .collect();
        Self {
            challenge: Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{description}\""
            )),
            ..Self::new(StatusCode::UNAUTHORIZED, code, message)
        }
    }

    fn unauthorised(refused: AuthorityError) -> Self {
        let message = refused.to_string();
        match refused {
            // ext_authz decides under a task credential only: a caller's
            // token would not do either.
            AuthorityError::CallerRequired => Self::challenge("invalid_token", NO_CREDENTIAL),
            AuthorityError::IdentityToken => Self::challenge("invalid_token", message),
            AuthorityError::Credential(e) => match credential_refusal(&e) {
                (StatusCode::UNAUTHORIZED, code) => Self::challenge(code, message),
                (StatusCode::INTERNAL_SERVER_ERROR, code) => {
                    tracing::error!(error = %e, "task credential could not be handled");
                    Self::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        code,
                        "mandate failed to handle the task credential; see the server log",
                    )
                }
                (status, code) => Self::new(status, code, message),
            },
        }
    }

    fn undecided(refused: DecideError) -> Self {
        let refused = refused.refused();
        match refused.status {
            StatusCode::UNAUTHORIZED => Self::challenge(refused.code, refused.message),
            status => Self::new(status, refused.code, refused.message),
        }
    }

    fn into_response(self) -> CheckResponse {
        let mut denied = DeniedHttpResponseBuilder::new();
        denied.set_http_status(http_status(self.status));
        denied.add_header("content-type", "application/json", None, false);
        if let Some(challenge) = &self.challenge {
            denied.add_header("www-authenticate", challenge.clone(), None, false);
        }
        denied.set_body(json!({"error": self.code, "message": self.message}).to_string());
        let status = match self.status {
            StatusCode::UNAUTHORIZED => Status::unauthenticated(self.message),
            StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(self.message),
            StatusCode::INTERNAL_SERVER_ERROR => Status::internal(self.message),
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                Status::invalid_argument(self.message)
            }
            _ => Status::permission_denied(self.message),
        };
        let mut answer = CheckResponse::with_status(status);
        answer.set_http_response(denied);
        answer
    }
}

fn http_status(status: StatusCode) -> HttpStatusCode {
    match status {
        StatusCode::BAD_REQUEST => HttpStatusCode::BadRequest,
        StatusCode::UNAUTHORIZED => HttpStatusCode::Unauthorized,
        StatusCode::FORBIDDEN => HttpStatusCode::Forbidden,
        StatusCode::NOT_FOUND => HttpStatusCode::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => HttpStatusCode::PayloadTooLarge,
        StatusCode::UNPROCESSABLE_ENTITY => HttpStatusCode::UnprocessableEntity,
        StatusCode::SERVICE_UNAVAILABLE => HttpStatusCode::ServiceUnavailable,
        _ => HttpStatusCode::InternalServerError,
    }
}

/// The request's headers by lower-case name, each with all its values.
struct Headers(BTreeMap<String, Vec<String>>);

impl Headers {
    fn of(http: &HttpRequest) -> Result<Self, Refusal> {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        match &http.header_map {
            // Envoy sends `header_map` instead of `headers` when told to
            // encode raw headers; each header is then its own entry.
            Some(map) if http.headers.is_empty() => {
                for header in &map.headers {
                    let value = if header.raw_value.is_empty() {
                        header.value.clone()
                    } else {
                        String::from_utf8(header.raw_value.clone()).map_err(|_| {
                            Refusal::new(
                                StatusCode::BAD_REQUEST,
                                "invalid_request",
                                format!("header `{}` is not UTF-8", header.key),
                            )
                        })?
                    };
                    headers
                        .entry(header.key.to_ascii_lowercase())
                        .or_default()
                        .push(value);
                }
            }
            _ => {
                for (key, value) in &http.headers {
                    headers
                        .entry(key.to_ascii_lowercase())
                        .or_default()
                        .push(value.clone());
                }
            }
        }
        Ok(Self(headers))
    }

    /// The header's one value; `None` without it. Sent more than once (or
    /// joined by Envoy with commas where one value is meant) is refused.
    fn one(&self, name: &str) -> Result<Option<String>, Refusal> {
        match self.0.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([value]) => Ok(Some(value.clone())),
            Some(_) => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("send exactly one `{name}` header"),
            )),
        }
    }

    /// The bearer token of the `Authorization` header, if any.
    fn bearer(&self) -> Result<Option<String>, Refusal> {
        let Some(value) = self.one("authorization")? else {
            return Ok(None);
        };
        // Envoy joins repeated header values with commas: a comma is more
        // than one token.
        match bearer_token(&value) {
            Ok(token) if !token.contains(',') => Ok(Some(token)),
            _ => Err(Refusal::challenge(
                "invalid_token",
                "send one task credential as `Authorization: Bearer <task credential>`",
            )),
        }
    }
}

/// Refuses a path whose segments another hop could read differently: dot
/// segments, empty segments, and encoded slashes or dots, which Envoy (with
/// `normalize_path`) or the upstream may resolve after Mandate matched.
fn check_path(path: &str) -> Result<(), Refusal> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let ambiguous = segments.iter().enumerate().any(|(i, segment)| {
        let lower = segment.to_ascii_lowercase();
        // What some servers read before a `;` (`..;` is `..` to them).
        let before_params = segment.split(';').next().unwrap_or_default();
        (segment.is_empty() && i != last)
            || before_params == "."
            || before_params == ".."
            || lower.contains("%2f")
            || lower.contains("%5c")
            || lower.contains("%2e")
            || segment.contains('\\')
    });
    if !path.starts_with('/') || ambiguous {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the path has empty or dot segments, or encoded slashes or dots: send it normalised (Envoy: `normalize_path`, `merge_slashes`)",
        ));
    }
    Ok(())
}

/// The call's arguments, read from the request by the route's sources.
fn arguments(
    matched: &Matched<'_>,
    query: &str,
    headers: &Headers,
    http: &HttpRequest,
) -> Result<Map<String, Value>, Refusal> {
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, "invalid_request", message);
    let mut query_values: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if query_values
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(bad(format!(
                "the query parameter `{key}` is sent more than once: send each once"
            )));
        }
    }
    let body = if matched.route.reads_body() {
        body(http, headers)?
    } else {
        None
    };
    let mut arguments = Map::new();
    for (name, source) in &matched.route.arguments {
        let value = match source {
            Source::Path(param) => matched
                .params
                .iter()
                .find(|(k, _)| k == param)
                .map(|(_, raw)| {
                    percent_decode_str(raw)
                        .decode_utf8()
                        .map(|v| Value::String(v.into_owned()))
                        .map_err(|_| bad(format!("the path segment `{param}` is not UTF-8")))
                })
                .transpose()?,
            Source::Query(key) => query_values.get(key).cloned().map(Value::String),
            Source::Header(key) => headers.one(key)?.map(Value::String),
            Source::Body(path) => body
                .as_ref()
                .and_then(|b| path.iter().try_fold(b, |v, key| v.get(key)))
                .cloned(),
        };
        if let Some(value) = value {
            arguments.insert(name.clone(), value);
        }
    }
    Ok(arguments)
}

/// The JSON body, for a route that reads it; `None` for a request without
/// one. A body Envoy did not send whole, or did not send at all though the
/// request has one, is refused: deciding without it could allow what its
/// fields would deny.
fn body(http: &HttpRequest, headers: &Headers) -> Result<Option<Value>, Refusal> {
    let bad = |status, message: &str| Refusal::new(status, "invalid_request", message);
    if headers
        .one("x-envoy-auth-partial-body")?
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err(bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Envoy sent only part of the body: raise `with_request_body.max_request_bytes` (and keep `allow_partial_message` off)",
        ));
    }
    let bytes = if http.raw_body.is_empty() {
        http.body.as_bytes()
    } else {
        &http.raw_body
    };
    if bytes.is_empty() {
        let declared = headers
            .one("content-length")?
            .is_some_and(|length| length.trim() != "0");
        let chunked = headers.one("transfer-encoding")?.is_some();
        if declared || chunked {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "the request has a body that Envoy did not send: configure `with_request_body` on the ext_authz filter",
            ));
        }
        return Ok(None);
    }
    let value = json::from_slice(bytes).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON for Mandate: {e}"),
        )
    })?;
    json::check_exact_numbers(&value).map_err(|e| {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            e.to_string(),
        )
    })?;
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_paths_are_refused() {
        for path in [
            "/a/../b",
            "/a/./b",
            "/a//b",
            "/a/%2e%2e/b",
            "/a/b%2Fc",
            "/a\\b",
            "a",
        ] {
            assert!(check_path(path).is_err(), "{path}");
        }
        for path in ["/", "/a/b", "/a/b/", "/repos/acme/web%20site/issues"] {
            assert!(check_path(path).is_ok(), "{path}");
        }
    }
}
