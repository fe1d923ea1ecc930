//! The asynchronous half: events through the outbox and the bus into rank-service and
//! notification-service, observed through GraphQL (and a real WebSocket). Scenarios run
//! embedded (in-process bus) and in production mode (NATS JetStream); the faults (bus down,
//! consumer killed) need NATS and run in production mode only.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

mod support;

use std::time::{Duration, Instant};

use oba::Service;
use serde_json::{Value, json};
use support::{TestSystem, ws};

scenarios!(
    a_like_a_comment_and_a_follow_each_notify_exactly_once_and_move_trending,
    a_subscriber_receives_its_own_notifications_and_no_one_elses,
);

const NOTIFICATIONS: &str = "query($u: Boolean) { notifications(first: 100, unreadOnly: $u) {
    edges { node { kind read actor { username } post { slug } } } } }";
const TRENDING: &str = "{ trending(first: 10) { slug likeCount commentCount } }";

fn kinds(body: &Value) -> Vec<String> {
    body["notifications"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["kind"].as_str().expect("kind").to_owned())
        .collect()
}

fn trending_slugs(body: &Value) -> Vec<String> {
    body["trending"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["slug"].as_str().expect("slug").to_owned())
        .collect()
}

/// Polls `query` until `done` holds (events are asynchronous); returns the last data.
async fn eventually(
    app: &TestSystem,
    token: Option<&str>,
    query: &str,
    vars: Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually_within(Duration::from_secs(15), app, token, query, vars, done).await
}

async fn eventually_within(
    limit: Duration,
    app: &TestSystem,
    token: Option<&str>,
    query: &str,
    vars: Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let data = app.ok(token, query, vars.clone()).await;
        if done(&data) || Instant::now() > deadline {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_like_a_comment_and_a_follow_each_notify_exactly_once_and_move_trending(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    app.create_post(&alice, "Older", &[]).await;
    app.create_post(&alice, "Newer", &[]).await;
    let trending = eventually(&app, None, TRENDING, json!({}), |d| {
        trending_slugs(d).len() == 2
    })
    .await;
    assert_eq!(
        trending_slugs(&trending),
        ["newer", "older"],
        "fresh posts: newest first"
    );

    app.ok(
        Some(&bob),
        "mutation { follow(username: \"alice\") { following } }",
        json!({}),
    )
    .await;
    for _ in 0..2 {
        app.ok(
            Some(&bob),
            "mutation { likePost(slug: \"older\") { likeCount } }",
            json!({}),
        )
        .await;
    }
    app.ok(
        Some(&bob),
        "mutation { addComment(slug: \"newer\", body: \"hi\") { id } }",
        json!({}),
    )
    .await;
    // Her own like notifies nobody.
    app.ok(
        Some(&alice),
        "mutation { likePost(slug: \"newer\") { likeCount } }",
        json!({}),
    )
    .await;

    let got = eventually(&app, Some(&alice), NOTIFICATIONS, json!({}), |d| {
        kinds(d).len() >= 3
    })
    .await;
    // Wait a little more: a duplicate would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = app
        .ok(Some(&alice), NOTIFICATIONS, json!({}))
        .await
        .max_by_len(got);
    let mut seen = kinds(&got);
    seen.sort();
    assert_eq!(seen, ["COMMENTED", "FOLLOWED", "LIKED"], "{got}");
    for edge in got["notifications"]["edges"].as_array().expect("edges") {
        assert_eq!(edge["node"]["actor"]["username"], "bob");
        assert_eq!(edge["node"]["read"], false);
    }

    // A like (3) outweighs a comment plus her own like (2 + 3 = 5)? No: older has 1 like (3 + 1),
    // newer 1 comment and 1 like (2 + 3 + 1); reading "older" twice adds views, not enough.
    let ranked = eventually(&app, None, TRENDING, json!({}), |d| {
        d["trending"]
            .as_array()
            .is_some_and(|l| l.len() == 2 && l.iter().any(|p| p["commentCount"] == 1))
    })
    .await;
    assert_eq!(trending_slugs(&ranked), ["newer", "older"], "{ranked}");
    // Two more likes on "older" (from new users) move it ahead.
    for name in ["carol", "dave"] {
        let (token, _) = app.register(name).await;
        app.ok(
            Some(&token),
            "mutation { likePost(slug: \"older\") { likeCount } }",
            json!({}),
        )
        .await;
    }
    let moved = eventually(&app, None, TRENDING, json!({}), |d| {
        trending_slugs(d).first().is_some_and(|s| s == "older")
    })
    .await;
    assert_eq!(trending_slugs(&moved), ["older", "newer"], "{moved}");

    // Bob follows alice, so her next post notifies him; he sees only his own notifications.
    app.create_post(&alice, "Fresh", &[]).await;
    let bobs = eventually(&app, Some(&bob), NOTIFICATIONS, json!({}), |d| {
        !kinds(d).is_empty()
    })
    .await;
    assert_eq!(kinds(&bobs), ["PUBLISHED"]);
    assert_eq!(
        bobs["notifications"]["edges"][0]["node"]["post"]["slug"],
        "fresh"
    );

    let marked = app
        .ok(
            Some(&alice),
            "mutation { markNotificationsRead }",
            json!({}),
        )
        .await;
    assert_eq!(
        marked["markNotificationsRead"], 5,
        "follow, like, comment and the two new likes"
    );
    let unread = app
        .ok(Some(&alice), NOTIFICATIONS, json!({ "u": true }))
        .await;
    assert!(kinds(&unread).is_empty());
    let anonymous = app.gql(None, NOTIFICATIONS, json!({})).await;
    assert_eq!(support::error_code(&anonymous), "UNAUTHENTICATED");
}

trait MaxByLen {
    fn max_by_len(self, other: Value) -> Value;
}

impl MaxByLen for Value {
    /// The response with more notifications (a later read must never show fewer).
    fn max_by_len(self, other: Value) -> Value {
        if kinds(&self).len() >= kinds(&other).len() {
            self
        } else {
            other
        }
    }
}

/// A graphql-transport-ws client, signed in with `token`, subscribed to notificationAdded.
async fn subscribe(app: &TestSystem, token: &str) -> ws::Socket {
    let mut socket = ws::signed_in(app, token).await;
    ws::subscribe(
        &mut socket,
        "1",
        "subscription { notificationAdded { kind actor { username } } }",
    )
    .await;
    socket
}

async fn a_subscriber_receives_its_own_notifications_and_no_one_elses(app: TestSystem) {
    let (alice, _) = app.register("alice").await;
    let (carol, _) = app.register("carol").await;
    let (bob, _) = app.register("bob").await;
    let mut alices = subscribe(&app, &alice).await;
    let mut carols = subscribe(&app, &carol).await;
    // The subscription is live once the server has opened its stream; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    app.ok(
        Some(&bob),
        "mutation { follow(username: \"alice\") { following } }",
        json!({}),
    )
    .await;
    let event = ws::next_json(&mut alices, Duration::from_secs(15))
        .await
        .expect("alice is notified");
    assert_eq!(event["type"], "next", "{event}");
    assert_eq!(
        event["payload"]["data"]["notificationAdded"],
        json!({ "kind": "FOLLOWED", "actor": { "username": "bob" } })
    );
    assert!(
        ws::next_json(&mut carols, Duration::from_millis(1500))
            .await
            .is_none(),
        "carol hears nothing of alice's"
    );

    // A bad token is refused at connection_init.
    let mut socket = ws::connect(&app, json!({ "Authorization": "Bearer forged" })).await;
    let refused = ws::next_json(&mut socket, Duration::from_secs(5)).await;
    assert!(
        refused
            .as_ref()
            .is_none_or(|v| v["type"] != "connection_ack"),
        "{refused:?}"
    );
}

async fn notification_count(app: &TestSystem, token: &str) -> usize {
    kinds(&app.ok(Some(token), NOTIFICATIONS, json!({})).await).len()
}

async fn metric(app: &TestSystem, service: Service, name: &str) -> f64 {
    app.metric_total(&format!("http://{}", app.addr(service)), name, "")
        .await
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn writes_succeed_while_the_bus_is_down_and_every_event_arrives_once_it_is_back() {
    let mut app = TestSystem::start_production_with_bus_proxy().await;
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "Mine", &[]).await;
    eventually(&app, None, TRENDING, json!({}), |d| {
        trending_slugs(d).len() == 1
    })
    .await;

    app.processes().bus_proxy.as_ref().expect("proxy").cut();
    let mut fans = Vec::new();
    for i in 0..5 {
        let (token, _) = app.register(&format!("fan{i}")).await;
        app.ok(
            Some(&token),
            "mutation { likePost(slug: \"mine\") { likeCount } }",
            json!({}),
        )
        .await;
        app.ok(
            Some(&token),
            "mutation { addComment(slug: \"mine\", body: \"!\") { id } }",
            json!({}),
        )
        .await;
        fans.push(token);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        notification_count(&app, &alice).await,
        0,
        "nothing can arrive while the bus is down"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&app, Service::LikeService, "oba_outbox_backlog").await < 5.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let backlog = metric(&app, Service::LikeService, "oba_outbox_backlog").await;
    assert!(
        backlog >= 5.0,
        "events wait in the outbox: backlog {backlog}"
    );

    app.processes().bus_proxy.as_ref().expect("proxy").restore();
    let got = eventually(&app, Some(&alice), NOTIFICATIONS, json!({}), |d| {
        kinds(d).len() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(kinds(&got).len(), 10, "5 likes + 5 comments, none lost");
    assert_eq!(
        notification_count(&app, &alice).await,
        10,
        "and none doubled"
    );
    let post = app
        .ok(
            None,
            "{ trending(first: 1) { likeCount commentCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        post["trending"][0],
        json!({ "likeCount": 5, "commentCount": 5 })
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, Service::LikeService, "oba_outbox_backlog").await > 0.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        metric(&app, Service::LikeService, "oba_outbox_backlog").await,
        0.0
    );
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_consumer_killed_mid_stream_loses_nothing_after_restart() {
    let mut app = TestSystem::start_production().await;
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "Popular", &[]).await;
    let mut fans = Vec::new();
    for i in 0..12 {
        fans.push(app.register(&format!("fan{i}")).await.0);
    }
    let likes = fans.iter().map(|t| {
        app.gql(
            Some(t),
            "mutation { likePost(slug: \"popular\") { likeCount } }",
            json!({}),
        )
    });
    let killing = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    let (results, ()) = tokio::join!(futures::future::join_all(likes), killing);
    app.processes()
        .kill_service(Service::NotificationService)
        .await;
    for body in results {
        assert!(body["errors"].is_null(), "{body}");
    }
    app.processes()
        .start_service(Service::NotificationService)
        .await;
    let got = eventually_within(
        // Deliveries in flight at the kill come again after the ack wait.
        oba_kit::bus::ACK_WAIT * 3,
        &app,
        Some(&alice),
        NOTIFICATIONS,
        json!({}),
        |d| kinds(d).len() >= 12,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(kinds(&got).len(), 12, "every like once");
    assert_eq!(notification_count(&app, &alice).await, 12, "none doubled");
}

/// The next `event_type` envelope published on `events` (an embedded system's bus).
async fn published(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>,
    event_type: &str,
) -> oba_proto::event::v1::Envelope {
    use prost::Message as _;
    loop {
        let payload = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap_or_else(|_| panic!("{event_type} published"))
            .expect("the bus is open");
        let envelope = oba_proto::event::v1::Envelope::decode(payload).expect("envelope");
        if envelope.r#type == event_type {
            return envelope;
        }
    }
}

#[tokio::test]
async fn an_event_carries_the_trace_of_the_request_that_caused_it() {
    let app = TestSystem::start().await;
    let mut events = app.listen("oba.>").expect("an embedded bus");
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "Traced", &[]).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .http
        .post(format!("{}/graphql", app.url))
        .bearer_auth(&alice)
        .header("traceparent", trace)
        .json(&json!({ "query": "mutation { likePost(slug: \"traced\") { likeCount } }" }))
        .send()
        .await
        .expect("sent");
    let body: Value = response.json().await.expect("JSON");
    assert!(body["errors"].is_null(), "{body}");

    // A request without one gets a trace of its own.
    let envelope = published(&mut events, "post.created").await;
    let own = envelope.trace_context.get("traceparent").expect("a trace");
    assert!(
        oba_kit::trace::parse(own).is_some() && own != trace,
        "{own}"
    );

    // The event published for the like, as like-service wrote it with the like.
    let liked = published(&mut events, "post.liked").await;
    assert_eq!(
        liked.trace_context.get("traceparent").map(String::as_str),
        Some(trace)
    );
}
