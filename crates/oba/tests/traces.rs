//! Traces exported over OTLP: every process of a production system sends its spans to a
//! collector (here one in the test), and the spans of one request, across services and
//! through the bus, make one connected trace.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{Value, json};
use support::TestSystem;

/// One received span, with the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: SpanKind,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// A minimal OTLP/gRPC collector: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
        let mut spans = self.spans.lock().expect("collector lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received {
                    service: service.clone(),
                    name: span.name.clone(),
                    kind: span.kind(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let collector = Self::default();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        (collector, addr)
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans
            .lock()
            .expect("collector lock")
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn one_like_is_one_trace_across_the_edge_the_services_and_the_bus() {
    let (collector, addr) = Collector::start().await;
    let endpoint = format!("http://{addr}");
    let app = TestSystem::start_production_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        // The standard batch delay, shortened so the test does not wait 5 s per export.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ])
    .await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    app.create_post(&alice, "Traced", &[]).await;

    let response = app
        .http
        .post(format!("{}/graphql", app.url))
        .bearer_auth(&bob)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({ "query": "mutation { likePost(slug: \"traced\") { likeCount } }" }))
        .send()
        .await
        .expect("sent");
    let body: Value = response.json().await.expect("JSON");
    assert!(body["errors"].is_null(), "{body}");

    // Each process exports its spans in batches of its own, in any order (the edge's server
    // span ends last of its own, so it may come after the consumer's): wait for every span
    // checked below, and for the tree to be whole.
    let has = |spans: &[Received], service: &str, name: &str| {
        spans.iter().any(|s| s.service == service && s.name == name)
    };
    let started = Instant::now();
    let spans = loop {
        let spans = collector.of_trace(TRACE_ID);
        let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let whole = spans
            .iter()
            .all(|s| s.parent_span_id == CALLER_SPAN || ids.contains(s.parent_span_id.as_str()));
        // The edge, like- and rank-service are in the trace by the spans named below.
        if whole
            && spans.iter().any(|s| s.service == "post-service")
            && has(&spans, "blog-aggregator", "POST /graphql")
            && has(&spans, "like-service", "oba.like.v1.LikeService/Like")
            && has(&spans, "like-service", "LikeStore::like")
            && has(&spans, "rank-service", "consume post.liked")
        {
            break spans;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "spans of the trace so far: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The edge served the request as a child of the caller's span.
    let root = spans
        .iter()
        .find(|s| s.service == "blog-aggregator" && s.kind == SpanKind::Server)
        .unwrap_or_else(|| panic!("an edge server span: {spans:#?}"));
    assert_eq!(root.name, "POST /graphql");
    assert_eq!(root.parent_span_id, CALLER_SPAN);

    // Every other span hangs off a span of the same trace: one tree, edge to consumer.
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for span in &spans {
        if span.span_id != root.span_id {
            assert!(
                by_id.contains_key(span.parent_span_id.as_str()),
                "{span:?} has no parent in the trace: {spans:#?}"
            );
        }
    }
    // The like-service served the edge's client call, and the consumer follows the producer.
    let served = spans
        .iter()
        .find(|s| s.service == "like-service" && s.name == "oba.like.v1.LikeService/Like")
        .unwrap_or_else(|| panic!("like-service's server span: {spans:#?}"));
    let caller = by_id[served.parent_span_id.as_str()];
    assert_eq!(
        (caller.service.as_str(), caller.kind),
        ("blog-aggregator", SpanKind::Client)
    );
    let consumed = spans
        .iter()
        .find(|s| s.service == "rank-service" && s.name == "consume post.liked")
        .expect("consume span");
    assert_eq!(consumed.kind, SpanKind::Consumer);
    let mut cause = by_id[consumed.parent_span_id.as_str()];
    while cause.span_id != root.span_id {
        cause = by_id[cause.parent_span_id.as_str()];
    }
    // And the database work of the like is a span of the like-service.
    assert!(
        spans
            .iter()
            .any(|s| s.service == "like-service" && s.name == "LikeStore::like"),
        "{spans:#?}"
    );
}

#[tokio::test]
async fn an_otlp_protocol_this_build_cannot_speak_is_refused_at_start() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_oba"))
        .args(["keys", "post-service"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .output()
        .await
        .expect("oba runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{stderr}");
}

#[tokio::test]
async fn a_sample_ratio_that_is_not_a_share_is_refused_at_start() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_oba"))
        .args(["serve", "blog-aggregator"])
        .env("OBA_TRACE_SAMPLE_RATIO", "lots")
        .output()
        .await
        .expect("oba runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OBA_TRACE_SAMPLE_RATIO"), "{stderr}");
}
