//! Running the system: health, readiness and metrics on every port, the gRPC health protocol,
//! graceful shutdown, and start-up refusing bad configuration with a clear line.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use oba::Service;
use serde_json::json;
use support::TestSystem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn every_service_answers_health_readiness_and_metrics() {
    let app = TestSystem::start().await;
    for service in Service::ALL {
        let base = format!("http://{}", app.addr(service));
        for (path, expected) in [("/healthz", "ok"), ("/readyz", "ready")] {
            let response = app
                .http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 200, "{} {path}", service.name());
            assert_eq!(response.text().await.expect("body"), expected);
        }
        let metrics = app
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("sent");
        assert_eq!(metrics.status(), 200);
        let content_type = metrics.headers()["content-type"].to_str().expect("ascii");
        assert!(content_type.starts_with("application/openmetrics-text"));
        let text = metrics.text().await.expect("body");
        assert!(text.ends_with("# EOF\n"), "not OpenMetrics: {text}");
    }
}

#[tokio::test]
async fn grpc_calls_are_counted_and_the_health_protocol_answers() {
    let app = TestSystem::start().await;
    app.register("kim").await;
    let user_service = format!("http://{}", app.addr(Service::UserService));
    let metrics = app
        .http
        .get(format!("{user_service}/metrics"))
        .send()
        .await
        .expect("sent");
    let text = metrics.text().await.expect("body");
    assert!(
        text.contains("service=\"user-service\",method=\"/oba.user.v1.UserService/Register\"} 1"),
        "{text}"
    );
    // Each service counts only its own calls, even in one process.
    let post_service = format!("http://{}", app.addr(Service::PostService));
    let post_metrics = app
        .http
        .get(format!("{post_service}/metrics"))
        .send()
        .await
        .expect("sent");
    assert!(
        !post_metrics
            .text()
            .await
            .expect("body")
            .contains("Register")
    );

    let channel = tonic::transport::Endpoint::from_shared(user_service)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "oba.user.v1.UserService".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        reply.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn an_in_flight_request_completes_during_shutdown() {
    let mut app = TestSystem::start().await;
    let addr = app.addr(Service::BlogAggregator);
    let body = json!({ "query": "{ posts { edges { cursor } } }" }).to_string();
    let (head, tail) = body.split_at(body.len() / 2);

    // Send the headers and half the body: the request is now in flight.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /graphql HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{head}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = tokio::spawn(async move { app.stop().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown must wait for the request in flight"
    );

    stream.write_all(tail.as_bytes()).await.expect("write rest");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"edges\":[]"), "{response}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown finishes once drained")
        .expect("joined");
}

fn oba() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oba"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `oba` to completion and returns its exit code and stderr.
fn run_to_exit(command: &mut Command) -> (Option<i32>, String) {
    let output = command.output().expect("oba runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn unparsable_setting_exits_non_zero_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stderr) = run_to_exit(oba().current_dir(dir.path()).env("OBA_BASE_PORT", "eighty"));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("OBA_BASE_PORT: invalid value \"eighty\""),
        "{stderr}"
    );

    // A setting each service reads for itself reaches the services `up` starts.
    let (code, stderr) = run_to_exit(
        oba()
            .current_dir(dir.path())
            .env("OBA_BASE_PORT", "0")
            .env("OBA_SQLITE_SYNCHRONOUS", "off"),
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("OBA_SQLITE_SYNCHRONOUS: invalid value \"off\""),
        "{stderr}"
    );

    let (code, stderr) = run_to_exit(
        oba()
            .current_dir(dir.path())
            .args(["serve", "blog-aggregator"])
            .env("OBA_LISTEN_ADDR", "here:there"),
    );
    assert_eq!(code, Some(2));
    // Every problem at once: the bad address and each missing setting, one line each.
    for key in [
        "OBA_LISTEN_ADDR",
        "OBA_USER_SERVICE_URL",
        "OBA_POST_SERVICE_URL",
        "OBA_TOKEN_PUBLIC_KEY_FILE",
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(&format!("{key}: "))),
            "{key} missing in {stderr}"
        );
    }
}

#[test]
fn unreachable_database_exits_non_zero_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (keys, _) = oba_kit::auth::ensure_dev_keypair(dir.path()).expect("keys");
    let (code, stderr) = run_to_exit(
        oba()
            .args(["serve", "post-service"])
            .env("OBA_TOKEN_PUBLIC_KEY_FILE", &keys.public_key)
            .env("OBA_BUS_URL", "nats://127.0.0.1:1")
            .env("OBA_LISTEN_ADDR", "127.0.0.1:0")
            .env("OBA_DATABASE_URL", "postgres://nobody@127.0.0.1:1/oba_post")
            .env("OBA_DATABASE_CONNECT_TIMEOUT_SECS", "2"),
    );
    assert_eq!(code, Some(2));
    let line = stderr
        .lines()
        .find(|l| l.contains("OBA_DATABASE_URL"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("cannot connect"), "{line}");
}

#[test]
fn a_service_alone_without_a_bus_is_refused_with_the_other_problems() {
    let (code, stderr) = run_to_exit(
        oba()
            .args(["serve", "like-service"])
            .env("OBA_LISTEN_ADDR", "127.0.0.1:0"),
    );
    assert_eq!(code, Some(2));
    // Reported before anything connects, one line each.
    for key in [
        "OBA_BUS_URL",
        "OBA_DATABASE_URL",
        "OBA_POST_SERVICE_URL",
        "OBA_TOKEN_PUBLIC_KEY_FILE",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("{key}: is required"))),
            "{key} missing in {stderr}"
        );
    }
}

#[test]
fn missing_key_file_exits_non_zero_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stderr) = run_to_exit(
        oba()
            .args(["serve", "user-service"])
            .env("OBA_LISTEN_ADDR", "127.0.0.1:0")
            .env(
                "OBA_DATABASE_URL",
                format!("sqlite://{}/u.db?mode=rwc", dir.path().display()),
            )
            .env("OBA_BUS_URL", "nats://127.0.0.1:1")
            .env("OBA_TOKEN_PRIVATE_KEY_FILE", dir.path().join("absent.pem"))
            .env(
                "OBA_TOKEN_PUBLIC_KEY_FILE",
                dir.path().join("absent.pub.pem"),
            ),
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("OBA_TOKEN_PRIVATE_KEY_FILE: cannot read"),
        "{stderr}"
    );
}

#[test]
fn up_prints_its_urls_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = oba()
        .current_dir(dir.path())
        .env("OBA_BASE_PORT", "0")
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        lines.push(line);
    }
    // The web pages' address comes first, right under the headline.
    let web = lines[1].trim().strip_prefix("Web:").map(str::trim);
    assert!(
        web.is_some_and(|url| url.starts_with("http://") && url.ends_with('/')),
        "{lines:?}"
    );
    let graphql = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("GraphQL:"))
        .unwrap_or_else(|| panic!("no GraphQL URL in {lines:?}"))
        .trim()
        .to_owned();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("GraphiQL:") && l.contains("/graphiql"))
    );
    assert!(
        dir.path().join("data").join("user.db").exists(),
        "data dir created under ./data"
    );

    // A real request through the printed URL.
    let mut stream = std::net::TcpStream::connect(
        graphql
            .trim_start_matches("http://")
            .trim_end_matches("/graphql"),
    )
    .expect("connect");
    let body = r#"{"query":"{ posts { edges { cursor } } }"}"#;
    write!(stream, "POST /graphql HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert_eq!(exit.code(), Some(0));
}
