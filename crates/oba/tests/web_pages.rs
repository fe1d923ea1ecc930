//! The server-rendered pages at `/`, through a real HTTP client: what they show, that
//! nothing an author writes can run as script, that bad addresses get an HTML error with
//! the right status, and that a page still renders when a service behind it is down.

mod support;

use oba::Service;
use serde_json::json;
use support::TestSystem;

const CREATE: &str = "mutation($i: CreatePostInput!) { createPost(input: $i) { slug } }";
const COMMENT: &str =
    "mutation($s: String!, $b: String!) { addComment(slug: $s, body: $b) { id } }";
const LIKE: &str = "mutation($s: String!) { likePost(slug: $s) { likeCount } }";

/// A page: its status, its `Content-Security-Policy`, and its HTML.
async fn page(app: &TestSystem, path: &str) -> (u16, String, String) {
    let response = app
        .http
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let policy = response
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/html"),
        "{path}: {content_type}"
    );
    (status, policy, response.text().await.expect("text"))
}

async fn write_post(
    app: &TestSystem,
    token: &str,
    title: &str,
    body: &str,
    tags: &[&str],
) -> String {
    let data = app
        .ok(
            Some(token),
            CREATE,
            json!({ "i": { "title": title, "description": "about it", "body": body, "tags": tags } }),
        )
        .await;
    data["createPost"]["slug"]
        .as_str()
        .expect("slug")
        .to_owned()
}

#[tokio::test]
async fn the_home_page_lists_posts_with_authors_tags_and_counts() {
    let app = TestSystem::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let slug = write_post(&app, &alice, "Hello web", "Plain *words*.", &["rust"]).await;
    app.ok(Some(&bob), LIKE, json!({ "s": slug })).await;
    let (status, policy, html) = page(&app, "/").await;
    assert_eq!(status, 200);
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(
        html.contains(&format!(r#"href="/article/{slug}""#)),
        "{html}"
    );
    assert!(html.contains("Hello web"), "{html}");
    assert!(html.contains(r#"href="/profile/alice""#), "{html}");
    assert!(html.contains(r#"href="/?tag=rust""#), "{html}");
    assert!(html.contains("1 like"), "{html}");
    assert!(html.contains("0 comments"), "{html}");

    // Filtered by a tag it does not have, the post is not listed (it may still trend).
    let other = write_post(&app, &alice, "Other news", "x", &["go"]).await;
    let (_, _, go) = page(&app, "/?tag=go").await;
    let listed = |slug: &str| format!(r#"<h2><a href="/article/{slug}">"#);
    assert!(go.contains(&listed(&other)), "{go}");
    assert!(!go.contains(&listed(&slug)), "{go}");
}

#[tokio::test]
async fn an_article_renders_markdown_and_nothing_an_author_writes_runs() {
    let app = TestSystem::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let body = "## A heading\n\nSome **bold** text.\n\n<script>window.__xss = 1</script>\n\n\
                <img src=x onerror=\"window.__xss = 1\">\n\n[click](javascript:window.__xss=1)";
    let slug = write_post(
        &app,
        &alice,
        "<script>window.__xss=1</script>Title",
        body,
        &[],
    )
    .await;
    app.ok(
        Some(&bob),
        COMMENT,
        json!({ "s": slug, "b": "<img src=x onerror=\"window.__xss=1\"> nice" }),
    )
    .await;
    let (status, _, html) = page(&app, &format!("/article/{slug}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("<h2>A heading</h2>"), "{html}");
    assert!(html.contains("<strong>bold</strong>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;window.__xss=1&lt;/script&gt;Title"),
        "{html}"
    );
    assert!(html.contains("&lt;img src=x onerror="), "{html}");
    for dangerous in ["<script", "onerror=\"", "javascript:"] {
        assert!(!html.contains(dangerous), "{dangerous} in {html}");
    }
}

#[tokio::test]
async fn a_profile_lists_its_posts_and_its_favorites() {
    let app = TestSystem::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let slug = write_post(&app, &alice, "Alice writes", "x", &[]).await;
    app.ok(Some(&bob), LIKE, json!({ "s": slug })).await;
    let (status, _, own) = page(&app, "/profile/alice").await;
    assert_eq!(status, 200);
    assert!(own.contains("Alice writes"), "{own}");
    let (_, _, bobs) = page(&app, "/profile/bob").await;
    assert!(!bobs.contains("Alice writes"), "{bobs}");
    let (_, _, liked) = page(&app, "/profile/bob?tab=favorited").await;
    assert!(liked.contains("Alice writes"), "{liked}");
}

#[tokio::test]
async fn unknown_things_and_bad_queries_get_an_html_error_with_the_right_status() {
    let app = TestSystem::start().await;
    for (path, expected) in [
        ("/article/no-such-post", 404),
        ("/profile/nobody-at-all", 404),
        ("/?page=abc", 400),
        ("/?page=0", 400),
        ("/?page=99999999999", 400),
    ] {
        let (status, _, html) = page(&app, path).await;
        assert_eq!(status, expected, "{path}: {html}");
        assert!(html.contains("Back to the home page"), "{path}: {html}");
    }
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn with_like_service_stopped_pages_still_render_and_say_what_is_missing() {
    let mut app = TestSystem::start_production().await;
    let (alice, _) = app.register("alice").await;
    let slug = write_post(&app, &alice, "Still here", "x", &[]).await;
    app.processes().stop_service(Service::LikeService).await;
    let (status, _, home) = page(&app, "/").await;
    assert_eq!(status, 200, "{home}");
    assert!(home.contains("Still here"), "{home}");
    assert!(home.contains("likes unavailable"), "{home}");
    let (status, _, article) = page(&app, &format!("/article/{slug}")).await;
    assert_eq!(status, 200, "{article}");
    assert!(article.contains("likes unavailable"), "{article}");
}
