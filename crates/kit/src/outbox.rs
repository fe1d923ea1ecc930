//! The transactional outbox: an event is written to the `outbox` table in the same database
//! transaction as the state change it reports, and a relay publishes pending rows in order
//! and deletes them in the transaction that published them, so the table holds only what
//! waits (the stream keeps the history). A write therefore never succeeds without its
//! event, and a bus that is down only delays events: they wait in the table until it is back.
//!
//! A queue table churns: on PostgreSQL every published row leaves a dead tuple that the
//! relay's next query would walk past until a vacuum (autovacuum looks once a minute; at
//! thousands of events a second the relay's query took 6 ms of a core, every round). So the
//! relay vacuums its outbox itself, at most once a second after publishing.
//!
//! With N replicas of a service, N relays share one outbox, and each row is still published
//! once, in order: on PostgreSQL a relay publishes a batch only while holding a
//! transaction-scoped advisory lock (the others skip that round), and the batch is marked
//! sent in the same transaction. A relay that dies after publishing but before committing
//! leaves its rows to be published again; the bus drops those repeats by event id
//! (JetStream's `Nats-Msg-Id` duplicate window). SQLite has one process, so no lock.
//!
//! Under load a round starts at most every [`RELAY_GATHER`], so that it publishes the events
//! of those milliseconds in one transaction instead of a commit each, and on NATS as one
//! message per event type (a pack, see `crate::bus`) instead of one per event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use oba_proto::event::v1::Envelope;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use sea_orm_migration::async_trait;
use sea_orm_migration::prelude::{ColumnDef, Index, SchemaManager, Table};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{Bus, Pace};
use crate::metrics::Metrics;
use crate::shutdown::Ticks;

pub mod entity {
    //! The `outbox` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        /// The event id (UUIDv7): ordering by it is publishing in commit order per service.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// e.g. `post.created`; the subject is `<namespace>.<event_type>`.
        pub event_type: String,
        /// The encoded `oba.event.v1.Envelope`.
        pub envelope: Vec<u8>,
        pub created_at: DateTimeUtc,
        pub published_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity as OutboxRows};

/// Creates the `outbox` table; every publishing service runs this in a migration.
pub async fn create_table(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(OutboxRows)
                .if_not_exists()
                .col(ColumnDef::new(Column::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(Column::EventType).string_len(64).not_null())
                .col(ColumnDef::new(Column::Envelope).blob().not_null())
                .col(
                    ColumnDef::new(Column::CreatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Column::PublishedAt)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
    // Dropped again by [`DropPendingIndex`]: migrations are history.
    manager
        .create_index(
            Index::create()
                .name("outbox_pending_idx")
                .table(OutboxRows)
                .col(Column::PublishedAt)
                .col(Column::Id)
                .if_not_exists()
                .to_owned(),
        )
        .await
}

/// The migration creating the `outbox` table, for a publishing service's migrator.
pub struct CreateOutbox;

impl sea_orm_migration::MigrationName for CreateOutbox {
    fn name(&self) -> &str {
        "m20261129_000100_create_outbox"
    }
}

#[async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for CreateOutbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(manager).await
    }
}

/// The migration dropping `outbox_pending_idx`. Published rows are deleted, not marked, so
/// every row left is pending and the primary key already gives the relay its oldest first;
/// the second index only cost every event a B-tree insert (6 % of like-service's write
/// statement on PostgreSQL, pgbench) and every vacuum a B-tree to clean.
pub struct DropPendingIndex;

impl sea_orm_migration::MigrationName for DropPendingIndex {
    fn name(&self) -> &str {
        "m20261202_000100_drop_outbox_pending_index"
    }
}

#[async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for DropPendingIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("outbox_pending_idx")
                    .table(OutboxRows)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Writes events into a service's outbox and wakes its relay after commits.
#[derive(Clone, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

/// An event not yet in the outbox, with the trace context of the request that causes it:
/// taken when it is made, so that an event written later, in a batch of several requests'
/// changes, still carries on its own request's trace.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    event_type: &'static str,
    aggregate_id: String,
    payload: Vec<u8>,
    trace_context: Option<String>,
}

impl OutboxEvent {
    pub fn new(
        event_type: &'static str,
        aggregate_id: impl ToString,
        payload: &impl Message,
    ) -> Self {
        Self {
            event_type,
            aggregate_id: aggregate_id.to_string(),
            payload: payload.encode_to_vec(),
            trace_context: crate::trace::current(),
        }
    }

    /// The envelope of this event as consumers receive it, with an id and time taken now
    /// (tests deliver events built the way producers build them).
    pub fn into_envelope(self) -> Envelope {
        self.envelope(Uuid::now_v7(), Utc::now())
    }

    /// The row of this event; its id and time are taken now, in the order rows are added.
    /// Public for a store that writes its events in a statement of its own (see
    /// like-service's PostgreSQL batch); [`Outbox::enqueue_all`] is the usual way.
    pub fn into_row(self) -> entity::Model {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let event_type = self.event_type;
        entity::Model {
            id,
            event_type: event_type.to_owned(),
            envelope: self.envelope(id, now).encode_to_vec(),
            created_at: now,
            published_at: None,
        }
    }

    fn envelope(self, id: Uuid, now: chrono::DateTime<Utc>) -> Envelope {
        Envelope {
            id: id.to_string(),
            r#type: self.event_type.to_owned(),
            occurred_at: Some(oba_proto::time::timestamp(now)),
            aggregate_id: self.aggregate_id,
            payload: self.payload,
            trace_context: self
                .trace_context
                .map(|t| [(crate::trace::HEADER.to_owned(), t)].into())
                .unwrap_or_default(),
        }
    }

    fn row(self) -> entity::ActiveModel {
        let row = self.into_row();
        entity::ActiveModel {
            id: Set(row.id),
            event_type: Set(row.event_type),
            envelope: Set(row.envelope),
            created_at: Set(row.created_at),
            published_at: Set(row.published_at),
        }
    }
}

impl Outbox {
    /// Adds an event to the transaction `db` belongs to.
    pub async fn enqueue(
        &self,
        db: &impl ConnectionTrait,
        event_type: &'static str,
        aggregate_id: impl ToString,
        payload: &impl Message,
    ) -> Result<(), DbErr> {
        self.enqueue_all(
            db,
            vec![OutboxEvent::new(event_type, aggregate_id, payload)],
        )
        .await
    }

    /// Adds `events`, in order, to the transaction `db` belongs to, in one statement.
    pub async fn enqueue_all(
        &self,
        db: &impl ConnectionTrait,
        events: Vec<OutboxEvent>,
    ) -> Result<(), DbErr> {
        OutboxRows::insert_many(events.into_iter().map(OutboxEvent::row))
            .exec_without_returning(db)
            .await?;
        Ok(())
    }

    /// Call after committing a transaction that enqueued events: the relay publishes now
    /// instead of at its next poll.
    pub fn committed(&self) {
        self.wake.notify_one();
    }
}

/// Takes the right to publish this database's outbox until the transaction ends; false
/// when another relay (a replica's) holds it. PostgreSQL only: SQLite has one process.
async fn claim_outbox(txn: &sea_orm::DatabaseTransaction) -> Result<bool, DbErr> {
    use sea_orm::{DbBackend, Statement};
    /// The advisory lock key of the outbox (each service has a database of its own).
    const OUTBOX_LOCK: i64 = 0x6f62_615f_6f75_7462; // "oba_outb"
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(true);
    }
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_try_advisory_xact_lock($1) AS claimed",
            [OUTBOX_LOCK.into()],
        ))
        .await?;
    Ok(row.is_some_and(|row| row.try_get::<bool>("", "claimed").unwrap_or(false)))
}

/// Reclaims the outbox's dead rows on PostgreSQL (SQLite reuses freed pages by itself).
/// Skipped while another replica's relay vacuums it; a role that does not own the table gets
/// a warning from PostgreSQL, not an error, and leaves the work to autovacuum.
async fn vacuum(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    db.execute_unprepared("VACUUM (SKIP_LOCKED) outbox").await?;
    Ok(())
}

/// A batch's rows grouped by event type, each group oldest first, the groups in the order
/// of their first rows. Events of one type keep their order; of different types they may
/// swap, which every consumer allows (NATS 2.9 gives each subject a consumer of its own).
fn by_type(rows: Vec<entity::Model>) -> Vec<(String, Vec<entity::Model>)> {
    let mut groups: Vec<(String, Vec<entity::Model>)> = Vec::new();
    for row in rows {
        match groups.iter_mut().find(|(t, _)| *t == row.event_type) {
            Some((_, group)) => group.push(row),
            None => groups.push((row.event_type.clone(), vec![row])),
        }
    }
    groups
}

/// Outbox and event metrics of one service.
#[derive(Clone, Default)]
struct OutboxMetrics {
    backlog: Gauge,
    oldest_pending_seconds: Gauge,
    published: Family<EventTypeLabel, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct EventTypeLabel {
    pub event_type: String,
}

/// Publishes a service's outbox until shutdown.
pub struct Relay {
    db: DatabaseConnection,
    bus: Bus,
    namespace: String,
    outbox: Outbox,
    metrics: OutboxMetrics,
    /// Rows were deleted since the last vacuum.
    published_since_vacuum: AtomicBool,
}

const BATCH: u64 = 100;
const POLL: Duration = Duration::from_millis(500);

/// Under load, the shortest time between two relay rounds; longer than a consumer's
/// [`crate::bus::GATHER`] because a round's cost is fixed (on PostgreSQL five statements and
/// a wait for the bus) and rounds were most of like-service's statements: production
/// favorites did 15–25 % more at 20 ms than at 5. Idle, the first round after a pause still
/// goes at once.
pub const RELAY_GATHER: Duration = Duration::from_millis(20);
/// How often the backlog gauges are refreshed (a scrape is every few seconds at best).
const OBSERVE_EVERY: Duration = Duration::from_secs(1);

impl Relay {
    pub fn new(
        db: DatabaseConnection,
        bus: Bus,
        namespace: &str,
        outbox: Outbox,
        metrics: &Metrics,
    ) -> Self {
        let m = OutboxMetrics::default();
        metrics.register(
            "outbox_backlog",
            "Events written but not yet published",
            m.backlog.clone(),
        );
        metrics.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest unpublished event",
            m.oldest_pending_seconds.clone(),
        );
        metrics.register(
            "events_published",
            "Events published, by type",
            m.published.clone(),
        );
        Self {
            db,
            bus,
            namespace: namespace.to_owned(),
            outbox,
            metrics: m,
            published_since_vacuum: AtomicBool::new(false),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        // The gauges on a clock of their own: a publish that hangs on a dead bus must not
        // hide the backlog, and a busy relay must not pay two counts per event.
        tokio::join!(self.publish_until(&shutdown), self.observe_until(&shutdown));
    }

    async fn publish_until(&self, shutdown: &CancellationToken) {
        let mut backoff = POLL;
        let mut pace = Pace::new(RELAY_GATHER);
        loop {
            pace.next_round().await;
            match self.publish_pending().await {
                Ok(()) => backoff = POLL,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay: publishing paused; events wait in the outbox");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.outbox.wake.notified() => {}
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }

    async fn observe_until(&self, shutdown: &CancellationToken) {
        // Rows an earlier version marked sent and kept for an hour.
        if let Err(e) = self.prune().await {
            tracing::warn!(error = %e, "outbox relay: cannot delete rows published before");
        }
        let mut ticks = Ticks::every(OBSERVE_EVERY);
        while ticks.next(shutdown).await {
            self.observe().await;
            if self.published_since_vacuum.swap(false, Ordering::Relaxed)
                && let Err(e) = vacuum(&self.db).await
            {
                tracing::warn!(error = %e, "outbox relay: cannot vacuum the outbox");
            }
        }
    }

    /// Publishes pending rows oldest first, a batch per transaction, marking each sent; stops
    /// at the first failure so that order is kept.
    async fn publish_pending(&self) -> Result<(), String> {
        while self.publish_batch().await.map_err(|e| e.to_string())? {}
        Ok(())
    }

    /// Publishes one batch; true when a full batch went out (more may wait), false when the
    /// outbox is drained (or another replica's relay is publishing).
    async fn publish_batch(&self) -> Result<bool, String> {
        let txn = self.db.begin().await.map_err(|e| e.to_string())?;
        if !claim_outbox(&txn).await.map_err(|e| e.to_string())? {
            return Ok(false);
        }
        let rows = OutboxRows::find()
            .filter(Column::PublishedAt.is_null())
            .order_by_asc(Column::Id)
            .limit(BATCH)
            .all(&txn)
            .await
            .map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(false);
        }
        let full = rows.len() as u64 == BATCH;
        // Every message is handed to the bus first, then the relay waits for the bus to have
        // stored them, in order: one wait per batch instead of a round trip per event.
        let mut sent = Vec::new();
        let mut failure = None;
        for (event_type, rows) in by_type(rows) {
            let subject = format!("{}.{}", self.namespace, event_type);
            let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
            match self.send(&subject, &event_type, rows).await {
                Ok(stored) => sent.push((ids, event_type, stored)),
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        // Stored up to the first failure; a message after it may be stored too, and is then
        // dropped by id when it is published again.
        let mut published = Vec::with_capacity(sent.len());
        for (ids, event_type, stored) in sent {
            if let Err(e) = stored.await {
                failure = Some(e.to_string());
                break;
            }
            published.push((ids, event_type));
        }
        // What was published is deleted even when the bus failed midway: one statement.
        if !published.is_empty() {
            OutboxRows::delete_many()
                .filter(Column::Id.is_in(published.iter().flat_map(|(ids, _)| ids.iter().copied())))
                .exec(&txn)
                .await
                .map_err(|e| e.to_string())?;
        }
        txn.commit().await.map_err(|e| e.to_string())?;
        if !published.is_empty() {
            self.published_since_vacuum.store(true, Ordering::Relaxed);
        }
        for (ids, event_type) in published {
            self.metrics
                .published
                .get_or_create(&EventTypeLabel { event_type })
                .inc_by(ids.len() as u64);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(full),
        }
    }

    /// Hands `rows` (events of one type, oldest first) to the bus: one event as itself,
    /// several as one pack, named by its first and last event ids and its count, so that a
    /// pack published again after a crash is the same pack, and dropped as a repeat.
    async fn send(
        &self,
        subject: &str,
        event_type: &str,
        rows: Vec<entity::Model>,
    ) -> Result<crate::bus::Stored, crate::bus::BusError> {
        let id = match rows.as_slice() {
            [one] => one.id.to_string(),
            [first, .., last] => format!("{}..{}/{}", first.id, last.id, rows.len()),
            [] => return Ok(Box::pin(std::future::ready(Ok(())))),
        };
        let span = || {
            tracing::info_span!(
                "publish",
                otel.name = %format_args!("publish {event_type}"),
                otel.kind = "producer",
                messaging.system = "nats",
                messaging.destination.name = %subject,
            )
        };
        let cause_of = |row: &entity::Model| {
            crate::trace::spans_on()
                .then(|| Envelope::decode(row.envelope.as_slice()).ok())
                .flatten()
                .and_then(|envelope| envelope.trace_context.get(crate::trace::HEADER).cloned())
        };
        let rows = match <[entity::Model; 1]>::try_from(rows) {
            Ok([row]) => {
                let cause = cause_of(&row);
                let send = self.bus.send(subject, &id, row.envelope.into());
                return crate::trace::follow_on(cause, span, send).await;
            }
            Err(rows) => rows,
        };
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            // Each event's trace shows it handed to the bus in a pack (the span of a moment).
            crate::trace::follow_on(cause_of(&row), span, async {}).await;
            events.push((row.id.to_string(), Bytes::from(row.envelope)));
        }
        self.bus.send_pack(subject, &id, events).await
    }

    /// Deletes rows marked published: versions before this one kept them for an hour.
    async fn prune(&self) -> Result<u64, DbErr> {
        Ok(OutboxRows::delete_many()
            .filter(Column::PublishedAt.is_not_null())
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    async fn observe(&self) {
        let pending = OutboxRows::find().filter(Column::PublishedAt.is_null());
        if let Ok(n) = pending.clone().count(&self.db).await {
            self.metrics
                .backlog
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let oldest = pending
            .order_by_asc(Column::Id)
            .one(&self.db)
            .await
            .ok()
            .flatten();
        let age = oldest.map_or(0, |row| (Utc::now() - row.created_at).num_seconds().max(0));
        self.metrics.oldest_pending_seconds.set(age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{EventBus, InProcessBus};
    use crate::db::{DbConfig, connect_and_migrate};
    use sea_orm_migration::MigrationTrait;

    struct OutboxOnly;

    impl MigratorTrait for OutboxOnly {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(CreateOutbox), Box::new(DropPendingIndex)]
        }
    }

    use sea_orm_migration::MigratorTrait;

    fn row(event_type: &str) -> entity::Model {
        entity::Model {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            envelope: Vec::new(),
            created_at: Utc::now(),
            published_at: None,
        }
    }

    #[test]
    fn a_batch_is_grouped_by_type_each_in_the_order_written() {
        let rows: Vec<entity::Model> = ["post.liked", "post.unliked", "post.liked", "post.liked"]
            .into_iter()
            .map(row)
            .collect();
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let groups: Vec<(String, Vec<Uuid>)> = by_type(rows)
            .into_iter()
            .map(|(t, rows)| (t, rows.iter().map(|r| r.id).collect()))
            .collect();
        assert_eq!(
            groups,
            [
                ("post.liked".to_owned(), vec![ids[0], ids[2], ids[3]]),
                ("post.unliked".to_owned(), vec![ids[1]]),
            ]
        );
    }

    async fn relay_on_sqlite(dir: &tempfile::TempDir) -> (Relay, Arc<InProcessBus>) {
        let config = DbConfig::sqlite_file("OBA_DATABASE_URL", &dir.path().join("o.db"));
        let db = connect_and_migrate::<OutboxOnly>(&config)
            .await
            .expect("db");
        let bus = Arc::new(InProcessBus::default());
        let relay = Relay::new(
            db,
            bus.clone(),
            "t",
            Outbox::default(),
            &Metrics::new("test"),
        );
        (relay, bus)
    }

    fn event(n: u8) -> oba_proto::event::v1::PostLiked {
        oba_proto::event::v1::PostLiked {
            post_id: n.to_string(),
            ..Default::default()
        }
    }

    /// Adds `count` post.liked events to the relay's outbox, the n-th about post `n`.
    async fn enqueue_liked(relay: &Relay, count: u8) {
        enqueue(relay, &vec!["post.liked"; count.into()]).await;
    }

    /// Enqueues an event of each of `types`, its aggregate id its position.
    async fn enqueue(relay: &Relay, types: &[&'static str]) {
        let txn = relay.db.begin().await.expect("begin");
        for (n, event_type) in (0u8..).zip(types) {
            relay
                .outbox
                .enqueue(&txn, event_type, n, &event(n))
                .await
                .expect("enqueue");
        }
        txn.commit().await.expect("commit");
    }

    #[tokio::test]
    async fn relay_publishes_every_pending_row_in_order_then_deletes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (relay, bus) = relay_on_sqlite(&dir).await;
        let mut heard = bus.listen("t.>");
        enqueue_liked(&relay, 3).await;
        relay.publish_pending().await.expect("publish");
        for n in 0..3u8 {
            let payload = heard.try_recv().expect("published");
            let envelope = Envelope::decode(payload).expect("an envelope");
            assert_eq!(envelope.aggregate_id, n.to_string(), "oldest first");
        }
        assert!(heard.try_recv().is_err(), "each row once");
        let left = OutboxRows::find().count(&relay.db).await.expect("count");
        assert_eq!(left, 0, "a published row leaves the outbox");
        relay.publish_pending().await.expect("publish again");
        assert!(heard.try_recv().is_err(), "a sent row is not sent again");
    }

    #[tokio::test]
    async fn the_outbox_is_indexed_by_its_key_only() {
        use sea_orm::{ConnectionTrait, Statement};
        let dir = tempfile::tempdir().expect("tempdir");
        let (relay, _) = relay_on_sqlite(&dir).await;
        // SQLite names the index of a non-integer primary key `sqlite_autoindex_<table>_1`.
        let sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'";
        let names: Vec<String> = relay
            .db
            .query_all_raw(Statement::from_string(relay.db.get_database_backend(), sql))
            .await
            .expect("indexes")
            .iter()
            .map(|row| row.try_get("", "name").expect("name"))
            .collect();
        assert_eq!(names, ["sqlite_autoindex_outbox_1"]);
    }

    /// A bus whose store fails the message sent `fails_at` (counting from 0), once.
    #[derive(Default)]
    struct StoreFailingOnce {
        sent: std::sync::atomic::AtomicUsize,
        fails_at: usize,
        stored: Arc<std::sync::Mutex<Vec<String>>>,
    }

    #[tonic::async_trait]
    impl EventBus for StoreFailingOnce {
        async fn send(
            &self,
            _subject: &str,
            _id: &str,
            payload: bytes::Bytes,
        ) -> Result<crate::bus::Stored, crate::bus::BusError> {
            let n = self.sent.fetch_add(1, Ordering::SeqCst);
            let (stored, fails) = (self.stored.clone(), n == self.fails_at);
            Ok(Box::pin(async move {
                if fails {
                    return Err(crate::bus::BusError("not stored".into()));
                }
                let envelope = Envelope::decode(payload).expect("envelope");
                stored.lock().expect("stored").push(envelope.aggregate_id);
                Ok(())
            }))
        }
        fn subscribe(
            &self,
            _consumer: &str,
            _subjects: Vec<String>,
        ) -> tokio::sync::mpsc::UnboundedReceiver<crate::bus::Delivery> {
            tokio::sync::mpsc::unbounded_channel().1
        }
        async fn pending(
            &self,
            _consumer: &str,
            _subjects: &[String],
        ) -> Result<u64, crate::bus::BusError> {
            Ok(0)
        }
        fn is_connected(&self) -> bool {
            true
        }
        async fn announce(
            &self,
            _subject: &str,
            _payload: bytes::Bytes,
        ) -> Result<(), crate::bus::BusError> {
            Ok(())
        }
        fn listen(&self, _subject: &str) -> tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes> {
            tokio::sync::mpsc::unbounded_channel().1
        }
    }

    /// A relay round sends a message per event type; on this bus (no packs of its own) a
    /// pack is its events sent one by one, stored only if all are.
    #[tokio::test]
    async fn messages_sent_after_one_the_bus_did_not_store_stay_and_go_again_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (relay, _) = relay_on_sqlite(&dir).await;
        let bus = Arc::new(StoreFailingOnce {
            fails_at: 2,
            ..Default::default()
        });
        let relay = Relay {
            bus: bus.clone(),
            ..relay
        };
        let types = [
            "post.liked",
            "post.unliked",
            "post.liked",
            "post.viewed",
            "post.viewed",
        ];
        enqueue(&relay, &types).await;

        // Three messages (liked 0 and 2, unliked 1, viewed 3 and 4) are sent before any is
        // known stored; the third event sent, unliked 1, is not stored.
        assert!(relay.publish_pending().await.is_err());
        assert_eq!(*bus.stored.lock().expect("stored"), ["0", "2"]);
        let left = OutboxRows::find().count(&relay.db).await.expect("count");
        assert_eq!(left, 3, "the rows from the first message not stored stay");

        relay.publish_pending().await.expect("publish again");
        assert_eq!(
            *bus.stored.lock().expect("stored"),
            ["0", "2", "1", "3", "4"]
        );
        let left = OutboxRows::find().count(&relay.db).await.expect("count");
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn rows_an_earlier_version_marked_sent_are_deleted_and_pending_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (relay, _bus) = relay_on_sqlite(&dir).await;
        let row = |published_at: Option<chrono::DateTime<Utc>>| entity::ActiveModel {
            id: Set(Uuid::now_v7()),
            event_type: Set("post.liked".into()),
            envelope: Set(Vec::new()),
            created_at: Set(Utc::now()),
            published_at: Set(published_at),
        };
        let sent = Utc::now() - chrono::TimeDelta::minutes(5);
        OutboxRows::insert_many([row(Some(sent)), row(None)])
            .exec_without_returning(&relay.db)
            .await
            .expect("insert");
        assert_eq!(relay.prune().await.expect("prune"), 1);
        let left: Vec<_> = OutboxRows::find()
            .all(&relay.db)
            .await
            .expect("rows")
            .into_iter()
            .map(|r| r.published_at)
            .collect();
        assert_eq!(left, [None], "a pending row is never deleted");
    }
}
