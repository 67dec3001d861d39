//! Logging and tracing set-up: `tracing` to stderr as text or JSON lines, filtered by
//! `log.filter` or `RUST_LOG`; and, when `telemetry.otlp_endpoint` (or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, the same spans
//! as OpenTelemetry traces over OTLP/HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the
//! default, or `http/json`; `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are honoured).
//!
//! Traces carry the W3C `traceparent`: a request's span continues the client's trace
//! ([`continue_trace`]), and the upstream request carries it on ([`inject_trace`]). The spans
//! below the request span (admission, queue wait, upstream call, tool runs, the log write) are at
//! `debug` level: only the trace exporter asks for them, so with tracing off they cost nothing.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, Registry};

use crate::config::{LogConfig, LogFormat, TelemetryConfig};

/// Whether traces are exported: without, the `traceparent` work is skipped altogether.
static TRACING_ON: AtomicBool = AtomicBool::new(false);

/// Keeps the trace exporter; [`Telemetry::shutdown`] sends what is buffered.
#[must_use = "dropping it stops nothing, but shutdown() flushes the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (blocking: call it off the runtime or at the end).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "the trace exporter did not shut down cleanly");
        }
    }
}

/// Installs the global subscriber (a second call, in tests, leaves the first); and the trace
/// exporter when it is configured.
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.filter));
    // Colours only for a terminal: a log file or journald gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match log.format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let provider = tracer_provider(telemetry)?;
    let traces = provider.as_ref().map(|provider| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let tracer = provider.tracer("chat-proxy");
        // This crate's spans down to `debug`; others' at `info`.
        let wanted = Targets::new()
            .with_target("chat_proxy", LevelFilter::DEBUG)
            .with_default(LevelFilter::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(wanted)
    });
    let installed = Registry::default()
        .with(fmt)
        .with(traces)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        TRACING_ON.store(true, Ordering::Release);
        tracing::info!("traces: exported over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

/// The OTLP exporter's provider, or none when no endpoint is configured anywhere.
fn tracer_provider(config: &TelemetryConfig) -> anyhow::Result<Option<SdkTracerProvider>> {
    let from_env = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.is_empty()));
    if config.otlp_endpoint.is_empty() && !from_env {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if !config.otlp_endpoint.is_empty() {
        // As OTEL_EXPORTER_OTLP_ENDPOINT: the collector's root, the signal's path appended.
        let endpoint = format!("{}/v1/traces", config.otlp_endpoint.trim_end_matches('/'));
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter
        .build()
        .map_err(|e| anyhow::anyhow!("config key `telemetry.otlp_endpoint`: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(config.service_name.clone());
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// Makes `span` continue the trace a client's `traceparent` (W3C) names, if it sent one and
/// tracing is on.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !TRACING_ON.load(Ordering::Acquire) {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    if opentelemetry::trace::TraceContextExt::has_active_span(&parent) {
        let _ = span.set_parent(parent);
    }
}

/// The current span's `traceparent`, for a request going out (empty when tracing is off).
pub fn inject_trace(headers: &mut reqwest::header::HeaderMap) {
    if !TRACING_ON.load(Ordering::Acquire) {
        return;
    }
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
    });
}
