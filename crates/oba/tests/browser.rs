//! The status page in a real browser: headless Chromium driven over WebDriver
//! (`OBA_TEST_CHROMEDRIVER`, Debian's `chromium-driver`). Screenshots are kept under
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
    browser.client.close().await.expect("session closed");
}
