//! A typed client of Mandate's HTTP API: the decision API for enforcement
//! points, and the task, approval and health endpoints for the `mandate`
//! command.
//!
//! Requests and answers are `mandate-core`'s own wire types
//! ([`DecisionRequest`], [`DecisionResponse`], [`ApprovalStatus`], and the
//! bodies of [`mandate_core::api`]), the ones the server parses and writes,
//! so a change to the contract is a compile error here rather than every
//! call failing closed at run time. Every method fails with a
//! [`ClientError`] on anything but the expected answer; an enforcement
//! point treats any error as a deny.
//!
//! ```no_run
//! # async fn run(request: mandate_core::DecisionRequest) -> Result<(), mandate_client::ClientError> {
//! let client = mandate_client::Client::new("http://127.0.0.1:8181", reqwest::Client::new());
//! let answer = client.decide(&request, Some("mnd_cal_…")).await?;
//! println!("{}", answer.decision);
//! # Ok(()) }
//! ```

use std::time::Duration;

use mandate_core::api::{
    ApprovalList, ApprovalView, DelegateTask, Delegated, ReportedValue, ResolveApproval, StartTask,
    TaskEnded, TaskStarted, TaskView, WithdrawApproval,
};
use mandate_core::{
    ApprovalId, ApprovalStatus, DecisionId, DecisionRequest, DecisionResponse, TaskId,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};

/// How long a request may take unless set with [`Client::with_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request could not be sent or its answer not received.
    #[error("the Mandate server at {base} cannot be reached ({detail})")]
    Unreachable {
        /// The server's base URL.
        base: String,
        /// What failed, with its causes.
        detail: String,
    },
    /// The answer started but did not arrive whole.
    #[error("the Mandate server's answer was cut off ({detail})")]
    CutOff {
        /// The URL that answered.
        url: String,
        /// What failed, with its causes.
        detail: String,
    },
    /// The server answered with an error status.
    #[error("{}", refused_text(*.status, code.as_deref(), message.as_deref()))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's error code (`invalid_token`, …), when the body has one.
        code: Option<String>,
        /// The API's message, when the body has one.
        message: Option<String>,
        /// The URL that answered.
        url: String,
        /// The body as text (invalid UTF-8 replaced), for telling what
        /// answered when it is not the API's error body.
        body: String,
    },
    /// A success whose body is not the expected type.
    #[error("the Mandate server's answer cannot be read ({detail})")]
    Unreadable {
        /// The URL that answered.
        url: String,
        /// The HTTP status (a success).
        status: u16,
        /// Why the body cannot be read as the answer.
        detail: String,
    },
    /// An id that cannot be one path segment (`.` or `..`), or text that is
    /// not an id at all (an empty task id, say): nothing was sent.
    #[error("`{0}` is not an id Mandate gives")]
    BadId(String),
}

fn refused_text(status: u16, code: Option<&str>, message: Option<&str>) -> String {
    let status =
        StatusCode::from_u16(status).map_or_else(|_| status.to_string(), |s| s.to_string());
    match (code, message) {
        (Some(code), Some(message)) => {
            format!("the Mandate server answered {status} `{code}`: {message}")
        }
        _ => format!("the Mandate server answered {status}"),
    }
}

/// An approval as `GET /v1/approvals/{id}` shows it to the agent waiting on
/// it (the fields an enforcement point acts on; the server sends more).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApprovalState {
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Who answered it, once answered.
    #[serde(default)]
    pub resolved_by: Option<String>,
    /// Why, as the approver (or the withdrawal) said.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The server's health as `GET /v1/health` reports it (the fields a probe
/// acts on; the server sends more).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Health {
    /// `ok`; `degraded` when the last policy reload was rejected (the
    /// previous policies are still in force); `failing` when the receipt log
    /// stopped accepting receipts (every decision is answered 503).
    pub status: String,
    /// The policies in force.
    pub policies: HealthPolicies,
    /// The receipt log.
    pub receipts: HealthReceipts,
}

/// The policies in force, in [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HealthPolicies {
    /// Digest of the pack's sources (receipts name it as `policy_version`).
    pub version: String,
}

/// The receipt log, in [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HealthReceipts {
    /// Receipts recorded.
    pub size: u64,
    /// Why the log stopped accepting receipts, if it did.
    #[serde(default)]
    pub failure: Option<String>,
}

/// What an allowed call returned, as `POST /v1/decisions/{id}/result`
/// records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The tool returned a result.
    Ok,
    /// The tool returned an error (or none).
    Error,
}

/// A client of one Mandate server. Cheap to clone (the connection pool is
/// shared).
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl Client {
    /// A client of the server at `base` (such as `http://127.0.0.1:8181`),
    /// sending with `http`.
    pub fn new(base: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            http,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another timeout for each request (long polls
    /// add their wait to it).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /v1/health`: whether the server is up, the policies in force and
    /// the state of its receipt log. Needs no token.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.send(self.request(Method::GET, &["v1", "health"])?)
            .await
    }

    /// `POST /v1/decide`: the decision on `request`, presented with
    /// `bearer` (a task credential, or a caller's token). A deny is an
    /// answer; an error means no decision was made.
    pub async fn decide(
        &self,
        request: &DecisionRequest,
        bearer: Option<&str>,
    ) -> Result<DecisionResponse, ClientError> {
        self.decide_in_trace(request, bearer, &[]).await
    }

    /// [`Client::decide`] as part of a trace: `trace` is the W3C trace
    /// context (`traceparent`, and `tracestate` if any) sent as headers, so
    /// that the decision's span is a child of the caller's.
    pub async fn decide_in_trace(
        &self,
        request: &DecisionRequest,
        bearer: Option<&str>,
        trace: &[(&str, String)],
    ) -> Result<DecisionResponse, ClientError> {
        let mut request = self.request(Method::POST, &["v1", "decide"])?.json(request);
        for (name, value) in trace {
            request = request.header(*name, value);
        }
        self.send(with_bearer(request, bearer)).await
    }

    /// `GET /v1/approvals/{id}?wait=…`: the approval's state once it is no
    /// longer pending, or when `wait` (whole seconds, at least one) ends.
    /// The status needs no token.
    pub async fn approval(
        &self,
        id: &ApprovalId,
        wait: Duration,
    ) -> Result<ApprovalState, ClientError> {
        let wait = wait.as_secs().max(1);
        let request = self
            .http
            .get(self.url(&["v1", "approvals", id.as_str()])?)
            .query(&[("wait", format!("{wait}s"))])
            .timeout(self.timeout + Duration::from_secs(wait));
        self.send(request).await
    }

    /// `POST /v1/approvals/{id}/withdraw`: the requester no longer waits
    /// for approval `id`, because of `reason`. Under a task credential,
    /// `bearer` must be the one the approval was asked under.
    pub async fn withdraw(
        &self,
        id: &ApprovalId,
        reason: &str,
        bearer: Option<&str>,
    ) -> Result<(), ClientError> {
        let request = self
            .request(Method::POST, &["v1", "approvals", id.as_str(), "withdraw"])?
            .json(&WithdrawApproval {
                reason: Some(reason.to_owned()),
            });
        self.send::<serde::de::IgnoredAny>(with_bearer(request, bearer))
            .await
            .map(|_| ())
    }

    /// `POST /v1/decisions/{id}/result`: what the call allowed by decision
    /// `decision_id` returned, under the task credential it was decided
    /// under.
    ///
    /// `values` are the destinations the result names, as
    /// [`FoundValues::reported`](mandate_core::provenance::FoundValues::reported)
    /// gives them: they enter the task's session with where they were seen.
    pub async fn report_result(
        &self,
        decision_id: &DecisionId,
        outcome: CallOutcome,
        values: Vec<ReportedValue>,
        credential: &str,
    ) -> Result<(), ClientError> {
        #[derive(Serialize)]
        struct Report {
            status: CallOutcome,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            values: Vec<ReportedValue>,
        }
        let request = self
            .request(
                Method::POST,
                &["v1", "decisions", decision_id.as_str(), "result"],
            )?
            .bearer_auth(credential)
            .json(&Report {
                status: outcome,
                values,
            });
        self.send::<serde::de::IgnoredAny>(request)
            .await
            .map(|_| ())
    }

    /// `POST /v1/tasks`: starts `task` for the agent whose identity token
    /// is `identity`, and issues its root credential.
    pub async fn start_task(
        &self,
        task: &StartTask,
        identity: &str,
    ) -> Result<TaskStarted, ClientError> {
        let request = self
            .request(Method::POST, &["v1", "tasks"])?
            .bearer_auth(identity)
            .json(task);
        self.send(request).await
    }

    /// `POST /v1/tasks/{id}/delegate`: a narrower credential of task
    /// `task_id` for a sub-agent, issued under the delegating agent's
    /// `credential`.
    pub async fn delegate_task(
        &self,
        task_id: &TaskId,
        delegation: &DelegateTask,
        credential: &str,
    ) -> Result<Delegated, ClientError> {
        let request = self
            .request(Method::POST, &["v1", "tasks", task_id.as_str(), "delegate"])?
            .bearer_auth(credential)
            .json(delegation);
        self.send(request).await
    }

    /// `GET /v1/tasks/{id}`: task `task_id` with its delegation tree and
    /// history, shown to `bearer` (a credential of the task, its root
    /// agent's identity token, or an approver token).
    pub async fn task(&self, task_id: &TaskId, bearer: &str) -> Result<TaskView, ClientError> {
        let request = self
            .request(Method::GET, &["v1", "tasks", task_id.as_str()])?
            .bearer_auth(bearer);
        self.send(request).await
    }

    /// `DELETE /v1/tasks/{id}`: ends task `task_id` and revokes its
    /// credentials, asked by `bearer` (its root credential, its root
    /// agent's identity token, or an approver token).
    pub async fn end_task(&self, task_id: &TaskId, bearer: &str) -> Result<TaskEnded, ClientError> {
        let request = self
            .request(Method::DELETE, &["v1", "tasks", task_id.as_str()])?
            .bearer_auth(bearer);
        self.send(request).await
    }

    /// `GET /v1/approvals?status=…&limit=…`: the approvals with `status`
    /// (`pending`, …, or `all`), newest first, at most `limit`; the
    /// server's defaults (`pending`, 100) where `None`. For an approver.
    pub async fn approvals(
        &self,
        status: Option<&str>,
        limit: Option<usize>,
        approver: &str,
    ) -> Result<ApprovalList, ClientError> {
        let mut query = Vec::new();
        if let Some(status) = status {
            query.push(("status", status.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let request = self
            .request(Method::GET, &["v1", "approvals"])?
            .query(&query)
            .bearer_auth(approver);
        self.send(request).await
    }

    /// `GET /v1/approvals/{id}`: approval `id` as `bearer` may see it (all
    /// of it for an approver token, its status fields otherwise). With
    /// `wait`, the server holds the answer while it is pending, up to that
    /// long (it caps the wait); the request's timeout grows by as much.
    pub async fn show_approval(
        &self,
        id: &ApprovalId,
        wait: Option<Duration>,
        bearer: Option<&str>,
    ) -> Result<ApprovalView, ClientError> {
        let mut request = self.http.get(self.url(&["v1", "approvals", id.as_str()])?);
        let mut timeout = self.timeout;
        if let Some(wait) = wait {
            request = request.query(&[("wait", wait_param(wait))]);
            timeout += wait;
        }
        self.send(with_bearer(request.timeout(timeout), bearer))
            .await
    }

    /// `POST /v1/approvals/{id}/approve`: `approver` approves approval `id`
    /// because of `reason`.
    pub async fn approve(
        &self,
        id: &ApprovalId,
        reason: &str,
        approver: &str,
    ) -> Result<ApprovalView, ClientError> {
        self.resolve(id, "approve", reason, approver).await
    }

    /// `POST /v1/approvals/{id}/deny`: `approver` denies approval `id`
    /// because of `reason`.
    pub async fn deny(
        &self,
        id: &ApprovalId,
        reason: &str,
        approver: &str,
    ) -> Result<ApprovalView, ClientError> {
        self.resolve(id, "deny", reason, approver).await
    }

    async fn resolve(
        &self,
        id: &ApprovalId,
        verb: &str,
        reason: &str,
        approver: &str,
    ) -> Result<ApprovalView, ClientError> {
        let request = self
            .request(Method::POST, &["v1", "approvals", id.as_str(), verb])?
            .bearer_auth(approver)
            .json(&ResolveApproval {
                reason: reason.to_owned(),
            });
        self.send(request).await
    }

    /// A `method` request to `segments` below the base, with the client's
    /// timeout.
    fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder, ClientError> {
        Ok(self
            .http
            .request(method, self.url(segments)?)
            .timeout(self.timeout))
    }

    /// `base` joined with `segments`, each percent-encoded as one segment
    /// (an id cannot reach another path; URLs resolve `.` and `..` even
    /// encoded, so those are refused).
    fn url(&self, segments: &[&str]) -> Result<String, ClientError> {
        let mut url = self.base.clone();
        for segment in segments {
            if segment.is_empty() || segment.bytes().all(|b| b == b'.') {
                return Err(ClientError::BadId((*segment).to_owned()));
            }
            url.push('/');
            for byte in segment.bytes() {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    url.push(char::from(byte));
                } else {
                    url.push_str(&format!("%{byte:02X}"));
                }
            }
        }
        Ok(url)
    }

    /// Sends `request`; a success's body read as `T`, anything else an error.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            base: self.base.clone(),
            detail: error_chain(&e),
        })?;
        let status = response.status();
        let url = response.url().to_string();
        let bytes = response.bytes().await.map_err(|e| ClientError::CutOff {
            url: url.clone(),
            detail: error_chain(&e),
        })?;
        if !status.is_success() {
            #[derive(Deserialize)]
            struct ErrorBody {
                error: String,
                message: String,
            }
            let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
            return Err(ClientError::Refused {
                status: status.as_u16(),
                code: body.as_ref().map(|b| b.error.clone()),
                message: body.map(|b| b.message),
                url,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unreadable {
            url,
            status: status.as_u16(),
            detail: e.to_string(),
        })
    }
}

/// A long poll's `wait` as the server reads it: whole milliseconds.
fn wait_param(wait: Duration) -> String {
    format!("{}ms", wait.as_millis())
}

fn with_bearer(request: RequestBuilder, bearer: Option<&str>) -> RequestBuilder {
    match bearer {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// An error with its causes on one line, `outer: inner: …` (reqwest's own
/// text hides the cause behind "error sending request").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_one_path_segment() {
        let client = Client::new("http://127.0.0.1:1/", reqwest::Client::new());
        assert_eq!(
            client
                .url(&["v1", "approvals", "../tasks?x=1", "withdraw"])
                .unwrap(),
            "http://127.0.0.1:1/v1/approvals/..%2Ftasks%3Fx%3D1/withdraw"
        );
        for bad in ["", ".", ".."] {
            assert!(matches!(
                client.url(&["v1", "approvals", bad]),
                Err(ClientError::BadId(_))
            ));
        }
    }

    #[test]
    fn waits_are_sent_in_milliseconds() {
        assert_eq!(wait_param(Duration::from_secs(30)), "30000ms");
        assert_eq!(wait_param(Duration::from_millis(1500)), "1500ms");
        assert_eq!(wait_param(Duration::ZERO), "0ms");
    }

    #[test]
    fn refusals_say_the_status_and_the_servers_words() {
        let refused = ClientError::Refused {
            status: 401,
            code: Some("invalid_token".to_owned()),
            message: Some("the credential has expired".to_owned()),
            url: "http://127.0.0.1:1/v1/decide".to_owned(),
            body: String::new(),
        };
        assert_eq!(
            refused.to_string(),
            "the Mandate server answered 401 Unauthorized `invalid_token`: the credential has expired"
        );
        let bare = ClientError::Refused {
            status: 502,
            code: None,
            message: None,
            url: "http://127.0.0.1:1/v1/decide".to_owned(),
            body: "<html>bad gateway</html>".to_owned(),
        };
        assert_eq!(
            bare.to_string(),
            "the Mandate server answered 502 Bad Gateway"
        );
    }
}
