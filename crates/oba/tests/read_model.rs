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
    post(slug: $s) { title description likeCount likedByMe commentCount author { bio following } }
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
    let body = app.gql_at(base, token, query, vars).await;
    if body.get("errors").is_some() {
        return body;
    }
    body["data"].clone()
}

/// Alice and bob signed up, and alice's post titled `title`: their tokens and its slug.
async fn alice_bob_and_a_post(app: &TestSystem, title: &str) -> (String, String, String) {
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let slug = app.create_post(&alice, title, &["sky"]).await["slug"]
        .as_str()
        .expect("slug")
        .to_owned();
    (alice, bob, slug)
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

/// Reads at `base` (as `token`'s holder, or anonymously) until `fresh` holds of the data.
async fn until_fresh(
    app: &TestSystem,
    base: &str,
    token: Option<&str>,
    query: &str,
    vars: Value,
    fresh: impl Fn(&Value) -> bool,
) -> Shown {
    until_read_fresh(
        base,
        || gql_at(app, base, token, query, vars.clone()),
        fresh,
    )
    .await
}

/// A REST GET of `path` (under `/api`) at `base`, anonymous; its JSON body.
async fn rest_at(app: &TestSystem, base: &str, path: &str) -> Value {
    let response = app
        .http
        .get(format!("{base}/api{path}"))
        .send()
        .await
        .expect("sent");
    response.json().await.expect("JSON")
}

/// Reads with `read` until `fresh` holds of what it returns.
async fn until_read_fresh<F: std::future::Future<Output = Value>>(
    base: &str,
    read: impl Fn() -> F,
    fresh: impl Fn(&Value) -> bool,
) -> Shown {
    let start = Instant::now();
    let mut reads = 0;
    loop {
        let data = read().await;
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

/// A change: its event, who writes it (and how), who reads it, and when the read is fresh.
type Change<'a> = (
    &'static str,
    Option<&'a str>,
    &'static str,
    Option<&'a str>,
    Box<dyn Fn(&Value) -> bool>,
);

/// Every kind of change, made through the edge at `writer` by alice (author of `slug`) and
/// bob, then read at `reader`, which had the old facts in memory: anonymously, and as bob
/// for his own likes and follows. Returns how each showed.
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
    let post = |d: &Value, field: &str| d["post"][field].clone();
    let author = |d: &Value, field: &str| d["post"]["author"][field].clone();
    let comments_path = format!("/articles/{slug}/comments");
    until_served_from_memory(app, reader, slug).await;
    gql_at(app, reader, None, LIST, json!({})).await;
    gql_at(app, reader, Some(bob), CARD, card.clone()).await;
    for path in [comments_path.as_str(), "/tags", "/profiles/alice"] {
        rest_at(app, reader, path).await;
    }

    let created = gql_at(
        app,
        writer,
        Some(alice),
        "mutation { createPost(input: {title: \"Second thoughts\", description: \"d\", body: \"b\", tags: [\"fresh\"]}) { slug } }",
        json!({}),
    )
    .await;
    let second = created["createPost"]["slug"]
        .as_str()
        .expect("slug")
        .to_owned();
    let shown = until_fresh(app, reader, None, LIST, json!({}), |d| {
        slugs(d).contains(&second)
    })
    .await;
    seen.push(("post.created", shown));
    let shown = until_read_fresh(
        reader,
        || rest_at(app, reader, "/tags"),
        |d| {
            d["tags"]
                .as_array()
                .is_some_and(|tags| tags.contains(&json!("fresh")))
        },
    )
    .await;
    seen.push(("post.created, in the tag list", shown));

    let changes: [Change<'_>; 8] = [
        (
            "post.updated",
            Some(alice),
            "mutation($s: String!) { updatePost(slug: $s, input: {description: \"revised\"}) { slug } }",
            None,
            Box::new(move |d| post(d, "description") == "revised"),
        ),
        (
            "post.liked",
            Some(bob),
            "mutation($s: String!) { likePost(slug: $s) { slug } }",
            None,
            Box::new(move |d| post(d, "likeCount") == 1),
        ),
        (
            "post.liked, as the viewer's likes",
            None,
            "",
            Some(bob),
            Box::new(move |d| post(d, "likedByMe") == true),
        ),
        (
            "user.followed",
            Some(bob),
            "mutation { follow(username: \"alice\") { following } }",
            Some(bob),
            Box::new(move |d| author(d, "following") == true),
        ),
        (
            "user.unfollowed",
            Some(bob),
            "mutation { unfollow(username: \"alice\") { following } }",
            Some(bob),
            Box::new(move |d| author(d, "following") == false),
        ),
        (
            "post.unliked",
            Some(bob),
            "mutation($s: String!) { unlikePost(slug: $s) { slug } }",
            Some(bob),
            Box::new(move |d| post(d, "likedByMe") == false && post(d, "likeCount") == 0),
        ),
        (
            "comment.added",
            Some(bob),
            "mutation($s: String!) { addComment(slug: $s, body: \"hi\") { id } }",
            None,
            Box::new(move |d| post(d, "commentCount") == 1),
        ),
        (
            "user.updated",
            Some(alice),
            "mutation { updateMe(input: {bio: \"writes here\"}) { token } }",
            None,
            Box::new(move |d| author(d, "bio") == "writes here"),
        ),
    ];
    for (event, writer_token, mutation, reader_token, fresh) in changes {
        if let Some(token) = writer_token {
            let done = gql_at(app, writer, Some(token), mutation, card.clone()).await;
            assert!(done.get("errors").is_none(), "{event}: {done}");
        }
        let shown = until_fresh(app, reader, reader_token, CARD, card.clone(), fresh).await;
        seen.push((event, shown));
    }
    let shown = until_read_fresh(
        reader,
        || rest_at(app, reader, &comments_path),
        |d| d["comments"].as_array().map(Vec::len) == Some(1),
    )
    .await;
    seen.push(("comment.added, in the comment list", shown));
    let shown = until_read_fresh(
        reader,
        || rest_at(app, reader, "/profiles/alice"),
        |d| d["profile"]["bio"] == "writes here",
    )
    .await;
    seen.push(("user.updated, in the profile", shown));

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
    let shown = until_fresh(app, reader, None, LIST, json!({}), |d| {
        !slugs(d).contains(&second)
    })
    .await;
    seen.push(("post.deleted", shown));
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
    let (alice, bob, slug) = alice_bob_and_a_post(&app, "First light").await;
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
    let (alice, bob, slug) = alice_bob_and_a_post(&app, "First light").await;
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
    let (_, bob, slug) = alice_bob_and_a_post(&app, "Quiet line").await;
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
