//! user-service: accounts, credentials, roles and profiles. The only service that signs tokens.
//!
//! Shape shared by every service crate: `domain` (pure rules), `storage` (its own database
//! through SeaORM), `grpc` (the adapter), and [`app`] wiring them into a
//! [`ServiceApp`](oba_kit::server::ServiceApp).

pub mod domain;
pub mod grpc;
pub mod storage;

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use oba_kit::auth::TokenSigner;
use oba_kit::backends::BackendsConfig;
use oba_kit::bus::Bus;
use oba_kit::config::{ConfigError, Env, Setting};
use oba_kit::server::ServiceApp;
use oba_proto::user::v1::user_service_server::UserServiceServer;

pub const NAME: &str = "user-service";

#[derive(Debug, Clone)]
pub struct Config {
    pub backends: BackendsConfig,
    /// Ed25519 private key (PKCS#8 PEM) that signs tokens.
    pub token_private_key: Setting<PathBuf>,
    pub token_ttl: Duration,
    /// The admin account ensured at start-up, if configured.
    pub admin: Option<AdminAccount>,
    /// argon2 hashes computed at once (each holds 19 MiB); more wait a little or are
    /// refused. Default: the number of cores.
    pub password_hashes_in_flight: NonZeroUsize,
    /// Sign-in attempts one account may receive per minute, from anywhere.
    pub login_attempts_per_minute: NonZeroU32,
}

/// Credentials of the bootstrap admin (`OBA_ADMIN_USERNAME`, `OBA_ADMIN_EMAIL`,
/// `OBA_ADMIN_PASSWORD`); a secret, never committed.
#[derive(Clone)]
pub struct AdminAccount {
    pub username: String,
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for AdminAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccount")
            .field("username", &self.username)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            backends: BackendsConfig::from_env(env),
            token_private_key: env
                .required("OBA_TOKEN_PRIVATE_KEY_FILE")
                .map(PathBuf::from),
            token_ttl: Duration::from_secs(env.parsed("OBA_TOKEN_TTL_SECS", 86_400).value),
            admin: admin_from_env(env),
            password_hashes_in_flight: env
                .parsed(
                    "OBA_PASSWORD_HASHES_IN_FLIGHT",
                    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
                )
                .value,
            login_attempts_per_minute: env
                .parsed(
                    "OBA_LOGIN_ATTEMPTS_PER_MINUTE",
                    NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
                )
                .value,
        }
    }
}

fn admin_from_env(env: &mut Env) -> Option<AdminAccount> {
    let email = env.optional("OBA_ADMIN_EMAIL");
    let password = env.optional("OBA_ADMIN_PASSWORD");
    let username = env.optional("OBA_ADMIN_USERNAME");
    let email = email?;
    let Some(password) = password else {
        env.problem(
            "OBA_ADMIN_PASSWORD",
            "is required when OBA_ADMIN_EMAIL is set",
        );
        return None;
    };
    Some(AdminAccount {
        username: username.map_or_else(|| "admin".to_owned(), |s| s.value),
        email: email.value,
        password: password.value,
    })
}

/// Loads the signing key, connects and migrates the database, and builds the service.
pub async fn app(config: &Config, in_process_bus: Option<Bus>) -> Result<ServiceApp, ConfigError> {
    let signer = TokenSigner::from_pem_file(&config.token_private_key, config.token_ttl)?;
    let backends = config
        .backends
        .connect::<storage::migration::Migrator>(in_process_bus)
        .await?;
    let (app, outbox) = backends.publishing_app(NAME);
    let logins =
        storage::SignInAttempts::new(backends.db.clone(), config.login_attempts_per_minute);
    let store = storage::UserStore::new(backends.db, outbox);
    if let Some(admin) = &config.admin {
        grpc::bootstrap_admin(&store, admin).await.map_err(|e| {
            ConfigError::single("OBA_ADMIN_EMAIL", format!("cannot create the admin: {e}"))
        })?;
    }
    let hashing = grpc::PasswordHashing::new(config.password_hashes_in_flight);
    let service = grpc::UserGrpc::new(store, signer, hashing, logins);
    Ok(app.grpc(UserServiceServer::new(service)))
}
