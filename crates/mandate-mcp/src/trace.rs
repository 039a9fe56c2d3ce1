//! One OpenTelemetry span per relayed `tools/call`, after the MCP semantic
//! conventions: named `tools/call {tool}`, a child of the trace context the
//! client put in the call's `params._meta` (`traceparent`, `tracestate`),
//! the parent of the decision's span on the Mandate server (the context
//! goes with `POST /v1/decide`) and of the upstream server's work (the
//! context goes on in the forwarded call's `params._meta`). It ends when
//! the upstream's answer reaches the client, or at the deny.
//!
//! Spans go to the target `mandate::otel`, which only the OTLP exporter's
//! layer listens to: without it every step here does nothing, and the
//! forwarded call is the client's, unchanged.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde_json::{Map, Value};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::meta::DecisionMeta;

/// The W3C trace context fields, as MCP carries them in `params._meta`.
const FIELDS: [&str; 2] = ["traceparent", "tracestate"];

/// The trace context a client sent with a call (`params._meta`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext(HashMap<String, String>);

impl TraceContext {
    /// The trace context in `params._meta` of `message`, if any.
    pub fn of_call(message: &Value) -> Self {
        let meta = message
            .get("params")
            .and_then(|p| p.get("_meta"))
            .and_then(Value::as_object);
        Self(
            FIELDS
                .iter()
                .filter_map(|field| {
                    let value = meta?.get(*field)?.as_str()?;
                    Some(((*field).to_owned(), value.to_owned()))
                })
                .collect(),
        )
    }
}

impl TraceContext {
    /// The trace context of an HTTP request's headers (the MCP proxy's
    /// client may send it there rather than in `_meta`).
    pub fn of_headers(headers: &HeaderMap) -> Self {
        Self(
            FIELDS
                .iter()
                .filter_map(|field| {
                    let value = headers.get(*field)?.to_str().ok()?;
                    Some(((*field).to_owned(), value.to_owned()))
                })
                .collect(),
        )
    }

    /// This context, or `other` when this one is empty.
    pub fn or(self, other: impl FnOnce() -> Self) -> Self {
        if self.0.is_empty() { other() } else { self }
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

impl Injector for TraceContext {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The trace context of the current span as HTTP headers, for `POST
/// /v1/decide` made within a call's span; empty when not tracing.
pub fn current_headers() -> Vec<(&'static str, String)> {
    CallSpan(Span::current()).headers()
}

/// The span of one relayed `tools/call`.
#[derive(Debug, Clone)]
pub struct CallSpan(Span);

impl CallSpan {
    /// Opens the span of a call of `tool` on `server`, a child of `parent`.
    pub fn start(server: &str, tool: &str, parent: &TraceContext) -> Self {
        let span = tracing::info_span!(
            target: "mandate::otel",
            "mcp.tools_call",
            otel.name = %format!("tools/call {tool}"),
            otel.kind = "server",
        );
        if span.is_disabled() {
            return Self(span);
        }
        let context = TraceContextPropagator::new().extract(parent);
        if context.span().span_context().is_valid() {
            let _ = span.set_parent(context);
        }
        span.set_attribute("mcp.method.name", "tools/call");
        span.set_attribute("gen_ai.operation.name", "execute_tool");
        span.set_attribute("gen_ai.tool.name", tool.to_owned());
        span.set_attribute("mandate.tool.server", server.to_owned());
        Self(span)
    }

    /// The tracing span, to run the decision in.
    pub fn span(&self) -> &Span {
        &self.0
    }

    /// This span's trace context, to send on (empty when not tracing).
    pub fn context(&self) -> TraceContext {
        let mut context = TraceContext::default();
        if !self.0.is_disabled() {
            TraceContextPropagator::new().inject_context(&self.0.context(), &mut context);
        }
        context
    }

    /// The trace context as HTTP headers, for `POST /v1/decide`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let context = self.context();
        FIELDS
            .iter()
            .filter_map(|field| Some((*field, context.0.get(*field)?.clone())))
            .collect()
    }

    /// Puts this span's trace context in `message`'s `params._meta`, for
    /// the upstream server; leaves the message alone when not tracing.
    pub fn propagate_into(&self, message: &mut Value) {
        let context = self.context();
        if context.0.is_empty() {
            return;
        }
        let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) else {
            return;
        };
        let meta = params
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            for (field, value) in context.0 {
                meta.insert(field, Value::String(value));
            }
        }
    }

    /// Puts this span's trace context in the headers of the forwarded HTTP
    /// request, in place of the client's; leaves them alone when not
    /// tracing.
    pub fn propagate_into_headers(&self, headers: &mut HeaderMap) {
        for (field, value) in self.context().0 {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(field.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
    }

    /// Records the decision the call got.
    pub fn decided(&self, decision: &DecisionMeta) {
        if self.0.is_disabled() {
            return;
        }
        self.0
            .set_attribute("mandate.decision.outcome", decision.decision.as_str());
        self.0
            .set_attribute("mandate.decision.id", decision.decision_id.to_string());
    }

    /// Records that the call failed: `error_type` says how (`undecided`,
    /// `tool_error`).
    pub fn failed(&self, error_type: &str) {
        if self.0.is_disabled() {
            return;
        }
        self.0.set_attribute("error.type", error_type.to_owned());
        self.0.set_status(Status::error(error_type.to_owned()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_context_is_read_from_the_calls_meta_only() {
        let call = serde_json::json!({"params": {"name": "t", "_meta": {
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "a=b", "progressToken": 1}}});
        let context = TraceContext::of_call(&call);
        assert_eq!(context.get("tracestate"), Some("a=b"));
        assert_eq!(context.keys().len(), 2);
        assert_eq!(
            TraceContext::of_call(&serde_json::json!({"params": {}})),
            TraceContext::default()
        );
    }

    #[test]
    fn without_an_exporter_nothing_is_added_to_the_call() {
        let span = CallSpan::start("fs", "write_file", &TraceContext::default());
        let mut call = serde_json::json!({"params": {"name": "write_file"}});
        let before = call.clone();
        span.propagate_into(&mut call);
        assert_eq!(call, before);
        assert!(span.headers().is_empty());
    }
}
