//! Notifications, and the follows projection that says who hears of new posts, in
//! notification-service's own database.

pub mod migration;

pub mod entity {
    //! The `notifications` and `followers` tables.
    pub mod notification {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "notifications")]
        pub struct Model {
            /// Growing: newest first is id descending, and it is the cursor.
            #[sea_orm(primary_key)]
            pub id: i64,
            pub recipient_id: Uuid,
            /// `FOLLOWED`, `COMMENTED`, `LIKED` or `PUBLISHED`.
            pub kind: String,
            pub actor_id: Uuid,
            pub post_id: Option<Uuid>,
            pub created_at: DateTimeUtc,
            pub read_at: Option<DateTimeUtc>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod follower {
        use sea_orm::entity::prelude::*;

        /// Who follows whom, as user.followed/unfollowed events told it.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "followers")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub followee_id: Uuid,
            #[sea_orm(primary_key, auto_increment = false)]
            pub follower_id: Uuid,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use chrono::Utc;
use oba_kit::ServiceError;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::domain::NewNotification;
pub use entity::notification::Model as Notification;
use entity::{follower, notification};

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "notification-service/follow", otel.kind = "client"))]
pub async fn follow(
    db: &impl ConnectionTrait,
    follower_id: Uuid,
    followee_id: Uuid,
) -> Result<(), DbErr> {
    follower::Entity::insert(follower::ActiveModel {
        followee_id: Set(followee_id),
        follower_id: Set(follower_id),
    })
    .on_conflict(
        OnConflict::columns([follower::Column::FolloweeId, follower::Column::FollowerId])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "notification-service/unfollow", otel.kind = "client"))]
pub async fn unfollow(
    db: &impl ConnectionTrait,
    follower_id: Uuid,
    followee_id: Uuid,
) -> Result<(), DbErr> {
    follower::Entity::delete_many()
        .filter(follower::Column::FolloweeId.eq(followee_id))
        .filter(follower::Column::FollowerId.eq(follower_id))
        .exec(db)
        .await?;
    Ok(())
}

#[tracing::instrument(name = "db", skip_all, fields(otel.name = "notification-service/followers_of", otel.kind = "client"))]
pub async fn followers_of(
    db: &impl ConnectionTrait,
    followee_id: Uuid,
) -> Result<Vec<Uuid>, DbErr> {
    Ok(follower::Entity::find()
        .filter(follower::Column::FolloweeId.eq(followee_id))
        .all(db)
        .await?
        .into_iter()
        .map(|f| f.follower_id)
        .collect())
}

/// Stores a batch's new notifications in ONE statement; returns them stored, in order.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "notification-service/insert", otel.kind = "client"))]
pub async fn insert(
    db: &impl ConnectionTrait,
    new: Vec<NewNotification>,
) -> Result<Vec<Notification>, DbErr> {
    let now = Utc::now();
    let rows = new.into_iter().map(|n| notification::ActiveModel {
        recipient_id: Set(n.recipient),
        kind: Set(n.kind.as_str().to_owned()),
        actor_id: Set(n.actor),
        post_id: Set(n.post),
        created_at: Set(now),
        read_at: Set(None),
        ..Default::default()
    });
    let mut stored = notification::Entity::insert_many(rows)
        .exec_with_returning(db)
        .await?;
    // Ids grow in the order of the rows; RETURNING does not promise that order.
    stored.sort_by_key(|n| n.id);
    Ok(stored)
}

pub struct NotificationPage {
    pub notifications: Vec<Notification>,
    pub has_next_page: bool,
}

/// A recipient's notifications, newest first, before the cursor.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "notification-service/list", otel.kind = "client"))]
pub async fn list(
    db: &DatabaseConnection,
    recipient: Uuid,
    limit: u64,
    before: Option<i64>,
    unread_only: bool,
) -> Result<NotificationPage, ServiceError> {
    let mut query = notification::Entity::find()
        .filter(notification::Column::RecipientId.eq(recipient))
        .order_by_desc(notification::Column::Id);
    if let Some(before) = before {
        query = query.filter(notification::Column::Id.lt(before));
    }
    if unread_only {
        query = query.filter(notification::Column::ReadAt.is_null());
    }
    let mut notifications = query.limit(limit + 1).all(db).await?;
    let has_next_page = notifications.len() as u64 > limit;
    notifications.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(NotificationPage {
        notifications,
        has_next_page,
    })
}

/// Marks every unread notification of `recipient` read; returns how many.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "notification-service/mark_read", otel.kind = "client"))]
pub async fn mark_read(db: &DatabaseConnection, recipient: Uuid) -> Result<u64, ServiceError> {
    Ok(notification::Entity::update_many()
        .col_expr(notification::Column::ReadAt, Expr::value(Utc::now()))
        .filter(notification::Column::RecipientId.eq(recipient))
        .filter(notification::Column::ReadAt.is_null())
        .exec(db)
        .await?
        .rows_affected)
}
