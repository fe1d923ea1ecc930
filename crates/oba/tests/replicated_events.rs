//! Events with N replicas, on the real NATS JetStream and PostgreSQL of this machine: two
//! relays sharing one outbox publish each row once, a round's events of one type as one
//! pack that consumers and listeners get event by event, a publish repeated after a crash is
//! dropped by its id, a pack is acked when all its events are and comes again whole when
//! one is nak'd, a consumer receives only its own subjects, whatever the server
//! version (NATS 2.9 ignores `filter_subjects`), and its lag counts what it has not acked.
//! And likes written together by two replicas, each with its writer, count once, a
//! batch written as one PostgreSQL statement tells only what changed, and two rank-service
//! replicas' counter batches over the same posts count every change once. And the ids of
//! events applied long ago are pruned, in chunks.

#![cfg_attr(not(oba_test_postgres), allow(dead_code, unused_imports))]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oba_kit::bus::{Bus, NatsBus};
use oba_kit::config::Setting;
use oba_kit::db;
use oba_kit::metrics::Metrics;
use oba_kit::outbox::{CreateOutbox, DropPendingIndex, Outbox, Relay};
use oba_kit::shutdown::CancellationToken;
use sea_orm_migration::{MigrationTrait, MigratorTrait};

#[path = "support/databases.rs"]
mod databases;
use databases::TestDatabase;

struct OutboxOnly;

impl MigratorTrait for OutboxOnly {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateOutbox), Box::new(DropPendingIndex)]
    }
}

fn nats_url() -> String {
    std::env::var("OBA_TEST_NATS_URL").expect("OBA_TEST_NATS_URL")
}

fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}{}", &id[id.len() - 10..])
}

async fn stream_messages(namespace: &str) -> u64 {
    let client = async_nats::connect(nats_url()).await.expect("nats");
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(namespace).await.expect("stream");
    stream.info().await.expect("info").state.messages
}

async fn delete_stream(namespace: &str) {
    let client = async_nats::connect(nats_url()).await.expect("nats");
    let _ = async_nats::jetstream::new(client)
        .delete_stream(namespace)
        .await;
}

/// Publishes one event of each type in `events`, in order, each with an id of its own.
async fn publish_each(bus: &Bus, namespace: &str, events: &[&str]) {
    for event in events {
        bus.publish(
            &format!("{namespace}.{event}"),
            &uuid::Uuid::now_v7().to_string(),
            Bytes::from_static(b"x"),
        )
        .await
        .expect("publish");
    }
}

async fn bus(namespace: &str) -> Bus {
    std::sync::Arc::new(
        NatsBus::connect(&Setting::new("OBA_BUS_URL", nats_url()), namespace)
            .await
            .expect("bus"),
    )
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn two_relays_on_one_outbox_publish_each_event_once() {
    use oba_proto::event::v1::Envelope;
    use prost::Message;
    use sea_orm::{EntityTrait, QueryOrder};

    let database = TestDatabase::create("oba_relay_").await;
    let config = database.config(5);
    let writer = db::connect_and_migrate::<OutboxOnly>(&config)
        .await
        .expect("migrate");
    let outbox = Outbox::default();
    const EVENTS: usize = 300;
    const TYPES: [&str; 3] = ["post.viewed", "post.liked", "comment.added"];
    for i in 0..EVENTS {
        let event = oba_proto::event::v1::PostViewed {
            post_id: uuid::Uuid::now_v7().to_string(),
            count: 1,
        };
        outbox
            .enqueue(&writer, TYPES[i % TYPES.len()], &event.post_id, &event)
            .await
            .expect("enqueue");
    }
    // Every row, as a relay that crashes before its commit would publish them again.
    let rows = oba_kit::outbox::entity::Entity::find()
        .order_by_asc(oba_kit::outbox::entity::Column::Id)
        .all(&writer)
        .await
        .expect("query");
    let written: Vec<(String, String)> = rows
        .iter()
        .map(|row| (row.event_type.clone(), row.id.to_string()))
        .collect();

    // Two replicas: each its own connection pool and relay, one outbox table.
    let namespace = unique("relay");
    let observer = bus(&namespace).await;
    let mut deliveries = observer.subscribe("all", vec![format!("{namespace}.>")]);
    let mut heard = observer.listen(&format!("{namespace}.>"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shutdown = CancellationToken::new();
    let mut relays = Vec::new();
    for replica in ["a", "b"] {
        let db = db::connect_and_migrate::<OutboxOnly>(&config)
            .await
            .expect("connect");
        let relay = Relay::new(
            db,
            bus(&namespace).await,
            &namespace,
            Outbox::default(),
            &Metrics::new(replica),
        );
        relays.push(tokio::spawn(relay.run(shutdown.clone())));
    }

    // The consumer gets every event once, each type in the order written; so does a listener.
    let event_of = |payload: &Bytes| {
        let envelope = Envelope::decode(payload.clone()).expect("an envelope");
        (envelope.r#type, envelope.id)
    };
    let mut consumed = Vec::new();
    while consumed.len() < EVENTS {
        let delivery = tokio::time::timeout(Duration::from_secs(30), deliveries.recv())
            .await
            .expect("every event in time")
            .expect("a delivery");
        consumed.push(event_of(&delivery.payload));
        delivery.ack().await.expect("ack");
    }
    let mut listened = Vec::new();
    while listened.len() < EVENTS {
        let payload = tokio::time::timeout(Duration::from_secs(5), heard.recv())
            .await
            .expect("every event heard in time")
            .expect("an event");
        listened.push(event_of(&payload));
    }
    let per_type = |events: &[(String, String)], of: &str| -> Vec<String> {
        events
            .iter()
            .filter(|(t, _)| t == of)
            .map(|(_, id)| id.clone())
            .collect()
    };
    for of in TYPES {
        assert_eq!(per_type(&consumed, of), per_type(&written, of), "{of}");
        assert_eq!(per_type(&listened, of), per_type(&written, of), "{of}");
    }
    // A round's events of one type travel as one message.
    let messages = stream_messages(&namespace).await;
    assert!(
        messages < EVENTS as u64 / 10,
        "{messages} messages for {EVENTS} events"
    );

    // Relays that crashed after publishing but before deleting their rows publish the same
    // rows again: the stream drops each repeat by its id, and nothing comes again.
    oba_kit::outbox::entity::Entity::insert_many(
        rows.into_iter()
            .map(oba_kit::outbox::entity::ActiveModel::from),
    )
    .exec_without_returning(&writer)
    .await
    .expect("the rows again");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !outbox_event_types(&writer).await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        outbox_event_types(&writer).await.is_empty(),
        "published again"
    );
    assert_eq!(stream_messages(&namespace).await, messages);
    let again = tokio::time::timeout(Duration::from_secs(2), deliveries.recv()).await;
    assert!(again.is_err(), "a repeat was delivered");

    shutdown.cancel();
    for relay in relays {
        relay.await.expect("relay stops");
    }
    writer.close().await.expect("close");
    delete_stream(&namespace).await;
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_pack_is_acked_once_all_its_events_are_and_comes_again_whole_when_one_is_nakd() {
    let namespace = unique("pack");
    let bus = bus(&namespace).await;
    let subjects = vec![format!("{namespace}.post.liked")];
    let mut deliveries = bus.subscribe("rank", subjects.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_pack_abc(&bus, &subjects[0]).await;
    let lag = || async { bus.pending("rank", &subjects).await.expect("lag") };

    // The events one by one, in order; two acked and one nak'd: all three come again.
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(next_delivery(&mut deliveries).await);
    }
    let payloads: Vec<&[u8]> = first.iter().map(|d| d.payload.as_ref()).collect();
    assert_eq!(payloads, [b"a", b"b", b"c"]);
    assert!(first.iter().all(|d| !d.redelivered));
    let mut first = first.into_iter();
    first.next().expect("a").ack().await.expect("ack");
    first
        .next()
        .expect("b")
        .nak(Duration::ZERO)
        .await
        .expect("nak");
    first.next().expect("c").ack().await.expect("ack");
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(next_delivery(&mut deliveries).await);
    }
    let payloads: Vec<&[u8]> = again.iter().map(|d| d.payload.as_ref()).collect();
    assert_eq!(payloads, [b"a", b"b", b"c"]);
    assert!(again.iter().all(|d| d.redelivered));

    // Not acked while one event of it is not; acked, and gone, once all are.
    let mut again = again.into_iter();
    again.next().expect("a").ack().await.expect("ack");
    again.next().expect("b").ack().await.expect("ack");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lag().await, 1, "the pack waits for its last event");
    again.next().expect("c").ack().await.expect("ack");
    let deadline = Instant::now() + Duration::from_secs(5);
    while lag().await != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lag().await, 0);
    let more = tokio::time::timeout(Duration::from_secs(2), deliveries.recv()).await;
    assert!(more.is_err(), "nothing more is delivered");
    delete_stream(&namespace).await;
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn with_packs_off_each_event_is_a_message_of_its_own() {
    let namespace = unique("nopack");
    let bus: Bus = std::sync::Arc::new(
        NatsBus::connect(&Setting::new("OBA_BUS_URL", nats_url()), &namespace)
            .await
            .expect("bus")
            .packing(false),
    );
    let subject = format!("{namespace}.post.liked");
    let mut deliveries = bus.subscribe("rank", vec![subject.clone()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_pack_abc(&bus, &subject).await;
    assert_eq!(stream_messages(&namespace).await, 3);
    for expected in [b"a", b"b", b"c"] {
        let delivery = next_delivery(&mut deliveries).await;
        assert_eq!(delivery.payload.as_ref(), expected);
        delivery.ack().await.expect("ack");
    }
    delete_stream(&namespace).await;
}

/// Sends the events `a`, `b` and `c` of `subject` as one pack, and waits until stored.
async fn send_pack_abc(bus: &Bus, subject: &str) {
    let events: Vec<(String, Bytes)> = ["a", "b", "c"]
        .iter()
        .map(|p| {
            (
                uuid::Uuid::now_v7().to_string(),
                Bytes::from_static(p.as_bytes()),
            )
        })
        .collect();
    bus.send_pack(subject, "pack-1", events)
        .await
        .expect("send")
        .await
        .expect("stored");
}

async fn next_delivery(
    deliveries: &mut tokio::sync::mpsc::UnboundedReceiver<oba_kit::bus::Delivery>,
) -> oba_kit::bus::Delivery {
    tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
        .await
        .expect("a delivery in time")
        .expect("a delivery")
}

/// The types of the events in `db`'s outbox, oldest first.
async fn outbox_event_types(db: &sea_orm::DatabaseConnection) -> Vec<String> {
    use sea_orm::{EntityTrait, QueryOrder};
    oba_kit::outbox::entity::Entity::find()
        .order_by_asc(oba_kit::outbox::entity::Column::Id)
        .all(db)
        .await
        .expect("outbox")
        .into_iter()
        .map(|row| row.event_type)
        .collect()
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_consumer_receives_only_its_subjects() {
    let namespace = unique("filter");
    let bus = bus(&namespace).await;
    let wanted = [
        format!("{namespace}.post.liked"),
        format!("{namespace}.user.followed"),
    ];
    let mut deliveries = bus.subscribe("notify", wanted.to_vec());
    // The consumers exist once the bus has connected and made them; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_each(
        &bus,
        &namespace,
        &["post.liked", "post.viewed", "user.followed", "post.unliked"],
    )
    .await;
    let mut received = BTreeSet::new();
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(3), deliveries.recv()).await
    {
        received.insert(delivery.subject.clone());
        delivery.ack().await.expect("ack");
    }
    assert_eq!(received, wanted.into_iter().collect::<BTreeSet<_>>());
    delete_stream(&namespace).await;
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_consumers_lag_is_what_it_has_not_acked() {
    let namespace = unique("lag");
    let bus = bus(&namespace).await;
    let wanted = vec![
        format!("{namespace}.post.liked"),
        format!("{namespace}.user.followed"),
    ];
    let mut deliveries = bus.subscribe("rank", wanted.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_each(
        &bus,
        &namespace,
        &["post.liked", "post.viewed", "user.followed", "post.liked"],
    )
    .await;
    let lag_becomes = |expected: u64| {
        let (bus, wanted) = (bus.clone(), wanted.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let lag = bus.pending("rank", &wanted).await.expect("lag");
                if lag == expected || Instant::now() > deadline {
                    return lag;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Three events are the consumer's (not post.viewed), delivered or not, none acked.
    assert_eq!(lag_becomes(3).await, 3);
    let first = tokio::time::timeout(Duration::from_secs(3), deliveries.recv())
        .await
        .expect("a delivery in time")
        .expect("a delivery");
    first.ack().await.expect("ack");
    assert_eq!(lag_becomes(2).await, 2);
    delete_stream(&namespace).await;
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn likes_written_together_by_two_replicas_count_once_in_order() {
    use futures::future::join_all;
    use like_service::storage::{LikeKey, LikeStore, migration::Migrator};

    let database = TestDatabase::create("oba_likes_").await;
    let mut config = database.config(10);
    config.plan_once = true; // as like-service connects
    let first = db::connect_and_migrate::<Migrator>(&config)
        .await
        .expect("migrate");
    let second = db::connect_and_migrate::<Migrator>(&config)
        .await
        .expect("connect");
    let replicas = [
        LikeStore::new(first.clone(), Outbox::default()),
        LikeStore::new(second, Outbox::default()),
    ];
    let like = |post_id, user_id| LikeKey {
        post_id,
        user_id,
        post_author_id: None,
    };
    let post = uuid::Uuid::now_v7();
    let users: Vec<_> = (0..40).map(|_| uuid::Uuid::now_v7()).collect();
    // Every user likes on both replicas at once: 80 likes, 40 changes.
    let likes = users
        .iter()
        .flat_map(|user| replicas.iter().map(move |r| r.like(like(post, *user))));
    let answers = join_all(likes).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(
        replicas[0].counts(&[post]).await.expect("counts")[&post],
        40
    );

    // One user's like changed three times at once on one replica: applied in that order.
    let user = users[0];
    let (unliked, liked, unliked_again) = tokio::join!(
        replicas[1].unlike(like(post, user)),
        replicas[1].like(like(post, user)),
        replicas[1].unlike(like(post, user)),
    );
    assert_eq!(
        (
            unliked.expect("unlike"),
            liked.expect("like"),
            unliked_again.expect("unlike")
        ),
        (39, 40, 39)
    );

    let events = outbox_event_types(&first).await;
    let liked = events.iter().filter(|e| *e == "post.liked").count();
    let unliked = events.iter().filter(|e| *e == "post.unliked").count();
    assert_eq!((liked, unliked), (41, 2), "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("post.unliked"));

    drop(replicas);
    first.close().await.expect("close");
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn a_batch_of_likes_in_one_postgresql_statement_counts_and_tells_only_changes() {
    use futures::future::join_all;
    use like_service::storage::{LikeKey, LikeStore, migration::Migrator};
    use sea_orm::ConnectionTrait;

    // What the writer is handed at once is one batch, one statement.
    let database = TestDatabase::create("oba_likes_").await;
    let mut config = database.config(10);
    config.plan_once = true; // as like-service connects
    let db = db::connect_and_migrate::<Migrator>(&config)
        .await
        .expect("migrate");
    let plans = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SHOW plan_cache_mode",
        ))
        .await
        .expect("show")
        .and_then(|row| row.try_get::<String>("", "plan_cache_mode").ok());
    assert_eq!(plans.as_deref(), Some("force_generic_plan"));
    let store = LikeStore::new(db.clone(), Outbox::default());
    let like = |post_id, user_id| LikeKey {
        post_id,
        user_id,
        post_author_id: None,
    };
    let (post, user, other, nobody) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let (liked, unliked, liked_again, other_liked, other_again, not_liked) = tokio::join!(
        store.like(like(post, user)),
        store.unlike(like(post, user)),
        store.like(like(post, user)),
        store.like(like(post, other)),
        store.like(like(post, other)),
        store.unlike(like(post, nobody)),
    );
    // Each change of one like after the one before, the other likes going with the first
    // batch they can (user's and other's likes, then the unlike and other's like again,
    // then user's like again); the counts as of each commit.
    assert_eq!(
        (
            liked.expect("like"),
            unliked.expect("unlike"),
            liked_again.expect("like")
        ),
        (2, 1, 2)
    );
    assert_eq!(other_liked.expect("like"), 2);
    assert_eq!(other_again.expect("like"), 1);
    assert!(not_liked.is_ok(), "{not_liked:?}");

    // Many posts at once, then some taken back at once.
    let posts: Vec<_> = (0..6).map(|_| uuid::Uuid::now_v7()).collect();
    let users: Vec<_> = (0..8).map(|_| uuid::Uuid::now_v7()).collect();
    let every = || {
        posts
            .iter()
            .flat_map(|p| users.iter().map(move |u| like(*p, *u)))
    };
    let answers = join_all(every().map(|l| store.like(l))).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let taken_back = every().filter(|l| users[..3].contains(&l.user_id));
    let answers = join_all(taken_back.map(|l| store.unlike(l))).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let counts = store.counts(&posts).await.expect("counts");
    assert!(posts.iter().all(|p| counts[p] == 5), "{counts:?}");
    assert_eq!(store.counts(&[post]).await.expect("counts")[&post], 2);

    // One event per real change, in the order made: no event for a like liked again or
    // an unlike of what nobody liked.
    let events = outbox_event_types(&db).await;
    let expected: Vec<&str> = ["post.liked", "post.liked", "post.unliked", "post.liked"]
        .into_iter()
        .chain(std::iter::repeat_n("post.liked", 48))
        .chain(std::iter::repeat_n("post.unliked", 18))
        .collect();
    assert_eq!(events, expected);

    drop(store);
    db.close().await.expect("close");
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn counter_batches_of_two_rank_replicas_over_the_same_posts_sum_once() {
    use oba_kit::consumer::{Handled, handle_together};
    use oba_kit::outbox::OutboxEvent;
    use oba_proto::event::v1::{Envelope, PostLiked};
    use prost::Message;
    use rank_service::projection::TrendingProjection;
    use rank_service::storage::{entity, migration::Migrator};
    use sea_orm::EntityTrait;

    let database = TestDatabase::create("oba_rank_").await;
    let config = database.config(4);
    let replicas = [
        db::connect_and_migrate::<Migrator>(&config)
            .await
            .expect("migrate"),
        db::connect_and_migrate::<Migrator>(&config)
            .await
            .expect("connect"),
    ];
    let posts: Vec<_> = (0..8).map(|_| uuid::Uuid::now_v7()).collect();
    let event = |event_type: &'static str, post: uuid::Uuid| {
        let liked = PostLiked {
            post_id: post.to_string(),
            ..Default::default()
        };
        OutboxEvent::new(event_type, post, &liked).into_envelope()
    };
    // Both replicas' batches touch every post at once, their events in orders of their own;
    // each batch must apply (no lost update, no deadlock) and every change count once.
    let batches = |stride: usize| -> Vec<Vec<Envelope>> {
        (0..20)
            .map(|b| {
                (0..32)
                    .map(|i| {
                        let post = posts[(i * stride + b) % posts.len()];
                        event(
                            if i % 4 == 3 {
                                "post.unliked"
                            } else {
                                "post.liked"
                            },
                            post,
                        )
                    })
                    .collect()
            })
            .collect()
    };
    let work = [batches(1), batches(3)];
    let mut expected = std::collections::HashMap::<uuid::Uuid, i64>::new();
    for envelope in work.iter().flatten().flatten() {
        let post = PostLiked::decode(envelope.payload.as_slice()).expect("decode");
        let delta = if envelope.r#type == "post.liked" {
            1
        } else {
            -1
        };
        *expected
            .entry(post.post_id.parse().expect("uuid"))
            .or_default() += delta;
    }
    let replica = |db: &sea_orm::DatabaseConnection, batches: &[Vec<Envelope>]| {
        let db = db.clone();
        let batches = batches.to_vec();
        async move {
            for batch in &batches {
                let handled = handle_together(&db, &TrendingProjection, batch)
                    .await
                    .expect("no batch fails");
                assert!(handled.iter().all(|h| *h == Handled::Applied));
            }
        }
    };
    tokio::join!(
        replica(&replicas[0], &work[0]),
        replica(&replicas[1], &work[1])
    );
    let rows = entity::Entity::find()
        .all(&replicas[0])
        .await
        .expect("rows");
    let counted: std::collections::HashMap<_, _> =
        rows.iter().map(|r| (r.post_id, r.likes)).collect();
    assert_eq!(counted, expected);
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn ids_of_events_applied_long_ago_are_pruned_in_chunks_on_postgresql() {
    use oba_kit::consumer::{PROCESSED_RETENTION, entity, prune};
    use rank_service::storage::migration::Migrator;
    use sea_orm::{ActiveValue::Set, EntityTrait};

    let database = TestDatabase::create("oba_prune_").await;
    let db = db::connect_and_migrate::<Migrator>(&database.config(2))
        .await
        .expect("migrate");
    let now = chrono::Utc::now();
    let cutoff = now - chrono::Duration::from_std(PROCESSED_RETENTION).expect("fits");
    let rows = (0..25).map(|i| entity::ActiveModel {
        event_id: Set(uuid::Uuid::now_v7().to_string()),
        // Every fifth id was applied after the cutoff and stays.
        processed_at: Set(if i % 5 == 0 {
            cutoff + chrono::Duration::minutes(1)
        } else {
            cutoff - chrono::Duration::minutes(i)
        }),
    });
    entity::Entity::insert_many(rows)
        .exec(&db)
        .await
        .expect("rows");

    assert_eq!(prune(&db, cutoff, 3).await.expect("pruned"), 20);
    let left = entity::Entity::find().all(&db).await.expect("rows");
    assert_eq!(left.len(), 5);
    assert!(left.iter().all(|row| row.processed_at > cutoff));
    db.close().await.expect("close");
}

/// The indexes on the outbox of the database `db`, by name.
async fn outbox_indexes(db: &sea_orm::DatabaseConnection) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'outbox' ORDER BY indexname";
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("indexes")
        .iter()
        .map(|row| row.try_get("", "indexname").expect("name"))
        .collect()
}

#[tokio::test]
#[cfg_attr(
    not(oba_test_postgres),
    ignore = "needs OBA_TEST_DATABASE_URL and OBA_TEST_NATS_URL"
)]
async fn every_publishing_service_indexes_its_outbox_by_key_only() {
    use comment_service::storage::migration::Migrator as Comments;
    use like_service::storage::migration::Migrator as Likes;
    use post_service::storage::migration::Migrator as Posts;
    use user_service::storage::migration::Migrator as Users;
    // Each event then pays one B-tree insert, and the relay still finds the oldest first.
    async fn indexes_after<M: MigratorTrait>(service: &str) -> (String, Vec<String>) {
        let database = TestDatabase::create(&format!("oba_outbox_{service}_")).await;
        let db = db::connect_and_migrate::<M>(&database.config(2))
            .await
            .expect("migrate");
        let indexes = outbox_indexes(&db).await;
        db.close().await.expect("close");
        (format!("{service}-service"), indexes)
    }
    let outboxes = [
        indexes_after::<Users>("user").await,
        indexes_after::<Posts>("post").await,
        indexes_after::<Comments>("comment").await,
        indexes_after::<Likes>("like").await,
    ];
    for (service, indexes) in outboxes {
        assert_eq!(indexes, ["outbox_pkey"], "{service}");
    }
}
