//! `mandate approvals list|show|approve|deny|token`: an approver's client of
//! the approval endpoints of a running server (docs/approvals.md), and the
//! maker of approver tokens.

use std::time::Duration;

use mandate_server::approvals::MAX_WAIT;
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{
    ApprovalResolveArgs, ApprovalShowArgs, ApprovalTokenArgs, ApprovalsListArgs, ApproverArgs,
};
use crate::client::{Answer, Remote, str_of, strings};
use crate::exit::Code;
use crate::output::{emit, emit_text, outln, print_new_token};

impl<'a> From<&'a ApproverArgs> for Remote<'a> {
    fn from(args: &'a ApproverArgs) -> Self {
        Self {
            server: &args.server,
            token: args.token.as_deref(),
            token_file: args.token_file.as_deref(),
            token_env: "MANDATE_APPROVER_TOKEN",
            hold: Duration::ZERO,
        }
    }
}

fn request(
    args: &ApproverArgs,
    method: Method,
    path: &[&str],
    query: &[(&str, String)],
    body: Option<&Value>,
) -> Answer {
    crate::client::request(&args.into(), method, path, query, body)
}

pub fn list(args: ApprovalsListArgs) -> anyhow::Result<Code> {
    let query = [
        ("status", args.status.clone()),
        ("limit", args.limit.to_string()),
    ];
    let answer = match request(
        &args.server,
        Method::GET,
        &["v1", "approvals"],
        &query,
        None,
    ) {
        Ok(answer) => answer,
        Err(code) => return Ok(code),
    };
    let mut out = String::new();
    if args.server.json {
        outln!(out, "{}", serde_json::to_string_pretty(&answer)?);
    } else {
        let items = answer
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if items.is_empty() {
            outln!(out, "no {} approvals", args.status);
        }
        for item in &items {
            let summary = item.get("summary").unwrap_or(&Value::Null);
            let when = match str_of(item, "status") {
                "pending" => format!("expires {}", str_of(item, "expires_at")),
                _ => match item.get("resolved_by").and_then(Value::as_str) {
                    Some(by) => format!("by {by}"),
                    None => str_of(item, "resolved_at").to_owned(),
                },
            };
            outln!(
                out,
                "{}  {:<9}  {}/{}  {}  {when}",
                str_of(item, "id"),
                str_of(item, "status"),
                str_of(summary, "server"),
                str_of(summary, "tool"),
                str_of(summary, "agent"),
            );
        }
        emit_text(&out)?;
        return Ok(Code::Ok);
    }
    emit(&out)?;
    Ok(Code::Ok)
}

pub fn show(args: ApprovalShowArgs) -> anyhow::Result<Code> {
    let hold = match args.wait.as_deref().map(humantime::parse_duration) {
        None => Duration::ZERO,
        Some(Ok(wait)) => wait.min(MAX_WAIT),
        Some(Err(e)) => {
            eprintln!("error: --wait: {e}; write a duration such as 30s");
            return Ok(Code::Input);
        }
    };
    let query: Vec<(&str, String)> = args
        .wait
        .iter()
        .map(|wait| ("wait", wait.clone()))
        .collect();
    let path = ["v1", "approvals", args.approval_id.as_str()];
    let remote = Remote {
        hold,
        ..Remote::from(&args.server)
    };
    let answer = match crate::client::request(&remote, Method::GET, &path, &query, None) {
        Ok(answer) => answer,
        Err(code) => return Ok(code),
    };
    print_approval(&answer, args.server.json)?;
    Ok(Code::Ok)
}

pub fn resolve(args: ApprovalResolveArgs, verb: &str) -> anyhow::Result<Code> {
    let path = ["v1", "approvals", args.approval_id.as_str(), verb];
    let body = json!({ "reason": args.reason });
    let answer = match request(&args.server, Method::POST, &path, &[], Some(&body)) {
        Ok(answer) => answer,
        Err(code) => return Ok(code),
    };
    print_approval(&answer, args.server.json)?;
    Ok(Code::Ok)
}

pub fn token(args: ApprovalTokenArgs) -> anyhow::Result<Code> {
    print_new_token(
        "approvers",
        "the server's config file",
        mandate_server::approvals::APPROVER_TOKEN_PREFIX,
        &args.name,
        args.json,
    )
}

/// An approval, as JSON or in a few lines.
fn print_approval(approval: &Value, json: bool) -> anyhow::Result<()> {
    let mut out = String::new();
    if json {
        outln!(out, "{}", serde_json::to_string_pretty(approval)?);
        emit(&out)?;
        return Ok(());
    }
    outln!(out, "approval    {}", str_of(approval, "id"));
    outln!(out, "status      {}", str_of(approval, "status"));
    if let Some(summary) = approval.get("summary") {
        let agent = str_of(summary, "agent");
        match summary.get("on_behalf_of").and_then(Value::as_str) {
            Some(person) => outln!(out, "agent       {agent} (for {person})"),
            None => outln!(out, "agent       {agent}"),
        }
        let chain: Vec<&str> = summary
            .get("chain")
            .and_then(Value::as_array)
            .map(|hops| hops.iter().map(|h| str_of(h, "agent")).collect())
            .unwrap_or_default();
        if !chain.is_empty() {
            outln!(out, "chain       {}", chain.join(" -> "));
        }
        if let Some(task) = summary.get("task").filter(|t| !t.is_null()) {
            outln!(
                out,
                "task        {} ({})",
                str_of(task, "id"),
                str_of(task, "intent")
            );
        }
        outln!(
            out,
            "tool        {}/{}",
            str_of(summary, "server"),
            str_of(summary, "tool")
        );
        match summary.get("arguments").filter(|a| !a.is_null()) {
            Some(arguments) => outln!(out, "arguments   {arguments}"),
            None => outln!(out, "arguments   {}", str_of(summary, "arguments_sha256")),
        }
        for reason in strings(summary, "reasons") {
            outln!(out, "asked by    policy: {reason}");
        }
    }
    outln!(out, "decision    {}", str_of(approval, "decision_id"));
    outln!(out, "created at  {}", str_of(approval, "created_at"));
    outln!(out, "expires at  {}", str_of(approval, "expires_at"));
    if let Some(by) = approval.get("resolved_by").and_then(Value::as_str) {
        outln!(
            out,
            "resolved    by {by} at {}: {}",
            str_of(approval, "resolved_at"),
            str_of(approval, "reason")
        );
    }
    if let Some(released) = approval.get("released_by").and_then(Value::as_str) {
        outln!(out, "released    by decision {released}");
    }
    emit_text(&out)?;
    Ok(())
}
