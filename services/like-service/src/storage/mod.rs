//! Likes in like-service's own database, behind SeaORM.
//!
//! Likes and unlikes are written by one writer task ([`LikeStore::new`] starts it): a caller
//! hands its change over and waits for the commit, and the writer writes all the changes
//! waiting for it together, up to [`BATCH_MAX`]: on PostgreSQL in ONE statement, on SQLite
//! (which has no data-modifying `WITH`) in one transaction of four. Two changes of one like
//! (a post and a user) never share a batch, so they apply in the order asked. One writer,
//! not one per pooled connection: what costs the database is the number of batches, and
//! changes that arrive while a batch commits all go in the next. The writer stops when the
//! last clone of the store is dropped, after writing what was already handed over. Reads go
//! straight to the database.

pub mod entity;
pub mod migration;

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::Utc;
use oba_kit::ServiceError;
use oba_kit::outbox::{Outbox, OutboxEvent};
use oba_proto::event::v1::PostLiked;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use entity::{ActiveModel, Column, Entity as Likes};

/// Who likes which post (and whose post it is, for the event).
#[derive(Debug, Clone, Copy)]
pub struct LikeKey {
    pub post_id: Uuid,
    pub user_id: Uuid,
    pub post_author_id: Option<Uuid>,
}

impl LikeKey {
    fn event(&self) -> PostLiked {
        PostLiked {
            post_id: self.post_id.to_string(),
            post_author_id: self
                .post_author_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            user_id: self.user_id.to_string(),
        }
    }

    /// Which like this is: a post and a user.
    fn pair(&self) -> (Uuid, Uuid) {
        (self.post_id, self.user_id)
    }
}

/// Whether a like is given or taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikeChange {
    Like,
    Unlike,
}

/// One caller's change, waiting for the writer, with the event it causes if it changes
/// anything (made by the caller, so it carries the caller's trace).
struct Job {
    change: LikeChange,
    like: LikeKey,
    event: OutboxEvent,
    answer: oneshot::Sender<Result<u64, ServiceError>>,
}

/// The most changes written in one transaction.
pub const BATCH_MAX: usize = 64;

/// Changes waiting for the writer; beyond this, callers wait to hand theirs over.
const QUEUED_MAX: usize = 1024;

#[derive(Clone)]
pub struct LikeStore {
    db: DatabaseConnection,
    writer: mpsc::Sender<Job>,
}

impl LikeStore {
    /// The store and its writer, a task that lives as long as some clone of the store. One
    /// writer on PostgreSQL too: two made smaller batches; one did 14 % more favorites (README).
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        let (writer, jobs) = mpsc::channel(QUEUED_MAX);
        tokio::spawn(write_together(db.clone(), outbox, jobs));
        Self { db, writer }
    }

    /// Idempotent: the primary key makes a repeated like a no-op, even under races. Returns
    /// the post's like count as of this commit.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "LikeStore::like", otel.kind = "client"))]
    pub async fn like(&self, like: LikeKey) -> Result<u64, ServiceError> {
        self.write(LikeChange::Like, like).await
    }

    /// Returns the post's like count as of this commit.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "LikeStore::unlike", otel.kind = "client"))]
    pub async fn unlike(&self, like: LikeKey) -> Result<u64, ServiceError> {
        self.write(LikeChange::Unlike, like).await
    }

    /// Hands `change` to the writer and waits for its commit.
    async fn write(&self, change: LikeChange, like: LikeKey) -> Result<u64, ServiceError> {
        let event_type = match change {
            LikeChange::Like => "post.liked",
            LikeChange::Unlike => "post.unliked",
        };
        let (answer, answered) = oneshot::channel();
        let job = Job {
            change,
            like,
            event: OutboxEvent::new(event_type, like.post_id, &like.event()),
            answer,
        };
        let stopped = || ServiceError::Internal("the like writer has stopped".into());
        self.writer.send(job).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Like counts of many posts in one query; posts nobody liked are left out.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "LikeStore::counts", otel.kind = "client"))]
    pub async fn counts(&self, post_ids: &[Uuid]) -> Result<HashMap<Uuid, u64>, ServiceError> {
        counts_of(&self.db, post_ids).await
    }

    /// Which of `post_ids` the viewer likes, in one query.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "LikeStore::liked_among", otel.kind = "client"))]
    pub async fn liked_among(
        &self,
        viewer: Uuid,
        post_ids: &[Uuid],
    ) -> Result<HashSet<Uuid>, ServiceError> {
        if post_ids.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(Likes::find()
            .filter(Column::UserId.eq(viewer))
            .filter(Column::PostId.is_in(post_ids.iter().copied()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|l| l.post_id)
            .collect())
    }

    /// Posts a user likes, most recently liked first.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "LikeStore::liked_by", otel.kind = "client"))]
    pub async fn liked_by(&self, user_id: Uuid) -> Result<Vec<Uuid>, ServiceError> {
        Ok(Likes::find()
            .filter(Column::UserId.eq(user_id))
            .order_by_desc(Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|l| l.post_id)
            .collect())
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "LikeStore::delete_for_post", otel.kind = "client"))]
    pub async fn delete_for_post(&self, post_id: Uuid) -> Result<u64, ServiceError> {
        Ok(Likes::delete_many()
            .filter(Column::PostId.eq(post_id))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}

/// Like counts of `post_ids` in one query, on `db` (a transaction's, to read its own writes).
async fn counts_of(
    db: &impl ConnectionTrait,
    post_ids: &[Uuid],
) -> Result<HashMap<Uuid, u64>, ServiceError> {
    if post_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, i64)> = Likes::find()
        .select_only()
        .column(Column::PostId)
        .column_as(Expr::col(Column::UserId).count(), "likes")
        .filter(Column::PostId.is_in(post_ids.iter().copied()))
        .group_by(Column::PostId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(post, n)| (post, u64::try_from(n).unwrap_or(0)))
        .collect())
}

/// The writer: takes the changes waiting and writes them in one transaction, until every
/// store is dropped. A commit per like was most of a like's cost; under load, what arrives
/// while one batch commits goes together in the next.
async fn write_together(db: DatabaseConnection, outbox: Outbox, mut jobs: mpsc::Receiver<Job>) {
    let mut held = VecDeque::new();
    loop {
        if held.is_empty() {
            match jobs.recv().await {
                Some(job) => held.push_back(job),
                None => return,
            }
        }
        let mut batch = next_batch(&mut held, &mut jobs);
        // A caller that gave up (its deadline passed while the database was slow or away)
        // was told the change failed: it is not made behind its back.
        batch.retain(|job| !job.answer.is_closed());
        if !batch.is_empty() {
            write_batch(&db, &outbox, batch).await;
        }
    }
}

/// The next batch: the changes `held` back from the last one, in order, then those waiting,
/// up to [`BATCH_MAX`]. A like changed twice is changed in two batches, in the order asked:
/// the later change is held for the next batch, and the changes of other likes behind it
/// still go in this one (stopping at it made batches of two or three when a user liked and
/// unliked at once).
fn next_batch(held: &mut VecDeque<Job>, jobs: &mut mpsc::Receiver<Job>) -> Vec<Job> {
    let mut batch = Vec::new();
    let mut pairs = HashSet::new();
    let mut earlier = std::mem::take(held);
    loop {
        let job = match earlier.pop_front() {
            Some(job) => job,
            // Held changes are at most a batch's worth: what waits beyond stays in the channel.
            None if batch.len() < BATCH_MAX && held.len() < BATCH_MAX => match jobs.try_recv() {
                Ok(job) => job,
                Err(_) => break,
            },
            None => break,
        };
        if pairs.insert(job.like.pair()) {
            batch.push(job);
        } else {
            held.push_back(job);
        }
    }
    batch
}

/// Writes `batch`, answering each caller; a batch that fails is written again one change at
/// a time, so that one change that cannot be written fails alone.
async fn write_batch(db: &DatabaseConnection, outbox: &Outbox, batch: Vec<Job>) {
    let answers = match apply(db, outbox, &batch).await {
        Ok(counts) => counts.into_iter().map(Ok).collect(),
        Err(error) if batch.len() == 1 => vec![Err(error)],
        Err(_) => {
            let mut answers = Vec::with_capacity(batch.len());
            for job in &batch {
                let alone = apply(db, outbox, std::slice::from_ref(job)).await;
                answers.push(alone.map(|counts| counts.first().copied().unwrap_or(0)));
            }
            answers
        }
    };
    for (job, answer) in batch.into_iter().zip(answers) {
        let _ = job.answer.send(answer);
    }
}

/// Applies the changes of `jobs` (each like at most once) and the events of those that
/// change anything, all or none. Returns each change's post's like count as of the commit,
/// and wakes the relay.
async fn apply(
    db: &DatabaseConnection,
    outbox: &Outbox,
    jobs: &[Job],
) -> Result<Vec<u64>, ServiceError> {
    let counts = match db.get_database_backend() {
        DbBackend::Postgres => apply_in_one_statement(db, jobs).await?,
        _ => apply_in_one_transaction(db, outbox, jobs).await?,
    };
    outbox.committed();
    Ok(jobs
        .iter()
        .map(|job| counts.get(&job.like.post_id).copied().unwrap_or(0))
        .collect())
}

/// The batch as ONE PostgreSQL statement, its own transaction: one round trip where a
/// transaction of statements took five, each a wake-up of the server and of this process
/// (measured: most of like-service's and its database's CPU per like). Every part of the
/// statement sees the table as it was before it, so a count is the likes there were plus
/// this batch's changes. Arrays keep its text fixed, so it is prepared once per connection,
/// and planned once there too (`DbConfig::plan_once`): left to choose, PostgreSQL planned it
/// again at every execution, 0.54 ms a batch against 0.26 ms (psql, 3 000 single likes).
const APPLY_BATCH_SQL: &str = "
WITH asked AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bool[]) AS asked(post_id, user_id, likes)
), liked AS (
    INSERT INTO likes (post_id, user_id, created_at)
    SELECT post_id, user_id, $4 FROM asked WHERE likes
    ON CONFLICT (post_id, user_id) DO NOTHING
    RETURNING post_id, user_id
), unliked AS (
    DELETE FROM likes USING asked
    WHERE NOT asked.likes AND likes.post_id = asked.post_id AND likes.user_id = asked.user_id
    RETURNING likes.post_id, likes.user_id
), changed AS (
    SELECT post_id, user_id, 1 AS delta FROM liked
    UNION ALL
    SELECT post_id, user_id, -1 FROM unliked
), told AS (
    -- Only a change is an event: liking twice notifies once.
    INSERT INTO outbox (id, event_type, envelope, created_at)
    SELECT event.id, event.event_type, event.envelope, event.created_at
    FROM unnest($1::uuid[], $2::uuid[], $5::uuid[], $6::text[], $7::bytea[], $8::timestamptz[])
        AS event(post_id, user_id, id, event_type, envelope, created_at)
    JOIN changed USING (post_id, user_id)
)
SELECT post_id,
    (SELECT count(*) FROM likes WHERE likes.post_id = posts.post_id)
    + (SELECT coalesce(sum(delta), 0) FROM changed WHERE changed.post_id = posts.post_id) AS likes
FROM (SELECT DISTINCT post_id FROM asked) AS posts";

async fn apply_in_one_statement(
    db: &DatabaseConnection,
    jobs: &[Job],
) -> Result<HashMap<Uuid, u64>, ServiceError> {
    let n = jobs.len();
    let (mut posts, mut users, mut likes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut ids, mut types, mut envelopes, mut times) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for job in jobs {
        posts.push(job.like.post_id);
        users.push(job.like.user_id);
        likes.push(job.change == LikeChange::Like);
        // Every change's event is made; the statement writes those of real changes.
        let event = job.event.clone().into_row();
        ids.push(event.id);
        types.push(event.event_type);
        envelopes.push(event.envelope);
        times.push(event.created_at);
    }
    let values: [sea_orm::Value; 8] = [
        posts.into(),
        users.into(),
        likes.into(),
        Utc::now().into(),
        ids.into(),
        types.into(),
        envelopes.into(),
        times.into(),
    ];
    let counted = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            APPLY_BATCH_SQL,
            values,
        ))
        .await?;
    counted
        .iter()
        .map(|row| {
            let post: Uuid = row.try_get("", "post_id")?;
            let likes: i64 = row.try_get("", "likes")?;
            Ok((post, u64::try_from(likes).unwrap_or(0)))
        })
        .collect::<Result<_, sea_orm::DbErr>>()
        .map_err(ServiceError::from)
}

/// The batch as ONE transaction of the ORM's statements (SQLite has no data-modifying
/// `WITH`): likes in one statement, unlikes in one, events in one, counts in one.
async fn apply_in_one_transaction(
    db: &DatabaseConnection,
    outbox: &Outbox,
    jobs: &[Job],
) -> Result<HashMap<Uuid, u64>, ServiceError> {
    let of = |kind| {
        jobs.iter()
            .filter(move |job| job.change == kind)
            .map(|job| &job.like)
    };
    let txn = db.begin().await?;
    let now = Utc::now();
    let rows: Vec<_> = of(LikeChange::Like)
        .map(|like| ActiveModel {
            post_id: Set(like.post_id),
            user_id: Set(like.user_id),
            created_at: Set(now),
        })
        .collect();
    // Only a change is an event: liking twice notifies once.
    let mut changed: HashSet<(Uuid, Uuid)> = Likes::insert_many(rows)
        .on_conflict(
            OnConflict::columns([Column::PostId, Column::UserId])
                .do_nothing()
                .to_owned(),
        )
        .exec_with_returning(&txn)
        .await?
        .into_iter()
        .map(|l| (l.post_id, l.user_id))
        .collect();
    let unliked = of(LikeChange::Unlike).fold(Condition::any(), |any, like| {
        any.add(
            Column::PostId
                .eq(like.post_id)
                .and(Column::UserId.eq(like.user_id)),
        )
    });
    if !unliked.is_empty() {
        let removed = Likes::delete_many()
            .filter(unliked)
            .exec_with_returning(&txn)
            .await?;
        changed.extend(removed.into_iter().map(|l| (l.post_id, l.user_id)));
    }
    let events: Vec<_> = jobs
        .iter()
        .filter(|job| changed.contains(&job.like.pair()))
        .map(|job| job.event.clone())
        .collect();
    if !events.is_empty() {
        outbox.enqueue_all(&txn, events).await?;
    }
    let posts: Vec<Uuid> = jobs.iter().map(|job| job.like.post_id).collect();
    let counts = counts_of(&txn, &posts).await?;
    txn.commit().await?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(post_id: Uuid, change: LikeChange) -> Job {
        let like = LikeKey {
            post_id,
            user_id: Uuid::nil(),
            post_author_id: None,
        };
        Job {
            change,
            like,
            event: OutboxEvent::new("post.liked", post_id, &like.event()),
            answer: oneshot::channel().0,
        }
    }

    fn shown(batch: &[Job]) -> Vec<(Uuid, LikeChange)> {
        batch
            .iter()
            .map(|job| (job.like.post_id, job.change))
            .collect()
    }

    #[test]
    fn a_like_changed_twice_waits_for_the_next_batch_and_other_likes_go_on() {
        use LikeChange::{Like, Unlike};
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (queue, mut jobs) = mpsc::channel(QUEUED_MAX);
        for (post, change) in [(a, Like), (a, Unlike), (b, Like), (a, Like), (c, Unlike)] {
            queue.try_send(job(post, change)).expect("queued");
        }
        let mut held = VecDeque::new();

        let first = next_batch(&mut held, &mut jobs);
        assert_eq!(shown(&first), [(a, Like), (b, Like), (c, Unlike)]);
        let second = next_batch(&mut held, &mut jobs);
        assert_eq!(shown(&second), [(a, Unlike)]);
        let third = next_batch(&mut held, &mut jobs);
        assert_eq!(shown(&third), [(a, Like)]);
        assert!(held.is_empty());
    }

    #[test]
    fn a_batch_takes_at_most_batch_max_changes() {
        let (queue, mut jobs) = mpsc::channel(QUEUED_MAX);
        for _ in 0..BATCH_MAX + 5 {
            queue
                .try_send(job(Uuid::now_v7(), LikeChange::Like))
                .expect("queued");
        }
        let mut held = VecDeque::new();
        assert_eq!(next_batch(&mut held, &mut jobs).len(), BATCH_MAX);
        assert_eq!(next_batch(&mut held, &mut jobs).len(), 5);
    }
}
