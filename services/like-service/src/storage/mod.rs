//! Likes in like-service's own database, behind SeaORM.

pub mod entity;
pub mod migration;

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use oba_kit::ServiceError;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use entity::{ActiveModel, Column, Entity as Likes};

#[derive(Clone)]
pub struct LikeStore {
    db: DatabaseConnection,
}

impl LikeStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Idempotent: the primary key makes a repeated like a no-op, even under races.
    pub async fn like(&self, post_id: Uuid, user_id: Uuid) -> Result<(), ServiceError> {
        Likes::insert(ActiveModel {
            post_id: Set(post_id),
            user_id: Set(user_id),
            created_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::columns([Column::PostId, Column::UserId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    pub async fn unlike(&self, post_id: Uuid, user_id: Uuid) -> Result<(), ServiceError> {
        Likes::delete_many()
            .filter(Column::PostId.eq(post_id))
            .filter(Column::UserId.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Like counts of many posts in one query; posts nobody liked are left out.
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

    pub async fn delete_for_post(&self, post_id: Uuid) -> Result<u64, ServiceError> {
        Ok(Likes::delete_many()
            .filter(Column::PostId.eq(post_id))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
