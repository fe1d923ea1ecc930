//! Production mode on one host: `oba up --database-url postgres://… --bus-url nats://…
//! [--replicas N]` runs every service as its own `oba serve` process (N of each), on
//! PostgreSQL and NATS JetStream, the way the containers run them.
//!
//! Start-up checks every service's settings at once, creates and migrates each service's
//! database, then starts the services in `Service::ALL` order (peers before their callers),
//! each replica on its own port, and hands every caller the list of its peer's replicas (a
//! balanced peer URL). A process that exits on its own is restarted on the same address,
//! after a back-off that doubles up to 30 s while it keeps failing.
//!
//! Shutdown: on Ctrl-C/SIGTERM the edges get SIGTERM first and drain while the services
//! behind them still answer; then the other services, in reverse start order. A process
//! that has not exited after the drain timeout is killed. A supervisor killed outright
//! cannot stop anything: each process it starts stops itself when its parent is gone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU8;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use oba_kit::config::{ConfigError, Env, Setting};
use oba_kit::shutdown::CancellationToken;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::{DRAIN_TIMEOUT, Service, StartError, UpConfig};

/// Ports of replica `r` are those of the first plus `r` times this (8080…8086, 8090…).
const REPLICA_PORT_STRIDE: u16 = 10;
/// The first restart waits this long; each failure in a row doubles it, up to the cap.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A process that ran this long before exiting is restarted without waiting for long.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// How long a starting process may take to listen (it connects its database and bus).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What production mode on one host needs besides `oba up`'s own settings.
#[derive(Debug, Clone)]
pub struct SeparateProcesses {
    /// A PostgreSQL server; each service gets the database `<name>_<service>` on it, where
    /// `<name>` is the URL's database name (`oba` when it has none).
    pub database_url: Setting<String>,
    pub bus_url: Setting<String>,
    pub replicas: NonZeroU8,
}

impl SeparateProcesses {
    /// Checks the flags together: every problem is reported at once.
    pub fn from_flags(
        database_url: Option<String>,
        bus_url: Option<String>,
        replicas: NonZeroU8,
    ) -> Result<Option<Self>, ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: &str| {
            problems.push(oba_kit::config::Problem {
                key: key.to_owned(),
                message: message.to_owned(),
            });
        };
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            problem(
                "--database-url",
                "must be a PostgreSQL URL (postgres://user@host:5432[/name])",
            );
        }
        if database_url.is_some() && bus_url.is_none() {
            problem(
                "--bus-url",
                "is required with --database-url: separate processes need a NATS server with \
                 JetStream (e.g. nats://127.0.0.1:4222)",
            );
        }
        if replicas.get() > 1 && database_url.is_none() {
            problem(
                "--replicas",
                "needs --database-url and --bus-url: replicas are separate processes sharing \
                 PostgreSQL and NATS",
            );
        }
        if replicas.get() > 9 {
            problem("--replicas", "at most 9 replicas of each service");
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(match (database_url, bus_url) {
            (Some(database_url), Some(bus_url)) => Some(Self {
                database_url: Setting::new("--database-url", database_url),
                bus_url: Setting::new("--bus-url", bus_url),
                replicas,
            }),
            _ => None,
        })
    }

    /// The database URL of `service` (which has a database): the server of `--database-url`,
    /// its query (sslmode=…) kept, the database named by [`Service::database_name`].
    fn database_of(&self, service: Service) -> Option<String> {
        let (url, query) = match self.database_url.value.split_once('?') {
            Some((url, query)) => (url, format!("?{query}")),
            None => (self.database_url.value.as_str(), String::new()),
        };
        let url = url.trim_end_matches('/');
        let path_start = url.find("://").map_or(0, |i| i + 3);
        let (server, prefix) = match url[path_start..].split_once('/') {
            Some((host, name)) => (&url[..path_start + host.len()], name),
            None => (url, ""),
        };
        let prefix = if prefix.is_empty() { "oba" } else { prefix };
        Some(format!(
            "{server}/{}{query}",
            service.database_name(prefix)?
        ))
    }
}

/// One replica of one service, as the supervisor runs it.
#[derive(Clone)]
struct Replica {
    service: Service,
    index: u8,
    env: BTreeMap<String, String>,
}

impl Replica {
    fn label(&self) -> String {
        format!("{} #{}", self.service.name(), self.index + 1)
    }

    /// Starts the process and waits until it listens; its address and the process.
    async fn launch(&self, exe: &PathBuf) -> Result<(SocketAddr, Child), StartError> {
        let mut child = Command::new(exe)
            .args(["serve", self.service.name()])
            .envs(&self.env)
            .env("OBA_STOP_WITH_PARENT", "true")
            // Its own process group: Ctrl-C reaches the supervisor only, which stops the
            // processes in order (edges first) instead of all at once.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| StartError::Io(format!("cannot start {}: {e}", self.label())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| StartError::Io(format!("no stdout of {}", self.label())))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| StartError::Io(format!("{} did not listen in time", self.label())))?
            .map_err(|e| StartError::Io(format!("reading {}: {e}", self.label())))?
            .ok_or_else(|| {
                StartError::Io(format!(
                    "{} exited while starting (see above)",
                    self.label()
                ))
            })?;
        let addr = first
            .rsplit_once("http://")
            .and_then(|(_, a)| a.parse().ok())
            .ok_or_else(|| StartError::Io(format!("{}: unexpected {first:?}", self.label())))?;
        // Keeps the pipe open: a service writing to a closed stdout would fail.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{line}");
            }
        });
        Ok((addr, child))
    }
}

/// Runs every service as separate processes until `shutdown`, restarting any that exit.
pub async fn run(
    config: UpConfig,
    separate: SeparateProcesses,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let started = Instant::now();
    let exe = std::env::current_exe()
        .map_err(|e| StartError::Io(format!("cannot find the oba binary: {e}")))?;
    std::fs::create_dir_all(&config.data_dir.value).map_err(|e| {
        config.data_dir.problem(format!(
            "cannot create {}: {e}",
            config.data_dir.value.display()
        ))
    })?;
    let replicas = separate.replicas.get();
    let listen = |service: Service, index: u8| -> Result<SocketAddr, ConfigError> {
        let mut addr = config.addr(service)?;
        if addr.port() != 0 {
            let port = u16::from(index)
                .checked_mul(REPLICA_PORT_STRIDE)
                .and_then(|offset| addr.port().checked_add(offset))
                .ok_or_else(|| config.base_port.problem("leaves no room for the replicas"))?;
            addr.set_port(port);
        }
        Ok(addr)
    };

    // Every replica's environment, checked before anything starts.
    let first_addrs: BTreeMap<Service, SocketAddr> = Service::ALL
        .into_iter()
        .map(|s| Ok((s, listen(s, 0)?)))
        .collect::<Result<_, ConfigError>>()?;
    let mut common = crate::up_env(&config, &first_addrs)?;
    common.default_to("OBA_BUS_URL", separate.bus_url.value.clone());
    let mut problems = Vec::new();
    for service in Service::ALL {
        let mut env = common.clone();
        if let Some(url) = separate.database_of(service) {
            env.default_to("OBA_DATABASE_URL", url);
        }
        if let Err(e) = service.check_config(&mut env) {
            problems.extend(e.problems);
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems }.into());
    }
    crate::ensure_dev_service_token(&config, &common)?;
    for service in Service::ALL {
        if let Some(url) = separate.database_of(service) {
            let mut env = Env::from_pairs(common.vars());
            env.set("OBA_DATABASE_URL", url);
            service.migrate(&mut env).await?;
        }
    }

    // Peers before their callers: each caller gets the list of its peer's replicas.
    let mut peer_urls: BTreeMap<Service, String> = BTreeMap::new();
    let mut running: Vec<(Replica, JoinHandle<()>, CancellationToken)> = Vec::new();
    let mut table = Vec::new();
    let launched = async {
        for service in Service::ALL {
            let mut addrs = Vec::new();
            for index in 0..replicas {
                let mut env: BTreeMap<String, String> = common
                    .vars()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                env.insert(
                    "OBA_LISTEN_ADDR".into(),
                    listen(service, index)?.to_string(),
                );
                if let Some(url) = separate.database_of(service) {
                    env.insert("OBA_DATABASE_URL".into(), url);
                }
                for (peer, url) in &peer_urls {
                    if let Some(key) = peer.url_key() {
                        env.insert(key.into(), url.clone());
                    }
                }
                let mut replica = Replica {
                    service,
                    index,
                    env,
                };
                let (addr, child) = replica.launch(&exe).await?;
                // A restart reuses the port, even one the system picked.
                replica
                    .env
                    .insert("OBA_LISTEN_ADDR".into(), addr.to_string());
                table.push((service, replica.label(), addr, child.id()));
                let stop = CancellationToken::new();
                let task =
                    tokio::spawn(supervise(exe.clone(), replica.clone(), child, stop.clone()));
                running.push((replica, task, stop));
                addrs.push(addr.to_string());
            }
            peer_urls.insert(service, format!("http://{}", addrs.join(",")));
        }
        Ok::<_, StartError>(())
    };
    let outcome = launched.await;
    if outcome.is_ok() {
        println!(
            "oba is up in {} ms, each service a process of its own (PostgreSQL, NATS):",
            started.elapsed().as_millis()
        );
        for (_, label, addr, pid) in &table {
            let pid = pid.map_or_else(String::new, |p| format!("  (pid {p})"));
            println!("  {label:<24} http://{addr}{pid}");
        }
        for (_, _, addr, _) in table.iter().filter(|r| r.0 == Service::BlogAggregator) {
            println!(
                "  Web: http://{addr}/  GraphQL: http://{addr}/graphql  GraphiQL: http://{addr}/graphiql"
            );
        }
        println!("Press Ctrl-C to stop.");
        shutdown.cancelled().await;
    }
    // Reverse start order: the edges (started last) drain first.
    for (replica, task, stop) in running.into_iter().rev() {
        stop.cancel();
        if task.await.is_err() {
            tracing::error!(replica = %replica.label(), "supervisor task failed");
        }
    }
    outcome
}

/// Keeps one replica running until `stop`: restarts it when it exits, then stops it.
async fn supervise(exe: PathBuf, replica: Replica, child: Child, stop: CancellationToken) {
    let mut child = Some(child);
    let mut backoff = RESTART_BACKOFF;
    loop {
        let since = Instant::now();
        if let Some(running) = child.as_mut() {
            tokio::select! {
                status = running.wait() => {
                    if since.elapsed() > HEALTHY_RUN {
                        backoff = RESTART_BACKOFF;
                    }
                    tracing::warn!(
                        replica = %replica.label(),
                        status = ?status.ok(),
                        ?backoff,
                        "exited on its own; restarting"
                    );
                    child = None;
                }
                () = stop.cancelled() => {
                    terminate(&replica, running).await;
                    return;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_CAP);
        match replica.launch(&exe).await {
            Ok((addr, restarted)) => {
                let pid = restarted.id().unwrap_or_default();
                println!("{} restarted: http://{addr} (pid {pid})", replica.label());
                child = Some(restarted);
            }
            Err(e) => tracing::error!(replica = %replica.label(), "restart failed: {e}"),
        }
    }
}

/// SIGTERM, then SIGKILL if the process has not drained in time.
async fn terminate(replica: &Replica, child: &mut Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
        tracing::warn!(replica = %replica.label(), "cannot signal: {e}");
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(status) => {
            tracing::warn!(replica = %replica.label(), ?status, "stopped with a failure");
        }
        Err(_) => {
            tracing::warn!(replica = %replica.label(), "did not drain in time; killing");
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn separate(url: &str) -> SeparateProcesses {
        SeparateProcesses::from_flags(
            Some(url.to_owned()),
            Some("nats://127.0.0.1:4222".to_owned()),
            NonZeroU8::MIN,
        )
        .expect("valid")
        .expect("separate")
    }

    #[test]
    fn each_service_gets_a_database_named_after_the_url() {
        let plain = separate("postgres://postgres@127.0.0.1:5432");
        assert_eq!(
            plain.database_of(Service::UserService).as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/oba_user")
        );
        assert_eq!(plain.database_of(Service::BlogAggregator), None);
        let unnamed = separate("postgres://db:5432/?sslmode=require");
        assert_eq!(
            unnamed.database_of(Service::PostService).as_deref(),
            Some("postgres://db:5432/oba_post?sslmode=require")
        );
        let named = separate("postgres://u:p@db:5432/blog?sslmode=disable");
        assert_eq!(
            named.database_of(Service::NotificationService).as_deref(),
            Some("postgres://u:p@db:5432/blog_notification?sslmode=disable")
        );
    }

    #[test]
    fn every_flag_problem_is_reported_at_once() {
        let replicas = NonZeroU8::new(12).expect("12");
        let err = SeparateProcesses::from_flags(Some("mysql://x".into()), None, replicas)
            .expect_err("three problems");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["--database-url", "--bus-url", "--replicas"]);
        assert!(
            SeparateProcesses::from_flags(None, None, NonZeroU8::MIN)
                .expect("in-process")
                .is_none()
        );
    }
}
