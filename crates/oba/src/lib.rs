//! The oba binary's library: starting the services, all in one process (`up`) or one alone
//! (`serve`).
//!
//! Both modes build each service the same way (its crate's `app`); they differ only in the
//! configuration they hand it. `up` binds every listener first, so that each service knows
//! its peers' real addresses even when the ports are ephemeral (tests use port 0).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use oba_kit::auth::{TokenSigner, ensure_dev_keypair};
use oba_kit::bus::{Bus, InProcessBus};
use oba_kit::config::{ConfigError, Env, Setting};
use oba_kit::db::{self, DbConfig};
use oba_kit::server::{self, ServiceApp};
use oba_kit::shutdown::CancellationToken;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub mod bench;
mod supervisor;
pub use supervisor::{SeparateProcesses, run as run_separate};

/// The services this binary can run, in start-up order (peers before the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Service {
    UserService,
    PostService,
    CommentService,
    LikeService,
    RankService,
    NotificationService,
    BlogAggregator,
}

impl Service {
    /// Consumers first, so they stop last: in `oba up` they take in every event the
    /// publishers' relays send while stopping.
    pub const ALL: [Service; 7] = [
        Self::RankService,
        Self::NotificationService,
        Self::UserService,
        Self::PostService,
        Self::CommentService,
        Self::LikeService,
        Self::BlogAggregator,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::UserService => user_service::NAME,
            Self::PostService => post_service::NAME,
            Self::CommentService => comment_service::NAME,
            Self::LikeService => like_service::NAME,
            Self::RankService => rank_service::NAME,
            Self::NotificationService => notification_service::NAME,
            Self::BlogAggregator => blog_aggregator::NAME,
        }
    }

    /// Reads the service's configuration from `env` and builds it; `bus` is the shared
    /// in-process bus of `oba up` (None when the service runs alone).
    pub async fn app(self, env: &mut Env, bus: Option<Bus>) -> Result<ServiceApp, ConfigError> {
        match self {
            Self::UserService => {
                let config = user_service::Config::from_env(env);
                env.finish()?;
                user_service::app(&config, bus).await
            }
            Self::PostService => {
                let config = post_service::Config::from_env(env);
                env.finish()?;
                post_service::app(&config, bus).await
            }
            Self::CommentService => {
                let config = comment_service::Config::from_env(env);
                env.finish()?;
                comment_service::app(&config, bus).await
            }
            Self::LikeService => {
                let config = like_service::Config::from_env(env);
                env.finish()?;
                like_service::app(&config, bus).await
            }
            Self::RankService => {
                let config = rank_service::Config::from_env(env);
                env.finish()?;
                rank_service::app(&config, bus).await
            }
            Self::NotificationService => {
                let config = notification_service::Config::from_env(env);
                env.finish()?;
                notification_service::app(&config, bus).await
            }
            Self::BlogAggregator => {
                let config = blog_aggregator::Config::from_env(env);
                env.finish()?;
                blog_aggregator::app(&config, bus).await
            }
        }
    }

    /// Whether the service publishes or consumes events (every service but the edge).
    pub fn has_bus(self) -> bool {
        self != Self::BlogAggregator
    }

    /// Every setting `oba serve <service>` reads, and whether it is required.
    pub fn settings(self) -> Vec<(String, bool)> {
        let mut env = Env::default();
        self.read_config(&mut env);
        env.read_settings()
            .map(|(k, r)| (k.to_owned(), r))
            .collect()
    }

    /// Whether `env` holds a valid configuration for `oba serve <service>`: every problem
    /// at once, before anything connects.
    pub fn check_config(self, env: &mut Env) -> Result<(), ConfigError> {
        self.read_config(env);
        env.finish()
    }

    /// Reads every setting of `oba serve <service>` from `env`, recording problems in it.
    fn read_config(self, env: &mut Env) {
        let _: Setting<SocketAddr> =
            env.parsed("OBA_LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)));
        if self.has_bus() {
            // Alone, a service has no in-process bus to fall back on.
            let _ = env.required("OBA_BUS_URL");
        }
        match self {
            Self::UserService => drop(user_service::Config::from_env(env)),
            Self::PostService => drop(post_service::Config::from_env(env)),
            Self::CommentService => drop(comment_service::Config::from_env(env)),
            Self::LikeService => drop(like_service::Config::from_env(env)),
            Self::RankService => drop(rank_service::Config::from_env(env)),
            Self::NotificationService => drop(notification_service::Config::from_env(env)),
            Self::BlogAggregator => drop(blog_aggregator::Config::from_env(env)),
        }
    }

    /// Creates the service's database if missing and applies its migrations (`oba migrate`).
    pub async fn migrate(self, env: &mut Env) -> Result<(), StartError> {
        let config = DbConfig::from_env(env);
        env.finish()?;
        if db::create_if_missing(&config).await? {
            tracing::info!(service = self.name(), "database created");
        }
        match self {
            Self::UserService => {
                db::connect_and_migrate::<user_service::storage::migration::Migrator>(&config)
                    .await?
            }
            Self::PostService => {
                db::connect_and_migrate::<post_service::storage::migration::Migrator>(&config)
                    .await?
            }
            Self::CommentService => {
                db::connect_and_migrate::<comment_service::storage::migration::Migrator>(&config)
                    .await?
            }
            Self::LikeService => {
                db::connect_and_migrate::<like_service::storage::migration::Migrator>(&config)
                    .await?
            }
            Self::RankService => {
                db::connect_and_migrate::<rank_service::storage::migration::Migrator>(&config)
                    .await?
            }
            Self::NotificationService => {
                db::connect_and_migrate::<notification_service::storage::migration::Migrator>(
                    &config,
                )
                .await?
            }
            Self::BlogAggregator => {
                return Err(StartError::Io(format!("{} has no database", self.name())));
            }
        }
        .close()
        .await
        .map_err(|e| StartError::Io(format!("closing the database: {e}")))
    }

    /// The offset of this service's port from `OBA_BASE_PORT` in `up`.
    fn port_offset(self) -> u16 {
        match self {
            Self::BlogAggregator => 0,
            Self::UserService => 1,
            Self::PostService => 2,
            Self::CommentService => 3,
            Self::LikeService => 4,
            Self::RankService => 5,
            Self::NotificationService => 6,
        }
    }

    /// The variable that tells the edge where this peer is.
    pub fn url_key(self) -> Option<&'static str> {
        match self {
            Self::UserService => Some("OBA_USER_SERVICE_URL"),
            Self::PostService => Some("OBA_POST_SERVICE_URL"),
            Self::CommentService => Some("OBA_COMMENT_SERVICE_URL"),
            Self::LikeService => Some("OBA_LIKE_SERVICE_URL"),
            Self::RankService => Some("OBA_RANK_SERVICE_URL"),
            Self::NotificationService => Some("OBA_NOTIFICATION_SERVICE_URL"),
            Self::BlogAggregator => None,
        }
    }

    /// The name of this service's database among others prefixed `prefix` (`oba` →
    /// `oba_user`), if it has one: what `oba up --database-url` creates.
    pub fn database_name(self, prefix: &str) -> Option<String> {
        let stem = self.database_file()?.trim_end_matches(".db");
        Some(format!("{prefix}_{stem}"))
    }

    /// The embedded database file of this service in `up`, if it has one.
    pub fn database_file(self) -> Option<&'static str> {
        match self {
            Self::UserService => Some("user.db"),
            Self::PostService => Some("post.db"),
            Self::CommentService => Some("comment.db"),
            Self::LikeService => Some("like.db"),
            Self::RankService => Some("rank.db"),
            Self::NotificationService => Some("notification.db"),
            Self::BlogAggregator => None,
        }
    }
}

/// Why the system could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Io(String),
}

/// The admin `oba up` creates when none is configured; documented in the README.
pub const DEV_ADMIN_EMAIL: &str = "admin@oba.local";
pub const DEV_ADMIN_PASSWORD: &str = "oba-dev-admin";

/// Settings of `oba up`.
#[derive(Debug, Clone)]
pub struct UpConfig {
    pub data_dir: Setting<PathBuf>,
    pub host: Setting<IpAddr>,
    /// The edge listens here, the other services on the ports after it; 0 makes every
    /// port ephemeral.
    pub base_port: Setting<u16>,
    pub token_ttl_secs: u64,
    /// Services not started here: run elsewhere (e.g. from source) at their usual address.
    pub skip: Vec<Service>,
    /// Variables passed through to every service (e.g. `OBA_TOKEN_*`).
    pub env: Env,
}

impl UpConfig {
    /// Where `service` listens in this layout: `OBA_BASE_PORT` plus the service's offset
    /// (port 0, ephemeral, when the base is 0).
    pub fn addr(&self, service: Service) -> Result<SocketAddr, ConfigError> {
        let port = match self.base_port.value {
            0 => 0,
            base => base.checked_add(service.port_offset()).ok_or_else(|| {
                self.base_port
                    .problem("leaves no room for the services after it")
            })?,
        };
        Ok(SocketAddr::new(self.host.value, port))
    }

    pub fn from_env(mut env: Env) -> Result<Self, ConfigError> {
        let config = Self {
            data_dir: env.parsed("OBA_DATA_DIR", PathBuf::from("data")),
            host: env.parsed("OBA_HOST", IpAddr::V4(Ipv4Addr::LOCALHOST)),
            base_port: env.parsed("OBA_BASE_PORT", 8080),
            token_ttl_secs: env.parsed("OBA_TOKEN_TTL_SECS", 86_400).value,
            skip: Vec::new(),
            env: env.clone(),
        };
        env.finish()?;
        Ok(config)
    }
}

/// A running set of services in this process.
///
/// Shutdown runs in reverse start order: the edge drains first, while the services behind
/// it still answer its in-flight requests; then each internal service drains in turn.
pub struct System {
    addrs: BTreeMap<Service, SocketAddr>,
    /// The in-process bus every service publishes to and consumes from.
    bus: Bus,
    shutdown: CancellationToken,
    /// Cancelled when any service ends on its own, which takes the others down.
    failed: CancellationToken,
    running: Vec<Running>,
}

struct Running {
    service: Service,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl System {
    /// Starts every service; returns once all listen.
    pub async fn up(config: UpConfig, shutdown: CancellationToken) -> Result<Self, StartError> {
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(&data_dir.value).map_err(|e| {
            data_dir.problem(format!("cannot create {}: {e}", data_dir.value.display()))
        })?;

        if !config.skip.is_empty() && config.base_port.value == 0 {
            return Err(config
                .base_port
                .problem("must be a fixed port to skip a service (its address must be known)")
                .into());
        }
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for service in Service::ALL {
            let addr = config.addr(service)?;
            if config.skip.contains(&service) {
                tracing::info!(service = service.name(), %addr, "skipped: expected to run elsewhere");
                addrs.insert(service, addr);
                continue;
            }
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                config.base_port.problem(format!(
                    "cannot listen on {addr} for {}: {e}",
                    service.name()
                ))
            })?;
            addrs.insert(
                service,
                listener
                    .local_addr()
                    .map_err(|e| StartError::Io(e.to_string()))?,
            );
            listeners.insert(service, listener);
        }

        let env = up_env(&config, &addrs)?;
        ensure_dev_service_token(&config, &env)?;
        // One in-process bus for all services, unless OBA_BUS_URL names a real one.
        let bus: Bus = Arc::new(InProcessBus::default());
        let mut apps = Vec::new();
        for service in Service::ALL
            .into_iter()
            .filter(|s| !config.skip.contains(s))
        {
            let mut env = env.clone();
            if let Some(file) = service.database_file() {
                let db = DbConfig::sqlite_file(&data_dir.key, &data_dir.value.join(file));
                env.default_to("OBA_DATABASE_URL", db.url.value);
            }
            let app = service.app(&mut env, Some(bus.clone())).await?;
            apps.push((service, app.prepare().await));
        }

        let failed = CancellationToken::new();
        let mut running = Vec::new();
        for (service, app) in apps {
            let listener = listeners
                .remove(&service)
                .ok_or_else(|| StartError::Io(format!("no listener for {}", service.name())))?;
            let stop = CancellationToken::new();
            let (serve_stop, failed) = (stop.clone(), failed.clone());
            let task = tokio::spawn(async move {
                // Cancels on drop, so that even a panicking service takes the others down.
                let _failed = failed.drop_guard();
                server::serve(app, listener, serve_stop).await
            });
            running.push(Running {
                service,
                stop,
                task,
            });
        }
        Ok(Self {
            addrs,
            bus,
            shutdown,
            failed,
            running,
        })
    }

    /// The in-process bus, for listening to what the services publish.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn addr(&self, service: Service) -> Option<SocketAddr> {
        self.addrs.get(&service).copied()
    }

    /// Base URL of the edge, e.g. `http://127.0.0.1:8080`.
    pub fn edge_url(&self) -> String {
        self.addr(Service::BlogAggregator)
            .map(|a| format!("http://{a}"))
            .unwrap_or_default()
    }

    /// Runs until shutdown is requested or a service ends, then stops them all in order.
    pub async fn wait(self) -> Result<(), StartError> {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = self.failed.cancelled() => {}
        }
        let mut first_error = None;
        for running in self.running.into_iter().rev() {
            running.stop.cancel();
            let failure = match running.task.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{} failed: {e}", running.service.name())),
                Err(e) => Some(format!("{} task failed: {e}", running.service.name())),
            };
            if let Some(failure) = failure {
                tracing::error!("{failure}");
                first_error.get_or_insert(StartError::Io(failure));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops every service, draining in-flight requests, and waits for them.
    pub async fn stop(self) -> Result<(), StartError> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// The environment one service gets in the `up` layout (what `oba env` prints): settings
/// from the config repo, with local addresses, embedded storage and dev keys.
pub fn service_env(
    config: &UpConfig,
    service: Service,
    config_repo: &std::path::Path,
) -> Result<Vec<(String, String)>, StartError> {
    let addrs: BTreeMap<Service, SocketAddr> = Service::ALL
        .into_iter()
        .map(|s| Ok((s, config.addr(s)?)))
        .collect::<Result<_, ConfigError>>()?;
    let mut local = up_env(config, &addrs)?;
    local.default_to("OBA_LISTEN_ADDR", addrs[&service].to_string());
    if let Some(file) = service.database_file() {
        let db = DbConfig::sqlite_file(&config.data_dir.key, &config.data_dir.value.join(file));
        local.default_to("OBA_DATABASE_URL", db.url.value);
    }
    let mut deployed = BTreeMap::new();
    for file in ["common.env".to_owned(), format!("{}.env", service.name())] {
        let path = config_repo.join(&file);
        let entries = dotenvy::from_path_iter(&path)
            .map_err(|e| StartError::Io(format!("cannot read {}: {e}", path.display())))?;
        for entry in entries {
            let (key, value) =
                entry.map_err(|e| StartError::Io(format!("{}: {e}", path.display())))?;
            deployed.insert(key, value);
        }
    }
    if service.has_bus() && local.get("OBA_BUS_URL").is_none() {
        // The deployed bus (nats://nats:4222) is not here, and oba up's in-process bus cannot
        // be reached from another process: events would go nowhere.
        return Err(ConfigError::single(
            "OBA_BUS_URL",
            "is needed to run a service beside oba up: start both oba up and oba env with \
             OBA_BUS_URL=nats://127.0.0.1:4222 (a NATS server with JetStream), so that its \
             events reach the projections of oba up",
        )
        .into());
    }
    if local.get("OBA_BUS_URL").is_none() {
        // Nor can the edge hear oba up's events: it reads everything from the services.
        deployed.remove("OBA_BUS_URL");
    }
    let mut out = Vec::new();
    for (key, _) in service.settings() {
        // Local addresses, storage and keys win; the rest is as deployed.
        if let Some(value) = local
            .get(&key)
            .map(str::to_owned)
            .or_else(|| deployed.get(&key).cloned())
        {
            out.push((key, value));
        }
    }
    if let Some(log) = deployed.get("RUST_LOG") {
        out.push(("RUST_LOG".to_owned(), log.clone()));
    }
    Ok(out)
}

/// The variables every service gets in `up`: peer URLs, token keys, defaults.
fn up_env(config: &UpConfig, addrs: &BTreeMap<Service, SocketAddr>) -> Result<Env, StartError> {
    let mut env = config.env.clone();
    for (service, addr) in addrs {
        if let Some(key) = service.url_key() {
            env.default_to(key, format!("http://{addr}"));
        }
    }
    let private = env.get("OBA_TOKEN_PRIVATE_KEY_FILE").is_some();
    let public = env.get("OBA_TOKEN_PUBLIC_KEY_FILE").is_some();
    if !(private && public) {
        let (files, created) = ensure_dev_keypair(&config.data_dir.value).map_err(|e| {
            config
                .data_dir
                .problem(format!("cannot create the dev token key pair: {e}"))
        })?;
        if created {
            tracing::warn!(
                dir = %config.data_dir.value.display(),
                "generated a dev token key pair; set OBA_TOKEN_PRIVATE_KEY_FILE and \
                 OBA_TOKEN_PUBLIC_KEY_FILE to use your own"
            );
        }
        env.default_to(
            "OBA_TOKEN_PRIVATE_KEY_FILE",
            files.private_key.display().to_string(),
        );
        env.default_to(
            "OBA_TOKEN_PUBLIC_KEY_FILE",
            files.public_key.display().to_string(),
        );
    }
    // Made by `System::up` (not here: `oba env` prints this environment and writes nothing).
    env.default_to(
        "OBA_SERVICE_TOKEN_FILE",
        dev_service_token_file(config).display().to_string(),
    );
    env.default_to("OBA_TOKEN_TTL_SECS", config.token_ttl_secs.to_string());
    // Browser front ends on any origin may call a local system.
    env.default_to("OBA_CORS_ALLOWED_ORIGINS", "*");
    // A local system is served over plain http, where a Secure cookie would never be sent.
    env.default_to("OBA_WEB_SECURE_COOKIES", "false");
    if env.get("OBA_ADMIN_EMAIL").is_none() {
        tracing::warn!(
            email = DEV_ADMIN_EMAIL,
            "using the dev admin account with its documented password; set OBA_ADMIN_EMAIL \
             and OBA_ADMIN_PASSWORD for anything but local development"
        );
        env.default_to("OBA_ADMIN_EMAIL", DEV_ADMIN_EMAIL);
        env.default_to("OBA_ADMIN_PASSWORD", DEV_ADMIN_PASSWORD);
    }
    Ok(env)
}

/// Signs the edge's service credential into the data dir unless one is configured: fresh
/// at every start of `oba up` (also for an edge run separately). `env` is `up_env`'s.
fn ensure_dev_service_token(config: &UpConfig, env: &Env) -> Result<(), StartError> {
    if config.env.get("OBA_SERVICE_TOKEN_FILE").is_some() {
        return Ok(());
    }
    let private_key = env.get("OBA_TOKEN_PRIVATE_KEY_FILE").unwrap_or_default();
    write_service_token(
        Path::new(private_key),
        Service::BlogAggregator,
        &dev_service_token_file(config),
    )
}

/// Where `oba up` keeps the edge's service credential when none is configured.
fn dev_service_token_file(config: &UpConfig) -> PathBuf {
    config.data_dir.value.join("service-token")
}

/// How long a service credential made by `oba up` or `oba service-token` is valid.
pub const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Signs a service credential for `service` with the token private key and writes it to
/// `file`, readable by its owner only.
pub fn write_service_token(
    private_key: &Path,
    service: Service,
    file: &Path,
) -> Result<(), StartError> {
    let key = Setting::new("OBA_TOKEN_PRIVATE_KEY_FILE", private_key.to_owned());
    let signer = TokenSigner::from_pem_file(&key, SERVICE_TOKEN_TTL)?;
    let token = signer
        .sign_service(service.name(), SERVICE_TOKEN_TTL)
        .map_err(|e| StartError::Io(format!("cannot sign a service credential: {e}")))?;
    oba_kit::auth::write_private(file, token.as_bytes())
        .map_err(|e| StartError::Io(format!("cannot write {}: {e}", file.display())))
}

/// Runs one service on `OBA_LISTEN_ADDR` until shutdown.
pub async fn serve(
    service: Service,
    mut env: Env,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let listen: Setting<SocketAddr> =
        env.parsed("OBA_LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)));
    if service.has_bus() {
        // Checked with every other setting, before anything connects.
        let _ = env.required("OBA_BUS_URL");
    }
    let stop_with_parent: Setting<bool> = env.parsed("OBA_STOP_WITH_PARENT", false);
    if stop_with_parent.value {
        tokio::spawn(stop_when_orphaned(shutdown.clone()));
    }
    let app = service.app(&mut env, None).await?.prepare().await;
    let listener = TcpListener::bind(listen.value)
        .await
        .map_err(|e| listen.problem(format!("cannot listen on {}: {e}", listen.value)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    // On stdout, so that whatever started the process (a test harness) learns the port.
    println!("{} listening on http://{addr}", service.name());
    server::serve(app, listener, shutdown)
        .await
        .map_err(|e| StartError::Io(format!("{} failed: {e}", service.name())))
}

/// Cancels `shutdown` once the process that started this one is gone (set by `oba up
/// --database-url`: a supervisor killed outright cannot stop its children itself).
async fn stop_when_orphaned(shutdown: CancellationToken) {
    let parent = nix::unistd::getppid();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if nix::unistd::getppid() != parent {
                    tracing::warn!("the supervising process is gone; stopping");
                    shutdown.cancel();
                    return;
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// GETs an `http://host:port/path` URL; Ok on a 2xx status. For container health checks.
pub async fn probe(url: &str) -> Result<(), StartError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| StartError::Io(format!("{url}: only http:// URLs are probed")))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| StartError::Io(format!("{url}: no answer within 3 s")))?
        .map_err(|e| StartError::Io(format!("{url}: {e}")))?;
    // "HTTP/1.1 200": the status code is bytes 9..12.
    match head.get(9) {
        Some(b'2') => Ok(()),
        _ => Err(StartError::Io(format!(
            "{url}: {}",
            String::from_utf8_lossy(&head)
        ))),
    }
}

/// How long `oba up` waits for in-flight requests after a signal before giving up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
