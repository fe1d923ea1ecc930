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
use oba_kit::server::{BackgroundTask, ServiceApp, drain};
use oba_proto::notification::v1 as pb;
use oba_proto::notification::v1::notification_service_server::NotificationServiceServer;
use prost::Message;
use tokio::sync::{broadcast, mpsc};

pub const NAME: &str = "notification-service";

pub use oba_kit::backends::BackendsConfig as Config;

/// Connects and migrates the database, connects the bus, and builds the service.
///
/// Live pushes work with any number of replicas: whichever replica projects a batch of events
/// announces its new notifications on the bus as one message (core pub/sub, not stored), and
/// every replica hands what it hears to the watchers it holds. One projection per event, so
/// each notification is announced once, in the order it was made.
pub async fn app(config: &Config, in_process_bus: Option<Bus>) -> Result<ServiceApp, ConfigError> {
    let backends = config
        .connect::<storage::migration::Migrator>(in_process_bus)
        .await?;
    let (live, _) = broadcast::channel(1024);
    let live_subject = live_subject(&backends.namespace);
    let (announce, to_announce) = mpsc::unbounded_channel::<Vec<storage::Notification>>();
    let subjects = projection::subjects(&backends.namespace);
    let projection = projection::NotificationProjection { announce };
    let app = backends.consuming_app(NAME, subjects, projection);

    let announcer = announce_batches(backends.bus.clone(), live_subject.clone(), to_announce);
    let listener = push_heard(&backends.bus, &live_subject, live.clone());
    Ok(app
        .background(announcer)
        .background(listener)
        .grpc(NotificationServiceServer::new(grpc::NotificationGrpc::new(
            backends.db,
            live,
        ))))
}

/// Where replicas announce new notifications to each other. Outside the namespace's stream
/// subjects (`<namespace>.>`): live pushes are not events. Named for its message,
/// `NewNotifications`: replicas of an older build, which sent one `Notification` a message,
/// do not hear it during a rollout (the list still has all).
fn live_subject(namespace: &str) -> String {
    format!("{namespace}-live.new-notifications")
}

/// The most notifications in one announcement: a post by an author with many followers
/// makes one each, and a NATS message is at most 1 MiB (a notification is ~140 bytes).
const ANNOUNCED_MAX: usize = 500;

/// Announces each projected batch's new notifications on `subject`, as one message (or one
/// per [`ANNOUNCED_MAX`]), in the order made.
fn announce_batches(
    bus: Bus,
    subject: String,
    batches: mpsc::UnboundedReceiver<Vec<storage::Notification>>,
) -> BackgroundTask {
    Box::new(drain(batches, move |made: Vec<storage::Notification>| {
        let (bus, subject) = (bus.clone(), subject.clone());
        async move {
            let mut made = made.into_iter().map(grpc::message).peekable();
            while made.peek().is_some() {
                let message = pb::NewNotifications {
                    notifications: made.by_ref().take(ANNOUNCED_MAX).collect(),
                };
                if let Err(e) = bus.announce(&subject, message.encode_to_vec().into()).await {
                    tracing::warn!(error = %e, "live notifications not announced");
                }
            }
        }
    }))
}

/// Hands every notification announced on `subject`, by any replica, to this replica's
/// watchers, in the order announced.
fn push_heard(
    bus: &Bus,
    subject: &str,
    watchers: broadcast::Sender<pb::Notification>,
) -> BackgroundTask {
    Box::new(drain(bus.listen(subject), move |payload| {
        match pb::NewNotifications::decode(payload) {
            Ok(made) => {
                for notification in made.notifications {
                    // No watcher on this replica is fine: the notification is stored.
                    drop(watchers.send(notification));
                }
            }
            Err(e) => tracing::warn!(error = %e, "undecodable live notifications"),
        }
        std::future::ready(())
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::Utc;
    use oba_kit::bus::InProcessBus;
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

    use super::*;

    fn liked(id: i64, recipient_id: Uuid) -> storage::Notification {
        storage::Notification {
            id,
            recipient_id,
            kind: "LIKED".to_owned(),
            actor_id: Uuid::now_v7(),
            post_id: Some(Uuid::now_v7()),
            created_at: Utc::now(),
            read_at: None,
        }
    }

    /// An announcer running on `bus` until `shutdown`, and where to hand it batches.
    fn start_announcer(
        bus: &Bus,
        shutdown: &CancellationToken,
    ) -> mpsc::UnboundedSender<Vec<storage::Notification>> {
        let (announce, batches) = mpsc::unbounded_channel();
        tokio::spawn(announce_batches(bus.clone(), live_subject("t"), batches)(
            shutdown.clone(),
        ));
        announce
    }

    /// The next item of `items`, failing the test after 5 s.
    async fn next<T>(items: &mut mpsc::UnboundedReceiver<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), items.recv())
            .await
            .expect("in time")
            .expect("one more")
    }

    #[tokio::test]
    async fn a_batchs_notifications_go_to_every_replica_as_one_message_in_order() {
        let bus: Bus = Arc::new(InProcessBus::default());
        let subject = live_subject("t");
        let mut on_the_bus = bus.listen(&subject);
        // Two replicas: one projects the batch, both push it to their watchers.
        let (live_1, live_2) = (broadcast::channel(16).0, broadcast::channel(16).0);
        let (mut watcher_1, mut watcher_2) = (live_1.subscribe(), live_2.subscribe());
        let shutdown = CancellationToken::new();
        tokio::spawn(push_heard(&bus, &subject, live_1)(shutdown.clone()));
        tokio::spawn(push_heard(&bus, &subject, live_2)(shutdown.clone()));
        let announce = start_announcer(&bus, &shutdown);

        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        announce
            .send(vec![liked(1, alice), liked(2, bob), liked(3, alice)])
            .expect("announcer running");

        let made = pb::NewNotifications::decode(next(&mut on_the_bus).await).expect("decodes");
        let ids: Vec<i64> = made.notifications.iter().map(|n| n.id).collect();
        assert_eq!(ids, [1, 2, 3], "the whole batch, in the order made");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), on_the_bus.recv())
                .await
                .is_err(),
            "one message for the batch, not one per notification"
        );
        for watcher in [&mut watcher_1, &mut watcher_2] {
            let mut pushed = Vec::new();
            for _ in 0..3 {
                let n = tokio::time::timeout(Duration::from_secs(5), watcher.recv())
                    .await
                    .expect("pushed")
                    .expect("a notification");
                pushed.push((n.id, n.recipient_id));
            }
            assert_eq!(
                pushed,
                [
                    (1, alice.to_string()),
                    (2, bob.to_string()),
                    (3, alice.to_string())
                ]
            );
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_batch_too_big_for_one_message_goes_in_several_in_order() {
        let bus: Bus = Arc::new(InProcessBus::default());
        let mut on_the_bus = bus.listen(&live_subject("t"));
        let shutdown = CancellationToken::new();
        let announce = start_announcer(&bus, &shutdown);

        // A post by an author with more followers than one message holds.
        let made = 2 * ANNOUNCED_MAX + 1;
        let author = Uuid::now_v7();
        let ids = 1..=i64::try_from(made).expect("a small count");
        announce
            .send(ids.clone().map(|id| liked(id, author)).collect())
            .expect("announcer running");

        let mut sizes = Vec::new();
        let mut heard = Vec::new();
        while heard.len() < made {
            let part = pb::NewNotifications::decode(next(&mut on_the_bus).await).expect("decodes");
            sizes.push(part.notifications.len());
            heard.extend(part.notifications.into_iter().map(|n| n.id));
        }
        assert_eq!(sizes, [ANNOUNCED_MAX, ANNOUNCED_MAX, 1]);
        assert_eq!(
            heard,
            ids.collect::<Vec<_>>(),
            "every one, in the order made"
        );
        shutdown.cancel();
    }
}
