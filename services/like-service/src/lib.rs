//! like-service: who likes which post (RealWorld favorites).
//!
//! Same shape as every service crate: `domain`, `storage`, `grpc`, and [`app`].

pub mod domain;
pub mod grpc;
pub mod storage;

use oba_kit::bus::Bus;
use oba_kit::config::ConfigError;
use oba_kit::server::ServiceApp;
use oba_proto::like::v1::like_service_server::LikeServiceServer;

pub const NAME: &str = "like-service";

pub use oba_kit::backends::PostReaderConfig as Config;

/// Connects and migrates the database, connects the bus, and builds the service.
pub async fn app(config: &Config, in_process_bus: Option<Bus>) -> Result<ServiceApp, ConfigError> {
    let mut backends = config.backends.clone();
    // The writer's one statement takes arrays: planned once per connection (see storage).
    backends.database.plan_once = true;
    let backends = backends
        .connect::<storage::migration::Migrator>(in_process_bus)
        .await?;
    let (app, outbox, posts) = backends.publishing_post_reader(NAME, &config.post_service)?;
    let store = storage::LikeStore::new(backends.db, outbox);
    let service = grpc::LikeGrpc::new(store, posts);
    Ok(app.grpc(LikeServiceServer::new(service)))
}
