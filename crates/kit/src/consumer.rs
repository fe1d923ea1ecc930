//! Idempotent event consumers: each delivery is applied to the consumer's own projection in
//! ONE transaction together with a row in `processed_events` keyed by the event id. A
//! redelivered event finds its id there and changes nothing; an event whose transaction
//! failed was not recorded, is nacked, and comes again. So projections count every event
//! exactly once, whatever the bus does.
//!
//! Under load, deliveries already waiting are applied together, up to [`BATCH_MAX`] in one
//! transaction (a commit per event was most of a projection's cost); a batch that fails is
//! applied again one event at a time, so one event that cannot be applied holds up no other.
//! A projection may leave the writes of a batch's events in its [`Projection::Pending`] and
//! make them at the end in one statement ([`Projection::write`]): a statement per event was
//! most of what was left.
//! Under load a batch is taken at most every [`GATHER`], so that batches are of those
//! milliseconds' events rather than of one.
//!
//! An id is kept while the bus may still deliver its event again ([`PROCESSED_RETENTION`]),
//! then pruned ([`prune_until`]): the table holds days of events, not every event ever.

use std::collections::HashSet;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, TransactionTrait,
};
use sea_orm_migration::prelude::{ColumnDef, Index, SchemaManager, Table};
use tokio_util::sync::CancellationToken;

use crate::ServiceError;
use tokio::sync::mpsc;

use crate::bus::{Bus, Delivery, GATHER, Pace};
use crate::metrics::Metrics;
use crate::outbox::EventTypeLabel;
use crate::shutdown::Ticks;
use oba_proto::event::v1::Envelope;

pub mod entity {
    //! The `processed_events` table: ids of events already applied.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "processed_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        pub processed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Creates the `processed_events` table; every consuming service runs this in a migration.
pub async fn create_table(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(entity::Entity)
                .if_not_exists()
                .col(
                    ColumnDef::new(entity::Column::EventId)
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(entity::Column::ProcessedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await
}

/// The migration creating the `processed_events` table, for a consuming service's migrator.
pub struct CreateProcessedEvents;

impl sea_orm_migration::MigrationName for CreateProcessedEvents {
    fn name(&self) -> &str {
        "m20261129_000101_create_processed_events"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for CreateProcessedEvents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(manager).await
    }
}

/// The migration indexing `processed_events` by when each event was applied, for the prune.
pub struct IndexProcessedEvents;

impl sea_orm_migration::MigrationName for IndexProcessedEvents {
    fn name(&self) -> &str {
        "m20261201_000102_index_processed_events"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for IndexProcessedEvents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("processed_events_processed_at_idx")
                    .table(entity::Entity)
                    .col(entity::Column::ProcessedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// The migrations of `processed_events`, in order, for a consuming service's migrator.
pub fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
    vec![
        Box::new(CreateProcessedEvents),
        Box::new(IndexProcessedEvents),
    ]
}

/// How long the id of an applied event is kept. The bus keeps an event for
/// [`crate::bus::EVENT_RETENTION`] after storing it and may deliver it again until then; a
/// day more covers an event its relay held back while the bus was away.
pub const PROCESSED_RETENTION: Duration =
    Duration::from_secs(crate::bus::EVENT_RETENTION.as_secs() + 24 * 3600);

/// How often ids past [`PROCESSED_RETENTION`] are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The most ids one prune statement deletes: on SQLite's one connection, writes queued
/// behind it wait for one such statement, not for the whole backlog.
pub const PRUNE_CHUNK: u64 = 10_000;

/// Deletes the ids of events applied before `before`, `chunk` at a time; returns how many.
pub async fn prune(
    db: &DatabaseConnection,
    before: chrono::DateTime<chrono::Utc>,
    chunk: u64,
) -> Result<u64, DbErr> {
    use sea_orm::{ColumnTrait, QueryFilter, QuerySelect, QueryTrait};
    let mut deleted = 0;
    loop {
        let oldest = entity::Entity::find()
            .select_only()
            .column(entity::Column::EventId)
            .filter(entity::Column::ProcessedAt.lt(before))
            .limit(chunk)
            .into_query();
        let done = entity::Entity::delete_many()
            .filter(entity::Column::EventId.in_subquery(oldest))
            .exec(db)
            .await?
            .rows_affected;
        deleted += done;
        if done < chunk {
            return Ok(deleted);
        }
        tokio::task::yield_now().await;
    }
}

/// Deletes ids past [`PROCESSED_RETENTION`] every [`PRUNE_EVERY`] until shutdown, so that
/// `processed_events` holds what the bus may still deliver, not every event ever applied.
pub async fn prune_until(db: DatabaseConnection, shutdown: CancellationToken) {
    let retention =
        chrono::Duration::from_std(PROCESSED_RETENTION).unwrap_or(chrono::Duration::MAX);
    let mut ticks = Ticks::every(PRUNE_EVERY);
    while ticks.next(&shutdown).await {
        match prune(&db, chrono::Utc::now() - retention, PRUNE_CHUNK).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "processed event ids pruned"),
            // Tried again at the next tick; until then the table only holds more.
            Err(e) => tracing::warn!(error = %e, "cannot prune processed event ids"),
        }
    }
}

/// What a consumer does with events, inside the transaction that records them.
#[tonic::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The writes a batch's events leave to be made together at its end (e.g. counter
    /// changes summed per row).
    type Pending: Default + Send;
    /// What `write` hands to `committed` (e.g. notifications to push to live subscribers).
    type Applied: Send;

    /// Applies one event of a batch, in order: what a later event must read is written now,
    /// the rest is left in `pending`.
    async fn apply(
        &self,
        event: &Envelope,
        pending: &mut Self::Pending,
        txn: &DatabaseTransaction,
    ) -> Result<(), ServiceError>;

    /// Makes the writes the batch's events left in `pending`, in the same transaction.
    async fn write(
        &self,
        pending: Self::Pending,
        txn: &DatabaseTransaction,
    ) -> Result<Self::Applied, ServiceError>;

    /// Runs after the transaction committed.
    fn committed(&self, _applied: Self::Applied) {}
}

#[derive(Clone, Default)]
struct ConsumerMetrics {
    consumed: Family<EventTypeLabel, Counter>,
    redelivered: Family<EventTypeLabel, Counter>,
    duplicates: Family<EventTypeLabel, Counter>,
}

/// Outcome of one delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Applied,
    Duplicate,
}

/// The most deliveries applied in one transaction.
pub const BATCH_MAX: usize = 64;

/// Applies one encoded envelope exactly once (the heart of the consumer, callable directly
/// in tests to deliver the same event twice).
pub async fn handle<P: Projection>(
    db: &DatabaseConnection,
    projection: &P,
    envelope: &Envelope,
) -> Result<Handled, ServiceError> {
    let mut handled = handle_together(db, projection, std::slice::from_ref(envelope)).await?;
    Ok(handled.pop().unwrap_or(Handled::Duplicate))
}

/// Applies `envelopes` in order, each exactly once, in ONE transaction: all or none.
pub async fn handle_together<P: Projection>(
    db: &DatabaseConnection,
    projection: &P,
    envelopes: &[Envelope],
) -> Result<Vec<Handled>, ServiceError> {
    let txn = db.begin().await?;
    let mut fresh = record(&txn, envelopes).await?;
    let mut handled = Vec::with_capacity(envelopes.len());
    let mut pending = P::Pending::default();
    for envelope in envelopes {
        // Taken out once applied: the same event twice in one batch is applied once.
        if fresh.remove(envelope.id.as_str()) {
            apply_traced(projection, envelope, &mut pending, &txn).await?;
            handled.push(Handled::Applied);
        } else {
            handled.push(Handled::Duplicate);
        }
    }
    let applied = projection.write(pending, &txn).await?;
    txn.commit().await?;
    projection.committed(applied);
    Ok(handled)
}

/// Records `envelopes` as processed, in one statement; returns the ids that were not
/// recorded before (the others are redeliveries).
async fn record(
    txn: &DatabaseTransaction,
    envelopes: &[Envelope],
) -> Result<HashSet<String>, ServiceError> {
    let now = chrono::Utc::now();
    let mut ids = HashSet::with_capacity(envelopes.len());
    let rows: Vec<_> = envelopes
        .iter()
        .filter(|envelope| ids.insert(envelope.id.as_str()))
        .map(|envelope| entity::ActiveModel {
            event_id: Set(envelope.id.clone()),
            processed_at: Set(now),
        })
        .collect();
    Ok(entity::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(entity::Column::EventId)
                .do_nothing()
                .to_owned(),
        )
        .exec_with_returning(txn)
        .await?
        .into_iter()
        .map(|row| row.event_id)
        .collect())
}

/// `projection.apply` in a consumer span that carries on the trace of the request that
/// caused the event.
async fn apply_traced<P: Projection>(
    projection: &P,
    envelope: &Envelope,
    pending: &mut P::Pending,
    txn: &DatabaseTransaction,
) -> Result<(), ServiceError> {
    let cause = envelope.trace_context.get(crate::trace::HEADER).cloned();
    let span = || {
        tracing::info_span!(
            "consume",
            otel.name = %format_args!("consume {}", envelope.r#type),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.message.id = %envelope.id,
        )
    };
    crate::trace::follow_on(cause, span, projection.apply(envelope, pending, txn)).await
}

/// Applies deliveries until shutdown. Subscribe (`Bus::subscribe`) when the service is
/// built, before any relay can publish, and hand the receiver here.
pub async fn run<P: Projection>(
    mut deliveries: mpsc::UnboundedReceiver<Delivery>,
    db: DatabaseConnection,
    projection: P,
    metrics: &Metrics,
    shutdown: CancellationToken,
) {
    let m = ConsumerMetrics::default();
    metrics.register(
        "events_consumed",
        "Events applied, by type",
        m.consumed.clone(),
    );
    metrics.register(
        "events_redelivered",
        "Deliveries that were redeliveries, by type",
        m.redelivered.clone(),
    );
    metrics.register(
        "events_duplicate",
        "Deliveries of events already applied, by type",
        m.duplicates.clone(),
    );
    let mut pace = Pace::new(GATHER);
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            next = deliveries.recv() => match next { Some(d) => d, None => return },
        };
        pace.next_round().await;
        let batch = waiting(&mut deliveries, vec![first]);
        consume(&db, &projection, &m, batch).await;
    }
    // Shutting down: apply what was already delivered (an in-process bus has no redelivery
    // after a restart), then stop.
    loop {
        let batch = waiting(&mut deliveries, Vec::new());
        if batch.is_empty() {
            return;
        }
        consume(&db, &projection, &m, batch).await;
    }
}

/// `batch` and the deliveries already waiting behind it, up to [`BATCH_MAX`]: never waits.
fn waiting(
    deliveries: &mut mpsc::UnboundedReceiver<Delivery>,
    mut batch: Vec<Delivery>,
) -> Vec<Delivery> {
    while batch.len() < BATCH_MAX {
        match deliveries.try_recv() {
            Ok(delivery) => batch.push(delivery),
            Err(_) => break,
        }
    }
    batch
}

/// How often the consumer's lag is read from the bus.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Keeps the gauge `events_pending` (the consumer's lag: messages stored for it and not
/// yet acked, a pack counting once) up to date until shutdown. On a clock of its own: a busy or stuck consumer is
/// exactly when its lag must still be seen.
pub async fn report_lag(
    bus: Bus,
    consumer: &'static str,
    subjects: Vec<String>,
    metrics: &Metrics,
    shutdown: CancellationToken,
) {
    let lag = Gauge::<i64>::default();
    metrics.register(
        "events_pending",
        "Messages (an event or a pack of events) stored for this service's consumer and not yet applied (its lag)",
        lag.clone(),
    );
    let mut ticks = Ticks::every(LAG_EVERY);
    while ticks.next(&shutdown).await {
        match bus.pending(consumer, &subjects).await {
            Ok(pending) => {
                lag.set(i64::try_from(pending).unwrap_or(i64::MAX));
            }
            // The last known lag stays; the bus's own readiness says it is away.
            Err(e) => tracing::debug!(consumer, error = %e, "consumer lag unknown"),
        }
    }
}

async fn consume<P: Projection>(
    db: &DatabaseConnection,
    projection: &P,
    m: &ConsumerMetrics,
    batch: Vec<Delivery>,
) {
    let label = |envelope: &Envelope| EventTypeLabel {
        event_type: envelope.r#type.clone(),
    };
    // Side by side, so that the batch is applied from the envelopes without copying them.
    let mut deliveries = Vec::with_capacity(batch.len());
    let mut envelopes = Vec::with_capacity(batch.len());
    for delivery in batch {
        match Envelope::decode(delivery.payload.clone()) {
            Ok(envelope) => {
                if delivery.redelivered {
                    m.redelivered.get_or_create(&label(&envelope)).inc();
                }
                deliveries.push(delivery);
                envelopes.push(envelope);
            }
            Err(e) => {
                // Retrying cannot fix a message that does not decode: log it and move on.
                tracing::error!(subject = %delivery.subject, error = %e, "undecodable event dropped");
                let _ = delivery.ack().await;
            }
        }
    }
    let together = match envelopes.len() {
        0 | 1 => None,
        n => handle_together(db, projection, &envelopes)
            .await
            .inspect_err(|e| tracing::debug!(error = %e, events = n, "batch not applied"))
            .ok(),
    };
    let outcomes = match together {
        Some(handled) => handled.into_iter().map(Ok).collect(),
        // One at a time, so that an event that cannot be applied holds up no other.
        None => {
            let mut outcomes = Vec::with_capacity(envelopes.len());
            for envelope in &envelopes {
                outcomes.push(handle(db, projection, envelope).await);
            }
            outcomes
        }
    };
    for ((delivery, envelope), outcome) in deliveries.into_iter().zip(&envelopes).zip(outcomes) {
        match outcome {
            Ok(outcome) => {
                let counter = if outcome == Handled::Applied {
                    &m.consumed
                } else {
                    &m.duplicates
                };
                counter.get_or_create(&label(envelope)).inc();
                if let Err(e) = delivery.ack().await {
                    // Unacked, it comes again, and is then a duplicate: nothing is lost or doubled.
                    tracing::warn!(error = %e, "ack failed");
                }
            }
            Err(e) => {
                tracing::warn!(event = %envelope.id, error = %e, "event not applied; will be redelivered");
                let _ = delivery.nak(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use sea_orm_migration::{MigrationTrait, MigratorTrait};

    use super::*;
    use crate::bus::{EventBus, InProcessBus};
    use crate::db::{DbConfig, connect_and_migrate};

    struct ProcessedOnly;

    impl MigratorTrait for ProcessedOnly {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            migrations()
        }
    }

    /// Applies every event but `post.poisoned`, and remembers what it applied.
    #[derive(Clone, Default)]
    struct Recording {
        applied: Arc<Mutex<Vec<String>>>,
    }

    #[tonic::async_trait]
    impl Projection for Recording {
        type Pending = Vec<String>;
        type Applied = Vec<String>;

        async fn apply(
            &self,
            event: &Envelope,
            pending: &mut Vec<String>,
            _txn: &DatabaseTransaction,
        ) -> Result<(), ServiceError> {
            if event.r#type == "post.poisoned" {
                return Err(ServiceError::Internal("cannot apply".into()));
            }
            pending.push(event.id.clone());
            Ok(())
        }

        async fn write(
            &self,
            pending: Vec<String>,
            _txn: &DatabaseTransaction,
        ) -> Result<Vec<String>, ServiceError> {
            Ok(pending)
        }

        fn committed(&self, applied: Vec<String>) {
            if let Ok(mut all) = self.applied.lock() {
                all.extend(applied);
            }
        }
    }

    fn envelope(id: &str, event_type: &str) -> Bytes {
        Envelope {
            id: id.to_owned(),
            r#type: event_type.to_owned(),
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    /// A fresh SQLite database with the `processed_events` table (and the dir holding it).
    async fn processed_db() -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().expect("dir");
        let config = DbConfig::sqlite_file("OBA_DATABASE_URL", &dir.path().join("c.db"));
        let db = connect_and_migrate::<ProcessedOnly>(&config)
            .await
            .expect("db");
        (dir, db)
    }

    fn decoded(id: &str, event_type: &str) -> Envelope {
        Envelope::decode(envelope(id, event_type)).expect("decodes")
    }

    #[tokio::test]
    async fn events_applied_together_are_applied_all_or_none() {
        let (_dir, db) = processed_db().await;
        let projection = Recording::default();
        let good = decoded("4", "post.liked");
        let refused = handle_together(
            &db,
            &projection,
            &[good.clone(), decoded("5", "post.poisoned")],
        )
        .await;
        assert!(refused.is_err());
        // The good event was not recorded as processed by the failed batch: it applies now.
        assert!(projection.applied.lock().expect("lock").is_empty());
        assert_eq!(
            handle(&db, &projection, &good).await.expect("applied"),
            Handled::Applied
        );
        let again = handle_together(&db, &projection, &[good, decoded("6", "post.liked")])
            .await
            .expect("applied");
        assert_eq!(again, [Handled::Duplicate, Handled::Applied]);
        assert_eq!(*projection.applied.lock().expect("lock"), ["4", "6"]);
    }

    #[tokio::test]
    async fn ids_applied_before_the_retention_are_pruned_and_later_ones_still_deduplicate() {
        let (_dir, db) = processed_db().await;
        let now = chrono::Utc::now();
        let retention = chrono::Duration::from_std(PROCESSED_RETENTION).expect("fits");
        let row = |id: String, processed_at| entity::ActiveModel {
            event_id: Set(id),
            processed_at: Set(processed_at),
        };
        let old = (0..5).map(|i| {
            row(
                format!("old-{i}"),
                now - retention - chrono::Duration::hours(1),
            )
        });
        let recent = (0..2).map(|i| {
            row(
                format!("new-{i}"),
                now - retention + chrono::Duration::hours(1),
            )
        });
        entity::Entity::insert_many(old.chain(recent))
            .exec(&db)
            .await
            .expect("rows");

        // Two at a time: the chunks go on until the old ids are gone.
        assert_eq!(prune(&db, now - retention, 2).await.expect("pruned"), 5);
        let mut kept: Vec<_> = entity::Entity::find()
            .all(&db)
            .await
            .expect("rows")
            .into_iter()
            .map(|row| row.event_id)
            .collect();
        kept.sort();
        assert_eq!(kept, ["new-0", "new-1"]);
        let redelivered = handle(&db, &Recording::default(), &decoded("new-0", "post.liked"))
            .await
            .expect("handled");
        assert_eq!(redelivered, Handled::Duplicate);
        assert_eq!(prune(&db, now - retention, 2).await.expect("pruned"), 0);
    }

    #[tokio::test]
    async fn an_event_twice_in_one_batch_is_applied_once() {
        let (_dir, db) = processed_db().await;
        let projection = Recording::default();
        let (liked, other) = (decoded("7", "post.liked"), decoded("8", "post.liked"));
        let handled = handle_together(&db, &projection, &[liked.clone(), other, liked])
            .await
            .expect("applied");
        assert_eq!(
            handled,
            [Handled::Applied, Handled::Applied, Handled::Duplicate]
        );
        assert_eq!(*projection.applied.lock().expect("lock"), ["7", "8"]);
    }

    #[tokio::test]
    async fn waiting_events_are_applied_together_and_one_bad_event_holds_up_no_other() {
        let (_dir, db) = processed_db().await;
        let bus = InProcessBus::default();
        let subjects = vec!["t.>".to_owned()];
        let deliveries = bus.subscribe("c", subjects.clone());
        // All waiting before the consumer starts: one batch, with a poisoned event and a
        // redelivery of an event already in it.
        for (id, event_type) in [
            ("1", "post.liked"),
            ("2", "post.poisoned"),
            ("3", "post.liked"),
            ("1", "post.liked"),
        ] {
            bus.publish(&format!("t.{event_type}"), id, envelope(id, event_type))
                .await
                .expect("publish");
        }
        let projection = Recording::default();
        let shutdown = CancellationToken::new();
        let metrics = Metrics::new("test");
        let consumer = run(
            deliveries,
            db.clone(),
            projection.clone(),
            &metrics,
            shutdown.clone(),
        );
        let check = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while projection.applied.lock().expect("lock").len() < 2
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Only the poisoned event is still pending (it is retried, and never applied).
            tokio::time::sleep(Duration::from_millis(100)).await;
            let pending = bus.pending("c", &subjects).await.expect("lag");
            shutdown.cancel();
            pending
        };
        let ((), pending) = tokio::join!(consumer, check);
        assert_eq!(*projection.applied.lock().expect("lock"), ["1", "3"]);
        assert_eq!(pending, 1);
    }
}
