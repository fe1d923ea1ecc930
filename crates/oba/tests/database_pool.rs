//! The pool every service reaches PostgreSQL through (`oba_kit::db::connect_and_migrate`),
//! seen from the wire: a proxy between it and the real server counts what it sends.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

// Only the proxy of the shared test support: this file starts no system.
#[path = "support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::time::Duration;

use oba_kit::config::Setting;
use oba_kit::db::{DbConfig, POOL_PING_IDLE, connect_and_migrate, create_if_missing};
use proxy::TcpProxy;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::{MigrationTrait, MigratorTrait};

/// PostgreSQL's Sync message, which sqlx sends alone as its ping.
const SYNC: &[u8] = &[b'S', 0, 0, 0, 4];

struct NoMigrations;

impl MigratorTrait for NoMigrations {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        Vec::new()
    }
}

/// A fresh database reached through a proxy, with a pool of one connection; dropped by
/// [`Fixture::drop_database`].
struct Fixture {
    proxy: TcpProxy,
    db: DatabaseConnection,
    admin_url: String,
    name: String,
}

impl Fixture {
    async fn start() -> Self {
        let admin_url = std::env::var("OBA_TEST_DATABASE_URL").expect("OBA_TEST_DATABASE_URL");
        let server = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(s, _)| s);
        let (credentials, host) = server.rsplit_once('@').expect("user@host:port");
        let proxy = TcpProxy::start(host.parse().expect("host:port")).await;
        let run = uuid::Uuid::now_v7().simple().to_string();
        let name = format!("oba_pool{}", &run[run.len() - 10..]);
        let config = DbConfig {
            url: Setting::new(
                "OBA_DATABASE_URL",
                format!("{credentials}@{}/{name}?sslmode=disable", proxy.addr),
            ),
            max_connections: 1,
            connect_timeout: Duration::from_secs(5),
            plan_once: false,
        };
        create_if_missing(&config).await.expect("create database");
        let db = connect_and_migrate::<NoMigrations>(&config)
            .await
            .expect("connect");
        Self {
            proxy,
            db,
            admin_url,
            name,
        }
    }

    async fn select_one(&self) -> Result<(), sea_orm::DbErr> {
        self.db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1"))
            .await
            .map(|_| ())
    }

    async fn drop_database(self) {
        let _ = self.db.close().await;
        let admin = Database::connect(&self.admin_url).await.expect("admin");
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop database");
    }
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_connection_in_use_is_not_pinged_before_each_statement() {
    let fixture = Fixture::start().await;
    fixture.select_one().await.expect("first statement");
    fixture.proxy.watch(SYNC);
    for _ in 0..40 {
        fixture.select_one().await.expect("statement");
    }
    // sqlx pings every connection given back to the pool (there is no turning that off);
    // the ping before each checkout, a second round trip per statement, is gone.
    let pings = fixture.proxy.seen();
    assert!(
        (30..=44).contains(&pings),
        "{pings} pings for 40 statements: one per statement expected, at its release"
    );
    fixture.drop_database().await;
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_connection_that_died_while_idle_is_replaced_before_it_is_used() {
    let fixture = Fixture::start().await;
    fixture.select_one().await.expect("first statement");
    // The server (or a proxy on the way) drops the idle connection.
    fixture.proxy.cut();
    fixture.proxy.restore();
    tokio::time::sleep(POOL_PING_IDLE + Duration::from_millis(200)).await;
    fixture
        .select_one()
        .await
        .expect("an idle connection is pinged, and replaced when dead");
    fixture.drop_database().await;
}
