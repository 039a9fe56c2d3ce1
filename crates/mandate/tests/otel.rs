//! Decision spans exported over OTLP to a real OTLP receiver (oteltest's
//! sink, over gRPC and over HTTP/protobuf, started here): one span per
//! decision, a child of the caller's W3C `traceparent`, with the attributes
//! docs/integrations.md lists; a refusal is an error span; and a collector
//! that is down costs no decision, only dropped spans, counted in /metrics.

// Tests assert by panicking, and index JSON freely.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use util::mcp::{free_port, python};
use util::tasks::{Gateway, ROOT_AGENT, gateway_with, task_of};

/// The caller's trace: a span of its own that the decision is a child of.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// The OTLP receiver, killed on drop; its spans arrive as JSON lines.
struct Sink {
    child: Child,
    spans: Receiver<Value>,
    port: u16,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sink(protocol: &str) -> Sink {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/otel/sink.py");
    let mut child = Command::new(python())
        .args([script, protocol, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (ready_tx, ready) = channel();
    let (spans_tx, spans) = channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if line == "ready" {
                let _ = ready_tx.send(());
            } else if let Ok(span) = serde_json::from_str(&line) {
                let _ = spans_tx.send(span);
            }
        }
    });
    ready
        .recv_timeout(Duration::from_secs(60))
        .expect("the OTLP sink did not start");
    Sink { child, spans, port }
}

impl Sink {
    /// Spans received until `done` holds of them, within a minute.
    fn spans_until(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut spans = Vec::new();
        while !done(&spans) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.spans.recv_timeout(left) {
                Ok(span) => spans.push(span),
                Err(_) => panic!("spans received so far: {spans:#?}"),
            }
        }
        spans
    }
}

fn attribute(span: &Value, key: &str) -> Value {
    let value = &span["attributes"][key];
    value
        .get("stringValue")
        .or_else(|| value.get("intValue"))
        .or_else(|| value.get("arrayValue"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// An id of OTLP JSON (base64) in the hex of W3C trace context.
fn hex(b64: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn gateway_exporting_to(endpoint: &str, protocol: &str) -> Gateway {
    gateway_with(&format!(
        "otel_endpoint = \"{endpoint}\"\notel_protocol = \"{protocol}\"\ngrpc_listen = \"127.0.0.1:0\"\n"
    ))
}

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

fn send_request() -> Value {
    json!({
        "principal": {"id": ROOT_AGENT},
        "action": {"server": "mail", "tool": "send_email",
                   "annotations": {"destructiveHint": false, "openWorldHint": false}},
        "arguments": {"to": "carol@example.com"},
    })
}

fn check_exported(protocol: &str) {
    let sink = sink(protocol);
    let gw = gateway_exporting_to(&format!("http://127.0.0.1:{}", sink.port), protocol);
    let task = mandate_core::api::StartTask {
        params: json!({"allowed_recipients": ["carol@example.com"]})
            .as_object()
            .unwrap()
            .clone(),
        ..task_of("answer customers", &["mail/send_email"], 600)
    };
    let started = gw.start_task_of(ROOT_AGENT, &task);
    let credential = started.credential;
    let client = reqwest::blocking::Client::new();
    let allowed: Value = client
        .post(gw.server.url("/v1/decide"))
        .bearer_auth(&credential)
        .header("traceparent", traceparent())
        .json(&send_request())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    let refused = client
        .post(gw.server.url("/v1/decide"))
        .bearer_auth(format!("{credential}x"))
        .json(&send_request())
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);

    let spans = sink.spans_until(|spans| spans.len() >= 2);
    let decided = spans
        .iter()
        .find(|s| attribute(s, "mandate.decision.outcome") == "allow")
        .unwrap_or_else(|| panic!("no allow span in {spans:#?}"));
    assert_eq!(decided["name"], "mandate.decide");
    assert_eq!(decided["kind"], "SPAN_KIND_SERVER");
    // The caller's trace, as the decision's parent (OTLP JSON ids are base64).
    assert_eq!(hex(&decided["traceId"]), TRACE_ID);
    assert_eq!(hex(&decided["parentSpanId"]), PARENT_ID);
    assert_eq!(attribute(decided, "gen_ai.tool.name"), "send_email");
    assert_eq!(attribute(decided, "gen_ai.operation.name"), "execute_tool");
    assert_eq!(attribute(decided, "mandate.tool.server"), "mail");
    assert_eq!(attribute(decided, "mandate.front_end"), "http");
    assert_eq!(attribute(decided, "http.route"), "/v1/decide");
    assert_eq!(
        attribute(decided, "mandate.decision.id"),
        allowed["decision_id"]
    );
    assert_eq!(
        attribute(decided, "mandate.task.id"),
        started.task_id.to_string().as_str()
    );
    assert_eq!(attribute(decided, "mandate.delegation.depth"), "0");
    assert_eq!(
        attribute(decided, "mandate.receipt.index"),
        allowed["receipt_index"].to_string().as_str()
    );
    assert_eq!(
        decided["attributes"]["mandate.decision.policies"]["arrayValue"]["values"][0]["stringValue"],
        "declared-tools"
    );
    assert_eq!(
        decided["resource"]["service.name"]["stringValue"],
        "mandate"
    );

    let error = spans
        .iter()
        .find(|s| attribute(s, "error.type") != Value::Null)
        .unwrap_or_else(|| panic!("no refused span in {spans:#?}"));
    assert_eq!(attribute(error, "error.type"), "invalid_token");
    assert_eq!(error["status"]["code"], "STATUS_CODE_ERROR");
    assert_eq!(attribute(error, "mandate.decision.outcome"), Value::Null);
}

#[test]
fn decision_spans_reach_an_otlp_receiver_over_grpc() {
    check_exported("grpc");
}

#[test]
fn decision_spans_reach_an_otlp_receiver_over_http() {
    check_exported("http/protobuf");
}

#[test]
fn a_collector_that_is_down_costs_no_decision_and_its_spans_are_counted_dropped() {
    // Nothing listens on this port.
    let gw = gateway_exporting_to(&format!("http://127.0.0.1:{}", free_port()), "grpc");
    let request = json!({
        "principal": {"id": ROOT_AGENT},
        "action": {"server": "mail", "tool": "read_inbox", "annotations": {"readOnlyHint": true}},
        "context": {"task": {"id": "t-1", "intent": "read", "tools": ["read_inbox"]}},
    });
    for _ in 0..5 {
        let reply = gw
            .server
            .call(Method::POST, "/v1/decide", None, Some(&request));
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["decision"], "allow");
    }
    util::poll_until(Duration::from_secs(60), "5 dropped spans", || {
        let metrics = gw.server.call(Method::GET, "/metrics", None, None).body;
        let dropped = metrics
            .lines()
            .find(|l| l.starts_with("mandate_otel_spans_dropped_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        if dropped >= 5 { Ok(()) } else { Err(dropped) }
    });
}

#[test]
fn an_mcp_call_is_one_trace_from_the_client_through_the_gateway_and_the_decision_to_the_server() {
    use util::mcp::{AGENT, Sdk, notes_stdio, peers_dir, require_peers, run_stdio, steps};
    require_peers();
    let sink = sink("grpc");
    let endpoint = format!("http://127.0.0.1:{}", sink.port);
    let pack = peers_dir().join("policies").canonicalize().unwrap();
    let gw = gateway_with(&format!(
        "policies = {:?}\notel_endpoint = \"{endpoint}\"\notel_protocol = \"grpc\"\n",
        pack.display().to_string()
    ));
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[task]\nintent = \"notes\"\ntools = [\"traced_note\"]\n",
    )
    .unwrap();
    // The gateway exports as the standard environment says.
    let mut command = vec![
        "env".to_owned(),
        format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}"),
        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc".to_owned(),
        "OTEL_SERVICE_NAME=mandate-mcp-gateway".to_owned(),
        env!("CARGO_BIN_EXE_mandate").to_owned(),
        "mcp".to_owned(),
        "wrap".to_owned(),
        "--gateway".to_owned(),
        format!("http://{}", gw.server.addr()),
        "--agent".to_owned(),
        AGENT.to_owned(),
        "--session".to_owned(),
        "traced".to_owned(),
        "--name".to_owned(),
        "notes".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
        "--".to_owned(),
    ];
    command.extend(notes_stdio(&notes));
    let plan = json!([{"op": "call", "tool": "traced_note", "arguments": {"text": "hello"},
                       "meta": {"traceparent": traceparent()}}]);
    let out = run_stdio(Sdk::Python, &plan, &command);
    assert_eq!(steps(&out)[0]["text"], "noted", "{out}");

    let spans = sink.spans_until(|spans| {
        spans.iter().any(|s| s["name"] == "tools/call traced_note")
            && spans.iter().any(|s| s["name"] == "mandate.decide")
    });
    let call = spans
        .iter()
        .find(|s| s["name"] == "tools/call traced_note")
        .unwrap();
    let decision = spans
        .iter()
        .find(|s| s["name"] == "mandate.decide")
        .unwrap();
    // One trace: the client's span → the gateway's call span → the decision.
    assert_eq!(call["traceId"], decision["traceId"]);
    assert_eq!(decision["parentSpanId"], call["spanId"], "{spans:#?}");
    assert_eq!(
        call["resource"]["service.name"]["stringValue"],
        "mandate-mcp-gateway"
    );
    assert_eq!(attribute(call, "mcp.method.name"), "tools/call");
    assert_eq!(attribute(call, "gen_ai.tool.name"), "traced_note");
    assert_eq!(attribute(call, "mandate.tool.server"), "notes");
    assert_eq!(attribute(call, "mandate.decision.outcome"), "allow");
    assert_eq!(
        attribute(call, "mandate.decision.id"),
        attribute(decision, "mandate.decision.id")
    );
    // And the upstream server got the call span's context in `_meta`.
    let written = std::fs::read_to_string(&notes).unwrap();
    let sent = written
        .trim()
        .strip_prefix("hello traceparent=")
        .unwrap_or_else(|| panic!("{written}"));
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[1], TRACE_ID);
    let span_id = hex(&call["spanId"]);
    assert_eq!(
        parts[2], span_id,
        "the upstream's parent is the gateway's call span"
    );
}

#[test]
fn the_mcp_proxy_takes_the_trace_context_from_the_request_headers_and_passes_its_own_on() {
    use util::mcp::{
        AGENT, Sdk, peers_dir, proxy_with_env, require_peers, run_http_with, stateless_http, steps,
    };
    require_peers();
    let sink = sink("http");
    let endpoint = format!("http://127.0.0.1:{}", sink.port);
    let pack = peers_dir().join("policies").canonicalize().unwrap();
    let gw = gateway_with(&format!(
        "policies = {:?}\notel_endpoint = \"{endpoint}\"\notel_protocol = \"http/protobuf\"\n",
        pack.display().to_string()
    ));
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let upstream = stateless_http(&notes);
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[task]\nintent = \"notes\"\ntools = [\"traced_note\"]\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let upstream_arg = format!("notes=http://{}/mcp", upstream.addr);
    let proxy = proxy_with_env(
        &gw,
        &[
            "--agent",
            AGENT,
            "--config",
            &config,
            "--upstream",
            &upstream_arg,
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    );
    let plan = json!([{"op": "call", "tool": "traced_note", "arguments": {"text": "over http"}}]);
    let out = run_http_with(
        Sdk::Python,
        &plan,
        &format!("http://{}/notes/mcp", proxy.addr),
        &json!({"traceparent": traceparent()}),
    );
    assert_eq!(steps(&out)[0]["text"], "noted", "{out}");

    let spans = sink.spans_until(|spans| {
        spans.iter().any(|s| s["name"] == "tools/call traced_note")
            && spans.iter().any(|s| s["name"] == "mandate.decide")
    });
    let call = spans
        .iter()
        .find(|s| s["name"] == "tools/call traced_note")
        .unwrap();
    let decision = spans
        .iter()
        .find(|s| s["name"] == "mandate.decide")
        .unwrap();
    // The client's header is the call span's parent.
    assert_eq!(hex(&call["traceId"]), TRACE_ID);
    assert_eq!(hex(&call["parentSpanId"]), PARENT_ID);
    assert_eq!(decision["parentSpanId"], call["spanId"]);
    // The upstream got the call span's context, not the client's.
    let written = std::fs::read_to_string(&notes).unwrap();
    assert_eq!(
        written.trim(),
        format!(
            "over http traceparent=00-{TRACE_ID}-{}-01",
            hex(&call["spanId"])
        ),
    );
}
