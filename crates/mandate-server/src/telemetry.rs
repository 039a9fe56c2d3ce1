//! One OpenTelemetry span per decision, whatever the front end.
//!
//! A front end opens a [`DecisionSpan`] with the request's headers (a W3C
//! `traceparent` there makes the decision a child of the caller's trace),
//! runs the decision inside it, and records the outcome or the refusal.
//! The span's attributes follow the OpenTelemetry semantic conventions
//! where they exist (GenAI `gen_ai.*`, HTTP server `http.*`, RPC `rpc.*`)
//! and are Mandate's own under `mandate.*` otherwise.
//!
//! Spans go to the target [`TARGET`], which only the OTLP exporter's layer
//! listens to; without it the span is disabled and costs next to nothing.

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Array, StringValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub use crate::decider::FrontEnd;
use crate::decider::{Authority, Decided};

/// The tracing target of decision spans.
pub const TARGET: &str = "mandate::otel";

/// The span of one decision.
#[derive(Debug, Clone)]
pub struct DecisionSpan(Span);

impl DecisionSpan {
    /// Opens the span of a decision arriving through `front_end`, a child
    /// of the trace that `headers` carry (`traceparent`, `tracestate`).
    pub fn start(front_end: FrontEnd, headers: &HeaderMap) -> Self {
        let span = tracing::info_span!(target: TARGET, "mandate.decide", otel.kind = "server");
        if span.is_disabled() {
            return Self(span);
        }
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        if parent.span().span_context().is_valid() {
            // Only fails when no OpenTelemetry layer listens: nothing to do.
            let _ = span.set_parent(parent);
        }
        span.set_attribute("gen_ai.operation.name", "execute_tool");
        span.set_attribute("mandate.front_end", front_end.as_str());
        match front_end {
            FrontEnd::Http => {
                span.set_attribute("http.request.method", "POST");
                span.set_attribute("http.route", "/v1/decide");
            }
            FrontEnd::Grpc => {
                span.set_attribute("rpc.system", "grpc");
                span.set_attribute("rpc.service", "mandate.v1.DecisionService");
                span.set_attribute("rpc.method", "Decide");
            }
            FrontEnd::ExtAuthz => {
                span.set_attribute("rpc.system", "grpc");
                span.set_attribute("rpc.service", "envoy.service.auth.v3.Authorization");
                span.set_attribute("rpc.method", "Check");
            }
        }
        Self(span)
    }

    /// The tracing span, to run the decision in.
    pub fn span(&self) -> &Span {
        &self.0
    }

    /// Records the decision made under `authority`.
    pub fn decided(&self, decided: &Decided, authority: &Authority) {
        let span = &self.0;
        if span.is_disabled() {
            return;
        }
        let response = &decided.response;
        span.set_attribute("gen_ai.tool.name", decided.tool.clone());
        span.set_attribute("mandate.tool.server", decided.server.clone());
        span.set_attribute("mandate.decision.outcome", response.decision.as_str());
        span.set_attribute("mandate.decision.id", response.decision_id.to_string());
        span.set_attribute(
            "mandate.decision.policies",
            Value::Array(Array::String(
                response
                    .policies
                    .iter()
                    .map(|p| StringValue::from(p.clone()))
                    .collect(),
            )),
        );
        if let Some(index) = response.receipt_index.and_then(|i| i64::try_from(i).ok()) {
            span.set_attribute("mandate.receipt.index", index);
        }
        if let Some(approval) = &response.approval_id {
            span.set_attribute("mandate.approval.id", approval.to_string());
        }
        if let Authority::Task(credential) = authority {
            span.set_attribute("mandate.task.id", credential.task_id.as_str().to_owned());
            if let Some(holder) = credential.holder() {
                span.set_attribute("mandate.delegation.depth", i64::from(holder.depth));
            }
        }
    }

    /// Records that no decision was made: `code` is the error code the
    /// caller got (`invalid_token`, `receipt_unavailable`, …).
    pub fn refused(&self, code: &str) {
        if self.0.is_disabled() {
            return;
        }
        self.0.set_attribute("error.type", code.to_owned());
        self.0.set_status(Status::error(code.to_owned()));
    }
}

/// Header values for the W3C trace context propagator.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
