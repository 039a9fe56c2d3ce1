//! Which HTTP requests are which tool calls, for the ext_authz service.
//!
//! A route names a method, a path template (axum's syntax: `{name}` for a
//! segment, `{*rest}` for the rest) and optionally a host; a request that
//! matches becomes a call of the route's `server/tool`, its arguments read
//! from the request by each argument's source:
//!
//! | source          | value                                               |
//! |-----------------|-----------------------------------------------------|
//! | `path.NAME`     | the template's `{NAME}` segment, percent-decoded     |
//! | `query.NAME`    | the query parameter `NAME`, decoded                 |
//! | `header.NAME`   | the request header `NAME` (lower case)              |
//! | `body`          | the whole JSON body                                 |
//! | `body.A.B`      | the field `B` of the field `A` of the JSON body     |
//!
//! A source that is not in the request leaves the argument out, as a tool
//! call without that argument would (policies test it with `has`). Every
//! route is checked when the configuration is read: names, methods,
//! templates and sources have a grammar, and two routes that would match
//! the same request are refused.

use std::collections::BTreeMap;

use mandate_core::{ToolAnnotations, names};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The most routes a configuration may name.
pub const MAX_ROUTES: usize = 1024;
/// The most arguments a route may read.
pub const MAX_ARGUMENTS: usize = 64;

/// One route as written in the configuration (`[[ext_authz_routes]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// The HTTP method (`GET`, `POST`, …), or `*` for any.
    pub method: String,
    /// The path template, such as `/repos/{owner}/{repo}/issues`.
    pub path: String,
    /// The host (`:authority`) the route is for; any host if absent. A
    /// host without a port also matches the host with any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The server (tool provider) of the call.
    pub server: String,
    /// The tool called.
    pub tool: String,
    /// Argument name → where its value is read from.
    #[serde(default)]
    pub arguments: BTreeMap<String, String>,
    /// The tool's annotations (MCP hints and Mandate's `mandate/…` keys),
    /// as in a decision request's `action.annotations`.
    #[serde(default)]
    pub annotations: Map<String, Value>,
    /// Whether the upstream receives the caller's `Authorization` header
    /// (its task credential). Off by default: the task credential is for
    /// Mandate, and an upstream that sees it could replay it.
    #[serde(default)]
    pub forward_credential: bool,
}

/// Why a route cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A route's field is not valid; says which route and why.
    #[error("ext_authz route {index} ({method} {path}): {problem}")]
    Invalid {
        /// The route's position in the configuration, from 0.
        index: usize,
        /// Its method.
        method: String,
        /// Its path template.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// More routes than [`MAX_ROUTES`].
    #[error("at most {MAX_ROUTES} ext_authz routes may be configured")]
    TooMany,
}

/// Where an argument's value is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Path(String),
    Query(String),
    Header(String),
    /// The JSON body, or a field of it by its path (empty: the whole body).
    Body(Vec<String>),
}

/// A checked route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) method: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) server: String,
    pub(crate) tool: String,
    pub(crate) arguments: Vec<(String, Source)>,
    pub(crate) annotations: Map<String, Value>,
    pub(crate) forward_credential: bool,
}

impl Route {
    /// Whether any argument is read from the body.
    pub(crate) fn reads_body(&self) -> bool {
        self.arguments
            .iter()
            .any(|(_, source)| matches!(source, Source::Body(_)))
    }
}

/// The routes of a configuration, checked and ready to match.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Path templates; each names the routes sharing it.
    paths: matchit::Router<Vec<usize>>,
    routes: Vec<Route>,
}

/// A route matched by a request, with the template's path parameters.
#[derive(Debug)]
pub(crate) struct Matched<'r> {
    pub(crate) route: &'r Route,
    pub(crate) params: Vec<(String, String)>,
}

impl Routes {
    /// Checks `settings` and builds the table.
    pub fn new(settings: &[RouteSettings]) -> Result<Self, RouteError> {
        if settings.len() > MAX_ROUTES {
            return Err(RouteError::TooMany);
        }
        let mut by_path: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut routes = Vec::with_capacity(settings.len());
        for (index, route) in settings.iter().enumerate() {
            let invalid = |problem: String| RouteError::Invalid {
                index,
                method: route.method.clone(),
                path: route.path.clone(),
                problem,
            };
            let checked = check(route).map_err(invalid)?;
            let same_path = by_path.entry(route.path.as_str()).or_default();
            if let Some(other) = same_path.iter().find_map(|&i| {
                routes
                    .get(i)
                    .filter(|other: &&Route| overlaps(other, &checked))
                    .map(|_| i)
            }) {
                return Err(invalid(format!(
                    "matches the same requests as route {other}; give them different methods or hosts"
                )));
            }
            same_path.push(index);
            routes.push(checked);
        }
        let mut paths = matchit::Router::new();
        for (path, indices) in by_path {
            paths
                .insert(path, indices)
                .map_err(|e| RouteError::Invalid {
                    index: 0,
                    method: String::new(),
                    path: path.to_owned(),
                    problem: format!("the path template conflicts with another: {e}"),
                })?;
        }
        Ok(Self { paths, routes })
    }

    /// Whether no route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for `method` on `host` at `path` (without its query).
    pub(crate) fn find(&self, method: &str, host: &str, path: &str) -> Option<Matched<'_>> {
        let found = self.paths.at(path).ok()?;
        let route = found
            .value
            .iter()
            .filter_map(|&i| self.routes.get(i))
            .find(|route| {
                route.method.as_deref().is_none_or(|m| m == method)
                    && route.host.as_deref().is_none_or(|h| host_matches(h, host))
            })?;
        let params = found
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(Matched { route, params })
    }
}

/// Whether two routes on one template could match the same request.
fn overlaps(a: &Route, b: &Route) -> bool {
    let methods = a.method.is_none() || b.method.is_none() || a.method == b.method;
    let hosts = match (&a.host, &b.host) {
        (Some(a), Some(b)) => host_name(a) == host_name(b),
        _ => true,
    };
    methods && hosts
}

/// A configured host without its port: `api.example.com:443` and
/// `api.example.com` can match the same request.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        // `[::1]:443` or `[::1]`: the bracketed address.
        return host
            .find(']')
            .and_then(|end| host.get(..=end))
            .unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// `host` as configured against the request's `:authority`: equal without
/// regard to case, or equal but for the request's port when the configured
/// host has none.
fn host_matches(configured: &str, authority: &str) -> bool {
    if configured.eq_ignore_ascii_case(authority) {
        return true;
    }
    !configured.contains(':')
        && authority.rsplit_once(':').is_some_and(|(host, port)| {
            port.bytes().all(|b| b.is_ascii_digit()) && configured.eq_ignore_ascii_case(host)
        })
}

fn check(route: &RouteSettings) -> Result<Route, String> {
    let method = match route.method.as_str() {
        "*" => None,
        m if !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_uppercase()) => {
            Some(m.to_owned())
        }
        m => {
            return Err(format!(
                "method `{m}` is not an upper-case HTTP method or `*`"
            ));
        }
    };
    if !route.path.starts_with('/') || route.path.len() > 1024 {
        return Err("the path template must start with `/` (at most 1024 bytes)".to_owned());
    }
    let params = template_params(&route.path)?;
    let host = match &route.host {
        None => None,
        Some(h)
            if !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) =>
        {
            Some(h.to_ascii_lowercase())
        }
        Some(h) => return Err(format!("host `{h}` is not a host name or address")),
    };
    names::server(&route.server).map_err(|e| format!("server: {e}"))?;
    names::tool(&route.tool).map_err(|e| format!("tool: {e}"))?;
    serde_json::from_value::<ToolAnnotations>(Value::Object(route.annotations.clone()))
        .map_err(|e| format!("annotations: {e}"))?;
    if route.arguments.len() > MAX_ARGUMENTS {
        return Err(format!("at most {MAX_ARGUMENTS} arguments per route"));
    }
    let arguments = route
        .arguments
        .iter()
        .map(|(name, source)| {
            if !argument_name(name) {
                return Err(format!("argument `{name}`: 1 to 64 of `A-Z a-z 0-9 _ -`"));
            }
            let source = parse_source(source, &params)
                .map_err(|problem| format!("argument `{name}`: {problem}"))?;
            Ok((name.clone(), source))
        })
        .collect::<Result<_, String>>()?;
    Ok(Route {
        method,
        host,
        server: route.server.clone(),
        tool: route.tool.clone(),
        arguments,
        annotations: route.annotations.clone(),
        forward_credential: route.forward_credential,
    })
}

/// The `{name}` and `{*name}` parameters of a template.
fn template_params(path: &str) -> Result<Vec<String>, String> {
    let mut params = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let after = rest.get(open + 1..).unwrap_or_default();
        let close = after
            .find('}')
            .ok_or_else(|| "an unclosed `{` in the path template".to_owned())?;
        let name = after.get(..close).unwrap_or_default();
        let name = name.strip_prefix('*').unwrap_or(name);
        if !argument_name(name) {
            return Err(format!(
                "path parameter `{name}`: 1 to 64 of `A-Z a-z 0-9 _ -`"
            ));
        }
        params.push(name.to_owned());
        rest = after.get(close + 1..).unwrap_or_default();
    }
    Ok(params)
}

fn argument_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_source(source: &str, params: &[String]) -> Result<Source, String> {
    let field = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
    };
    if source == "body" {
        return Ok(Source::Body(Vec::new()));
    }
    let (kind, rest) = source
        .split_once('.')
        .ok_or_else(|| format!("source `{source}`: write `path.NAME`, `query.NAME`, `header.NAME`, `body` or `body.FIELD…`"))?;
    match kind {
        "path" if params.iter().any(|p| p == rest) => Ok(Source::Path(rest.to_owned())),
        "path" => Err(format!(
            "source `{source}`: the path template has no `{{{rest}}}`"
        )),
        "query"
            if !rest.is_empty()
                && rest.len() <= 128
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"&=#".contains(&b)) =>
        {
            Ok(Source::Query(rest.to_owned()))
        }
        "header"
            if !rest.is_empty()
                && rest.len() <= 128
                && rest.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b)
                }) =>
        {
            Ok(Source::Header(rest.to_owned()))
        }
        "header" => Err(format!("source `{source}`: a header name in lower case")),
        "body" if rest.split('.').all(field) && rest.split('.').count() <= 16 => {
            Ok(Source::Body(rest.split('.').map(str::to_owned).collect()))
        }
        _ => Err(format!(
            "source `{source}`: write `path.NAME`, `query.NAME`, `header.NAME`, `body` or `body.FIELD…`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str, host: Option<&str>) -> RouteSettings {
        RouteSettings {
            method: method.into(),
            path: path.into(),
            host: host.map(Into::into),
            server: "github".into(),
            tool: "create_issue".into(),
            arguments: BTreeMap::from([
                ("owner".into(), "path.owner".into()),
                ("title".into(), "body.issue.title".into()),
                ("agent".into(), "header.x-agent".into()),
                ("q".into(), "query.q".into()),
            ]),
            annotations: Map::new(),
            forward_credential: false,
        }
    }

    #[test]
    fn a_request_finds_its_route_by_method_host_and_path() {
        let routes = Routes::new(&[
            route(
                "POST",
                "/repos/{owner}/{repo}/issues",
                Some("api.example.com"),
            ),
            RouteSettings {
                tool: "list_issues".into(),
                arguments: BTreeMap::new(),
                ..route("GET", "/repos/{owner}/{repo}/issues", None)
            },
        ])
        .unwrap();
        let found = routes
            .find("POST", "API.example.com:443", "/repos/acme/web/issues")
            .unwrap();
        assert_eq!(found.route.tool, "create_issue");
        assert!(
            found
                .params
                .contains(&("owner".to_owned(), "acme".to_owned()))
        );
        assert!(found.route.reads_body());
        assert_eq!(
            routes
                .find("GET", "other.example", "/repos/acme/web/issues")
                .unwrap()
                .route
                .tool,
            "list_issues"
        );
        assert!(
            routes
                .find("POST", "other.example", "/repos/acme/web/issues")
                .is_none()
        );
        assert!(
            routes
                .find("DELETE", "api.example.com", "/repos/acme/web/issues")
                .is_none()
        );
        assert!(
            routes
                .find("POST", "api.example.com", "/repos/acme/issues")
                .is_none()
        );
    }

    #[test]
    fn routes_that_would_match_the_same_request_are_refused() {
        let error = Routes::new(&[
            route("POST", "/a/{owner}", None),
            route("*", "/a/{owner}", Some("h.example")),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("same requests as route 0"),
            "{error}"
        );
        // A host with a port and the same host without one overlap.
        let error = Routes::new(&[
            route("POST", "/a/{owner}", Some("api.example.com:443")),
            route("POST", "/a/{owner}", Some("api.example.com")),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("same requests as route 0"),
            "{error}"
        );
        // Different methods on one template are fine.
        Routes::new(&[
            route("POST", "/a/{owner}", None),
            route("GET", "/a/{owner}", None),
        ])
        .unwrap();
    }

    #[test]
    fn every_field_has_a_grammar() {
        let cases = [
            (route("post", "/a", None), "method"),
            (route("POST", "a", None), "start with `/`"),
            (route("POST", "/a/{x", None), "unclosed"),
            (route("POST", "/a", Some("bad host")), "host"),
            (
                RouteSettings {
                    annotations: serde_json::json!({"readOnlyHint": "yes"})
                        .as_object()
                        .unwrap()
                        .clone(),
                    ..route("POST", "/a/{owner}", None)
                },
                "annotations",
            ),
            (
                RouteSettings {
                    server: "Bad Server".into(),
                    ..route("POST", "/a/{owner}", None)
                },
                "server",
            ),
            (
                RouteSettings {
                    tool: "bad tool".into(),
                    ..route("POST", "/a/{owner}", None)
                },
                "tool",
            ),
            (
                RouteSettings {
                    arguments: BTreeMap::from([("x".into(), "path.nope".into())]),
                    ..route("POST", "/a/{owner}", None)
                },
                "has no `{nope}`",
            ),
            (
                RouteSettings {
                    arguments: BTreeMap::from([("x".into(), "header.X-Agent".into())]),
                    ..route("POST", "/a", None)
                },
                "lower case",
            ),
            (
                RouteSettings {
                    arguments: BTreeMap::from([("x".into(), "cookie.a".into())]),
                    ..route("POST", "/a", None)
                },
                "write `path.NAME`",
            ),
            (
                RouteSettings {
                    arguments: BTreeMap::from([("bad name".into(), "body".into())]),
                    ..route("POST", "/a", None)
                },
                "argument `bad name`",
            ),
        ];
        for (settings, expected) in cases {
            let error = Routes::new(&[settings]).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
