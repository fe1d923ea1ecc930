//! comment-service: comments on posts.
//!
//! Same shape as every service crate: `domain`, `storage`, `grpc`, and [`app`].

pub mod domain;
pub mod grpc;
pub mod storage;

use oba_kit::config::{ConfigError, Env};
use oba_kit::db::{self, DbConfig};
use oba_kit::server::ServiceApp;
use oba_proto::comment::v1::comment_service_server::CommentServiceServer;

pub const NAME: &str = "comment-service";

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
    let service = grpc::CommentGrpc::new(storage::CommentStore::new(db.clone()));
    Ok(ServiceApp::new(NAME)
        .grpc(CommentServiceServer::new(service))
        .readiness(db::readiness(db)))
}
