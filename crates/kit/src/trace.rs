//! W3C trace context (`traceparent`) carried from a request at the edge, through the gRPC
//! calls it makes, into the envelopes of the events it causes, so an event can be tied to
//! the request that produced it; and the spans that make a trace of it.
//!
//! Every server scopes each request in a task-local holding its `traceparent` (the caller's,
//! or a new one) and serves it in a `server` span; gRPC clients built with
//! [`crate::peer::Outgoing`] send it on; the outbox copies it into `Envelope.trace_context`,
//! the relay publishes in a `producer` span and a consumer applies in a `consumer` span,
//! both children of that context.
//!
//! When spans are exported (see [`crate::telemetry`]) the `traceparent` sent on is the
//! current span's, so that each span's parent is the one that caused it; otherwise it is
//! the request's, unchanged.

use std::future::Future;
use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

tokio::task_local! {
    static TRACEPARENT: String;
}

/// Which requests get spans, set once by [`crate::telemetry::init`]: none until then.
static SAMPLING: OnceLock<Sampling> = OnceLock::new();

/// The sampling decision, made once per trace where it starts and carried in the
/// `traceparent` flags: a span is made only inside a sampled trace, so an unsampled request
/// costs no span at all (not even one that is dropped later).
pub struct Sampling {
    /// Share of traces started here that are sampled.
    pub ratio: f64,
    /// Public requests whose caller asks for sampling, honoured per second at most: a caller
    /// cannot make every request pay for spans.
    pub asked: governor::DefaultDirectRateLimiter,
}

/// Turns spans on, with `sampling` (the first call wins).
pub fn sample(sampling: Sampling) {
    let _ = SAMPLING.set(sampling);
}

/// Whether spans are made in this process at all.
pub fn spans_on() -> bool {
    SAMPLING.get().is_some()
}

/// Whether the code running now is part of a sampled trace (and spans are made at all).
pub fn sampled_here() -> bool {
    SAMPLING.get().is_some()
        && TRACEPARENT
            .try_with(|traceparent| is_sampled(traceparent))
            .unwrap_or(false)
}

fn is_sampled(traceparent: &str) -> bool {
    traceparent
        .rsplit('-')
        .next()
        .and_then(|flags| u8::from_str_radix(flags, 16).ok())
        .is_some_and(|flags| flags & 1 == 1)
}

/// `traceparent` with its sampled flag set to `sampled`.
fn with_sampled(traceparent: &str, sampled: bool) -> String {
    match traceparent.rsplit_once('-') {
        Some((head, _)) => format!("{head}-{}", if sampled { "01" } else { "00" }),
        None => traceparent.to_owned(),
    }
}

/// The decision for a request in `traceparent`: a caller's sampled flag (`incoming`) is kept
/// if `trusted` (a peer service carrying on a trace) or within the public allowance; a new
/// trace is sampled at the ratio.
fn decide(traceparent: &str, incoming: bool, trusted: bool) -> bool {
    let Some(sampling) = SAMPLING.get() else {
        return false;
    };
    if incoming {
        is_sampled(traceparent) && (trusted || sampling.asked.check().is_ok())
    } else {
        sampled_at_ratio(traceparent, sampling.ratio)
    }
}

/// Whether a trace started here is sampled: decided by its (random) trace id, as
/// OpenTelemetry's `TraceIdRatioBased` does, so no more randomness is drawn per request.
fn sampled_at_ratio(traceparent: &str, ratio: f64) -> bool {
    let low = traceparent
        .get(19..35)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(u64::MAX);
    ((low >> 11) as f64 / (1u64 << 53) as f64) < ratio
}

pub const HEADER: &str = "traceparent";

/// The traceparent to send on: the current span's when spans are recorded, else that of
/// the request being served, if any.
pub fn current() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span = span.span_context();
    if span.is_valid() {
        return Some(format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags().to_u8()
        ));
    }
    TRACEPARENT.try_with(Clone::clone).ok()
}

/// Runs `work` as part of the trace `cause` names (an event's, from its envelope): in a span
/// made by `span` and parented to `cause` when that trace is sampled, else as it is.
pub async fn follow_on<F: Future>(
    cause: Option<String>,
    span: impl FnOnce() -> tracing::Span,
    work: F,
) -> F::Output {
    let Some(cause) = cause.filter(|_| SAMPLING.get().is_some()) else {
        return work.await;
    };
    if !is_sampled(&cause) {
        return scope(cause, work).await;
    }
    let parent = cause.clone();
    // The span is made inside the trace's scope: only spans of sampled traces are kept.
    scope(cause, async move {
        let span = span();
        adopt(&span, &parent);
        work.instrument(span).await
    })
    .await
}

/// Makes `span` a child of the (remote) span `traceparent` names; a malformed one, or spans
/// not being recorded, changes nothing.
pub fn adopt(span: &tracing::Span, traceparent: &str) {
    if span.is_disabled() {
        return;
    }
    let Some(parent) = parse(traceparent) else {
        return;
    };
    let parts: Vec<&str> = parent.split('-').collect();
    let (Ok(trace_id), Ok(span_id), Ok(flags)) = (
        TraceId::from_hex(parts[1]),
        SpanId::from_hex(parts[2]),
        u8::from_str_radix(parts[3], 16),
    ) else {
        return;
    };
    let remote = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// Runs `f` as part of the trace `traceparent`.
pub async fn scope<F: Future>(traceparent: String, f: F) -> F::Output {
    TRACEPARENT.scope(traceparent, f).await
}

/// A well-formed `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, or None.
pub fn parse(header: &str) -> Option<String> {
    let parts: Vec<&str> = header.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1] != "0".repeat(32)
        && hex(parts[2], 16)
        && parts[2] != "0".repeat(16)
        && hex(parts[3], 2);
    valid.then(|| header.trim().to_ascii_lowercase())
}

/// A new trace with a random id.
pub fn new_traceparent() -> String {
    let mut bytes = [0u8; 24];
    // Without randomness a fixed id still keeps requests apart by time; never fail a request.
    let _ = getrandom::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("00-{}-{}-01", &hex[..32], &hex[32..])
}

/// Whether `path` is a gRPC call of operators and their tools (health checks, and what the
/// status page asks the services): not traced, so that it cannot crowd the requests of
/// users out of the recent traces. (Probes and operators' HTTP routes are served outside
/// this middleware: `ServiceApp::operations`.)
fn is_operations(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/oba.common.v1.Introspection/")
}

/// The `server` span of a request: named after its gRPC method or its HTTP route.
fn server_span(request: &Request, grpc: bool) -> tracing::Span {
    let name = if grpc {
        request.uri().path().trim_start_matches('/').to_owned()
    } else {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        format!("{} {route}", request.method())
    };
    tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        rpc.system = if grpc { "grpc" } else { "http" },
        http.response.status_code = tracing::field::Empty,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// The `client` span of a gRPC call to `peer`'s method at `path`.
pub fn client_span(peer: &'static str, path: &str) -> tracing::Span {
    if !sampled_here() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "call",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "client",
        rpc.system = "grpc",
        peer.service = peer,
        otel.status_code = tracing::field::Empty,
    )
}

/// Middleware: serve the request inside its trace (the caller's `traceparent`, or a new one),
/// in a `server` span named after the gRPC method or the HTTP route (never the raw path:
/// slugs and ids would make every span name unique).
pub async fn propagate(request: Request, next: Next) -> Response {
    if is_operations(request.uri().path()) {
        return next.run(request).await;
    }
    let incoming = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse);
    let grpc = crate::metrics::is_grpc(&request);
    let traceparent = incoming.clone().unwrap_or_else(new_traceparent);
    // Without spans the trace context passes through as it came; with them, the decision
    // is made here. A peer service carrying on a trace speaks gRPC; public requests, HTTP.
    let (traceparent, sampled) = if SAMPLING.get().is_some() {
        let sampled = decide(&traceparent, incoming.is_some(), grpc);
        (with_sampled(&traceparent, sampled), sampled)
    } else {
        (traceparent, false)
    };
    scope(traceparent, async move {
        if !sampled {
            return next.run(request).await;
        }
        // Made inside the trace's scope, where the span layer sees that it is sampled.
        let span = server_span(&request, grpc);
        if let Some(incoming) = &incoming {
            adopt(&span, incoming);
        }
        let response = next.run(request).instrument(span.clone()).await;
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        // A failed gRPC call answered without a body carries its status in the headers.
        let grpc_status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok());
        if let Some(code) = grpc_status {
            span.record("rpc.grpc.status_code", code);
        }
        if status.is_server_error() || grpc_status.is_some_and(|code| code != 0) {
            span.record("otel.status_code", "ERROR");
        }
        response
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_taken() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse(good).as_deref(), Some(good));
        for bad in [
            "",
            "garbage",
            "00-4bf9-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(parse(&new_traceparent()).is_some());
    }

    #[test]
    fn the_sampled_flag_is_read_and_set_in_the_traceparent() {
        let asked = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_sampled(asked));
        let refused = with_sampled(asked, false);
        assert_eq!(
            refused,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        assert!(!is_sampled(&refused));
        assert_eq!(with_sampled(&refused, true), asked);
        // Other flag bits do not count as sampled.
        assert!(!is_sampled(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02"
        ));
    }

    #[test]
    fn a_new_trace_is_sampled_by_its_id_at_the_ratio() {
        let low = "00-4bf92f3577b34da60000000000000000-00f067aa0ba902b7-01";
        let high = "00-4bf92f3577b34da6ffffffffffffffff-00f067aa0ba902b7-01";
        assert!(sampled_at_ratio(low, 0.05) && !sampled_at_ratio(high, 0.05));
        assert!(sampled_at_ratio(high, 1.0) && !sampled_at_ratio(low, 0.0));
        let sampled = (0..10_000)
            .filter(|_| sampled_at_ratio(&new_traceparent(), 0.05))
            .count();
        // 500 expected; 6 standard deviations either side.
        assert!((370..=630).contains(&sampled), "{sampled} of 10 000");
    }

    #[test]
    fn health_checks_and_introspection_are_not_traced() {
        for path in [
            "/grpc.health.v1.Health/Check",
            "/oba.common.v1.Introspection/GetMetrics",
        ] {
            assert!(is_operations(path), "{path}");
        }
        for path in [
            "/graphql",
            "/api/articles",
            "/oba.post.v1.PostService/ListPosts",
        ] {
            assert!(!is_operations(path), "{path}");
        }
    }

    #[tokio::test]
    async fn the_scope_is_visible_inside_and_gone_outside() {
        assert_eq!(current(), None);
        let inside = scope("00-x".to_owned(), async { current() }).await;
        assert_eq!(inside.as_deref(), Some("00-x"));
    }
}
