//! Replicas beside the first ones, in production mode (processes on PostgreSQL and NATS
//! JetStream): reads spread over two post-service replicas and skip a dead one; a live
//! watcher is served whichever notification-service replica projected its notifications;
//! any edge serves any request.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;

use oba::Service;
use serde_json::{Value, json};
use support::{TestSystem, ws};

/// A GraphQL request to the edge at `base`.
async fn gql_at(app: &TestSystem, base: &str, token: Option<&str>, query: &str) -> Value {
    let mut request = app
        .http
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: Value = request
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert!(body.get("errors").is_none(), "{body}");
    body
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_watcher_on_one_edge_gets_every_notification_made_through_another() {
    let mut app = TestSystem::start_production().await;
    let (alice, _) = app.register("alice").await;
    // A second notification-service replica (sharing the durable consumer: events are split
    // between the two) and a second edge that watches through it.
    let notifications_2 = app
        .processes()
        .start_replica(Service::NotificationService, &[])
        .await;
    let edge_2 = app
        .processes()
        .start_replica(
            Service::BlogAggregator,
            &[(
                "OBA_NOTIFICATION_SERVICE_URL",
                format!("http://{notifications_2}"),
            )],
        )
        .await;
    let edge_2 = format!("http://{edge_2}");

    // Alice watches on edge 1 (through notification-service replica 1).
    let mut socket = ws::signed_in(&app, &alice).await;
    ws::subscribe(
        &mut socket,
        "1",
        "subscription { notificationAdded { kind actor { username } } }",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Twelve users follow her through edge 2, one after another.
    const FOLLOWERS: usize = 12;
    for i in 0..FOLLOWERS {
        let name = format!("fan{i}");
        let registered = gql_at(
            &app,
            &edge_2,
            None,
            &format!(
                "mutation {{ register(input: {{username: \"{name}\", email: \"{name}@example.com\", password: \"password-{name}\"}}) {{ token }} }}"
            ),
        )
        .await;
        let token = registered["data"]["register"]["token"]
            .as_str()
            .expect("token")
            .to_owned();
        gql_at(
            &app,
            &edge_2,
            Some(&token),
            "mutation { follow(username: \"alice\") { following } }",
        )
        .await;
    }

    let mut heard = Vec::new();
    while heard.len() < FOLLOWERS {
        let event = ws::next_json(&mut socket, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("only {} of {FOLLOWERS} arrived: {heard:?}", heard.len()));
        assert_eq!(event["type"], "next", "{event}");
        let notification = &event["payload"]["data"]["notificationAdded"];
        assert_eq!(notification["kind"], "FOLLOWED");
        heard.push(
            notification["actor"]["username"]
                .as_str()
                .expect("username")
                .to_owned(),
        );
    }
    heard.sort();
    let mut expected: Vec<String> = (0..FOLLOWERS).map(|i| format!("fan{i}")).collect();
    expected.sort();
    assert_eq!(heard, expected, "every notification once");
    assert!(
        ws::next_json(&mut socket, Duration::from_secs(2))
            .await
            .is_none(),
        "no notification twice"
    );
    // Both edges list the same notifications.
    for base in [app.url.clone(), edge_2] {
        let list = gql_at(
            &app,
            &base,
            Some(&alice),
            "{ notifications(first: 50) { nodes { id } } }",
        )
        .await;
        assert_eq!(
            list["data"]["notifications"]["nodes"]
                .as_array()
                .map(Vec::len),
            Some(FOLLOWERS)
        );
    }
}

/// ListPosts calls the post-service replica at `addr` has served.
async fn list_calls(app: &TestSystem, addr: SocketAddr) -> u64 {
    let text = app.metrics(&format!("http://{addr}")).await;
    text.lines()
        .filter(|l| l.starts_with("oba_grpc_requests_total{") && l.contains("/ListPosts\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `n` list reads through the edge at `base`, 8 at a time; how many did not answer 200.
async fn read_lists(app: &TestSystem, base: &str, n: usize) -> usize {
    futures::stream::iter(0..n)
        .map(|_| {
            let request = app.http.get(format!("{base}/api/articles?limit=5")).send();
            async move { request.await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(8)
        .filter(|status| std::future::ready(*status != 200))
        .count()
        .await
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn reads_spread_over_replicas_and_skip_a_dead_one() {
    let mut app = TestSystem::start_production().await;
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "Spread", &[]).await;
    let first = app.addr(Service::PostService);
    let second = app
        .processes()
        .start_replica(
            Service::PostService,
            &[("OBA_LISTEN_ADDR", "127.0.0.2:0".to_owned())],
        )
        .await;
    // An edge that knows post-service by both addresses (as a headless Service's name
    // resolves to every pod).
    let edge = app
        .processes()
        .start_replica(
            Service::BlogAggregator,
            &[("OBA_POST_SERVICE_URL", format!("http://{first},{second}"))],
        )
        .await;
    let edge = format!("http://{edge}");
    let settle = oba_kit::peer::RESOLVE_INTERVAL * 2 + Duration::from_secs(1);
    tokio::time::sleep(settle).await;

    let before = (
        list_calls(&app, first).await,
        list_calls(&app, second).await,
    );
    assert_eq!(read_lists(&app, &edge, 1000).await, 0);
    let served = (
        list_calls(&app, first).await - before.0,
        list_calls(&app, second).await - before.1,
    );
    let total = served.0 + served.1;
    assert!(total >= 1000, "{served:?}");
    assert!(
        served.0 * 10 >= total * 3 && served.1 * 10 >= total * 3,
        "each replica serves at least 30 %: {served:?}"
    );

    // One replica dies: once it is ejected, no read fails.
    app.processes().kill_replica(second).await;
    tokio::time::sleep(settle).await;
    assert_eq!(read_lists(&app, &edge, 200).await, 0);

    // Back on its address: traffic returns to it within the re-resolve interval.
    let restarted = app
        .processes()
        .start_replica(
            Service::PostService,
            &[("OBA_LISTEN_ADDR", second.to_string())],
        )
        .await;
    assert_eq!(restarted, second);
    tokio::time::sleep(settle).await;
    assert_eq!(read_lists(&app, &edge, 300).await, 0);
    assert!(
        list_calls(&app, second).await >= 60,
        "the restarted replica gets its share again"
    );
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn sign_in_limit_is_shared_by_user_service_replicas() {
    let mut app = TestSystem::start_production().await;
    app.register("alice").await;
    // Edge 2 signs in through a second user-service replica only; edge 1 through the first.
    let users_2 = app
        .processes()
        .start_replica(Service::UserService, &[])
        .await;
    let edge_2 = app
        .processes()
        .start_replica(
            Service::BlogAggregator,
            &[("OBA_USER_SERVICE_URL", format!("http://{users_2}"))],
        )
        .await;
    let edges = [app.url.clone(), format!("http://{edge_2}")];
    let mut statuses = Vec::new();
    // Alternating replicas: a count per process would allow 10 on each, 20 in all.
    for i in 0..14 {
        let response = app
            .http
            .post(format!("{}/api/users/login", edges[i % 2]))
            .json(&json!({ "user": { "email": "alice@example.com", "password": format!("wrong-{i}") } }))
            .send()
            .await
            .expect("sent");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        10,
        "10 attempts per account and minute, whichever replica counts them: {statuses:?}"
    );
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
}
