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

/// A browser as far as these pages care: its cookies, kept from `Set-Cookie`, and the
/// CSRF token they hold, sent back with every form. Redirects are not followed, so that
/// each answer can be checked.
struct Visitor {
    http: reqwest::Client,
    base: String,
    cookies: std::collections::BTreeMap<String, String>,
}

impl Visitor {
    fn new(app: &TestSystem) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: app.url.clone(),
            cookies: Default::default(),
        }
    }

    fn keep_cookies(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().expect("ascii");
            let (pair, _) = value.split_once(';').unwrap_or((value, ""));
            let (name, content) = pair.split_once('=').expect("name=value");
            if value.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), content.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("sent");
        self.keep_cookies(&response);
        let status = response.status().as_u16();
        (status, response.text().await.expect("text"))
    }

    /// Posts `fields` and this visitor's CSRF token (when `with_token`); the status and
    /// where it redirects to.
    async fn post(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        with_token: bool,
    ) -> (u16, String) {
        let mut form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if with_token {
            let token = self.cookies.get("oba_csrf").cloned().unwrap_or_default();
            form.push(("csrf".to_owned(), token));
        }
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(&form)
            .send()
            .await
            .expect("sent");
        self.keep_cookies(&response);
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, location)
    }

    /// Signs in through the form, as `name` registered by the harness.
    async fn sign_in(&mut self, name: &str) {
        self.get("/login").await;
        let email = format!("{name}@example.com");
        let password = format!("password-of-{name}");
        let (status, to) = self
            .post(
                "/login",
                &[("email", &email), ("password", &password)],
                true,
            )
            .await;
        assert_eq!((status, to.as_str()), (303, "/"), "signed in");
        assert!(self.cookies.contains_key("oba_session"));
    }
}

#[tokio::test]
async fn signing_up_in_and_out_sets_and_clears_an_http_only_session() {
    let app = TestSystem::start().await;
    let mut visitor = Visitor::new(&app);
    let first = visitor
        .http
        .get(format!("{}/register", app.url))
        .send()
        .await
        .expect("sent");
    let set = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect::<Vec<_>>();
    assert!(
        set.iter().any(|c| c.starts_with("oba_csrf=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Strict")),
        "{set:?}"
    );
    visitor.keep_cookies(&first);
    let (status, to) = visitor
        .post(
            "/register",
            &[
                ("username", "carol"),
                ("email", "carol@example.com"),
                ("password", "a long enough password"),
            ],
            true,
        )
        .await;
    assert_eq!((status, to.as_str()), (303, "/"));
    let (_, home) = visitor.get("/").await;
    assert!(home.contains(r#"href="/profile/carol""#), "{home}");
    assert!(home.contains("Sign out"), "{home}");

    // A wrong password shows the form again, with a message, not an error page.
    let mut stranger = Visitor::new(&app);
    stranger.get("/login").await;
    let response = stranger
        .http
        .post(format!("{}/login", app.url))
        .header("cookie", stranger.cookie_header())
        .form(&[
            ("email", "carol@example.com"),
            ("password", "not it"),
            ("csrf", stranger.cookies["oba_csrf"].as_str()),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 422);
    let form = response.text().await.expect("text");
    assert!(form.contains("Wrong email or password."), "{form}");
    assert!(form.contains(r#"value="carol@example.com""#), "{form}");

    let (status, to) = visitor.post("/logout", &[], true).await;
    assert_eq!((status, to.as_str()), (303, "/"));
    assert!(!visitor.cookies.contains_key("oba_session"));
    let (_, home) = visitor.get("/").await;
    assert!(
        home.contains("Sign in") && !home.contains("Sign out"),
        "{home}"
    );
}

#[tokio::test]
async fn favorites_comments_and_follows_work_from_the_pages() {
    let app = TestSystem::start().await;
    let (alice, _) = app.register("alice").await;
    app.register("bob").await;
    let slug = write_post(&app, &alice, "Forms", "x", &[]).await;
    let mut bob = Visitor::new(&app);
    bob.sign_in("bob").await;
    let article = format!("/article/{slug}");

    let (status, to) = bob.post(&format!("{article}/favorite"), &[], true).await;
    assert_eq!((status, to.as_str()), (303, article.as_str()));
    let (_, page) = bob.get(&article).await;
    assert!(
        page.contains("1 like") && page.contains("Unfavorite"),
        "{page}"
    );
    bob.post(&format!("{article}/unfavorite"), &[], true).await;
    let (_, page) = bob.get(&article).await;
    assert!(
        page.contains("0 likes") && page.contains(">Favorite<"),
        "{page}"
    );

    let (status, to) = bob
        .post(
            &format!("{article}/comments"),
            &[("body", "Well put.")],
            true,
        )
        .await;
    assert_eq!(status, 303);
    assert!(to.starts_with(&format!("{article}#comment-")), "{to}");
    let id = to.rsplit('-').next().expect("an id").to_owned();
    let (_, page) = bob.get(&article).await;
    assert!(page.contains("Well put."), "{page}");
    bob.post(&format!("{article}/comments/{id}/delete"), &[], true)
        .await;
    let (_, page) = bob.get(&article).await;
    assert!(!page.contains("Well put."), "{page}");

    let (status, _) = bob.post("/profile/alice/follow", &[], true).await;
    assert_eq!(status, 303);
    let (_, feed) = bob.get("/?feed=1").await;
    assert!(feed.contains(&format!(r#"href="{article}""#)), "{feed}");
    let (_, profile) = bob.get("/profile/alice").await;
    assert!(profile.contains("Unfollow alice"), "{profile}");

    // Signed out, a form sends the visitor to sign in and changes nothing.
    let mut anonymous = Visitor::new(&app);
    anonymous.get("/").await;
    let (status, to) = anonymous
        .post(&format!("{article}/favorite"), &[], true)
        .await;
    assert_eq!((status, to.as_str()), (303, "/login"));
}

#[tokio::test]
async fn every_form_post_without_its_csrf_token_is_refused_and_changes_nothing() {
    let app = TestSystem::start().await;
    let (alice, _) = app.register("alice").await;
    app.register("bob").await;
    let slug = write_post(&app, &alice, "Guarded", "x", &[]).await;
    let mut bob = Visitor::new(&app);
    bob.sign_in("bob").await;
    let article = format!("/article/{slug}");
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("{article}/favorite"), vec![]),
        (format!("{article}/unfavorite"), vec![]),
        (format!("{article}/comments"), vec![("body", "sneaky")]),
        (format!("{article}/comments/1/delete"), vec![]),
        ("/profile/alice/follow".to_owned(), vec![]),
        ("/profile/alice/unfollow".to_owned(), vec![]),
        (
            "/login".to_owned(),
            vec![
                ("email", "bob@example.com"),
                ("password", "password-of-bob"),
            ],
        ),
        (
            "/register".to_owned(),
            vec![
                ("username", "eve"),
                ("email", "eve@example.com"),
                ("password", "a long enough password"),
            ],
        ),
        ("/logout".to_owned(), vec![]),
        (
            "/editor".to_owned(),
            vec![("title", "Forged"), ("body", "x")],
        ),
        (
            format!("/editor/{slug}"),
            vec![("title", "Forged"), ("body", "x")],
        ),
        (format!("{article}/delete"), vec![]),
        (
            "/settings".to_owned(),
            vec![("username", "mallory"), ("email", "bob@example.com")],
        ),
        ("/notifications/read".to_owned(), vec![]),
    ];
    for (path, fields) in &forms {
        // No token at all, and another browser's token.
        let (status, _) = bob.post(path, fields, false).await;
        assert_eq!(status, 403, "{path} without a token");
        let mut forged = fields.clone();
        forged.push(("csrf", "0123456789abcdef0123456789abcdef"));
        let (status, _) = bob.post(path, &forged, false).await;
        assert_eq!(status, 403, "{path} with another token");
    }
    // Nothing changed: no like, no comment, no follow, no account, still signed in.
    let (_, page) = bob.get(&article).await;
    assert!(
        page.contains("0 likes") && page.contains("0 comments"),
        "{page}"
    );
    assert!(!page.contains("sneaky"), "{page}");
    let (_, profile) = bob.get("/profile/alice").await;
    assert!(
        profile.contains("Follow alice") && !profile.contains("Unfollow"),
        "{profile}"
    );
    let (status, _) = bob.get("/profile/eve").await;
    assert_eq!(status, 404);
    let (status, _) = bob.get("/profile/mallory").await;
    assert_eq!(status, 404);
    let (_, home) = bob.get("/").await;
    assert!(!home.contains("Forged"), "{home}");
    assert!(bob.cookies.contains_key("oba_session"));
}

#[tokio::test]
async fn the_editor_publishes_edits_and_deletes_a_post_and_only_its_author_may() {
    let app = TestSystem::start().await;
    app.register("alice").await;
    app.register("bob").await;
    let mut bob = Visitor::new(&app);
    bob.sign_in("bob").await;
    let (status, form) = bob.get("/editor").await;
    assert_eq!(status, 200);
    assert!(form.contains(r#"name="csrf""#), "{form}");

    // A refused post shows the form again, with what was typed and why.
    let (status, _) = bob
        .post("/editor", &[("title", ""), ("body", "kept")], true)
        .await;
    assert_eq!(status, 422);

    let (status, to) = bob
        .post(
            "/editor",
            &[
                ("title", "From the editor"),
                ("description", "d"),
                ("body", "# Hi"),
                ("tags", "one, two"),
            ],
            true,
        )
        .await;
    assert_eq!((status, to.as_str()), (303, "/article/from-the-editor"));
    let (_, page) = bob.get(&to).await;
    assert!(
        page.contains("<h1>Hi</h1>") && page.contains(r#"href="/?tag=two""#),
        "{page}"
    );
    assert!(
        page.contains("Delete post") && page.contains(r#"href="/editor/from-the-editor""#),
        "{page}"
    );

    let mut alice = Visitor::new(&app);
    alice.sign_in("alice").await;
    let (_, page) = alice.get(&to).await;
    assert!(!page.contains("Delete post"), "{page}");
    let (status, _) = alice
        .post(
            "/editor/from-the-editor",
            &[("title", "Hijacked"), ("body", "x")],
            true,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = alice
        .post("/article/from-the-editor/delete", &[], true)
        .await;
    assert_eq!(status, 403);

    let (status, to) = bob
        .post(
            "/editor/from-the-editor",
            &[("title", "Renamed"), ("body", "# Hi"), ("tags", "one")],
            true,
        )
        .await;
    assert_eq!((status, to.as_str()), (303, "/article/renamed"));
    let (status, to) = bob.post("/article/renamed/delete", &[], true).await;
    assert_eq!((status, to.as_str()), (303, "/"));
    let (status, _) = bob.get("/article/renamed").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn settings_change_the_profile_and_a_new_name_keeps_the_visitor_signed_in() {
    let app = TestSystem::start().await;
    app.register("bob").await;
    let mut bob = Visitor::new(&app);
    bob.sign_in("bob").await;
    let (status, form) = bob.get("/settings").await;
    assert_eq!(status, 200);
    assert!(form.contains(r#"value="bob@example.com""#), "{form}");
    let (status, to) = bob
        .post(
            "/settings",
            &[
                ("image", ""),
                ("username", "robert"),
                ("bio", "I write <b>things</b>"),
                ("email", "bob@example.com"),
                ("password", ""),
            ],
            true,
        )
        .await;
    assert_eq!((status, to.as_str()), (303, "/profile/robert"));
    let (_, profile) = bob.get("/profile/robert").await;
    assert!(
        profile.contains("I write &lt;b&gt;things&lt;/b&gt;"),
        "{profile}"
    );
    // The header shows the new name: the session cookie holds the new token.
    assert!(
        profile.contains(r#"<a href="/profile/robert">robert</a>"#),
        "{profile}"
    );
    // The password was left empty, so it is unchanged.
    let mut again = Visitor::new(&app);
    again.get("/login").await;
    let (status, _) = again
        .post(
            "/login",
            &[
                ("email", "bob@example.com"),
                ("password", "password-of-bob"),
            ],
            true,
        )
        .await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn notifications_are_listed_counted_in_the_badge_and_announced_live() {
    let app = TestSystem::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let slug = write_post(&app, &alice, "Noticed", "x", &[]).await;
    let mut visitor = Visitor::new(&app);
    visitor.sign_in("alice").await;

    // The badge's live stream, open before anything happens.
    let live = visitor
        .http
        .get(format!("{}/notifications/live", app.url))
        .header("cookie", visitor.cookie_header())
        .send()
        .await
        .expect("sent");
    assert_eq!(live.status(), 200);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let mut live = live;

    app.ok(Some(&bob), LIKE, json!({ "s": slug })).await;
    // First the count as it is, then each new notification.
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut seen = String::new();
        while let Some(chunk) = live.chunk().await.expect("a chunk") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: notification") {
                return seen;
            }
        }
        seen
    })
    .await
    .expect("announced within 5 s");
    assert!(heard.contains("event: notification"), "{heard}");
    assert!(heard.starts_with("event: unread\ndata: 0\n"), "{heard}");

    let (_, home) = visitor.get("/").await;
    assert!(home.contains(r#"data-count="1""#), "{home}");
    let (_, list) = visitor.get("/notifications").await;
    assert!(
        list.contains("liked your post") && list.contains(r#"href="/profile/bob""#),
        "{list}"
    );
    assert!(
        list.contains(&format!(r#"href="/article/{slug}""#)),
        "{list}"
    );
    let (status, _) = visitor.post("/notifications/read", &[], true).await;
    assert_eq!(status, 303);
    let (_, home) = visitor.get("/").await;
    assert!(home.contains(r#"data-count="0""#), "{home}");
    drop(bob);

    // Signed out, the stream is refused, not opened.
    let anonymous = app
        .http
        .get(format!("{}/notifications/live", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
}
