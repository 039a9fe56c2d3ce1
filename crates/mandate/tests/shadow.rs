//! Shadow packs on the real `mandate serve`: candidate packs evaluated on
//! every decision beside the live pack, never deciding. The live outcome is
//! unchanged; each receipt records what each shadow pack decided; /metrics
//! counts agreements and disagreements per pack; a shadow pack reloads like
//! the live pack (and a bad reload keeps it as it was); a shadow pack that
//! does not load, a bad name or a name given twice stops the start.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use util::{Launch, Server, copy_dir, example_pack, mailer, metric, send_email, write_atomic};

/// A forbid the stricter candidate adds: no mail leaves at all.
const NO_MAIL: &str = r#"
@id("no-outbound-mail")
@reason("the candidate sends no mail")
forbid (principal, action == Mandate::Action::"call_tool", resource)
when { resource.name == "send_email" };
"#;

/// A live server on the example pack with two shadow packs: `stricter` (the
/// example pack plus [`NO_MAIL`]) and `same` (the example pack as it is).
struct Setup {
    server: Server,
    dir: tempfile::TempDir,
}

impl Setup {
    fn stricter(&self) -> std::path::PathBuf {
        self.dir.path().join("stricter")
    }
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let stricter = dir.path().join("stricter");
    let same = dir.path().join("same");
    copy_dir(&example_pack(), &stricter);
    copy_dir(&example_pack(), &same);
    std::fs::write(stricter.join("no-mail.cedar"), NO_MAIL).unwrap();
    let config = dir.path().join("mandate.toml");
    std::fs::write(
        &config,
        format!(
            "reload_interval_ms = 100\n\n\
             [[shadow_policies]]\nname = \"stricter\"\ndir = \"{}\"\n\n\
             [[shadow_policies]]\nname = \"same\"\ndir = \"{}\"\n",
            stricter.display(),
            same.display()
        ),
    )
    .unwrap();
    let server = Launch::serve(&dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .arg("--policies")
        .arg(example_pack())
        .start();
    Setup { server, dir }
}

/// Decides `request` (expecting `live`) and returns its receipt.
fn decide(server: &Server, request: &Value, live: &str) -> Value {
    let reply = server.decide(request);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["decision"], live, "{answer}");
    assert!(
        answer.get("shadow").is_none(),
        "shadow outcomes are for operators, not agents: {answer}"
    );
    let id = answer["decision_id"].as_str().unwrap();
    server.get(&format!("/v1/receipts/{id}")).json()["receipt"].clone()
}

/// The receipt's shadow outcome of `pack`.
fn shadow_of<'a>(receipt: &'a Value, pack: &str) -> &'a Value {
    receipt["shadow"]
        .as_array()
        .unwrap_or_else(|| panic!("no shadow outcomes: {receipt}"))
        .iter()
        .find(|s| s["pack"] == pack)
        .unwrap_or_else(|| panic!("no outcome of `{pack}`: {receipt}"))
}

fn shadow_count(server: &Server, pack: &str, live: &str, shadow: &str) -> f64 {
    metric(
        &server.metrics(),
        &format!(
            "mandate_shadow_decisions_total{{pack=\"{pack}\",live=\"{live}\",shadow=\"{shadow}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

#[test]
fn shadow_packs_are_recorded_and_counted_but_never_decide() {
    let s = setup();
    let server = &s.server;

    // Mail to an allowed recipient: the live pack allows; `stricter` would
    // deny it (its new forbid), `same` agrees.
    let sent = decide(server, &send_email("carol@example.com"), "allow");
    let stricter = shadow_of(&sent, "stricter");
    assert_eq!(stricter["decision"], "deny", "{sent}");
    assert_eq!(stricter["agrees"], false);
    assert_eq!(stricter["policies"], json!(["no-outbound-mail"]));
    assert_eq!(stricter["reasons"], json!(["the candidate sends no mail"]));
    assert_ne!(stricter["policy_version"], sent["policy_version"]);
    let same = shadow_of(&sent, "same");
    assert_eq!(same["decision"], "allow");
    assert_eq!(same["agrees"], true);
    assert_eq!(same["policies"], sent["policies"]);
    // The order is the configured one.
    assert_eq!(sent["shadow"][0]["pack"], "stricter");
    assert_eq!(sent["shadow"][1]["pack"], "same");

    // A read and a deny: both shadows agree with the live pack.
    let read = decide(server, &mailer(&json!({})), "allow");
    assert_eq!(shadow_of(&read, "stricter")["decision"], "allow");
    let stranger = decide(server, &send_email("mallory@evil.example"), "deny");
    assert_eq!(shadow_of(&stranger, "stricter")["decision"], "deny");
    assert_eq!(shadow_of(&stranger, "same")["decision"], "deny");

    assert_eq!(shadow_count(server, "stricter", "allow", "deny"), 1.0);
    assert_eq!(shadow_count(server, "stricter", "allow", "allow"), 1.0);
    assert_eq!(shadow_count(server, "stricter", "deny", "deny"), 1.0);
    assert_eq!(shadow_count(server, "same", "allow", "allow"), 2.0);
    assert_eq!(shadow_count(server, "same", "deny", "deny"), 1.0);
    assert_eq!(shadow_count(server, "same", "allow", "deny"), 0.0);

    // The candidate is edited: without its forbid it agrees again, and the
    // receipts name its new version. The live pack is untouched.
    let before = stricter["policy_version"].clone();
    write_atomic(
        &s.stricter().join("no-mail.cedar"),
        "// nothing forbidden here any more\n",
    );
    let mut last = Value::Null;
    util::poll_until(Duration::from_secs(15), "the shadow pack's reload", || {
        last = decide(server, &send_email("dave@example.com"), "allow");
        let outcome = shadow_of(&last, "stricter");
        if outcome["decision"] == "allow" && outcome["policy_version"] != before {
            Ok(())
        } else {
            Err(outcome.clone())
        }
    });
    assert_eq!(last["policy_version"], sent["policy_version"]);

    // A broken edit is rejected: the shadow pack stays as it was.
    write_atomic(&s.stricter().join("no-mail.cedar"), "this is not cedar");
    util::poll_until(
        Duration::from_secs(15),
        "the broken shadow pack's rejection in the log",
        || {
            let rejected = server
                .log_messages()
                .iter()
                .any(|m| m.contains("reload of the shadow pack `stricter` rejected"));
            if rejected { Ok(()) } else { Err(()) }
        },
    );
    let after_bad = decide(server, &send_email("carol@example.com"), "allow");
    assert_eq!(shadow_of(&after_bad, "stricter")["decision"], "allow");
    assert_eq!(
        shadow_of(&after_bad, "stricter")["policy_version"],
        shadow_of(&last, "stricter")["policy_version"]
    );
    let health = server.health();
    assert_eq!(
        health["status"], "ok",
        "a shadow pack's bad reload does not degrade the live service: {health}"
    );
}

#[test]
fn without_shadow_packs_receipts_have_no_shadow_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::serve(&dir.path().join("data"))
        .arg("--policies")
        .arg(example_pack())
        .start();
    let receipt = decide(&server, &mailer(&json!({})), "allow");
    assert!(receipt.get("shadow").is_none(), "{receipt}");
    assert!(
        !server.metrics().contains("mandate_shadow_decisions_total{"),
        "no shadow pack, no shadow counts"
    );
}

#[test]
fn one_directory_from_the_environment_is_the_shadow_pack_named_shadow() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate");
    copy_dir(&example_pack(), &candidate);
    std::fs::write(candidate.join("no-mail.cedar"), NO_MAIL).unwrap();
    let server = Launch::serve(&dir.path().join("data"))
        .arg("--policies")
        .arg(example_pack())
        .env("MANDATE_SHADOW_POLICIES", &candidate)
        .start();
    let receipt = decide(&server, &send_email("carol@example.com"), "allow");
    assert_eq!(shadow_of(&receipt, "shadow")["decision"], "deny");
}

/// Starts `serve` with `config` (TOML) and expects it to be refused (exit
/// 2) with `message` on stderr.
fn refused(dir: &Path, config: &str, message: &str) {
    let path = dir.join("mandate.toml");
    std::fs::write(&path, config).unwrap();
    let (status, stderr) = Launch::serve(&dir.join("data"))
        .arg("--config")
        .arg(&path)
        .arg("--policies")
        .arg(example_pack())
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected `{message}` in:\n{stderr}"
    );
}

#[test]
fn a_shadow_pack_that_does_not_load_or_is_misnamed_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("bad.cedar"), "permit (").unwrap();
    refused(
        dir.path(),
        &format!("shadow_policies = \"{}\"\n", broken.display()),
        "the shadow pack `shadow` in",
    );
    let good = example_pack();
    refused(
        dir.path(),
        &format!(
            "[[shadow_policies]]\nname = \"Not Valid\"\ndir = \"{}\"\n",
            good.display()
        ),
        "is not a shadow pack name",
    );
    refused(
        dir.path(),
        &format!(
            "[[shadow_policies]]\nname = \"twice\"\ndir = \"{0}\"\n\n\
             [[shadow_policies]]\nname = \"twice\"\ndir = \"{0}\"\n",
            good.display()
        ),
        "the name `twice` is given twice",
    );
    refused(
        dir.path(),
        &format!(
            "shadow_policies = \"{}\"\n",
            dir.path().join("missing").display()
        ),
        "missing",
    );
}
