//! The live status page: `/status` (HTML, its script and stylesheet compiled into the
//! binary) and `/status.json` (the same figures, for scripts), served by the edge.
//!
//! The edge asks every service, over the gRPC it already uses, for its health, version and
//! metrics (`Introspection.GetMetrics`: its OpenMetrics text). Rates and latency quantiles
//! are those of the window between two looks: the board keeps each service's previous
//! sample, so a page polling every two seconds sees the last two seconds. Looks are made at
//! most once a second, whoever polls: `/status.json` needs no credential, and must not let
//! anyone multiply calls to the services. It works the same in `oba up` and with a process
//! per service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::join_all;
use oba_proto::common::v1::Empty;
use oba_proto::common::v1::introspection_client::IntrospectionClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::compose::{self, ServiceStatus};
use crate::peers::PeerChannels;

const PAGE: &str = include_str!("../assets/status/index.html");
const SCRIPT: &str = include_str!("../assets/status/status.js");
const STYLE: &str = include_str!("../assets/status/status.css");

/// Scripts, styles and fetches from this origin only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The least time between two looks at the services (see [`StatusBoard::report`]).
const LOOK_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct StatusState {
    pub peers: PeerChannels,
    pub board: Arc<StatusBoard>,
    /// The edge's own metrics: its card's figures.
    pub metrics: oba_kit::metrics::Metrics,
}

/// The routes of the status page.
pub fn router(state: StatusState) -> Router {
    Router::new()
        .route("/status", get(page))
        .route("/status/status.js", get(script))
        .route("/status/status.css", get(style))
        .route("/status.json", get(figures))
        .with_state(state)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}

async fn script() -> Response {
    crate::asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    crate::asset("text/css; charset=utf-8", STYLE)
}

async fn figures(State(state): State<StatusState>) -> Response {
    let report = state.board.report(&state.peers, &state.metrics).await;
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(report)).into_response()
}

/// What `/status.json` answers.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub services: Vec<ServiceFigures>,
    /// The latest traces this edge process recorded, newest first; None when it keeps none
    /// (an edge embedded in a test, say).
    pub traces: Option<Vec<TraceView>>,
}

/// One trace as a waterfall: each span's offset from the trace's first, and its depth.
#[derive(Debug, Serialize)]
pub struct TraceView {
    pub trace_id: String,
    /// The span that started it here (the request the edge served).
    pub root: String,
    pub started_unix_ms: u64,
    pub duration_ms: f64,
    pub error: bool,
    pub spans: Vec<SpanView>,
}

#[derive(Debug, Serialize)]
pub struct SpanView {
    pub name: String,
    pub kind: &'static str,
    pub depth: usize,
    pub offset_ms: f64,
    pub duration_ms: f64,
    pub error: bool,
}

/// Orders a trace's spans by start and places each under its parent.
fn waterfall(trace: oba_kit::telemetry::TraceRecord) -> Option<TraceView> {
    let start = trace.spans.iter().map(|s| s.start_unix_micros).min()?;
    let end = trace
        .spans
        .iter()
        .map(|s| s.start_unix_micros + s.duration_micros)
        .max()?;
    let parents: HashMap<&str, &str> = trace
        .spans
        .iter()
        .map(|s| (s.span_id.as_str(), s.parent_span_id.as_str()))
        .collect();
    let depth = |id: &str| {
        let mut depth = 0;
        let mut at = id;
        while let Some(parent) = parents.get(at).filter(|p| parents.contains_key(*p)) {
            depth += 1;
            at = parent;
            if depth > parents.len() {
                break;
            }
        }
        depth
    };
    let mut spans: Vec<&oba_kit::telemetry::SpanRecord> = trace.spans.iter().collect();
    spans.sort_by_key(|s| (s.start_unix_micros, std::cmp::Reverse(s.duration_micros)));
    let root = spans
        .iter()
        .find(|s| !parents.contains_key(s.parent_span_id.as_str()))
        .map_or_else(String::new, |s| s.name.clone());
    let ms = |micros: u64| micros as f64 / 1000.0;
    Some(TraceView {
        trace_id: trace.trace_id.clone(),
        root,
        started_unix_ms: start / 1000,
        duration_ms: ms(end - start),
        error: spans.iter().any(|s| s.error),
        spans: spans
            .iter()
            .map(|s| SpanView {
                name: s.name.clone(),
                kind: s.kind,
                depth: depth(&s.span_id),
                offset_ms: ms(s.start_unix_micros - start),
                duration_ms: ms(s.duration_micros),
                error: s.error,
            })
            .collect(),
    })
}

/// One service: health, version, and its figures over the last window.
#[derive(Debug, Serialize)]
pub struct ServiceFigures {
    pub name: String,
    /// `SERVING`, `NOT_SERVING`, `UNREACHABLE`, `TIMED_OUT` or `UNKNOWN`.
    pub status: String,
    pub version: Option<String>,
    /// Whether the edge's breaker for it is open.
    pub breaker_open: bool,
    /// Seconds the figures below cover; None on the first look (no window yet).
    pub window_seconds: Option<f64>,
    /// All it answered (gRPC methods, HTTP routes) together, then each.
    pub total: Option<RpcFigures>,
    pub methods: Vec<RpcFigures>,
    /// Events its outbox has not yet published, and the age of the oldest.
    pub outbox: Option<OutboxFigures>,
    /// Events its projections applied per second, by type.
    pub consumed_per_second: HashMap<String, f64>,
    /// Its consumer's lag: events stored for it on the bus and not yet applied; None when
    /// it consumes none.
    pub events_pending: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RpcFigures {
    /// A gRPC method (`/oba.post.v1.PostService/ListPosts`), an HTTP route
    /// (`GET /api/articles/{slug}`), or `all`.
    pub method: String,
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxFigures {
    pub backlog: f64,
    pub oldest_pending_seconds: f64,
}

/// The latest look at the services, shared by every poller, and each service's sample from
/// the look before (the start of the window its figures cover).
#[derive(Default)]
pub struct StatusBoard {
    board: tokio::sync::Mutex<Board>,
}

#[derive(Default)]
struct Board {
    latest: Option<(Instant, Arc<StatusReport>)>,
    samples: HashMap<String, Sample>,
}

struct Sample {
    at: Instant,
    metrics: Exposition,
}

impl StatusBoard {
    /// Every service's health and figures, asked concurrently, each within two seconds; at
    /// most once per [`LOOK_EVERY`], whoever polls and however often: pollers in between,
    /// and those waiting while a look is made, share its report.
    pub async fn report(
        &self,
        peers: &PeerChannels,
        edge_metrics: &oba_kit::metrics::Metrics,
    ) -> Arc<StatusReport> {
        let mut board = self.board.lock().await;
        if let Some((at, report)) = &board.latest
            && at.elapsed() < LOOK_EVERY
        {
            return report.clone();
        }
        let edge = ServiceStatus {
            name: crate::NAME.to_owned(),
            status: "SERVING".to_owned(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            breaker_open: false,
        };
        let looks = join_all(peers.states().into_iter().map(|peer| async move {
            tokio::join!(
                compose::peer_status(peer.name, peer.channel.clone(), peer.breaker_open),
                metrics_of(peer.channel),
            )
        }))
        .await;
        let now = Instant::now();
        let own = Exposition::parse(&edge_metrics.encode());
        let services = std::iter::once((edge, Some(own)))
            .chain(looks)
            .map(|(status, metrics)| board.figures(status, metrics, now))
            .collect();
        let traces = oba_kit::telemetry::recent_traces()
            .map(|traces| traces.into_iter().filter_map(waterfall).collect());
        let report = Arc::new(StatusReport { services, traces });
        board.latest = Some((now, report.clone()));
        report
    }
}

impl Board {
    fn figures(
        &mut self,
        status: ServiceStatus,
        metrics: Option<Exposition>,
        now: Instant,
    ) -> ServiceFigures {
        let mut figures = ServiceFigures {
            name: status.name.clone(),
            status: status.status,
            version: status.version,
            breaker_open: status.breaker_open,
            window_seconds: None,
            total: None,
            methods: Vec::new(),
            outbox: None,
            consumed_per_second: HashMap::new(),
            events_pending: None,
        };
        let Some(metrics) = metrics else {
            return figures;
        };
        figures.outbox = metrics
            .value("oba_outbox_backlog", &[])
            .map(|backlog| OutboxFigures {
                backlog,
                oldest_pending_seconds: metrics
                    .value("oba_outbox_oldest_pending_seconds", &[])
                    .unwrap_or(0.0),
            });
        figures.events_pending = metrics.value("oba_events_pending", &[]);
        let sample = Sample {
            at: now,
            metrics: metrics.clone(),
        };
        let Some(previous) = self.samples.insert(status.name, sample) else {
            return figures;
        };
        let window = now.duration_since(previous.at).as_secs_f64();
        figures.window_seconds = Some(window);
        let change = metrics.minus(&previous.metrics);
        figures.methods = CALLS
            .iter()
            .flat_map(|calls| change.label_values(calls.requests, calls.label))
            .filter(|method| !is_operations_method(method))
            .map(|method| rpc_figures(&change, Some(&method), window))
            .collect();
        figures.total = Some(rpc_figures(&change, None, window));
        for event_type in change.label_values("oba_events_consumed_total", "event_type") {
            let applied = change
                .value("oba_events_consumed_total", &[("event_type", &event_type)])
                .unwrap_or(0.0);
            figures
                .consumed_per_second
                .insert(event_type, applied / window);
        }
        figures
    }
}

/// Health checks and introspection: what the status page and the balancers cause, left out
/// of the figures so that watching does not show as load.
fn is_operations_method(method: &str) -> bool {
    method.starts_with("/grpc.health") || method.contains("Introspection")
}

/// The metric names of one kind of call a process answers.
struct Calls {
    requests: &'static str,
    errors: &'static str,
    buckets: &'static str,
    /// The label naming the method or route.
    label: &'static str,
}

/// What the services answer over gRPC, and what the edge answers over HTTP (kit counts
/// both, with the same latency buckets).
const CALLS: [Calls; 2] = [
    Calls {
        requests: "oba_grpc_requests_total",
        errors: "oba_grpc_errors_total",
        buckets: "oba_grpc_request_duration_seconds_bucket",
        label: "method",
    },
    Calls {
        requests: "oba_http_requests_total",
        errors: "oba_http_errors_total",
        buckets: "oba_http_request_duration_seconds_bucket",
        label: "route",
    },
];

/// Rate, errors and latency of one method or route (or of all but health checks and
/// introspection, which the status page itself causes) over a window of `seconds`.
fn rpc_figures(change: &Exposition, method: Option<&str>, seconds: f64) -> RpcFigures {
    let selected = |calls: &Calls, labels: &[(String, String)]| {
        let of = labels
            .iter()
            .find(|(k, _)| k == calls.label)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        match method {
            Some(method) => of == method,
            None => !is_operations_method(of),
        }
    };
    let sum = |name: fn(&Calls) -> &'static str| -> f64 {
        CALLS
            .iter()
            .flat_map(|calls| {
                change
                    .samples
                    .iter()
                    .filter(move |s| s.name == name(calls) && selected(calls, &s.labels))
            })
            .map(|s| s.value)
            .sum()
    };
    let mut buckets: HashMap<String, f64> = HashMap::new();
    for calls in &CALLS {
        for s in change
            .samples
            .iter()
            .filter(|s| s.name == calls.buckets && selected(calls, &s.labels))
        {
            if let Some((_, le)) = s.labels.iter().find(|(k, _)| k == "le") {
                *buckets.entry(le.clone()).or_default() += s.value;
            }
        }
    }
    let mut buckets: Vec<(f64, f64)> = buckets
        .into_iter()
        .map(|(le, count)| (le.parse::<f64>().unwrap_or(f64::INFINITY), count))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    RpcFigures {
        method: method.unwrap_or("all").to_owned(),
        requests_per_second: sum(|calls| calls.requests) / seconds,
        errors_per_second: sum(|calls| calls.errors) / seconds,
        p50_ms: quantile(&buckets, 0.5).map(|s| s * 1000.0),
        p99_ms: quantile(&buckets, 0.99).map(|s| s * 1000.0),
    }
}

/// The `q` quantile of a cumulative histogram (`(upper bound, count)` in order), linear
/// within the bucket it falls in, as Prometheus' `histogram_quantile` does; None if empty.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(upper, count) in buckets {
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let within = (count - below).max(f64::MIN_POSITIVE);
            return Some(lower + (upper - lower) * ((rank - below) / within));
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

async fn metrics_of(channel: Channel) -> Option<Exposition> {
    let mut client = IntrospectionClient::new(channel);
    let reply = tokio::time::timeout(Duration::from_secs(2), client.get_metrics(Empty {}))
        .await
        .ok()?
        .ok()?;
    Some(Exposition::parse(&reply.into_inner().text))
}

/// A series: metric name and labels.
type SeriesKey<'a> = (&'a str, &'a [(String, String)]);

/// One sample line of the OpenMetrics text format.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The samples of an OpenMetrics text, without the `service` label (one service each).
#[derive(Debug, Clone, Default)]
struct Exposition {
    samples: Vec<Line>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Self { samples }
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
    }

    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == label))
            .map(|(_, v)| v.clone())
            .collect();
        values.sort();
        values.dedup();
        values
    }

    /// Each counter's growth since `earlier` (a series new since then counts from zero).
    fn minus(&self, earlier: &Exposition) -> Exposition {
        let before: HashMap<SeriesKey<'_>, f64> = earlier
            .samples
            .iter()
            .map(|s| ((s.name.as_str(), s.labels.as_slice()), s.value))
            .collect();
        let samples = self
            .samples
            .iter()
            .map(|s| {
                let then = before
                    .get(&(s.name.as_str(), s.labels.as_slice()))
                    .copied()
                    .unwrap_or(0.0);
                Line {
                    // A restarted service starts its counters again: its window counts from zero.
                    value: if s.value >= then {
                        s.value - then
                    } else {
                        s.value
                    },
                    ..s.clone()
                }
            })
            .collect();
        Exposition { samples }
    }
}

/// `name{k="v",...} value` or `name value`; None for anything else.
fn parse_line(line: &str) -> Option<Line> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Line {
        name: name.to_owned(),
        labels: labels.into_iter().filter(|(k, _)| k != "service").collect(),
        value,
    })
}

fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end + 1..];
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP oba_grpc_requests gRPC calls received, by method
oba_grpc_requests_total{service="post-service",method="/oba.post.v1.PostService/ListPosts"} 10
oba_grpc_errors_total{service="post-service",method="/oba.post.v1.PostService/ListPosts"} 1
oba_grpc_request_duration_seconds_bucket{service="post-service",method="/oba.post.v1.PostService/ListPosts",le="0.001"} 5
oba_grpc_request_duration_seconds_bucket{service="post-service",method="/oba.post.v1.PostService/ListPosts",le="0.002"} 10
oba_grpc_request_duration_seconds_bucket{service="post-service",method="/oba.post.v1.PostService/ListPosts",le="+Inf"} 10
oba_outbox_backlog{service="post-service"} 3
"#;

    const AFTER: &str = r#"oba_grpc_requests_total{service="post-service",method="/oba.post.v1.PostService/ListPosts"} 110
oba_grpc_errors_total{service="post-service",method="/oba.post.v1.PostService/ListPosts"} 3
oba_grpc_request_duration_seconds_bucket{service="post-service",method="/oba.post.v1.PostService/ListPosts",le="0.001"} 5
oba_grpc_request_duration_seconds_bucket{service="post-service",method="/oba.post.v1.PostService/ListPosts",le="0.002"} 60
oba_grpc_request_duration_seconds_bucket{service="post-service",method="/oba.post.v1.PostService/ListPosts",le="+Inf"} 110
oba_outbox_backlog{service="post-service"} 0
"#;

    #[test]
    fn a_metrics_line_is_read_with_its_labels_and_without_the_service() {
        let line = parse_line(r#"oba_x_total{service="s",method="/a\"b",le="+Inf"} 7.5"#)
            .expect("a sample");
        assert_eq!(line.name, "oba_x_total");
        assert_eq!(
            line.labels,
            [
                ("method".to_owned(), "/a\"b".to_owned()),
                ("le".to_owned(), "+Inf".to_owned())
            ]
        );
        assert_eq!(line.value, 7.5);
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn rates_and_quantiles_are_those_of_the_window() {
        let change = Exposition::parse(AFTER).minus(&Exposition::parse(BEFORE));
        let figures = rpc_figures(&change, Some("/oba.post.v1.PostService/ListPosts"), 2.0);
        assert_eq!(figures.requests_per_second, 50.0);
        assert_eq!(figures.errors_per_second, 1.0);
        // In the window: 0 under 1 ms, 50 in 1–2 ms, 50 above: the median is 2 ms, the p99
        // lies in the open bucket, reported as its lower bound.
        assert_eq!(figures.p50_ms, Some(2.0));
        assert_eq!(figures.p99_ms, Some(2.0));
    }

    #[test]
    fn http_routes_count_beside_grpc_methods_and_health_checks_do_not() {
        let after = r#"oba_http_requests_total{service="e",route="GET /api/articles"} 30
oba_http_errors_total{service="e",route="GET /api/articles"} 3
oba_http_request_duration_seconds_bucket{service="e",route="GET /api/articles",le="0.001"} 30
oba_http_request_duration_seconds_bucket{service="e",route="GET /api/articles",le="+Inf"} 30
oba_grpc_requests_total{service="e",method="/grpc.health.v1.Health/Check"} 1000
oba_grpc_requests_total{service="e",method="/oba.post.v1.PostService/ListPosts"} 10
"#;
        let change = Exposition::parse(after).minus(&Exposition::default());
        let route = rpc_figures(&change, Some("GET /api/articles"), 10.0);
        assert_eq!(route.requests_per_second, 3.0);
        assert_eq!(route.errors_per_second, 0.3);
        assert!(
            route.p99_ms.is_some_and(|p99| p99 <= 1.0),
            "{:?}",
            route.p99_ms
        );
        let all = rpc_figures(&change, None, 10.0);
        assert_eq!(all.requests_per_second, 4.0);
    }

    #[test]
    fn the_quantile_interpolates_within_its_bucket() {
        let buckets = [(0.001, 0.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        let median = quantile(&buckets, 0.5).expect("a median");
        assert!((median - 0.0015).abs() < 1e-12, "{median}");
        assert_eq!(quantile(&[(f64::INFINITY, 0.0)], 0.5), None);
    }
}
