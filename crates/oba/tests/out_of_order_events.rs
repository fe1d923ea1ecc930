//! Projections that end as the events' writes did, in whatever order the bus delivers them:
//! a nak'd event comes again after later ones, and NATS 2.9 gives each subject a consumer
//! of its own, so `user.unfollowed` may overtake `user.followed` and `post.created` may come
//! after `post.deleted`. Every order is tried, one event per transaction and all in one
//! batch, on SQLite and on PostgreSQL.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

use notification_service::projection::NotificationProjection;
use notification_service::storage as notifications;
use oba_kit::consumer::{Handled, Projection, handle, handle_together};
use oba_kit::db::{DbConfig, connect_and_migrate};
use oba_kit::outbox::OutboxEvent;
use oba_proto::event::v1::{
    CommentChanged, Envelope, PostChanged, PostDeleted, PostLiked, UserFollowed,
};
use rank_service::projection::TrendingProjection;
use rank_service::storage as trending;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

#[path = "support/databases.rs"]
mod databases;
use databases::TestDatabase;

/// Every order of `items`.
fn orders<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    (0..items.len())
        .flat_map(|first| {
            let mut rest = items.to_vec();
            let head = rest.remove(first);
            orders(&rest).into_iter().map(move |mut order| {
                order.insert(0, head.clone());
                order
            })
        })
        .collect()
}

/// Delivers `events` in order, one transaction each, or all in one batch.
async fn deliver<P: Projection>(
    db: &DatabaseConnection,
    projection: &P,
    events: &[Envelope],
    together: bool,
) {
    let handled = if together {
        handle_together(db, projection, events)
            .await
            .expect("applied")
    } else {
        let mut handled = Vec::new();
        for event in events {
            handled.push(handle(db, projection, event).await.expect("applied"));
        }
        handled
    };
    assert!(
        handled.iter().all(|h| *h == Handled::Applied),
        "{handled:?}"
    );
}

fn follow_event(event_type: &'static str, fan: Uuid, author: Uuid) -> Envelope {
    let e = UserFollowed {
        follower_id: fan.to_string(),
        followee_id: author.to_string(),
    };
    OutboxEvent::new(event_type, author, &e).into_envelope()
}

/// For each of `writes` (the follow events of a pair, in the order they were made) and each
/// order of delivery, a new pair: its follower set ends as the last write left it.
async fn follows_end_as_their_last_write(db: &DatabaseConnection, writes: &[&'static str]) {
    let (announce, _announced) = tokio::sync::mpsc::unbounded_channel();
    let projection = NotificationProjection { announce };
    let following = *writes.last().expect("a write") == "user.followed";
    for together in [false, true] {
        for order in orders(&(0..writes.len()).collect::<Vec<_>>()) {
            let (fan, author) = (Uuid::now_v7(), Uuid::now_v7());
            let made: Vec<Envelope> = writes
                .iter()
                .map(|w| follow_event(w, fan, author))
                .collect();
            let delivered: Vec<Envelope> = order.iter().map(|i| made[*i].clone()).collect();
            deliver(db, &projection, &delivered, together).await;
            let followers = notifications::followers_of(db, author)
                .await
                .expect("followers");
            assert_eq!(
                followers == [fan],
                following,
                "{writes:?} delivered in the order {order:?} (together: {together}): {followers:?}"
            );
        }
    }
}

async fn follows_in_any_order(db: DatabaseConnection) {
    follows_end_as_their_last_write(&db, &["user.followed", "user.unfollowed"]).await;
    follows_end_as_their_last_write(&db, &["user.followed", "user.unfollowed", "user.followed"])
        .await;

    // A follow stored before versions were kept (no version) gives way to any event.
    let (fan, author) = (Uuid::now_v7(), Uuid::now_v7());
    notifications::entity::follower::Entity::insert(notifications::entity::follower::ActiveModel {
        followee_id: Set(author),
        follower_id: Set(fan),
        following: Set(true),
        version: Set(None),
    })
    .exec_without_returning(&db)
    .await
    .expect("an unversioned follow");
    let (announce, _announced) = tokio::sync::mpsc::unbounded_channel();
    let projection = NotificationProjection { announce };
    let unfollowed = follow_event("user.unfollowed", fan, author);
    deliver(&db, &projection, &[unfollowed], false).await;
    let followers = notifications::followers_of(&db, author)
        .await
        .expect("followers");
    assert!(followers.is_empty(), "{followers:?}");
}

/// Every event a post can have, in the order they are made: created, liked, commented on,
/// deleted.
fn post_life(post: Uuid) -> Vec<Envelope> {
    let created = PostChanged {
        post_id: post.to_string(),
        created_at: Some(oba_proto::time::timestamp(chrono::Utc::now())),
        ..Default::default()
    };
    let liked = PostLiked {
        post_id: post.to_string(),
        user_id: Uuid::now_v7().to_string(),
        ..Default::default()
    };
    let commented = CommentChanged {
        post_id: post.to_string(),
        ..Default::default()
    };
    let deleted = PostDeleted {
        post_id: post.to_string(),
        ..Default::default()
    };
    vec![
        OutboxEvent::new("post.created", post, &created).into_envelope(),
        OutboxEvent::new("post.liked", post, &liked).into_envelope(),
        OutboxEvent::new("comment.added", post, &commented).into_envelope(),
        OutboxEvent::new("post.deleted", post, &deleted).into_envelope(),
    ]
}

async fn deleted_posts_in_any_order(db: DatabaseConnection) {
    let live = Uuid::now_v7();
    deliver(&db, &TrendingProjection, &post_life(live)[..3], false).await;
    for together in [false, true] {
        for order in orders(&[0, 1, 2, 3]) {
            let life = post_life(Uuid::now_v7());
            let delivered: Vec<Envelope> = order.iter().map(|i| life[*i].clone()).collect();
            deliver(&db, &TrendingProjection, &delivered, together).await;
        }
    }
    // 48 deleted posts, each delivered in another order, and one live post.
    let top = trending::trending(&db, 10, chrono::Utc::now())
        .await
        .expect("trending");
    let ids: Vec<Uuid> = top.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [live], "only the live post trends");
}

/// A fresh SQLite database of `M` (and the dir holding it).
async fn sqlite<M: MigratorTrait>() -> (tempfile::TempDir, DatabaseConnection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = connect_and_migrate::<M>(&DbConfig::sqlite_file("TEST", &dir.path().join("p.db")))
        .await
        .expect("database");
    (dir, db)
}

/// A fresh PostgreSQL database of `M`, dropped with the first value.
async fn postgres<M: MigratorTrait>(prefix: &str) -> (TestDatabase, DatabaseConnection) {
    let database = TestDatabase::create(prefix).await;
    let db = connect_and_migrate::<M>(&database.config(2))
        .await
        .expect("migrate");
    (database, db)
}

#[tokio::test]
async fn follow_events_in_any_order_end_as_the_last_on_sqlite() {
    let (_dir, db) = sqlite::<notifications::migration::Migrator>().await;
    follows_in_any_order(db).await;
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn follow_events_in_any_order_end_as_the_last_on_postgres() {
    let (_database, db) = postgres::<notifications::migration::Migrator>("oba_follow_order_").await;
    follows_in_any_order(db).await;
}

#[tokio::test]
async fn a_deleted_post_never_trends_again_whatever_comes_after_on_sqlite() {
    let (_dir, db) = sqlite::<trending::migration::Migrator>().await;
    deleted_posts_in_any_order(db).await;
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_deleted_post_never_trends_again_whatever_comes_after_on_postgres() {
    let (_database, db) = postgres::<trending::migration::Migrator>("oba_rank_order_").await;
    deleted_posts_in_any_order(db).await;
}
