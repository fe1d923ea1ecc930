//! The transactional outbox: an event is written to the `outbox` table in the same database
//! transaction as the state change it reports, and a relay publishes pending rows in order
//! and marks them sent. A write therefore never succeeds without its event, and a bus that
//! is down only delays events: they wait in the table until it is back.
//!
//! With N replicas of a service, N relays share one outbox, and each row is still published
//! once, in order: on PostgreSQL a relay publishes a batch only while holding a
//! transaction-scoped advisory lock (the others skip that round), and the batch is marked
//! sent in the same transaction. A relay that dies after publishing but before committing
//! leaves its rows to be published again; the bus drops those repeats by event id
//! (JetStream's `Nats-Msg-Id` duplicate window). SQLite has one process, so no lock.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use sea_orm_migration::async_trait;
use sea_orm_migration::prelude::{ColumnDef, Index, SchemaManager, Table};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::Bus;
use crate::metrics::Metrics;

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
    // The relay's only query: the oldest unpublished rows.
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

/// Writes events into a service's outbox and wakes its relay after commits.
#[derive(Clone, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    /// Adds an event to the transaction `db` belongs to.
    pub async fn enqueue(
        &self,
        db: &impl ConnectionTrait,
        event_type: &str,
        aggregate_id: impl ToString,
        payload: &impl Message,
    ) -> Result<(), DbErr> {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let envelope = oba_proto::event::v1::Envelope {
            id: id.to_string(),
            r#type: event_type.to_owned(),
            occurred_at: Some(oba_proto::time::timestamp(now)),
            aggregate_id: aggregate_id.to_string(),
            payload: payload.encode_to_vec(),
            trace_context: crate::trace::current()
                .map(|t| [(crate::trace::HEADER.to_owned(), t)].into())
                .unwrap_or_default(),
        };
        OutboxRows::insert(entity::ActiveModel {
            id: Set(id),
            event_type: Set(event_type.to_owned()),
            envelope: Set(envelope.encode_to_vec()),
            created_at: Set(now),
            published_at: Set(None),
        })
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
}

const BATCH: u64 = 100;
const POLL: Duration = Duration::from_millis(500);

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
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = POLL;
        loop {
            // Before publishing too: a publish that hangs on a dead bus must not hide the backlog.
            self.observe().await;
            match self.publish_pending().await {
                Ok(()) => backoff = POLL,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay: publishing paused; events wait in the outbox");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            self.observe().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.outbox.wake.notified() => {}
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Publishes pending rows oldest first, a batch per transaction, marking each sent; stops
    /// at the first failure so that order is kept.
    async fn publish_pending(&self) -> Result<(), String> {
        while self.publish_batch().await.map_err(|e| e.to_string())? {}
        Ok(())
    }

    /// Publishes one batch; false when there was nothing to publish (or another replica's
    /// relay is publishing).
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
        let mut published = Vec::new();
        let mut failure = None;
        for row in rows {
            let subject = format!("{}.{}", self.namespace, row.event_type);
            if let Err(e) = self
                .bus
                .publish(&subject, &row.id.to_string(), row.envelope.into())
                .await
            {
                failure = Some(e.to_string());
                break;
            }
            OutboxRows::update_many()
                .col_expr(Column::PublishedAt, Expr::value(Utc::now()))
                .filter(Column::Id.eq(row.id))
                .exec(&txn)
                .await
                .map_err(|e| e.to_string())?;
            published.push(row.event_type);
        }
        // What was published is marked sent even when the bus failed midway.
        txn.commit().await.map_err(|e| e.to_string())?;
        for event_type in published {
            self.metrics
                .published
                .get_or_create(&EventTypeLabel { event_type })
                .inc();
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(true),
        }
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
