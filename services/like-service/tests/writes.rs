//! Likes written together: concurrent changes share a transaction, yet each counts once,
//! each real change is one event, and changes of one like apply in the order asked.

use futures::future::join_all;
use like_service::storage::{LikeKey, LikeStore, migration::Migrator};
use oba_kit::db::{DbConfig, connect_and_migrate};
use oba_kit::outbox::{Outbox, entity as outbox};
use sea_orm::{DatabaseConnection, EntityTrait, QueryOrder};
use uuid::Uuid;

async fn store() -> (tempfile::TempDir, DatabaseConnection, LikeStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = connect_and_migrate::<Migrator>(&DbConfig::sqlite_file(
        "TEST",
        &dir.path().join("likes.db"),
    ))
    .await
    .expect("database");
    let store = LikeStore::new(db.clone(), Outbox::default());
    (dir, db, store)
}

fn like(post_id: Uuid, user_id: Uuid) -> LikeKey {
    LikeKey {
        post_id,
        user_id,
        post_author_id: None,
    }
}

/// The types of the events in the outbox, oldest first.
async fn events(db: &DatabaseConnection) -> Vec<String> {
    outbox::Entity::find()
        .order_by_asc(outbox::Column::Id)
        .all(db)
        .await
        .expect("outbox")
        .into_iter()
        .map(|row| row.event_type)
        .collect()
}

#[tokio::test]
async fn many_likes_at_once_each_count_once_with_one_event_per_change() {
    let (_dir, db, store) = store().await;
    let post = Uuid::now_v7();
    let users: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    // Every user likes twice, all at once: the second like of each changes nothing.
    let asked = users
        .iter()
        .chain(&users)
        .map(|user| store.like(like(post, *user)));
    let counts: Vec<u64> = join_all(asked)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("likes");

    assert!(counts.iter().all(|n| (1..=50).contains(n)), "{counts:?}");
    assert_eq!(counts.iter().max(), Some(&50));
    assert_eq!(store.counts(&[post]).await.expect("counts")[&post], 50);
    assert_eq!(events(&db).await, vec!["post.liked"; 50]);
}

#[tokio::test]
async fn changes_of_one_like_asked_together_apply_in_the_order_asked() {
    let (_dir, db, store) = store().await;
    let (post, user, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    // Handed to the writer in this order before any is written.
    let (liked, unliked, liked_again, other_liked) = tokio::join!(
        store.like(like(post, user)),
        store.unlike(like(post, user)),
        store.like(like(post, user)),
        store.like(like(post, other)),
    );
    let (liked, unliked) = (liked.expect("like"), unliked.expect("unlike"));
    let (liked_again, other_liked) = (liked_again.expect("like"), other_liked.expect("like"));

    // Each change of the one like is written after the one before it; the other user's
    // like does not wait behind them: it is written with the first.
    assert_eq!((liked, unliked, liked_again), (2, 1, 2));
    assert_eq!(other_liked, 2);
    assert_eq!(
        events(&db).await,
        vec!["post.liked", "post.liked", "post.unliked", "post.liked"]
    );
}

#[tokio::test]
async fn unliking_what_nobody_liked_changes_nothing_and_tells_no_one() {
    let (_dir, db, store) = store().await;
    let post = Uuid::now_v7();
    let unliked = join_all((0..5).map(|_| store.unlike(like(post, Uuid::now_v7())))).await;
    assert!(unliked.iter().all(|n| matches!(n, Ok(0))), "{unliked:?}");
    assert!(events(&db).await.is_empty());
}

#[tokio::test]
async fn likes_and_unlikes_of_many_posts_at_once_leave_the_right_counts() {
    let (_dir, _db, store) = store().await;
    let posts: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let users: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
    let every = || {
        posts
            .iter()
            .flat_map(|p| users.iter().map(move |u| like(*p, *u)))
    };
    join_all(every().map(|l| store.like(l))).await;
    // Then the first four users take theirs back, again all at once.
    let taken_back = every().filter(|l| users[..4].contains(&l.user_id));
    let answers = join_all(taken_back.map(|l| store.unlike(l))).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");

    let counts = store.counts(&posts).await.expect("counts");
    assert!(posts.iter().all(|p| counts[p] == 6), "{counts:?}");
}

#[tokio::test]
async fn a_change_whose_caller_gave_up_before_it_was_written_is_not_made() {
    let (_dir, db, store) = store().await;
    let (post, gone, waiting) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut abandoned = Box::pin(store.like(like(post, gone)));
    // Handed to the writer, then given up before the writer ran (as a deadline would).
    assert!(futures::poll!(abandoned.as_mut()).is_pending());
    drop(abandoned);

    let count = store.like(like(post, waiting)).await.expect("like");
    assert_eq!(count, 1);
    assert_eq!(events(&db).await, vec!["post.liked"]);
    assert!(
        store
            .liked_among(gone, &[post])
            .await
            .expect("liked")
            .is_empty()
    );
}
