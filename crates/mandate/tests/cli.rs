//! End-to-end tests of the `mandate` command: they run the built binary and
//! check what users rely on — exit codes, output formats and error messages
//! of `check`, `policy validate`, `policy test`, `policy schema` and `--help`,
//! and that `check` and `policy` use the pack `mandate serve` loads.

// Tests fail by panicking; indexing and unwrapping keep the assertions short.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

mod util;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Exit codes documented in `mandate --help`.
const OK: i32 = 0;
const FAILURE: i32 = 1;
const INPUT: i32 = 2;
const DENY: i32 = 3;
const APPROVAL_REQUIRED: i32 = 4;

/// What one run of the binary produced.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// The binary, with no `MANDATE_*` variables inherited from the environment
/// (nor `COLUMNS`, which would change how `--help` wraps).
fn mandate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mandate"));
    cmd.env_remove("COLUMNS");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MANDATE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn run_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    // A fresh working directory: the default pack is `./mandate-data/policies`.
    let workdir = tempfile::tempdir().unwrap();
    run_in(workdir.path(), args, stdin, &[])
}

/// Runs `mandate ARGS` in `dir`, with `env` set.
fn run_in(dir: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = mandate();
    cmd.current_dir(dir).envs(env.iter().copied());
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the mandate binary starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
        // Dropping the pipe closes it, so the binary sees end of input.
    }
    let out = child.wait_with_output().unwrap();
    Output {
        code: out
            .status
            .code()
            .unwrap_or_else(|| panic!("mandate {args:?} was killed by a signal")),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn run(args: &[&str]) -> Output {
    run_with_stdin(args, None)
}

/// Asserts the exit code, showing everything the binary printed when it differs.
#[track_caller]
fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.code, code,
        "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
        out.stdout, out.stderr
    );
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

fn examples() -> String {
    examples_dir().display().to_string()
}

fn mailer_tests() -> Value {
    let text = std::fs::read_to_string(examples_dir().join("tests/mailer.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// JSON merge patch (RFC 7396), as policy tests apply a case over the defaults.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let object = target.as_object_mut().unwrap();
            for (key, value) in fields {
                if value.is_null() {
                    object.remove(key);
                } else {
                    merge(object.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A named case of `examples/policies/tests/mailer.json`, as a complete request,
/// with the outcome the suite expects.
struct Case {
    name: String,
    request: Value,
    expect: String,
}

fn mailer_cases() -> Vec<Case> {
    let suite = mailer_tests();
    suite["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let mut request = suite["defaults"].clone();
            if let Some(patch) = case.get("request") {
                merge(&mut request, patch);
            }
            Case {
                name: case["name"].as_str().unwrap().to_owned(),
                request,
                expect: case["expect"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

/// The request of the mailer case whose name starts with `prefix`.
fn mailer_request(prefix: &str) -> Value {
    mailer_cases()
        .into_iter()
        .find(|c| c.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no case named `{prefix}…` in tests/mailer.json"))
        .request
}

fn allow_request() -> Value {
    mailer_request("a declared read-only tool is allowed")
}

fn deny_request() -> Value {
    mailer_request("a tool the task did not declare is denied")
}

fn approval_request() -> Value {
    mailer_request("a declared destructive tool needs approval")
}

/// Writes `request` to a file in `dir` and returns its path.
fn write_request(dir: &Path, name: &str, request: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(request).unwrap()).unwrap();
    path.display().to_string()
}

/// A temporary pack made of `files` (relative path, contents).
fn pack(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// A temporary copy of the example pack.
fn copy_of_examples() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&examples_dir(), dir.path());
    dir
}

fn path_str(dir: &tempfile::TempDir) -> String {
    dir.path().display().to_string()
}

/// The ids of the example pack's policies, from its `.cedar` files.
fn example_policy_ids() -> Vec<String> {
    let mut ids = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("@id(\"") {
                ids.push(rest.trim_end_matches("\")").to_owned());
            }
        }
    }
    assert!(!ids.is_empty(), "the example pack names its policies");
    ids
}

// ---------------------------------------------------------------------------
// mandate check
// ---------------------------------------------------------------------------

fn expected_code(decision: &str) -> i32 {
    match decision {
        "allow" => OK,
        "deny" => DENY,
        "approval_required" => APPROVAL_REQUIRED,
        other => panic!("unknown decision `{other}`"),
    }
}

/// Every case of the example test suite, decided by `check`, gives the
/// outcome the suite expects, both with the built-in pack and from disk.
#[test]
fn check_exit_codes_follow_the_decision_for_every_example_case() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = mailer_cases();
    for want in ["allow", "deny", "approval_required"] {
        assert!(
            cases.iter().any(|c| c.expect == want),
            "tests/mailer.json has a case for `{want}`"
        );
    }
    for (n, case) in cases.iter().enumerate() {
        let file = write_request(tmp.path(), &format!("case-{n}.json"), &case.request);
        for policies in [None, Some(examples())] {
            let mut args = vec!["check", file.as_str()];
            if let Some(dir) = &policies {
                args.extend(["--policies", dir.as_str()]);
            }
            let out = run(&args);
            assert_code(&out, expected_code(&case.expect));
            assert_eq!(
                out.stdout.lines().next(),
                Some(case.expect.as_str()),
                "case `{}` with {args:?}: the first line names the decision",
                case.name
            );
        }
    }
}

#[test]
fn check_allow_prints_the_decision_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_request(tmp.path(), "allow.json", &allow_request());
    let out = run(&["check", &file]);
    assert_code(&out, OK);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("allow"));
    assert!(
        out.stdout
            .contains("reason: the tool is declared for the task"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("policies: declared-tools"),
        "{}",
        out.stdout
    );
    // Which pack decided is said on stderr, never mixed into the answer.
    assert_eq!(
        out.stderr.trim(),
        "policy pack: the built-in example pack (`mandate-data/policies` holds no policy yet; \
         `mandate serve` writes this pack there on first start)"
    );
}

#[test]
fn check_deny_prints_the_decision_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_request(tmp.path(), "deny.json", &deny_request());
    let out = run(&["check", &file, "--policies", &examples()]);
    assert_code(&out, DENY);
    assert_eq!(out.stdout.lines().next(), Some("deny"));
    assert!(
        out.stdout
            .contains("reason: the tool is not among the tools declared for the task"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("policies: undeclared-tool"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_approval_prints_the_decision_and_the_approval_text() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_request(tmp.path(), "approval.json", &approval_request());
    let out = run(&["check", &file]);
    assert_code(&out, APPROVAL_REQUIRED);
    assert_eq!(out.stdout.lines().next(), Some("approval_required"));
    assert!(
        out.stdout
            .contains("reason: the tool can destroy or overwrite data"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("policies: destructive-needs-approval"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_json_prints_the_decision_response() {
    let tmp = tempfile::tempdir().unwrap();
    let expectations = [
        (
            allow_request(),
            OK,
            "allow",
            "declared-tools",
            "the tool is declared for the task",
        ),
        (
            deny_request(),
            DENY,
            "deny",
            "undeclared-tool",
            "the tool is not among the tools declared for the task",
        ),
        (
            approval_request(),
            APPROVAL_REQUIRED,
            "approval_required",
            "destructive-needs-approval",
            "the tool can destroy or overwrite data",
        ),
    ];
    let mut ids = Vec::new();
    for (request, code, decision, policy, reason) in expectations {
        let file = write_request(tmp.path(), &format!("{decision}.json"), &request);
        let out = run(&["check", &file, "--json"]);
        assert_code(&out, code);
        let v = out.json();
        let object = v.as_object().expect("a JSON object");
        for key in [
            "decision",
            "decision_id",
            "policies",
            "reasons",
            "errors",
            "pack",
        ] {
            assert!(object.contains_key(key), "`{key}` missing: {v}");
        }
        // The built-in pack, since the working directory has no data directory.
        assert_eq!(v["pack"], "<example>");
        assert!(
            out.stderr.is_empty(),
            "JSON output says it all: {}",
            out.stderr
        );
        assert!(
            !object.contains_key("explanation"),
            "no explanation without --explain: {v}"
        );
        assert_eq!(v["decision"], decision);
        assert_eq!(v["policies"], json!([policy]));
        assert_eq!(v["reasons"], json!([reason]));
        assert_eq!(v["errors"], json!([]));
        let id = v["decision_id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each decision gets its own id");
}

#[test]
fn check_explain_reports_every_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_request(tmp.path(), "allow.json", &allow_request());
    let out = run(&["check", &file, "--explain"]);
    assert_code(&out, OK);
    assert_eq!(out.stdout.lines().next(), Some("allow"));

    for id in example_policy_ids() {
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains(&format!("`{id}`")))
            .unwrap_or_else(|| panic!("policy `{id}` not explained:\n{}", out.stdout));
        assert!(
            line.contains(": applies: ")
                || line.contains(": does not apply: ")
                || line.contains(": out of scope: "),
            "{line}"
        );
    }
    let line_of = |id: &str| {
        out.stdout
            .lines()
            .find(|l| l.contains(&format!("`{id}`")))
            .unwrap()
            .to_owned()
    };
    let declared = line_of("declared-tools");
    assert!(declared.contains("permit"), "{declared}");
    assert!(declared.contains("tools.cedar:"), "{declared}");
    assert!(
        declared.ends_with(": applies: its scope matches and its `when` condition is true"),
        "{declared}"
    );
    // A forbid kept off by its `unless` says so, in words that read forwards.
    assert!(
        line_of("undeclared-tool").ends_with(": does not apply: its `unless` condition is true"),
        "{}",
        out.stdout
    );
    // Conditions are shown with their Cedar text and the value they had.
    assert!(
        out.stdout
            .contains("    when { context.task.tools.contains(resource.name) } is true\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("    unless { context.task.tools.contains(resource.name) } is true\n"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("satisfied"), "{}", out.stdout);
    assert!(
        out.stdout.contains("resource.destructive"),
        "the approval gate's condition is shown:\n{}",
        out.stdout
    );
}

#[test]
fn check_explain_json_adds_an_explanation_array() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_request(tmp.path(), "approval.json", &approval_request());
    let out = run(&["check", &file, "--explain", "--json"]);
    assert_code(&out, APPROVAL_REQUIRED);
    let v = out.json();
    assert_eq!(v["decision"], "approval_required");
    for key in ["decision_id", "policies", "reasons", "errors"] {
        assert!(v.get(key).is_some(), "`{key}` missing: {v}");
    }
    let explanation = v["explanation"].as_array().expect("an explanation array");
    let ids = example_policy_ids();
    assert_eq!(explanation.len(), ids.len(), "{v}");
    for id in &ids {
        let report = explanation
            .iter()
            .find(|p| p["id"] == id.as_str())
            .unwrap_or_else(|| panic!("`{id}` not in explanation: {v}"));
        for key in [
            "kind",
            "effect",
            "file",
            "line",
            "scope_matched",
            "scope_mismatch",
            "satisfied",
        ] {
            assert!(report.get(key).is_some(), "`{key}` missing: {report}");
        }
        for condition in report["conditions"].as_array().unwrap() {
            assert!(condition["text"].as_str().is_some_and(|t| !t.is_empty()));
            assert!(condition["kind"] == "when" || condition["kind"] == "unless");
        }
    }
    let gate = explanation
        .iter()
        .find(|p| p["id"] == "destructive-needs-approval")
        .unwrap();
    assert_eq!(gate["kind"], "approval");
    assert_eq!(gate["effect"], "permit");
    assert_eq!(gate["satisfied"], true);
    assert_eq!(gate["conditions"][0]["outcome"]["result"], "holds");
    let undeclared = explanation
        .iter()
        .find(|p| p["id"] == "undeclared-tool")
        .unwrap();
    assert_eq!(undeclared["effect"], "forbid");
    assert_eq!(undeclared["satisfied"], false);
    // The part of a condition that decided is named: here the first false
    // operand of the open-world forbid's `&&`.
    let open_world = explanation
        .iter()
        .find(|p| p["id"] == "no-confidential-to-open-world")
        .unwrap();
    let part = &open_world["conditions"][0]["decided_by"];
    assert_eq!(part["value"], false, "{open_world}");
    assert!(
        part["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{open_world}"
    );
}

#[test]
fn check_reads_the_request_from_stdin() {
    let cases = [
        (allow_request(), OK, "allow"),
        (deny_request(), DENY, "deny"),
        (approval_request(), APPROVAL_REQUIRED, "approval_required"),
    ];
    for (request, code, decision) in cases {
        let out = run_with_stdin(&["check", "-"], Some(&request.to_string()));
        assert_code(&out, code);
        assert_eq!(out.stdout.lines().next(), Some(decision));
    }
    let out = run_with_stdin(
        &["check", "-", "--json", "--policies", &examples()],
        Some(&allow_request().to_string()),
    );
    assert_code(&out, OK);
    assert_eq!(out.json()["decision"], "allow");
}

/// `context.time` is the decision time offline: a policy on the time sees it.
#[test]
fn check_accepts_context_time_offline() {
    let dir = pack(&[(
        "time.cedar",
        r#"@id("everything")
@reason("everything is allowed")
permit (principal, action, resource);

@id("expired")
@reason("the mandate expired at the start of 2030")
forbid (principal, action, resource)
when { context.time.now >= datetime("2030-01-01T00:00:00Z") };
"#,
    )]);
    let request = |time: &str| {
        json!({
            "principal": {"id": "spiffe://example.org/agent/a"},
            "action": {"server": "s", "tool": "t"},
            "context": {"time": time}
        })
        .to_string()
    };
    let before = run_with_stdin(
        &["check", "-", "--policies", &path_str(&dir)],
        Some(&request("2029-12-31T23:59:59Z")),
    );
    assert_code(&before, OK);
    assert_eq!(before.stdout.lines().next(), Some("allow"));

    let after = run_with_stdin(
        &["check", "-", "--policies", &path_str(&dir)],
        Some(&request("2030-01-01T00:00:00Z")),
    );
    assert_code(&after, DENY);
    assert!(
        after
            .stdout
            .contains("reason: the mandate expired at the start of 2030"),
        "{}",
        after.stdout
    );

    // The example suite sets `context.time` in its defaults; the built-in pack accepts it.
    let timed = allow_request();
    assert!(timed["context"]["time"].is_string(), "{timed}");
    let out = run_with_stdin(&["check", "-"], Some(&timed.to_string()));
    assert_code(&out, OK);
}

// ---------------------------------------------------------------------------
// mandate check: input errors
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_input_error(out: &Output, needle: &str) {
    assert_code(out, INPUT);
    assert!(
        out.stderr.contains(needle),
        "stderr should mention `{needle}`:\n{}",
        out.stderr
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout on error:\n{}",
        out.stdout
    );
}

#[test]
fn check_missing_file_is_an_input_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-request.json");
    let out = run(&["check", &missing.display().to_string()]);
    assert_input_error(&out, "no-such-request.json");
    assert!(out.stderr.starts_with("error:"), "{}", out.stderr);
}

#[test]
fn check_malformed_json_is_an_input_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("broken.json");
    std::fs::write(&file, "{\"principal\": {\"id\": ").unwrap();
    let out = run(&["check", &file.display().to_string()]);
    assert_input_error(&out, "broken.json");
    assert!(out.stderr.contains("not a valid request"), "{}", out.stderr);

    let out = run_with_stdin(&["check", "-"], Some("not json at all"));
    assert_input_error(&out, "not a valid request");
}

#[test]
fn check_unknown_field_is_an_input_error() {
    let mut request = allow_request();
    request["decision"] = json!("allow");
    let out = run_with_stdin(&["check", "-"], Some(&request.to_string()));
    assert_input_error(&out, "unknown field `decision`");

    let mut request = allow_request();
    request["context"]["task"]["owner"] = json!("mallory");
    let out = run_with_stdin(&["check", "-"], Some(&request.to_string()));
    assert_input_error(&out, "unknown field `owner`");
}

#[test]
fn check_invalid_request_is_an_input_error() {
    let mut request = allow_request();
    request["principal"]["id"] = json!("");
    let out = run_with_stdin(&["check", "-"], Some(&request.to_string()));
    assert_input_error(&out, "`principal.id` must not be empty");
    assert!(out.stderr.contains("invalid request"), "{}", out.stderr);
}

#[test]
fn check_with_a_pack_that_does_not_load_is_an_input_error() {
    let dir = pack(&[(
        "broken.cedar",
        "@id(\"all\")\npermit (principal, action, resource)\nwhen { context.task.tools.contains( };\n",
    )]);
    let tmp = tempfile::tempdir().unwrap();
    let file = write_request(tmp.path(), "allow.json", &allow_request());
    let out = run(&["check", &file, "--policies", &path_str(&dir)]);
    assert_code(&out, INPUT);
    let located = format!("{}:3:", dir.path().join("broken.cedar").display());
    assert!(
        out.stderr.contains(&located),
        "the message names file and line ({located}):\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("does not load"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);

    // A directory that does not exist cannot load either.
    let missing = tmp.path().join("no-pack-here");
    let out = run(&["check", &file, "--policies", &missing.display().to_string()]);
    assert_input_error(&out, "no-pack-here");
}

#[test]
fn unknown_flags_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_request(tmp.path(), "allow.json", &allow_request());
    let out = run(&["check", &file, "--bogus"]);
    assert_input_error(&out, "--bogus");
    assert!(out.stderr.contains("Usage:"), "{}", out.stderr);

    assert_code(&run(&["check"]), INPUT);
    assert_code(&run(&["policy", "validate", "--bogus", &examples()]), INPUT);
    assert_code(&run(&["no-such-command"]), INPUT);
}

// ---------------------------------------------------------------------------
// mandate policy validate
// ---------------------------------------------------------------------------

#[test]
fn validate_accepts_the_example_pack() {
    let out = run(&["policy", "validate", &examples()]);
    assert_code(&out, OK);
    let ok = out
        .stdout
        .lines()
        .find(|l| l.starts_with("ok:"))
        .unwrap_or_else(|| panic!("no `ok:` line:\n{}", out.stdout));
    assert!(ok.contains("5 base and 4 approval policies"), "{ok}");

    let out = run(&["policy", "validate", &examples(), "--json"]);
    assert_code(&out, OK);
    let v = out.json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["problems"], json!([]));
    assert_eq!(v["policies"], json!({"base": 5, "approval": 4}));
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
}

const UNDECLARED_ATTRIBUTE: &str = r#"@id("reads-undeclared")
permit (principal, action == Mandate::Action::"call_tool", resource)
when { context.arguments.to == "x" };
"#;

const SYNTAX_ERROR: &str = r#"@id("fine")
permit (principal, action, resource);

@id("broken")
permit (principal, action, resource)
when { context.task.tools.contains( };
"#;

#[test]
fn validate_reports_every_problem_with_file_line_and_column() {
    let dir = pack(&[("a.cedar", UNDECLARED_ATTRIBUTE), ("b.cedar", SYNTAX_ERROR)]);
    let a = dir.path().join("a.cedar").display().to_string();
    let b = dir.path().join("b.cedar").display().to_string();
    let out = run(&["policy", "validate", &path_str(&dir)]);
    assert_code(&out, FAILURE);

    let undeclared = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{a}:3:")))
        .unwrap_or_else(|| panic!("no problem located in a.cedar line 3:\n{}", out.stdout));
    assert!(
        undeclared.starts_with(&format!("{a}:3:8: error")),
        "{undeclared}"
    );
    assert!(undeclared.contains("reads-undeclared"), "{undeclared}");
    assert!(undeclared.contains("arguments.to"), "{undeclared}");

    let syntax = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{b}:6:")))
        .unwrap_or_else(|| panic!("no problem located in b.cedar line 6:\n{}", out.stdout));
    let column = syntax
        .strip_prefix(&format!("{b}:6:"))
        .and_then(|rest| rest.split_once(": error"))
        .map(|(col, _)| col);
    assert!(
        column.is_some_and(|c| c.parse::<usize>().is_ok()),
        "FILE:LINE:COL: error …: {syntax}"
    );

    assert!(
        out.stdout.lines().any(|l| l.starts_with("invalid:")),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("ok:"), "{}", out.stdout);
}

#[test]
fn validate_json_lists_the_problems() {
    let dir = pack(&[("a.cedar", UNDECLARED_ATTRIBUTE), ("b.cedar", SYNTAX_ERROR)]);
    let out = run(&["policy", "validate", &path_str(&dir), "--json"]);
    assert_code(&out, FAILURE);
    let v = out.json();
    assert_eq!(v["valid"], false);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{v}");
    for (file, line) in [("a.cedar", 3), ("b.cedar", 6)] {
        let p = problems
            .iter()
            .find(|p| p["file"].as_str().is_some_and(|f| f.ends_with(file)))
            .unwrap_or_else(|| panic!("no problem in {file}: {v}"));
        assert_eq!(p["severity"], "error", "{p}");
        assert_eq!(p["line"], line, "{p}");
        assert!(p["column"].as_u64().is_some(), "{p}");
        assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()), "{p}");
    }
    let undeclared = problems
        .iter()
        .find(|p| p["policy"] == "reads-undeclared")
        .unwrap_or_else(|| panic!("the problem names its policy: {v}"));
    assert_eq!(undeclared["column"], 8);
}

#[test]
fn validate_rejects_approval_on_a_forbid() {
    let dir = pack(&[(
        "gate.cedar",
        r#"@id("allow-all")
permit (principal, action, resource);

@id("bad-gate")
@approval("needs a person")
forbid (principal, action, resource);
"#,
    )]);
    let out = run(&["policy", "validate", &path_str(&dir)]);
    assert_code(&out, FAILURE);
    let file = dir.path().join("gate.cedar").display().to_string();
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("bad-gate"))
        .unwrap_or_else(|| panic!("the problem names the policy:\n{}", out.stdout));
    assert!(line.starts_with(&format!("{file}:")), "{line}");
    assert!(line.contains("error"), "{line}");
    assert!(line.contains("`@approval`"), "{line}");
    assert!(line.contains("forbid"), "{line}");

    let out = run(&["policy", "validate", &path_str(&dir), "--json"]);
    assert_code(&out, FAILURE);
    let v = out.json();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["policy"], "bad-gate", "{v}");
}

#[test]
fn validate_rejects_an_empty_pack() {
    let empty = tempfile::tempdir().unwrap();
    let out = run(&["policy", "validate", &path_str(&empty)]);
    assert_code(&out, FAILURE);
    assert!(out.stdout.contains("no policies"), "{}", out.stdout);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("invalid:")),
        "{}",
        out.stdout
    );

    let out = run(&["policy", "validate", &path_str(&empty), "--json"]);
    assert_code(&out, FAILURE);
    let v = out.json();
    assert_eq!(v["valid"], false);
    assert!(
        v["problems"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no policies")),
        "{v}"
    );

    // Files with no policy in them are no better.
    let comments = pack(&[("only-comments.cedar", "// nothing here yet\n")]);
    let out = run(&["policy", "validate", &path_str(&comments)]);
    assert_code(&out, FAILURE);
    assert!(out.stdout.contains("no policies"), "{}", out.stdout);
}

#[test]
fn validate_a_missing_directory_is_an_input_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let out = run(&["policy", "validate", &missing.display().to_string()]);
    assert_input_error(&out, "nowhere");
}

// ---------------------------------------------------------------------------
// mandate policy test
// ---------------------------------------------------------------------------

fn mailer_case_count() -> usize {
    mailer_tests()["cases"].as_array().unwrap().len()
}

#[test]
fn policy_test_passes_on_the_example_pack() {
    let n = mailer_case_count();
    let out = run(&["policy", "test", &examples()]);
    assert_code(&out, OK);
    assert_eq!(
        out.stdout.lines().last(),
        Some(format!("{n} passed, 0 failed").as_str()),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("mailer.json"), "{}", out.stdout);
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);

    // --verbose lists the passing cases too.
    let out = run(&["policy", "test", &examples(), "--verbose"]);
    assert_code(&out, OK);
    for case in mailer_cases() {
        assert!(
            out.stdout.contains(&format!("PASS: {}", case.name)),
            "{}",
            out.stdout
        );
    }
}

/// A copy of the example pack whose first `deny` case wrongly expects `allow`;
/// returns the pack and the name of that case.
fn pack_with_a_wrong_expectation() -> (tempfile::TempDir, String) {
    let dir = copy_of_examples();
    let path = dir.path().join("tests/mailer.json");
    let mut suite: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let case = suite["cases"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["expect"] == "deny")
        .unwrap();
    case["expect"] = json!("allow");
    let name = case["name"].as_str().unwrap().to_owned();
    std::fs::write(&path, serde_json::to_string_pretty(&suite).unwrap()).unwrap();
    (dir, name)
}

#[test]
fn policy_test_reports_a_failing_case() {
    let n = mailer_case_count();
    let (dir, name) = pack_with_a_wrong_expectation();
    let out = run(&["policy", "test", &path_str(&dir)]);
    assert_code(&out, FAILURE);
    let mut lines = out.stdout.lines();
    lines
        .find(|l| l.trim() == format!("FAIL: {name}"))
        .unwrap_or_else(|| panic!("no `FAIL: {name}` line:\n{}", out.stdout));
    let detail = lines.next().unwrap_or_default();
    assert!(
        detail.contains("expected allow, got deny"),
        "the failure shows expected and actual outcomes: {detail}"
    );
    assert_eq!(
        out.stdout.matches("FAIL:").count(),
        1,
        "only the altered case fails:\n{}",
        out.stdout
    );
    assert_eq!(
        out.stdout.lines().last(),
        Some(format!("{} passed, 1 failed", n - 1).as_str()),
        "{}",
        out.stdout
    );
}

#[test]
fn policy_test_json_reports_counts_and_cases() {
    let n = mailer_case_count();
    let out = run(&["policy", "test", &examples(), "--json"]);
    assert_code(&out, OK);
    let v = out.json();
    assert_eq!(v["passed"], n);
    assert_eq!(v["failed"], 0);
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{v}");
    assert!(
        files[0]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("mailer.json"))
    );
    let cases = files[0]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), n);
    for (case, want) in cases.iter().zip(mailer_cases()) {
        assert_eq!(case["name"], want.name.as_str());
        assert_eq!(case["passed"], true, "{case}");
        assert_eq!(case["expected"], want.expect.as_str());
        assert_eq!(case["actual"], want.expect.as_str());
        assert!(case["policies"].is_array(), "{case}");
    }

    let (dir, name) = pack_with_a_wrong_expectation();
    let out = run(&["policy", "test", &path_str(&dir), "--json"]);
    assert_code(&out, FAILURE);
    let v = out.json();
    assert_eq!(v["passed"], n - 1);
    assert_eq!(v["failed"], 1);
    let failed = v["files"][0]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name.as_str())
        .unwrap();
    assert_eq!(failed["passed"], false);
    assert_eq!(failed["expected"], "allow");
    assert_eq!(failed["actual"], "deny");
    assert!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains("expected allow, got deny")),
        "{failed}"
    );
}

#[test]
fn policy_test_runs_one_file_with_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("one.json");
    std::fs::write(
        &file,
        json!({
            "defaults": {
                "principal": {"id": "spiffe://example.org/agent/mailer"},
                "context": {"task": {"tools": ["read_inbox"]}}
            },
            "cases": [
                {
                    "name": "declared read",
                    "request": {"action": {"server": "mail", "tool": "read_inbox",
                        "annotations": {"readOnlyHint": true, "openWorldHint": false}}},
                    "expect": "allow"
                },
                {
                    "name": "undeclared delete",
                    "request": {"action": {"server": "mail", "tool": "delete_all"}},
                    "expect": "deny",
                    "policies": ["undeclared-tool"]
                }
            ]
        })
        .to_string(),
    )
    .unwrap();
    let file = file.display().to_string();
    let out = run(&["policy", "test", &examples(), "--tests", &file]);
    assert_code(&out, OK);
    assert!(out.stdout.contains("one.json"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("mailer.json"),
        "only the named file runs:\n{}",
        out.stdout
    );
    assert_eq!(
        out.stdout.lines().last(),
        Some("2 passed, 0 failed"),
        "{}",
        out.stdout
    );

    // The example's own file, named explicitly, runs alone too.
    let mailer = examples_dir().join("tests/mailer.json");
    let out = run(&[
        "policy",
        "test",
        &examples(),
        "--tests",
        &mailer.display().to_string(),
        "--json",
    ]);
    assert_code(&out, OK);
    assert_eq!(out.json()["passed"], mailer_case_count());
}

#[test]
fn policy_test_malformed_test_file_is_an_input_error() {
    let dir = copy_of_examples();
    let broken = dir.path().join("tests/zz-broken.json");
    std::fs::write(&broken, "{\"cases\": [").unwrap();
    let out = run(&["policy", "test", &path_str(&dir)]);
    assert_input_error(&out, "zz-broken.json");
    assert!(out.stderr.contains("invalid test file"), "{}", out.stderr);

    // An unknown field in a test file is malformed too.
    std::fs::write(
        &broken,
        json!({"cases": [{"name": "x", "expect": "allow", "expected": "deny"}]}).to_string(),
    )
    .unwrap();
    let out = run(&["policy", "test", &path_str(&dir)]);
    assert_input_error(&out, "zz-broken.json");

    // So is a file named with --tests.
    let out = run(&[
        "policy",
        "test",
        &examples(),
        "--tests",
        &broken.display().to_string(),
    ]);
    assert_input_error(&out, "zz-broken.json");
}

#[test]
fn policy_test_needs_a_loading_pack_and_test_files() {
    let broken = pack(&[
        ("b.cedar", SYNTAX_ERROR),
        ("tests/t.json", r#"{"cases": []}"#),
    ]);
    let out = run(&["policy", "test", &path_str(&broken)]);
    assert_code(&out, INPUT);
    assert!(out.stderr.contains("b.cedar:6:"), "{}", out.stderr);

    let no_tests = pack(&[("all.cedar", "permit (principal, action, resource);\n")]);
    let out = run(&["policy", "test", &path_str(&no_tests)]);
    assert_input_error(&out, "no test files");
}

// ---------------------------------------------------------------------------
// The default pack: the one `mandate serve` loads
// ---------------------------------------------------------------------------

fn request_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/requests")
        .join(name)
        .display()
        .to_string()
}

/// Turns the policy `id` of `file` into a comment, as the README's tutorial
/// has the reader do.
fn comment_out_policy(file: &Path, id: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut inside = false;
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            if line == format!("@id(\"{id}\")") {
                inside = true;
            }
            let out = if inside {
                format!("// {line}")
            } else {
                line.to_owned()
            };
            if line == "};" {
                inside = false;
            }
            out
        })
        .collect();
    assert!(
        edited.iter().any(|l| l.starts_with("// @id")),
        "no policy `{id}` in {text}"
    );
    util::write_atomic(file, &(edited.join("\n") + "\n"));
}

/// Flags and environment variables that name a server's settings.
type Way<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

/// The README's tutorial: the server seeds `DATA_DIR/policies`, the reader
/// edits it, and `check`, `policy validate` and `policy test` (run where
/// the server runs, or told its --data-dir, --config or MANDATE_DATA_DIR)
/// answer with the edited pack, as the server does.
#[test]
fn check_and_policy_use_the_pack_serve_loads_with_the_same_settings() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = util::Launch::serve(&data)
        .args(["--reload-interval-ms", "50"])
        .start();
    let pack = data.join("policies");
    let delete = request_file("delete-email.json");
    let request: Value = serde_json::from_str(&std::fs::read_to_string(&delete).unwrap()).unwrap();
    let data_arg = data.display().to_string();
    let config = work.path().join("mandate.toml");
    std::fs::write(&config, format!("data_dir = {:?}\n", data_arg)).unwrap();
    let config_arg = config.display().to_string();
    let said = format!("policy pack: `{}`", pack.display());

    // Three ways to name the server's settings; each finds its pack.
    let ways: [Way; 3] = [
        (vec!["--data-dir", &data_arg], vec![]),
        (vec!["--config", &config_arg], vec![]),
        (vec![], vec![("MANDATE_DATA_DIR", data_arg.as_str())]),
    ];
    let check = |flags: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["check", delete.as_str()];
        args.extend(flags);
        run_in(work.path(), &args, None, env)
    };

    assert_eq!(
        server.decide(&request).decision()["decision"],
        "approval_required"
    );
    for (flags, env) in &ways {
        let out = check(flags, env);
        assert_code(&out, APPROVAL_REQUIRED);
        assert_eq!(out.stderr.trim(), said, "{flags:?} {env:?}");
    }

    // The reader turns the approval gate into a comment: the server allows
    // the deletion once it has reloaded, and so does `check`.
    comment_out_policy(&pack.join("approvals.cedar"), "destructive-needs-approval");
    util::poll_until(Duration::from_secs(20), "the server to reload", || {
        let decision = server.decide(&request).decision();
        if decision["decision"] == "allow" {
            Ok(())
        } else {
            Err(decision)
        }
    });
    for (flags, env) in &ways {
        let out = check(flags, env);
        assert_code(&out, OK);
        assert_eq!(
            out.stdout.lines().next(),
            Some("allow"),
            "{flags:?} {env:?}"
        );
        assert_eq!(out.stderr.trim(), said);
    }
    let mut json = vec!["--json"];
    json.extend(["--data-dir", data_arg.as_str()]);
    let out = check(&json, &[]);
    assert_code(&out, OK);
    assert_eq!(out.json()["pack"], pack.display().to_string());

    // `policy validate` and `policy test` look at the same pack: its tests
    // still expect the gate that is gone.
    for (flags, env) in &ways {
        let mut args = vec!["policy", "validate"];
        args.extend(flags);
        let out = run_in(work.path(), &args, None, env);
        assert_code(&out, OK);
        assert!(
            out.stdout.contains(&pack.display().to_string()),
            "{}",
            out.stdout
        );
        assert_eq!(out.stderr.trim(), said);

        let mut args = vec!["policy", "test"];
        args.extend(flags);
        let out = run_in(work.path(), &args, None, env);
        assert_code(&out, FAILURE);
        assert!(
            out.stdout
                .contains("expected policies [\"destructive-needs-approval\"]"),
            "{}",
            out.stdout
        );
        assert_eq!(out.stderr.trim(), said);
    }

    // Run where the server runs (its data directory is ./mandate-data),
    // with nothing else said: the same pack.
    let here = tempfile::tempdir().unwrap();
    util::copy_dir(&pack, &here.path().join("mandate-data/policies"));
    let out = run_in(here.path(), &["check", &delete], None, &[]);
    assert_code(&out, OK);
    assert_eq!(out.stderr.trim(), "policy pack: `mandate-data/policies`");
}

#[test]
fn policies_from_the_config_file_or_the_environment_name_the_pack() {
    let work = tempfile::tempdir().unwrap();
    let deny = request_file("send-to-stranger.json");
    let config = work.path().join("mandate.toml");
    std::fs::write(
        &config,
        format!(
            "policies = {:?}\n\n[[approvers]]\nname = \"a@example.com\"\ntoken_sha256 = \"00\"\n",
            examples()
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let out = run_in(
        work.path(),
        &["check", &deny, "--config", &config_arg],
        None,
        &[],
    );
    assert_code(&out, DENY);
    assert_eq!(out.stderr.trim(), format!("policy pack: `{}`", examples()));
    // MANDATE_CONFIG names the file as --config does.
    let out = run_in(
        work.path(),
        &["policy", "validate", "--json"],
        None,
        &[("MANDATE_CONFIG", &config_arg)],
    );
    assert_code(&out, OK);
    assert_eq!(out.json()["pack"], examples());

    // The environment wins over the file, and a flag over both: as for serve.
    let elsewhere = work.path().join("nowhere");
    let out = run_in(
        work.path(),
        &["check", &deny, "--config", &config_arg],
        None,
        &[("MANDATE_POLICIES", elsewhere.to_str().unwrap())],
    );
    assert_input_error(&out, "nowhere");
    let out = run_in(
        work.path(),
        &[
            "check",
            &deny,
            "--config",
            &config_arg,
            "--policies",
            &examples(),
        ],
        None,
        &[("MANDATE_POLICIES", elsewhere.to_str().unwrap())],
    );
    assert_code(&out, DENY);

    // A config file that does not load is an input error, as for serve.
    std::fs::write(
        &config,
        "[[approvers]]\nname = \"a\"\ntoken_sha256 = \"b\"\npolicies = \"x\"\n",
    )
    .unwrap();
    let out = run_in(
        work.path(),
        &["policy", "test", "--config", &config_arg],
        None,
        &[],
    );
    assert_input_error(
        &out,
        "`policies` is a top-level setting but appears inside [[approvers]]",
    );
    let out = run_in(
        work.path(),
        &["check", &deny, "--config", "missing.toml"],
        None,
        &[],
    );
    assert_input_error(&out, "missing.toml");
}

#[test]
fn without_a_data_directory_the_built_in_pack_is_used_and_named() {
    let work = tempfile::tempdir().unwrap();
    let out = run_in(work.path(), &["policy", "validate"], None, &[]);
    assert_code(&out, OK);
    assert!(
        out.stdout.contains("valid in `<example>`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("the built-in example pack"),
        "{}",
        out.stderr
    );

    let out = run_in(work.path(), &["policy", "test", "--json"], None, &[]);
    assert_code(&out, OK);
    let v = out.json();
    assert_eq!(v["pack"], "<example>");
    assert_eq!(v["passed"], mailer_case_count());
    assert_eq!(v["files"][0]["file"], "<example>/tests/mailer.json");
    // Nothing is written: only `serve` seeds the data directory.
    assert!(!work.path().join("mandate-data").exists());

    // A named directory cannot be given twice.
    let out = run_in(
        work.path(),
        &["policy", "validate", &examples(), "--policies", &examples()],
        None,
        &[],
    );
    assert_input_error(&out, "cannot be used with");
}

// ---------------------------------------------------------------------------
// mandate policy schema, --help
// ---------------------------------------------------------------------------

#[test]
fn policy_schema_prints_the_base_schema() {
    let out = run(&["policy", "schema"]);
    assert_code(&out, OK);
    assert!(out.stdout.contains("namespace Mandate"), "{}", out.stdout);
    assert!(out.stdout.contains("action call_tool"), "{}", out.stdout);
    let published = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/mandate.cedarschema"),
    )
    .unwrap();
    assert_eq!(
        out.stdout, published,
        "the published schema/mandate.cedarschema"
    );
}

#[test]
fn help_works_for_every_command() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check", "--help"],
        &["policy", "--help"],
        &["policy", "validate", "--help"],
        &["policy", "test", "--help"],
        &["policy", "schema", "--help"],
        &["help", "check"],
    ] {
        let out = run(args);
        assert_code(&out, OK);
        assert!(out.stdout.contains("Usage:"), "{args:?}:\n{}", out.stdout);
    }
    let out = run(&["--version"]);
    assert_code(&out, OK);
    assert!(out.stdout.starts_with("mandate "), "{}", out.stdout);

    // Every command and subcommand `--help` lists, down the tree.
    let mut pending = vec![Vec::<String>::new()];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = run(&args);
        assert_code(&out, OK);
        assert!(out.stdout.contains("Usage:"), "{args:?}:\n{}", out.stdout);
        seen += 1;
        for sub in subcommands(&out.stdout) {
            let mut next = path.clone();
            next.push(sub);
            pending.push(next);
        }
    }
    assert!(seen > 20, "only {seen} commands found");
}

/// The subcommands a `--help` lists under `Commands:` (not `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        // A command's line starts with two spaces; wrapped text with more.
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_lists_the_exit_codes_once_and_each_command_its_own() {
    let codes = |out: &Output, expected: &[&str]| {
        assert_code(out, OK);
        assert_eq!(
            out.stdout.matches("Exit codes").count(),
            1,
            "{}",
            out.stdout
        );
        for code in expected {
            assert!(out.stdout.contains(code), "lacks `{code}`:\n{}", out.stdout);
        }
    };
    codes(
        &run(&["--help"]),
        &[
            "0  success",
            "1  failures found",
            "2  usage or input error",
            "3  `check`: deny",
            "4  `check`: approval required",
        ],
    );
    // A command lists the codes it returns, not every command's.
    let check = run(&["check", "--help"]);
    codes(
        &check,
        &[
            "0  allow",
            "2  usage or input error",
            "3  deny",
            "4  approval required",
        ],
    );
    assert!(
        !check.stdout.contains("receipts verify"),
        "{}",
        check.stdout
    );
    let receipts = run(&["receipts", "--help"]);
    codes(
        &receipts,
        &["0  success", "1  `verify`", "2  usage or input error"],
    );
    assert!(!receipts.stdout.contains("`check`"), "{}", receipts.stdout);
}

/// docs/cli.md shows what `mandate … --help` prints; each such block must
/// be exactly what the binary prints today.
#[test]
fn the_help_shown_in_docs_cli_md_is_the_binarys() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md"))
            .unwrap();
    let mut checked = Vec::new();
    let mut rest = doc.as_str();
    while let Some(at) = rest.find("```\n$ mandate") {
        let block = &rest[at + 4..];
        let end = block.find("```").unwrap();
        let (command, shown) = block[..end].split_once('\n').unwrap();
        rest = &block[end + 3..];
        if !(command.ends_with(" --help") || command.ends_with(" -h")) {
            continue;
        }
        let args: Vec<&str> = command.split_whitespace().skip(2).collect();
        let out = run(&args);
        assert_code(&out, OK);
        assert_eq!(
            out.stdout, shown,
            "docs/cli.md shows another `{command}` than the binary prints: paste the binary's"
        );
        checked.push(command.to_owned());
    }
    for command in [
        "$ mandate --help",
        "$ mandate check --help",
        "$ mandate policy test --help",
    ] {
        assert!(
            checked.iter().any(|c| c == command),
            "{command} not in docs/cli.md"
        );
    }
}

#[test]
fn serve_help_names_the_environment_variables() {
    let out = run(&["serve", "--help"]);
    assert_code(&out, OK);
    for (flag, var) in [
        ("--config", "MANDATE_CONFIG"),
        ("--listen", "MANDATE_LISTEN"),
        ("--data-dir", "MANDATE_DATA_DIR"),
        ("--policies", "MANDATE_POLICIES"),
        ("--max-body-bytes", "MANDATE_MAX_BODY_BYTES"),
        ("--reload-interval-ms", "MANDATE_RELOAD_INTERVAL_MS"),
        ("--log-format", "MANDATE_LOG_FORMAT"),
    ] {
        assert!(
            out.stdout.contains(flag),
            "`{flag}` missing:\n{}",
            out.stdout
        );
        assert!(out.stdout.contains(var), "`{var}` missing:\n{}", out.stdout);
    }
}

#[test]
fn no_command_is_a_usage_error() {
    let out = run(&[]);
    assert_code(&out, INPUT);
    assert!(out.stderr.contains("Usage:"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// mandate health
// ---------------------------------------------------------------------------

#[test]
fn health_exits_0_while_the_server_serves_decisions_and_1_once_it_does_not() {
    let data = tempfile::tempdir().unwrap();
    let server = util::Launch::serve(data.path())
        .args(["--reload-interval-ms", "50"])
        .start();
    let url = format!("http://127.0.0.1:{}", server.addr().port());
    let version = server.health()["policies"]["version"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = run(&["health", "--server", &url]);
    assert_code(&out, OK);
    assert_eq!(
        out.stdout,
        format!("ok (policies {version}, 0 receipts)\n"),
        "{}",
        out.stderr
    );
    let out = run(&["health", "--server", &url, "--json"]);
    assert_code(&out, OK);
    assert_eq!(
        out.json(),
        json!({"healthy": true, "status": "ok", "policy_version": version, "receipts": 0})
    );
    // MANDATE_SERVER names the server too.
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["health"], None, &[("MANDATE_SERVER", &url)]);
    assert_code(&out, OK);

    // A pack that no longer loads: the previous one is still in force, so
    // the server still serves decisions.
    util::write_atomic(
        &data.path().join("policies/broken.cedar"),
        "permit(principal, action, resource) when { nonsense };",
    );
    util::poll_until(Duration::from_secs(10), "a rejected reload", || {
        let health = server.health();
        if health["status"] == "degraded" {
            Ok(())
        } else {
            Err(health)
        }
    });
    let out = run(&["health", "--server", &url]);
    assert_code(&out, OK);
    assert!(
        out.stdout.starts_with(
            "degraded: the last policy reload was rejected; the previous policies are in force"
        ),
        "{}",
        out.stdout
    );
    let out = run(&["health", "--server", &url, "--json"]);
    assert_code(&out, OK);
    assert_eq!(out.json()["healthy"], true);
    assert_eq!(out.json()["status"], "degraded");

    // Something that is not Mandate's health answers there.
    let out = run(&["health", "--server", &format!("{url}/elsewhere")]);
    assert_code(&out, FAILURE);
    assert!(
        out.stderr
            .contains("/elsewhere/v1/health answered 404 Not Found"),
        "{}",
        out.stderr
    );

    // Stopped: nothing answers.
    drop(server);
    let out = run(&["health", "--server", &url]);
    assert_code(&out, FAILURE);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot reach the Mandate server at {url}: "
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn health_gives_up_after_its_timeout() {
    // Accepts connections (the kernel does) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let out = run(&["health", "--server", &url, "--timeout", "300ms"]);
    assert_code(&out, FAILURE);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.stderr.contains("cannot reach the Mandate server"),
        "{}",
        out.stderr
    );
}

#[test]
fn health_refuses_bad_flags_as_usage_errors() {
    for (args, message) in [
        (
            &["health", "--server", "https://127.0.0.1:8181"][..],
            "plain HTTP only",
        ),
        (&["health", "--server", "not a url"], "--server `not a url`"),
        (&["health", "--timeout", "soon"], "--timeout: "),
        (
            &["health", "--timeout", "0s"],
            "--timeout must be more than zero",
        ),
    ] {
        let out = run(args);
        assert_code(&out, INPUT);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
}
