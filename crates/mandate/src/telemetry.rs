//! Decision spans exported over OTLP, when configured.
//!
//! Off unless an endpoint is set: `otel_endpoint` (config file,
//! `MANDATE_OTEL_ENDPOINT`) or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` keep it off. The protocol is `otel_protocol`,
//! else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`,
//! else `http/protobuf` (the specification's default); the exporter reads
//! the other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout) itself.
//!
//! A decision never waits for telemetry: finished spans go into a bounded
//! queue ([`QUEUE`]), and a task exports them in batches. A span that finds
//! the queue full, or whose batch the collector refuses or does not take
//! within [`EXPORT_TIMEOUT`], is dropped and counted
//! (`mandate_otel_spans_dropped_total`).

use std::sync::mpsc as sync_mpsc;
use std::time::Duration;

use std::io::IsTerminal as _;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::cli::LogFormat;

/// Finished spans waiting for export, at most.
pub const QUEUE: usize = 4096;
/// Spans per export request, at most.
const BATCH: usize = 512;
/// How long spans wait for a batch to fill.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// How long one export may take before its spans count as dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// `grpc` or `http/protobuf`, as `OTEL_EXPORTER_OTLP_PROTOCOL` writes it.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => anyhow::bail!(
                "OTLP protocol `{other}` is not supported: use `grpc` or `http/protobuf`"
            ),
        }
    }
}

/// Where and how to export, once resolved from the settings and the
/// environment; `None` when export is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The endpoint from the config file, if set there (the exporter reads
    /// the environment's own otherwise).
    endpoint: Option<String>,
    protocol: OtlpProtocol,
}

impl Export {
    /// Export as configured by `endpoint` and `protocol` (settings) and the
    /// process environment.
    pub fn resolve(endpoint: Option<&str>, protocol: Option<&str>) -> anyhow::Result<Option<Self>> {
        Self::resolve_with(endpoint, protocol, |name| std::env::var(name).ok())
    }

    fn resolve_with(
        endpoint: Option<&str>,
        protocol: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
        {
            return Ok(None);
        }
        let endpoint = endpoint.map(str::trim).filter(|e| !e.is_empty());
        if endpoint.is_none()
            && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        if let Some(endpoint) = endpoint {
            anyhow::ensure!(
                endpoint.starts_with("http://") || endpoint.starts_with("https://"),
                "`otel_endpoint` must be an http:// or https:// URL, such as http://127.0.0.1:4317; got `{endpoint}`"
            );
        }
        let protocol = match protocol
            .map(str::to_owned)
            .or_else(|| set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            Some(text) => OtlpProtocol::parse(&text)?,
            None => OtlpProtocol::HttpProtobuf,
        };
        Ok(Some(Self {
            endpoint: endpoint.map(str::to_owned),
            protocol,
        }))
    }

    /// Starts exporting: the tracer provider, whose batches a task of the
    /// current tokio runtime sends. Must be called within that runtime.
    pub fn start(&self, dropped: Counter) -> anyhow::Result<SdkTracerProvider> {
        let exporter = match self.protocol {
            OtlpProtocol::Grpc => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_timeout(EXPORT_TIMEOUT);
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.with_endpoint(endpoint.clone());
                }
                builder.build()
            }
            OtlpProtocol::HttpProtobuf => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_timeout(EXPORT_TIMEOUT);
                if let Some(endpoint) = &self.endpoint {
                    // As OTEL_EXPORTER_OTLP_ENDPOINT: the base, signal path added.
                    builder = builder
                        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
                }
                builder.build()
            }
        }
        .context("cannot set up the OTLP span exporter")?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("mandate");
        }
        let resource = resource.build();
        let mut exporter = exporter;
        opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
        let (queue, spans) = mpsc::channel(QUEUE);
        tokio::spawn(export_loop(exporter, spans, dropped.clone()));
        Ok(SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(QueueProcessor { queue, dropped })
            .build())
    }
}

/// Logs to stderr at `RUST_LOG` (default `default_level`); spans of the
/// target `mandate::otel` go only to the OTLP exporter, when there is one.
pub fn init_logging(format: LogFormat, default_level: &str, spans: Option<&SdkTracerProvider>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
        .add_directive(
            format!("{}=off", mandate_server::telemetry::TARGET)
                .parse()
                .unwrap_or_default(),
        );
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match format {
        LogFormat::Text => logs.with_filter(filter).boxed(),
        LogFormat::Json => logs.json().with_filter(filter).boxed(),
    };
    let spans = spans.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer(provider))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(mandate_server::telemetry::TARGET, tracing::Level::INFO),
            )
    });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
}

/// Logging, and span export as the `OTEL_*` environment says, for a
/// process without a config file of its own (the MCP gateway). Must be
/// called within a tokio runtime's context.
pub fn init_from_env(
    format: LogFormat,
    default_level: &str,
) -> anyhow::Result<Option<SdkTracerProvider>> {
    let spans = Export::resolve(None, None)?
        .map(|export| export.start(Counter::default()))
        .transpose()?;
    init_logging(format, default_level, spans.as_ref());
    Ok(spans)
}

/// Sends the last spans: before the runtime stops.
pub fn flush(spans: Option<SdkTracerProvider>) {
    if let Some(spans) = spans
        && let Err(e) = spans.shutdown()
    {
        tracing::warn!(error = %e, "the last spans were not exported");
    }
}

/// A tracer for the decision spans.
pub fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::SdkTracer {
    provider.tracer("mandate")
}

enum Command {
    Span(Box<SpanData>),
    /// Export what is queued, then say so.
    Flush(sync_mpsc::SyncSender<()>),
}

/// Hands finished spans to the export task without waiting.
#[derive(Debug)]
struct QueueProcessor {
    queue: mpsc::Sender<Command>,
    dropped: Counter,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Span(_) => "Span",
            Command::Flush(_) => "Flush",
        })
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(Command::Span(Box::new(span))).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (done, flushed) = sync_mpsc::sync_channel(1);
        self.queue.try_send(Command::Flush(done)).map_err(|_| {
            OTelSdkError::InternalFailure("the span queue is full or closed".into())
        })?;
        flushed
            .recv_timeout(EXPORT_TIMEOUT + BATCH_DELAY)
            .map_err(|_| OTelSdkError::Timeout(EXPORT_TIMEOUT))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.force_flush()
    }
}

/// Sends queued spans in batches until the queue closes.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut spans: mpsc::Receiver<Command>,
    dropped: Counter,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(BATCH_DELAY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = spans.recv() => match command {
                Some(Command::Span(span)) => {
                    batch.push(*span);
                    if batch.len() >= BATCH {
                        export(&exporter, &mut batch, &dropped).await;
                    }
                }
                Some(Command::Flush(done)) => {
                    export(&exporter, &mut batch, &dropped).await;
                    let _ = done.send(());
                }
                None => {
                    export(&exporter, &mut batch, &dropped).await;
                    return;
                }
            },
            _ = tick.tick() => export(&exporter, &mut batch, &dropped).await,
        }
    }
}

async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    dropped: &Counter,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let count = spans.len() as u64;
    match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(spans)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            dropped.inc_by(count);
            tracing::debug!(error = %e, spans = count, "OTLP export failed; spans dropped");
        }
        Err(_) => {
            dropped.inc_by(count);
            tracing::debug!(spans = count, "OTLP export timed out; spans dropped");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn resolve(
        endpoint: Option<&str>,
        protocol: Option<&str>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Option<Export>> {
        Export::resolve_with(endpoint, protocol, |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_set_and_the_sdk_not_disabled() {
        assert_eq!(resolve(None, None, &[]).unwrap(), None);
        let on = resolve(
            None,
            None,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
        )
        .unwrap();
        assert_eq!(on.unwrap().protocol, OtlpProtocol::HttpProtobuf);
        let configured = resolve(Some("http://c:4317"), Some("grpc"), &[])
            .unwrap()
            .unwrap();
        assert_eq!(configured.protocol, OtlpProtocol::Grpc);
        assert_eq!(configured.endpoint.as_deref(), Some("http://c:4317"));
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(resolve(Some("http://c:4317"), None, &[off]).unwrap(), None);
        }
        let from_env = resolve(
            None,
            None,
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(from_env.protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn a_protocol_or_endpoint_it_cannot_use_is_refused() {
        let error = resolve(Some("http://c:4317"), Some("http/json"), &[]).unwrap_err();
        assert!(
            error.to_string().contains("`http/json` is not supported"),
            "{error}"
        );
        let error = resolve(Some("c:4317"), None, &[]).unwrap_err();
        assert!(error.to_string().contains("http:// or https://"), "{error}");
    }
}
