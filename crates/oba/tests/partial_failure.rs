//! One sick service degrades one field, never the whole blog. Production mode (a process per
//! service): like-service killed or hung, notification-service hung, a connection reset
//! mid-call. Optional facts go missing with a marker; essential ones and writes that need
//! the sick service fail fast with UNAVAILABLE / 503, never 500; everything heals without
//! restarting the rest.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

mod support;

use std::time::{Duration, Instant};

use oba::Service;
use serde_json::{Value, json};
use support::{TestSystem, error_code};

const PAGE: &str = "{ posts(first: 10) { nodes { slug title likeCount likedByMe commentCount author { username } } } }";

/// A REST GET: status, the `Oba-Degraded` header, the body, and how long it took.
async fn rest_get(
    app: &TestSystem,
    path: &str,
    token: Option<&str>,
) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let mut request = app.http.get(format!("{}/api{path}", app.url));
    if let Some(token) = token {
        request = request.header("authorization", format!("Token {token}"));
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let degraded = response
        .headers()
        .get("oba-degraded")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    (status, degraded, body, started.elapsed())
}

/// Alice's post, liked and commented on by Bob.
async fn liked_post(app: &TestSystem) -> (String, String, String) {
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let slug = app.create_post(&alice, "Liked", &["x"]).await["slug"]
        .as_str()
        .expect("slug")
        .to_owned();
    app.ok(
        Some(&bob),
        "mutation($s: String!) { likePost(slug: $s) { likeCount } }",
        json!({ "s": slug }),
    )
    .await;
    app.ok(
        Some(&bob),
        "mutation($s: String!) { addComment(slug: $s, body: \"hi\") { id } }",
        json!({ "s": slug }),
    )
    .await;
    (alice, bob, slug)
}

/// The errors of a GraphQL response naming `service` as unavailable.
fn unavailable_errors<'a>(body: &'a Value, service: &str) -> Vec<&'a Value> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter(|e| {
                    e["extensions"]["code"] == "UNAVAILABLE"
                        && e["extensions"]["service"] == service
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `query` answers with no errors (the system healed), for up to `within`.
async fn until_whole(
    app: &TestSystem,
    token: Option<&str>,
    query: &str,
    within: Duration,
) -> Value {
    let body = app.eventually_ok(token, query, within).await;
    assert!(body.get("errors").is_none(), "never healed: {body}");
    body
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_dead_like_service_degrades_counts_not_the_blog() {
    let mut app = TestSystem::start_production().await;
    let (alice, bob, slug) = liked_post(&app).await;
    app.processes().kill_service(Service::LikeService).await;

    // REST keeps the RealWorld shape, counts defaulted, and says what is missing.
    for path in ["/articles".to_owned(), format!("/articles/{slug}")] {
        let (status, degraded, body, _) = rest_get(&app, &path, Some(&bob)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(degraded.as_deref(), Some("like-service"), "{path}");
        let article = if path == "/articles" {
            body["articles"][0].clone()
        } else {
            body["article"].clone()
        };
        assert_eq!(article["favoritesCount"], 0, "{article}");
        assert_eq!(article["favorited"], false, "{article}");
        assert_eq!(article["author"]["username"], "alice");
    }
    // GraphQL: the page, with likes null and one error naming like-service.
    let body = app.gql(Some(&bob), PAGE, json!({})).await;
    let node = &body["data"]["posts"]["nodes"][0];
    assert_eq!(node["title"], "Liked", "{body}");
    assert_eq!(node["likeCount"], Value::Null);
    assert_eq!(node["likedByMe"], Value::Null);
    assert_eq!(node["commentCount"], 1);
    assert_eq!(unavailable_errors(&body, "like-service").len(), 1, "{body}");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "{body}");
    // A single post keeps the key, as null.
    let body = app
        .gql(
            None,
            "query($s: String!) { post(slug: $s) { title likeCount } }",
            json!({ "s": slug }),
        )
        .await;
    assert!(
        body["data"]["post"]
            .as_object()
            .is_some_and(|p| p.get("likeCount") == Some(&Value::Null)),
        "{body}"
    );
    // Writes that need likes fail with 503 / UNAVAILABLE; creating an article does not.
    let favorite = app
        .http
        .post(format!("{}/api/articles/{slug}/favorite", app.url))
        .header("authorization", format!("Token {bob}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(favorite.status(), 503);
    let like = app
        .gql(
            Some(&bob),
            "mutation($s: String!) { likePost(slug: $s) { likeCount } }",
            json!({ "s": slug }),
        )
        .await;
    assert_eq!(error_code(&like), "UNAVAILABLE", "{like}");
    let created = app
        .http
        .post(format!("{}/api/articles", app.url))
        .header("authorization", format!("Token {alice}"))
        .json(&json!({ "article": { "title": "Written while likes are down", "description": "d", "body": "b" } }))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("JSON");
    assert_eq!(created["article"]["favoritesCount"], 0);

    // Back: full answers again, nothing else restarted.
    app.processes().start_service(Service::LikeService).await;
    let body = until_whole(&app, Some(&bob), PAGE, Duration::from_secs(15)).await;
    let liked = body["data"]["posts"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["slug"] == slug.as_str())
        .cloned()
        .expect("the liked post");
    assert_eq!(liked["likeCount"], 1);
    assert_eq!(liked["likedByMe"], true);
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_hung_like_service_is_failed_fast_and_heals() {
    let mut app = TestSystem::start_production().await;
    let (_, bob, _) = liked_post(&app).await;
    app.processes()
        .signal_service(Service::LikeService, "STOP")
        .await;

    let mut latencies = Vec::new();
    for _ in 0..12 {
        let (status, degraded, _, took) = rest_get(&app, "/articles", Some(&bob)).await;
        assert_eq!(status, 200);
        assert_eq!(degraded.as_deref(), Some("like-service"));
        latencies.push(took);
    }
    // Never past the read budget (2 s) by much, and once the breaker is open, at once.
    assert!(
        latencies.iter().all(|t| *t < Duration::from_secs(3)),
        "{latencies:?}"
    );
    assert!(
        latencies[7..]
            .iter()
            .all(|t| *t < Duration::from_millis(500)),
        "the breaker did not open: {latencies:?}"
    );
    let status = app
        .ok(None, "{ systemStatus { name breakerOpen } }", json!({}))
        .await;
    let like_service = status["systemStatus"]
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["name"] == "like-service")
        .cloned()
        .expect("like-service");
    assert_eq!(like_service["breakerOpen"], true);
    let metrics = app.metrics(&app.url).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("oba_peer_breaker_open{")
                && l.contains("like-service")
                && l.ends_with(" 1")),
        "{metrics}"
    );

    app.processes()
        .signal_service(Service::LikeService, "CONT")
        .await;
    let body = until_whole(&app, Some(&bob), PAGE, Duration::from_secs(15)).await;
    assert_eq!(body["data"]["posts"]["nodes"][0]["likeCount"], 1);
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_hung_notification_service_answers_unavailable_within_the_budget() {
    let mut app = TestSystem::start_production().await;
    let (alice, _) = app.register("alice").await;
    app.processes()
        .signal_service(Service::NotificationService, "STOP")
        .await;
    let started = Instant::now();
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        app.gql(
            Some(&alice),
            "{ notifications(first: 5) { nodes { id } } }",
            json!({}),
        ),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(error_code(&body), "UNAVAILABLE", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    app.processes()
        .signal_service(Service::NotificationService, "CONT")
        .await;
    until_whole(
        &app,
        Some(&alice),
        "{ notifications(first: 5) { nodes { id } } }",
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_peer_dying_mid_call_is_503_never_500() {
    let mut app = TestSystem::start_production().await;
    let (_, bob, slug) = liked_post(&app).await;
    // A call in flight when its peer dies: the connection is reset under it.
    app.processes()
        .signal_service(Service::LikeService, "STOP")
        .await;
    let request = app
        .http
        .delete(format!("{}/api/articles/{slug}/favorite", app.url))
        .header("authorization", format!("Token {bob}"))
        .send();
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.processes().kill_service(Service::LikeService).await;
    };
    let (response, ()) = tokio::join!(request, killer);
    let response = response.expect("answered");
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("JSON");
    assert!(body["errors"].is_object(), "{body}");
}
