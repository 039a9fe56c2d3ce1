//! `mandate mcp wrap|proxy`: the MCP gateway (crate `mandate-mcp`), started
//! from the command line. This module only turns flags into settings.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mandate_core::SessionId;
use mandate_mcp::http::{DEFAULT_SESSION_IDLE, ProxyOptions, UpstreamSpec};
use mandate_mcp::pep::DEFAULT_APPROVAL_WAIT;
use mandate_mcp::stdio::WrapOptions;
use mandate_mcp::{GatewayConfig, Pep, PepSettings, Principal, TaskCredential};

use crate::cli::{McpClientTokenArgs, McpGatewayArgs, McpProxyArgs, McpWrapArgs};
use crate::exit::Code;

pub fn wrap(args: McpWrapArgs) -> anyhow::Result<Code> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let spans = init_logging(&runtime)?;
    let code = wrap_in(args, &runtime);
    crate::telemetry::flush(spans);
    // The stdin reader blocks a thread that cannot be interrupted: do not
    // wait for it.
    runtime.shutdown_background();
    code
}

fn wrap_in(args: McpWrapArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Code> {
    let pep = match enforcement_point(&args.gateway) {
        Ok(pep) => pep,
        Err(e) => return input_error(&e),
    };
    if !pep.config().clients.is_empty() {
        tracing::warn!(
            "`[[clients]]` in the config file applies to `mandate mcp proxy` only: the stdio wrapper's client is the process that started it"
        );
    }
    let max_message_bytes = args.gateway.max_message_bytes;
    let servers = &pep.config().servers;
    if !servers.is_empty() {
        if !args.command.is_empty() || args.name.is_some() {
            return input_error(&anyhow::anyhow!(
                "the config names `[[servers]]`: run them without a command after `--` and without --name, or remove `[[servers]]`"
            ));
        }
        let options = servers
            .iter()
            .map(|server| WrapOptions {
                program: server.command.clone().into(),
                args: server.args.iter().map(Into::into).collect(),
                env: server.env.clone(),
                name: Some(server.name.clone()),
                max_message_bytes,
                tool_prefix: String::new(),
            })
            .collect();
        runtime.block_on(mandate_mcp::stdio::wrap_servers(
            Arc::new(pep),
            options,
            tokio::io::stdin(),
            tokio::io::stdout(),
        ))?;
        return Ok(Code::Ok);
    }
    if let Some(name) = &args.name
        && let Err(e) = mandate_core::names::server(name)
    {
        return input_error(&anyhow::anyhow!("--name: {e}"));
    }
    let mut command = args.command.into_iter();
    let Some(program) = command.next() else {
        return input_error(&anyhow::anyhow!(
            "no MCP server to run: give its command after `--`, or `[[servers]]` in --config"
        ));
    };
    let options = WrapOptions {
        program,
        args: command.collect(),
        env: std::collections::BTreeMap::new(),
        name: args.name,
        max_message_bytes,
        tool_prefix: String::new(),
    };
    let status = runtime.block_on(mandate_mcp::stdio::wrap(
        Arc::new(pep),
        options,
        tokio::io::stdin(),
        tokio::io::stdout(),
    ))?;
    Ok(if status.success() {
        Code::Ok
    } else {
        Code::Failure
    })
}

pub fn proxy(args: McpProxyArgs) -> anyhow::Result<Code> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let spans = init_logging(&runtime)?;
    let code = proxy_in(args, &runtime);
    crate::telemetry::flush(spans);
    code
}

fn proxy_in(args: McpProxyArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Code> {
    let pep = match enforcement_point(&args.gateway) {
        Ok(pep) => pep,
        Err(e) => return input_error(&e),
    };
    let mut upstreams = Vec::new();
    for spec in &args.upstream {
        let Some((name, url)) = spec.split_once('=') else {
            return input_error(&anyhow::anyhow!(
                "`--upstream {spec}`: write NAME=URL, such as fs=http://127.0.0.1:3001/mcp"
            ));
        };
        upstreams.push(UpstreamSpec {
            name: name.to_owned(),
            url: url.to_owned(),
        });
    }
    if let Err(e) = mandate_mcp::http::check_upstreams(&upstreams) {
        return input_error(&e.into());
    }
    let session_idle = match args.session_idle.as_deref().map(parse_duration) {
        None => DEFAULT_SESSION_IDLE,
        Some(Ok(idle)) if !idle.is_zero() => idle,
        Some(Ok(_)) => return input_error(&anyhow::anyhow!("--session-idle must be more than 0")),
        Some(Err(e)) => return input_error(&e),
    };
    let options = ProxyOptions {
        upstreams,
        max_message_bytes: args.gateway.max_message_bytes,
        session_idle,
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "mandate mcp proxy is listening");
        if !address.ip().is_loopback() && pep.config().clients.is_empty() {
            tracing::warn!(%address, "no `[[clients]]` in the config file: any client that reaches this address can call the tools; add clients (`mandate mcp client-token`) or listen on loopback");
        }
        eprintln!("mandate mcp proxy listening on http://{address}");
        mandate_mcp::http::serve(Arc::new(pep), options, listener).await?;
        anyhow::Ok(Code::Ok)
    })
}

/// Prefix of proxy client tokens, so that a leaked one is recognisable.
const CLIENT_TOKEN_PREFIX: &str = "mnd_mcp_";

/// `mandate mcp client-token`: a new token for a proxy client.
pub fn client_token(args: McpClientTokenArgs) -> anyhow::Result<Code> {
    crate::output::print_new_token(
        "clients",
        "the MCP proxy's --config file",
        CLIENT_TOKEN_PREFIX,
        &args.name,
        args.json,
        args.out.as_deref(),
    )
}

/// The enforcement point the flags describe.
fn enforcement_point(args: &McpGatewayArgs) -> anyhow::Result<Pep> {
    let mut config = match &args.config {
        Some(path) => GatewayConfig::load(path)?,
        None => GatewayConfig::default(),
    };
    if args.hide_denied_tools {
        config.hide_denied_tools = true;
    }
    let approval_wait = match (&args.approval_wait, config.approval_wait_seconds) {
        (Some(text), _) => parse_duration(text)?,
        (None, Some(seconds)) => Duration::from_secs(seconds),
        (None, None) => DEFAULT_APPROVAL_WAIT,
    };
    let credential = match (&args.credential_file, &args.credential) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the task credential `{}`", path.display()))?;
            Some(text)
        }
        (None, Some(text)) => Some(text.clone()),
        (None, None) => None,
    };
    let principal = match (credential, &args.agent) {
        (Some(token), agent) => {
            let credential = TaskCredential::read(&token)?;
            let id = agent.clone().unwrap_or_else(|| credential.holder.clone());
            Principal::Credential { credential, id }
        }
        (None, Some(agent)) => Principal::Agent {
            id: agent.clone(),
            session: agent_session(args, &config)?,
            caller_token: caller_token(args)?,
        },
        (None, None) => bail!(
            "no principal: give the agent's identity (--agent or MANDATE_AGENT) or a task credential (MANDATE_TASK_CREDENTIAL or --credential-file)"
        ),
    };
    let pep = Pep::new(PepSettings {
        gateway: args.gateway.clone(),
        principal,
        config,
        approval_wait,
    })
    .context("cannot build the HTTP client")?;
    Ok(pep)
}

/// The gateway's caller token: `--caller-token-file`, else
/// `--caller-token` (`MANDATE_CALLER_TOKEN`).
fn caller_token(args: &McpGatewayArgs) -> anyhow::Result<Option<String>> {
    let token = match (&args.caller_token_file, &args.caller_token) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the caller token `{}`", path.display()))?,
        (None, Some(token)) => token.clone(),
        (None, None) => return Ok(None),
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the caller token is empty");
    }
    Ok(Some(token))
}

/// The agent's session without a task credential: `--session`, else
/// `session` in the config, else the `[task]` id, else `default`.
fn agent_session(args: &McpGatewayArgs, config: &GatewayConfig) -> anyhow::Result<SessionId> {
    if let Some(text) = &args.session {
        return text
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--session: {e}"));
    }
    if let Some(session) = &config.session {
        return Ok(session.clone());
    }
    match config.task.as_ref().and_then(|task| task.id.as_deref()) {
        Some(id) => id.parse().map_err(|e: String| {
            anyhow::anyhow!("the [task] id names the agent's session, but {e}: set `session` in the config or --session")
        }),
        None => Ok("default".parse().map_err(|e: String| anyhow::anyhow!(e))?),
    }
}

/// `90`, `90s`, `2m`, `1h`.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a duration (write 90, 90s, 2m or 1h)"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => bail!("`{text}` is not a duration (write 90, 90s, 2m or 1h)"),
    };
    Ok(Duration::from_secs(seconds))
}

fn input_error(error: &anyhow::Error) -> anyhow::Result<Code> {
    eprintln!("error: {error:#}");
    Ok(Code::Input)
}

/// Logs go to stderr (stdout is the MCP stream in `wrap`); `RUST_LOG`
/// filters them [default: warn]. Spans of relayed calls are exported over
/// OTLP when the `OTEL_EXPORTER_OTLP_*` environment names an endpoint.
fn init_logging(
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    let _in_runtime = runtime.enter();
    crate::telemetry::init_from_env(crate::cli::LogFormat::Text, "warn")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h").ok(), Some(Duration::from_secs(3600)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("x").is_err());
    }
}
