//! The test harness: a whole oba system on ephemeral loopback ports with a fresh data
//! directory, driven through its public HTTP API with a real client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use oba::{System, UpConfig};
use oba_kit::config::Env;
use oba_kit::shutdown::CancellationToken;
use serde_json::{Value, json};

pub struct TestSystem {
    system: Option<System>,
    pub url: String,
    pub http: reqwest::Client,
    data_dir: PathBuf,
    // Dropped last: removes the data directory.
    _tmp: Option<tempfile::TempDir>,
}

impl TestSystem {
    /// A system on a fresh data directory.
    pub async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut system = Self::start_in(tmp.path()).await;
        system._tmp = Some(tmp);
        system
    }

    /// A system on `data_dir`, keeping whatever is there.
    pub async fn start_in(data_dir: &Path) -> Self {
        let env = Env::from_pairs([
            ("OBA_DATA_DIR", data_dir.display().to_string()),
            ("OBA_BASE_PORT", "0".to_owned()),
        ]);
        let config = UpConfig::from_env(env).expect("config");
        let system = System::up(config, CancellationToken::new())
            .await
            .expect("system starts");
        Self {
            url: system.edge_url(),
            system: Some(system),
            http: reqwest::Client::new(),
            data_dir: data_dir.to_owned(),
            _tmp: None,
        }
    }

    pub fn system(&self) -> &System {
        self.system.as_ref().expect("running")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops every service and waits for them to drain.
    pub async fn stop(&mut self) {
        if let Some(system) = self.system.take() {
            system.stop().await.expect("clean stop");
        }
    }

    /// Runs a GraphQL document; returns the whole response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.url))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        response.json().await.expect("JSON body")
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

/// The `extensions.code` of the first error.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}
