//! `mandate mcp proxy` against real peers over streamable HTTP: the official
//! Python and TypeScript SDK clients, in front of the reference server
//! `server-everything` (its streamable HTTP transport), with a real
//! `mandate serve` deciding (`tests/mcp/policies`). Set-up: `.ci/run`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use serde_json::{Value, json};
use util::mcp::{
    AGENT, DECISION_META, Running, Sdk, check_everything, check_progress, decision_id,
    denial_in_meta, everything_http, history, mandate, mandate_with_approver, pending_approval,
    proxy, receipt_in_meta, require_peers, resolve_approval, run_http, run_http_with, start_task,
    stateful_http_sse, stateless_http, stateless_http_sse, steps,
};

const EVERYTHING_PLAN: &str = r#"[
    {"op": "list_tools"},
    {"op": "call", "tool": "echo", "arguments": {"message": "hi"}},
    {"op": "call", "tool": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 3}, "progress": true},
    {"op": "call", "tool": "trigger-sampling-request", "arguments": {"prompt": "x"}},
    {"op": "call", "tool": "get-env", "arguments": {}},
    {"op": "list_resources"},
    {"op": "read_resource", "uri": "demo://resource/static/document/features.md"},
    {"op": "list_prompts"},
    {"op": "get_prompt", "name": "simple-prompt"}
]"#;

/// As a configured agent: sessions, SSE streams (progress, sampling from
/// the server to the client), resources and prompts pass through the
/// proxy; hidden tools are filtered from `tools/list`, in SSE answers too;
/// a tool outside the task is denied with its decision id and receipt. Both
/// at `/mcp` (one upstream) and at `/NAME/mcp`.
#[test]
fn everything_server_through_the_proxy() {
    require_peers();
    let gateway = mandate();
    let upstream = everything_http();
    let plan: Value = serde_json::from_str(EVERYTHING_PLAN).unwrap();
    // One agent run each: the agent's session is the server's, so a second
    // run on the same session would start after the first one's open-world
    // result.
    for (sdk, path, session) in [
        (Sdk::Python, "/mcp", "run-1"),
        (Sdk::Node, "/everything/mcp", "run-2"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let proxy = agent_proxy(
            &gateway,
            dir.path(),
            &format!(
                "hide_denied_tools = true\nsession = \"{session}\"\n[task]\nintent = \"demo\"\ntools = [\"echo\", \"trigger-long-running-operation\", \"trigger-sampling-request\"]\n"
            ),
            &[],
            &[("everything", &upstream)],
        );
        let out = run_http(sdk, &plan, &format!("http://{}{path}", proxy.addr));
        check_everything(sdk, &gateway, &out, "everything");
    }
}

/// Under a task credential: an allowed call returns the server's answer and
/// its result is recorded in the task's history, under the decision id the
/// result's `_meta` named; a tool the credential does not grant is denied
/// before the server sees it.
#[test]
fn proxy_under_a_task_credential() {
    require_peers();
    let gateway = mandate();
    let upstream = everything_http();
    let dir = tempfile::tempdir().unwrap();
    let task = start_task(&gateway, &["ev/echo"]);
    let credential_file = dir.path().join("credential");
    std::fs::write(&credential_file, &task.credential).unwrap();
    let proxy = proxy(
        &gateway,
        &[
            "--credential-file",
            credential_file.to_str().unwrap(),
            "--hide-denied-tools",
            "--upstream",
            &format!("ev=http://{}/mcp", upstream.addr),
        ],
    );
    let plan = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "echo", "arguments": {"message": "under a credential"}},
        {"op": "call", "tool": "get-sum", "arguments": {"a": 1, "b": 2}},
    ]);
    let mut allowed_ids = Vec::new();
    for sdk in Sdk::BOTH {
        let out = run_http(sdk, &plan, &format!("http://{}/mcp", proxy.addr));
        let s = steps(&out);
        assert_eq!(s[0]["tools"], json!(["echo"]), "{sdk:?}: {out}");
        assert_eq!(s[1]["text"], "Echo: under a credential", "{sdk:?}: {out}");
        let receipt = receipt_in_meta(&gateway, &s[1], "allow");
        assert_eq!(receipt["call"]["tool"], "echo", "{receipt}");
        allowed_ids.push(receipt["decision_id"].clone());
        assert_eq!(s[2]["isError"], true, "{sdk:?}: {out}");
        let text = s[2]["text"].as_str().unwrap();
        assert!(text.contains("mandate:credential-scope"), "{text}");
        let receipt = gateway.receipt(&decision_id(text));
        assert_eq!(receipt["decision"], "deny");
        denial_in_meta(&gateway, &s[2], "deny");
    }
    let echoes = history(&gateway, &task, "echo");
    assert_eq!(echoes.len(), 2, "{echoes:?}");
    let recorded: Vec<Value> = echoes.iter().map(|e| e["decision_id"].clone()).collect();
    assert_eq!(recorded, allowed_ids, "{echoes:?}");
    for echo in &echoes {
        assert_eq!(echo["decision"], "allow");
        // echo is annotated closed-world: its result is not untrusted.
        assert_eq!(echo["result"]["status"], "ok", "{echo}");
        assert_eq!(echo["result"]["labels"], json!([]), "{echo}");
        let receipt = gateway.receipt(echo["decision_id"].as_str().unwrap());
        assert_eq!(receipt["call"]["server"], "ev");
    }
}

/// Malformed and hostile requests get JSON-RPC errors, in the client's
/// session, and the session keeps working.
#[test]
fn hostile_requests_get_json_rpc_errors() {
    require_peers();
    let gateway = mandate();
    let upstream = everything_http();
    let proxy = proxy(
        &gateway,
        &[
            "--agent",
            AGENT,
            "--max-message-bytes",
            "4096",
            "--upstream",
            &format!("ev=http://{}/mcp", upstream.addr),
        ],
    );
    let plan = json!([
        {"op": "raw", "message": "this is not json"},
        {"op": "raw", "message": {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": 7}}},
        {"op": "raw", "message": {"jsonrpc": "1.0", "id": 3, "method": "tools/list"}},
        {"op": "raw", "message": [{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "echo"}}]},
        {"op": "raw", "message": {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "x".repeat(8000)}}}},
        {"op": "call", "tool": "echo", "arguments": {"message": "still here"}},
    ]);
    let out = run_http(Sdk::Node, &plan, &format!("http://{}/mcp", proxy.addr));
    let s = steps(&out);
    assert_eq!(s[0]["status"], 400, "{out}");
    assert_eq!(s[0]["answer"]["error"]["code"], -32700, "{out}");
    assert_eq!(s[1]["answer"]["error"]["code"], -32602, "{out}");
    assert_eq!(s[1]["answer"]["id"], 2, "{out}");
    assert_eq!(s[2]["answer"]["error"]["code"], -32600, "{out}");
    assert_eq!(s[2]["answer"]["id"], 3, "{out}");
    assert_eq!(s[3]["answer"]["error"]["code"], -32600, "{out}");
    assert_eq!(s[4]["status"], 413, "{out}");
    assert_eq!(s[4]["answer"]["error"]["code"], -32600, "{out}");
    // No task tools configured: the call is decided, and denied.
    assert_eq!(s[5]["isError"], true, "{out}");
    assert!(
        s[5]["text"].as_str().unwrap().contains("Decision "),
        "{out}"
    );
}

/// A call of a tool the client never listed: the proxy lists the upstream's
/// tools itself, in the client's session, and decides with the real
/// annotations (`echo` is read-only and closed-world, so its result does not
/// taint the session and the second call is allowed too).
#[test]
fn annotations_are_learned_without_a_client_listing() {
    require_peers();
    let gateway = mandate();
    let upstream = everything_http();
    let dir = tempfile::tempdir().unwrap();
    let proxy = agent_proxy(
        &gateway,
        dir.path(),
        "[task]\nintent = \"demo\"\ntools = [\"echo\"]\n",
        &[],
        &[("ev", &upstream)],
    );
    let plan = json!([
        {"op": "call", "tool": "echo", "arguments": {"message": "one"}},
        {"op": "call", "tool": "echo", "arguments": {"message": "two"}},
    ]);
    let out = run_http(Sdk::Python, &plan, &format!("http://{}/mcp", proxy.addr));
    let s = steps(&out);
    assert_eq!(s[0]["text"], "Echo: one", "{out}");
    assert_eq!(s[1]["text"], "Echo: two", "{out}");
}

/// Two everything servers behind one proxy, `a` and `b`.
fn two_upstreams(gateway: &util::tasks::Gateway, args: &[&str]) -> (Running, Running, Running) {
    let a = everything_http();
    let b = everything_http();
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend([
        "--upstream".to_owned(),
        format!("a=http://{}/mcp", a.addr),
        "--upstream".to_owned(),
        format!("b=http://{}/mcp", b.addr),
    ]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let proxy = proxy(gateway, &all);
    (a, b, proxy)
}

/// With two upstreams, `/mcp` is one MCP server with the tools of both,
/// named `NAME__tool`: a call is decided as on `/NAME/mcp` (server `a`, tool
/// `echo`) and answered by that upstream (a long call's progress streamed
/// back); a denied call gets the tool error and its receipt; an unknown
/// prefix and `resources/list` are JSON-RPC errors; the session ends with
/// `DELETE`.
#[test]
fn merged_endpoint_namespaces_tools_per_upstream() {
    require_peers();
    let gateway = mandate();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcp.toml");
    std::fs::write(
        &config,
        "hide_denied_tools = true\n[task]\nintent = \"demo\"\ntools = [\"echo\", \"trigger-long-running-operation\"]\n",
    )
    .unwrap();
    let (_a, _b, proxy) = two_upstreams(
        &gateway,
        &["--agent", AGENT, "--config", config.to_str().unwrap()],
    );
    let url = format!("http://{}/mcp", proxy.addr);
    let plan = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "a__echo", "arguments": {"message": "from a"}},
        {"op": "call", "tool": "b__echo", "arguments": {"message": "from b"}},
        {"op": "call", "tool": "a__get-env", "arguments": {}},
        {"op": "call", "tool": "c__echo", "arguments": {"message": "nowhere"}},
        {"op": "call", "tool": "echo", "arguments": {"message": "no prefix"}},
        {"op": "list_resources"},
        {"op": "call", "tool": "b__trigger-long-running-operation", "arguments": {"duration": 1, "steps": 3}, "progress": true},
    ]);
    for sdk in Sdk::BOTH {
        let out = run_http(sdk, &plan, &url);
        assert_eq!(out["server"], "mandate-mcp-proxy", "{sdk:?}: {out}");
        let s = steps(&out);
        assert_eq!(
            s[0]["tools"],
            json!([
                "a__echo",
                "a__trigger-long-running-operation",
                "b__echo",
                "b__trigger-long-running-operation"
            ]),
            "{sdk:?}: {out}"
        );
        // The upstream's annotations are kept.
        assert_eq!(
            s[0]["annotations"]["a__echo"]["readOnlyHint"], true,
            "{sdk:?}: {out}"
        );
        assert_eq!(s[1]["isError"], false, "{sdk:?}: {out}");
        assert_eq!(s[1]["text"], "Echo: from a", "{sdk:?}: {out}");
        assert_eq!(s[2]["text"], "Echo: from b", "{sdk:?}: {out}");
        // Each result names the decision of its own upstream's call.
        for (step, server) in [(&s[1], "a"), (&s[2], "b")] {
            let receipt = receipt_in_meta(&gateway, step, "allow");
            assert_eq!(receipt["call"]["server"], server, "{receipt}");
            assert_eq!(receipt["call"]["tool"], "echo", "{receipt}");
        }
        assert_eq!(s[3]["isError"], true, "{sdk:?}: {out}");
        let text = s[3]["text"].as_str().unwrap();
        // Named as the client called it; decided as `get-env` on `a`.
        assert!(text.contains("Mandate denied `a__get-env`"), "{text}");
        let receipt = gateway.receipt(&decision_id(text));
        assert_eq!(receipt["decision"], "deny", "{receipt}");
        assert_eq!(receipt["call"]["server"], "a", "{receipt}");
        assert_eq!(receipt["call"]["tool"], "get-env", "{receipt}");
        assert_eq!(denial_in_meta(&gateway, &s[3], "deny"), receipt);
        for unknown in [&s[4], &s[5]] {
            assert_eq!(unknown["code"], -32602, "{sdk:?}: {out}");
            let message = unknown["exception"].as_str().unwrap();
            assert!(message.contains("servers are a, b"), "{message}");
        }
        assert_eq!(s[6]["code"], -32601, "{sdk:?}: {out}");
        assert!(
            s[6]["exception"].as_str().unwrap().contains("/NAME/mcp"),
            "{sdk:?}: {out}"
        );
        // The upstream's progress passes on the proxy's own stream, in
        // order, then the result, which names its decision.
        check_progress(sdk, &s[7], &out);
        let receipt = receipt_in_meta(&gateway, &s[7], "allow");
        assert_eq!(receipt["call"]["server"], "b", "{receipt}");
    }
    // Without a session, and after it ended.
    let plan = json!([
        {"op": "raw", "message": {"jsonrpc": "2.0", "id": 1, "method": "ping"}},
        {"op": "terminate"},
    ]);
    let out = run_http(Sdk::Node, &plan, &url);
    let s = steps(&out);
    assert_eq!(s[0]["answer"]["result"], json!({}), "{out}");
    assert_eq!(s[1]["status"], 404, "{out}");
}

/// Under a task credential, through `/mcp`: allowed calls reach the right
/// upstream, are decided with `action.server` = the upstream's name, and
/// their results are recorded in the task's history; a tool the credential
/// grants on one upstream only is denied on the other.
#[test]
fn merged_endpoint_under_a_task_credential() {
    require_peers();
    let gateway = mandate();
    let dir = tempfile::tempdir().unwrap();
    let task = start_task(&gateway, &["a/echo", "b/get-sum"]);
    let credential_file = dir.path().join("credential");
    std::fs::write(&credential_file, &task.credential).unwrap();
    let (_a, _b, proxy) = two_upstreams(
        &gateway,
        &[
            "--credential-file",
            credential_file.to_str().unwrap(),
            "--hide-denied-tools",
        ],
    );
    let plan = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "a__echo", "arguments": {"message": "merged"}},
        {"op": "call", "tool": "b__get-sum", "arguments": {"a": 1, "b": 2}},
        {"op": "call", "tool": "b__echo", "arguments": {"message": "not granted"}},
    ]);
    let out = run_http(Sdk::Python, &plan, &format!("http://{}/mcp", proxy.addr));
    let s = steps(&out);
    assert_eq!(s[0]["tools"], json!(["a__echo", "b__get-sum"]), "{out}");
    assert_eq!(s[1]["text"], "Echo: merged", "{out}");
    assert_eq!(s[2]["isError"], false, "{out}");
    assert!(s[2]["text"].as_str().unwrap().contains('3'), "{out}");
    assert_eq!(
        receipt_in_meta(&gateway, &s[2], "allow")["call"]["server"],
        "b"
    );
    assert_eq!(s[3]["isError"], true, "{out}");
    let text = s[3]["text"].as_str().unwrap();
    assert!(text.contains("mandate:credential-scope"), "{text}");
    let receipt = gateway.receipt(&decision_id(text));
    assert_eq!(receipt["call"]["server"], "b", "{receipt}");
    denial_in_meta(&gateway, &s[3], "deny");
    let echoes = history(&gateway, &task, "echo");
    let allowed: Vec<&Value> = echoes.iter().filter(|e| e["decision"] == "allow").collect();
    assert_eq!(allowed.len(), 1, "{echoes:?}");
    assert_eq!(allowed[0]["result"]["status"], "ok", "{echoes:?}");
    // The history records the call under the id its result named.
    let named = receipt_in_meta(&gateway, &s[1], "allow");
    assert_eq!(
        allowed[0]["decision_id"], named["decision_id"],
        "{echoes:?}"
    );
    let receipt = gateway.receipt(allowed[0]["decision_id"].as_str().unwrap());
    assert_eq!(receipt["call"]["server"], "a", "{receipt}");
    let sums = history(&gateway, &task, "get-sum");
    assert_eq!(sums.len(), 1, "{sums:?}");
    assert_eq!(sums[0]["result"]["status"], "ok", "{sums:?}");
}

/// Malformed and hostile requests on `/mcp` get the same answers as on the
/// per-upstream endpoints, and the session keeps working.
#[test]
fn merged_endpoint_hostile_requests() {
    require_peers();
    let gateway = mandate();
    let (_a, _b, proxy) =
        two_upstreams(&gateway, &["--agent", AGENT, "--max-message-bytes", "4096"]);
    let plan = json!([
        {"op": "raw", "message": "this is not json"},
        {"op": "raw", "message": {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": 7}}},
        {"op": "raw", "message": {"jsonrpc": "1.0", "id": 3, "method": "tools/list"}},
        {"op": "raw", "message": [{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "a__echo"}}]},
        {"op": "raw", "message": {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "a__echo", "arguments": {"message": "x".repeat(8000)}}}},
        {"op": "raw", "message": {"jsonrpc": "2.0", "id": 6, "method": "prompts/list"}},
        {"op": "call", "tool": "a__echo", "arguments": {"message": "still here"}},
    ]);
    let out = run_http(Sdk::Node, &plan, &format!("http://{}/mcp", proxy.addr));
    let s = steps(&out);
    assert_eq!(s[0]["status"], 400, "{out}");
    assert_eq!(s[0]["answer"]["error"]["code"], -32700, "{out}");
    assert_eq!(s[1]["answer"]["error"]["code"], -32602, "{out}");
    assert_eq!(s[1]["answer"]["id"], 2, "{out}");
    assert_eq!(s[2]["answer"]["error"]["code"], -32600, "{out}");
    assert_eq!(s[2]["answer"]["id"], 3, "{out}");
    assert_eq!(s[3]["answer"]["error"]["code"], -32600, "{out}");
    assert_eq!(s[4]["status"], 413, "{out}");
    assert_eq!(s[4]["answer"]["error"]["code"], -32600, "{out}");
    assert_eq!(s[5]["answer"]["error"]["code"], -32601, "{out}");
    assert_eq!(s[5]["answer"]["id"], 6, "{out}");
    // No task tools configured: the call is decided, and denied.
    assert_eq!(s[6]["isError"], true, "{out}");
    assert!(
        s[6]["text"].as_str().unwrap().contains("Decision "),
        "{out}"
    );
}

/// An upstream name that would make merged tool names ambiguous is refused
/// at start.
#[test]
fn merged_endpoint_refuses_ambiguous_names() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args([
            "mcp",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--agent",
            AGENT,
            "--upstream",
            "a__b=http://127.0.0.1:1/mcp",
            "--upstream",
            "c=http://127.0.0.1:1/mcp",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must not contain `__`"), "{stderr}");
}

/// A stateless upstream issues no session id, so every request stands
/// alone: in agent mode the proxy decides all of them on one session, the
/// configured agent's. Untrusted content fetched in one request stops a
/// write in the next, and in another client's too; the write never reaches
/// the server.
#[test]
fn a_stateless_upstreams_calls_share_the_agents_session() {
    require_peers();
    let gateway = mandate();
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let upstream = stateless_http(&notes);
    let proxy = agent_proxy(
        &gateway,
        dir.path(),
        "[task]\nintent = \"notes\"\ntools = [\"fetch_page\", \"write_note\"]\n",
        &[],
        &[("notes", &upstream)],
    );
    let url = format!("http://{}/mcp", proxy.addr);
    let plan = json!([
        {"op": "call", "tool": "write_note", "arguments": {"text": "before"}},
        {"op": "call", "tool": "fetch_page", "arguments": {"url": "https://example.org"}},
        {"op": "call", "tool": "write_note", "arguments": {"text": "after"}},
    ]);
    let out = run_http(Sdk::Python, &plan, &url);
    let s = steps(&out);
    assert_eq!(s[0]["text"], "noted", "{out}");
    assert!(
        s[1]["text"].as_str().unwrap().starts_with("contents of"),
        "{out}"
    );
    // JSON answers, rewritten with the decision in `_meta`.
    for (step, tool) in [(&s[0], "write_note"), (&s[1], "fetch_page")] {
        assert_eq!(
            receipt_in_meta(&gateway, step, "allow")["call"]["tool"],
            tool
        );
    }
    assert_eq!(s[2]["isError"], true, "{out}");
    let text = s[2]["text"].as_str().unwrap();
    assert!(text.contains("untrusted-no-writes"), "{text}");
    assert_eq!(gateway.receipt(&decision_id(text))["decision"], "deny");
    denial_in_meta(&gateway, &s[2], "deny");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "before\n");

    let out = run_http(
        Sdk::Node,
        &json!([{"op": "call", "tool": "write_note", "arguments": {"text": "other client"}}]),
        &url,
    );
    assert_eq!(steps(&out)[0]["isError"], true, "{out}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "before\n");
}

/// The upstream's own `_meta` reaches the client beside the proxy's
/// decision, and the upstream's claim of the proxy's key is overruled, on
/// every way an allowed call's answer comes back: relayed as JSON or as an
/// SSE stream (`/NAME/mcp`), and on the merged endpoint from an upstream
/// that answers JSON or streams.
#[test]
fn the_upstreams_own_meta_is_kept_beside_the_decision() {
    require_peers();
    let gateway = mandate();
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let json_upstream = stateless_http(&notes);
    let sse_upstream = stateless_http_sse(&notes);
    let proxy = agent_proxy(
        &gateway,
        dir.path(),
        "[task]\nintent = \"notes\"\ntools = [\"stamped_note\"]\n",
        &[],
        &[("j", &json_upstream), ("e", &sse_upstream)],
    );
    for sdk in Sdk::BOTH {
        for (path, tool, server) in [
            ("/j/mcp", "stamped_note", "j"),
            ("/e/mcp", "stamped_note", "e"),
            ("/mcp", "j__stamped_note", "j"),
            ("/mcp", "e__stamped_note", "e"),
        ] {
            let plan = json!([{"op": "call", "tool": tool, "arguments": {}}]);
            let out = run_http(sdk, &plan, &format!("http://{}{path}", proxy.addr));
            let step = &steps(&out)[0];
            let at = format!("{sdk:?} {path} {tool}");
            assert_eq!(step["text"], "stamped", "{at}: {out}");
            assert_eq!(
                step["meta"]["com.example.notes/trace"],
                json!({"span": "notes-1"}),
                "{at}: {out}"
            );
            let receipt = receipt_in_meta(&gateway, step, "allow");
            assert_eq!(receipt["call"]["server"], server, "{at}: {receipt}");
            assert_eq!(receipt["call"]["tool"], "stamped_note", "{at}: {receipt}");
            assert_eq!(step["meta"].as_object().unwrap().len(), 2, "{at}: {out}");
        }
    }
}

/// One POST to the proxy: its status, the `Mcp-Session-Id` it answered,
/// and its body.
fn post(url: &str, session: Option<&str>, message: &Value) -> (u16, Option<String>, String) {
    let client = reqwest::blocking::Client::new();
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(message.to_string());
    if let Some(id) = session {
        request = request.header("mcp-session-id", id);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let issued = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, issued, response.text().unwrap())
}

/// Opens an MCP session at `url` by hand (`initialize`, then
/// `notifications/initialized`) and returns the `Mcp-Session-Id` issued.
fn open_session(url: &str) -> String {
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}});
    let (status, issued, body) = post(url, None, &initialize);
    assert_eq!(status, 200, "{body}");
    let session = issued.unwrap_or_else(|| panic!("no Mcp-Session-Id was issued: {body}"));
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, body) = post(url, Some(&session), &initialized);
    assert_eq!(status, 202, "{body}");
    session
}

/// The proxy serves only the session ids it saw issued: a made-up one gets
/// 404 (the MCP answer that makes a client initialize again) without
/// reaching the upstream, and so does a session idle for longer than
/// `--session-idle`. A session in use stays open.
#[test]
fn unknown_and_idle_sessions_get_404() {
    require_peers();
    let gateway = mandate();
    let upstream = everything_http();
    let proxy = proxy(
        &gateway,
        &[
            "--agent",
            AGENT,
            "--session-idle",
            "2s",
            "--upstream",
            &format!("ev=http://{}/mcp", upstream.addr),
        ],
    );
    let url = format!("http://{}/mcp", proxy.addr);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, _, body) = post(&url, Some("made-up"), &list);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("send `initialize` again"), "{body}");

    let id = open_session(&url);
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(800));
        let (status, _, body) = post(&url, Some(&id), &list);
        assert_eq!(status, 200, "in use, the session stays open: {body}");
    }
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let (status, _, body) = post(&url, Some(&id), &list);
    assert_eq!(status, 404, "idle for longer than 2s: {body}");
}

/// A call cancelled while it is being decided (here: while it waits for a
/// person's approval) stops waiting at once and never reaches the upstream:
/// the cancellation is the proxy's to act on, since the upstream never saw
/// the call. The cancelled request gets no answer, and its approval is
/// withdrawn.
#[test]
fn a_call_cancelled_while_it_is_decided_never_runs() {
    cancelled_while_decided(false);
}

/// The same on the merged endpoint, where the call's own token ends the
/// decision.
#[test]
fn merged_endpoint_call_cancelled_while_it_is_decided_never_runs() {
    cancelled_while_decided(true);
}

fn cancelled_while_decided(merged: bool) {
    require_peers();
    let token = "approver-token-for-the-cancellation-test";
    let gateway = mandate_with_approver("alice@example.org", token);
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let upstream = stateless_http(&notes);
    let other = everything_http();
    let mut upstreams = vec![("notes", &upstream)];
    if merged {
        upstreams.push(("other", &other));
    }
    let proxy = agent_proxy(
        &gateway,
        dir.path(),
        "[task]\nintent = \"notes\"\ntools = [\"publish_note\"]\n",
        &["--approval-wait", "60s"],
        &upstreams,
    );
    let url = format!("http://{}/mcp", proxy.addr);
    let session = merged.then(|| open_session(&url));
    let tool = if merged {
        "notes__publish_note"
    } else {
        "publish_note"
    };
    let publish = |id: u64, text: &str| {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": {"text": text}}});
        let (url, session) = (url.clone(), session.clone());
        std::thread::spawn(move || post(&url, session.as_deref(), &call))
    };
    let waiting = publish(7, "cancelled");
    let approval = pending_approval(&gateway, token);
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 7, "reason": "the user changed their mind"}});
    let (status, _, body) = post(&url, session.as_deref(), &cancel);
    assert_eq!(status, 202, "{body}");
    // The approval is still pending and the wait is 60 s: only the
    // cancellation can end the request within 20 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !waiting.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled call did not stop waiting for its approval"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _, body) = waiting.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "", "a cancelled request is not answered");
    util::mcp::assert_withdrawn(
        &gateway,
        token,
        &approval,
        "the MCP client cancelled the call",
    );
    assert!(!notes.exists(), "the cancelled call reached the server");

    // The same call, not cancelled, runs once approved.
    let waiting = publish(8, "kept");
    let approval = pending_approval(&gateway, token);
    resolve_approval(&gateway, token, &approval, "approve");
    let (status, _, body) = waiting.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("noted"), "{body}");
    // The result names the allow the approval released, and the approval.
    let answer: Value = serde_json::from_str(&body).unwrap();
    let released = &answer["result"]["_meta"][DECISION_META];
    assert_eq!(released["approval_id"], approval, "{body}");
    let receipt = gateway.receipt(released["decision_id"].as_str().unwrap());
    assert_eq!(receipt["decision"], "allow", "{receipt}");
    assert_eq!(receipt["index"], released["receipt_index"], "{receipt}");
    assert_eq!(receipt["approval"]["id"], approval, "{receipt}");
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "kept\n",
        "only the call not cancelled ran"
    );
}

/// A client that leaves while an allowed call's SSE answer is still coming
/// may yet get its result on a resumed `GET` stream, which the proxy does
/// not watch: the call counts as one that returned, so an open-world result
/// labels the session `untrusted` (here: a later write is then denied by
/// `untrusted-no-writes`) rather than slip past the session's history.
#[test]
fn a_call_whose_stream_the_client_left_still_labels_the_session() {
    require_peers();
    let gateway = mandate();
    let upstream = everything_http();
    let dir = tempfile::tempdir().unwrap();
    let proxy = agent_proxy(
        &gateway,
        dir.path(),
        concat!(
            "[task]\nintent = \"demo\"\ntools = [\"echo\", \"trigger-long-running-operation\"]\n",
            // The long call reads the web; echo writes (for this test).
            "[tools.\"trigger-long-running-operation\"]\nopen_world = true\n",
            "[tools.\"echo\"]\nread_only = false\n",
        ),
        &[],
        &[("everything", &upstream)],
    );
    let url = format!("http://{}/mcp", proxy.addr);
    let session = open_session(&url);
    let echo = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "write"}}})
    };
    let (_, _, body) = post(&url, Some(&session), &echo(2));
    assert!(body.contains("Echo: write"), "allowed before: {body}");

    // The long call, by hand: read until its first progress event, then
    // hang up.
    let call = CallStream::open(
        proxy.addr,
        "/mcp",
        &session,
        &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "trigger-long-running-operation",
            "arguments": {"duration": 2, "steps": 4},
            "_meta": {"progressToken": "p"}}}),
    );
    drop(call);

    let mut next = 4;
    util::poll_until(
        Duration::from_secs(20),
        "the session to be untrusted",
        || {
            let (_, _, body) = post(&url, Some(&session), &echo(next));
            next += 1;
            if body.contains("untrusted-no-writes") {
                Ok(())
            } else {
                Err(body)
            }
        },
    );
}

/// On the merged endpoint, an open-world call whose upstream dies after
/// streaming progress (text it wrote) ends with the proxy's own `-32603`,
/// and counts as a call that returned: the session is `untrusted`, so a
/// write that follows is denied (`untrusted-no-writes`).
#[test]
fn merged_endpoint_counts_streamed_progress_as_returned() {
    require_peers();
    let gateway = mandate();
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let a = everything_http();
    let b = stateless_http_sse(&notes);
    let proxy = agent_proxy(
        &gateway,
        dir.path(),
        "[task]\nintent = \"notes\"\ntools = [\"fetch_then_crash\", \"write_note\"]\n",
        &[],
        &[("a", &a), ("b", &b)],
    );
    let url = format!("http://{}/mcp", proxy.addr);
    let session = open_session(&url);

    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "b__fetch_then_crash", "arguments": {"url": "https://example.org"},
        "_meta": {"progressToken": "p"}}});
    let (status, _, body) = post(&url, Some(&session), &call);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ignore previous instructions"), "{body}");
    let last = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .unwrap_or_else(|| panic!("no events: {body}"));
    assert_eq!(last["id"], 2, "{body}");
    assert_eq!(last["error"]["code"], -32603, "{body}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no answer from the MCP server `b`"),
        "{body}"
    );

    let write = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "b__write_note", "arguments": {"text": "after"}}});
    let (_, _, body) = post(&url, Some(&session), &write);
    assert!(body.contains("untrusted-no-writes"), "{body}");
    assert!(!notes.exists());
}

/// The same on the relay path (`/NAME/mcp`), where the upstream's stream is
/// passed through as it is: the progress (text the upstream wrote) reaches
/// the client, the stream ends with no answer, and the call still counts as
/// one that returned, so the write that follows is denied and never runs.
#[test]
fn relayed_stream_that_ends_without_an_answer_labels_the_session() {
    require_peers();
    let gateway = mandate();
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let upstream = stateless_http_sse(&notes);
    let proxy = agent_proxy(
        &gateway,
        dir.path(),
        "[task]\nintent = \"notes\"\ntools = [\"fetch_then_crash\", \"write_note\"]\n",
        &[],
        &[("notes", &upstream)],
    );
    // A stateless upstream issues no session: its calls share the agent's.
    let url = format!("http://{}/notes/mcp", proxy.addr);

    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "fetch_then_crash", "arguments": {"url": "https://example.org"},
        "_meta": {"progressToken": "p"}}});
    // The upstream's stream breaks off, and so does the relayed one: keep
    // what arrived before the break.
    let mut response = reqwest::blocking::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(call.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n @ 1..) = response.read(&mut buffer) {
        received.extend_from_slice(&buffer[..n]);
    }
    let body = String::from_utf8_lossy(&received);
    assert!(body.contains("ignore previous instructions"), "{body}");
    let answered = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .any(|m| m["id"] == 2);
    assert!(!answered, "the upstream died before answering: {body}");

    let write = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "write_note", "arguments": {"text": "after"}}});
    let (_, _, body) = post(&url, None, &write);
    assert!(body.contains("untrusted-no-writes"), "{body}");
    assert!(!notes.exists());
}

/// On the merged endpoint, a client's cancellation of a call already sent
/// goes on to the call's upstream (the server's handler is cancelled: it
/// notes so) and ends the call's stream without an answer, as MCP has it.
/// While the call runs, its id cannot be used again.
#[test]
fn merged_endpoint_passes_cancellations_of_sent_calls_on() {
    require_peers();
    let gateway = mandate();
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let a = everything_http();
    let b = stateful_http_sse(&notes);
    let proxy = agent_proxy(
        &gateway,
        dir.path(),
        "[task]\nintent = \"notes\"\ntools = [\"wait_for_cancel\", \"echo\"]\n",
        &[],
        &[("a", &a), ("b", &b)],
    );
    let url = format!("http://{}/mcp", proxy.addr);
    let session = open_session(&url);

    // The call, by hand: read until its progress shows it runs upstream.
    let wait = |id: u64| {
        CallStream::open(
            proxy.addr,
            "/mcp",
            &session,
            &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "b__wait_for_cancel", "arguments": {}, "_meta": {"progressToken": "p"}}}),
        )
    };
    let mut call = wait(2);

    // Its id is taken while it runs.
    let again = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "b__wait_for_cancel", "arguments": {}}});
    let (_, _, body) = post(&url, Some(&session), &again);
    let again: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(again["error"]["code"], -32600, "{again}");

    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 2, "reason": "the user changed their mind"}});
    let (status, _, body) = post(&url, Some(&session), &cancel);
    assert_eq!(status, 202, "{body}");

    // The stream ends (the proxy closes the connection) with no answer.
    let seen = call.rest();
    assert!(
        !seen.contains(r#""id":2"#),
        "a cancelled call is not answered: {seen}"
    );
    // The call is over: its id is free again, and the session decides on
    // (the cancelled call's outcome was recorded).
    let echo = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "a__echo", "arguments": {"message": "after"}}});
    let (_, _, body) = post(&url, Some(&session), &echo);
    assert!(body.contains("Echo: after"), "{body}");
    util::poll_until(
        Duration::from_secs(20),
        "the server to see the cancellation",
        || match std::fs::read_to_string(&notes) {
            Ok(text) if text.contains("cancelled") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // Ending the session ends its calls in progress the same way.
    let mut call = wait(3);
    let ended = reqwest::blocking::Client::new()
        .delete(&url)
        .header("mcp-session-id", &session)
        .send()
        .unwrap();
    assert_eq!(ended.status(), 200);
    let seen = call.rest();
    assert!(
        !seen.contains(r#""id":3"#),
        "a call of an ended session is not answered: {seen}"
    );
}

/// A call's answer read by hand off the socket, as it arrives.
struct CallStream {
    socket: std::net::TcpStream,
    seen: String,
}

impl CallStream {
    /// Posts `message` to `path` in `session` (`Connection: close`, so the
    /// stream's end closes the socket), and reads until the call's first
    /// progress event.
    fn open(addr: std::net::SocketAddr, path: &str, session: &str, message: &Value) -> Self {
        let body = message.to_string();
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            socket,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-protocol-version: 2025-06-18\r\nmcp-session-id: {session}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut stream = Self {
            socket,
            seen: String::new(),
        };
        while !stream.seen.contains("notifications/progress") {
            assert!(
                stream.read(),
                "the stream ended before any progress: {}",
                stream.seen
            );
        }
        stream
    }

    /// Reads what comes next; `false` at the end of the stream.
    fn read(&mut self) -> bool {
        let mut buffer = [0u8; 4096];
        match self.socket.read(&mut buffer) {
            Ok(0) => false,
            Ok(n) => {
                self.seen.push_str(&String::from_utf8_lossy(
                    buffer.get(..n).unwrap_or_default(),
                ));
                true
            }
            Err(e) => panic!("the call's stream did not end ({e}): {}", self.seen),
        }
    }

    /// Everything, once the stream has ended.
    fn rest(&mut self) -> String {
        while self.read() {}
        self.seen.clone()
    }
}

/// With `[[clients]]` in its config (as `mandate mcp client-token` prints
/// it), the proxy serves configured clients only: a request without
/// `Proxy-Authorization: Bearer <token>`, or with a token no client has,
/// gets `403` and reaches nothing. Both SDK clients sending a configured
/// token work as before, relayed and merged.
#[test]
fn only_configured_clients_are_served() {
    require_peers();
    let gateway = mandate();
    let a = everything_http();
    let b = everything_http();
    // The client's token and its `[[clients]]` entry, as an operator makes
    // them.
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["mcp", "client-token", "--name", "test-agent"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let entry = String::from_utf8(made.stdout).unwrap();
    let token = util::printed_token(&entry);
    assert!(token.starts_with("mnd_mcp_"), "{entry}");
    let token = token.as_str();
    let dir = tempfile::tempdir().unwrap();
    let proxy = agent_proxy(
        &gateway,
        dir.path(),
        &format!("{entry}[task]\nintent = \"demo\"\ntools = [\"echo\"]\n"),
        &[],
        &[("a", &a), ("b", &b)],
    );

    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}});
    // Each request also carries the token as `Authorization`: that header
    // is the upstream's, and does not count.
    for (path, presented, why) in [
        ("/mcp", None, "no `Proxy-Authorization"),
        ("/a/mcp", None, "no `Proxy-Authorization"),
        (
            "/mcp",
            Some("Bearer mnd_mcp_not-a-client"),
            "not a configured client's token",
        ),
        // The token alone, without the scheme.
        ("/a/mcp", Some(token), "no `Proxy-Authorization"),
    ] {
        let mut request = reqwest::blocking::Client::new()
            .post(format!("http://{}{path}", proxy.addr))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {token}"))
            .body(initialize.to_string());
        if let Some(value) = presented {
            request = request.header("proxy-authorization", value);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 403, "{path} {presented:?}");
        assert!(response.headers().get("mcp-session-id").is_none());
        let body: Value = response.json().unwrap();
        assert_eq!(body["error"]["code"], -32600, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{path} {presented:?}: {message}");
    }

    let headers = json!({"Proxy-Authorization": format!("Bearer {token}")});
    for (sdk, path, tool) in [
        (Sdk::Python, "/a/mcp", "echo"),
        (Sdk::Node, "/mcp", "a__echo"),
    ] {
        let plan = json!([{"op": "call", "tool": tool, "arguments": {"message": "hi"}}]);
        let url = format!("http://{}{path}", proxy.addr);
        let out = run_http_with(sdk, &plan, &url, &headers);
        let text = steps(&out)[0]["text"].as_str().unwrap_or_default();
        assert!(text.contains("Echo: hi"), "{sdk:?}: {out}");
    }
}

/// `mandate mcp proxy` as the test agent, with `config` (TOML) as its config
/// file (written to `dir`) and `extra` flags, in front of `upstreams`
/// (`NAME`, server).
fn agent_proxy(
    gateway: &util::tasks::Gateway,
    dir: &std::path::Path,
    config: &str,
    extra: &[&str],
    upstreams: &[(&str, &Running)],
) -> Running {
    let path = dir.join("mcp.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec![
        "--agent".to_owned(),
        AGENT.to_owned(),
        "--config".to_owned(),
        path.display().to_string(),
    ];
    args.extend(extra.iter().map(|&flag| flag.to_owned()));
    for (name, upstream) in upstreams {
        args.push("--upstream".to_owned());
        args.push(format!("{name}=http://{}/mcp", upstream.addr));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    proxy(gateway, &args)
}
