//! like-service: who likes which post (RealWorld favorites).
//!
//! Same shape as every service crate: `domain`, `storage`, `grpc`, and [`app`].

pub mod domain;
pub mod grpc;
pub mod storage;

use oba_kit::config::{ConfigError, Env};
use oba_kit::db::{self, DbConfig};
use oba_kit::server::ServiceApp;
use oba_proto::like::v1::like_service_server::LikeServiceServer;

pub const NAME: &str = "like-service";

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DbConfig,
}

impl Config {
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            database: DbConfig::from_env(env),
        }
    }
}

/// Connects and migrates the database and builds the service.
pub async fn app(config: &Config) -> Result<ServiceApp, ConfigError> {
    let db = db::connect_and_migrate::<storage::migration::Migrator>(&config.database).await?;
    let service = grpc::LikeGrpc::new(storage::LikeStore::new(db.clone()));
    Ok(ServiceApp::new(NAME)
        .grpc(LikeServiceServer::new(service))
        .readiness(db::readiness(db)))
}
