//! A redelivered event (the bus's at-least-once delivery) changes the projection once: the
//! consumer records each event id in the same transaction as its effect.

use oba_kit::consumer::{Handled, handle};
use oba_kit::db::{DbConfig, connect_and_migrate};
use oba_proto::event::v1::{Envelope, PostChanged, PostLiked};
use prost::Message;
use rank_service::projection::TrendingProjection;
use rank_service::storage::{self, migration::Migrator};
use uuid::Uuid;

fn envelope(event_type: &str, payload: &impl Message) -> Envelope {
    Envelope {
        id: Uuid::now_v7().to_string(),
        r#type: event_type.to_owned(),
        occurred_at: Some(oba_proto::time::timestamp(chrono::Utc::now())),
        aggregate_id: String::new(),
        payload: payload.encode_to_vec(),
        trace_context: Default::default(),
    }
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

#[tokio::test]
async fn the_same_like_delivered_twice_counts_once() {
    let (_dir, db) = rank_db().await;
    let post = Uuid::now_v7();
    let created = envelope(
        "post.created",
        &PostChanged {
            post_id: post.to_string(),
            created_at: Some(oba_proto::time::timestamp(chrono::Utc::now())),
            ..Default::default()
        },
    );
    let liked = envelope(
        "post.liked",
        &PostLiked {
            post_id: post.to_string(),
            user_id: Uuid::now_v7().to_string(),
            ..Default::default()
        },
    );
    assert_eq!(
        handle(&db, &TrendingProjection, &created)
            .await
            .expect("apply"),
        Handled::Applied
    );
    let score_before_like = storage::trending(&db, 10, chrono::Utc::now())
        .await
        .expect("trending")[0]
        .1;

    assert_eq!(
        handle(&db, &TrendingProjection, &liked)
            .await
            .expect("apply"),
        Handled::Applied
    );
    let once = storage::trending(&db, 10, chrono::Utc::now())
        .await
        .expect("trending")[0]
        .1;
    assert_eq!(
        handle(&db, &TrendingProjection, &liked)
            .await
            .expect("apply"),
        Handled::Duplicate
    );
    assert_eq!(
        handle(&db, &TrendingProjection, &created)
            .await
            .expect("apply"),
        Handled::Duplicate
    );
    let twice = storage::trending(&db, 10, chrono::Utc::now())
        .await
        .expect("trending")[0]
        .1;

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
    let liked = |post: Uuid| {
        envelope(
            "post.liked",
            &PostLiked {
                post_id: post.to_string(),
                user_id: Uuid::now_v7().to_string(),
                ..Default::default()
            },
        )
    };
    let created = |post: Uuid| {
        envelope(
            "post.created",
            &PostChanged {
                post_id: post.to_string(),
                created_at: Some(oba_proto::time::timestamp(chrono::Utc::now())),
                ..Default::default()
            },
        )
    };
    // Two likes of `early` arrive before its post.created; `plain` has no likes.
    for event in [liked(early), liked(early), created(early), created(plain)] {
        handle(&db, &TrendingProjection, &event)
            .await
            .expect("apply");
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
