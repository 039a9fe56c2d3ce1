//! `mandate approvals list|show|approve|deny|token`: an approver's client of
//! the approval endpoints of a running server (docs/approvals.md), and the
//! maker of approver tokens.

use mandate_core::ApprovalStatus;
use mandate_core::api::ApprovalView;
use mandate_server::approvals::MAX_WAIT;
use serde_json::Value;

use crate::cli::{
    ApprovalResolveArgs, ApprovalShowArgs, ApprovalTokenArgs, ApprovalsListArgs, ApproverArgs,
};
use crate::client::{Remote, call, id, pretty_json, wire_time};
use crate::exit::Code;
use crate::output::{emit, emit_text, outln, print_new_token};

impl<'a> From<&'a ApproverArgs> for Remote<'a> {
    fn from(args: &'a ApproverArgs) -> Self {
        Self {
            server: &args.server,
            token: args.token.as_deref(),
            token_file: args.token_file.as_deref(),
            token_env: "MANDATE_APPROVER_TOKEN",
        }
    }
}

pub fn list(args: ApprovalsListArgs) -> anyhow::Result<Code> {
    let (status, limit) = (args.status.as_str(), args.limit);
    let answer = match call(&Remote::from(&args.server), |client, token| async move {
        client.approvals(Some(status), Some(limit), &token).await
    }) {
        Ok(answer) => answer,
        Err(code) => return Ok(code),
    };
    let mut out = String::new();
    if args.server.json {
        outln!(out, "{}", pretty_json(&answer)?);
    } else {
        if answer.items.is_empty() {
            outln!(out, "no {} approvals", args.status);
        }
        for item in &answer.items {
            let summary = item.summary.as_ref().unwrap_or(&Value::Null);
            let when = match (item.status, &item.resolved_by, &item.resolved_at) {
                (ApprovalStatus::Pending, _, _) => {
                    format!("expires {}", wire_time(&item.expires_at))
                }
                (_, Some(by), _) => format!("by {by}"),
                (_, None, Some(at)) => wire_time(at),
                (_, None, None) => String::new(),
            };
            outln!(
                out,
                "{}  {:<9}  {}/{}  {}{}  {when}",
                item.id,
                item.status.as_str(),
                str_of(summary, "server"),
                str_of(summary, "tool"),
                str_of(summary, "agent"),
                if unverified(summary) {
                    " (unverified)"
                } else {
                    ""
                },
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
        None => None,
        Some(Ok(wait)) => Some(wait.min(MAX_WAIT)),
        Some(Err(e)) => {
            eprintln!("error: --wait: {e}; write a duration such as 30s");
            return Ok(Code::Input);
        }
    };
    let approval = args.approval_id.as_str();
    let answer = match call(&Remote::from(&args.server), |client, token| async move {
        client
            .show_approval(&id(approval)?, hold, Some(&token))
            .await
    }) {
        Ok(answer) => answer,
        Err(code) => return Ok(code),
    };
    print_approval(&answer, args.server.json)?;
    Ok(Code::Ok)
}

/// What an approver does with a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `mandate approvals approve`.
    Approve,
    /// `mandate approvals deny`.
    Deny,
}

pub fn resolve(args: ApprovalResolveArgs, verdict: Verdict) -> anyhow::Result<Code> {
    let (approval, reason) = (args.approval_id.as_str(), args.reason.as_str());
    let answer = match call(&Remote::from(&args.server), |client, token| async move {
        let approval = id(approval)?;
        match verdict {
            Verdict::Approve => client.approve(&approval, reason, &token).await,
            Verdict::Deny => client.deny(&approval, reason, &token).await,
        }
    }) {
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
        args.out.as_deref(),
    )
}

/// An approval, as JSON or in a few lines.
fn print_approval(approval: &ApprovalView, json: bool) -> anyhow::Result<()> {
    let mut out = String::new();
    if json {
        outln!(out, "{}", pretty_json(approval)?);
        emit(&out)?;
        return Ok(());
    }
    outln!(out, "approval    {}", approval.id);
    outln!(out, "status      {}", approval.status.as_str());
    // What was asked is the receipts' free-form summary (approvers only).
    if let Some(summary) = &approval.summary {
        let agent = str_of(summary, "agent");
        match summary.get("on_behalf_of").and_then(Value::as_str) {
            Some(person) => outln!(out, "agent       {agent} (for {person})"),
            None => outln!(out, "agent       {agent}"),
        }
        // Without a task credential the agent, its person and its chain are
        // what the caller wrote: say so before anything else is read.
        if unverified(summary) {
            outln!(
                out,
                "identity    NOT VERIFIED: asserted by the caller, not verified (no task credential)"
            );
        } else if summary.get("verified") == Some(&Value::Bool(true)) {
            outln!(out, "identity    verified by a task credential");
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
            Some(arguments) => {
                outln!(out, "arguments   {arguments}");
                let read: Vec<String> = strings(summary, "arguments_read")
                    .into_iter()
                    .filter(|name| arguments.get(name).is_some())
                    .collect();
                if !read.is_empty() {
                    outln!(
                        out,
                        "checked     {} (the arguments the policies read)",
                        read.join(", ")
                    );
                }
            }
            None => outln!(out, "arguments   {}", str_of(summary, "arguments_sha256")),
        }
        for reason in strings(summary, "reasons") {
            outln!(out, "asked by    policy: {reason}");
        }
    }
    outln!(out, "decision    {}", approval.decision_id);
    outln!(out, "created at  {}", wire_time(&approval.created_at));
    outln!(out, "expires at  {}", wire_time(&approval.expires_at));
    if let Some(by) = &approval.resolved_by {
        outln!(
            out,
            "resolved    by {by} at {}: {}",
            approval
                .resolved_at
                .as_ref()
                .map(wire_time)
                .unwrap_or_default(),
            approval.reason.as_deref().unwrap_or_default()
        );
    }
    if let Some(released) = &approval.released_by {
        outln!(out, "released    by decision {released}");
    }
    emit_text(&out)?;
    Ok(())
}

/// Whether the summary says the identities in it were only asserted by the
/// caller (no task credential backed them).
fn unverified(summary: &Value) -> bool {
    summary.get("verified") == Some(&Value::Bool(false))
}

/// The string at `key` of a summary, or "".
fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The strings of the array at `key` of a summary.
fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
