//! Idempotent event consumers: each delivery is applied to the consumer's own projection in
//! ONE transaction together with a row in `processed_events` keyed by the event id. A
//! redelivered event finds its id there and changes nothing; an event whose transaction
//! failed was not recorded, is nacked, and comes again. So projections count every event
//! exactly once, whatever the bus does.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, TransactionTrait,
};
use sea_orm_migration::prelude::{ColumnDef, SchemaManager, Table};
use tokio_util::sync::CancellationToken;

use crate::ServiceError;
use tokio::sync::mpsc;

use crate::bus::{Bus, Delivery};
use crate::metrics::Metrics;
use crate::outbox::EventTypeLabel;
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

/// What a consumer does with an event, inside the transaction that records it.
#[tonic::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// What `apply` hands to `committed` (e.g. notifications to push to live subscribers).
    type Applied: Send;

    async fn apply(
        &self,
        event: &Envelope,
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

/// Applies one encoded envelope exactly once (the heart of the consumer, callable directly
/// in tests to deliver the same event twice).
pub async fn handle<P: Projection>(
    db: &DatabaseConnection,
    projection: &P,
    envelope: &Envelope,
) -> Result<Handled, ServiceError> {
    let txn = db.begin().await?;
    let recorded = entity::Entity::insert(entity::ActiveModel {
        event_id: Set(envelope.id.clone()),
        processed_at: Set(chrono::Utc::now()),
    })
    .on_conflict(
        OnConflict::column(entity::Column::EventId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&txn)
    .await?;
    if recorded == 0 {
        txn.rollback().await?;
        return Ok(Handled::Duplicate);
    }
    let applied = projection.apply(envelope, &txn).await?;
    txn.commit().await?;
    projection.committed(applied);
    Ok(Handled::Applied)
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
    loop {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => break,
            next = deliveries.recv() => match next { Some(d) => d, None => return },
        };
        consume(&db, &projection, &m, delivery).await;
    }
    // Shutting down: apply what was already delivered (an in-process bus has no redelivery
    // after a restart), then stop.
    while let Ok(delivery) = deliveries.try_recv() {
        consume(&db, &projection, &m, delivery).await;
    }
}

/// How often the consumer's lag is read from the bus.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Keeps the gauge `events_pending` (the consumer's lag: events stored for it and not yet
/// acked) up to date until shutdown. On a clock of its own: a busy or stuck consumer is
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
        "Events stored for this service's consumer and not yet applied (its lag)",
        lag.clone(),
    );
    let mut ticks = tokio::time::interval(LAG_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
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
    delivery: Delivery,
) {
    let envelope = match Envelope::decode(delivery.payload.clone()) {
        Ok(envelope) => envelope,
        Err(e) => {
            // Retrying cannot fix a message that does not decode: log it and move on.
            tracing::error!(subject = %delivery.subject, error = %e, "undecodable event dropped");
            let _ = delivery.ack().await;
            return;
        }
    };
    let label = EventTypeLabel {
        event_type: envelope.r#type.clone(),
    };
    if delivery.redelivered {
        m.redelivered.get_or_create(&label).inc();
    }
    let cause = envelope.trace_context.get(crate::trace::HEADER).cloned();
    let span = || {
        tracing::info_span!(
            "consume",
            otel.name = %format_args!("consume {}", envelope.r#type),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.destination.name = %delivery.subject,
            messaging.message.id = %envelope.id,
        )
    };
    let applied = crate::trace::follow_on(cause, span, handle(db, projection, &envelope)).await;
    match applied {
        Ok(outcome) => {
            let counter = if outcome == Handled::Applied {
                &m.consumed
            } else {
                &m.duplicates
            };
            counter.get_or_create(&label).inc();
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
