//! notification-service: per-user notifications, projected from follow, comment, like and
//! post events, listed and watched (a server stream) over gRPC. Only events write it.
//!
//! Same shape as every service crate: `domain`, `storage`, `grpc`, plus `projection` (the
//! event consumer's adapter), and [`app`].

pub mod domain;
pub mod grpc;
pub mod projection;
pub mod storage;

use oba_kit::bus::Bus;
use oba_kit::config::ConfigError;
use oba_kit::server::ServiceApp;
use oba_proto::notification::v1::notification_service_server::NotificationServiceServer;

pub const NAME: &str = "notification-service";

pub use oba_kit::backends::BackendsConfig as Config;

/// Connects and migrates the database, connects the bus, and builds the service.
pub async fn app(config: &Config, in_process_bus: Option<Bus>) -> Result<ServiceApp, ConfigError> {
    let backends = config
        .connect::<storage::migration::Migrator>(in_process_bus)
        .await?;
    let (live, _) = tokio::sync::broadcast::channel(1024);
    let subjects = projection::subjects(&backends.namespace);
    let projection = projection::NotificationProjection { live: live.clone() };
    let app = backends.consuming_app(NAME, subjects, projection);
    Ok(
        app.grpc(NotificationServiceServer::new(grpc::NotificationGrpc::new(
            backends.db,
            live,
        ))),
    )
}
