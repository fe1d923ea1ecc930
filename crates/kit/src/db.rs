//! Connecting a service to its own database and bringing its schema up to date.
//!
//! The same SeaORM entities and migrations run on SQLite (embedded, `oba up`) and PostgreSQL
//! (one database per service); only the URL differs.

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use sea_orm_migration::MigratorTrait;

use crate::config::{ConfigError, Env, Setting};
use crate::server::ReadinessCheck;
use crate::shutdown::{CancellationToken, Ticks};

/// The pool size of a SQLite file. SQLite takes one writer at a time: with more connections,
/// concurrent writers wait in SQLite's busy handler (sleeps of 1 to 100 ms) or fail at once
/// when a read transaction must become a write; with one, they queue in the pool, in order.
pub const SQLITE_CONNECTIONS: u32 = 1;

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// Where and how a service connects to its database.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: Setting<String>,
    pub max_connections: u32,
    pub connect_timeout: Duration,
    /// PostgreSQL plans each prepared statement once per connection
    /// (`plan_cache_mode = force_generic_plan`) rather than again at every execution when
    /// it guesses that a plan for the values at hand is better: for a service whose hot
    /// statement takes arrays, where planning cost more than the execution (see
    /// like-service's storage). Off by default.
    pub plan_once: bool,
    /// When a SQLite file's commits reach the disk; PostgreSQL is set on its server.
    pub sqlite_sync: SqliteSync,
}

/// When a SQLite file's commits reach the disk (`PRAGMA synchronous`; the file is in WAL
/// mode). `oba up` is for trying oba: the default keeps a killed process from losing
/// anything without making every commit wait for the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SqliteSync {
    /// The log is synced at checkpoints: a killed process loses nothing, a power cut may
    /// lose the last commits, never the file's consistency.
    #[default]
    Normal,
    /// The log is synced at every commit, as PostgreSQL does by default: a power cut loses
    /// nothing acknowledged, and every commit waits for the disk.
    Full,
}

impl std::str::FromStr for SqliteSync {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            _ => Err("expected `normal` or `full`"),
        }
    }
}

impl DbConfig {
    /// Reads `OBA_DATABASE_URL` (required) and the pool settings. The pool size applies to
    /// PostgreSQL; a SQLite file gets one connection (see [`SQLITE_CONNECTIONS`]).
    pub fn from_env(env: &mut Env) -> Self {
        let url = env.required("OBA_DATABASE_URL");
        let max_connections = env.parsed("OBA_DATABASE_MAX_CONNECTIONS", 10).value;
        Self {
            max_connections: if is_sqlite(&url.value) {
                SQLITE_CONNECTIONS
            } else {
                max_connections
            },
            url,
            connect_timeout: Duration::from_secs(
                env.parsed("OBA_DATABASE_CONNECT_TIMEOUT_SECS", 5).value,
            ),
            plan_once: false,
            sqlite_sync: env
                .parsed("OBA_SQLITE_SYNCHRONOUS", SqliteSync::default())
                .value,
        }
    }

    /// An embedded SQLite database file, created if missing.
    pub fn sqlite_file(key: &str, path: &std::path::Path) -> Self {
        Self {
            url: Setting::new(key, format!("sqlite://{}?mode=rwc", path.display())),
            max_connections: SQLITE_CONNECTIONS,
            connect_timeout: Duration::from_secs(5),
            plan_once: false,
            sqlite_sync: SqliteSync::default(),
        }
    }
}

/// Connects and applies every pending migration of `M`. Failures name the setting.
pub async fn connect_and_migrate<M: MigratorTrait>(
    config: &DbConfig,
) -> Result<DatabaseConnection, ConfigError> {
    let mut options = ConnectOptions::new(config.url.value.clone());
    let sqlite_sync = config.sqlite_sync;
    options
        .max_connections(config.max_connections)
        .connect_timeout(config.connect_timeout)
        .acquire_timeout(config.connect_timeout)
        .sqlx_logging(false)
        // On every connection of the pool (a pragma sent once would reach one of them).
        // WAL lets readers proceed while one writer commits (see [`SqliteSync`] for when
        // commits reach the disk). The pool never checkpoints: a [`Checkpointer`] does,
        // beside it, on a connection with the same settings.
        .map_sqlx_sqlite_opts(move |options| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match sqlite_sync {
                    SqliteSync::Normal => SqliteSynchronous::Normal,
                    SqliteSync::Full => SqliteSynchronous::Full,
                })
                .pragma("wal_autocheckpoint", "0")
        });
    // sqlx pings each connection it hands out: a round trip to PostgreSQL (or a hop to
    // SQLite's thread) before every statement. One used in the last second is taken as
    // alive; if it died anyway, its statement fails as UNAVAILABLE and sqlx drops it when it
    // comes back (it pings every connection given back, which cannot be turned off).
    options.test_before_acquire_if_idle_for(POOL_PING_IDLE);
    if config.plan_once {
        // Sent with the connection's start-up message: no round trip of its own.
        options.map_sqlx_postgres_opts(|options| {
            options.options([("plan_cache_mode", "force_generic_plan")])
        });
    }
    let db = Database::connect(options).await.map_err(|e| {
        config
            .url
            .problem(format!("cannot connect to the database: {e}"))
    })?;
    M::up(&db, None)
        .await
        .map_err(|e| config.url.problem(format!("migration failed: {e}")))?;
    Ok(db)
}

/// A pooled connection idle this long is pinged before it is handed out, so that one the
/// server or a proxy dropped while it was idle is replaced rather than failing a request.
pub const POOL_PING_IDLE: Duration = Duration::from_secs(1);

/// How often a [`Checkpointer`] copies a SQLite file's write-ahead log into the file.
pub const SQLITE_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The frames (pages, 4 KiB by default) past which a [`Checkpointer`] starts the log over:
/// ~64 MiB of disk, and a short queue of the writers about once a second at the favorites
/// benchmark's rate rather than at every 1 000 pages.
pub const SQLITE_LOG_LIMIT: i64 = 16_384;

/// Copies a SQLite database's write-ahead log into the database file, on a connection of its
/// own. The pool's connections never checkpoint (`wal_autocheckpoint = 0`): a checkpoint
/// waits for the disk (it syncs the log and the file), and on the pool's one connection
/// every statement queued behind it waited too. Without it the log would grow for as long
/// as the process runs.
///
/// SQLite starts the log over only when a write begins with all of it copied. Under steady
/// writes a passive checkpoint never gets there (commits land while it copies), and the log
/// grew by ~90 MB a second under the favorites benchmark. So once the log passes
/// `log_limit` frames, the checkpointer runs a `RESTART` checkpoint through the pool: it
/// copies the little the passive one left and has the next write start the log over. On the
/// pool's one connection writers queue behind it in order; on a connection of its own they
/// would meet a locked log and sleep in SQLite's busy handler (1, 2, 5, 10… ms), which was
/// the favorites benchmark's tail.
pub struct Checkpointer {
    db: DatabaseConnection,
    every: Duration,
    log_limit: i64,
}

impl Checkpointer {
    /// The checkpointer of `db`'s file, every `every`, starting the log over past
    /// `log_limit` frames; none for PostgreSQL.
    pub fn of(db: &DatabaseConnection, every: Duration, log_limit: i64) -> Option<Self> {
        (db.get_database_backend() == DbBackend::Sqlite).then(|| Self {
            db: db.clone(),
            every,
            log_limit,
        })
    }

    /// Checkpoints until `shutdown`. A checkpoint that fails (the file cannot be opened, say)
    /// is tried again at the next tick, on a new connection.
    pub async fn run(self, shutdown: CancellationToken) {
        use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
        // The pool's file and settings, on a connection of the checkpointer's own.
        let options = self.db.get_sqlite_connection_pool().connect_options();
        let mut ticks = Ticks::every(self.every);
        let mut connection = None;
        while ticks.next(&shutdown).await {
            let conn = match connection.as_mut() {
                Some(conn) => conn,
                None => match options.connect().await {
                    Ok(conn) => connection.insert(conn),
                    Err(e) => {
                        tracing::warn!(error = %e, "checkpoint: cannot open the database");
                        continue;
                    }
                },
            };
            // PASSIVE: copies what no reader still needs, and waits for no one. Its row is
            // (busy, frames in the log, frames copied).
            let passive =
                sea_orm::sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut *conn)
                    .await;
            match passive {
                Ok((_, log, _)) if log > self.log_limit => {
                    let restart =
                        Statement::from_string(DbBackend::Sqlite, "PRAGMA wal_checkpoint(RESTART)");
                    if let Err(e) = self.db.execute_raw(restart).await {
                        tracing::warn!(error = %e, "checkpoint: the log was not started over");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "checkpoint failed");
                    connection = None;
                }
            }
        }
        if let Some(conn) = connection {
            let _ = conn.close().await;
        }
    }
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

/// Whether `err` means the database cannot be reached right now (as opposed to a bad query):
/// such errors become UNAVAILABLE and clear up by themselves when the database is back.
pub fn is_unavailable(err: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::{DbErr, RuntimeErr};
    match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                Sqlx::Io(_)
                | Sqlx::Tls(_)
                | Sqlx::Protocol(_)
                | Sqlx::PoolTimedOut
                | Sqlx::PoolClosed
                | Sqlx::WorkerCrashed => true,
                // SQLSTATE class 08 is "connection exception", 57P0x "server shutting down".
                Sqlx::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Creates the PostgreSQL database that `config` names if it does not exist yet (what
/// `oba migrate` does before migrating). A no-op for SQLite, whose `mode=rwc` creates the file.
pub async fn create_if_missing(config: &DbConfig) -> Result<bool, ConfigError> {
    use sea_orm::sqlx::postgres::PgConnectOptions;
    use sea_orm::sqlx::{ConnectOptions as _, Connection as _};

    let url = &config.url;
    if !url.value.starts_with("postgres") {
        return Ok(false);
    }
    let options: PgConnectOptions = url
        .value
        .parse()
        .map_err(|e| url.problem(format!("not a PostgreSQL URL: {e}")))?;
    let name = options
        .get_database()
        .ok_or_else(|| url.problem("names no database"))?
        .to_owned();
    // Identifiers cannot be bound as parameters; allow only plain names.
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(url.problem(format!(
            "database name {name:?} must be letters, digits and _"
        )));
    }
    let mut admin = options
        .database("postgres")
        .connect()
        .await
        .map_err(|e| url.problem(format!("cannot connect to the server: {e}")))?;
    let exists: Option<(i32,)> =
        sea_orm::sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&mut admin)
            .await
            .map_err(|e| url.problem(format!("cannot list databases: {e}")))?;
    if exists.is_some() {
        return Ok(false);
    }
    sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\""
    )))
    .execute(&mut admin)
    .await
    .map_err(|e| url.problem(format!("cannot create database {name}: {e}")))?;
    let _ = admin.close().await;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    use sea_orm_migration::MigrationTrait;

    struct Nothing;

    impl MigratorTrait for Nothing {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            Vec::new()
        }
    }

    /// What a service reads for the SQLite file `name` in `dir`, with one more `setting`.
    fn sqlite_config_from_env(
        dir: &tempfile::TempDir,
        name: &str,
        setting: (&str, &str),
    ) -> DbConfig {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
        let mut env = Env::from_pairs([("OBA_DATABASE_URL", url.as_str()), setting]);
        let config = DbConfig::from_env(&mut env);
        env.finish().expect("a valid configuration");
        config
    }

    /// `PRAGMA journal_mode` and `PRAGMA synchronous` as eight connections of `db` answer,
    /// in pairs.
    async fn journal_and_sync(db: &DatabaseConnection) -> Vec<String> {
        let pragma = |name: &'static str| {
            let db = db.clone();
            async move {
                let row = db
                    .query_one_raw(Statement::from_string(
                        db.get_database_backend(),
                        format!("PRAGMA {name}"),
                    ))
                    .await
                    .expect("pragma")
                    .expect("row");
                row.try_get_by_index::<String>(0)
                    .or_else(|_| row.try_get_by_index::<i32>(0).map(|v| v.to_string()))
                    .expect("value")
            }
        };
        // Asked at once, so that several connections of the pool answer.
        futures::future::join_all(
            (0..8).flat_map(|_| [pragma("journal_mode"), pragma("synchronous")]),
        )
        .await
    }

    #[tokio::test]
    async fn every_sqlite_connection_is_wal_with_normal_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = DbConfig::sqlite_file("OBA_DATABASE_URL", &dir.path().join("t.db"));
        let db = connect_and_migrate::<Nothing>(&config).await.expect("db");
        for pair in journal_and_sync(&db).await.chunks(2) {
            // synchronous: 1 is NORMAL (2 would be FULL, a sync at every commit).
            assert_eq!(pair, ["wal", "1"]);
        }
    }

    #[tokio::test]
    async fn a_sqlite_file_asked_to_sync_every_commit_does_on_every_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = sqlite_config_from_env(&dir, "t.db", ("OBA_SQLITE_SYNCHRONOUS", "FULL"));
        assert_eq!(config.sqlite_sync, SqliteSync::Full);
        let db = connect_and_migrate::<Nothing>(&config).await.expect("db");
        for pair in journal_and_sync(&db).await.chunks(2) {
            assert_eq!(pair, ["wal", "2"], "2 is FULL");
        }
    }

    #[test]
    fn an_unknown_sqlite_sync_is_refused_naming_the_setting() {
        let mut env = Env::from_pairs([
            ("OBA_DATABASE_URL", "sqlite://t.db?mode=rwc"),
            ("OBA_SQLITE_SYNCHRONOUS", "off"),
        ]);
        DbConfig::from_env(&mut env);
        let refused = env.finish().expect_err("`off` is not offered").to_string();
        assert!(
            refused.contains("OBA_SQLITE_SYNCHRONOUS") && refused.contains("`normal` or `full`"),
            "{refused}"
        );
    }

    /// Runs `sql` on `db`, which must take it.
    async fn exec(db: &DatabaseConnection, sql: &str) {
        db.execute_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A pool on the SQLite file `name` in `dir`, as a service connects to it.
    async fn sqlite_file(dir: &tempfile::TempDir, name: &str) -> DatabaseConnection {
        let config = DbConfig::sqlite_file("OBA_DATABASE_URL", &dir.path().join(name));
        connect_and_migrate::<Nothing>(&config).await.expect("db")
    }

    /// Commits `rows` rows of 1 KiB, each in a transaction of its own.
    async fn commit_rows(db: &DatabaseConnection, rows: usize) {
        exec(db, "CREATE TABLE t (body TEXT)").await;
        for _ in 0..rows {
            exec(db, "INSERT INTO t VALUES (hex(randomblob(512)))").await;
        }
    }

    #[tokio::test]
    async fn the_pool_leaves_checkpoints_to_the_checkpointer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.db");
        let db = sqlite_file(&dir, "c.db").await;
        // ~1 500 pages of log: past the 1 000 at which SQLite would checkpoint on the pool.
        commit_rows(&db, 1_500).await;
        let size = || std::fs::metadata(&file).expect("file").len();
        assert!(
            size() < 64 * 1024,
            "the pool checkpointed: {} bytes",
            size()
        );

        let stop = CancellationToken::new();
        let checkpointer = Checkpointer::of(&db, Duration::from_millis(10), SQLITE_LOG_LIMIT)
            .expect("a SQLite checkpointer");
        let running = tokio::spawn(checkpointer.run(stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while size() < 1_500 * 1024 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not checkpointed: {} bytes",
                size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        running.await.expect("checkpointer stops");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_bounded_while_writes_never_stop_and_never_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sqlite_file(&dir, "b.db").await;
        // On the pool's one connection: a write that meets a locked log fails at once
        // instead of sleeping in the busy handler, and fails the test.
        exec(&db, "PRAGMA busy_timeout = 0").await;
        let stop = CancellationToken::new();
        // 256 frames: 1 MiB of log.
        let checkpointer =
            Checkpointer::of(&db, Duration::from_millis(5), 256).expect("a SQLite checkpointer");
        let running = tokio::spawn(checkpointer.run(stop.clone()));
        // ~4 000 commits of 1 KiB, back to back: a passive checkpoint is never ahead of them.
        commit_rows(&db, 4_000).await;
        stop.cancel();
        running.await.expect("checkpointer stops");
        let log = dir.path().join("b.db-wal");
        let size = std::fs::metadata(&log).map_or(0, |m| m.len());
        assert!(size < 8 * 1024 * 1024, "the log grew to {size} bytes");
    }

    #[tokio::test]
    async fn concurrent_writers_on_sqlite_queue_instead_of_failing_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A pool size meant for PostgreSQL does not make SQLite writers race.
        let config = sqlite_config_from_env(&dir, "w.db", ("OBA_DATABASE_MAX_CONNECTIONS", "10"));
        assert_eq!(config.max_connections, SQLITE_CONNECTIONS);
        let db = connect_and_migrate::<Nothing>(&config).await.expect("db");
        let backend = db.get_database_backend();
        exec(&db, "CREATE TABLE counter (n INTEGER NOT NULL)").await;
        exec(&db, "INSERT INTO counter VALUES (0)").await;
        // Each transaction reads first, then writes: the shape that fails at once with
        // SQLITE_BUSY_SNAPSHOT when another connection committed in between.
        let writer = |db: DatabaseConnection| async move {
            for _ in 0..25 {
                let txn = db.begin().await?;
                txn.query_one_raw(Statement::from_string(backend, "SELECT n FROM counter"))
                    .await?;
                txn.execute_raw(Statement::from_string(
                    backend,
                    "UPDATE counter SET n = n + 1",
                ))
                .await?;
                txn.commit().await?;
            }
            Ok::<_, sea_orm::DbErr>(())
        };
        let results =
            futures::future::join_all((0..8).map(|_| tokio::spawn(writer(db.clone())))).await;
        for result in results {
            result.expect("task").expect("every write commits");
        }
        let row = db
            .query_one_raw(Statement::from_string(backend, "SELECT n FROM counter"))
            .await
            .expect("select")
            .expect("row");
        assert_eq!(row.try_get_by_index::<i32>(0).expect("n"), 200);
    }
}
