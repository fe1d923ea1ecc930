//! The trending projection in rank-service's own database: one row of counters per post,
//! kept (marked deleted) when its post is deleted.

pub mod migration;

pub mod entity {
    //! The `rank_posts` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rank_posts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub post_id: Uuid,
        /// Unknown until `post.created` arrives (a like may be delivered first).
        pub created_at: Option<DateTimeUtc>,
        pub likes: i64,
        pub comments: i64,
        pub views: i64,
        /// The post was deleted. Its row stays, so that an event of it delivered later (a
        /// `post.created` redelivered after a nak) cannot bring it back to trending.
        pub deleted: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use chrono::{DateTime, Utc};
use oba_kit::ServiceError;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter,
};
use uuid::Uuid;

use crate::domain::{Engagement, EngagementChanges, trending_score};
use entity::{ActiveModel, Column, Entity as RankPosts};

/// How far back trending looks; older posts have decayed to nothing anyway.
const WINDOW_DAYS: i64 = 30;

/// Sets one column of a post's row in ONE statement, making the row (counters at zero) if
/// the post was not seen yet: `post.created` and `post.deleted` may come before or after
/// the post's other events.
async fn upsert_column(
    db: &impl ConnectionTrait,
    post_id: Uuid,
    column: Column,
    row: ActiveModel,
) -> Result<(), DbErr> {
    RankPosts::insert(ActiveModel {
        post_id: Set(post_id),
        ..row
    })
    .on_conflict(
        OnConflict::column(Column::PostId)
            .update_column(column)
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// A post's row as first seen: no creation time yet, counters at zero, not deleted.
fn new_row() -> ActiveModel {
    ActiveModel {
        post_id: sea_orm::ActiveValue::NotSet,
        created_at: Set(None),
        likes: Set(0),
        comments: Set(0),
        views: Set(0),
        deleted: Set(false),
    }
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "rank-service/post_created", otel.kind = "client"))]
pub async fn post_created(
    db: &impl ConnectionTrait,
    post_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let row = ActiveModel {
        created_at: Set(Some(at)),
        ..new_row()
    };
    upsert_column(db, post_id, Column::CreatedAt, row).await
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "rank-service/post_deleted", otel.kind = "client"))]
pub async fn post_deleted(db: &impl ConnectionTrait, post_id: Uuid) -> Result<(), DbErr> {
    let row = ActiveModel {
        deleted: Set(true),
        ..new_row()
    };
    upsert_column(db, post_id, Column::Deleted, row).await
}

/// Adds a batch's counter changes, one row per post, in ONE statement: atomic per row (safe
/// with several replicas consuming), and the row of a post not seen yet starts from zero.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "rank-service/add", otel.kind = "client"))]
pub async fn add(db: &impl ConnectionTrait, changes: &EngagementChanges) -> Result<(), DbErr> {
    let rows = changes.iter().map(|(post_id, e)| ActiveModel {
        post_id: Set(post_id),
        created_at: Set(None),
        likes: Set(e.likes),
        comments: Set(e.comments),
        views: Set(e.views),
        deleted: Set(false),
    });
    // `excluded` is the row that was to be inserted: its counters are this batch's changes.
    // (No rows, no statement: sea-orm skips an empty insert.)
    let summed = |c: Column| Expr::col((RankPosts, c)).add(Expr::col((Alias::new("excluded"), c)));
    RankPosts::insert_many(rows)
        .on_conflict(
            OnConflict::column(Column::PostId)
                .value(Column::Likes, summed(Column::Likes))
                .value(Column::Comments, summed(Column::Comments))
                .value(Column::Views, summed(Column::Views))
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The `first` best posts by trending score at `now`.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "rank-service/trending", otel.kind = "client"))]
pub async fn trending(
    db: &DatabaseConnection,
    first: usize,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, f64)>, ServiceError> {
    let since = now - chrono::Duration::days(WINDOW_DAYS);
    let rows = RankPosts::find()
        .filter(Column::CreatedAt.gte(since))
        .filter(Column::Deleted.eq(false))
        .all(db)
        .await?;
    let mut scored: Vec<(Uuid, f64)> = rows
        .into_iter()
        .filter_map(|row| {
            let age = now - row.created_at?;
            let engagement = Engagement {
                likes: row.likes,
                comments: row.comments,
                views: row.views,
            };
            Some((
                row.post_id,
                trending_score(engagement, age.num_milliseconds() as f64 / 3.6e6),
            ))
        })
        .collect();
    // Best first; newer first among equals (UUIDv7 ids grow with time).
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    scored.truncate(first);
    Ok(scored)
}
