//! `mandate health`: asks a running server whether it serves decisions
//! (`GET /v1/health`) and says so in the exit code, for probes that can
//! run a command but not an HTTP client: a container's health check (the
//! image has no shell and no curl), a service manager, a script.

use mandate_client::{ClientError, Health};
use serde_json::json;

use crate::cli::HealthArgs;
use crate::client::{Proxy, connect, report, status_text};
use crate::exit::Code;
use crate::output::{emit, outln};

pub fn run(args: HealthArgs) -> anyhow::Result<Code> {
    let timeout = match humantime::parse_duration(&args.timeout) {
        Ok(timeout) if !timeout.is_zero() => timeout,
        Ok(_) => return Ok(report(Code::Input, "--timeout must be more than zero")),
        Err(e) => {
            return Ok(report(
                Code::Input,
                &format!("--timeout: {e}; write a duration such as 5s"),
            ));
        }
    };
    let (client, runtime) = match connect(&args.server, timeout, Proxy::None) {
        Ok(connected) => connected,
        Err(code) => return Ok(code),
    };
    let health = match runtime.block_on(client.health()) {
        Ok(health) => health,
        Err(e) => return Ok(report(Code::Failure, &unanswered(&args.server, &e))),
    };
    let verdict = Verdict::of(&health);
    let mut out = String::new();
    if args.json {
        let mut summary = serde_json::Map::new();
        summary.insert("healthy".into(), json!(verdict.healthy));
        summary.insert("status".into(), json!(health.status));
        summary.insert("policy_version".into(), json!(health.policies.version));
        summary.insert("receipts".into(), json!(health.receipts.size));
        if let Some(failure) = &health.receipts.failure {
            summary.insert("failure".into(), json!(failure));
        }
        outln!(out, "{}", serde_json::to_string_pretty(&summary)?);
    } else {
        outln!(
            out,
            "{}{} (policies {}, {} receipts)",
            health.status,
            verdict.note,
            health.policies.version,
            health.receipts.size
        );
    }
    emit(&out)?;
    Ok(if verdict.healthy {
        Code::Ok
    } else {
        Code::Failure
    })
}

/// What a status means for whoever asks.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    /// Whether the server serves decisions.
    healthy: bool,
    /// Said after the status: why it is not plain `ok`.
    note: String,
}

impl Verdict {
    fn of(health: &Health) -> Self {
        match health.status.as_str() {
            "ok" => Self {
                healthy: true,
                note: String::new(),
            },
            // A rejected reload leaves the previous pack in force, and a
            // restart would not help: `serve` refuses the broken pack.
            "degraded" => Self {
                healthy: true,
                note: ": the last policy reload was rejected; the previous policies are in force"
                    .to_owned(),
            },
            "failing" => Self {
                healthy: false,
                note: format!(
                    ": the receipt log refuses receipts, so every decision is answered 503 ({})",
                    health
                        .receipts
                        .failure
                        .as_deref()
                        .unwrap_or("no cause given")
                ),
            },
            // A status this build does not know (a newer server): not
            // taken for healthy.
            _ => Self {
                healthy: false,
                note: ": a status this version of mandate does not know".to_owned(),
            },
        }
    }
}

/// Why no health came back, in words.
fn unanswered(server: &str, error: &ClientError) -> String {
    match error {
        ClientError::Unreachable { detail, .. } => {
            format!("cannot reach the Mandate server at {server}: {detail}")
        }
        ClientError::CutOff { url, detail } => format!("reading the answer of {url}: {detail}"),
        ClientError::Refused { status, url, .. } => {
            format!("{url} answered {}", status_text(*status))
        }
        ClientError::Unreadable {
            url,
            status,
            detail,
        } => format!(
            "{url} answered {} with a body that is not Mandate's health: {detail}",
            status_text(*status)
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use mandate_client::{HealthPolicies, HealthReceipts};

    use super::*;

    fn health(status: &str, failure: Option<&str>) -> Health {
        Health {
            status: status.to_owned(),
            policies: HealthPolicies {
                version: "v".to_owned(),
            },
            receipts: HealthReceipts {
                size: 0,
                failure: failure.map(str::to_owned),
            },
        }
    }

    #[test]
    fn only_a_server_that_serves_decisions_is_healthy() {
        assert!(Verdict::of(&health("ok", None)).healthy);
        assert_eq!(Verdict::of(&health("ok", None)).note, "");
        let degraded = Verdict::of(&health("degraded", None));
        assert!(degraded.healthy);
        assert!(degraded.note.contains("reload was rejected"));
        let failing = Verdict::of(&health("failing", Some("disk full")));
        assert!(!failing.healthy);
        assert!(failing.note.contains("503 (disk full)"), "{}", failing.note);
        assert!(!Verdict::of(&health("starting", None)).healthy);
    }
}
