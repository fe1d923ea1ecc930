//! The gRPC face of notification-service, including the live stream. Every call is about
//! the caller's own notifications: the recipient comes from the token.

use std::pin::Pin;

use futures::Stream;
use oba_kit::ServiceError;
use oba_kit::auth::Caller;
use oba_kit::page::page_size;
use oba_proto::notification::v1 as pb;
use oba_proto::time::timestamp;
use pb::notification_service_server::NotificationService;
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use crate::domain::Kind;
use crate::storage::{self, Notification};

pub struct NotificationGrpc {
    db: DatabaseConnection,
    /// New notifications of every recipient, as announced by whichever replica made them.
    live: broadcast::Sender<pb::Notification>,
}

impl NotificationGrpc {
    pub fn new(db: DatabaseConnection, live: broadcast::Sender<pb::Notification>) -> Self {
        Self { db, live }
    }
}

type NotificationStream = Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send>>;

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::NotificationPage>, Status> {
        let recipient = Caller::of(&request).user()?.user_id;
        let req = request.into_inner();
        let limit = page_size(req.first)?;
        let before = match req.after.as_str() {
            "" => None,
            cursor => Some(
                cursor
                    .parse()
                    .map_err(|_| ServiceError::invalid("after", "is not a valid cursor"))?,
            ),
        };
        let page = storage::list(&self.db, recipient, limit, before, req.unread_only).await?;
        let end_cursor = page
            .notifications
            .last()
            .map(|n| n.id.to_string())
            .unwrap_or_default();
        Ok(Response::new(pb::NotificationPage {
            notifications: page.notifications.into_iter().map(message).collect(),
            end_cursor,
            has_next_page: page.has_next_page,
        }))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let recipient = Caller::of(&request).user()?.user_id;
        let marked = storage::mark_read(&self.db, recipient).await?;
        Ok(Response::new(pb::MarkReadResponse { marked }))
    }

    type WatchNotificationsStream = NotificationStream;

    async fn watch_notifications(
        &self,
        request: Request<pb::WatchNotificationsRequest>,
    ) -> Result<Response<NotificationStream>, Status> {
        let recipient = Caller::of(&request).user()?.user_id.to_string();
        let receiver = self.live.subscribe();
        let stream = futures::stream::unfold(receiver, move |mut receiver| {
            let recipient = recipient.clone();
            async move {
                loop {
                    match receiver.recv().await {
                        Ok(n) if n.recipient_id == recipient => {
                            return Some((Ok(n), receiver));
                        }
                        Ok(_) => {}
                        // A slow watcher skipped some; the list query still has them.
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A stored notification as the contract's message.
pub fn message(n: Notification) -> pb::Notification {
    let kind = match Kind::parse(&n.kind) {
        Some(Kind::Followed) => pb::Kind::Followed,
        Some(Kind::Commented) => pb::Kind::Commented,
        Some(Kind::Liked) => pb::Kind::Liked,
        Some(Kind::Published) => pb::Kind::Published,
        None => pb::Kind::Unspecified,
    };
    pb::Notification {
        id: n.id,
        recipient_id: n.recipient_id.to_string(),
        kind: kind.into(),
        actor_id: n.actor_id.to_string(),
        post_id: n.post_id.map(|p| p.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(n.created_at)),
        read: n.read_at.is_some(),
    }
}
