//! A typed client of Mandate's decision API, for enforcement points.
//!
//! Requests and answers are `mandate-core`'s own wire types
//! ([`DecisionRequest`], [`DecisionResponse`], [`ApprovalStatus`]), the
//! ones the server parses and writes, so a change to the contract is a
//! compile error here rather than every call failing closed at run time.
//! Every method fails with a [`ClientError`] on anything but the expected
//! answer; an enforcement point treats any error as a deny.
//!
//! ```no_run
//! # async fn run(request: mandate_core::DecisionRequest) -> Result<(), mandate_client::ClientError> {
//! let client = mandate_client::Client::new("http://127.0.0.1:8181", reqwest::Client::new());
//! let answer = client.decide(&request, Some("mnd_cal_…")).await?;
//! println!("{}", answer.decision);
//! # Ok(()) }
//! ```

use std::time::Duration;

use mandate_core::{ApprovalStatus, DecisionRequest, DecisionResponse};
use reqwest::{RequestBuilder, StatusCode};
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
    #[error("the Mandate server's answer was cut off ({0})")]
    CutOff(String),
    /// The server answered with an error status.
    #[error("{}", refused_text(*.status, code.as_deref(), message.as_deref()))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's error code (`invalid_token`, …), when the body has one.
        code: Option<String>,
        /// The API's message, when the body has one.
        message: Option<String>,
    },
    /// A success whose body is not the expected type.
    #[error("the Mandate server's answer cannot be read ({0})")]
    Unreadable(String),
    /// An id that cannot be one path segment (empty, `.` or `..`): nothing
    /// was sent.
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

    /// `POST /v1/decide`: the decision on `request`, presented with
    /// `bearer` (a task credential, or a caller's token). A deny is an
    /// answer; an error means no decision was made.
    pub async fn decide(
        &self,
        request: &DecisionRequest,
        bearer: Option<&str>,
    ) -> Result<DecisionResponse, ClientError> {
        let request = self
            .http
            .post(self.url(&["v1", "decide"])?)
            .timeout(self.timeout)
            .json(request);
        self.send(with_bearer(request, bearer)).await
    }

    /// `GET /v1/approvals/{id}?wait=…`: the approval's state once it is no
    /// longer pending, or when `wait` (whole seconds, at least one) ends.
    /// The status needs no token.
    pub async fn approval(&self, id: &str, wait: Duration) -> Result<ApprovalState, ClientError> {
        let wait = wait.as_secs().max(1);
        let request = self
            .http
            .get(self.url(&["v1", "approvals", id])?)
            .query(&[("wait", format!("{wait}s"))])
            .timeout(self.timeout + Duration::from_secs(wait));
        self.send(request).await
    }

    /// `POST /v1/approvals/{id}/withdraw`: the requester no longer waits
    /// for approval `id`, because of `reason`. Under a task credential,
    /// `bearer` must be the one the approval was asked under.
    pub async fn withdraw(
        &self,
        id: &str,
        reason: &str,
        bearer: Option<&str>,
    ) -> Result<(), ClientError> {
        #[derive(Serialize)]
        struct Withdrawal<'a> {
            reason: &'a str,
        }
        let request = self
            .http
            .post(self.url(&["v1", "approvals", id, "withdraw"])?)
            .timeout(self.timeout)
            .json(&Withdrawal { reason });
        self.send::<serde::de::IgnoredAny>(with_bearer(request, bearer))
            .await
            .map(|_| ())
    }

    /// `POST /v1/decisions/{id}/result`: what the call allowed by decision
    /// `decision_id` returned, under the task credential it was decided
    /// under.
    pub async fn report_result(
        &self,
        decision_id: &str,
        outcome: CallOutcome,
        credential: &str,
    ) -> Result<(), ClientError> {
        #[derive(Serialize)]
        struct Report {
            status: CallOutcome,
        }
        let request = self
            .http
            .post(self.url(&["v1", "decisions", decision_id, "result"])?)
            .timeout(self.timeout)
            .bearer_auth(credential)
            .json(&Report { status: outcome });
        self.send::<serde::de::IgnoredAny>(request)
            .await
            .map(|_| ())
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
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::CutOff(error_chain(&e)))?;
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
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unreadable(e.to_string()))
    }
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
    fn refusals_say_the_status_and_the_servers_words() {
        let refused = ClientError::Refused {
            status: 401,
            code: Some("invalid_token".to_owned()),
            message: Some("the credential has expired".to_owned()),
        };
        assert_eq!(
            refused.to_string(),
            "the Mandate server answered 401 Unauthorized `invalid_token`: the credential has expired"
        );
        let bare = ClientError::Refused {
            status: 502,
            code: None,
            message: None,
        };
        assert_eq!(
            bare.to_string(),
            "the Mandate server answered 502 Bad Gateway"
        );
    }
}
