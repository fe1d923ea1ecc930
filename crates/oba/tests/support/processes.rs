//! Production mode for tests: each service in its own `oba serve` process, each with a
//! fresh PostgreSQL database (created by `oba migrate`, dropped afterwards).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use oba::Service;
use oba_kit::auth::ensure_dev_keypair;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::proxy::TcpProxy;

pub struct Processes {
    children: BTreeMap<Service, Child>,
    /// Further replicas started by [`Processes::start_replica`], by address.
    replicas: BTreeMap<SocketAddr, Child>,
    addrs: BTreeMap<Service, SocketAddr>,
    env: Vec<(String, String)>,
    database_urls: BTreeMap<Service, String>,
    admin_url: String,
    bus_url: String,
    /// Database-name prefix and bus namespace (stream) of this run.
    tag: String,
    log_dir: PathBuf,
    /// Between the services and PostgreSQL, to cut the database off in outage tests.
    pub db_proxy: Option<TcpProxy>,
    /// Between the services and NATS, to cut the bus off.
    pub bus_proxy: Option<TcpProxy>,
}

fn oba_command(args: &[&str], env: &[(String, String)], log: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oba"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    command
}

impl Processes {
    /// Starts user-service, post-service and the edge as separate processes on PostgreSQL.
    pub async fn start(
        admin_url: String,
        bus_url: String,
        data_dir: &Path,
        with_db_proxy: bool,
        with_bus_proxy: bool,
        settings: &[(&str, &str)],
    ) -> Self {
        let (keys, _) = ensure_dev_keypair(data_dir).expect("keys");
        let run = uuid::Uuid::now_v7().simple().to_string();
        let tag = format!("oba_t{}", &run[run.len() - 10..]);
        let server = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(s, _)| s);
        let db_proxy = if with_db_proxy {
            let target = server.rsplit_once('@').map_or(server, |(_, h)| h);
            let target = target
                .trim_start_matches("postgres://")
                .trim_start_matches("postgresql://");
            Some(TcpProxy::start(target.parse().expect("host:port in OBA_TEST_DATABASE_URL")).await)
        } else {
            None
        };
        let bus_proxy = if with_bus_proxy {
            let target = bus_url.trim_start_matches("nats://");
            Some(TcpProxy::start(target.parse().expect("host:port in OBA_TEST_NATS_URL")).await)
        } else {
            None
        };
        let service_bus_url = bus_proxy
            .as_ref()
            .map_or_else(|| bus_url.clone(), |p| format!("nats://{}", p.addr));
        let mut processes = Self {
            children: BTreeMap::new(),
            replicas: BTreeMap::new(),
            addrs: BTreeMap::new(),
            env: vec![
                (
                    "OBA_TOKEN_PRIVATE_KEY_FILE".into(),
                    keys.private_key.display().to_string(),
                ),
                (
                    "OBA_TOKEN_PUBLIC_KEY_FILE".into(),
                    keys.public_key.display().to_string(),
                ),
                ("OBA_DATABASE_CONNECT_TIMEOUT_SECS".into(), "2".into()),
                ("OBA_ADMIN_EMAIL".into(), super::ADMIN_EMAIL.into()),
                (
                    "OBA_CORS_ALLOWED_ORIGINS".into(),
                    "http://localhost:4100".into(),
                ),
                ("OBA_ADMIN_PASSWORD".into(), super::ADMIN_PASSWORD.into()),
                ("OBA_BUS_URL".into(), service_bus_url),
                ("OBA_BUS_NAMESPACE".into(), tag.clone()),
            ],
            database_urls: BTreeMap::new(),
            admin_url: admin_url.clone(),
            bus_url: bus_url.clone(),
            tag: tag.clone(),
            log_dir: data_dir.to_owned(),
            db_proxy,
            bus_proxy,
        };
        processes.env.extend(
            settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        // The edge's service credential, made the way an operator makes it.
        let service_token = data_dir.join("service-token");
        processes
            .run_to_end(
                &[
                    "service-token",
                    "blog-aggregator",
                    &service_token.display().to_string(),
                ],
                &[],
            )
            .await;
        processes.env.push((
            "OBA_SERVICE_TOKEN_FILE".into(),
            service_token.display().to_string(),
        ));
        for (service, name) in Service::ALL
            .into_iter()
            .filter_map(|s| Some((s, s.database_name(&tag)?)))
        {
            let direct = format!("{server}/{name}");
            let url = match &processes.db_proxy {
                Some(proxy) => {
                    direct.replacen(&proxy.target.to_string(), &proxy.addr.to_string(), 1)
                }
                None => direct.clone(),
            };
            // Recorded before migrating, so that Drop removes it even if migrating fails.
            processes.database_urls.insert(service, url);
            processes
                .run_to_end(
                    &["migrate", service.name()],
                    &[("OBA_DATABASE_URL", &direct)],
                )
                .await;
        }
        for service in Service::ALL {
            processes.start_service(service).await;
        }
        processes
    }

    async fn run_to_end(&self, args: &[&str], extra: &[(&str, &str)]) {
        let mut env = self.env.clone();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let status = oba_command(args, &env, &self.log_dir.join("migrate.log"))
            .stdout(Stdio::null())
            .status()
            .await
            .expect("oba runs");
        assert!(
            status.success(),
            "oba {args:?} failed:\n{}",
            std::fs::read_to_string(self.log_dir.join("migrate.log")).unwrap_or_default()
        );
    }

    /// Starts `service` again on `addr`, the port it had. While it was down, the port was
    /// free for anyone: a client's connection may hold it for a moment (one that connects to
    /// a port of the ephemeral range with no listener can even be given that very port as
    /// its own), so a start that finds it in use is tried again.
    async fn relaunch(&self, service: Service, addr: SocketAddr) -> (SocketAddr, Child) {
        const TRIES: u32 = 40;
        for _ in 1..TRIES {
            match self.try_launch(service, Some(addr), &[]).await {
                Ok(started) => return started,
                Err(log) if log.contains("Address already in use") => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(log) => panic!("{} exited:\n{log}", service.name()),
            }
        }
        self.launch(service, Some(addr), &[]).await
    }

    /// Starts another replica of `service` on the same database and bus, with `overrides`
    /// of its settings (e.g. an edge pointed at other replicas); returns its address.
    pub async fn start_replica(
        &mut self,
        service: Service,
        overrides: &[(&str, String)],
    ) -> SocketAddr {
        let (addr, child) = self.launch(service, None, overrides).await;
        self.replicas.insert(addr, child);
        addr
    }

    /// Kills the replica at `addr` with SIGKILL.
    pub async fn kill_replica(&mut self, addr: SocketAddr) {
        if let Some(mut child) = self.replicas.remove(&addr) {
            child.kill().await.expect("kill");
        }
    }

    async fn launch(
        &self,
        service: Service,
        addr: Option<SocketAddr>,
        overrides: &[(&str, String)],
    ) -> (SocketAddr, Child) {
        self.try_launch(service, addr, overrides)
            .await
            .unwrap_or_else(|log| panic!("{} exited:\n{log}", service.name()))
    }

    /// Starts `service` and waits until it listens; `Err` with what it logged if it exits
    /// first.
    async fn try_launch(
        &self,
        service: Service,
        addr: Option<SocketAddr>,
        overrides: &[(&str, String)],
    ) -> Result<(SocketAddr, Child), String> {
        let mut env = self.env.clone();
        let listen = addr.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        env.push(("OBA_LISTEN_ADDR".into(), listen));
        if let Some(url) = self.database_urls.get(&service) {
            env.push(("OBA_DATABASE_URL".into(), url.clone()));
        }
        for (peer, addr) in &self.addrs {
            if let Some(key) = peer.url_key() {
                env.push((key.into(), format!("http://{addr}")));
            }
        }
        env.extend(overrides.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let log = self.log_dir.join(format!("{}.log", service.name()));
        // The log is appended to: what this start wrote begins at its present end.
        let logged_before = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let mut child = oba_command(&["serve", service.name()], &env, &log)
            .spawn()
            .expect("spawn oba serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{} did not start; see {}", service.name(), log.display()))
            .expect("read stdout")
        else {
            let logged = std::fs::read(&log).unwrap_or_default();
            return Err(
                String::from_utf8_lossy(logged.get(logged_before..).unwrap_or_default())
                    .into_owned(),
            );
        };
        let addr: SocketAddr = line
            .rsplit_once("http://")
            .and_then(|(_, a)| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Ok((addr, child))
    }

    pub fn addr(&self, service: Service) -> Option<SocketAddr> {
        self.addrs.get(&service).copied()
    }

    /// The database of `service` (all its replicas share it).
    pub fn database_url(&self, service: Service) -> Option<&str> {
        self.database_urls.get(&service).map(String::as_str)
    }

    /// The JetStream stream (and subject prefix) of this run.
    pub fn stream(&self) -> &str {
        &self.tag
    }

    pub fn edge_url(&self) -> String {
        format!("http://{}", self.addrs[&Service::BlogAggregator])
    }

    /// Kills one service with SIGKILL: no draining, no clean-up, whatever it was doing.
    pub async fn kill_service(&mut self, service: Service) {
        if let Some(mut child) = self.children.remove(&service) {
            child.kill().await.expect("kill");
        }
    }

    /// Sends `signal` (`STOP` to hang a service as a stuck process would, `CONT` to let it
    /// go on) to one service.
    pub async fn signal_service(&mut self, service: Service, signal: &str) {
        let pid = self
            .children
            .get(&service)
            .and_then(Child::id)
            .expect("running service");
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .await;
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    }

    /// Stops one service with SIGTERM and waits for it to exit; it must exit 0.
    pub async fn stop_service(&mut self, service: Service) {
        let Some(mut child) = self.children.remove(&service) else {
            return;
        };
        if let Some(pid) = child.id() {
            let killed = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            assert!(killed.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        }
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("service stops within 30 s")
            .expect("wait");
        assert!(status.success(), "{} exited with {status}", service.name());
    }

    /// Starts `service`, on its old address if it had one, and waits until it listens.
    pub async fn start_service(&mut self, service: Service) {
        let (addr, child) = match self.addrs.get(&service).copied() {
            Some(addr) => self.relaunch(service, addr).await,
            None => self.launch(service, None, &[]).await,
        };
        self.addrs.insert(service, addr);
        self.children.insert(service, child);
    }

    /// Stops every service, edge first.
    pub async fn stop_all(&mut self) {
        for service in Service::ALL.into_iter().rev() {
            self.stop_service(service).await;
        }
    }

    /// Starts every service again on the same databases and addresses.
    pub async fn start_all(&mut self) {
        for service in Service::ALL {
            self.start_service(service).await;
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.children.values_mut().chain(self.replicas.values_mut()) {
            let _ = child.start_kill();
        }
        let names: Vec<String> = self
            .database_urls
            .values()
            .filter_map(|u| u.rsplit_once('/').map(|(_, n)| n.to_owned()))
            .collect();
        remove_run_state(&self.admin_url, names, &self.bus_url, &self.tag);
    }
}

/// Drops a test run's databases and its JetStream stream (which may never have been
/// created); callable from `Drop`, inside or outside a runtime.
pub fn remove_run_state(admin_url: &str, databases: Vec<String>, bus_url: &str, stream: &str) {
    let (admin_url, bus_url, stream) =
        (admin_url.to_owned(), bus_url.to_owned(), stream.to_owned());
    super::databases::run_detached(async move {
        super::databases::drop_databases(&admin_url, &databases).await;
        if let Ok(client) = async_nats::connect(bus_url.as_str()).await {
            let _ = async_nats::jetstream::new(client)
                .delete_stream(&stream)
                .await;
        }
    });
}
