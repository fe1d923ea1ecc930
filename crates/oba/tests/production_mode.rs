//! Production mode under faults: one process per service on PostgreSQL, with a service
//! restarted and the database cut off while the system runs.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

mod support;

use std::time::Duration;

use oba::Service;
use serde_json::{Value, json};
use support::{TestSystem, count, error_code};

const POSTS: &str = "{ posts { edges { node { slug author { username } } } } }";
const ME: &str = "{ me { username } }";

/// Runs `query` with a deadline, so that a hang fails the test instead of stalling it.
async fn answered_within(
    app: &TestSystem,
    token: Option<&str>,
    query: &str,
    limit: Duration,
) -> Value {
    tokio::time::timeout(limit, app.gql(token, query, json!({})))
        .await
        .unwrap_or_else(|_| panic!("no answer within {limit:?}: the edge hung"))
}

async fn status(app: &TestSystem, service: Service, path: &str) -> u16 {
    app.http
        .get(format!("http://{}{path}", app.addr(service)))
        .send()
        .await
        .expect("probe answered")
        .status()
        .as_u16()
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_stopped_service_fails_fast_with_unavailable_and_recovers_when_back() {
    let mut app = TestSystem::start_production().await;
    let (token, _) = app.register("lena").await;
    app.create_post(&token, "Before the restart", &[]).await;

    app.processes().stop_service(Service::PostService).await;
    let down = answered_within(&app, None, POSTS, Duration::from_secs(5)).await;
    assert_eq!(error_code(&down), "UNAVAILABLE", "{down}");
    // The rest of the system keeps serving.
    assert_eq!(
        app.ok(Some(&token), ME, json!({})).await["me"]["username"],
        "lena"
    );

    app.processes().start_service(Service::PostService).await;
    let back = app
        .eventually_ok(None, POSTS, Duration::from_secs(10))
        .await;
    assert!(
        back.get("errors").is_none(),
        "post-service did not recover: {back}"
    );
    assert_eq!(
        back["data"]["posts"]["edges"][0]["node"]["author"]["username"],
        "lena"
    );
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_database_outage_fails_cleanly_and_recovers_without_restarting_anything() {
    let mut app = TestSystem::start_production_with_db_proxy().await;
    let (token, _) = app.register("mona").await;
    app.create_post(&token, "Before the outage", &[]).await;
    assert_eq!(status(&app, Service::PostService, "/readyz").await, 200);

    app.processes().db_proxy.as_ref().expect("proxy").cut();
    let down = answered_within(&app, None, POSTS, Duration::from_secs(15)).await;
    assert_eq!(error_code(&down), "UNAVAILABLE", "{down}");
    let create =
        "mutation { createPost(input: {title: \"During the outage\", body: \"lost?\"}) { slug } }";
    let refused = tokio::time::timeout(
        Duration::from_secs(15),
        app.gql(Some(&token), create, json!({})),
    )
    .await
    .expect("answered");
    assert_eq!(error_code(&refused), "UNAVAILABLE", "{refused}");
    assert_eq!(status(&app, Service::PostService, "/readyz").await, 503);
    assert_eq!(status(&app, Service::UserService, "/readyz").await, 503);
    // Liveness does not follow dependencies: restarting the process would not help.
    assert_eq!(status(&app, Service::PostService, "/healthz").await, 200);

    app.processes().db_proxy.as_ref().expect("proxy").restore();
    let back = app
        .eventually_ok(None, POSTS, Duration::from_secs(15))
        .await;
    assert!(back.get("errors").is_none(), "no recovery: {back}");
    assert_eq!(status(&app, Service::PostService, "/readyz").await, 200);
    let slugs: Vec<&str> = back["data"]["posts"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["slug"].as_str().expect("slug"))
        .collect();
    assert_eq!(
        slugs,
        ["before-the-outage"],
        "the refused write left nothing behind"
    );
    app.ok(Some(&token), create, json!({})).await;
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn reads_are_counted_in_memory_and_reported_as_one_event_per_post() {
    let mut app = TestSystem::start_production().await;
    let (token, _) = app.register("nora").await;
    app.create_post(&token, "Read often", &[]).await;
    let rank_db = app.database_url(Service::RankService);
    for _ in 0..20 {
        let read = app
            .http
            .get(format!("{}/api/articles/read-often", app.url))
            .send()
            .await
            .expect("sent");
        assert_eq!(read.status(), 200);
    }
    // Every read reaches trending, within about a report interval (1 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let views = count(
            &rank_db,
            "SELECT COALESCE(SUM(views), 0)::bigint FROM rank_posts",
        )
        .await;
        if views == 20 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{views} of 20 views");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...as one event per report interval the reads spanned, not one write per read.
    let post_service = format!("http://{}", app.addr(Service::PostService));
    let events = app
        .metric_total(&post_service, "oba_events_published_total", "post.viewed")
        .await;
    assert!(
        (1.0..=3.0).contains(&events),
        "{events} post.viewed events for 20 reads"
    );
}
