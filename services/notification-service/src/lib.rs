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
use oba_kit::server::{ServiceApp, drain};
use oba_proto::notification::v1 as pb;
use oba_proto::notification::v1::notification_service_server::NotificationServiceServer;
use prost::Message;
use tokio::sync::mpsc;

pub const NAME: &str = "notification-service";

pub use oba_kit::backends::BackendsConfig as Config;

/// Connects and migrates the database, connects the bus, and builds the service.
///
/// Live pushes work with any number of replicas: whichever replica projects an event
/// announces the new notifications on the bus (core pub/sub, not stored), and every replica
/// hands what it hears to the watchers it holds. One projection per event, so each
/// notification is announced once, in the order it was made.
pub async fn app(config: &Config, in_process_bus: Option<Bus>) -> Result<ServiceApp, ConfigError> {
    let backends = config
        .connect::<storage::migration::Migrator>(in_process_bus)
        .await?;
    let (live, _) = tokio::sync::broadcast::channel(1024);
    // Outside the namespace's stream subjects (`<namespace>.>`): live pushes are not events.
    let live_subject = format!("{}-live.notifications", backends.namespace);
    let (announce, to_announce) = mpsc::unbounded_channel::<storage::Notification>();
    let subjects = projection::subjects(&backends.namespace);
    let projection = projection::NotificationProjection { announce };
    let app = backends.consuming_app(NAME, subjects, projection);

    let (bus, subject) = (backends.bus.clone(), live_subject.clone());
    let announcer = drain(to_announce, move |notification| {
        let (bus, subject) = (bus.clone(), subject.clone());
        async move {
            let payload = grpc::message(notification).encode_to_vec();
            if let Err(e) = bus.announce(&subject, payload.into()).await {
                tracing::warn!(error = %e, "live notification not announced");
            }
        }
    });
    let watchers = live.clone();
    let listener = drain(backends.bus.listen(&live_subject), move |payload| {
        match pb::Notification::decode(payload) {
            // No watcher on this replica is fine: the notification is stored.
            Ok(notification) => drop(watchers.send(notification)),
            Err(e) => tracing::warn!(error = %e, "undecodable live notification"),
        }
        std::future::ready(())
    });
    Ok(app
        .background(announcer)
        .background(listener)
        .grpc(NotificationServiceServer::new(grpc::NotificationGrpc::new(
            backends.db,
            live,
        ))))
}
