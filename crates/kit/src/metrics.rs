//! Prometheus metrics of one service, served at `/metrics`.
//!
//! Each service owns its own registry (several services share a process in `oba up`, and
//! each must report only its own numbers).

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The full gRPC method path, e.g. `/oba.post.v1.PostService/ListPosts`, for the
    /// service's real methods only; [`OTHER_METHOD`] for every other path, so that callers
    /// cannot grow the label set.
    pub method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The HTTP method (one of the standard ones, else `OTHER`) and the route's template,
    /// e.g. `GET /api/articles/{slug}`: never the raw path, whose slugs and ids are unbounded.
    pub route: String,
}

/// The label of calls to a method the service does not have.
pub const OTHER_METHOD: &str = "other";

/// The metrics registry of one service.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<std::sync::Mutex<Registry>>,
    grpc_requests: Family<MethodLabel, Counter>,
    grpc_errors: Family<MethodLabel, Counter>,
    grpc_durations: Family<MethodLabel, Histogram>,
    http_requests: Family<RouteLabel, Counter>,
    http_errors: Family<RouteLabel, Counter>,
    http_durations: Family<RouteLabel, Histogram>,
}

/// Upper bounds of the latency buckets: 0.5 ms doubling to ~8 s.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

impl Metrics {
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "oba",
            [(Cow::Borrowed("service"), Cow::Owned(service.to_owned()))].into_iter(),
        );
        let grpc_requests = Family::<MethodLabel, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls received, by method",
            grpc_requests.clone(),
        );
        let grpc_errors = Family::<MethodLabel, Counter>::default();
        registry.register(
            "grpc_errors",
            "gRPC calls answered with a status other than OK, by method",
            grpc_errors.clone(),
        );
        let grpc_durations =
            Family::<MethodLabel, Histogram>::new_with_constructor(duration_buckets as fn() -> _);
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC call (to its response headers), by method",
            grpc_durations.clone(),
        );
        let http_requests = Family::<RouteLabel, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served by the service's routes (probes and operators' pages left out), by route",
            http_requests.clone(),
        );
        let http_errors = Family::<RouteLabel, Counter>::default();
        registry.register(
            "http_errors",
            "HTTP requests answered with a 5xx status, by route",
            http_errors.clone(),
        );
        let http_durations =
            Family::<RouteLabel, Histogram>::new_with_constructor(duration_buckets as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to its response headers), by route",
            http_durations.clone(),
        );
        Self {
            registry: Arc::new(std::sync::Mutex::new(registry)),
            grpc_requests,
            grpc_errors,
            grpc_durations,
            http_requests,
            http_errors,
            http_durations,
        }
    }

    /// Registers another metric of the service.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing to a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

/// Whether a request speaks gRPC (by its content type).
pub fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Middleware counting gRPC calls by method: one of the contracts' methods that this service
/// answered (not UNIMPLEMENTED), or `other`.
pub async fn count_grpc_requests(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    if !is_grpc(&request) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed().as_secs_f64();
    let status = response.headers().get("grpc-status");
    let unimplemented = status.is_some_and(|status| status == "12");
    // A failure answered without a body carries its status in the headers.
    let failed = status.is_some_and(|status| status != "0") || !response.status().is_success();
    let method = if unimplemented || !oba_proto::methods::is_known(&path) {
        OTHER_METHOD.to_owned()
    } else {
        path
    };
    let label = MethodLabel { method };
    metrics.grpc_requests.get_or_create(&label).inc();
    metrics.grpc_durations.get_or_create(&label).observe(took);
    if failed {
        metrics.grpc_errors.get_or_create(&label).inc();
    }
    response
}

/// Middleware on a service's own HTTP routes (after routing, so the route is known):
/// counts requests, 5xx answers and their durations by route.
pub async fn count_http_requests(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let Some(route) = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned())
    else {
        return next.run(request).await;
    };
    use axum::http::Method;
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        // Callers choose the method's name: an unbounded label otherwise.
        _ => "OTHER",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let label = RouteLabel {
        route: format!("{method} {route}"),
    };
    metrics.http_requests.get_or_create(&label).inc();
    metrics
        .http_durations
        .get_or_create(&label)
        .observe(started.elapsed().as_secs_f64());
    if response.status().is_server_error() {
        metrics.http_errors.get_or_create(&label).inc();
    }
    response
}
