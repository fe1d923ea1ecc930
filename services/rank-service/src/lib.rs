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

use oba_kit::bus::Bus;
use oba_kit::config::ConfigError;
use oba_kit::server::ServiceApp;
use oba_proto::rank::v1::rank_service_server::RankServiceServer;

pub const NAME: &str = "rank-service";

pub use oba_kit::backends::BackendsConfig as Config;

/// Connects and migrates the database, connects the bus, and builds the service.
pub async fn app(config: &Config, in_process_bus: Option<Bus>) -> Result<ServiceApp, ConfigError> {
    let backends = config
        .connect::<storage::migration::Migrator>(in_process_bus)
        .await?;
    let subjects = projection::subjects(&backends.namespace);
    let app = backends.consuming_app(NAME, subjects, projection::TrendingProjection);
    Ok(app.grpc(RankServiceServer::new(grpc::RankGrpc::new(backends.db))))
}
