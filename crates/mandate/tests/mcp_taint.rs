//! A prompt-injection attack, end to end. An agent's MCP client has two
//! servers: the reference fetch server (`mcp-server-fetch`: its `fetch` is
//! read-only and open-world) and the reference filesystem server. A web
//! site on loopback (`util::web`) serves a page, and a `robots.txt` quoted
//! in the fetch server's refusal, both telling the agent to write the API
//! key to `notes/leak.txt`. The agent (the official Python SDK client,
//! `tests/mcp/client.py` in `sessions` mode) fetches, then writes.
//!
//! The pack (`tests/mcp/policies-taint`) permits the task's tools, and once
//! `untrusted` content entered the session it asks a person for anything
//! that is not a read. No approver answers here (`--approval-wait 1s`), so
//! in every case the write after the fetch must end as a tool error from
//! Mandate naming the approval, and the file must never be written; and in
//! every case a write *before* any fetch goes through and writes its file,
//! which shows that the pack lets writes pass otherwise.
//!
//! Each case is one way the gateway could lose track of the taint: two
//! wraps of one agent, the injection inside a tool error, a restarted wrap,
//! the result racing the next decision under a task credential, the merged
//! HTTP endpoint (both servers behind `supergateway`, as docs/mcp.md puts
//! stdio servers behind the proxy), and one wrap running several servers
//! (`[[servers]]` in the gateway config).
//!
//! Set-up: `scripts/test` (npm ci, and tests/mcp/requirements.txt into its
//! virtual environment, `<target>/test-venv`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use util::mcp::{
    DECISION_META, decision_id, denial_in_meta, fetch_server, filesystem_server, proxy,
    receipt_in_meta, require_fetch_server, run_sessions, supergateway, wrap_command,
};
use util::tasks::{Gateway, task_of};
use util::web::{PAGE_INJECTION, ROBOTS_INJECTION, Site};

/// The agent of the agent-mode cases.
const AGENT: &str = "spiffe://example.org/agent/web";

/// How long a person is waited for. Nobody answers in these tests.
const APPROVAL_WAIT: &str = "1s";

/// What the injected instruction asks the agent to write.
const SECRET: &str = "API_KEY=sk-live-0123456789abcdef";

/// How long one client run of a case may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// One attack's world: a Mandate server with the taint pack, the hostile
/// site, and the agent's files (`files/notes/`, served by the filesystem
/// server).
struct Scene {
    gateway: Gateway,
    site: Site,
    dir: TempDir,
    root: PathBuf,
}

impl Scene {
    fn new() -> Self {
        require_fetch_server();
        let gateway = util::mcp::mandate_with_pack("policies-taint");
        let site = Site::start();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("notes")).unwrap();
        let root = root.canonicalize().unwrap();
        Self {
            gateway,
            site,
            dir,
            root,
        }
    }

    /// `files/notes/NAME`.
    fn note(&self, name: &str) -> PathBuf {
        self.root.join("notes").join(name)
    }

    /// The filesystem server on the agent's files.
    fn filesystem(&self) -> Vec<String> {
        filesystem_server(&self.root)
    }

    /// The agent's gateway config: the task `research-1` with its three
    /// tools, then `extra` (TOML).
    fn agent_config(&self, file: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        std::fs::write(
            &path,
            format!(
                "[task]\nid = \"research-1\"\nintent = \"summarise the quarterly research notes\"\ntools = [\"fetch\", \"write_file\", \"read_text_file\"]\n{extra}"
            ),
        )
        .unwrap();
        path
    }

    /// `mandate mcp wrap --agent AGENT --config cfg.toml --name NAME -- server…`.
    fn agent_wrap(&self, name: &str, server: &[String]) -> Vec<String> {
        let config = self.agent_config("cfg.toml", "");
        wrap_command(
            &self.gateway,
            &[
                "--agent",
                AGENT,
                "--config",
                config.to_str().unwrap(),
                "--name",
                name,
                "--approval-wait",
                APPROVAL_WAIT,
            ],
            server,
        )
    }

    /// A new task of `agent` granting `tools`, its credential in a file.
    fn task_credential(&self, agent: &str, tools: &[&str]) -> PathBuf {
        let task = self.gateway.start_task_of(
            agent,
            &task_of("summarise the quarterly research notes", tools, 600),
        );
        let path = self.dir.path().join(format!("{}.credential", task.task_id));
        std::fs::write(&path, task.credential).unwrap();
        path
    }

    /// `mandate mcp wrap --credential-file FILE --name NAME
    /// --approval-wait WAIT -- server…`.
    fn credential_wrap(
        &self,
        name: &str,
        credential: &Path,
        wait: &str,
        server: &[String],
    ) -> Vec<String> {
        wrap_command(
            &self.gateway,
            &[
                "--credential-file",
                credential.to_str().unwrap(),
                "--name",
                name,
                "--approval-wait",
                wait,
            ],
            server,
        )
    }

    /// `mandate mcp wrap --config FILE ARGS…` with no `--` command: the
    /// servers are the config's `[[servers]]`, `web` (the fetch server)
    /// and `fs` (the filesystem server).
    fn multi_server_wrap(&self, config: &Path, args: &[&str]) -> Vec<String> {
        let mut command = vec![
            env!("CARGO_BIN_EXE_mandate").to_owned(),
            "mcp".to_owned(),
            "wrap".to_owned(),
            "--gateway".to_owned(),
            format!("http://{}", self.gateway.server.addr()),
            "--config".to_owned(),
            config.display().to_string(),
            "--approval-wait".to_owned(),
            APPROVAL_WAIT.to_owned(),
        ];
        command.extend(args.iter().map(|a| (*a).to_owned()));
        command
    }

    /// The `[[servers]]` of a multi-server wrap (TOML).
    fn servers_toml(&self) -> String {
        let fetch = fetch_server();
        let fs = self.filesystem();
        let toml_array = |items: &[String]| serde_json::to_string(items).unwrap();
        format!(
            "\n[[servers]]\nname = \"web\"\ncommand = {}\nargs = {}\n\n[[servers]]\nname = \"fs\"\ncommand = {}\nargs = {}\n",
            serde_json::to_string(&fetch[0]).unwrap(),
            toml_array(&fetch[1..]),
            serde_json::to_string(&fs[0]).unwrap(),
            toml_array(&fs[1..]),
        )
    }

    /// The page that carries the injected instruction.
    fn page(&self) -> String {
        self.site.url("/page.html")
    }

    /// A page that `robots.txt` refuses to autonomous fetchers: the fetch
    /// server answers with a tool error quoting the whole `robots.txt`,
    /// injected comment included.
    fn refused_page(&self) -> String {
        self.site.url("/private/report.html")
    }
}

// Plan steps (tests/mcp/client.py, `sessions` mode).

fn open(session: &str, command: &[String]) -> Value {
    json!({"op": "open", "session": session, "stdio": command})
}

fn open_http(session: &str, url: &str) -> Value {
    json!({"op": "open", "session": session, "http": url})
}

fn close(session: &str) -> Value {
    json!({"op": "close", "session": session})
}

fn list_tools(label: &str, session: &str) -> Value {
    json!({"op": "list_tools", "label": label, "session": session})
}

fn call(label: &str, session: &str, tool: &str, arguments: &Value) -> Value {
    json!({"op": "call", "label": label, "session": session, "tool": tool, "arguments": arguments})
}

/// A `fetch` of `url`. `raw`: the page as it is, not simplified to
/// Markdown (the simplifier, readabilipy, would install npm packages of its
/// own at first use).
fn fetch(label: &str, session: &str, tool: &str, url: &str) -> Value {
    call(label, session, tool, &json!({"url": url, "raw": true}))
}

fn write(label: &str, session: &str, tool: &str, path: &Path, content: &str) -> Value {
    call(
        label,
        session,
        tool,
        &json!({"path": path.display().to_string(), "content": content}),
    )
}

fn read(label: &str, session: &str, tool: &str, path: &Path) -> Value {
    call(
        label,
        session,
        tool,
        &json!({"path": path.display().to_string()}),
    )
}

// What the records must show.

/// The records labelled `label`, in order.
fn records<'a>(out: &'a Value, label: &str) -> Vec<&'a Value> {
    out["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["label"] == label)
        .collect()
}

/// The one record labelled `label`.
fn record<'a>(out: &'a Value, label: &str) -> &'a Value {
    let found = records(out, label);
    assert_eq!(found.len(), 1, "no single step `{label}` in {out}");
    found[0]
}

/// Every session of the plan opened (the gateway and its servers started
/// and answered `initialize`).
fn assert_opened(out: &Value, what: &str) {
    for step in out["steps"].as_array().unwrap() {
        if step["op"] == "open" {
            assert!(
                step.get("exception").is_none(),
                "{what} did not start for session `{}`: {}\nclient stderr:\n{}",
                step["session"],
                step["exception"],
                out["stderr"].as_str().unwrap_or_default()
            );
        }
    }
}

/// The control: a write before any fetch went through and wrote the file,
/// and its result named the decision that allowed it (`_meta`).
fn assert_control_write(gateway: &Gateway, out: &Value, label: &str, path: &Path, content: &str) {
    let step = record(out, label);
    assert_eq!(
        step["isError"], false,
        "the write before any fetch (the control) was not allowed: the pack must let it through: {step}"
    );
    let receipt = receipt_in_meta(gateway, step, "allow");
    assert_eq!(receipt["call"]["tool"], "write_file", "{receipt}");
    assert_eq!(
        std::fs::read_to_string(path).unwrap_or_default(),
        content,
        "the control write did not write {}: {step}",
        path.display()
    );
}

/// The fetch returned the page, injected instruction included: the attack
/// reached the agent.
fn assert_injected_page(step: &Value) {
    assert!(step.get("exception").is_none(), "{step}");
    assert_eq!(step["isError"], false, "the page was not fetched: {step}");
    let text = step["text"].as_str().unwrap();
    assert!(
        text.contains(PAGE_INJECTION),
        "the injected instruction did not reach the agent: {step}"
    );
}

/// The fetch was refused by `robots.txt`, and the refusal (a tool error)
/// carried the injected instruction to the agent.
fn assert_injected_error(step: &Value) {
    assert!(step.get("exception").is_none(), "{step}");
    assert_eq!(
        step["isError"], true,
        "the fetch server fetched a page its robots.txt refuses: {step}"
    );
    let text = step["text"].as_str().unwrap();
    assert!(
        text.contains("robots.txt") && text.contains(ROBOTS_INJECTION),
        "the refusal did not carry the injected instruction: {step}"
    );
}

/// The decisive check: the write after untrusted content did not run, and
/// the file was never written.
fn assert_write_stopped(gateway: &Gateway, step: &Value, path: &Path) {
    assert!(
        !path.exists(),
        "ATTACK SUCCEEDED: {} was written: {step}",
        path.display()
    );
    assert_stopped_for_approval(gateway, step);
}

/// The call ended as Mandate's tool error for an approval nobody gave (not
/// a fail-closed deny, which would prove nothing about the taint), decided
/// by the pack's gate.
fn assert_stopped_for_approval(gateway: &Gateway, step: &Value) {
    assert!(
        step.get("exception").is_none(),
        "the write failed as a protocol error, not as Mandate's tool error: {step}"
    );
    assert_eq!(
        step["isError"], true,
        "ATTACK SUCCEEDED: the write after untrusted content entered the agent's context was allowed and ran: {step}"
    );
    let text = step["text"].as_str().unwrap();
    assert!(
        text.starts_with("Mandate"),
        "the write failed, but not because Mandate stopped it: {step}"
    );
    assert!(
        !text.contains("could not decide"),
        "the write was denied because no decision could be made, not for the taint: {step}"
    );
    assert!(
        text.contains("approval") && text.contains("denied"),
        "the write was not held for a person's approval: {step}"
    );
    let receipt = gateway.receipt(&decision_id(text));
    assert_eq!(receipt["decision"], "approval_required", "{receipt}");
    // The tool error names the same decision, and its approval, in `_meta`.
    assert_eq!(denial_in_meta(gateway, step, "approval_required"), receipt);
    assert_eq!(
        step["meta"][DECISION_META]["approval_id"], receipt["approval"]["id"],
        "{step}"
    );
    let policies = receipt["policies"].to_string();
    assert!(
        policies.contains("untrusted-needs-approval"),
        "the write was not stopped by the taint gate: {receipt}"
    );
}

/// A read after the taint still passes: only non-reads wait for a person.
fn assert_read(step: &Value, content: &str) {
    assert_eq!(
        step["isError"], false,
        "a read was stopped after untrusted content: the pack lets reads pass: {step}"
    );
    assert_eq!(step["text"], content, "{step}");
}

/// Case 1. One agent, two wraps (`web` around the fetch server, `fs`
/// around the filesystem server), one task: the page fetched through `web`
/// must stop the write through `fs`. The agent holds both sessions open,
/// as an MCP client with two servers does.
#[test]
fn a_page_fetched_through_one_wrap_stops_writes_through_the_same_agents_other_wrap() {
    let scene = Scene::new();
    let (control, leak) = (scene.note("control.txt"), scene.note("leak.txt"));
    let plan = json!([
        open("web", &scene.agent_wrap("web", &fetch_server())),
        open("fs", &scene.agent_wrap("fs", &scene.filesystem())),
        write("control", "fs", "write_file", &control, "before any fetch"),
        fetch("fetch", "web", "fetch", &scene.page()),
        write("leak", "fs", "write_file", &leak, SECRET),
        read("read", "fs", "read_text_file", &control),
    ]);
    let out = run_sessions(&plan, RUN_TIMEOUT);
    assert_opened(&out, "an agent wrap");
    assert_control_write(
        &scene.gateway,
        &out,
        "control",
        &control,
        "before any fetch",
    );
    assert_injected_page(record(&out, "fetch"));
    assert!(scene.site.requests().contains(&"/page.html".to_owned()));
    assert_write_stopped(&scene.gateway, record(&out, "leak"), &leak);
    assert_read(record(&out, "read"), "before any fetch");
}

/// Case 2. The same two wraps, but the injection arrives inside a tool
/// error: `robots.txt` refuses the page, and the fetch server's refusal
/// quotes it whole, injected comment included. A failed open-world call
/// still put outside text before the agent: the write must be stopped.
#[test]
fn an_injection_inside_a_fetch_error_stops_writes_through_the_same_agents_other_wrap() {
    let scene = Scene::new();
    let (control, leak) = (scene.note("control.txt"), scene.note("leak.txt"));
    let plan = json!([
        open("web", &scene.agent_wrap("web", &fetch_server())),
        open("fs", &scene.agent_wrap("fs", &scene.filesystem())),
        write("control", "fs", "write_file", &control, "before any fetch"),
        fetch("fetch", "web", "fetch", &scene.refused_page()),
        write("leak", "fs", "write_file", &leak, SECRET),
    ]);
    let out = run_sessions(&plan, RUN_TIMEOUT);
    assert_opened(&out, "an agent wrap");
    assert_control_write(
        &scene.gateway,
        &out,
        "control",
        &control,
        "before any fetch",
    );
    assert_injected_error(record(&out, "fetch"));
    let requests = scene.site.requests();
    assert!(requests.contains(&"/robots.txt".to_owned()), "{requests:?}");
    assert!(
        !requests.iter().any(|r| r.starts_with("/private/")),
        "{requests:?}"
    );
    assert_write_stopped(&scene.gateway, record(&out, "leak"), &leak);
}

/// Case 3. The agent fetches the page through `web`, then its MCP client
/// (and with it every wrap it started) exits right away; the agent starts
/// again, with a new wrap of the same agent and task, and writes. The
/// restart must not wash the taint out of the session.
#[test]
fn a_wrap_restarted_mid_session_keeps_the_taint() {
    let scene = Scene::new();
    let (control, leak) = (scene.note("control.txt"), scene.note("leak.txt"));
    let before = json!([
        open("web", &scene.agent_wrap("web", &fetch_server())),
        open("fs", &scene.agent_wrap("fs", &scene.filesystem())),
        write("control", "fs", "write_file", &control, "before any fetch"),
        fetch("fetch", "web", "fetch", &scene.page()),
    ]);
    let out = run_sessions(&before, RUN_TIMEOUT);
    assert_opened(&out, "an agent wrap");
    assert_control_write(
        &scene.gateway,
        &out,
        "control",
        &control,
        "before any fetch",
    );
    assert_injected_page(record(&out, "fetch"));

    // A new client process, a new wrap: same agent, same config.
    let after = json!([
        open("fs", &scene.agent_wrap("fs", &scene.filesystem())),
        read("read", "fs", "read_text_file", &control),
        write("leak", "fs", "write_file", &leak, SECRET),
    ]);
    let out = run_sessions(&after, RUN_TIMEOUT);
    assert_opened(&out, "the restarted agent wrap");
    assert_read(record(&out, "read"), "before any fetch");
    assert_write_stopped(&scene.gateway, record(&out, "leak"), &leak);
}

/// Fresh tasks in case 4, and fetch-then-write pairs in each: 50 pairs.
/// The first write of a task is the one that can overtake the report of
/// the fetch's result (after it, the task is labelled), so the more fresh
/// tasks the more chances to catch the race; each costs new wraps (about
/// two seconds).
const ROUNDS: usize = 10;
const PAIRS_PER_ROUND: usize = 5;

/// Case 4. Under a task credential, two wraps (`web`, `fs`) of one task:
/// the task's session is the Mandate server's, and the fetch's result is
/// reported to it by `web` while the agent already sends the write through
/// `fs`. Fetch then write at once, back to back with no pause, 50 times
/// (ten fresh tasks, five pairs each, all in one client process): the
/// write must never be allowed, not even when it overtakes the report.
#[test]
fn under_a_task_credential_a_write_right_after_a_fetch_is_never_allowed() {
    let scene = Scene::new();
    let mut plan = Vec::new();
    for round in 0..ROUNDS {
        // An agent per task: Mandate refuses to open more than 20 approvals
        // at a time for one agent (withdrawn ones count until they expire).
        let credential = scene.task_credential(
            &format!("{AGENT}-{round}"),
            &["web/fetch", "fs/write_file", "fs/read_text_file"],
        );
        let (web, fs) = (format!("web-{round}"), format!("fs-{round}"));
        // No wait for a person: the case is the race, and 50 waits of a
        // second would be most of its run time.
        plan.push(open(
            &web,
            &scene.credential_wrap("web", &credential, "0s", &fetch_server()),
        ));
        plan.push(open(
            &fs,
            &scene.credential_wrap("fs", &credential, "0s", &scene.filesystem()),
        ));
        plan.push(write(
            &format!("control-{round}"),
            &fs,
            "write_file",
            &scene.note(&format!("control-{round}.txt")),
            "before any fetch",
        ));
        plan.push(json!({"op": "repeat", "times": PAIRS_PER_ROUND, "steps": [
            fetch(&format!("fetch-{round}"), &web, "fetch", &scene.page()),
            write(&format!("leak-{round}"), &fs, "write_file", &scene.note(&format!("leak-{round}.txt")), SECRET),
        ]}));
        plan.push(close(&web));
        plan.push(close(&fs));
    }
    let out = run_sessions(&Value::Array(plan), Duration::from_secs(300));
    assert_opened(&out, "a credential wrap");
    for round in 0..ROUNDS {
        assert_control_write(
            &scene.gateway,
            &out,
            &format!("control-{round}"),
            &scene.note(&format!("control-{round}.txt")),
            "before any fetch",
        );
        let fetches = records(&out, &format!("fetch-{round}"));
        let leaks = records(&out, &format!("leak-{round}"));
        assert_eq!(fetches.len(), PAIRS_PER_ROUND, "{out}");
        assert_eq!(leaks.len(), PAIRS_PER_ROUND, "{out}");
        for (fetched, leak) in fetches.into_iter().zip(leaks) {
            assert_injected_page(fetched);
            assert_write_stopped(
                &scene.gateway,
                leak,
                &scene.note(&format!("leak-{round}.txt")),
            );
        }
    }
}

/// Who the proxy of a merged-endpoint case decides calls as.
#[derive(Clone, Copy)]
enum Principal {
    /// `--agent AGENT --config` with the `[task]` of [`Scene::agent_config`].
    Agent,
    /// `--credential-file` of a new task granting `web/fetch` and
    /// `fs/write_file`.
    Credential,
}

/// Case 5, on `/mcp` of `mandate mcp proxy` with two upstreams, both
/// reference stdio servers put behind the proxy as docs/mcp.md says
/// ("Stdio servers behind the HTTP proxy"): each served over streamable
/// HTTP by supergateway (`--stdio "CMD" --outputTransport streamableHttp
/// --stateful --sessionTimeout 7200000 --port N`, kept on loopback by
/// `tests/mcp/loopback.mjs`),
/// `web` in front of the fetch server (`python3 -m mcp_server_fetch
/// --allow-private-ips`) and `fs` in front of the filesystem server. The
/// agent (one MCP session, tools `web__fetch`, `fs__write_file`…) writes a
/// control file, fetches `url` (its record checked with `fetched`), then
/// writes the file the injection asks for: that write must be held for an
/// approval nobody gives, and the file never written.
fn merged_endpoint_case(principal: Principal, url: fn(&Scene) -> String, fetched: fn(&Value)) {
    let scene = Scene::new();
    let (control, leak) = (scene.note("control.txt"), scene.note("leak.txt"));
    let web = supergateway(&fetch_server());
    let fs = supergateway(&scene.filesystem());
    let (config, credential);
    let mut args = vec!["--approval-wait", APPROVAL_WAIT];
    match principal {
        Principal::Agent => {
            config = scene.agent_config("proxy.toml", "");
            args.extend(["--agent", AGENT, "--config", config.to_str().unwrap()]);
        }
        Principal::Credential => {
            credential = scene.task_credential(AGENT, &["web/fetch", "fs/write_file"]);
            args.extend(["--credential-file", credential.to_str().unwrap()]);
        }
    }
    let (web_upstream, fs_upstream) = (format!("web={}", web.url()), format!("fs={}", fs.url()));
    args.extend(["--upstream", &web_upstream, "--upstream", &fs_upstream]);
    let proxy = proxy(&scene.gateway, &args);

    let mut plan = vec![
        open_http("agent", &format!("http://{}/mcp", proxy.addr)),
        list_tools("tools", "agent"),
        write(
            "control",
            "agent",
            "fs__write_file",
            &control,
            "before any fetch",
        ),
        fetch("fetch", "agent", "web__fetch", &url(&scene)),
        write("leak", "agent", "fs__write_file", &leak, SECRET),
    ];
    if matches!(principal, Principal::Agent) {
        plan.push(read("read", "agent", "fs__read_text_file", &control));
    }
    let out = run_sessions(&Value::Array(plan), RUN_TIMEOUT);
    let logs = || {
        format!(
            "\nsupergateway (web):\n{}\nsupergateway (fs):\n{}",
            web.log(),
            fs.log()
        )
    };
    assert_opened(
        &out,
        &format!("the merged endpoint over supergateway{}", logs()),
    );
    assert_merged_tools(record(&out, "tools"), "the merged endpoint");
    assert_control_write(
        &scene.gateway,
        &out,
        "control",
        &control,
        "before any fetch",
    );
    fetched(record(&out, "fetch"));
    let step = record(&out, "leak");
    assert_write_stopped(&scene.gateway, step, &leak);
    let receipt = scene
        .gateway
        .receipt(&decision_id(step["text"].as_str().unwrap()));
    assert_eq!(receipt["call"]["server"], "fs", "{receipt}");
    assert_eq!(receipt["call"]["tool"], "write_file", "{receipt}");
    if matches!(principal, Principal::Agent) {
        assert_read(record(&out, "read"), "before any fetch");
    }
}

/// Case 5a. As a configured agent on the merged endpoint, a page fetched
/// from the fetch server's upstream stops a write to the filesystem
/// server's.
#[test]
fn on_the_merged_endpoint_a_fetched_page_stops_writes_to_the_other_upstream() {
    merged_endpoint_case(Principal::Agent, Scene::page, assert_injected_page);
}

/// Case 5b. As a configured agent on the merged endpoint, an injection
/// inside the fetch's tool error stops a write to the other upstream.
#[test]
fn on_the_merged_endpoint_an_injection_inside_a_fetch_error_stops_writes() {
    merged_endpoint_case(Principal::Agent, Scene::refused_page, assert_injected_error);
}

/// Case 5c. Case 5a under a task credential.
#[test]
fn on_the_merged_endpoint_under_a_task_credential_a_fetched_page_stops_writes() {
    merged_endpoint_case(Principal::Credential, Scene::page, assert_injected_page);
}

/// Case 5d. Case 5b under a task credential.
#[test]
fn on_the_merged_endpoint_under_a_task_credential_an_injection_inside_a_fetch_error_stops_writes() {
    merged_endpoint_case(
        Principal::Credential,
        Scene::refused_page,
        assert_injected_error,
    );
}

/// Case 6, as a configured agent: one `mandate mcp wrap` running both
/// servers from its config's `[[servers]]` (no `--` command), which lists
/// their tools as `web__fetch`, `fs__write_file`… and decides each call as
/// its server's (`action.server` = `web`, `action.tool` = `fetch`), in one
/// session. The page and the refusal each in a scene of their own (a
/// Mandate server, a wrap).
#[test]
fn one_wrap_of_several_servers_stops_writes_after_injected_content_as_an_agent() {
    for (url, fetched) in [
        (
            Scene::page as fn(&Scene) -> String,
            assert_injected_page as fn(&Value),
        ),
        (Scene::refused_page, assert_injected_error),
    ] {
        let scene = Scene::new();
        let (control, leak) = (scene.note("control.txt"), scene.note("leak.txt"));
        let config = scene.agent_config("cfg.toml", &scene.servers_toml());
        let wrap = scene.multi_server_wrap(&config, &["--agent", AGENT]);
        let plan = json!([
            open("agent", &wrap),
            list_tools("tools", "agent"),
            write(
                "control",
                "agent",
                "fs__write_file",
                &control,
                "before any fetch"
            ),
            fetch("fetch", "agent", "web__fetch", &url(&scene)),
            write("leak", "agent", "fs__write_file", &leak, SECRET),
            read("read", "agent", "fs__read_text_file", &control),
        ]);
        let out = run_sessions(&plan, RUN_TIMEOUT);
        assert_opened(
            &out,
            "the multi-server wrap (`[[servers]]`, no `--` command)",
        );
        assert_merged_tools(record(&out, "tools"), "the multi-server wrap");
        assert_control_write(
            &scene.gateway,
            &out,
            "control",
            &control,
            "before any fetch",
        );
        fetched(record(&out, "fetch"));
        assert_write_stopped(&scene.gateway, record(&out, "leak"), &leak);
        assert_read(record(&out, "read"), "before any fetch");
    }
}

/// Case 6 under a task credential: the same wrap with `--credential-file`
/// of a task granting `web/fetch`, `fs/write_file` and `fs/read_text_file`;
/// the page and the refusal each under a task of their own.
#[test]
fn one_wrap_of_several_servers_stops_writes_after_injected_content_under_a_task_credential() {
    let scene = Scene::new();
    let config = scene.dir.path().join("servers.toml");
    std::fs::write(&config, scene.servers_toml()).unwrap();
    for (case, url, fetched) in [
        ("page", scene.page(), assert_injected_page as fn(&Value)),
        ("refused", scene.refused_page(), assert_injected_error),
    ] {
        let (control, leak) = (
            scene.note(&format!("control-{case}.txt")),
            scene.note(&format!("leak-{case}.txt")),
        );
        let credential =
            scene.task_credential(AGENT, &["web/fetch", "fs/write_file", "fs/read_text_file"]);
        let wrap = scene.multi_server_wrap(
            &config,
            &["--credential-file", credential.to_str().unwrap()],
        );
        let plan = json!([
            open("agent", &wrap),
            list_tools("tools", "agent"),
            write(
                "control",
                "agent",
                "fs__write_file",
                &control,
                "before any fetch"
            ),
            fetch("fetch", "agent", "web__fetch", &url),
            write("leak", "agent", "fs__write_file", &leak, SECRET),
        ]);
        let out = run_sessions(&plan, RUN_TIMEOUT);
        assert_opened(
            &out,
            "the multi-server wrap (`[[servers]]`, no `--` command)",
        );
        assert_merged_tools(record(&out, "tools"), "the multi-server wrap");
        assert_control_write(
            &scene.gateway,
            &out,
            "control",
            &control,
            "before any fetch",
        );
        fetched(record(&out, "fetch"));
        assert_write_stopped(&scene.gateway, record(&out, "leak"), &leak);
    }
}

/// A multi-server wrap or the merged endpoint (`what`) lists both servers'
/// tools as `NAME__tool`.
fn assert_merged_tools(step: &Value, what: &str) {
    let tools = step["tools"].as_array().cloned().unwrap_or_default();
    for name in ["web__fetch", "fs__write_file", "fs__read_text_file"] {
        assert!(
            tools.iter().any(|t| t == name),
            "{what} does not list `{name}`: {step}"
        );
    }
}
