//! `mandate mcp wrap` against real peers: the official Python and TypeScript
//! SDK clients, in front of the reference servers `server-filesystem` and
//! `server-everything`, with a real `mandate serve` deciding
//! (`tests/mcp/policies`). Set-up: `scripts/test` (npm ci, and the Python
//! packages into its virtual environment, `<target>/test-venv`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use util::mcp::{
    AGENT, DECISION_META, FilesystemSession, LISTING_OPEN_WORLD, Sdk, check_everything,
    decision_id, denial_in_meta, everything_server, filesystem_server, filesystem_session, history,
    mandate, notes_stdio, receipt_in_meta, require_peers, run_stdio, steps, wrap_command,
};

/// The operator's catalog says whether a tool's output is trusted, apart
/// from whether it reaches the open world: the same session with the
/// listing open-world but its output trusted leaves the session clean, and
/// the write after it is allowed (with `output = "untrusted"` on a
/// closed-world listing, the write is denied).
#[test]
fn output_trust_is_set_apart_from_the_open_world() {
    require_peers();
    let gateway = mandate();
    let errors = |catalog: &str| {
        let run = filesystem_session(&gateway, Sdk::Python, catalog);
        let errors: Vec<bool> = steps(&run.out)
            .iter()
            .map(|s| s["isError"].as_bool().unwrap())
            .collect();
        let listing = steps(&run.out)[3].clone();
        let labels = history(&gateway, &run.task, "list_directory")[0]["result"]["labels"].clone();
        (errors, listing, labels)
    };
    let (trusted, listing, labels) =
        errors("[tools.\"list_directory\"]\nopen_world = true\noutput = \"trusted\"\n");
    assert_eq!(
        trusted,
        [false, true, false, false, false, true],
        "the late write runs: {listing}"
    );
    assert_eq!(labels, json!([]), "a trusted result carries no label");
    let (untrusted, _, labels) =
        errors("[tools.\"list_directory\"]\nopen_world = false\noutput = \"untrusted\"\n");
    assert_eq!(untrusted, [false, true, false, false, true, true]);
    assert_eq!(labels, json!(["untrusted"]));
}

/// Under a task credential, on the filesystem server: an allowed read returns
/// the file, a denied write never reaches the server (the file is untouched)
/// and its tool error names the decision, both have receipts, an open-world
/// result (by the config's override) taints the session, and a tool the
/// credential does not grant is denied. Every result's `_meta` names its
/// decision: the task's history records the allowed calls under those ids.
#[test]
fn filesystem_under_a_task_credential() {
    require_peers();
    let gateway = mandate();
    for sdk in Sdk::BOTH {
        let FilesystemSession {
            files: _files,
            root,
            task,
            out,
        } = filesystem_session(&gateway, sdk, LISTING_OPEN_WORLD);
        let s = steps(&out);
        assert_eq!(out["server"], "secure-filesystem-server", "{sdk:?}: {out}");

        // Allowed: the server's real answer, and the decision in `_meta`.
        assert_eq!(s[0]["isError"], false, "{sdk:?}: {out}");
        assert_eq!(s[0]["text"], "hello notes\n", "{sdk:?}: {out}");
        let read = receipt_in_meta(&gateway, &s[0], "allow");
        assert_eq!(read["call"]["tool"], "read_text_file", "{read}");
        assert_eq!(read["principal"]["id"], AGENT, "{read}");
        // Denied by policy: never reached the server.
        assert_eq!(s[1]["isError"], true, "{sdk:?}: {out}");
        let text = s[1]["text"].as_str().unwrap();
        assert!(text.contains("protected-files"), "{sdk:?}: {text}");
        assert_eq!(
            std::fs::read_to_string(root.join("protected.txt")).unwrap(),
            "keep me\n"
        );
        let denied = decision_id(text);
        let receipt = gateway.receipt(&denied);
        assert_eq!(receipt["decision"], "deny");
        assert_eq!(receipt["call"]["tool"], "write_file");
        assert_eq!(receipt["call"]["server"], "fs");
        assert_eq!(denial_in_meta(&gateway, &s[1], "deny"), receipt);
        // An allowed write happened.
        assert_eq!(s[2]["isError"], false, "{sdk:?}: {out}");
        let write = receipt_in_meta(&gateway, &s[2], "allow");
        assert_eq!(write["call"]["tool"], "write_file", "{write}");
        assert_eq!(
            std::fs::read_to_string(root.join("new.txt")).unwrap(),
            "written"
        );
        // The listing is open-world by the override: its result is untrusted,
        // and the next write is denied for it.
        assert_eq!(s[3]["isError"], false, "{sdk:?}: {out}");
        assert!(s[3]["text"].as_str().unwrap().contains("notes.txt"));
        assert_eq!(s[4]["isError"], true, "{sdk:?}: {out}");
        assert!(
            s[4]["text"]
                .as_str()
                .unwrap()
                .contains("untrusted-no-writes"),
            "{sdk:?}: {out}"
        );
        assert!(!root.join("late.txt").exists());
        denial_in_meta(&gateway, &s[4], "deny");
        // A tool the credential does not grant.
        assert_eq!(s[5]["isError"], true, "{sdk:?}: {out}");
        assert!(
            s[5]["text"]
                .as_str()
                .unwrap()
                .contains("mandate:credential-scope"),
            "{sdk:?}: {out}"
        );
        denial_in_meta(&gateway, &s[5], "deny");
        // The history knows the allowed calls by the ids the client got.
        let reads = history(&gateway, &task, "read_text_file");
        assert_eq!(
            reads[0]["decision_id"], s[0]["meta"][DECISION_META]["decision_id"],
            "{sdk:?}: {reads:?}"
        );

        // The task's history has the allowed calls with their results, and
        // each decision has a receipt.
        let reads = history(&gateway, &task, "read_text_file");
        assert_eq!(reads.len(), 1, "{reads:?}");
        assert_eq!(reads[0]["decision"], "allow");
        assert_eq!(reads[0]["result"]["status"], "ok", "{reads:?}");
        let allowed = gateway.receipt(reads[0]["decision_id"].as_str().unwrap());
        assert_eq!(allowed["decision"], "allow");
        assert_eq!(allowed["principal"]["id"], AGENT, "{allowed}");
        let listings = history(&gateway, &task, "list_directory");
        assert_eq!(
            listings[0]["result"]["labels"],
            json!(["untrusted"]),
            "{listings:?}"
        );
        let writes = history(&gateway, &task, "write_file");
        let decisions: Vec<&Value> = writes.iter().map(|w| &w["decision"]).collect();
        assert_eq!(decisions, ["deny", "allow", "deny"], "{writes:?}");
    }
}

/// As a configured agent (no credential), on the everything server: the
/// whole protocol passes (progress, sampling from the server to the client,
/// resources, prompts), `hide_denied_tools` keeps only the task's tools, and
/// a tool outside them is denied with its decision id.
#[test]
fn everything_server_as_a_configured_agent() {
    require_peers();
    let gateway = mandate();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcp.toml");
    std::fs::write(
        &config,
        "hide_denied_tools = true\n[task]\nintent = \"demo\"\ntools = [\"echo\", \"trigger-long-running-operation\", \"trigger-sampling-request\"]\n",
    )
    .unwrap();
    let plan = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "echo", "arguments": {"message": "hi"}},
        {"op": "call", "tool": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 3}, "progress": true},
        {"op": "call", "tool": "trigger-sampling-request", "arguments": {"prompt": "x"}},
        {"op": "call", "tool": "get-env", "arguments": {}},
        {"op": "list_resources"},
        {"op": "read_resource", "uri": "demo://resource/static/document/features.md"},
        {"op": "list_prompts"},
        {"op": "get_prompt", "name": "simple-prompt"},
    ]);
    // One agent run (session) each: the second would otherwise start after
    // the first one's open-world result.
    for (sdk, session) in [(Sdk::Python, "run-1"), (Sdk::Node, "run-2")] {
        let command = wrap_command(
            &gateway,
            &[
                "--agent",
                AGENT,
                "--session",
                session,
                "--config",
                config.to_str().unwrap(),
            ],
            &everything_server(),
        );
        let out = run_stdio(sdk, &plan, &command);
        check_everything(sdk, &gateway, &out, "mcp-servers-everything");
    }
}

/// The server's own `_meta` reaches the client beside the gateway's
/// decision, and the server's claim of the gateway's key is overruled:
/// through a wrap of the server, and through a wrap of several servers
/// (`[[servers]]`), whose front passes on what each server's relay wrote.
#[test]
fn the_servers_own_meta_is_kept_beside_the_decision() {
    require_peers();
    let gateway = mandate();
    let dir = tempfile::tempdir().unwrap();
    let notes = notes_stdio(&dir.path().join("notes.txt"));
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let task = "[task]\nintent = \"notes\"\ntools = [\"stamped_note\"]\n";
    let single = dir.path().join("single.toml");
    std::fs::write(&single, task).unwrap();
    let several = dir.path().join("several.toml");
    let server = |name: &str, command: &[String]| {
        format!(
            "\n[[servers]]\nname = {name:?}\ncommand = {}\nargs = {}\n",
            serde_json::to_string(&command[0]).unwrap(),
            serde_json::to_string(&command[1..]).unwrap()
        )
    };
    std::fs::write(
        &several,
        format!(
            "{task}{}{}",
            server("notes", &notes),
            server("fs", &filesystem_server(&files))
        ),
    )
    .unwrap();
    let wrap_several = vec![
        env!("CARGO_BIN_EXE_mandate").to_owned(),
        "mcp".to_owned(),
        "wrap".to_owned(),
        "--gateway".to_owned(),
        format!("http://{}", gateway.server.addr()),
        "--agent".to_owned(),
        AGENT.to_owned(),
        "--config".to_owned(),
        several.display().to_string(),
        "--session".to_owned(),
        "several".to_owned(),
    ];
    let wrap_single = wrap_command(
        &gateway,
        &[
            "--agent",
            AGENT,
            "--session",
            "single",
            "--name",
            "notes",
            "--config",
            single.to_str().unwrap(),
        ],
        &notes,
    );
    for (command, tool) in [
        (wrap_single, "stamped_note"),
        (wrap_several, "notes__stamped_note"),
    ] {
        for sdk in Sdk::BOTH {
            let plan = json!([{"op": "call", "tool": tool, "arguments": {}}]);
            let out = run_stdio(sdk, &plan, &command);
            let step = &steps(&out)[0];
            assert_eq!(step["text"], "stamped", "{sdk:?} {tool}: {out}");
            assert_eq!(
                step["meta"]["com.example.notes/trace"],
                json!({"span": "notes-1"}),
                "{sdk:?} {tool}: {out}"
            );
            let receipt = receipt_in_meta(&gateway, step, "allow");
            assert_eq!(receipt["call"]["server"], "notes", "{receipt}");
            assert_eq!(receipt["call"]["tool"], "stamped_note", "{receipt}");
            assert_eq!(
                step["meta"].as_object().unwrap().len(),
                2,
                "{sdk:?} {tool}: {out}"
            );
        }
    }
}

/// A wrapper driven line by line, as a hostile client would.
struct RawWrapper {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl RawWrapper {
    fn start(command: &[String]) -> Self {
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// `initialize` (id 1), answered by the server, then
    /// `notifications/initialized`.
    fn initialize(&mut self) {
        self.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}).to_string());
        assert!(self.answer(&json!(1))["result"]["serverInfo"].is_object());
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    }

    fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next message whose id is `id`, skipping notifications.
    fn answer(&self, id: &Value) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("no answer with id {id}: {e}"));
            let message: Value = serde_json::from_str(&line).unwrap();
            if &message["id"] == id {
                return message;
            }
        }
    }
}

impl Drop for RawWrapper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Malformed and hostile client messages get JSON-RPC errors (with their id
/// when they have one, `null` otherwise), nothing crashes or hangs, and a
/// `tools/call` with bad params never reaches the server.
#[test]
fn hostile_client_messages_get_json_rpc_errors() {
    require_peers();
    let gateway = mandate();
    let files = tempfile::tempdir().unwrap();
    let root = files.path().canonicalize().unwrap();
    std::fs::write(root.join("protected.txt"), "keep me\n").unwrap();
    let command = wrap_command(
        &gateway,
        &["--agent", AGENT, "--max-message-bytes", "4096"],
        &filesystem_server(&root),
    );
    let mut wrapper = RawWrapper::start(&command);
    wrapper.initialize();

    wrapper.send("this is not json");
    let e = wrapper.answer(&Value::Null);
    assert_eq!(e["error"]["code"], -32700, "{e}");

    wrapper.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":7}}"#);
    assert_eq!(wrapper.answer(&json!(2))["error"]["code"], -32602);

    wrapper.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"write_file","arguments":["x"]}}"#);
    assert_eq!(wrapper.answer(&json!(3))["error"]["code"], -32602);

    wrapper.send(r#"{"jsonrpc":"1.0","id":4,"method":"tools/list"}"#);
    assert_eq!(wrapper.answer(&json!(4))["error"]["code"], -32600);

    wrapper.send("[]");
    assert_eq!(wrapper.answer(&Value::Null)["error"]["code"], -32600);

    let big = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"write_file","arguments":{{"path":"{}","content":"{}"}}}}}}"#,
        root.join("protected.txt").display(),
        "x".repeat(8000)
    );
    wrapper.send(&big);
    assert_eq!(wrapper.answer(&Value::Null)["error"]["code"], -32600);

    // A response to a request nobody sent is dropped, not relayed.
    wrapper.send(r#"{"jsonrpc":"2.0","id":"nobody-asked","result":{}}"#);
    // Duplicate keys are refused outright: parsers disagree on which one
    // wins, so the gateway could decide one message and the server run
    // another (here: seen as `ping`, run as `tools/call` by a first-wins
    // parser).
    wrapper.send(&format!(
        r#"{{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{{"name":"read_text_file","name":"write_file","arguments":{{"path":"{}","content":"pwned"}}}}}}"#,
        root.join("protected.txt").display()
    ));
    let answer = wrapper.answer(&Value::Null);
    assert_eq!(answer["error"]["code"], -32700, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate key"),
        "{answer}"
    );
    wrapper.send(&format!(
        r#"{{"jsonrpc":"2.0","id":8,"method":"tools/call","method":"ping","params":{{"name":"write_file","arguments":{{"path":"{}","content":"pwned"}}}}}}"#,
        root.join("protected.txt").display()
    ));
    assert_eq!(wrapper.answer(&Value::Null)["error"]["code"], -32700);
    // A `tools/call` without an id (a notification to JSON-RPC, which some
    // servers run without answering) is dropped, never relayed undecided.
    wrapper.send(&format!(
        r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"write_file","arguments":{{"path":"{}","content":"pwned"}}}}}}"#,
        root.join("protected.txt").display()
    ));

    // Still alive and relaying.
    wrapper.send(r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#);
    assert_eq!(wrapper.answer(&json!(7))["result"], json!({}));
    assert_eq!(
        std::fs::read_to_string(root.join("protected.txt")).unwrap(),
        "keep me\n"
    );
}

/// With the Mandate server unreachable, every call is denied (fail closed),
/// and the tool error says why.
#[test]
fn no_decision_means_deny() {
    require_peers();
    let files = tempfile::tempdir().unwrap();
    let root = files.path().canonicalize().unwrap();
    std::fs::write(root.join("notes.txt"), "hello\n").unwrap();
    let mut command = vec![
        env!("CARGO_BIN_EXE_mandate").to_owned(),
        "mcp".to_owned(),
        "wrap".to_owned(),
        "--gateway".to_owned(),
        format!("http://127.0.0.1:{}", util::mcp::free_port()),
        "--agent".to_owned(),
        AGENT.to_owned(),
        "--".to_owned(),
    ];
    command.extend(filesystem_server(&root));
    let plan = json!([
        {"op": "call", "tool": "write_file", "arguments": {"path": root.join("notes.txt").display().to_string(), "content": "pwned"}},
    ]);
    for sdk in Sdk::BOTH {
        let out = run_stdio(sdk, &plan, &command);
        let step = &steps(&out)[0];
        assert_eq!(step["isError"], true, "{out}");
        assert!(
            step["text"]
                .as_str()
                .unwrap()
                .contains("could not decide `write_file`, so the call is denied"),
            "{out}"
        );
        // No decision was made, so none is named.
        assert_eq!(step["meta"], Value::Null, "{out}");
        assert_eq!(
            std::fs::read_to_string(root.join("notes.txt")).unwrap(),
            "hello\n"
        );
    }
}

/// `mandate mcp wrap` as a configured agent whose task is to tidy files
/// (`move_file`, which the test pack gates on a person's approval, waited
/// for up to `wait`) in front of the filesystem server on `root`; its
/// config goes in `dir`.
fn tidy_with_approvals(
    gateway: &util::tasks::Gateway,
    dir: &Path,
    root: &Path,
    wait: &str,
) -> Vec<String> {
    let config = dir.join("mcp.toml");
    std::fs::write(
        &config,
        "[task]\nintent = \"tidy\"\ntools = [\"move_file\"]\n",
    )
    .unwrap();
    wrap_command(
        gateway,
        &[
            "--agent",
            AGENT,
            "--config",
            config.to_str().unwrap(),
            "--approval-wait",
            wait,
        ],
        &filesystem_server(root),
    )
}

/// An approval gate holds the call until a person answers: approved, the
/// call runs (the file is moved); denied, it never reaches the server. The
/// approver answers through the approvals API while the SDK client waits.
/// Either way the result's `_meta` names the decision and the approval:
/// the allow the approval released, or the ask that waited on it.
#[test]
fn approvals_release_or_stop_a_waiting_call() {
    require_peers();
    let approver_token = "approver-token-for-the-mcp-tests";
    let gateway = util::mcp::mandate_with_approver("bob@example.com", approver_token);
    let files = tempfile::tempdir().unwrap();
    let root = files.path().canonicalize().unwrap();
    let command = tidy_with_approvals(&gateway, files.path(), &root, "60s");
    for (sdk, verdict) in [(Sdk::Python, "approve"), (Sdk::Node, "deny")] {
        let from = root.join(format!("{verdict}-from.txt"));
        let to = root.join(format!("{verdict}-to.txt"));
        std::fs::write(&from, "move me\n").unwrap();
        let plan = json!([
            {"op": "call", "tool": "move_file", "arguments": {
                "source": from.display().to_string(), "destination": to.display().to_string()}},
        ]);
        let command = command.clone();
        let client = std::thread::spawn(move || run_stdio(sdk, &plan, &command));
        let approval = util::mcp::pending_approval(&gateway, approver_token);
        util::mcp::resolve_approval(&gateway, approver_token, &approval, verdict);
        let out = client.join().unwrap();
        let step = &steps(&out)[0];
        assert_eq!(
            step["meta"][DECISION_META]["approval_id"], approval,
            "{out}"
        );
        if verdict == "approve" {
            assert_eq!(step["isError"], false, "{out}");
            assert!(to.exists() && !from.exists(), "{out}");
            let receipt = receipt_in_meta(&gateway, step, "allow");
            assert_eq!(receipt["approval"]["id"], approval, "{receipt}");
            assert_eq!(receipt["approver"], "bob@example.com", "{receipt}");
        } else {
            assert_eq!(step["isError"], true, "{out}");
            let text = step["text"].as_str().unwrap();
            assert!(text.contains("denied"), "{text}");
            assert!(text.contains(&approval), "{text}");
            assert!(from.exists() && !to.exists(), "{out}");
            let receipt = denial_in_meta(&gateway, step, "approval_required");
            assert_eq!(receipt["approval"]["id"], approval, "{receipt}");
        }
    }
}

/// A call cancelled while it waits for a person's approval stops waiting at
/// once (its id is free again well before the 60 s wait would end), never
/// reaches the server and gets no answer; its approval is withdrawn, so no
/// approver can answer it any more. The same call, not cancelled, runs once
/// approved.
#[test]
fn a_call_cancelled_while_it_waits_for_approval_never_runs() {
    require_peers();
    let approver_token = "approver-token-for-the-stdio-cancellation-test";
    let gateway = util::mcp::mandate_with_approver("carol@example.com", approver_token);
    let files = tempfile::tempdir().unwrap();
    let root = files.path().canonicalize().unwrap();
    for name in ["cancelled", "kept"] {
        std::fs::write(root.join(format!("{name}-from.txt")), "move me\n").unwrap();
    }
    let mut wrapper = RawWrapper::start(&tidy_with_approvals(&gateway, files.path(), &root, "60s"));
    wrapper.initialize();
    let move_file = |id: u64, name: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "move_file", "arguments": {
                "source": root.join(format!("{name}-from.txt")).display().to_string(),
                "destination": root.join(format!("{name}-to.txt")).display().to_string()}}})
        .to_string()
    };

    wrapper.send(&move_file(5, "cancelled"));
    let approval = util::mcp::pending_approval(&gateway, approver_token);
    wrapper.send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5,"reason":"changed my mind"}}"#);
    // While call 5 is decided its id is taken ("already in progress"); once
    // the cancellation has ended the wait, a `ping` with the same id is
    // answered. Nothing else with id 5 may come: a cancelled request gets
    // no answer.
    util::poll_until(Duration::from_secs(20), "id 5 to be free", || {
        wrapper.send(r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#);
        let answer = wrapper.answer(&json!(5));
        if answer["result"] == json!({}) {
            return Ok(());
        }
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("already in progress"), "{answer}");
        Err(answer)
    });
    // Nobody waits for its approval any more: the gateway withdrew it.
    util::mcp::assert_withdrawn(
        &gateway,
        approver_token,
        &approval,
        "the MCP client cancelled the call",
    );

    wrapper.send(&move_file(6, "kept"));
    let approval = util::mcp::pending_approval(&gateway, approver_token);
    util::mcp::resolve_approval(&gateway, approver_token, &approval, "approve");
    let answer = wrapper.answer(&json!(6));
    let text = answer["result"]["content"][0]["text"].as_str();
    assert!(
        text.is_some_and(|t| t.contains("Successfully moved")),
        "{answer}"
    );
    assert!(root.join("kept-to.txt").exists(), "{answer}");
    assert!(
        root.join("cancelled-from.txt").exists() && !root.join("cancelled-to.txt").exists(),
        "the cancelled call reached the server"
    );
}

/// When nobody answers within `--approval-wait`, the call is denied with a
/// tool error that names the approval, and the gateway withdraws the
/// approval, saying why: nobody waits for it any more.
#[test]
fn an_approval_nobody_answers_in_time_is_withdrawn() {
    require_peers();
    let approver_token = "approver-token-for-the-stdio-wait-test";
    let gateway = util::mcp::mandate_with_approver("dave@example.com", approver_token);
    let files = tempfile::tempdir().unwrap();
    let root = files.path().canonicalize().unwrap();
    std::fs::write(root.join("from.txt"), "move me\n").unwrap();
    let mut wrapper = RawWrapper::start(&tidy_with_approvals(&gateway, files.path(), &root, "1s"));
    wrapper.initialize();
    wrapper.send(
        &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
            "name": "move_file", "arguments": {
                "source": root.join("from.txt").display().to_string(),
                "destination": root.join("to.txt").display().to_string()}}})
        .to_string(),
    );
    let answer = wrapper.answer(&json!(5));
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("no one answered within 1s"), "{text}");
    let approval = text
        .rsplit("approval ")
        .next()
        .unwrap()
        .trim_end_matches('.')
        .to_owned();
    util::mcp::assert_withdrawn(
        &gateway,
        approver_token,
        &approval,
        "nobody answered within the MCP gateway's approval wait",
    );
    assert!(!root.join("to.txt").exists());
}

/// Against a server that decides without a task credential only for
/// configured callers, the wrapper in agent mode presents its caller token
/// (`--caller-token-file`) and its calls are decided; without the token
/// every call is denied, fail closed, naming `caller_required`.
#[test]
fn an_agent_mode_wrap_presents_its_caller_token() {
    require_peers();
    let made = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["callers", "token", "--name", "desktop", "--json"])
        .output()
        .unwrap();
    let made: Value = serde_json::from_slice(&made.stdout).unwrap();
    let pack = util::mcp::peers_dir()
        .join("policies")
        .canonicalize()
        .unwrap();
    let gateway = util::tasks::gateway_with(&format!(
        "policies = {:?}\ndecide_access = \"callers\"\n\n[[callers]]\nname = \"desktop\"\ntoken_sha256 = {:?}\n",
        pack.display().to_string(),
        made["token_sha256"].as_str().unwrap()
    ));
    let files = tempfile::tempdir().unwrap();
    let root = files.path().canonicalize().unwrap();
    std::fs::write(root.join("notes.txt"), "hello notes\n").unwrap();
    let token_file = files.path().join("caller.token");
    std::fs::write(&token_file, made["token"].as_str().unwrap()).unwrap();
    let config = files.path().join("mcp.toml");
    std::fs::write(&config, "[task]\ntools = [\"read_text_file\"]\n").unwrap();
    let plan = json!([
        {"op": "call", "tool": "read_text_file", "arguments": {"path": root.join("notes.txt").display().to_string()}},
    ]);
    let args = ["--agent", AGENT, "--config", config.to_str().unwrap()];
    let mut with_token = args.to_vec();
    with_token.extend(["--caller-token-file", token_file.to_str().unwrap()]);
    let out = run_stdio(
        Sdk::Python,
        &plan,
        &wrap_command(&gateway, &with_token, &filesystem_server(&root)),
    );
    let step = &steps(&out)[0];
    assert_eq!(step["isError"], false, "{out}");
    assert!(
        step["text"].as_str().unwrap().contains("hello notes"),
        "{out}"
    );

    let out = run_stdio(
        Sdk::Python,
        &plan,
        &wrap_command(&gateway, &args, &filesystem_server(&root)),
    );
    let step = &steps(&out)[0];
    assert_eq!(step["isError"], true, "{out}");
    assert!(
        step["text"].as_str().unwrap().contains("caller_required"),
        "{out}"
    );
}

/// The README's MCP quick start as written: `examples/mcp/agent.py` (the
/// Python SDK) runs the filesystem server behind `mandate mcp wrap` with
/// `examples/mcp/mcp.toml`, in agent mode, against a server that runs on
/// its defaults (the example pack) with one approver. The declared read is
/// allowed, the undeclared write denied before it reaches the server, and
/// the edit waits until the approver approves it, then runs.
#[test]
fn the_readme_mcp_quick_start_allows_denies_and_waits_for_a_person() {
    require_peers();
    const TOKEN: &str = "mnd_apr_quick-start-approver-token-7d0c";
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("mandate.toml");
    std::fs::write(
        &config,
        format!(
            "[[approvers]]\nname = \"you@example.com\"\ntoken_sha256 = \"{}\"\n",
            sha256_hex(TOKEN)
        ),
    )
    .unwrap();
    let server = util::Launch::serve(&work.path().join("data"))
        .arg("--config")
        .arg(&config)
        .start();
    let notes = work.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.md"), "- buy milk\n").unwrap();

    // `mandate` on the PATH, as the README's install step puts it; the
    // filesystem server from tests/mcp rather than through npx.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = Path::new(env!("CARGO_BIN_EXE_mandate")).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(bin.to_owned()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let mut filesystem = filesystem_server(&notes);
    filesystem.pop();
    let mut agent = Command::new(util::mcp::python())
        .arg(repo.join("examples/mcp/agent.py"))
        .arg(&notes)
        .arg("--")
        .args(&filesystem)
        .env("PATH", path)
        .env("MANDATE_GATEWAY", server.url(""))
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The person: the edit shows up in the queue, and is approved.
    let pending = util::poll_until(Duration::from_secs(60), "the edit to wait", || {
        let list = server
            .call(
                reqwest::Method::GET,
                "/v1/approvals?status=pending",
                Some(TOKEN),
                None,
            )
            .json();
        match list["items"].as_array().and_then(|items| items.first()) {
            Some(item) => Ok(item.clone()),
            None => Err(list),
        }
    });
    assert_eq!(pending["summary"]["tool"], "edit_file", "{pending}");
    let id = pending["id"].as_str().unwrap();
    let approved = server.call(
        reqwest::Method::POST,
        &format!("/v1/approvals/{id}/approve"),
        Some(TOKEN),
        Some(&json!({"reason": "oat milk it is"})),
    );
    assert_eq!(approved.status, 200, "{}", approved.body);

    let (out, err) = util::mcp::wait_output(&mut agent, Duration::from_secs(90), "the agent");
    let status = agent.wait().unwrap();
    assert!(status.success(), "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    let after = |tool: &str| {
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("{tool}:")))
            .unwrap_or_else(|| panic!("no `{tool}` in:\n{out}\n{err}"));
        lines[at + 1].trim()
    };
    assert_eq!(after("list_directory"), "ok: [FILE] todo.md", "{out}");
    assert!(
        after("write_file").starts_with("refused: Mandate denied `write_file`: the tool is not among the tools declared for the task"),
        "{out}"
    );
    assert!(after("edit_file").starts_with("ok:"), "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(notes.join("todo.md")).unwrap(),
        "- buy oat milk\n"
    );
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
