//! The edge's read model (post cards kept in memory, fed by events): a writer reads its own
//! write at once, another edge replica sees every kind of change through the events, a
//! restarted edge starts from the sources, and an edge that cannot hear the bus stops
//! serving from memory.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

mod support;

use std::time::{Duration, Instant};

use oba::Service;
use serde_json::{Value, json};
use support::TestSystem;

const CARD: &str = "query($s: String!) {
    post(slug: $s) { title description likeCount commentCount author { bio } }
}";
const LIST: &str = "{ posts(first: 20) { edges { node { slug } } } }";

/// A GraphQL document against the edge at `base`; its `data`, or the whole body on errors.
async fn gql_at(
    app: &TestSystem,
    base: &str,
    token: Option<&str>,
    query: &str,
    vars: Value,
) -> Value {
    let mut request = app
        .http
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query, "variables": vars }));
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
    if body.get("errors").is_some() {
        return body;
    }
    body["data"].clone()
}

/// Lookups the edge at `base` answered from its read model so far.
async fn model_hits(app: &TestSystem, base: &str) -> u64 {
    app.metrics(base)
        .await
        .lines()
        .filter(|l| l.starts_with("oba_read_model_lookups_total") && l.contains("outcome=\"hit\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Reads the card of `slug` anonymously at `base` until the model answers from memory.
async fn until_served_from_memory(app: &TestSystem, base: &str, slug: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let before = model_hits(app, base).await;
        gql_at(app, base, None, CARD, json!({ "s": slug })).await;
        if model_hits(app, base).await > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the edge at {base} never served from its read model"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long a change took to show, and in how many reads.
#[derive(Debug, Clone, Copy)]
struct Shown {
    after: Duration,
    reads: u32,
}

/// Reads anonymously at `base` until `fresh` holds of the data.
async fn until_fresh(
    app: &TestSystem,
    base: &str,
    query: &str,
    vars: Value,
    fresh: impl Fn(&Value) -> bool,
) -> Shown {
    let start = Instant::now();
    let mut reads = 0;
    loop {
        let data = gql_at(app, base, None, query, vars.clone()).await;
        reads += 1;
        if fresh(&data) {
            return Shown {
                after: start.elapsed(),
                reads,
            };
        }
        // Far above the event's delivery time; only an event that never arrived gets here
        // (entries expire after OBA_READ_MODEL_MAX_AGE_MS, 30 s by default).
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still stale at {base}: {data}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn slugs(data: &Value) -> Vec<String> {
    data["posts"]["edges"]
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .filter_map(|e| e["node"]["slug"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every kind of change, made through the edge at `writer` by alice (author of `slug`) and
/// bob, then read anonymously at `reader`, which had the old facts in memory. Returns how
/// how each showed.
async fn each_kind_of_change(
    app: &TestSystem,
    writer: &str,
    reader: &str,
    alice: &str,
    bob: &str,
    slug: &str,
) -> Vec<(&'static str, Shown)> {
    let mut seen = Vec::new();
    let card = json!({ "s": slug });
    until_served_from_memory(app, reader, slug).await;
    gql_at(app, reader, None, LIST, json!({})).await;

    let created = gql_at(
        app,
        writer,
        Some(alice),
        "mutation { createPost(input: {title: \"Second thoughts\", description: \"d\", body: \"b\"}) { slug } }",
        json!({}),
    )
    .await;
    let second = created["createPost"]["slug"]
        .as_str()
        .expect("slug")
        .to_owned();
    let took = until_fresh(app, reader, LIST, json!({}), |d| slugs(d).contains(&second)).await;
    seen.push(("post.created", took));

    gql_at(app, writer, Some(alice), "mutation($s: String!) { updatePost(slug: $s, input: {description: \"revised\"}) { slug } }", card.clone()).await;
    let took = until_fresh(app, reader, CARD, card.clone(), |d| {
        d["post"]["description"] == "revised"
    })
    .await;
    seen.push(("post.updated", took));

    gql_at(
        app,
        writer,
        Some(bob),
        "mutation($s: String!) { likePost(slug: $s) { slug } }",
        card.clone(),
    )
    .await;
    let took = until_fresh(app, reader, CARD, card.clone(), |d| {
        d["post"]["likeCount"] == 1
    })
    .await;
    seen.push(("post.liked", took));

    gql_at(
        app,
        writer,
        Some(bob),
        "mutation($s: String!) { unlikePost(slug: $s) { slug } }",
        card.clone(),
    )
    .await;
    let took = until_fresh(app, reader, CARD, card.clone(), |d| {
        d["post"]["likeCount"] == 0
    })
    .await;
    seen.push(("post.unliked", took));

    gql_at(
        app,
        writer,
        Some(bob),
        "mutation($s: String!) { addComment(slug: $s, body: \"hi\") { id } }",
        card.clone(),
    )
    .await;
    let took = until_fresh(app, reader, CARD, card.clone(), |d| {
        d["post"]["commentCount"] == 1
    })
    .await;
    seen.push(("comment.added", took));

    gql_at(
        app,
        writer,
        Some(alice),
        "mutation { updateMe(input: {bio: \"writes here\"}) { token } }",
        json!({}),
    )
    .await;
    let took = until_fresh(app, reader, CARD, card.clone(), |d| {
        d["post"]["author"]["bio"] == "writes here"
    })
    .await;
    seen.push(("user.updated", took));

    let second_card = json!({ "s": second });
    gql_at(app, reader, None, CARD, second_card.clone()).await;
    gql_at(
        app,
        writer,
        Some(alice),
        "mutation($s: String!) { deletePost(slug: $s) }",
        second_card.clone(),
    )
    .await;
    let took = until_fresh(app, reader, LIST, json!({}), |d| {
        !slugs(d).contains(&second)
    })
    .await;
    seen.push(("post.deleted", took));
    let gone = gql_at(app, reader, None, CARD, second_card).await;
    assert!(
        gone.get("errors").is_some(),
        "a deleted post is still shown: {gone}"
    );
    seen
}

#[tokio::test]
async fn a_writer_reads_each_of_its_writes_at_once() {
    let app = TestSystem::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let slug = app.create_post(&alice, "First light", &["sky"]).await["slug"]
        .as_str()
        .expect("slug")
        .to_owned();
    let seen = each_kind_of_change(&app, &app.url, &app.url, &alice, &bob, &slug).await;
    // The edge that served a write forgot what it changed before answering: the very next
    // read shows it, whenever the event comes.
    for (event, shown) in seen {
        assert_eq!(shown.reads, 1, "{event} showed only after {shown:?}");
    }
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn another_edge_sees_every_kind_of_change_through_the_events() {
    let mut app = TestSystem::start_production().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let slug = app.create_post(&alice, "First light", &["sky"]).await["slug"]
        .as_str()
        .expect("slug")
        .to_owned();
    let reader = app
        .processes()
        .start_replica(Service::BlogAggregator, &[])
        .await;
    let reader = format!("http://{reader}");
    let seen = each_kind_of_change(&app, &app.url.clone(), &reader, &alice, &bob, &slug).await;
    for (event, shown) in &seen {
        eprintln!(
            "{event}: seen by the other edge after {:?} ({} reads)",
            shown.after, shown.reads
        );
    }

    // A restarted edge starts empty and fills from the sources: it shows what changed while
    // it was down.
    let addr = reader.trim_start_matches("http://").parse().expect("addr");
    app.processes().kill_replica(addr).await;
    let card = json!({ "s": slug });
    gql_at(&app, &app.url, Some(&alice), "mutation($s: String!) { updatePost(slug: $s, input: {description: \"while it was down\"}) { slug } }", card.clone()).await;
    let restarted = app
        .processes()
        .start_replica(Service::BlogAggregator, &[])
        .await;
    let restarted = format!("http://{restarted}");
    until_served_from_memory(&app, &restarted, &slug).await;
    let data = gql_at(&app, &restarted, None, CARD, card).await;
    assert_eq!(data["post"]["description"], "while it was down", "{data}");
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn an_edge_that_cannot_hear_the_bus_reads_from_the_services() {
    let mut app = TestSystem::start_production_with_bus_proxy().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let slug = app.create_post(&alice, "Quiet line", &[]).await["slug"]
        .as_str()
        .expect("slug")
        .to_owned();
    let card = json!({ "s": slug });
    let edge = app.url.clone();
    until_served_from_memory(&app, &edge, &slug).await;

    // The edge (and every service) reaches NATS through the proxy: cut, the edge stops
    // serving from memory, so a like made now shows although its event cannot travel.
    app.processes().bus_proxy.as_ref().expect("proxy").cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    gql_at(
        &app,
        &edge,
        Some(&bob),
        "mutation($s: String!) { likePost(slug: $s) { slug } }",
        card.clone(),
    )
    .await;
    let before = model_hits(&app, &edge).await;
    let data = gql_at(&app, &edge, None, CARD, card.clone()).await;
    assert_eq!(data["post"]["likeCount"], 1, "{data}");
    assert_eq!(
        model_hits(&app, &edge).await,
        before,
        "served from memory while deaf"
    );

    // Back, it serves from memory again once it has settled.
    app.processes().bus_proxy.as_ref().expect("proxy").restore();
    until_served_from_memory(&app, &edge, &slug).await;
    let data = gql_at(&app, &edge, None, CARD, card).await;
    assert_eq!(data["post"]["likeCount"], 1, "{data}");
}
