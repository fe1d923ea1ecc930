//! How events move the trending projection, through the consumer: a redelivered event (the
//! bus's at-least-once delivery) changes it once, since the consumer records each event id
//! in the same transaction as its effect; and a batch of events, its counter changes summed
//! into one row per post and written in one statement, ends as its events one by one.

use oba_kit::consumer::{Handled, handle, handle_together};
use oba_kit::db::{DbConfig, connect_and_migrate};
use oba_kit::outbox::OutboxEvent;
use oba_proto::event::v1::{CommentChanged, Envelope, PostChanged, PostDeleted, PostLiked};
use rank_service::projection::TrendingProjection;
use rank_service::storage::{self, entity, migration::Migrator};
use sea_orm::EntityTrait;
use uuid::Uuid;

fn created(post: Uuid) -> Envelope {
    let e = PostChanged {
        post_id: post.to_string(),
        created_at: Some(oba_proto::time::timestamp(chrono::Utc::now())),
        ..Default::default()
    };
    OutboxEvent::new("post.created", post, &e).into_envelope()
}

/// `post.liked` or `post.unliked` of `post` by a new user.
fn liked(event_type: &'static str, post: Uuid) -> Envelope {
    let e = PostLiked {
        post_id: post.to_string(),
        user_id: Uuid::now_v7().to_string(),
        ..Default::default()
    };
    OutboxEvent::new(event_type, post, &e).into_envelope()
}

fn commented(post: Uuid) -> Envelope {
    let e = CommentChanged {
        post_id: post.to_string(),
        ..Default::default()
    };
    OutboxEvent::new("comment.added", post, &e).into_envelope()
}

fn deleted(post: Uuid) -> Envelope {
    let e = PostDeleted {
        post_id: post.to_string(),
        ..Default::default()
    };
    OutboxEvent::new("post.deleted", post, &e).into_envelope()
}

/// A fresh rank-service database (and the dir holding it).
async fn rank_db() -> (tempfile::TempDir, sea_orm::DatabaseConnection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = connect_and_migrate::<Migrator>(&DbConfig::sqlite_file(
        "TEST",
        &dir.path().join("rank.db"),
    ))
    .await
    .expect("database");
    (dir, db)
}

/// Delivers `event` once more to the consumer.
async fn deliver(db: &sea_orm::DatabaseConnection, event: &Envelope) -> Handled {
    handle(db, &TrendingProjection, event).await.expect("apply")
}

/// The best trending score now.
async fn top_score(db: &sea_orm::DatabaseConnection) -> f64 {
    storage::trending(db, 10, chrono::Utc::now())
        .await
        .expect("trending")[0]
        .1
}

#[tokio::test]
async fn the_same_like_delivered_twice_counts_once() {
    let (_dir, db) = rank_db().await;
    let post = Uuid::now_v7();
    let (created, liked) = (created(post), liked("post.liked", post));
    assert_eq!(deliver(&db, &created).await, Handled::Applied);
    let score_before_like = top_score(&db).await;

    assert_eq!(deliver(&db, &liked).await, Handled::Applied);
    let once = top_score(&db).await;
    assert_eq!(deliver(&db, &liked).await, Handled::Duplicate);
    assert_eq!(deliver(&db, &created).await, Handled::Duplicate);
    let twice = top_score(&db).await;

    assert!(once > score_before_like, "the like counted");
    // Scores decay by the microsecond; a second like would add 3/(age+2)^1.5, far more.
    assert!(
        (twice - once).abs() < 1e-6,
        "the redelivery changed nothing: {once} vs {twice}"
    );
}

#[tokio::test]
async fn likes_heard_before_their_post_count_once_it_arrives() {
    let (_dir, db) = rank_db().await;
    let (early, plain) = (Uuid::now_v7(), Uuid::now_v7());
    let liked = |post| liked("post.liked", post);
    // Two likes of `early` arrive before its post.created; `plain` has no likes.
    for event in [liked(early), liked(early), created(early), created(plain)] {
        deliver(&db, &event).await;
    }
    let trending = storage::trending(&db, 10, chrono::Utc::now())
        .await
        .expect("trending");
    let ids: Vec<Uuid> = trending.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [early, plain]);
    // (3·2 + 1) against (0 + 1): seven times the score, whatever the age.
    let ratio = trending[0].1 / trending[1].1;
    assert!((ratio - 7.0).abs() < 0.01, "{trending:?}");
}

#[tokio::test]
async fn a_batch_of_counter_events_ends_as_the_events_one_by_one() {
    let (_dir, db) = rank_db().await;
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
        row(gone).expect("gone").deleted,
        "a deleted post's row is marked"
    );
    let early_row = row(early).expect("early");
    assert_eq!((early_row.likes, early_row.created_at), (1, None));
    assert_eq!(rows.len(), 3);
    let trending = storage::trending(&db, 10, chrono::Utc::now())
        .await
        .expect("trending");
    assert_eq!(
        trending.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [kept],
        "neither the deleted post nor one not created yet trends"
    );
}
