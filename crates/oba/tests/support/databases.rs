//! PostgreSQL databases of a test's own on the test server (`OBA_TEST_DATABASE_URL`),
//! dropped when the test ends, whether it passed or failed.

use std::time::Duration;

use oba_kit::config::Setting;
use oba_kit::db::{DbConfig, create_if_missing};

/// A fresh database; dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    pub admin_url: String,
    pub name: String,
}

impl TestDatabase {
    /// Creates a database named `prefix` and a unique suffix.
    pub async fn create(prefix: &str) -> Self {
        let admin_url = std::env::var("OBA_TEST_DATABASE_URL").expect("OBA_TEST_DATABASE_URL");
        let id = uuid::Uuid::now_v7().simple().to_string();
        let database = Self {
            admin_url,
            name: format!("{prefix}{}", &id[id.len() - 10..]),
        };
        create_if_missing(&database.config(1))
            .await
            .expect("create the test database");
        database
    }

    /// The server's URL, without a database: `postgres://user@host:port`.
    pub fn server(&self) -> &str {
        self.admin_url
            .rsplit_once('/')
            .map_or(self.admin_url.as_str(), |(server, _)| server)
    }

    /// A service's settings for this database, with a pool of `max_connections`.
    pub fn config(&self, max_connections: u32) -> DbConfig {
        DbConfig {
            url: Setting::new(
                "OBA_DATABASE_URL",
                format!("{}/{}", self.server(), self.name),
            ),
            max_connections,
            connect_timeout: Duration::from_secs(5),
            plan_once: false,
            sqlite_sync: Default::default(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, names) = (self.admin_url.clone(), vec![self.name.clone()]);
        run_detached(async move { drop_databases(&admin_url, &names).await });
    }
}

/// Drops the databases `names`, closing whatever is still connected to them.
pub async fn drop_databases(admin_url: &str, names: &[String]) {
    use sea_orm::sqlx::Connection;
    let mut admin = sea_orm::sqlx::PgConnection::connect(admin_url)
        .await
        .expect("admin connection");
    for name in names {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .expect("drop test database");
    }
}

/// Runs `work` to its end on a thread and runtime of its own: callable from `Drop`, inside
/// a test's runtime (which must not block) or outside one.
pub fn run_detached(work: impl Future<Output = ()> + Send + 'static) {
    let done = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work);
    });
    let _ = done.join();
}
