//! Replicas beside the first ones, in production mode (processes on PostgreSQL and NATS
//! JetStream): reads spread over two replicas found through DNS and skip a dead one, of every
//! service in turn; writes through two relays per service publish and apply each event once;
//! a live watcher is served whichever notification-service replica projected its
//! notifications; any edge serves any request.
//!
//! The balanced peer name is resolved by the system resolver, as in Kubernetes (a headless
//! Service's name has an address per pod): `replicas.oba.test` must resolve to 127.0.0.1 and
//! 127.0.0.2, from `/etc/hosts` (`.ci/run` adds the two lines).

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;

use oba::Service;
use serde_json::{Value, json};
use support::{TestSystem, count, ws};

/// Each test here runs a dozen processes; run at once on two cores they would starve each
/// other's health checks and budgets. One at a time, then.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A GraphQL request to the edge at `base`, which must succeed.
async fn gql_at(app: &TestSystem, base: &str, token: Option<&str>, query: &str) -> Value {
    let body = app.gql_at(base, token, query, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    body
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_watcher_on_one_edge_gets_every_notification_made_through_another() {
    let _one = ONE_AT_A_TIME.lock().await;
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

/// The name every second replica shares with the first, as a headless Service's name does.
const REPLICAS_HOST: &str = "replicas.oba.test";

/// Fails with the fix when the test name does not resolve to both loopback addresses.
async fn assert_replicas_host_resolves() {
    let found: BTreeSet<IpAddr> = tokio::net::lookup_host((REPLICAS_HOST, 80))
        .await
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default();
    let wanted: BTreeSet<IpAddr> = ["127.0.0.1", "127.0.0.2"]
        .iter()
        .map(|a| a.parse().expect("ip"))
        .collect();
    assert_eq!(
        found, wanted,
        "{REPLICAS_HOST} must resolve to 127.0.0.1 and 127.0.0.2: add \
         `127.0.0.1 {REPLICAS_HOST}` and `127.0.0.2 {REPLICAS_HOST}` to /etc/hosts"
    );
}

/// The peer URL naming both replicas of `service` (the first on 127.0.0.1, the second on
/// 127.0.0.2, same port).
fn balanced_url(app: &TestSystem, service: Service) -> String {
    format!("http://{REPLICAS_HOST}:{}", app.addr(service).port())
}

/// Starts a second replica of every service but the edge on 127.0.0.2 (the first's port),
/// then an edge that reaches every service by the shared name (and asks them for every read);
/// returns the edge's URL and
/// the second replicas' addresses.
async fn second_replicas_and_a_balanced_edge(
    app: &mut TestSystem,
) -> (String, BTreeMap<Service, SocketAddr>) {
    assert_replicas_host_resolves().await;
    let backends: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| *s != Service::BlogAggregator)
        .collect();
    let mut seconds = BTreeMap::new();
    for service in &backends {
        let listen = SocketAddr::new([127, 0, 0, 2].into(), app.addr(*service).port());
        let post_service = balanced_url(app, Service::PostService);
        let addr = app
            .processes()
            .start_replica(
                *service,
                &[
                    ("OBA_LISTEN_ADDR", listen.to_string()),
                    ("OBA_POST_SERVICE_URL", post_service),
                ],
            )
            .await;
        seconds.insert(*service, addr);
    }
    let mut peers: Vec<(&str, String)> = backends
        .iter()
        .filter_map(|s| Some((s.url_key()?, balanced_url(app, *s))))
        .collect();
    // The calls spread over replicas are what is looked at: no read model to answer them.
    peers.push(("OBA_READ_MODEL_MAX_AGE_MS", "0".to_owned()));
    let edge = app
        .processes()
        .start_replica(Service::BlogAggregator, &peers)
        .await;
    tokio::time::sleep(SETTLE).await;
    (format!("http://{edge}"), seconds)
}

/// Long enough for a re-resolve and a health check of every address to have happened.
const SETTLE: Duration = Duration::from_secs(5);

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
async fn reads_spread_over_replicas_found_by_name_and_skip_a_dead_one() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut app = TestSystem::start_production().await;
    let (alice, _) = app.register("alice").await;
    app.create_post(&alice, "Spread", &[]).await;
    assert_replicas_host_resolves().await;
    let first = app.addr(Service::PostService);
    let second = app
        .processes()
        .start_replica(
            Service::PostService,
            &[("OBA_LISTEN_ADDR", format!("127.0.0.2:{}", first.port()))],
        )
        .await;
    // An edge that knows post-service by a name resolving to both replicas, and asks it for
    // every page (its read model would answer most of them itself).
    let post_service = balanced_url(&app, Service::PostService);
    let edge = app
        .processes()
        .start_replica(
            Service::BlogAggregator,
            &[
                ("OBA_POST_SERVICE_URL", post_service),
                ("OBA_READ_MODEL_MAX_AGE_MS", "0".to_owned()),
            ],
        )
        .await;
    let edge = format!("http://{edge}");
    let settle = SETTLE;
    tokio::time::sleep(settle).await;

    let before = (
        calls_served(&app, first, Some("ListPosts")).await,
        calls_served(&app, second, Some("ListPosts")).await,
    );
    let failed = read_lists(&app, &edge, 1000).await;
    assert_eq!(failed, 0, "{}", app.log(Service::BlogAggregator));
    let served = (
        calls_served(&app, first, Some("ListPosts")).await - before.0,
        calls_served(&app, second, Some("ListPosts")).await - before.1,
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
        calls_served(&app, second, Some("ListPosts")).await >= 60,
        "the restarted replica gets its share again"
    );
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn sign_in_limit_is_shared_by_user_service_replicas() {
    let _one = ONE_AT_A_TIME.lock().await;
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

/// A page that needs every service but the edge: posts and authors, like and comment
/// counts, trending, the reader's notifications.
const EVERY_SERVICE: &str = "{ posts(first: 5) { edges { node { likeCount commentCount author { username } } } } trending(first: 3) { slug } notifications(first: 5) { nodes { id } } }";

/// `n` reads of [`EVERY_SERVICE`] through the edge at `base`, 4 at a time: the failures
/// (an error or a missing, degraded fact).
async fn failed_reads(http: &reqwest::Client, base: &str, token: &str, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|_| {
            let request = http
                .post(format!("{base}/graphql"))
                .bearer_auth(token)
                .json(&json!({ "query": EVERY_SERVICE }))
                .send();
            async move {
                match request.await {
                    Ok(response) => match response.json::<Value>().await {
                        Ok(body) if body.get("errors").is_none() => None,
                        Ok(body) => Some(body.to_string()),
                        Err(e) => Some(e.to_string()),
                    },
                    Err(e) => Some(e.to_string()),
                }
            }
        })
        .buffer_unordered(4)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// gRPC calls of `method` (any but health checks when None) the replica at `addr` has
/// served since it started.
async fn calls_served(app: &TestSystem, addr: SocketAddr, method: Option<&str>) -> u64 {
    let text = app.metrics(&format!("http://{addr}")).await;
    text.lines()
        .filter(|l| l.starts_with("oba_grpc_requests_total{"))
        .filter(|l| match method {
            Some(method) => l.contains(&format!("/{method}\"")),
            None => !l.contains("Health"),
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn every_service_loses_a_replica_under_load_and_gets_it_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut app = TestSystem::start_production().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let post = app.create_post(&alice, "Replicated", &[]).await;
    let slug = post["slug"].as_str().expect("slug").to_owned();
    app.ok(
        Some(&bob),
        &format!("mutation {{ likePost(slug: \"{slug}\") {{ likeCount }} }}"),
        json!({}),
    )
    .await;
    app.ok(
        Some(&bob),
        "mutation { follow(username: \"alice\") { following } }",
        json!({}),
    )
    .await;
    let (edge, seconds) = second_replicas_and_a_balanced_edge(&mut app).await;
    let none: Vec<String> = Vec::new();
    assert_eq!(failed_reads(&app.http, &edge, &alice, 100).await, none);

    // Readers keep reading throughout; what they see while a replica is being ejected is
    // not judged, what everyone sees after is.
    let load_stop = oba_kit::shutdown::CancellationToken::new();
    let load = tokio::spawn({
        let (http, edge, alice, stop) = (
            app.http.clone(),
            edge.clone(),
            alice.clone(),
            load_stop.clone(),
        );
        async move {
            while !stop.is_cancelled() {
                failed_reads(&http, &edge, &alice, 16).await;
            }
        }
    });
    for (service, second) in seconds {
        app.processes().kill_replica(second).await;
        tokio::time::sleep(SETTLE).await;
        assert_eq!(
            failed_reads(&app.http, &edge, &alice, 100).await,
            none,
            "a {} replica is gone",
            service.name()
        );
        let post_service = balanced_url(&app, Service::PostService);
        let restarted = app
            .processes()
            .start_replica(
                service,
                &[
                    ("OBA_LISTEN_ADDR", second.to_string()),
                    ("OBA_POST_SERVICE_URL", post_service),
                ],
            )
            .await;
        assert_eq!(restarted, second);
        tokio::time::sleep(SETTLE).await;
        let before = app.metrics(&edge).await;
        let failed = failed_reads(&app.http, &edge, &alice, 100).await;
        if !failed.is_empty() {
            let edge_metrics = format!("{before}\n---- after\n{}", app.metrics(&edge).await);
            let replica_metrics = app.metrics(&format!("http://{restarted}")).await;
            panic!(
                "{} is back, yet {} of 100 reads failed, first {}\nedge: {}\nreplica: {}\nlog: {}",
                service.name(),
                failed.len(),
                failed[0],
                edge_metrics
                    .lines()
                    .filter(|l| l.starts_with("oba_peer"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                replica_metrics
                    .lines()
                    .filter(|l| l.starts_with("oba_grpc"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                app.log(Service::BlogAggregator)
            );
        }
        assert!(
            calls_served(&app, restarted, None).await > 0,
            "traffic returns to the restarted {} replica",
            service.name()
        );
    }
    load_stop.cancel();
    load.await.expect("load task");
    // A dead replica is ejected on the first call that cannot reach it, before failures
    // pile up: no service's breaker opened although one replica of each died.
    let metrics = app.metrics(&edge).await;
    let paused: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("oba_peer_call_failures_total") && l.contains("BreakerOpen"))
        .collect();
    assert!(paused.is_empty(), "{paused:?}");
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn writes_through_two_replicas_of_everything_are_published_and_applied_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut app = TestSystem::start_production().await;
    let (edge, seconds) = second_replicas_and_a_balanced_edge(&mut app).await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let (carol, _) = app.register("carol").await;
    let mut slugs = Vec::new();
    for i in 0..10 {
        let post = app.create_post(&alice, &format!("Post {i}"), &[]).await;
        slugs.push(post["slug"].as_str().expect("slug").to_owned());
    }

    // 1,000 writes through the balanced edge, each one an event: 50 rounds of the 20
    // (reader, post) pairs, 8 at a time; by round a comment, a like, an unlike, a comment...
    let mut failures = Vec::new();
    for round in 0..50 {
        let writes: Vec<(String, String)> = (0..20)
            .map(|pair| {
                let token = if pair % 2 == 0 { &bob } else { &carol };
                let slug = &slugs[pair / 2];
                let mutation = match round % 3 {
                    0 => format!(
                        "mutation {{ addComment(slug: \"{slug}\", body: \"round {round}\") {{ id }} }}"
                    ),
                    1 => format!("mutation {{ likePost(slug: \"{slug}\") {{ slug }} }}"),
                    _ => format!("mutation {{ unlikePost(slug: \"{slug}\") {{ slug }} }}"),
                };
                (token.clone(), mutation)
            })
            .collect();
        let round_failures: Vec<String> = futures::stream::iter(writes)
            .map(|(token, mutation)| {
                let request = app
                    .http
                    .post(format!("{edge}/graphql"))
                    .bearer_auth(token)
                    .json(&json!({ "query": mutation }))
                    .send();
                async move {
                    let body: Value = match request.await {
                        Ok(response) => response.json().await.unwrap_or_default(),
                        Err(e) => return Some(e.to_string()),
                    };
                    body.get("errors").map(|e| e.to_string())
                }
            })
            .buffer_unordered(8)
            .filter_map(std::future::ready)
            .collect()
            .await;
        failures.extend(round_failures);
    }
    assert!(failures.is_empty(), "{failures:?}");

    // The publishers (rank- and notification-service only consume), both replicas of each.
    let publishers = [
        Service::UserService,
        Service::PostService,
        Service::CommentService,
        Service::LikeService,
    ];
    let databases: Vec<String> = publishers
        .into_iter()
        .map(|s| app.database_url(s))
        .collect();
    let relays: Vec<String> = publishers
        .iter()
        .flat_map(|s| [app.addr(*s), seconds[s]])
        .map(|addr| format!("http://{addr}"))
        .collect();
    let stream = app.processes().stream().to_owned();
    // The outboxes empty: a row leaves in the transaction that published it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut pending = 0;
        for url in &databases {
            pending += count(url, "SELECT count(*) FROM outbox").await;
        }
        if pending == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pending} unpublished"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every event on the stream, unpacked as consumers get them: each row's event once, and
    // as many as the relays published.
    let bus = oba_kit::bus::NatsBus::connect(
        &oba_kit::config::Setting::new(
            "OBA_BUS_URL",
            std::env::var("OBA_TEST_NATS_URL").expect("nats"),
        ),
        &stream,
    )
    .await
    .expect("bus");
    let mut deliveries =
        oba_kit::bus::EventBus::subscribe(&bus, "scale-out-audit", vec![format!("{stream}.>")]);
    let mut ids = Vec::new();
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(3), deliveries.recv()).await
    {
        let envelope =
            <oba_proto::event::v1::Envelope as prost::Message>::decode(delivery.payload.clone())
                .expect("an envelope");
        ids.push(envelope.id);
        delivery.ack().await.expect("ack");
    }
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "each row published once");
    let mut published = 0.0;
    for relay in &relays {
        published += app
            .metric_total(relay, "oba_events_published_total", "")
            .await;
    }
    assert_eq!(
        published,
        ids.len() as f64,
        "every event published is on the stream"
    );
    assert!(
        published >= 1000.0,
        "{published} events for 1,000 writes and the set-up"
    );

    // Applied once: rank-service's counts equal the sources' (a redelivered event counted
    // twice would exceed them).
    let likes_db = app.database_url(Service::LikeService);
    let comments_db = app.database_url(Service::CommentService);
    let rank_db = app.database_url(Service::RankService);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let likes = count(&likes_db, "SELECT count(*) FROM likes").await;
        let comments = count(&comments_db, "SELECT count(*) FROM comments").await;
        let ranked = (
            count(
                &rank_db,
                "SELECT COALESCE(SUM(likes), 0)::bigint FROM rank_posts",
            )
            .await,
            count(
                &rank_db,
                "SELECT COALESCE(SUM(comments), 0)::bigint FROM rank_posts",
            )
            .await,
        );
        if ranked == (likes, comments) {
            // 17 comment rounds; 17 like and 16 unlike rounds leave every pair liked.
            assert_eq!((likes, comments), (20, 340), "every write applied once");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rank-service counts {ranked:?}, sources {:?}",
            (likes, comments)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
