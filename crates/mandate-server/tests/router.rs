//! Handler-level tests: the router called in process, without a socket.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use http_body_util::BodyExt;
use mandate_server::policy_dir::PackSources;
use mandate_server::{AppState, router};
use serde_json::{Value, json};
use tower::ServiceExt;

fn app(max_body_bytes: usize) -> axum::Router {
    let pack = PackSources::example().load().unwrap();
    router(
        AppState::new(pack, "<example>".into(), Utc::now()),
        max_body_bytes,
    )
}

async fn post(app: axum::Router, body: impl Into<Body>) -> (StatusCode, Value) {
    let request = Request::post("/v1/decide")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn read_inbox() -> Value {
    json!({
        "principal": {"id": "spiffe://example.org/agent/mailer"},
        "action": {"server": "mail", "tool": "read_inbox", "annotations": {"readOnlyHint": true, "openWorldHint": false}},
        "context": {"task": {"tools": ["read_inbox"]}}
    })
}

#[tokio::test]
async fn decides_a_valid_request() {
    let (status, body) = post(app(1 << 20), read_inbox().to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["decision"], "allow");
    assert_eq!(body["policies"], json!(["declared-tools"]));
}

#[tokio::test]
async fn the_server_clock_is_not_the_callers_to_set() {
    let mut request = read_inbox();
    request["context"]["time"] = json!("2026-01-01T00:00:00Z");
    let (status, body) = post(app(1 << 20), request.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "field_not_allowed");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let mut request = read_inbox();
    request["arguments"] = json!({"blob": "x".repeat(4096)});
    let (status, body) = post(app(1024), request.to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "body_too_large");
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let mut request = read_inbox();
    request["action"]["server"] = json!("a/b");
    let (status, body) = post(app(1 << 20), request.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["message"].as_str().unwrap().contains("action.server"),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_routes_answer_in_the_api_error_format() {
    let response = app(1024)
        .oneshot(Request::get("/v2/nope").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"], "not_found");
}
