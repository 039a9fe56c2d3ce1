//! `mandate task start|delegate|end|show`: the task endpoints of a running
//! server (docs/http-api.md, "Tasks and credentials"), called through
//! `mandate-client` on the API's own types.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use mandate_core::api::{CredentialView, DelegateTask, StartTask, TaskView};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::{TaskDelegateArgs, TaskIdArgs, TaskStartArgs};
use crate::client::{Remote, call, id, pretty_json, wire_time};
use crate::exit::Code;
use crate::output::{emit, emit_text, outln};

pub fn start(args: TaskStartArgs) -> anyhow::Result<Code> {
    let params = match parse_params(&args.params) {
        Ok(params) => params,
        Err(message) => return input_error(&message),
    };
    let task = StartTask {
        intent: args.intent,
        tools: args.tools,
        labels: args.labels,
        params,
        ttl_seconds: args.ttl,
        max_depth: args.max_depth.unwrap_or_default(),
        prompt: args.prompt,
        grounded_values: args.grounded_values,
    };
    let started = match call(&Remote::from(&args.server), |client, token| async move {
        client.start_task(&task, &token).await
    }) {
        Ok(started) => started,
        Err(code) => return Ok(code),
    };
    let heading = [format!("task        {}", started.task_id)];
    let minted = Minted {
        credential: &started.credential,
        expires_at: started.expires_at,
        revocation_id: &started.revocation_id,
    };
    print_credential(
        &started,
        &minted,
        args.server.json,
        args.credential_only,
        &heading,
    )?;
    Ok(Code::Ok)
}

/// What the summary of a minted credential shows.
struct Minted<'a> {
    credential: &'a str,
    expires_at: DateTime<Utc>,
    revocation_id: &'a str,
}

/// Prints a credential the server minted: its JSON answer, the token alone,
/// or a summary (`heading` first) whose last line is the token.
fn print_credential(
    answer: &impl Serialize,
    minted: &Minted<'_>,
    json: bool,
    credential_only: bool,
    heading: &[String],
) -> anyhow::Result<()> {
    let mut out = String::new();
    if json {
        outln!(out, "{}", pretty_json(answer)?);
    } else if credential_only {
        outln!(out, "{}", minted.credential);
    } else {
        for line in heading {
            outln!(out, "{line}");
        }
        outln!(out, "expires at  {}", wire_time(&minted.expires_at));
        outln!(out, "revocation  {}", minted.revocation_id);
        outln!(out, "credential:");
        outln!(out, "{}", minted.credential);
    }
    emit(&out)?;
    Ok(())
}

pub fn delegate(args: TaskDelegateArgs) -> anyhow::Result<Code> {
    let delegation = DelegateTask {
        agent: args.agent.clone(),
        tools: args.tools,
        labels: (!args.labels.is_empty()).then_some(args.labels),
        ttl_seconds: args.ttl,
    };
    let task_id = args.task_id.as_str();
    let delegated = match call(&Remote::from(&args.server), |client, token| async move {
        client
            .delegate_task(&id(task_id)?, &delegation, &token)
            .await
    }) {
        Ok(delegated) => delegated,
        Err(code) => return Ok(code),
    };
    let heading = [
        format!("task        {}", args.task_id),
        format!("agent       {} (depth {})", args.agent, delegated.depth),
    ];
    let minted = Minted {
        credential: &delegated.credential,
        expires_at: delegated.expires_at,
        revocation_id: &delegated.revocation_id,
    };
    print_credential(
        &delegated,
        &minted,
        args.server.json,
        args.credential_only,
        &heading,
    )?;
    Ok(Code::Ok)
}

pub fn end(args: TaskIdArgs) -> anyhow::Result<Code> {
    let task_id = args.task_id.as_str();
    let ended = match call(&Remote::from(&args.server), |client, token| async move {
        client.end_task(&id(task_id)?, &token).await
    }) {
        Ok(ended) => ended,
        Err(code) => return Ok(code),
    };
    let mut out = String::new();
    if args.server.json {
        outln!(out, "{}", pretty_json(&ended)?);
    } else {
        outln!(
            out,
            "task {} {} at {}",
            ended.task_id,
            ended.end_reason,
            wire_time(&ended.ended_at)
        );
        outln!(out, "revoked {} credential(s):", ended.revoked.len());
        for id in &ended.revoked {
            outln!(out, "  {id}");
        }
    }
    emit(&out)?;
    Ok(Code::Ok)
}

pub fn show(args: TaskIdArgs) -> anyhow::Result<Code> {
    let task_id = args.task_id.as_str();
    let task = match call(&Remote::from(&args.server), |client, token| async move {
        client.task(&id(task_id)?, &token).await
    }) {
        Ok(task) => task,
        Err(code) => return Ok(code),
    };
    if args.server.json {
        let mut out = pretty_json(&task)?;
        out.push('\n');
        emit(&out)?;
    } else {
        emit_text(&describe(&task))?;
    }
    Ok(Code::Ok)
}

/// The human summary of a task view.
fn describe(task: &TaskView) -> String {
    let mut out = String::new();
    let state = match (task.state.as_str(), &task.ended_at) {
        ("open", _) => "open".to_owned(),
        (state, Some(at)) => format!("{state} at {}", wire_time(at)),
        (state, None) => state.to_owned(),
    };
    outln!(out, "task        {}", task.id);
    outln!(out, "state       {state}");
    outln!(out, "intent      {}", task.intent);
    match &task.on_behalf_of {
        Some(human) => outln!(out, "agent       {} (for {human})", task.agent),
        None => outln!(out, "agent       {}", task.agent),
    }
    outln!(out, "tools       {}", task.tools.join(", "));
    outln!(out, "labels      {}", task.labels.join(", "));
    if !task.params.is_empty() {
        outln!(out, "params      {}", Value::Object(task.params.clone()));
    }
    outln!(out, "max depth   {}", task.max_depth);
    outln!(out, "created at  {}", wire_time(&task.created_at));
    outln!(out, "expires at  {}", wire_time(&task.expires_at));

    outln!(out, "delegation tree:");
    let ids: HashSet<&str> = task
        .credentials
        .iter()
        .map(|c| c.revocation_id.as_str())
        .collect();
    // Roots: no parent, or a parent not listed (it cannot be drawn above).
    let roots = task.credentials.iter().filter(|c| {
        c.parent_revocation_id
            .as_deref()
            .is_none_or(|parent| !ids.contains(parent))
    });
    for root in roots {
        tree(&mut out, &task.credentials, root, 1);
    }

    outln!(out, "history     {} decision(s)", task.history.len());
    for entry in &task.history {
        let result = entry
            .result
            .as_ref()
            .map(|r| format!(" -> {}", r.status))
            .unwrap_or_default();
        outln!(
            out,
            "  {}  {}  {}/{}  {}{result}",
            wire_time(&entry.decided_at),
            entry.agent,
            entry.server,
            entry.tool,
            entry.decision,
        );
    }
    out
}

/// Writes `credential` indented by `level`, then its children in issue order.
fn tree(out: &mut String, all: &[CredentialView], credential: &CredentialView, level: usize) {
    let indent = "  ".repeat(level);
    let revoked = if credential.revoked { ", revoked" } else { "" };
    outln!(
        out,
        "{indent}{} (depth {}): {}; labels: {}; expires {}{revoked}",
        credential.agent,
        credential.depth,
        credential.tools.join(", "),
        display_list(&credential.labels),
        wire_time(&credential.expires_at),
    );
    let id = credential.revocation_id.as_str();
    for child in all
        .iter()
        .filter(|c| c.parent_revocation_id.as_deref() == Some(id))
    {
        tree(out, all, child, level + 1);
    }
}

fn display_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn input_error(message: &str) -> anyhow::Result<Code> {
    eprintln!("error: {message}");
    Ok(Code::Input)
}

/// `--param KEY=JSON` values as the task's params object.
fn parse_params(params: &[String]) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            return Err(format!("--param `{param}`: expected KEY=JSON"));
        };
        if key.is_empty() {
            return Err(format!("--param `{param}`: the key is empty"));
        }
        let value: Value = serde_json::from_str(value).map_err(|e| {
            format!(
                "--param `{param}`: the value is not JSON ({e}); quote a string as {key}='\"text\"'"
            )
        })?;
        if map.insert(key.to_owned(), value).is_some() {
            return Err(format!("--param `{key}` is given twice"));
        }
    }
    Ok(map)
}
