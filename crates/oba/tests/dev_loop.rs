//! The local development loop: `oba up --skip <service>` runs everything else, `oba env
//! <service>` prints the deployed environment with local addresses, and the service started
//! from source with it joins the running system: its answers and its events (through NATS,
//! which both are given) reach the rest. Real processes, real HTTP.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config-repo")
}

/// A base port with the six ports after it free on loopback: `oba up` puts its seven
/// services at `OBA_BASE_PORT` + 0..=6.
fn free_base_port() -> u16 {
    let start = 20_000 + (std::process::id() % 20_000) as u16;
    (0..2_000)
        .map(|i| start + i * 7)
        .find(|base| (0..7).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
        .expect("seven free ports")
}

fn oba(args: &[&str], env: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oba"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

/// Spawns and waits for the first stdout line containing `marker`.
fn spawn_until(mut command: Command, marker: &str) -> Killed {
    let mut child = Killed(command.spawn().expect("spawn"));
    let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
    loop {
        let Some(line) = lines.next() else {
            panic!("exited before printing {marker:?}: {:?}", child.0.wait());
        };
        let line = line.expect("read");
        if line.contains(marker) {
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return child;
        }
    }
}

async fn graphql(url: &str, token: Option<&str>, query: &str) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/graphql"))
        .json(&json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_service_run_from_its_env_joins_a_system_started_without_it() {
    let data = tempfile::tempdir().expect("tempdir");
    let base = free_base_port();
    let namespace = format!("dev{}", std::process::id());
    let layout = vec![
        ("OBA_BASE_PORT".to_owned(), base.to_string()),
        ("OBA_DATA_DIR".to_owned(), data.path().display().to_string()),
        (
            "OBA_BUS_URL".to_owned(),
            std::env::var("OBA_TEST_NATS_URL").expect("OBA_TEST_NATS_URL"),
        ),
        ("OBA_BUS_NAMESPACE".to_owned(), namespace),
    ];
    let _system = spawn_until(oba(&["up", "--skip", "post-service"], &layout), "GraphQL:");
    let edge = format!("http://127.0.0.1:{base}");

    // The edge expects post-service at its usual address, where nothing answers yet.
    let missing = graphql(&edge, None, "{ posts { totalCount } }").await;
    assert_eq!(
        missing["errors"][0]["extensions"]["code"], "UNAVAILABLE",
        "{missing}"
    );

    let repo = config_repo().display().to_string();
    let output = oba(&["env", "post-service", "--config-repo", &repo], &layout)
        .output()
        .expect("oba env runs");
    assert!(output.status.success());
    let env: BTreeMap<String, String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(env["OBA_LISTEN_ADDR"], format!("127.0.0.1:{}", base + 2));
    // The bus oba up uses, not the deployed one (unreachable here).
    assert_eq!(env["OBA_BUS_URL"], layout[2].1);
    assert!(env["OBA_DATABASE_URL"].starts_with("sqlite://"), "{env:?}");
    // Settings that are not addresses come from the config repo, as deployed.
    assert_eq!(env["OBA_DATABASE_MAX_CONNECTIONS"], "10");
    assert_eq!(env["RUST_LOG"], "info");

    let env: Vec<(String, String)> = env.into_iter().collect();
    let _post_service = spawn_until(oba(&["serve", "post-service"], &env), "listening on");

    let deadline = Instant::now() + Duration::from_secs(10);
    let token = loop {
        let registered = graphql(
            &edge,
            None,
            r#"mutation { register(input: {username: "dev", email: "dev@example.com", password: "password"}) { token } }"#,
        )
        .await;
        if let Some(token) = registered["data"]["register"]["token"].as_str() {
            break token.to_owned();
        }
        assert!(Instant::now() < deadline, "{registered}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let created = graphql(
        &edge,
        Some(&token),
        r#"mutation { createPost(input: {title: "From source", body: "joined"}) { slug author { username } } }"#,
    )
    .await;
    assert_eq!(
        created["data"]["createPost"]["author"]["username"], "dev",
        "{created}"
    );
    let listed = graphql(&edge, None, "{ posts { totalCount } }").await;
    assert_eq!(listed["data"]["posts"]["totalCount"], 1, "{listed}");

    // post.created from the service run from source reaches oba up's rank-service.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let trending = graphql(&edge, None, "{ trending(first: 5) { slug } }").await;
        if trending["data"]["trending"][0]["slug"] == "from-source" {
            break;
        }
        assert!(Instant::now() < deadline, "never ranked: {trending}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn oba_env_refuses_to_hand_out_a_bus_nobody_reads() {
    let data = tempfile::tempdir().expect("tempdir");
    let repo = config_repo().display().to_string();
    let output = oba(
        &["env", "post-service", "--config-repo", &repo],
        &[
            ("OBA_BASE_PORT".to_owned(), "18080".to_owned()),
            ("OBA_DATA_DIR".to_owned(), data.path().display().to_string()),
        ],
    )
    .stderr(Stdio::piped())
    .output()
    .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OBA_BUS_URL: is needed to run a service beside oba up"),
        "{stderr}"
    );
}

#[test]
fn skipping_a_service_needs_a_fixed_base_port() {
    let data = tempfile::tempdir().expect("tempdir");
    let output = oba(
        &["up", "--skip", "post-service"],
        &[
            ("OBA_BASE_PORT".to_owned(), "0".to_owned()),
            ("OBA_DATA_DIR".to_owned(), data.path().display().to_string()),
        ],
    )
    .stderr(Stdio::piped())
    .output()
    .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("OBA_BASE_PORT: must be a fixed port")
    );
}
