//! The gRPC front ends against a real `mandate serve`: the decision API
//! over gRPC decides as `POST /v1/decide` does (same decisions, same
//! receipts, same refusals), reflection describes it, and the Envoy
//! ext_authz service turns routed HTTP requests into decisions with
//! receipts, answering Envoy as documented. The clients are tonic's,
//! generated from Mandate's protos, Envoy's published protos
//! (envoy-types) and gRPC's reflection protos.

// Tests assert by panicking, and index JSON freely.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::collections::HashMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use mandate_grpc::pb;
use mandate_grpc::pb::decision_service_client::DecisionServiceClient;
use prost_types::{Struct, Value as PbValue, value::Kind};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;
use tonic::transport::Channel;
use util::tasks::{Gateway, HUMAN, ROOT_AGENT, gateway_with, task_of};

const BOB: &str = "bob@example.com";
const BOB_TOKEN: &str = "mnd_apr_bob-grpc-test-token-0123456789abcdef";

/// The routes the ext_authz tests use: a mail API in front of which Envoy
/// asks Mandate.
const ROUTES: &str = r#"
[[ext_authz_routes]]
method = "POST"
path = "/mail/{mailbox}/send"
server = "mail"
tool = "send_email"
arguments = { mailbox = "path.mailbox", to = "body.to", subject = "body.message.subject", trace = "header.x-trace", priority = "query.priority" }
annotations = { readOnlyHint = false, destructiveHint = false, openWorldHint = false }

[[ext_authz_routes]]
method = "DELETE"
path = "/mail/{mailbox}/messages/{id}"
host = "mail.internal"
server = "mail"
tool = "delete_email"
arguments = { id = "path.id" }
annotations = { readOnlyHint = false, destructiveHint = true, openWorldHint = false }

[[ext_authz_routes]]
method = "GET"
path = "/files/{*path}"
server = "files"
tool = "read_file"
arguments = { path = "path.path" }
annotations = { readOnlyHint = true }
"#;

fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A gateway with both gRPC front ends on free ports, an approver, and the
/// test routes.
fn gateway() -> Gateway {
    gateway_with(&format!(
        "grpc_listen = \"127.0.0.1:0\"\next_authz_listen = \"127.0.0.1:0\"\n\n\
         [[approvers]]\nname = \"{BOB}\"\ntoken_sha256 = \"{}\"\n{ROUTES}",
        sha256_hex(BOB_TOKEN)
    ))
}

/// Where the gateway's `service` gRPC front end listens, from its log.
fn grpc_address(gw: &Gateway, service: &str) -> SocketAddr {
    gw.server
        .log_lines()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| {
            line["fields"]["message"] == "gRPC front end is listening"
                && line["fields"]["service"] == service
        })
        .and_then(|line| line["fields"]["address"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no {service} gRPC address in the log"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn channel(rt: &tokio::runtime::Runtime, address: SocketAddr) -> Channel {
    rt.block_on(
        Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect(),
    )
    .unwrap()
}

/// A JSON object as a protobuf `Struct`.
fn pb_struct(value: &Value) -> Struct {
    let Value::Object(object) = value else {
        panic!("not an object: {value}")
    };
    Struct {
        fields: object
            .iter()
            .map(|(k, v)| (k.clone(), pb_value(v)))
            .collect(),
    }
}

fn pb_value(value: &Value) -> PbValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(pb_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(pb_struct(value)),
    };
    PbValue { kind: Some(kind) }
}

/// The HTTP API's decision request as the gRPC message.
fn decide_message(request: &Value) -> pb::DecideRequest {
    let principal = &request["principal"];
    let action = &request["action"];
    pb::DecideRequest {
        principal: Some(pb::Principal {
            id: principal["id"].as_str().unwrap().to_owned(),
            on_behalf_of: principal["on_behalf_of"].as_str().map(str::to_owned),
            attributes: principal.get("attributes").map(pb_struct),
        }),
        action: Some(pb::ToolCall {
            server: action["server"].as_str().unwrap().to_owned(),
            tool: action["tool"].as_str().unwrap().to_owned(),
            annotations: action.get("annotations").map(pb_struct),
        }),
        arguments: request.get("arguments").map(pb_struct),
        context: request.get("context").map(pb_struct),
        approval_id: request["approval_id"].as_str().map(str::to_owned),
    }
}

/// Decides `request` over gRPC, with `bearer` as the `authorization`
/// metadata.
fn decide_grpc(
    rt: &tokio::runtime::Runtime,
    channel: &Channel,
    bearer: Option<&str>,
    message: pb::DecideRequest,
) -> Result<pb::DecideResponse, tonic::Status> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = bearer {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut client = DecisionServiceClient::new(channel.clone());
    rt.block_on(client.decide(request))
        .map(tonic::Response::into_inner)
}

/// The receipt of `decision_id`, asserting there is one.
fn receipt_of(gw: &Gateway, decision_id: &str) -> Value {
    let reply = gw.server.call(
        Method::GET,
        &format!("/v1/receipts/{decision_id}"),
        None,
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["receipt"].clone()
}

/// The receipt of `decision_id`, without what differs between any two
/// decisions: ids, times, positions, and the context's digest (the context
/// holds the time and, under a task, the history, which the first of two
/// decisions has just grown).
fn receipt_shape(gw: &Gateway, decision_id: &str) -> Value {
    let mut receipt = receipt_of(gw, decision_id);
    let object = receipt.as_object_mut().unwrap();
    for varying in ["index", "decision_id", "time", "context_sha256"] {
        object.remove(varying);
    }
    receipt
}

fn log_size(gw: &Gateway) -> u64 {
    let health = gw.server.call(Method::GET, "/v1/health", None, None).json();
    health["receipts"]["size"]
        .as_u64()
        .unwrap_or_else(|| panic!("no receipt count in {health}"))
}

fn mail_task(gw: &Gateway) -> (String, String) {
    let task = mandate_core::api::StartTask {
        params: json!({"allowed_recipients": ["carol@example.com"]})
            .as_object()
            .unwrap()
            .clone(),
        ..task_of(
            "answer customer questions",
            &["mail/send_email", "mail/delete_email"],
            600,
        )
    };
    let started = gw.start_task_of(ROOT_AGENT, &task);
    (started.task_id.to_string(), started.credential)
}

#[test]
fn the_same_request_gets_the_same_decision_and_receipt_over_grpc_and_http() {
    let gw = gateway();
    let rt = runtime();
    let channel = channel(&rt, grpc_address(&gw, "decision"));
    let (_, credential) = mail_task(&gw);
    let send = |to: &str| {
        json!({
            "principal": {"id": ROOT_AGENT},
            "action": {"server": "mail", "tool": "send_email",
                       "annotations": {"readOnlyHint": false, "destructiveHint": false, "openWorldHint": false}},
            "arguments": {"to": to, "subject": "your order", "copies": 2, "weight": 1.5},
        })
    };
    for (request, outcome) in [
        (send("carol@example.com"), "allow"),
        (send("mallory@example.com"), "deny"),
    ] {
        let http = gw.decide(&credential, &request).json();
        assert_eq!(http["decision"], outcome, "{http}");
        let grpc = decide_grpc(&rt, &channel, Some(&credential), decide_message(&request)).unwrap();
        let expected = if outcome == "allow" {
            pb::Decision::Allow
        } else {
            pb::Decision::Deny
        };
        assert_eq!(grpc.decision(), expected);
        assert_eq!(json!(grpc.policies), http["policies"]);
        assert_eq!(json!(grpc.reasons), http["reasons"]);
        assert!(grpc.receipt_index.is_some());
        assert_ne!(grpc.decision_id, http["decision_id"].as_str().unwrap());
        assert_eq!(
            receipt_shape(&gw, &grpc.decision_id),
            receipt_shape(&gw, http["decision_id"].as_str().unwrap()),
            "receipts of {outcome}"
        );
    }

    // Without a credential (loopback lets anyone decide by default), the
    // request's own context is decided alike too.
    let request = json!({
        "principal": {"id": ROOT_AGENT, "on_behalf_of": HUMAN},
        "action": {"server": "mail", "tool": "read_inbox", "annotations": {"readOnlyHint": true}},
        "arguments": {"folder": "inbox"},
        "context": {"task": {"id": "task-1", "intent": "read", "tools": ["read_inbox"]}},
    });
    let http = gw
        .server
        .call(Method::POST, "/v1/decide", None, Some(&request))
        .json();
    let grpc = decide_grpc(&rt, &channel, None, decide_message(&request)).unwrap();
    assert_eq!(http["decision"], "allow", "{http}");
    assert_eq!(grpc.decision(), pb::Decision::Allow);
    assert_eq!(
        receipt_shape(&gw, &grpc.decision_id),
        receipt_shape(&gw, http["decision_id"].as_str().unwrap())
    );
}

#[test]
fn grpc_refuses_what_http_refuses_with_the_same_codes_and_changes_nothing() {
    let gw = gateway();
    let rt = runtime();
    let channel = channel(&rt, grpc_address(&gw, "decision"));
    let (_, credential) = mail_task(&gw);
    let send = json!({
        "principal": {"id": ROOT_AGENT},
        "action": {"server": "mail", "tool": "send_email",
                   "annotations": {"destructiveHint": false, "openWorldHint": false}},
        "arguments": {"to": "carol@example.com"},
    });
    let before = log_size(&gw);
    let refused = |bearer: Option<&str>, message: pb::DecideRequest| {
        decide_grpc(&rt, &channel, bearer, message).expect_err("refused")
    };
    let code_of = |status: &tonic::Status| {
        status
            .metadata()
            .get(mandate_grpc::ERROR_CODE_METADATA)
            .map(|v| v.to_str().unwrap().to_owned())
    };

    // A forged credential: as HTTP, 401 invalid_token.
    let forged = format!("{}x", &credential[..credential.len() - 1]);
    let status = refused(Some(&forged), decide_message(&send));
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(code_of(&status).as_deref(), Some("invalid_token"));
    let http = gw.decide(&forged, &send);
    http.assert_error(401, "invalid_token");

    // An identity token where a credential belongs.
    let jwt = gw.idp.token(ROOT_AGENT);
    let status = refused(Some(&jwt), decide_message(&send));
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(code_of(&status).as_deref(), Some("invalid_token"));
    assert!(
        status.message().contains("not an identity token"),
        "{status:?}"
    );

    // Another scheme.
    let mut basic = tonic::Request::new(decide_message(&send));
    basic
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
    let status = rt
        .block_on(DecisionServiceClient::new(channel.clone()).decide(basic))
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // A field the server fills, under a credential.
    let mut timed = send.clone();
    timed["context"] = json!({"time": "2026-01-01T00:00:00Z"});
    let status = refused(Some(&credential), decide_message(&timed));
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(code_of(&status).as_deref(), Some("field_not_allowed"));
    gw.decide(&credential, &timed)
        .assert_error(422, "field_not_allowed");

    // An unknown field, a name outside its grammar: the HTTP API's parser.
    let mut unknown = send.clone();
    unknown["context"] = json!({"tusk": {}});
    let status = refused(None, decide_message(&unknown));
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(code_of(&status).as_deref(), Some("invalid_request"));
    assert!(status.message().contains("tusk"), "{status:?}");
    let mut bad_tool = decide_message(&send);
    bad_tool.action.as_mut().unwrap().tool = "send email".to_owned();
    let status = refused(None, bad_tool);
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // No principal; a number JSON cannot carry.
    let mut headless = decide_message(&send);
    headless.principal = None;
    let status = refused(None, headless);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("`principal` is required"));
    let mut nan = decide_message(&send);
    nan.arguments.as_mut().unwrap().fields.insert(
        "amount".into(),
        PbValue {
            kind: Some(Kind::NumberValue(f64::NAN)),
        },
    );
    let status = refused(None, nan);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("`arguments.amount`"),
        "{status:?}"
    );

    // A message over max_body_bytes (1 MiB by default).
    let mut large = decide_message(&send);
    large.arguments.as_mut().unwrap().fields.insert(
        "body".into(),
        PbValue {
            kind: Some(Kind::StringValue("x".repeat(2 * 1024 * 1024))),
        },
    );
    let status = refused(None, large);
    // tonic's answer to a message over the limit.
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");

    assert_eq!(log_size(&gw), before, "a refused request wrote a receipt");
    // Counted as the HTTP API's refusals are, by front end.
    let metrics = gw.server.call(Method::GET, "/metrics", None, None).body;
    for line in [
        r#"mandate_requests_rejected_total{error="invalid_token",front_end="grpc"} 2"#,
        r#"mandate_requests_rejected_total{error="missing_token",front_end="grpc"} 1"#,
        r#"mandate_requests_rejected_total{error="field_not_allowed",front_end="grpc"} 1"#,
        r#"mandate_requests_rejected_total{error="invalid_token",front_end="http"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    // And the service still decides.
    let allowed = decide_grpc(&rt, &channel, Some(&credential), decide_message(&send)).unwrap();
    assert_eq!(allowed.decision(), pb::Decision::Allow);
    assert_eq!(log_size(&gw), before + 1);
}

#[test]
fn reflection_describes_the_decision_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let gw = gateway();
    let rt = runtime();
    let channel = channel(&rt, grpc_address(&gw, "decision"));
    let ask = |request: MessageRequest| {
        let mut client = ServerReflectionClient::new(channel.clone());
        rt.block_on(async {
            let outbound = tokio_stream_once(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            });
            let mut answers = client
                .server_reflection_info(outbound)
                .await
                .unwrap()
                .into_inner();
            answers
                .message()
                .await
                .unwrap()
                .unwrap()
                .message_response
                .unwrap()
        })
    };
    let MessageResponse::ListServicesResponse(list) =
        ask(MessageRequest::ListServices(String::new()))
    else {
        panic!("not a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"mandate.v1.DecisionService"), "{names:?}");
    let MessageResponse::FileDescriptorResponse(files) = ask(MessageRequest::FileContainingSymbol(
        "mandate.v1.DecisionService".into(),
    )) else {
        panic!("no descriptor")
    };
    let file: prost_types::FileDescriptorProto =
        prost::Message::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.package(), "mandate.v1");
    let service = &file.service[0];
    assert_eq!(service.method[0].name(), "Decide");
    assert_eq!(service.method[0].input_type(), ".mandate.v1.DecideRequest");
}

/// A stream of one message, for a bidirectional call.
fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> {
    tonic::codegen::tokio_stream::iter([item])
}

/// An HTTP request as Envoy describes it to ext_authz.
fn check(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    host: host.to_owned(),
                    path: path.to_owned(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<HashMap<_, _>>(),
                    body: body.to_owned(),
                    ..HttpRequest::default()
                }),
                ..AttrRequest::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

fn ask_envoy_check(
    rt: &tokio::runtime::Runtime,
    channel: &Channel,
    request: CheckRequest,
) -> CheckResponse {
    let mut client = AuthorizationClient::new(channel.clone());
    rt.block_on(client.check(request)).unwrap().into_inner()
}

/// The answer's status code, and for a denial its HTTP status, headers
/// and JSON body; for an allow, headers added and removed.
struct Answer {
    grpc: i32,
    /// Headers Mandate sets on the upstream request that do not overwrite
    /// the client's own.
    appended: Vec<String>,
    http: Option<i32>,
    headers: HashMap<String, String>,
    removed: Vec<String>,
    body: Value,
}

fn answer(response: CheckResponse) -> Answer {
    let grpc = response.status.as_ref().map_or(-1, |s| s.code);
    let header_pairs =
        |options: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
            options
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect::<HashMap<_, _>>()
        };
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => Answer {
            grpc,
            appended: ok
                .headers
                .iter()
                .filter(|o| o.append_action != HeaderAppendAction::OverwriteIfExistsOrAdd as i32)
                .filter_map(|o| Some(o.header.as_ref()?.key.clone()))
                .collect(),
            http: None,
            headers: header_pairs(&ok.headers),
            removed: ok.headers_to_remove,
            body: Value::Null,
        },
        Some(HttpResponse::DeniedResponse(denied)) => Answer {
            grpc,
            appended: Vec::new(),
            http: denied.status.map(|s| s.code),
            headers: header_pairs(&denied.headers),
            removed: Vec::new(),
            body: serde_json::from_str(&denied.body).unwrap(),
        },
        other => panic!("no HTTP response in the answer: {other:?}"),
    }
}

#[test]
fn ext_authz_decides_routed_requests_with_receipts_and_answers_envoy() {
    let gw = gateway();
    let rt = runtime();
    let channel = channel(&rt, grpc_address(&gw, "ext_authz"));
    let (_, credential) = mail_task(&gw);
    let bearer = format!("Bearer {credential}");
    let json_headers = |extra: &[(&'static str, &'static str)]| {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend_from_slice(extra);
        headers
    };

    // Allowed: the upstream request gets the decision and loses the
    // credential; the receipt holds the arguments the route read.
    let body = r#"{"to": "carol@example.com", "message": {"subject": "your order"}}"#;
    let mut headers = json_headers(&[("x-trace", "t-1")]);
    headers.push(("authorization", bearer.as_str()));
    let allowed = answer(ask_envoy_check(
        &rt,
        &channel,
        check(
            "POST",
            "mail.internal",
            "/mail/support%20desk/send?priority=high",
            &headers,
            body,
        ),
    ));
    assert_eq!(allowed.grpc, 0, "allowed: {:?}", allowed.body);
    let decision_id = allowed.headers["x-mandate-decision-id"].clone();
    assert!(allowed.headers.contains_key("x-mandate-receipt-index"));
    // A client's own `x-mandate-decision-id` would be overwritten, not kept.
    assert!(allowed.appended.is_empty(), "{:?}", allowed.appended);
    assert!(allowed.removed.contains(&"authorization".to_owned()));
    assert!(
        allowed
            .removed
            .contains(&"x-mandate-approval-id".to_owned())
    );
    let receipt = receipt_of(&gw, &decision_id);
    assert_eq!(receipt["decision"], "allow", "{receipt}");
    assert_eq!(receipt["principal"]["id"], ROOT_AGENT);
    assert_eq!(
        receipt["arguments"],
        json!({"mailbox": "support desk", "to": "carol@example.com", "subject": "your order",
               "trace": "t-1", "priority": "high"})
    );
    // The same call through the HTTP API: the same decision and receipt.
    let same_call = json!({
        "principal": {"id": ROOT_AGENT},
        "action": {"server": "mail", "tool": "send_email",
                   "annotations": {"readOnlyHint": false, "destructiveHint": false, "openWorldHint": false}},
        "arguments": receipt["arguments"],
    });
    let http = gw.decide(&credential, &same_call).json();
    assert_eq!(http["decision"], "allow", "{http}");
    assert_eq!(
        receipt_shape(&gw, http["decision_id"].as_str().unwrap()),
        receipt_shape(&gw, &decision_id),
        "the receipts of one call through HTTP and through ext_authz"
    );

    // Denied by policy: 403 with the decision, and its receipt.
    let denied = answer(ask_envoy_check(
        &rt,
        &channel,
        check(
            "POST",
            "mail.internal",
            "/mail/desk/send",
            &headers,
            r#"{"to": "mallory@example.com"}"#,
        ),
    ));
    assert_eq!(denied.grpc, tonic::Code::PermissionDenied as i32);
    assert_eq!(denied.http, Some(403));
    assert_eq!(denied.body["decision"], "deny");
    assert_eq!(denied.body["policies"], json!(["recipient-allowed"]));
    receipt_of(&gw, denied.body["decision_id"].as_str().unwrap());

    // A tool the credential does not hold: denied before any policy, with
    // a receipt.
    let files = answer(ask_envoy_check(
        &rt,
        &channel,
        check(
            "GET",
            "files.internal",
            "/files/etc/passwd",
            &[("authorization", bearer.as_str())],
            "",
        ),
    ));
    assert_eq!(files.http, Some(403));
    assert_eq!(files.body["policies"], json!(["mandate:credential-scope"]));
    assert!(files.body["receipt_index"].is_u64());

    // No decision, no receipt: no credential, a refused one, no route, an
    // ambiguous path, a repeated query parameter, a body Envoy cut short.
    let before = log_size(&gw);
    let no_token = answer(ask_envoy_check(
        &rt,
        &channel,
        check(
            "POST",
            "mail.internal",
            "/mail/desk/send",
            &json_headers(&[]),
            body,
        ),
    ));
    assert_eq!(no_token.grpc, tonic::Code::Unauthenticated as i32);
    assert_eq!(no_token.http, Some(401));
    assert!(no_token.headers["www-authenticate"].starts_with("Bearer"));
    assert_eq!(no_token.body["error"], "invalid_token");
    let forged = format!("Bearer {}x", &credential[..credential.len() - 1]);
    let refused = answer(ask_envoy_check(
        &rt,
        &channel,
        check(
            "POST",
            "mail.internal",
            "/mail/desk/send",
            &[("authorization", forged.as_str())],
            body,
        ),
    ));
    assert_eq!(refused.http, Some(401));
    let mut partial = headers.clone();
    partial.push(("x-envoy-auth-partial-body", "true"));
    let cases = [
        ("PUT", "/mail/desk/send", &headers, 403, "no_route"),
        (
            "POST",
            "/mail/desk/../other/send",
            &headers,
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/mail/desk/send?priority=a&priority=b",
            &headers,
            400,
            "invalid_request",
        ),
        ("POST", "/mail/desk/send", &partial, 413, "invalid_request"),
    ];
    for (method, path, headers, status, code) in cases {
        let refused = answer(ask_envoy_check(
            &rt,
            &channel,
            check(method, "mail.internal", path, headers, body),
        ));
        assert_eq!(
            refused.http,
            Some(status),
            "{method} {path}: {:?}",
            refused.body
        );
        assert_eq!(refused.body["error"], code, "{method} {path}");
        assert_ne!(refused.grpc, 0);
    }
    // The delete route is for one host only.
    let elsewhere = answer(ask_envoy_check(
        &rt,
        &channel,
        check(
            "DELETE",
            "mail.example",
            "/mail/desk/messages/m-1",
            &[("authorization", bearer.as_str())],
            "",
        ),
    ));
    assert_eq!(elsewhere.body["error"], "no_route");
    // A duplicate key in the body: the HTTP API's parser refuses it.
    let duplicate = answer(ask_envoy_check(
        &rt,
        &channel,
        check(
            "POST",
            "mail.internal",
            "/mail/desk/send",
            &headers,
            r#"{"to": "carol@example.com", "to": "mallory@example.com"}"#,
        ),
    ));
    assert_eq!(duplicate.http, Some(400));
    assert_eq!(duplicate.body["error"], "invalid_json");
    assert_eq!(
        log_size(&gw),
        before,
        "a check without a decision wrote a receipt"
    );
    let metrics = gw.server.call(Method::GET, "/metrics", None, None).body;
    let no_route = r#"mandate_requests_rejected_total{error="no_route",front_end="ext_authz"} 2"#;
    assert!(metrics.lines().any(|l| l == no_route), "{metrics}");
}

#[test]
fn ext_authz_approval_required_then_released_by_the_approval_once() {
    let gw = gateway();
    let rt = runtime();
    let channel = channel(&rt, grpc_address(&gw, "ext_authz"));
    let (_, credential) = mail_task(&gw);
    let bearer = format!("Bearer {credential}");
    let delete = |approval: Option<&str>| {
        let mut headers = vec![("authorization", bearer.as_str())];
        if let Some(id) = approval {
            headers.push(("x-mandate-approval-id", id));
        }
        answer(ask_envoy_check(
            &rt,
            &channel,
            check(
                "DELETE",
                "mail.internal:8443",
                "/mail/desk/messages/m-1042",
                &headers,
                "",
            ),
        ))
    };
    let asked = delete(None);
    assert_eq!(asked.http, Some(403));
    assert_eq!(
        asked.body["decision"], "approval_required",
        "{:?}",
        asked.body
    );
    assert_eq!(
        asked.body["policies"],
        json!(["destructive-needs-approval"])
    );
    let approval = asked.headers["x-mandate-approval-id"].clone();
    assert_eq!(asked.body["approval_id"], approval.as_str());

    // Not yet approved: the same request with the id is still not allowed.
    assert_ne!(delete(Some(&approval)).grpc, 0);

    let approved = gw.server.call(
        Method::POST,
        &format!("/v1/approvals/{approval}/approve"),
        Some(BOB_TOKEN),
        Some(&json!({"reason": "that message is spam"})),
    );
    assert_eq!(approved.status, 200, "{}", approved.body);
    let released = delete(Some(&approval));
    assert_eq!(released.grpc, 0, "{:?}", released.body);
    let decision_id = &released.headers["x-mandate-decision-id"];
    let receipt = receipt_of(&gw, decision_id);
    assert_eq!(receipt["decision"], "allow");
    assert_eq!(receipt["approver"], BOB);
    // Once: the approval is used.
    let again = delete(Some(&approval));
    assert_ne!(again.grpc, 0);
    assert_ne!(again.body["decision"], "allow");
}

#[test]
fn a_route_outside_its_grammar_or_a_listener_without_routes_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    for (config, expected) in [
        (
            "ext_authz_listen = \"127.0.0.1:0\"\n",
            "no `[[ext_authz_routes]]` are configured",
        ),
        (
            "[[ext_authz_routes]]\nmethod = \"post\"\npath = \"/a\"\nserver = \"mail\"\ntool = \"send_email\"\n",
            "ext_authz route 0 (post /a): method `post` is not an upper-case HTTP method",
        ),
        (
            "[[ext_authz_routes]]\nmethod = \"POST\"\npath = \"/a/{id}\"\nserver = \"mail\"\ntool = \"send_email\"\narguments = { id = \"path.nope\" }\n",
            "the path template has no `{nope}`",
        ),
        (
            "[[ext_authz_routes]]\nmethod = \"POST\"\npath = \"/a\"\nserver = \"mail\"\ntool = \"send_email\"\nverb = \"x\"\n",
            "unknown key `verb`, expected one of `method`, `path`",
        ),
    ] {
        let path = dir.path().join("mandate.toml");
        std::fs::write(&path, config).unwrap();
        let (status, stderr) = util::Launch::serve(&dir.path().join("data"))
            .arg("--config")
            .arg(&path)
            .run_to_exit();
        assert_eq!(status.code(), Some(2), "{config}: {stderr}");
        assert!(stderr.contains(expected), "{config}: {stderr}");
        // Refused with the rest of the configuration, before anything is made.
        assert!(!dir.path().join("data").exists(), "{config}");
    }
}
