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

use serde_json::{Value, json};
use util::mcp::{
    AGENT, Sdk, check_everything, decision_id, everything_http, history, mandate, proxy,
    require_peers, run_http, start_task, steps,
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
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcp.toml");
    std::fs::write(
        &config,
        "hide_denied_tools = true\n[task]\nintent = \"demo\"\ntools = [\"echo\", \"trigger-long-running-operation\", \"trigger-sampling-request\"]\n",
    )
    .unwrap();
    let proxy = proxy(
        &gateway,
        &[
            "--agent",
            AGENT,
            "--config",
            config.to_str().unwrap(),
            "--upstream",
            &format!("everything=http://{}/mcp", upstream.addr),
        ],
    );
    let plan: Value = serde_json::from_str(EVERYTHING_PLAN).unwrap();
    for (sdk, path) in [(Sdk::Python, "/mcp"), (Sdk::Node, "/everything/mcp")] {
        let out = run_http(sdk, &plan, &format!("http://{}{path}", proxy.addr));
        check_everything(sdk, &gateway, &out, "everything");
    }
}

/// Under a task credential: an allowed call returns the server's answer and
/// its result is recorded in the task's history; a tool the credential does
/// not grant is denied before the server sees it.
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
    for sdk in Sdk::BOTH {
        let out = run_http(sdk, &plan, &format!("http://{}/mcp", proxy.addr));
        let s = steps(&out);
        assert_eq!(s[0]["tools"], json!(["echo"]), "{sdk:?}: {out}");
        assert_eq!(s[1]["text"], "Echo: under a credential", "{sdk:?}: {out}");
        assert_eq!(s[2]["isError"], true, "{sdk:?}: {out}");
        let text = s[2]["text"].as_str().unwrap();
        assert!(text.contains("mandate:credential-scope"), "{text}");
        let receipt = gateway.receipt(&decision_id(text));
        assert_eq!(receipt["decision"], "deny");
    }
    let echoes = history(&gateway, &task, "echo");
    assert_eq!(echoes.len(), 2, "{echoes:?}");
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
    let config = dir.path().join("mcp.toml");
    std::fs::write(&config, "[task]\nintent = \"demo\"\ntools = [\"echo\"]\n").unwrap();
    let proxy = proxy(
        &gateway,
        &[
            "--agent",
            AGENT,
            "--config",
            config.to_str().unwrap(),
            "--upstream",
            &format!("ev=http://{}/mcp", upstream.addr),
        ],
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
