//! rank-service: a trending score per post, projected from like, comment, view and post
//! events (see `domain` for the formula). It reads no other service's data and no API
//! writes it: only events do.
//!
//! Same shape as every service crate: `domain`, `storage`, `grpc`, plus `projection` (the
//! event consumer's adapter), and [`app`].

pub mod domain;
pub mod grpc;
pub mod projection;
pub mod storage;

use oba_kit::bus::{self, Bus, BusConfig};
use oba_kit::config::{ConfigError, Env};
use oba_kit::consumer;
use oba_kit::db::{self, DbConfig};
use oba_kit::server::ServiceApp;
use oba_proto::rank::v1::rank_service_server::RankServiceServer;

pub const NAME: &str = "rank-service";

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DbConfig,
    pub bus: BusConfig,
}

impl Config {
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            database: DbConfig::from_env(env),
            bus: BusConfig::from_env(env),
        }
    }
}

/// Connects and migrates the database, subscribes to events, and builds the service.
pub async fn app(config: &Config, in_process_bus: Option<Bus>) -> Result<ServiceApp, ConfigError> {
    let db = db::connect_and_migrate::<storage::migration::Migrator>(&config.database).await?;
    let bus = config.bus.connect(in_process_bus).await?;
    let app = ServiceApp::new(NAME);
    let metrics = app.metrics().clone();
    let deliveries = bus.subscribe(NAME, projection::subjects(&config.bus.namespace.value));
    let consumer_db = db.clone();
    Ok(app
        .grpc(RankServiceServer::new(grpc::RankGrpc::new(db.clone())))
        .readiness(db::readiness(db))
        .readiness(bus::readiness(bus))
        .background(move |shutdown| {
            Box::pin(async move {
                let projection = projection::TrendingProjection;
                consumer::run(deliveries, consumer_db, projection, &metrics, shutdown).await;
            })
        }))
}
