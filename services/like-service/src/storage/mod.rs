//! Likes in like-service's own database, behind SeaORM.

pub mod entity;
pub mod migration;

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use oba_kit::ServiceError;
use oba_kit::outbox::Outbox;
use oba_proto::event::v1::PostLiked;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use uuid::Uuid;

use entity::{ActiveModel, Column, Entity as Likes};

/// A post's like count, read in the transaction that changed it.
async fn count_of(txn: &impl ConnectionTrait, post_id: Uuid) -> Result<u64, ServiceError> {
    let count = Likes::find()
        .filter(Column::PostId.eq(post_id))
        .count(txn)
        .await?;
    Ok(count)
}

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
}

#[derive(Clone)]
pub struct LikeStore {
    db: DatabaseConnection,
    outbox: Outbox,
}

impl LikeStore {
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// Idempotent: the primary key makes a repeated like a no-op, even under races. Returns
    /// the post's like count as of this commit.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "LikeStore::like", otel.kind = "client"))]
    pub async fn like(&self, like: LikeKey) -> Result<u64, ServiceError> {
        let LikeKey {
            post_id, user_id, ..
        } = like;
        let txn = self.db.begin().await?;
        let inserted = Likes::insert(ActiveModel {
            post_id: Set(post_id),
            user_id: Set(user_id),
            created_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::columns([Column::PostId, Column::UserId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        // Only a change is an event: liking twice notifies once.
        if inserted > 0 {
            self.outbox
                .enqueue(&txn, "post.liked", post_id, &like.event())
                .await?;
        }
        let count = count_of(&txn, post_id).await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(count)
    }

    /// Returns the post's like count as of this commit.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "LikeStore::unlike", otel.kind = "client"))]
    pub async fn unlike(&self, like: LikeKey) -> Result<u64, ServiceError> {
        let txn = self.db.begin().await?;
        let deleted = Likes::delete_many()
            .filter(Column::PostId.eq(like.post_id))
            .filter(Column::UserId.eq(like.user_id))
            .exec(&txn)
            .await?;
        if deleted.rows_affected > 0 {
            self.outbox
                .enqueue(&txn, "post.unliked", like.post_id, &like.event())
                .await?;
        }
        let count = count_of(&txn, like.post_id).await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(count)
    }

    /// Like counts of many posts in one query; posts nobody liked are left out.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "LikeStore::counts", otel.kind = "client"))]
    pub async fn counts(&self, post_ids: &[Uuid]) -> Result<HashMap<Uuid, u64>, ServiceError> {
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
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(post, n)| (post, u64::try_from(n).unwrap_or(0)))
            .collect())
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
