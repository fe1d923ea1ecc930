//! A batch of events is applied in one transaction, its counter changes summed into one row
//! per post and written in one statement: the counters end as if each event had been
//! applied alone.

use oba_kit::consumer::{Handled, handle_together};
use oba_kit::db::{DbConfig, connect_and_migrate};
use oba_proto::event::v1::{CommentChanged, Envelope, PostChanged, PostDeleted, PostLiked};
use prost::Message;
use rank_service::projection::TrendingProjection;
use rank_service::storage::{entity, migration::Migrator};
use sea_orm::EntityTrait;
use uuid::Uuid;

fn envelope(event_type: &str, payload: &impl Message) -> Envelope {
    Envelope {
        id: Uuid::now_v7().to_string(),
        r#type: event_type.to_owned(),
        payload: payload.encode_to_vec(),
        ..Default::default()
    }
}

fn created(post: Uuid) -> Envelope {
    envelope(
        "post.created",
        &PostChanged {
            post_id: post.to_string(),
            created_at: Some(oba_proto::time::timestamp(chrono::Utc::now())),
            ..Default::default()
        },
    )
}

fn liked(event_type: &str, post: Uuid) -> Envelope {
    envelope(
        event_type,
        &PostLiked {
            post_id: post.to_string(),
            user_id: Uuid::now_v7().to_string(),
            ..Default::default()
        },
    )
}

fn commented(post: Uuid) -> Envelope {
    envelope(
        "comment.added",
        &CommentChanged {
            post_id: post.to_string(),
            ..Default::default()
        },
    )
}

fn deleted(post: Uuid) -> Envelope {
    envelope(
        "post.deleted",
        &PostDeleted {
            post_id: post.to_string(),
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn a_batch_of_counter_events_ends_as_the_events_one_by_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = connect_and_migrate::<Migrator>(&DbConfig::sqlite_file(
        "TEST",
        &dir.path().join("rank.db"),
    ))
    .await
    .expect("database");
    let (kept, gone, early) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let like_of_kept = liked("post.liked", kept);
    let batch = [
        created(kept),
        created(gone),
        like_of_kept.clone(),
        liked("post.liked", gone),
        liked("post.liked", kept),
        liked("post.unliked", kept),
        liked("post.liked", early), // before its post.created, which is not in this batch
        commented(kept),
        like_of_kept.clone(), // a redelivery within the batch
        deleted(gone),
        liked("post.liked", early),
        liked("post.unliked", early),
    ];
    let handled = handle_together(&db, &TrendingProjection, &batch)
        .await
        .expect("applied");
    assert_eq!(handled[8], Handled::Duplicate);
    assert_eq!(
        handled.iter().filter(|h| **h == Handled::Applied).count(),
        11
    );
    // And the same event again in a later batch changes nothing.
    let again = handle_together(&db, &TrendingProjection, &[like_of_kept, commented(kept)])
        .await
        .expect("applied");
    assert_eq!(again, [Handled::Duplicate, Handled::Applied]);

    let rows = entity::Entity::find().all(&db).await.expect("rows");
    let row = |post: Uuid| rows.iter().find(|r| r.post_id == post);
    let kept_row = row(kept).expect("kept");
    assert_eq!((kept_row.likes, kept_row.comments), (1, 2));
    assert!(kept_row.created_at.is_some());
    assert!(
        row(gone).is_none(),
        "a deleted post's earlier like did not bring it back"
    );
    let early_row = row(early).expect("early");
    assert_eq!((early_row.likes, early_row.created_at), (1, None));
    assert_eq!(rows.len(), 2);
}
