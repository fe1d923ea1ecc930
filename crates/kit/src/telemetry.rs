//! Logs and traces. Logs: structured `tracing` events to stderr, filtered by `RUST_LOG`
//! (default `info`). Traces: the spans oba makes (a request served, a call to a peer, a
//! transaction, an event published or consumed; see [`crate::trace`]) exported with
//! OpenTelemetry over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, under `OTEL_SERVICE_NAME` or the process's
//! own name. The edge (and `oba up`) also keeps its most recent traces in memory
//! ([`RecentTraces`]), for the status page. Which traces get spans is decided where they
//! start (see [`crate::trace`]): `OBA_TRACE_SAMPLE_RATIO` of new ones (default 1 when
//! exporting; else 0.05, enough to fill the status page), and those whose caller sent a
//! sampled `traceparent`, public ones up to `OBA_TRACE_ASKED_PER_SECOND` (10). With
//! neither an exporter nor the ring, no span layer is installed: a span costs a disabled
//! callsite check.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

/// The installed telemetry; [`Telemetry::shutdown`] sends the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
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
/// says otherwise, and keeping recent traces in memory when `keep_recent`. A second call
/// (tests) installs nothing and exports nothing.
pub fn init(service: &str, keep_recent: bool) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm_migration=warn,h2=warn"));
    let provider = provider(service, keep_recent)?;
    let installed = subscriber(filter, provider.as_ref()).try_init().is_ok();
    Ok(Telemetry {
        provider: provider.filter(|_| installed),
    })
}

/// Log lines as `filter` lets them through, and the spans of sampled traces to `provider`
/// when there is one.
fn subscriber(
    filter: EnvFilter,
    provider: Option<&SdkTracerProvider>,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    // Spans are for traces; log lines stay one event each, as they were.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter.and(filter_fn(|meta| meta.is_event())));
    let registry = Registry::default().with(logs);
    let Some(provider) = provider else {
        // Not `.with(None)`: an absent layer's interest (`always`) turns the per-layer
        // filters' `never` into `sometimes`, and every span, h2's trace spans too, is made.
        return Box::new(registry);
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("oba"))
        // The spans meant for traces say their kind, and are kept only in a sampled
        // trace (see crate::trace); warnings and errors go with them.
        .with_filter(filter_fn(|meta| {
            if meta.is_span() {
                meta.fields().field("otel.kind").is_some() && crate::trace::sampled_here()
            } else {
                *meta.level() <= tracing::Level::WARN
            }
        }));
    Box::new(registry.with(spans))
}

/// The spans' provider: the OTLP exporter the standard variables ask for and the ring of
/// recent traces, either or both; None when neither is wanted.
fn provider(service: &str, keep_recent: bool) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let exporter = exporter()?;
    if exporter.is_none() && !keep_recent {
        return Ok(None);
    }
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| service.to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    // oba decides where a trace starts (crate::trace) and makes no span outside a sampled
    // one; the SDK keeps them all unless the standard variables ask for more sampling.
    if std::env::var("OTEL_TRACES_SAMPLER").is_err() {
        builder = builder.with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn);
    }
    let mut env = crate::config::Env::from_process();
    let default_ratio = if exporter.is_some() {
        1.0
    } else {
        DEFAULT_SAMPLE_RATIO
    };
    let ratio = env.parsed("OBA_TRACE_SAMPLE_RATIO", default_ratio);
    if !(0.0..=1.0).contains(&ratio.value) {
        env.problem(&ratio.key, "expected a share from 0 to 1");
    }
    let asked = env.parsed("OBA_TRACE_ASKED_PER_SECOND", DEFAULT_ASKED_PER_SECOND);
    env.finish()?;
    crate::trace::sample(crate::trace::Sampling {
        ratio: ratio.value,
        asked: governor::RateLimiter::direct(governor::Quota::per_second(asked.value)),
    });
    if let Some(exporter) = exporter {
        builder = builder.with_batch_exporter(exporter);
    }
    if keep_recent {
        let ring = RECENT.get_or_init(|| Arc::new(RecentTraces::new(KEPT_TRACES, KEPT_SPANS)));
        builder = builder.with_span_processor(RingProcessor(ring.clone()));
    }
    Ok(Some(builder.build()))
}

/// The OTLP exporter the standard variables ask for, if any.
fn exporter() -> Result<Option<opentelemetry_otlp::SpanExporter>, TelemetryError> {
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
    Ok(Some(exporter))
}

/// Share of traces started here that are sampled, with no exporter (see the module docs).
const DEFAULT_SAMPLE_RATIO: f64 = 0.05;
/// Public requests whose caller asks for a trace (a sampled `traceparent`), honoured per second.
const DEFAULT_ASKED_PER_SECOND: std::num::NonZeroU32 =
    std::num::NonZeroU32::new(10).expect("10 > 0");
/// Traces the ring keeps, newest first, and spans kept of each: a bounded memory.
const KEPT_TRACES: usize = 50;
const KEPT_SPANS: usize = 200;

static RECENT: OnceLock<Arc<RecentTraces>> = OnceLock::new();

/// The recent traces of this process, if it keeps them.
pub fn recent_traces() -> Option<Vec<TraceRecord>> {
    RECENT.get().map(|ring| ring.snapshot())
}

/// One finished span, as the status page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpanRecord {
    pub span_id: String,
    /// Empty for the trace's first span in this process.
    pub parent_span_id: String,
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    /// Since the Unix epoch, and how long it took.
    pub start_unix_micros: u64,
    pub duration_micros: u64,
    pub error: bool,
}

/// The spans of one trace this process saw, in the order they ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceRecord {
    pub trace_id: String,
    pub spans: Vec<SpanRecord>,
}

/// A bounded ring of the latest traces: a trace is moved to the front when one of its spans
/// ends; the oldest are dropped past `traces`, and a trace keeps at most `spans` spans.
#[derive(Debug)]
pub struct RecentTraces {
    traces: Mutex<VecDeque<TraceRecord>>,
    max_traces: usize,
    max_spans: usize,
}

impl RecentTraces {
    pub fn new(max_traces: usize, max_spans: usize) -> Self {
        Self {
            traces: Mutex::new(VecDeque::new()),
            max_traces,
            max_spans,
        }
    }

    pub fn record(&self, trace_id: String, span: SpanRecord) {
        let Ok(mut traces) = self.traces.lock() else {
            return;
        };
        let mut trace = match traces.iter().position(|t| t.trace_id == trace_id) {
            Some(at) => traces.remove(at).unwrap_or_else(|| TraceRecord {
                trace_id: trace_id.clone(),
                spans: Vec::new(),
            }),
            None => TraceRecord {
                trace_id,
                spans: Vec::new(),
            },
        };
        if trace.spans.len() < self.max_spans {
            trace.spans.push(span);
        }
        traces.push_front(trace);
        traces.truncate(self.max_traces);
    }

    /// Newest first.
    pub fn snapshot(&self) -> Vec<TraceRecord> {
        self.traces
            .lock()
            .map(|traces| traces.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Feeds ended spans into the ring.
#[derive(Debug)]
struct RingProcessor(Arc<RecentTraces>);

impl opentelemetry_sdk::trace::SpanProcessor for RingProcessor {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        use opentelemetry::trace::{SpanId, SpanKind, Status};
        let micros = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        };
        let start = micros(span.start_time);
        let record = SpanRecord {
            span_id: span.span_context.span_id().to_string(),
            parent_span_id: if span.parent_span_id == SpanId::INVALID {
                String::new()
            } else {
                span.parent_span_id.to_string()
            },
            name: span.name.to_string(),
            kind: match span.span_kind {
                SpanKind::Server => "server",
                SpanKind::Client => "client",
                SpanKind::Producer => "producer",
                SpanKind::Consumer => "consumer",
                SpanKind::Internal => "internal",
            },
            start_unix_micros: start,
            duration_micros: micros(span.end_time).saturating_sub(start),
            error: matches!(span.status, Status::Error { .. }),
        };
        self.0
            .record(span.span_context.trace_id().to_string(), record);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str) -> SpanRecord {
        SpanRecord {
            span_id: id.to_owned(),
            parent_span_id: String::new(),
            name: id.to_owned(),
            kind: "server",
            start_unix_micros: 0,
            duration_micros: 1,
            error: false,
        }
    }

    #[test]
    fn without_a_trace_provider_no_span_is_made() {
        let logs_everything = EnvFilter::new("trace");
        let dispatch = tracing::Dispatch::new(subscriber(logs_everything, None));
        tracing::dispatcher::with_default(&dispatch, || {
            // A span of oba's own, and one of a library's (h2 makes these per frame).
            assert!(tracing::info_span!("request", otel.kind = "server").is_disabled());
            assert!(tracing::trace_span!("buffer_pending").is_disabled());
        });
    }

    #[test]
    fn the_ring_keeps_the_latest_traces_and_a_bounded_number_of_spans() {
        let ring = RecentTraces::new(2, 3);
        for n in 0..5 {
            ring.record("a".to_owned(), span(&format!("a{n}")));
        }
        ring.record("b".to_owned(), span("b0"));
        ring.record("c".to_owned(), span("c0"));
        let kept = ring.snapshot();
        let ids: Vec<&str> = kept.iter().map(|t| t.trace_id.as_str()).collect();
        assert_eq!(ids, ["c", "b"]);
        ring.record("b".to_owned(), span("b1"));
        let kept = ring.snapshot();
        assert_eq!(kept[0].trace_id, "b");
        assert_eq!(kept[0].spans.len(), 2);
        let a = RecentTraces::new(2, 3);
        for n in 0..5 {
            a.record("a".to_owned(), span(&format!("a{n}")));
        }
        assert_eq!(a.snapshot()[0].spans.len(), 3);
    }
}
