//! A batch of events is applied in one transaction: follows are written as their events
//! come (a later `post.created` of the same batch reads them), notifications are stored
//! together at the end, in the order of their events, and announced together only after the
//! commit.

use notification_service::projection::NotificationProjection;
use notification_service::storage::{self, migration::Migrator};
use oba_kit::consumer::handle_together;
use oba_kit::db::{DbConfig, connect_and_migrate};
use oba_kit::outbox::OutboxEvent;
use oba_proto::event::v1::{CommentChanged, Envelope, PostChanged, PostLiked, UserFollowed};
use prost::Message;
use uuid::Uuid;

/// The event as its producer would publish it.
fn envelope(event_type: &'static str, payload: &impl Message) -> Envelope {
    OutboxEvent::new(event_type, "", payload).into_envelope()
}

#[tokio::test]
async fn a_batchs_notifications_are_stored_and_announced_in_the_order_of_their_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = connect_and_migrate::<Migrator>(&DbConfig::sqlite_file(
        "TEST",
        &dir.path().join("notification.db"),
    ))
    .await
    .expect("database");
    let (author, fan, post) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (announce, mut announced) = tokio::sync::mpsc::unbounded_channel();
    let projection = NotificationProjection { announce };
    let batch = [
        envelope(
            "user.followed",
            &UserFollowed {
                follower_id: fan.to_string(),
                followee_id: author.to_string(),
            },
        ),
        envelope(
            "post.created",
            &PostChanged {
                post_id: post.to_string(),
                author_id: author.to_string(),
                ..Default::default()
            },
        ),
        // The author's comment on their own post notifies nobody.
        envelope(
            "comment.added",
            &CommentChanged {
                post_id: post.to_string(),
                post_author_id: author.to_string(),
                author_id: author.to_string(),
                ..Default::default()
            },
        ),
        envelope(
            "post.liked",
            &PostLiked {
                post_id: post.to_string(),
                post_author_id: author.to_string(),
                user_id: fan.to_string(),
            },
        ),
    ];
    handle_together(&db, &projection, &batch)
        .await
        .expect("applied");

    let batch_told = announced
        .try_recv()
        .expect("the batch's notifications announced");
    assert!(
        announced.try_recv().is_err(),
        "a batch is announced once, all its notifications together"
    );
    let told: Vec<(Uuid, String)> = batch_told
        .into_iter()
        .map(|n| (n.recipient_id, n.kind))
        .collect();
    assert_eq!(
        told,
        [
            (author, "FOLLOWED".to_owned()),
            (fan, "PUBLISHED".to_owned()),
            (author, "LIKED".to_owned()),
        ]
    );
    let authors = storage::list(&db, author, 10, None, false)
        .await
        .expect("list");
    let kinds: Vec<&str> = authors
        .notifications
        .iter()
        .map(|n| n.kind.as_str())
        .collect();
    assert_eq!(kinds, ["LIKED", "FOLLOWED"], "newest first");
    let fans = storage::list(&db, fan, 10, None, false)
        .await
        .expect("list");
    assert_eq!(fans.notifications.len(), 1);
    assert_eq!(fans.notifications[0].post_id, Some(post));
}
