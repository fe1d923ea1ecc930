//! Logs and traces. Logs: structured `tracing` events to stderr, filtered by `RUST_LOG`
//! (default `info`). Traces: the spans oba makes (a request served, a call to a peer, a
//! transaction, an event published or consumed; see [`crate::trace`]) exported with
//! OpenTelemetry over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, under `OTEL_SERVICE_NAME` or the process's
//! own name. Unset, no span layer is installed: a span costs a disabled callsite check.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The standard variables that turn exporting on.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL={0:?}: this build exports over \"grpc\" only (OTLP/HTTP would add a second HTTP client to every binary)"
    )]
    Protocol(String),
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// The installed telemetry; [`Telemetry::shutdown`] sends the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter (a blocking call, made off the async threads).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = stopped {
                eprintln!("trace exporter: {e}");
            }
        }
    }
}

/// Installs the global subscriber, naming exported spans `service` unless `OTEL_SERVICE_NAME`
/// says otherwise. A second call (tests) installs nothing and exports nothing.
pub fn init(service: &str) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm_migration=warn,h2=warn"));
    // Spans are for traces; log lines stay one event each, as they were.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter.and(filter_fn(|meta| meta.is_event())));
    let provider = exporter(service)?;
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("oba"))
            // The spans meant for traces say their kind; warnings and errors go with them.
            .with_filter(filter_fn(|meta| {
                if meta.is_span() {
                    meta.fields().field("otel.kind").is_some()
                } else {
                    *meta.level() <= tracing::Level::WARN
                }
            }))
    });
    let installed = Registry::default()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    Ok(Telemetry {
        provider: provider.filter(|_| installed),
    })
}

/// The OTLP exporter the standard variables ask for, if any.
fn exporter(service: &str) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !ENDPOINT_VARIABLES.into_iter().any(set) {
        return Ok(None);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(protocol) = std::env::var(name)
            && protocol.trim() != "grpc"
        {
            return Err(TelemetryError::Protocol(protocol));
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| service.to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter)
            .build(),
    ))
}
