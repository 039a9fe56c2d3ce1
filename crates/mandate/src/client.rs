//! How the commands that talk to a running server (`task`, `approvals`,
//! `health`) reach it: the server and token from the command line, and one call of
//! the typed client (`mandate-client`) on a runtime of its own, its answer
//! or an exit code with the failure printed.

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use mandate_client::{Client, ClientError};
use reqwest::StatusCode;

use crate::cli::ServerArgs;
use crate::exit::Code;

/// How long one request may take, connecting included, unless the server
/// is asked to hold it (a long poll adds its wait).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of a call before it is printed: the server's answer, or the
/// exit code of a failure already reported on stderr.
pub type Answer<T> = Result<T, Code>;

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
}

impl<'a> From<&'a ServerArgs> for Remote<'a> {
    fn from(args: &'a ServerArgs) -> Self {
        Self {
            server: &args.server,
            token: args.token.as_deref(),
            token_file: args.token_file.as_deref(),
            token_env: "MANDATE_TOKEN",
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

/// Makes one call with the typed client of the server named by `remote`,
/// presenting its token: `call(client, token)`, run to its end on a
/// current-thread runtime. Failures are reported on stderr and come back as
/// the exit code.
pub fn call<T, F, Fut>(remote: &Remote<'_>, call: F) -> Answer<T>
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let token = token(remote).map_err(|m| report(Code::Input, &m))?;
    let (client, runtime) = connect(remote.server, TIMEOUT, Proxy::FromEnvironment)?;
    runtime
        .block_on(call(client, token))
        .map_err(|e| failed(remote.server, &e))
}

/// Whether requests may go through an HTTP proxy named in the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// `HTTP_PROXY` and `NO_PROXY` apply, as for other HTTP clients.
    FromEnvironment,
    /// Straight to the server: a probe of this host's server must not ask
    /// a proxy set for other traffic (`health` in a container).
    None,
}

/// The typed client of `server`, whose requests each take at most `timeout`,
/// and a current-thread runtime to run its calls on. A `server` that is not a
/// plain-HTTP base URL is reported on stderr (exit code 2).
pub fn connect(
    server: &str,
    timeout: Duration,
    proxy: Proxy,
) -> Answer<(Client, tokio::runtime::Runtime)> {
    let base = base_url(server)?;
    let mut http = reqwest::Client::builder();
    if proxy == Proxy::None {
        http = http.no_proxy();
    }
    let http = http
        .build()
        .map_err(|e| report(Code::Failure, &format!("cannot build the HTTP client: {e}")))?;
    let client = Client::new(base, http).with_timeout(timeout);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            report(
                Code::Failure,
                &format!("cannot start the async runtime: {e}"),
            )
        })?;
    Ok((client, runtime))
}

/// An id given on the command line (a task or approval id), parsed as the
/// id it is. Text that is not one is refused as the client refuses an id it
/// cannot send ([`ClientError::BadId`]), and inside the call, after the
/// token and the server are checked: where and as the client refuses it.
pub fn id<T: FromStr>(text: &str) -> Result<T, ClientError> {
    text.parse()
        .map_err(|_| ClientError::BadId(text.to_owned()))
}

/// An answer as pretty JSON, as the server sent it: through a JSON value,
/// whose objects keep the same order whether or not serde_json preserves
/// insertion order.
pub fn pretty_json(answer: &impl serde::Serialize) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&serde_json::to_value(answer)?)
}

/// A time as the server writes it in its answers (RFC 3339 in UTC, `Z`,
/// with as many fractional digits as it has).
pub fn wire_time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn report(code: Code, message: &str) -> Code {
    eprintln!("error: {message}");
    code
}

/// `server` checked as the base URL of a server this build can reach: plain
/// HTTP, a URL that paths can be appended to.
fn base_url(server: &str) -> Answer<String> {
    let mut url = reqwest::Url::parse(server)
        .map_err(|e| report(Code::Input, &format!("--server `{server}`: {e}")))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(report(
                Code::Input,
                &format!(
                    "--server `{server}`: this build of mandate speaks plain HTTP only (no TLS); reach the server over http://"
                ),
            ));
        }
        other => {
            return Err(report(
                Code::Input,
                &format!("--server `{server}`: unsupported scheme `{other}`; expected http://"),
            ));
        }
    }
    if url.cannot_be_a_base() {
        return Err(report(
            Code::Input,
            &format!("--server `{server}` cannot be a base URL"),
        ));
    }
    // Paths are appended to it: a query or fragment would end up before them.
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.to_string())
}

/// Reports a failed call on stderr: the server's own `error: message` when
/// it refused with one (exit 2 for a request it could not take, 1 for the
/// rest), else what went wrong.
fn failed(server: &str, error: &ClientError) -> Code {
    match error {
        ClientError::Unreachable { detail, .. } => report(
            Code::Input,
            &format!("cannot reach the Mandate server at {server}: {detail}"),
        ),
        ClientError::CutOff { url, detail } => report(
            Code::Failure,
            &format!("reading the answer of {url}: {detail}"),
        ),
        ClientError::Refused {
            status,
            code,
            message,
            url,
            body,
        } => {
            let exit = match status {
                400 | 413 | 415 | 422 => Code::Input,
                _ => Code::Failure,
            };
            match (code, message) {
                (Some(code), Some(message)) => report(exit, &format!("{code}: {message}")),
                _ => {
                    let status = status_text(*status);
                    report(exit, &format!("{url} answered {status}: {}", body.trim()))
                }
            }
        }
        ClientError::Unreadable {
            url,
            status,
            detail,
        } => {
            let status = status_text(*status);
            report(
                Code::Failure,
                &format!(
                    "{url} answered {status} with a body that is not the expected answer: {detail}"
                ),
            )
        }
        ClientError::BadId(_) => report(Code::Input, &error.to_string()),
        other => report(Code::Failure, &other.to_string()),
    }
}

/// An HTTP status as `404 Not Found` (the number alone when it has no name).
pub fn status_text(status: u16) -> String {
    StatusCode::from_u16(status).map_or_else(|_| status.to_string(), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_plain_http_base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:8181").as_deref(),
            Ok("http://127.0.0.1:8181/")
        );
        assert_eq!(
            base_url("http://127.0.0.1:8181/mandate/").as_deref(),
            Ok("http://127.0.0.1:8181/mandate/")
        );
        for refused in [
            "https://127.0.0.1:8181",
            "ftp://host",
            "mailto:a@b",
            "not a url",
        ] {
            assert_eq!(base_url(refused), Err(Code::Input), "{refused}");
        }
    }
}
