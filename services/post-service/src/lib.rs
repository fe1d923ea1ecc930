//! post-service: posts, their slugs and tags, and the queries that list them.
//!
//! Same shape as every service crate: `domain`, `storage`, `grpc`, and [`app`].

pub mod domain;
pub mod grpc;
pub mod storage;

use oba_kit::bus::{Bus, BusConfig};
use oba_kit::config::{ConfigError, Env};
use oba_kit::db::{self, DbConfig};
use oba_kit::outbox;
use oba_kit::server::ServiceApp;
use oba_proto::post::v1::post_service_server::PostServiceServer;

pub const NAME: &str = "post-service";

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

/// Connects and migrates the database and builds the service.
pub async fn app(config: &Config, in_process_bus: Option<Bus>) -> Result<ServiceApp, ConfigError> {
    let db = db::connect_and_migrate::<storage::migration::Migrator>(&config.database).await?;
    let bus = config.bus.connect(in_process_bus).await?;
    let (app, outbox) = outbox::attach_relay(
        ServiceApp::new(NAME),
        db.clone(),
        bus,
        &config.bus.namespace.value,
    );
    let service = grpc::PostGrpc::new(storage::PostStore::new(db.clone(), outbox));
    Ok(app
        .grpc(PostServiceServer::new(service))
        .readiness(db::readiness(db)))
}
