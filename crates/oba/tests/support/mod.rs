//! The test harness: a whole oba system with fresh storage, driven through its public
//! HTTP API with a real client. Two backends run the same scenarios:
//! - embedded: `oba up` in this process, SQLite in a temp dir, ephemeral loopback ports;
//! - production: one `oba serve` process per service on fresh PostgreSQL databases.

#![allow(dead_code)]

pub mod databases;
pub mod processes;
pub mod proxy;
pub mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use oba::{Service, System, UpConfig};
use oba_kit::config::Env;
use oba_kit::shutdown::CancellationToken;
use serde_json::{Value, json};

use processes::Processes;

/// The admin account every test system is started with.
pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password";

enum Backend {
    Embedded(Option<System>),
    Production(Box<Processes>),
}

pub struct TestSystem {
    backend: Backend,
    pub url: String,
    pub http: reqwest::Client,
    data_dir: PathBuf,
    // Dropped last: removes the data directory.
    _tmp: Option<tempfile::TempDir>,
}

impl TestSystem {
    /// The embedded system on a fresh data directory.
    pub async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut system = Self::start_in(tmp.path()).await;
        system._tmp = Some(tmp);
        system
    }

    /// The embedded system on `data_dir`, keeping whatever is there.
    pub async fn start_in(data_dir: &Path) -> Self {
        let system = Self::embedded(data_dir).await;
        Self {
            url: system.edge_url(),
            backend: Backend::Embedded(Some(system)),
            http: reqwest::Client::new(),
            data_dir: data_dir.to_owned(),
            _tmp: None,
        }
    }

    async fn embedded(data_dir: &Path) -> System {
        let env = Env::from_pairs([
            ("OBA_DATA_DIR", data_dir.display().to_string()),
            ("OBA_BASE_PORT", "0".to_owned()),
            ("OBA_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
            ("OBA_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ]);
        let config = UpConfig::from_env(env).expect("config");
        System::up(config, CancellationToken::new())
            .await
            .expect("system starts")
    }

    /// What the embedded system's services publish on `subject` (e.g. `oba.post.>`) from
    /// now on; None in production mode.
    pub fn listen(
        &self,
        subject: &str,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>> {
        match &self.backend {
            Backend::Embedded(Some(system)) => Some(system.bus().listen(subject)),
            _ => None,
        }
    }

    /// Separate `oba serve` processes on fresh PostgreSQL databases (`OBA_TEST_DATABASE_URL`).
    pub async fn start_production() -> Self {
        Self::production(false, false, &[]).await
    }

    /// As [`start_production`], with the database reached through a proxy the test can cut.
    pub async fn start_production_with_db_proxy() -> Self {
        Self::production(true, false, &[]).await
    }

    /// As [`start_production`], with NATS reached through a proxy the test can cut.
    pub async fn start_production_with_bus_proxy() -> Self {
        Self::production(false, true, &[]).await
    }

    /// As [`start_production`], with `settings` added to every process's environment.
    pub async fn start_production_with(settings: &[(&str, &str)]) -> Self {
        Self::production(false, false, settings).await
    }

    async fn production(
        with_db_proxy: bool,
        with_bus_proxy: bool,
        settings: &[(&str, &str)],
    ) -> Self {
        let admin_url = std::env::var("OBA_TEST_DATABASE_URL")
            .expect("OBA_TEST_DATABASE_URL must be set for production-mode tests");
        let bus_url = std::env::var("OBA_TEST_NATS_URL")
            .expect("OBA_TEST_NATS_URL must be set for production-mode tests");
        let tmp = tempfile::tempdir().expect("tempdir");
        let processes = Processes::start(
            admin_url,
            bus_url,
            tmp.path(),
            with_db_proxy,
            with_bus_proxy,
            settings,
        )
        .await;
        Self {
            url: processes.edge_url(),
            backend: Backend::Production(Box::new(processes)),
            http: reqwest::Client::new(),
            data_dir: tmp.path().to_owned(),
            _tmp: Some(tmp),
        }
    }

    pub fn addr(&self, service: Service) -> SocketAddr {
        match &self.backend {
            Backend::Embedded(system) => system.as_ref().and_then(|s| s.addr(service)),
            Backend::Production(processes) => processes.addr(service),
        }
        .expect("service address")
    }

    pub fn processes(&mut self) -> &mut Processes {
        match &mut self.backend {
            Backend::Production(processes) => processes,
            Backend::Embedded(_) => panic!("only production mode has processes"),
        }
    }

    /// The PostgreSQL database of `service` (production mode).
    pub fn database_url(&mut self, service: Service) -> String {
        self.processes()
            .database_url(service)
            .expect("a service with a database")
            .to_owned()
    }

    /// What the processes of `service` logged (production mode), for failure messages.
    pub fn log(&self, service: Service) -> String {
        let log = self.data_dir.join(format!("{}.log", service.name()));
        std::fs::read_to_string(log).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops every service and waits for them to drain.
    pub async fn stop(&mut self) {
        match &mut self.backend {
            Backend::Embedded(system) => {
                if let Some(system) = system.take() {
                    system.stop().await.expect("clean stop");
                }
            }
            Backend::Production(processes) => processes.stop_all().await,
        }
    }

    /// Stops the whole system and starts it again on the same storage.
    pub async fn restart(&mut self) {
        self.stop().await;
        match &mut self.backend {
            Backend::Embedded(system) => {
                let restarted = Self::embedded(&self.data_dir).await;
                self.url = restarted.edge_url();
                *system = Some(restarted);
            }
            Backend::Production(processes) => {
                processes.start_all().await;
                self.url = processes.edge_url();
            }
        }
    }

    /// Runs a GraphQL document; returns the whole response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        self.gql_at(&self.url, token, query, variables).await
    }

    /// Runs a GraphQL document at the edge at `base` (another replica); the whole body.
    pub async fn gql_at(
        &self,
        base: &str,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Value {
        let mut request = self
            .http
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        response.json().await.expect("JSON body")
    }

    /// How many calls `service` has answered to its gRPC method named `method` (the end
    /// of its path, e.g. `ListPosts`), from its metrics.
    pub async fn grpc_calls(&self, service: Service, method: &str) -> u64 {
        let text = self
            .metrics(&format!("http://{}", self.addr(service)))
            .await;
        let method = format!("/{method}\"");
        text.lines()
            .filter(|l| l.starts_with("oba_grpc_requests_total{") && l.contains(&method))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The sum of the samples of metric `name` (every label set) whose line contains
    /// `containing` ("" for all), at the service at `base` (`http://host:port`).
    pub async fn metric_total(&self, base: &str, name: &str, containing: &str) -> f64 {
        self.metrics(base)
            .await
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(containing))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The `/metrics` text of the service at `base` (`http://host:port`).
    pub async fn metrics(&self, base: &str) -> String {
        self.http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Runs `query` until it answers without errors or `within` passes; returns the last
    /// body either way.
    pub async fn eventually_ok(
        &self,
        token: Option<&str>,
        query: &str,
        within: std::time::Duration,
    ) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let body = self.gql(token, query, json!({})).await;
            if body.get("errors").is_none() || std::time::Instant::now() > deadline {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Runs a document that must succeed; returns its `data`.
    pub async fn ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Registers `name` (email `name@example.com`, password `password-of-name`); returns
    /// the token and user id.
    pub async fn register(&self, name: &str) -> (String, String) {
        let data = self
            .ok(
                None,
                "mutation($u: String!, $e: String!, $p: String!) {
                    register(input: {username: $u, email: $e, password: $p}) { token user { id } }
                }",
                json!({ "u": name, "e": format!("{name}@example.com"), "p": format!("password-of-{name}") }),
            )
            .await;
        (
            data["register"]["token"]
                .as_str()
                .expect("token")
                .to_owned(),
            data["register"]["user"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        )
    }

    /// Lists articles as a caller would inside its own trace `trace_id`, asking for it to
    /// be sampled.
    pub async fn traced_request(&self, trace_id: &str) {
        let response = self
            .http
            .get(format!("{}/api/articles?limit=5", self.url))
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }

    /// Signs in as the admin; returns the token.
    pub async fn admin_token(&self) -> String {
        let data = self
            .ok(
                None,
                "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { token user { role } } }",
                json!({ "e": ADMIN_EMAIL, "p": ADMIN_PASSWORD }),
            )
            .await;
        assert_eq!(data["login"]["user"]["role"], "ADMIN");
        data["login"]["token"].as_str().expect("token").to_owned()
    }

    pub async fn create_post(&self, token: &str, title: &str, tags: &[&str]) -> Value {
        let data = self
            .ok(
                Some(token),
                "mutation($i: CreatePostInput!) {
                    createPost(input: $i) { id slug title description body tags author { username } }
                }",
                json!({ "i": { "title": title, "description": "about it", "body": "the body", "tags": tags } }),
            )
            .await;
        data["createPost"].clone()
    }

    /// Every post, walking the pages `page` at a time; slugs in the order returned.
    pub async fn all_slugs(&self, page: i64) -> Vec<String> {
        let mut slugs = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let data = self
                .ok(
                    None,
                    "query($f: Int, $a: String) {
                        posts(first: $f, after: $a) {
                            edges { cursor node { slug } }
                            pageInfo { hasNextPage endCursor }
                        }
                    }",
                    json!({ "f": page, "a": after }),
                )
                .await;
            let posts = &data["posts"];
            for edge in posts["edges"].as_array().expect("edges") {
                slugs.push(edge["node"]["slug"].as_str().expect("slug").to_owned());
            }
            if !posts["pageInfo"]["hasNextPage"]
                .as_bool()
                .expect("hasNextPage")
            {
                return slugs;
            }
            after = posts["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        }
    }
}

/// The status line and body of a POST that announces a body over the limit but sends none:
/// the edge must refuse it from the headers alone, before reading a byte of it.
pub async fn oversized_post(url: &str, path: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
        2 * 1024 * 1024
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await
    .expect("answered without the body")
    .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

/// The `extensions.code` of the first error.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// Declares each scenario `async fn name(app: TestSystem)` as two tests, `embedded::name`
/// and `production::name`; the latter runs where PostgreSQL is configured and shows as
/// ignored elsewhere.
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::support::TestSystem::start().await).await;
                }
            )*
        }
        mod production {
            $(
                #[tokio::test]
                #[cfg_attr(not(oba_test_postgres), ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL")]
                async fn $name() {
                    super::$name(super::support::TestSystem::start_production().await).await;
                }
            )*
        }
    };
}

/// One number from a query on the PostgreSQL database at `url` (production mode).
pub async fn count(url: &str, sql: &str) -> i64 {
    use sea_orm::sqlx::{Connection, Row};
    let mut connection = sea_orm::sqlx::PgConnection::connect(url)
        .await
        .expect("connect");
    sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut connection)
        .await
        .expect(sql)
        .get::<i64, _>(0)
}
