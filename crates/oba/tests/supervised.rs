//! `oba up --database-url … --bus-url … --replicas N`: production mode on one host, every
//! service a supervised process of its own, on the real PostgreSQL and NATS of this machine.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use oba::Service;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A supervisor started by a test, and what its run leaves behind to remove.
struct Supervisor {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    admin_url: String,
    tag: String,
    _data: tempfile::TempDir,
}

impl Supervisor {
    async fn start(replicas: u8) -> Self {
        let admin_url = std::env::var("OBA_TEST_DATABASE_URL").expect("OBA_TEST_DATABASE_URL");
        let bus_url = std::env::var("OBA_TEST_NATS_URL").expect("OBA_TEST_NATS_URL");
        let server = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(s, _)| s)
            .to_owned();
        let run = uuid::Uuid::now_v7().simple().to_string();
        let tag = format!("oba_s{}", &run[run.len() - 10..]);
        let data = tempfile::tempdir().expect("data dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_oba"))
            .args([
                "up",
                "--database-url",
                &format!("{server}/{tag}"),
                "--bus-url",
                &bus_url,
                "--replicas",
                &replicas.to_string(),
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("OBA_BASE_PORT", "0")
            .env("OBA_DATA_DIR", data.path())
            .env("OBA_BUS_NAMESPACE", &tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("oba up starts");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            admin_url,
            tag,
            _data: data,
        }
    }

    /// The next printed line that `wanted` accepts, skipping others.
    async fn line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(90), self.lines.recv())
                .await
                .expect("printed in time")
                .expect("oba up is still running");
            if wanted(&line) {
                return line;
            }
        }
    }

    /// The table printed once everything listens: replica label → (URL, pid).
    async fn table(&mut self) -> BTreeMap<String, (String, u32)> {
        self.line(|l| l.starts_with("oba is up")).await;
        let mut table = BTreeMap::new();
        loop {
            let line = self.line(|_| true).await;
            if line.starts_with("Press Ctrl-C") {
                return table;
            }
            // "  post-service #2   http://127.0.0.1:40000  (pid 123)"
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [service, number, url, "(pid", pid] = words.as_slice() {
                let pid = pid.trim_end_matches(')').parse().expect("pid");
                table.insert(format!("{service} {number}"), ((*url).to_owned(), pid));
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let databases = Service::ALL
            .into_iter()
            .filter_map(|s| s.database_name(&self.tag))
            .collect();
        let bus_url = std::env::var("OBA_TEST_NATS_URL").unwrap_or_default();
        support::processes::remove_run_state(&self.admin_url, databases, &bus_url, &self.tag);
    }
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

async fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn up_with_a_database_runs_supervised_replicas_of_every_service() {
    let mut supervisor = Supervisor::start(2).await;
    let table = supervisor.table().await;
    for service in [
        "user-service",
        "post-service",
        "comment-service",
        "like-service",
        "rank-service",
        "notification-service",
        "blog-aggregator",
    ] {
        for n in ["#1", "#2"] {
            assert!(
                table.contains_key(&format!("{service} {n}")),
                "{service} {n} in {table:?}"
            );
        }
    }
    let edge_1 = table["blog-aggregator #1"].0.clone();
    let edge_2 = table["blog-aggregator #2"].0.clone();

    // A write through one edge is read through the other.
    let http = reqwest::Client::new();
    let registered: Value = http
        .post(format!("{edge_1}/api/users"))
        .json(&json!({ "user": { "username": "ines", "email": "ines@example.com", "password": "password-of-ines" } }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let token = registered["user"]["token"].as_str().expect("token");
    let created = http
        .post(format!("{edge_1}/api/articles"))
        .header("authorization", format!("Token {token}"))
        .json(&json!({ "article": { "title": "Supervised", "description": "d", "body": "b", "tagList": [] } }))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    let read = http
        .get(format!("{edge_2}/api/articles/supervised"))
        .send()
        .await
        .expect("sent");
    assert_eq!(read.status(), 200);

    // A replica killed outright comes back on its address.
    let (post_2, old_pid) = table["post-service #2"].clone();
    kill("KILL", old_pid).await;
    let restarted = supervisor
        .line(|l| l.starts_with("post-service #2 restarted"))
        .await;
    assert!(restarted.contains(&post_2), "{restarted} on {post_2}");
    let new_pid: u32 = restarted
        .rsplit_once("(pid ")
        .and_then(|(_, p)| p.trim_end_matches(')').parse().ok())
        .expect("pid of the restarted replica");

    // SIGTERM stops every process, and the supervisor exits cleanly.
    let mut pids: Vec<u32> = table.values().map(|(_, pid)| *pid).collect();
    pids.push(new_pid);
    kill("TERM", supervisor.child.id().expect("pid")).await;
    let status = tokio::time::timeout(Duration::from_secs(60), supervisor.child.wait())
        .await
        .expect("stopped within 60 s")
        .expect("wait");
    assert!(status.success(), "oba up exited with {status}");
    let left: Vec<u32> = pids
        .into_iter()
        .filter(|p| *p != old_pid && alive(*p))
        .collect();
    assert!(left.is_empty(), "still running: {left:?}");
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn processes_stop_themselves_when_their_supervisor_is_killed() {
    let mut supervisor = Supervisor::start(1).await;
    let table = supervisor.table().await;
    kill("KILL", supervisor.child.id().expect("pid")).await;
    let mut left: Vec<u32> = table.values().map(|(_, pid)| *pid).collect();
    for _ in 0..100 {
        left.retain(|p| alive(*p));
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("orphans still running after 20 s: {left:?}");
}

#[tokio::test]
async fn up_reports_every_flag_problem_at_once() {
    let output = Command::new(env!("CARGO_BIN_EXE_oba"))
        .args(["up", "--database-url", "mysql://db", "--replicas", "12"])
        .env_clear()
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in ["--database-url", "--bus-url", "--replicas"] {
        assert!(stderr.contains(key), "{key} missing from {stderr}");
    }
}
