//! End-to-end tests of `mandate task start|delegate|show|end`: the real
//! command against the real `mandate serve`, trusting an identity provider
//! made up here.

// Tests assert by panicking, and index JSON freely.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::process::{Command, Output};

use serde_json::Value;
use util::tasks::{Gateway, HUMAN, ROOT_AGENT, SUB_AGENT, gateway, text};

/// The outcome of one `mandate` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        &self.stdout
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `mandate ARGS` with no inherited `MANDATE_*` or proxy variables and
/// `envs` set.
fn mandate(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mandate"));
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy().to_ascii_uppercase();
        if key_text.starts_with("MANDATE_") || key_text.ends_with("_PROXY") {
            cmd.env_remove(&key);
        }
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.args(args).envs(envs.iter().copied()).output().unwrap();
    Run {
        code: status.code().unwrap(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

impl Gateway {
    fn base(&self) -> String {
        self.server.url("")
    }

    /// `mandate task ARGS --server URL --token TOKEN`.
    fn task(&self, args: &[&str], token: &str) -> Run {
        let base = self.base();
        let mut all = vec!["task"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &base, "--token", token]);
        mandate(&all, &[])
    }
}

const START: &[&str] = &[
    "start",
    "--intent",
    "answer customer questions about their orders",
    "--tool",
    "mail/read_inbox",
    "--tool",
    "mail/send_email",
    "--label",
    "customer",
    "--label",
    "internal",
    "--param",
    r#"allowed_recipients=["carol@example.com"]"#,
    "--param",
    "limit=3",
    "--ttl",
    "600",
    "--max-depth",
    "2",
];

#[test]
fn start_delegate_show_end() {
    let gw = gateway();
    let jwt = gw.idp.token(ROOT_AGENT);

    // start: the human summary ends with the credential.
    let started = gw.task(START, &jwt);
    let out = started.ok();
    let task_id = out
        .lines()
        .find_map(|l| l.strip_prefix("task"))
        .unwrap()
        .trim()
        .to_owned();
    let root = out.lines().last().unwrap().to_owned();
    assert!(out.contains("expires at"), "{out}");
    assert!(!root.is_empty() && !root.contains(' '), "{out}");

    // The server recorded the params as JSON.
    let view = gw.show(&task_id, &root);
    assert_eq!(view.status, 200, "{}", view.body);
    let view = view.json();
    assert_eq!(view["params"]["allowed_recipients"][0], "carol@example.com");
    assert_eq!(view["params"]["limit"], 3);
    assert_eq!(view["max_depth"], 2);

    // delegate with the root credential: --credential-only prints just the token.
    let delegated = gw.task(
        &[
            "delegate",
            &task_id,
            "--agent",
            SUB_AGENT,
            "--tool",
            "mail/read_inbox",
            "--label",
            "customer",
            "--ttl",
            "300",
            "--credential-only",
        ],
        &root,
    );
    let sub = delegated.ok().trim().to_owned();
    assert_eq!(delegated.stdout.lines().count(), 1, "{}", delegated.stdout);
    assert_ne!(sub, root);

    // show with the sub credential: both hops, the sub-agent indented.
    let shown = gw.task(&["show", &task_id], &sub);
    let out = shown.ok();
    assert!(out.contains("state       open"), "{out}");
    assert!(out.contains(&format!("(for {HUMAN})")), "{out}");
    let root_line = out
        .lines()
        .find(|l| l.contains(&format!("{ROOT_AGENT} (depth 0)")))
        .unwrap_or_else(|| panic!("no root hop: {out}"));
    let sub_line = out
        .lines()
        .find(|l| l.contains(&format!("{SUB_AGENT} (depth 1)")))
        .unwrap_or_else(|| panic!("no sub hop: {out}"));
    let indent = |l: &str| l.len() - l.trim_start().len();
    assert_eq!(indent(sub_line), indent(root_line) + 2, "{out}");
    assert!(sub_line.contains("mail/read_inbox"), "{out}");
    assert!(!sub_line.contains("mail/send_email"), "{out}");

    // --json prints the server's answer.
    let json = gw.task(&["show", &task_id, "--json"], &sub).json();
    assert_eq!(json["id"], task_id.as_str());
    assert_eq!(json["credentials"].as_array().unwrap().len(), 2);

    // A sub-agent cannot end the task.
    let refused = gw.task(&["end", &task_id], &sub);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.starts_with("error: insufficient_scope: "),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);

    // The root credential can.
    let ended = gw.task(&["end", &task_id, "--json"], &root).json();
    assert_eq!(ended["task_id"], task_id.as_str());
    assert_eq!(ended["end_reason"], "ended");
    assert_eq!(ended["revoked"].as_array().unwrap().len(), 2);

    // The revoked credential is refused now.
    let revoked = gw.task(&["show", &task_id], &root);
    assert_eq!(revoked.code, 1, "{}", revoked.stderr);
    assert!(
        revoked.stderr.starts_with("error: invalid_token: "),
        "{}",
        revoked.stderr
    );

    // The root agent's identity token still shows it, ended, every hop revoked.
    let shown = gw.task(&["show", &task_id], &jwt);
    let out = shown.ok();
    assert!(out.contains("state       ended at "), "{out}");
    assert_eq!(out.matches(", revoked").count(), 2, "{out}");
}

#[test]
fn start_human_and_json_output_and_token_sources() {
    let gw = gateway();
    let jwt = gw.idp.token(ROOT_AGENT);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{jwt}\n")).unwrap();
    let base = gw.base();

    // --token-file, --json: the server's answer.
    let mut args = vec!["task"];
    args.extend_from_slice(START);
    args.extend_from_slice(&["--json", "--server", &base, "--token-file"]);
    args.push(token_file.to_str().unwrap());
    let started = mandate(&args, &[]).json();
    let task_id = text(&started, "task_id").to_owned();
    let credential = text(&started, "credential").to_owned();
    assert!(started["expires_at"].is_string(), "{started}");

    // MANDATE_SERVER and MANDATE_TOKEN; the human `end` summary.
    let ended = mandate(
        &["task", "end", &task_id],
        &[("MANDATE_SERVER", &base), ("MANDATE_TOKEN", &credential)],
    );
    let out = ended.ok();
    assert!(
        out.starts_with(&format!("task {task_id} ended at ")),
        "{out}"
    );
    assert!(out.contains("revoked 1 credential(s):"), "{out}");
}

#[test]
fn input_errors_exit_2() {
    let gw = gateway();
    let jwt = gw.idp.token(ROOT_AGENT);

    // A --param value that is not JSON: nothing is sent.
    let bad = gw.task(
        &[
            "start",
            "--intent",
            "x",
            "--tool",
            "mail/read_inbox",
            "--ttl",
            "60",
            "--param",
            "note=hello",
        ],
        &jwt,
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("--param `note=hello`"),
        "{}",
        bad.stderr
    );
    assert_eq!(gw.rows("tasks"), 0);

    // A request the server finds invalid (unknown tool form) is an input error.
    let invalid = gw.task(
        &[
            "start", "--intent", "x", "--tool", "no-slash", "--ttl", "60",
        ],
        &jwt,
    );
    assert_eq!(invalid.code, 2, "{}", invalid.stderr);
    assert!(invalid.stderr.starts_with("error: "), "{}", invalid.stderr);

    // An unreadable token file.
    let missing = mandate(
        &[
            "task",
            "show",
            "some-task",
            "--server",
            &gw.base(),
            "--token-file",
            "/nonexistent/token",
        ],
        &[],
    );
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("cannot read the token file"),
        "{}",
        missing.stderr
    );

    // No token at all.
    let none = mandate(&["task", "show", "some-task", "--server", &gw.base()], &[]);
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(none.stderr.contains("no token"), "{}", none.stderr);

    // Text that is not a task id, or cannot be one path segment: nothing
    // is sent.
    for id in ["", ".."] {
        let bad = gw.task(&["show", id], &jwt);
        assert_eq!(bad.code, 2, "{}", bad.stderr);
        assert_eq!(
            bad.stderr,
            format!("error: `{id}` is not an id Mandate gives\n"),
        );
    }

    // An unknown task with the identity token: 404, exit 1.
    let unknown = gw.task(&["show", "no-such-task"], &jwt);
    assert_eq!(unknown.code, 1, "{}", unknown.stderr);
    assert!(
        unknown.stderr.starts_with("error: task_not_found: "),
        "{}",
        unknown.stderr
    );
}

#[test]
fn unreachable_server_exits_2() {
    // A port nobody listens on: bind one, then free it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let run = mandate(
        &[
            "task",
            "show",
            "some-task",
            "--server",
            &url,
            "--token",
            "t",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with(&format!("error: cannot reach the Mandate server at {url}")),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());

    let https = mandate(
        &[
            "task",
            "show",
            "some-task",
            "--server",
            "https://mandate.example.com",
            "--token",
            "t",
        ],
        &[],
    );
    assert_eq!(https.code, 2, "{}", https.stderr);
    assert!(https.stderr.contains("plain HTTP only"), "{}", https.stderr);
}
