//! `mandate check`: one decision, offline.

use std::io::Read as _;
use std::path::Path;

use chrono::Utc;
use mandate_core::{
    CallRequest, ConditionOutcome, Decision, DecisionId, DecisionRequest, DecisionResponse,
    PolicyReport,
};
use serde_json::json;

use crate::cli::CheckArgs;
use crate::exit::Code;
use crate::output::{emit, outln};

fn read_request(path: &Path) -> Result<String, String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<Code> {
    let call = match read_request(&args.request).and_then(|text| {
        let request: DecisionRequest = serde_json::from_str(&text)
            .map_err(|e| format!("`{}` is not a valid request: {e}", args.request.display()))?;
        CallRequest::try_from(request).map_err(|e| format!("invalid request: {e}"))
    }) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(Code::Input);
        }
    };
    let (origin, pack) = match crate::pack::load(&args.pack, None) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    origin.announce(args.json);

    let now = Utc::now();
    let explanation = args.explain.then(|| pack.explain(&call, now));
    let verdict = match &explanation {
        Some(e) => e.verdict.clone(),
        None => pack.decide(&call, now),
    };
    let response = DecisionResponse::new(DecisionId::mint(), verdict);

    let mut out = String::new();
    if args.json {
        let mut value = serde_json::to_value(&response)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("pack".into(), json!(origin.label()));
            if let Some(e) = &explanation {
                obj.insert("explanation".into(), json!(e.policies));
            }
        }
        outln!(out, "{}", serde_json::to_string_pretty(&value)?);
    } else {
        outln!(out, "{}", response.decision);
        for reason in &response.reasons {
            outln!(out, "  reason: {reason}");
        }
        if !response.policies.is_empty() {
            outln!(out, "  policies: {}", response.policies.join(", "));
        }
        for e in &response.errors {
            outln!(out, "  {e}");
        }
        if let Some(e) = &explanation {
            outln!(out);
            print_reports(&mut out, &e.policies, "");
        }
    }
    emit(&out)?;
    Ok(match response.decision {
        Decision::Allow => Code::Ok,
        Decision::Deny => Code::Deny,
        Decision::ApprovalRequired => Code::ApprovalRequired,
    })
}

/// Each policy's report as `check --explain` prints it, every line
/// prefixed with `indent`.
pub fn print_reports(out: &mut String, reports: &[PolicyReport], indent: &str) {
    for p in reports {
        outln!(
            out,
            "{indent}{} {} `{}` ({}:{}): {}",
            kind(p.kind),
            p.effect,
            p.id,
            p.file,
            p.line,
            p.summary()
        );
        for c in &p.conditions {
            let outcome = match (&c.outcome, c.value()) {
                (ConditionOutcome::Error(m), _) => format!("could not be evaluated: {m}"),
                (_, Some(value)) => format!("is {value}"),
                (_, None) => "could not be evaluated".to_owned(),
            };
            outln!(out, "{indent}    {} {{ {} }} {outcome}", c.kind, c.text);
            if let Some(part) = &c.decided_by {
                outln!(
                    out,
                    "{indent}      because `{}` is {}",
                    part.text,
                    part.value
                );
            }
        }
    }
}

fn kind(kind: mandate_core::PolicyKind) -> &'static str {
    match kind {
        mandate_core::PolicyKind::Base => "base",
        mandate_core::PolicyKind::Approval => "approval",
    }
}
