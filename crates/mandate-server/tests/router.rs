//! Handler-level tests: the router called in process, without a socket.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use mandate_ledger::ReceiptBundle;
use mandate_server::router;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;
use common::state;

async fn app(max_body_bytes: usize) -> (axum::Router, tempfile::TempDir) {
    let (state, dir) = state().await;
    (router(state, max_body_bytes), dir)
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
    let (status, body) = post(app(1 << 20).await.0, read_inbox().to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["decision"], "allow");
    assert_eq!(body["policies"], json!(["declared-tools"]));
}

#[tokio::test]
async fn the_server_clock_is_not_the_callers_to_set() {
    let mut request = read_inbox();
    request["context"]["time"] = json!("2026-01-01T00:00:00Z");
    let (status, body) = post(app(1 << 20).await.0, request.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "field_not_allowed");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let mut request = read_inbox();
    request["arguments"] = json!({"blob": "x".repeat(4096)});
    let (status, body) = post(app(1024).await.0, request.to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "body_too_large");
}

#[tokio::test]
async fn duplicate_keys_are_refused_at_any_depth() {
    // serde would decide on the last `to`; a tool whose parser keeps the
    // first would send to mallory.
    let body = r#"{"principal":{"id":"spiffe://example.org/agent/mailer"},
        "action":{"server":"mail","tool":"send_email"},
        "arguments":{"to":"mallory@evil.example","to":"carol@example.com"},
        "context":{"task":{"tools":["send_email"],"params":{"allowed_recipients":["carol@example.com"]}}}}"#;
    let (status, body) = post(app(1 << 20).await.0, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_json");
    assert_eq!(
        body["message"],
        "the body is not valid JSON for Mandate: duplicate key `to` in `arguments`: send each key once"
    );
    for (text, at) in [
        (
            r#"{"principal":{"id":"a"},"action":{"server":"s","tool":"t"},"action":{"server":"s","tool":"u"}}"#,
            "duplicate key `action` in the top-level object",
        ),
        (
            r#"{"principal":{"id":"a","id":"b"},"action":{"server":"s","tool":"t"}}"#,
            "duplicate key `id` in `principal`",
        ),
        (
            r#"{"principal":{"id":"a"},"action":{"server":"s","tool":"t"},"context":{"session":{"history":[{"tool":"x","decision":"allow","decision":"deny"}]}}}"#,
            "duplicate key `decision` in `context.session.history[0]`",
        ),
    ] {
        let (status, body) = post(app(1 << 20).await.0, text).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(body["message"].as_str().unwrap().contains(at), "{body}");
    }
    // Every JSON body of the API is read the same way.
    let request = Request::post("/v1/approvals/some-id/withdraw")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"reason":"cancelled","reason":"approved by bob"}"#,
        ))
        .unwrap();
    let response = app(1 << 20).await.0.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"], "invalid_json", "{body}");
}

#[tokio::test]
async fn requests_are_objects_not_positional_arrays() {
    let positional = json!([
        {"id": "spiffe://example.org/agent/mailer"},
        {"server": "mail", "tool": "read_inbox", "annotations": {"readOnlyHint": true, "openWorldHint": false}},
        {},
        {"task": {"tools": ["read_inbox"]}}
    ]);
    let (status, body) = post(app(1 << 20).await.0, positional.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("must be a JSON object"),
        "{body}"
    );
    // Nested structs too: `principal` as `["id"]`, a history entry as
    // `[tool, decision]`.
    for (field, value) in [
        ("principal", json!(["spiffe://example.org/agent/mailer"])),
        ("context", json!([{"tools": ["read_inbox"]}])),
    ] {
        let mut request = read_inbox();
        request[field] = value;
        let (status, body) = post(app(1 << 20).await.0, request.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            body["message"],
            format!(
                "the body is JSON but not a valid request: {field}: invalid type: sequence, expected a JSON object with named fields"
            )
        );
    }
    let mut request = read_inbox();
    request["context"]["session"] = json!({"history": [["read_inbox", "allow"]]});
    let (status, body) = post(app(1 << 20).await.0, request.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("context.session.history[0]: invalid type: sequence"),
        "{body}"
    );
}

#[tokio::test]
async fn integers_a_receipt_cannot_record_exactly_are_refused_with_their_path() {
    // The receipt's canonical JSON (RFC 8785) would record 2^53 + 1 as 2^53.
    let mut request = read_inbox();
    request["arguments"] = json!({"message": {"ids": [1, 9_007_199_254_740_993_u64]}});
    let (status, body) = post(app(1 << 20).await.0, request.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("`arguments.message.ids[1]`: the integer 9007199254740993 is beyond"),
        "{body}"
    );
    // The largest exact integer is decided, and recorded as sent.
    request["arguments"] = json!({"n": 9_007_199_254_740_991_u64});
    let (state, _dir) = state().await;
    let (status, body) = post(router(state.clone(), 1 << 20), request.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, receipt) = get(
        router(state, 1 << 20),
        &format!("/v1/receipts/{}", body["decision_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        receipt["receipt"]["arguments"]["n"],
        json!(9_007_199_254_740_991_u64),
        "{receipt}"
    );
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let mut request = read_inbox();
    request["action"]["server"] = json!("a/b");
    let (status, body) = post(app(1 << 20).await.0, request.to_string()).await;
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
        .await
        .0
        .oneshot(Request::get("/v2/nope").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"], "not_found");
}

async fn get(app: axum::Router, uri: &str) -> (StatusCode, Value) {
    let response = app
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn every_decision_has_a_receipt_that_verifies_with_the_log_key() {
    let (state, _dir) = state().await;
    let app = router(state.clone(), 1 << 20);
    let mut request = read_inbox();
    request["arguments"] = json!({"folder": "inbox", "body": "the secret text"});
    let (status, decision) = post(app.clone(), request.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(decision["receipt_index"], 0);
    let id = decision["decision_id"].as_str().unwrap();

    let (status, body) = get(app.clone(), &format!("/v1/receipts/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let bundle: ReceiptBundle = serde_json::from_value(body.clone()).unwrap();
    let checkpoint = bundle.verify(state.ledger().verifier()).unwrap();
    assert_eq!(checkpoint.size, 1);
    let receipt = &body["receipt"];
    assert_eq!(receipt["decision_id"], id);
    assert_eq!(receipt["decision"], decision["decision"]);
    assert_eq!(receipt["call"]["tool"], "read_inbox");
    assert_eq!(receipt["arguments"]["folder"], "inbox");
    // A redacted path is kept only as a digest.
    assert!(receipt["arguments"]["body"]["redacted_sha256"].is_string());
    assert!(!body.to_string().contains("the secret text"));

    // A name twice in the receipt: the signature verifies over the last
    // value (serde's), a reader keeping the first sees a deny. Refused.
    let text = body
        .to_string()
        .replacen(r#""receipt":{"#, r#""receipt":{"decision":"deny","#, 1);
    let forged: ReceiptBundle = serde_json::from_str(&text).unwrap();
    let err = forged.verify(state.ledger().verifier()).unwrap_err();
    assert!(
        err.to_string().contains("duplicate key `decision`"),
        "{err}"
    );

    let (status, body) = get(app.clone(), "/v1/receipts/no-such-decision").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "receipt_not_found");
}

#[tokio::test]
async fn a_decision_whose_receipt_cannot_be_recorded_is_refused() {
    let (state, _dir) = state().await;
    let app = router(state.clone(), 1 << 20);
    state.ledger().close().await.unwrap();
    let (status, body) = post(app, read_inbox().to_string()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "receipt_unavailable");
    assert!(
        body.get("decision").is_none(),
        "no decision leaves without its receipt"
    );
}
