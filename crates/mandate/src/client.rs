//! The HTTP client of the commands that talk to a running server (`task`,
//! `approvals`): one request, its JSON answer, or an exit code with the
//! server's error printed.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::Client;
use serde_json::Value;

use crate::cli::ServerArgs;
use crate::exit::Code;

/// An error with its causes on one line (shared with the MCP gateway's client).
pub use mandate_client::error_chain;

/// How long one request may take, connecting included, unless the server
/// is asked to hold it ([`Remote::hold`]).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of a request before it is printed: a JSON answer, or the exit
/// code of a failure already reported on stderr.
pub type Answer = Result<Value, Code>;

/// A server and the token to present to it.
pub struct Remote<'a> {
    /// Base URL (plain HTTP).
    pub server: &'a str,
    /// The token given on the command line or in the environment.
    pub token: Option<&'a str>,
    /// A file holding the token; wins over `token`.
    pub token_file: Option<&'a Path>,
    /// The variable that can hold the token, for messages.
    pub token_env: &'static str,
    /// How long the server may hold the request on purpose (a long poll);
    /// added to the timeout.
    pub hold: Duration,
}

impl<'a> From<&'a ServerArgs> for Remote<'a> {
    fn from(args: &'a ServerArgs) -> Self {
        Self {
            server: &args.server,
            token: args.token.as_deref(),
            token_file: args.token_file.as_deref(),
            token_env: "MANDATE_TOKEN",
            hold: Duration::ZERO,
        }
    }
}

/// The bearer token: `--token-file`, else `--token` (or its variable).
fn token(remote: &Remote<'_>) -> Result<String, String> {
    let token = match remote.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file `{}`: {e}", path.display()))?
            .trim()
            .to_owned(),
        None => remote.token.unwrap_or_default().trim().to_owned(),
    };
    if token.is_empty() {
        return Err(match remote.token_file {
            Some(path) => format!("the token file `{}` is empty", path.display()),
            None => format!(
                "no token: pass --token or --token-file, or set {}",
                remote.token_env
            ),
        });
    }
    Ok(token)
}

/// Sends one request to the server and returns its JSON answer. Failures are
/// reported on stderr and come back as the exit code.
pub fn request(
    remote: &Remote<'_>,
    method: Method,
    path: &[&str],
    query: &[(&str, String)],
    body: Option<&Value>,
) -> Answer {
    let report = |code: Code, message: &str| {
        eprintln!("error: {message}");
        code
    };
    let token = token(remote).map_err(|m| report(Code::Input, &m))?;
    let mut url = reqwest::Url::parse(remote.server)
        .map_err(|e| report(Code::Input, &format!("--server `{}`: {e}", remote.server)))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(report(
                Code::Input,
                &format!(
                    "--server `{}`: this build of mandate speaks plain HTTP only (no TLS); reach the server over http://",
                    remote.server
                ),
            ));
        }
        other => {
            return Err(report(
                Code::Input,
                &format!(
                    "--server `{}`: unsupported scheme `{other}`; expected http://",
                    remote.server
                ),
            ));
        }
    }
    {
        let Ok(mut segments) = url.path_segments_mut() else {
            return Err(report(
                Code::Input,
                &format!("--server `{}` cannot be a base URL", remote.server),
            ));
        };
        segments.pop_if_empty().extend(path);
    }
    if !query.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    }
    let client = Client::builder()
        .timeout(TIMEOUT + remote.hold)
        .build()
        .map_err(|e| report(Code::Failure, &format!("cannot build the HTTP client: {e}")))?;
    let mut request = client
        .request(method, url.clone())
        .bearer_auth(token)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().map_err(|e| {
        report(
            Code::Input,
            &format!(
                "cannot reach the Mandate server at {}: {}",
                remote.server,
                error_chain(&e)
            ),
        )
    })?;
    let status = response.status();
    let text = response.text().map_err(|e| {
        report(
            Code::Failure,
            &format!("reading the answer of {url}: {}", error_chain(&e)),
        )
    })?;
    let value: Option<Value> = serde_json::from_str(&text).ok();
    if status.is_success() {
        return value.ok_or_else(|| {
            report(
                Code::Failure,
                &format!("{url} answered {status} with a body that is not JSON"),
            )
        });
    }
    let code = match status.as_u16() {
        400 | 413 | 415 | 422 => Code::Input,
        _ => Code::Failure,
    };
    let error = value.as_ref().and_then(|v| {
        Some((
            v.get("error")?.as_str()?.to_owned(),
            v.get("message")?.as_str()?.to_owned(),
        ))
    });
    Err(match error {
        Some((error, message)) => report(code, &format!("{error}: {message}")),
        None => report(code, &format!("{url} answered {status}: {}", text.trim())),
    })
}

/// The string at `key`, or "" (the server's answers always have them).
pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The strings of the array at `key`.
pub fn strings(v: &Value, key: &str) -> Vec<String> {
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
