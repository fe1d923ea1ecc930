//! Connecting a service to its own database and bringing its schema up to date.
//!
//! The same SeaORM entities and migrations run on SQLite (embedded, `oba up`) and PostgreSQL
//! (one database per service); only the URL differs.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

use crate::config::{ConfigError, Env, Setting};
use crate::server::ReadinessCheck;

/// Where and how a service connects to its database.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: Setting<String>,
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

impl DbConfig {
    /// Reads `OBA_DATABASE_URL` (required) and the pool settings.
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            url: env.required("OBA_DATABASE_URL"),
            max_connections: env.parsed("OBA_DATABASE_MAX_CONNECTIONS", 10).value,
            connect_timeout: Duration::from_secs(
                env.parsed("OBA_DATABASE_CONNECT_TIMEOUT_SECS", 5).value,
            ),
        }
    }

    /// An embedded SQLite database file, created if missing.
    pub fn sqlite_file(key: &str, path: &std::path::Path) -> Self {
        Self {
            url: Setting::new(key, format!("sqlite://{}?mode=rwc", path.display())),
            max_connections: 5,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Connects and applies every pending migration of `M`. Failures name the setting.
pub async fn connect_and_migrate<M: MigratorTrait>(
    config: &DbConfig,
) -> Result<DatabaseConnection, ConfigError> {
    let mut options = ConnectOptions::new(config.url.value.clone());
    options
        .max_connections(config.max_connections)
        .connect_timeout(config.connect_timeout)
        .acquire_timeout(config.connect_timeout)
        .sqlx_logging(false);
    let db = Database::connect(options).await.map_err(|e| {
        config
            .url
            .problem(format!("cannot connect to the database: {e}"))
    })?;
    if db.get_database_backend() == DatabaseBackend::Sqlite {
        // WAL lets readers proceed while one writer commits.
        db.execute_unprepared("PRAGMA journal_mode=WAL")
            .await
            .map_err(|e| config.url.problem(format!("cannot enable WAL: {e}")))?;
    }
    M::up(&db, None)
        .await
        .map_err(|e| config.url.problem(format!("migration failed: {e}")))?;
    Ok(db)
}

/// Readiness of a database: ready while it answers a ping.
pub fn readiness(db: DatabaseConnection) -> ReadinessCheck {
    std::sync::Arc::new(move || {
        let db = db.clone();
        Box::pin(async move { db.ping().await.map_err(|e| format!("database: {e}")) })
    })
}

/// The database's message when `err` broke a unique constraint (it names the constraint or
/// column), so a store can map it to the input field that is taken.
pub fn unique_violation(err: &sea_orm::DbErr) -> Option<String> {
    match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(message)) => Some(message),
        _ => None,
    }
}
