//! The edge's live status page: `/status` and the figures behind it, `/status.json`.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::TestSystem;

use oba::Service;

async fn status(app: &TestSystem) -> Value {
    let response = app
        .http
        .get(format!("{}/status.json", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

fn service<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

#[tokio::test]
async fn the_status_page_is_served_from_the_binary_with_a_strict_policy() {
    let app = TestSystem::start().await;
    let page = app
        .http
        .get(format!("{}/status", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().await.expect("text");
    assert!(html.contains("/status/status.js"), "{html}");
    for asset in ["/status/status.js", "/status/status.css"] {
        let response = app
            .http
            .get(format!("{}{asset}", app.url))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{asset}");
    }
}

#[tokio::test]
async fn every_service_reports_health_version_and_the_calls_it_served() {
    let app = TestSystem::start().await;
    let first = status(&app).await;
    assert_eq!(first["services"].as_array().expect("services").len(), 7);
    for s in first["services"].as_array().expect("services") {
        assert_eq!(s["status"], "SERVING", "{s}");
        assert!(s["version"].is_string(), "{s}");
    }
    let (alice, _) = app.register("alice").await;
    for n in 0..5 {
        app.create_post(&alice, &format!("Post {n}"), &["status"])
            .await;
    }
    // The services are looked at once a second at most.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = status(&app).await;
    let posts = service(&second, "post-service");
    assert!(
        posts["window_seconds"].as_f64().expect("a window") > 0.0,
        "{posts}"
    );
    let create = posts["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .find(|m| m["method"] == "/oba.post.v1.PostService/CreatePost")
        .unwrap_or_else(|| panic!("CreatePost in {posts}"));
    assert!(
        create["requests_per_second"].as_f64().expect("rate") > 0.0,
        "{create}"
    );
    assert!(create["p50_ms"].as_f64().expect("p50") > 0.0, "{create}");
    assert!(posts["outbox"]["backlog"].is_number(), "{posts}");
    // The rank-service applied the posts' events, and reports its lag; post-service
    // consumes nothing.
    let rank = service(&second, "rank-service");
    assert!(
        rank["consumed_per_second"]["post.created"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{rank}"
    );
    assert!(rank["events_pending"].as_f64().is_some(), "{rank}");
    assert!(posts["events_pending"].is_null(), "{posts}");
    // The edge is measured by the routes it served; the status page's own polling is not
    // among them.
    let edge = service(&second, "blog-aggregator");
    let methods = edge["methods"].as_array().expect("the edge's routes");
    let graphql = methods
        .iter()
        .find(|m| m["method"] == "POST /graphql")
        .unwrap_or_else(|| panic!("POST /graphql in {edge}"));
    assert!(
        graphql["requests_per_second"].as_f64().expect("rate") > 0.0,
        "{graphql}"
    );
    assert!(graphql["p99_ms"].as_f64().is_some(), "{graphql}");
    assert!(
        methods
            .iter()
            .all(|m| !m["method"].as_str().unwrap_or_default().contains("/status")),
        "{edge}"
    );
}

#[tokio::test]
async fn polling_the_status_as_often_as_one_likes_asks_the_services_once_a_second() {
    let app = TestSystem::start().await;
    let before = app.grpc_calls(Service::PostService, "GetMetrics").await;
    let started = Instant::now();
    let polls = (0..50).map(|_| status(&app));
    let reports = futures::future::join_all(polls).await;
    for _ in 0..20 {
        status(&app).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        reports
            .iter()
            .all(|r| r["services"].as_array().is_some_and(|s| s.len() == 7))
    );
    let asked = app.grpc_calls(Service::PostService, "GetMetrics").await - before;
    // 70 polls: one look, plus one per further second they took.
    assert!(asked >= 1, "never asked");
    assert!(
        asked <= 1 + seconds.ceil() as u64,
        "{asked} looks in {seconds:.2} s"
    );
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_stopped_service_shows_down_within_five_seconds() {
    let mut app = TestSystem::start_production().await;
    let report = status(&app).await;
    assert_eq!(service(&report, "like-service")["status"], "SERVING");
    app.processes().stop_service(Service::LikeService).await;
    let stopped = Instant::now();
    loop {
        let report = status(&app).await;
        let like = service(&report, "like-service");
        if like["status"] != "SERVING" {
            assert_eq!(service(&report, "post-service")["status"], "SERVING");
            break;
        }
        assert!(stopped.elapsed() < Duration::from_secs(5), "{like}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_traced_request_appears_in_the_recent_traces_with_its_spans() {
    let app = TestSystem::start_production().await;
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    app.traced_request(trace_id).await;
    let started = Instant::now();
    let trace = loop {
        let report = status(&app).await;
        let found = report["traces"]
            .as_array()
            .expect("the edge process keeps traces")
            .iter()
            .find(|t| t["trace_id"] == trace_id)
            .cloned();
        if let Some(trace) = found {
            break trace;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(trace["root"], "GET /api/articles", "{trace}");
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans[0]["name"], "GET /api/articles");
    assert_eq!(spans[0]["depth"], 0);
    let call = spans
        .iter()
        .find(|s| s["kind"] == "client" && s["name"] == "oba.post.v1.PostService/ListPosts")
        .unwrap_or_else(|| panic!("the call to post-service: {trace}"));
    assert_eq!(call["depth"], 1, "{trace}");
    let total = trace["duration_ms"].as_f64().expect("duration");
    assert!(
        call["offset_ms"].as_f64().expect("offset") <= total,
        "{trace}"
    );
    // The page's own polling is not traced: it cannot crowd requests out.
    let report = status(&app).await;
    assert!(
        report["traces"]
            .as_array()
            .expect("traces")
            .iter()
            .all(|t| !t["root"].as_str().unwrap_or_default().contains("status")),
        "{report}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_caller_cannot_make_every_request_traced() {
    let app = TestSystem::start_production().await;
    let ids: Vec<String> = (0..40)
        .map(|n| format!("{n:032x}").replacen('0', "a", 1))
        .collect();
    let started = Instant::now();
    for id in &ids {
        app.traced_request(id).await;
    }
    let took = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = status(&app).await;
    let traced = report["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .filter(|t| ids.iter().any(|id| t["trace_id"] == id.as_str()))
        .count();
    // OBA_TRACE_ASKED_PER_SECOND (10): a burst of 10, then 10 a second.
    let allowed = 10 + (10.0 * took).ceil() as usize;
    assert!(traced >= 10, "{traced} of 40 traced");
    assert!(
        traced <= allowed.min(39),
        "{traced} of 40 traced in {took:.2} s"
    );
}
