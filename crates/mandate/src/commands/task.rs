//! `mandate task start|delegate|end|show`: thin HTTP clients of the task
//! endpoints of a running server (docs/http-api.md, "Tasks and credentials").

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::cli::{ServerArgs, TaskDelegateArgs, TaskIdArgs, TaskStartArgs};
use crate::client::{Answer, str_of, strings};
use crate::exit::Code;
use crate::output::{emit, emit_text, outln};

/// One request to the server named by `args`.
fn request(args: &ServerArgs, method: Method, path: &[&str], body: Option<&Value>) -> Answer {
    crate::client::request(&args.into(), method, path, &[], body)
}

pub fn start(args: TaskStartArgs) -> anyhow::Result<Code> {
    let params = match parse_params(&args.params) {
        Ok(params) => params,
        Err(message) => return input_error(&message),
    };
    let mut body = json!({
        "intent": args.intent,
        "tools": args.tools,
        "labels": args.labels,
        "params": params,
        "ttl_seconds": args.ttl,
    });
    if let (Some(depth), Some(object)) = (args.max_depth, body.as_object_mut()) {
        object.insert("max_depth".to_owned(), json!(depth));
    }
    let answer = match request(&args.server, Method::POST, &["v1", "tasks"], Some(&body)) {
        Ok(answer) => answer,
        Err(code) => return Ok(code),
    };
    let heading = [format!("task        {}", str_of(&answer, "task_id"))];
    print_credential(&answer, args.server.json, args.credential_only, &heading)?;
    Ok(Code::Ok)
}

/// Prints a credential the server minted: its JSON answer, the token alone,
/// or a summary (`heading` first) whose last line is the token.
fn print_credential(
    answer: &Value,
    json: bool,
    credential_only: bool,
    heading: &[String],
) -> anyhow::Result<()> {
    let mut out = String::new();
    if json {
        outln!(out, "{}", serde_json::to_string_pretty(answer)?);
    } else if credential_only {
        outln!(out, "{}", str_of(answer, "credential"));
    } else {
        for line in heading {
            outln!(out, "{line}");
        }
        outln!(out, "expires at  {}", str_of(answer, "expires_at"));
        outln!(out, "revocation  {}", str_of(answer, "revocation_id"));
        outln!(out, "credential:");
        outln!(out, "{}", str_of(answer, "credential"));
    }
    emit(&out)?;
    Ok(())
}

pub fn delegate(args: TaskDelegateArgs) -> anyhow::Result<Code> {
    let mut body = json!({ "agent": args.agent, "tools": args.tools });
    if let Some(object) = body.as_object_mut() {
        if !args.labels.is_empty() {
            object.insert("labels".to_owned(), json!(args.labels));
        }
        if let Some(ttl) = args.ttl {
            object.insert("ttl_seconds".to_owned(), json!(ttl));
        }
    }
    let path = ["v1", "tasks", args.task_id.as_str(), "delegate"];
    let answer = match request(&args.server, Method::POST, &path, Some(&body)) {
        Ok(answer) => answer,
        Err(code) => return Ok(code),
    };
    let heading = [
        format!("task        {}", args.task_id),
        format!(
            "agent       {} (depth {})",
            args.agent,
            answer.get("depth").unwrap_or(&Value::Null)
        ),
    ];
    print_credential(&answer, args.server.json, args.credential_only, &heading)?;
    Ok(Code::Ok)
}

pub fn end(args: TaskIdArgs) -> anyhow::Result<Code> {
    let path = ["v1", "tasks", args.task_id.as_str()];
    let answer = match request(&args.server, Method::DELETE, &path, None) {
        Ok(answer) => answer,
        Err(code) => return Ok(code),
    };
    let mut out = String::new();
    if args.server.json {
        outln!(out, "{}", serde_json::to_string_pretty(&answer)?);
    } else {
        let revoked = strings(&answer, "revoked");
        outln!(
            out,
            "task {} {} at {}",
            str_of(&answer, "task_id"),
            str_of(&answer, "end_reason"),
            str_of(&answer, "ended_at")
        );
        outln!(out, "revoked {} credential(s):", revoked.len());
        for id in revoked {
            outln!(out, "  {id}");
        }
    }
    emit(&out)?;
    Ok(Code::Ok)
}

pub fn show(args: TaskIdArgs) -> anyhow::Result<Code> {
    let path = ["v1", "tasks", args.task_id.as_str()];
    let answer = match request(&args.server, Method::GET, &path, None) {
        Ok(answer) => answer,
        Err(code) => return Ok(code),
    };
    if args.server.json {
        let mut out = serde_json::to_string_pretty(&answer)?;
        out.push('\n');
        emit(&out)?;
    } else {
        emit_text(&describe(&answer))?;
    }
    Ok(Code::Ok)
}

/// The human summary of a task view.
fn describe(task: &Value) -> String {
    let mut out = String::new();
    let state = match str_of(task, "state") {
        "open" => "open".to_owned(),
        state => match task.get("ended_at").and_then(Value::as_str) {
            Some(at) => format!("{state} at {at}"),
            None => state.to_owned(),
        },
    };
    outln!(out, "task        {}", str_of(task, "id"));
    outln!(out, "state       {state}");
    outln!(out, "intent      {}", str_of(task, "intent"));
    match task.get("on_behalf_of").and_then(Value::as_str) {
        Some(human) => outln!(out, "agent       {} (for {human})", str_of(task, "agent")),
        None => outln!(out, "agent       {}", str_of(task, "agent")),
    }
    outln!(out, "tools       {}", strings(task, "tools").join(", "));
    outln!(out, "labels      {}", strings(task, "labels").join(", "));
    if let Some(params) = task
        .get("params")
        .filter(|p| p.as_object().is_some_and(|p| !p.is_empty()))
    {
        outln!(out, "params      {params}");
    }
    outln!(
        out,
        "max depth   {}",
        task.get("max_depth").unwrap_or(&Value::Null)
    );
    outln!(out, "created at  {}", str_of(task, "created_at"));
    outln!(out, "expires at  {}", str_of(task, "expires_at"));

    let credentials: Vec<&Value> = task
        .get("credentials")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    outln!(out, "delegation tree:");
    let ids: HashSet<&str> = credentials
        .iter()
        .map(|c| str_of(c, "revocation_id"))
        .collect();
    // Roots: no parent, or a parent not listed (it cannot be drawn above).
    let roots = credentials.iter().filter(|c| {
        c.get("parent_revocation_id")
            .and_then(Value::as_str)
            .is_none_or(|parent| !ids.contains(parent))
    });
    for root in roots {
        tree(&mut out, &credentials, root, 1);
    }

    let history = task
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    outln!(out, "history     {} decision(s)", history.len());
    for entry in &history {
        let result = entry
            .get("result")
            .and_then(|r| r.get("status"))
            .and_then(Value::as_str)
            .map(|status| format!(" -> {status}"))
            .unwrap_or_default();
        outln!(
            out,
            "  {}  {}  {}/{}  {}{result}",
            str_of(entry, "decided_at"),
            str_of(entry, "agent"),
            str_of(entry, "server"),
            str_of(entry, "tool"),
            str_of(entry, "decision"),
        );
    }
    out
}

/// Writes `credential` indented by `level`, then its children in issue order.
fn tree(out: &mut String, all: &[&Value], credential: &Value, level: usize) {
    let indent = "  ".repeat(level);
    let revoked = if credential.get("revoked").and_then(Value::as_bool) == Some(true) {
        ", revoked"
    } else {
        ""
    };
    outln!(
        out,
        "{indent}{} (depth {}): {}; labels: {}; expires {}{revoked}",
        str_of(credential, "agent"),
        credential.get("depth").unwrap_or(&Value::Null),
        strings(credential, "tools").join(", "),
        display_list(&strings(credential, "labels")),
        str_of(credential, "expires_at"),
    );
    let id = str_of(credential, "revocation_id");
    for child in all
        .iter()
        .filter(|c| c.get("parent_revocation_id").and_then(Value::as_str) == Some(id))
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
