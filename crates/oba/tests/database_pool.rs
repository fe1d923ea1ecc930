//! The pool every service reaches PostgreSQL through (`oba_kit::db::connect_and_migrate`),
//! seen from the wire: a proxy between it and the real server counts what it sends.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

// Only the proxy and databases of the shared test support: this file starts no system.
#[path = "support/databases.rs"]
mod databases;
#[path = "support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::time::Duration;

use databases::TestDatabase;
use oba_kit::db::{POOL_PING_IDLE, connect_and_migrate};
use proxy::TcpProxy;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::{MigrationTrait, MigratorTrait};

/// PostgreSQL's Sync message, which sqlx sends alone as its ping.
const SYNC: &[u8] = &[b'S', 0, 0, 0, 4];

struct NoMigrations;

impl MigratorTrait for NoMigrations {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        Vec::new()
    }
}

/// A fresh database reached through a proxy, with a pool of one connection.
struct Fixture {
    proxy: TcpProxy,
    db: DatabaseConnection,
    // Last: dropped after the pool.
    _database: TestDatabase,
}

impl Fixture {
    async fn start() -> Self {
        let database = TestDatabase::create("oba_pool").await;
        let (credentials, host) = database.server().rsplit_once('@').expect("user@host:port");
        let proxy = TcpProxy::start(host.parse().expect("host:port")).await;
        let mut config = database.config(1);
        config.url.value = format!(
            "{credentials}@{}/{}?sslmode=disable",
            proxy.addr, database.name
        );
        let db = connect_and_migrate::<NoMigrations>(&config)
            .await
            .expect("connect");
        Self {
            proxy,
            db,
            _database: database,
        }
    }

    async fn select_one(&self) -> Result<(), sea_orm::DbErr> {
        self.db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1"))
            .await
            .map(|_| ())
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
}
