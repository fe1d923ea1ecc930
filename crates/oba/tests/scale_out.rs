//! Replicas: a second notification-service and a second edge beside the first ones, in
//! production mode (processes on PostgreSQL and NATS JetStream). A live watcher is served
//! whichever replica projected its notifications, and any edge serves any request.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

mod support;

use std::time::Duration;

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
