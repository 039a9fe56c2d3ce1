//! The web console, tested in a real browser, on each store: this test
//! starts a real `mandate serve` (on SQLite, and again on a PostgreSQL the
//! test starts itself; an approver, approval gates from
//! `tests/data/console-pack`, an identity provider, an open task with one
//! delegation, and one receipt altered in the ledger after it was signed),
//! then runs `node --test tests/ui/console.test.mjs`, which
//! drives Debian's chromium with playwright-core: the agent's side with
//! fetch, the approver's in the console.
//!
//! It needs Debian's chromium (`/usr/lib/chromium/chromium`), `node` and
//! `tests/ui/node_modules`; without them it fails (never skips) and says to
//! run the README's set-up command.
//! With `MANDATE_SCREENSHOT_DIR` set (an absolute path, or one relative to
//! the repository), the browser test saves the screenshots the docs show.

// Tests assert by panicking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod util;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mandate_core::api::{DelegateTask, StartTask};
use serde_json::{Value, json};
use util::Launch;
use util::tasks::{Gateway, Idp, ROOT_AGENT, SUB_AGENT, delegation_of, task_of, write_config};

/// The approver's token; the server knows only its SHA-256 digest.
const APPROVER_TOKEN: &str = "mandate-console-test-approver-token-3f9c1a7e52b04d68";
const APPROVER_TOKEN_SHA256: &str =
    "772aa034e2e0435c9cfb699788279a98ab49a92a6fee0faed42c3e205cabac30";
const APPROVER: &str = "reviewer@example.com";

/// The browser tests' own timeouts are shorter; this only stops a hang.
const NODE_TIMEOUT: Duration = Duration::from_secs(300);

/// The browser itself. Debian's `/usr/bin/chromium` is a launcher script
/// whose /etc/chromium.d snippets print `[: …: unexpected operator` where
/// /dev/shm is mounted twice (many containers); the tests need none of its
/// desktop flags.
const CHROMIUM: &str = "/usr/lib/chromium/chromium";
const SETUP: &str = "run the set-up command from the README (it installs chromium and runs `npm ci --prefix tests/ui`)";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Fails with what is missing and how to get it.
fn require_browser_tools(repo: &Path) {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} is missing"));
    }
    let modules = repo.join("tests/ui/node_modules/playwright-core");
    if !modules.exists() {
        missing.push(format!("{} is missing", modules.display()));
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            let major: u32 = version
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major < 20 {
                missing.push(format!(
                    "node 20 or newer is needed, found {}",
                    version.trim()
                ));
            }
        }
        _ => missing.push("`node` is not on the PATH".to_owned()),
    }
    assert!(
        missing.is_empty(),
        "cannot run the console's browser tests: {}. To fix: {SETUP}.",
        missing.join("; ")
    );
}

/// Approvers, a short checkpoint interval (so that the explorer shows
/// verified proofs within the test), a generous approval lifetime (the
/// expiry test's gate sets its own, 4 s), and the shadow pack in `shadow`.
fn config_lines(shadow: &Path) -> String {
    format!(
        "checkpoint_interval_ms = 250\napproval_ttl_seconds = 300\n\n\
             [[approvers]]\nname = \"{APPROVER}\"\ntoken_sha256 = \"{APPROVER_TOKEN_SHA256}\"\n\n\
             [[shadow_policies]]\nname = \"{SHADOW}\"\ndir = \"{}\"\n",
        shadow.display()
    )
}

/// The shadow pack: the console's pack, except that it reads no invoices.
const SHADOW: &str = "no-invoice-reads";
const SHADOW_FORBID: &str = r#"
@id("no-invoice-reads")
@reason("the candidate reads no invoices")
forbid (principal, action == Mandate::Action::"call_tool", resource)
when { resource.name == "read_invoice" };
"#;

/// Where the server under test keeps its state and receipts.
#[derive(Clone)]
enum Store {
    /// The default: `state.db` and `ledger.db` in the data directory.
    Sqlite,
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

fn gateway(store: &Store) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new("idp-console");
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/console-pack");
    let shadow = dir.path().join("shadow");
    util::copy_dir(&pack, &shadow);
    std::fs::write(shadow.join("candidate.cedar"), SHADOW_FORBID).unwrap();
    let config = write_config(dir.path(), &idp, &config_lines(&shadow));
    let data = dir.path().join("data");
    let mut launch = Launch::serve(&data)
        .arg("--config")
        .arg(&config)
        .arg("--policies")
        .arg(&pack);
    if let Store::Postgres(url) = store {
        launch = launch.env("MANDATE_STORE", url);
    }
    let server = launch.start();
    Gateway {
        server,
        data,
        dir,
        idp,
    }
}

/// Starts a task for the planner and delegates part of it to the mailer;
/// returns the task id and its root credential.
fn open_task(gw: &Gateway) -> (String, String) {
    let task = StartTask {
        labels: vec!["finance".to_owned()],
        max_depth: 1,
        ..task_of(
            "reconcile the supplier ledger",
            &["billing/read_invoice", "billing/pay_invoice"],
            900,
        )
    };
    let started = gw.start_task_of(ROOT_AGENT, &task);
    let delegation = DelegateTask {
        ttl_seconds: Some(600),
        ..delegation_of(SUB_AGENT, &["billing/read_invoice"])
    };
    let task_id = started.task_id.to_string();
    gw.delegate_task(&task_id, &started.credential, &delegation);
    (task_id, started.credential)
}

/// Records a denied call, waits until a signed checkpoint covers its
/// receipt, then alters the receipt in the ledger to read `allow`, as
/// someone covering their tracks would: the console must show its proof as
/// failed wherever it shows the receipt. Returns the receipt's index.
fn tamper_with_a_receipt(gw: &Gateway, store: &Store) -> u64 {
    let denied = gw.server.decide(&json!({
        "principal": {"id": "spiffe://example.org/agent/billing"},
        "action": {"server": "billing", "tool": "export_customers"},
        "arguments": {"format": "csv", "note": "tampered-receipt"},
        "context": {"task": {"intent": "export the customer list", "tools": ["export_customers"]}},
    }));
    assert_eq!(denied.status, 200, "{}", denied.body);
    let denied = denied.json();
    assert_eq!(denied["decision"], "deny", "{denied}");
    let index = denied["receipt_index"].as_u64().unwrap();
    util::poll_until(
        Duration::from_secs(15),
        "a checkpoint over the receipt to alter",
        || {
            let found: Value = gw
                .server
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/receipts?before={}&limit=1", index + 1),
                    Some(APPROVER_TOKEN),
                    None,
                )
                .json();
            let status = found["items"][0]["proof"]["status"].clone();
            if status == "verified" {
                Ok(())
            } else {
                Err(status)
            }
        },
    );
    let altered = |body: &str| {
        let altered = body.replace(r#""decision":"deny""#, r#""decision":"allow""#);
        assert_ne!(
            altered, body,
            "the receipt's body has no deny to alter: {body}"
        );
        altered
    };
    match store {
        Store::Sqlite => {
            let ledger = rusqlite::Connection::open(gw.data.join("ledger.db")).unwrap();
            ledger.busy_timeout(Duration::from_secs(10)).unwrap();
            let body: String = ledger
                .query_row("SELECT body FROM receipts WHERE idx = ?1", [index], |row| {
                    row.get(0)
                })
                .unwrap();
            let changed = ledger
                .execute(
                    "UPDATE receipts SET body = ?1, decision = 'allow' WHERE idx = ?2",
                    rusqlite::params![altered(&body), index],
                )
                .unwrap();
            assert_eq!(changed, 1);
        }
        Store::Postgres(url) => {
            let pg = test_postgres::shared();
            let body = pg.query(
                url,
                &format!("SELECT body FROM receipts WHERE idx = {index}"),
            );
            // The body is JSON: a dollar-quoted literal needs no escaping.
            let changed = pg.query(
                url,
                &format!(
                    "WITH changed AS (UPDATE receipts SET body = $body${}$body$, decision = 'allow' WHERE idx = {index} RETURNING 1) SELECT count(*) FROM changed",
                    altered(body.trim_end_matches('\n'))
                ),
            );
            assert_eq!(changed.trim(), "1");
        }
    }
    index
}

/// Runs `node --test FILE` with `envs`, bounded by [`NODE_TIMEOUT`];
/// returns whether it passed and everything it printed.
fn run_node(repo: &Path, file: &Path, envs: &[(&str, String)]) -> (bool, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("node");
    cmd.arg("--test")
        .arg("--test-reporter=spec")
        .arg(file)
        .current_dir(repo)
        .stdin(Stdio::null())
        .stdout(File::create(out.path()).unwrap())
        .stderr(File::create(out.path().with_extension("err")).unwrap());
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); {SETUP}"));
    let deadline = Instant::now() + NODE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(out.path()).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.path().with_extension("err")).unwrap_or_default();
    let _ = std::fs::remove_file(out.path().with_extension("err"));
    let mut output = format!("{stdout}{stderr}");
    if status.is_none() {
        output.push_str(&format!("\n(killed after {NODE_TIMEOUT:?})"));
    }
    (status.is_some_and(|s| s.success()), output)
}

#[test]
fn the_console_in_a_real_browser() {
    console_in_a_real_browser(&Store::Sqlite);
}

/// The same console, served by an instance whose state and receipts are in
/// PostgreSQL.
#[test]
fn the_console_in_a_real_browser_on_postgresql() {
    let url = test_postgres::shared().database();
    console_in_a_real_browser(&Store::Postgres(url));
}

fn console_in_a_real_browser(store: &Store) {
    // One browser run at a time: two at once on a loaded 2-core machine
    // would stretch the browser tests' own timeouts.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let repo = repo();
    require_browser_tools(&repo);
    let gw = gateway(store);
    let (task_id, credential) = open_task(&gw);
    let tampered = tamper_with_a_receipt(&gw, store);

    let (passed, output) = run_node(
        &repo,
        &repo.join("tests/ui/console.test.mjs"),
        &[
            ("MANDATE_URL", gw.server.url("")),
            ("MANDATE_APPROVER_TOKEN", APPROVER_TOKEN.to_owned()),
            ("MANDATE_APPROVER_NAME", APPROVER.to_owned()),
            ("MANDATE_TASK_ID", task_id),
            ("MANDATE_TASK_CREDENTIAL", credential),
            ("MANDATE_TAMPERED_INDEX", tampered.to_string()),
            ("MANDATE_SHADOW_PACK", SHADOW.to_owned()),
        ],
    );
    println!("{output}");
    assert!(
        passed,
        "the console's browser tests failed:\n{output}\n--- server log ---\n{}",
        gw.server.log_lines().join("\n")
    );
}
