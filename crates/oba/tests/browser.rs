//! The status page and the web pages in a real browser: headless Chromium driven over
//! WebDriver (`OBA_TEST_CHROMEDRIVER`, Debian's `chromium-driver`). Screenshots are kept under
//! `target/tmp/screenshots/` (CI keeps them as artifacts).

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use oba::Service;
use serde_json::json;
use support::TestSystem;

/// A chromedriver of this test's own, and a headless Chromium session on it.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn start() -> Self {
        let driver_path = std::env::var("OBA_TEST_CHROMEDRIVER").expect("OBA_TEST_CHROMEDRIVER");
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("addr").port()
        };
        let driver = tokio::process::Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }),
        );
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Self {
            client,
            _driver: driver,
        }
    }

    /// Saves what the browser shows as `<name>.png` and returns the path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Waits until `css` matches `count` elements (or at least one when None), within `limit`.
    async fn until(&self, css: &str, count: Option<usize>, limit: Duration) -> usize {
        let started = Instant::now();
        loop {
            let found = self
                .client
                .find_all(Locator::Css(css))
                .await
                .map(|all| all.len())
                .unwrap_or(0);
            let done = match count {
                Some(n) => found == n,
                None => found > 0,
            };
            if done {
                return found;
            }
            if started.elapsed() > limit {
                let source = self.client.source().await.unwrap_or_default();
                panic!("{css}: {found} found after {limit:?}\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
#[cfg_attr(
    not(all(oba_test_browser, oba_test_postgres)),
    ignore = "needs OBA_TEST_CHROMEDRIVER, OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn the_status_page_shows_every_service_healthy_then_one_down() {
    let mut app = TestSystem::start_production().await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{}/status", app.url))
        .await
        .expect("page opens");
    let healthy = browser
        .until("#map li.up", Some(7), Duration::from_secs(10))
        .await;
    assert_eq!(healthy, 7);
    // The drawn map: seven healthy nodes, the edge's calls to six services, and the bus
    // linked to the publishers and the consumers (in production mode, the lag from NATS).
    assert_eq!(
        browser
            .until("#graph g.node.up", Some(7), Duration::from_secs(5))
            .await,
        7
    );
    assert_eq!(
        browser
            .until("#graph g.link.grpc", Some(6), Duration::from_secs(1))
            .await,
        6
    );
    assert!(
        browser
            .until("#graph g.link.publish", None, Duration::from_secs(1))
            .await
            >= 4
    );
    assert!(
        browser
            .until("#graph g.link.consume", None, Duration::from_secs(1))
            .await
            >= 2
    );
    let title = browser.client.title().await.expect("title");
    assert_eq!(title, "oba status");
    browser.screenshot("status-all-healthy").await;

    // A request of the test's own shows in the recent traces, its spans as a waterfall.
    let trace_id = "6bf92f3577b34da6a3ce929d0e0e4736";
    app.traced_request(trace_id).await;
    let trace = format!("#traces li[data-trace-id='{trace_id}']");
    browser.until(&trace, Some(1), Duration::from_secs(5)).await;
    browser
        .client
        .find(Locator::Css(&format!("{trace} summary")))
        .await
        .expect("the trace's summary")
        .click()
        .await
        .expect("opened");
    let spans = browser
        .until(
            &format!("{trace} li[data-span='oba.post.v1.PostService/ListPosts']"),
            None,
            Duration::from_secs(3),
        )
        .await;
    assert!(spans >= 1);
    browser
        .client
        .execute(
            "document.getElementById('traces-title').scrollIntoView()",
            Vec::new(),
        )
        .await
        .expect("scrolled");
    browser.screenshot("status-trace-waterfall").await;

    app.processes().stop_service(Service::LikeService).await;
    browser
        .until(
            "#map li.down[data-service='like-service']",
            None,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        browser
            .until("#map li.up", Some(6), Duration::from_secs(1))
            .await,
        6
    );
    assert_eq!(
        browser
            .until(
                "#graph g.node.down[data-node='like-service']",
                Some(1),
                Duration::from_secs(1)
            )
            .await,
        1
    );
    let shot = browser.screenshot("status-like-service-down").await;
    eprintln!("screenshot: {}", shot.display());

    // The web pages still render without like-service, and say what is missing.
    let (token, _) = app.register("writer").await;
    app.create_post(&token, "Written while likes are down", &[])
        .await;
    browser.client.goto(&app.url).await.expect("home opens");
    browser
        .until("article.card", Some(1), Duration::from_secs(5))
        .await;
    let likes = browser
        .client
        .find(Locator::Css("article.card .likes"))
        .await
        .expect("the like count's place")
        .text()
        .await
        .expect("text");
    assert_eq!(likes, "likes unavailable");
    browser.screenshot("web-home-like-service-down").await;
    browser.client.close().await.expect("session closed");
}

/// Whether a script planted by an author ever ran in the page shown.
async fn payload_ran(browser: &Browser) -> bool {
    browser
        .client
        .execute("return window.__xss !== undefined;", Vec::new())
        .await
        .expect("script runs")
        .as_bool()
        .expect("a boolean")
}

#[tokio::test]
#[cfg_attr(not(oba_test_browser), ignore = "needs OBA_TEST_CHROMEDRIVER")]
async fn the_web_pages_show_posts_and_no_planted_script_runs() {
    let app = TestSystem::start().await;
    let (alice, _) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let created = app
        .ok(
            Some(&alice),
            "mutation($i: CreatePostInput!) { createPost(input: $i) { slug } }",
            json!({ "i": {
                "title": "<script>window.__xss = 'title'</script>Markdown works",
                "description": "<img src=x onerror=\"window.__xss = 'description'\">",
                "body": "## Hello\n\nSome **bold** words and a [link](https://example.com).\n\n<script>window.__xss = 'body'</script>\n\n<img src=x onerror=\"window.__xss = 'img'\">\n\n[click me](javascript:window.__xss='link')",
                "tags": ["web"],
            } }),
        )
        .await;
    let slug = created["createPost"]["slug"]
        .as_str()
        .expect("slug")
        .to_owned();
    app.ok(
        Some(&bob),
        "mutation($s: String!, $b: String!) { addComment(slug: $s, body: $b) { id } }",
        json!({ "s": slug, "b": "<script>window.__xss = 'comment'</script>Nice!" }),
    )
    .await;
    let browser = Browser::start().await;
    browser.client.goto(&app.url).await.expect("home opens");
    let cards = browser
        .until("article.card", Some(1), Duration::from_secs(5))
        .await;
    assert_eq!(cards, 1);
    assert!(
        !payload_ran(&browser).await,
        "a script ran on the home page"
    );
    browser.screenshot("web-home").await;

    // To the article the way a reader goes: its link on the home page.
    browser
        .client
        .find(Locator::Css("article.card h2 a"))
        .await
        .expect("the article's link")
        .click()
        .await
        .expect("followed");
    browser
        .until("article.post .body h2", Some(1), Duration::from_secs(5))
        .await;
    let heading = browser
        .client
        .find(Locator::Css("article.post h1"))
        .await
        .expect("the title")
        .text()
        .await
        .expect("text");
    assert_eq!(
        heading,
        "<script>window.__xss = 'title'</script>Markdown works"
    );
    assert_eq!(
        browser
            .until(".comment", Some(1), Duration::from_secs(1))
            .await,
        1
    );
    // The javascript: link keeps its text and loses its address; following it does nothing.
    let planted = browser
        .client
        .find(Locator::LinkText("click me"))
        .await
        .expect("the planted link's text");
    assert_eq!(planted.attr("href").await.expect("attribute"), None);
    planted.click().await.expect("clicked");
    assert!(
        !payload_ran(&browser).await,
        "a script ran on the article page"
    );
    browser.screenshot("web-article").await;

    browser
        .client
        .goto(&format!("{}/profile/alice", app.url))
        .await
        .expect("profile opens");
    browser
        .until("article.card", Some(1), Duration::from_secs(5))
        .await;
    // A phone-width screen: the same page, one column.
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("resized");
    browser.screenshot("web-profile-phone").await;
    assert!(
        !payload_ran(&browser).await,
        "a script ran on the profile page"
    );
    browser.client.close().await.expect("session closed");
}

impl Browser {
    /// Types `text` into the field `css`.
    async fn fill(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .send_keys(text)
            .await
            .expect("typed");
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .expect("clicked");
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .expect("text")
    }

    /// Signs up through the form as `name`; lands on the home page, signed in.
    async fn sign_up(&self, base: &str, name: &str) {
        self.client
            .goto(&format!("{base}/register"))
            .await
            .expect("sign-up page");
        self.fill("#username", name).await;
        self.fill("#email", &format!("{name}@example.com")).await;
        self.fill("#password", &format!("password-of-{name}")).await;
        self.click("form button[type=submit]").await;
        self.until(
            &format!("header a[href='/profile/{name}']"),
            Some(1),
            Duration::from_secs(5),
        )
        .await;
    }
}

#[tokio::test]
#[cfg_attr(not(oba_test_browser), ignore = "needs OBA_TEST_CHROMEDRIVER")]
async fn an_author_and_a_reader_use_the_blog_in_two_browsers() {
    let app = TestSystem::start().await;
    let base = app.url.clone();
    let alice = Browser::start().await;
    let bob = Browser::start().await;
    let wait = Duration::from_secs(5);

    // Alice signs up and writes an article with Markdown and a tag.
    alice.sign_up(&base, "alice").await;
    alice.click("header a[href='/editor']").await;
    alice.until("#title", Some(1), wait).await;
    alice.fill("#title", "Browsers and Markdown").await;
    alice.fill("#description", "an end-to-end check").await;
    alice.fill("#body", "## A section\n\nIt *works*.").await;
    alice.fill("#tags", "e2e").await;
    alice.screenshot("web-editor").await;
    alice.click(".editor button[type=submit]").await;
    alice.until("article.post .body h2", Some(1), wait).await;
    assert_eq!(alice.text("article.post .body h2").await, "A section");
    alice.screenshot("web-article-by-its-author").await;
    let article = alice.client.current_url().await.expect("url").to_string();

    // It is on the home page and under its tag.
    alice
        .client
        .goto(&format!("{base}/?tag=e2e"))
        .await
        .expect("tag page");
    assert_eq!(alice.until("article.card", Some(1), wait).await, 1);
    alice.client.goto(&base).await.expect("home");
    assert_eq!(alice.until("article.card", Some(1), wait).await, 1);
    // Alice stays on the home page; a marker shows whether it reloads.
    alice
        .client
        .execute("window.__stayed = true; return true;", Vec::new())
        .await
        .expect("marker");
    assert_eq!(alice.text("#unread").await, "");

    // Bob signs up, favorites, comments and follows.
    bob.sign_up(&base, "bob").await;
    bob.client.goto(&article).await.expect("article");
    bob.click("form[action$='/favorite'] button").await;
    bob.until("form[action$='/unfavorite']", Some(1), wait)
        .await;
    assert_eq!(bob.text("article.post .likes").await, "1 like");
    bob.fill("#comment-body", "A fine read.").await;
    bob.click(".comment-form button[type=submit]").await;
    bob.until(".comment", Some(1), wait).await;
    assert!(bob.text(".comment .body").await.contains("A fine read."));
    bob.screenshot("web-article-read-by-another").await;
    bob.client
        .goto(&format!("{base}/profile/alice"))
        .await
        .expect("profile");
    bob.click("form[action='/profile/alice/follow'] button")
        .await;
    bob.until("form[action='/profile/alice/unfollow']", Some(1), wait)
        .await;

    // Alice's badge counts them as they happen, without a reload.
    let started = Instant::now();
    loop {
        let badge = alice.text("#unread").await;
        if badge.parse::<u32>().is_ok_and(|n| n >= 3) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "badge shows {badge:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stayed = alice
        .client
        .execute("return window.__stayed === true;", Vec::new())
        .await
        .expect("marker read");
    assert_eq!(stayed, json!(true), "the page was reloaded");
    alice.screenshot("web-badge").await;
    alice.click("header a[href='/notifications']").await;
    alice.until("ol.notifications li", Some(3), wait).await;
    let list = alice.text("ol.notifications").await;
    for what in ["liked your post", "commented on your post", "followed you"] {
        assert!(list.contains(what), "{what} in {list}");
    }
    alice.screenshot("web-notifications").await;

    // Alice edits the article, then deletes it.
    alice.client.goto(&article).await.expect("article");
    alice.click("a.edit").await;
    alice.until("#title", Some(1), wait).await;
    alice
        .client
        .find(Locator::Css("#title"))
        .await
        .expect("title")
        .clear()
        .await
        .expect("cleared");
    alice.fill("#title", "Browsers and Markdown, revised").await;
    alice.click(".editor button[type=submit]").await;
    alice.until("article.post h1", Some(1), wait).await;
    assert_eq!(
        alice.text("article.post h1").await,
        "Browsers and Markdown, revised"
    );
    alice.click("form[action$='/delete'] button").await;
    alice.until("#feed-title", Some(1), wait).await;
    assert_eq!(alice.until("article.card", Some(0), wait).await, 0);

    // Signing out and in again.
    alice.click("form[action='/logout'] button").await;
    alice.until("header a[href='/login']", Some(1), wait).await;
    alice.click("header a[href='/login']").await;
    alice.fill("#email", "alice@example.com").await;
    alice.fill("#password", "password-of-alice").await;
    alice.click("form button[type=submit]").await;
    alice
        .until("header a[href='/profile/alice']", Some(1), wait)
        .await;
    alice.screenshot("web-signed-in-again").await;

    alice.client.close().await.expect("session closed");
    bob.client.close().await.expect("session closed");
}
