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

        /// Who follows whom, as the latest user.followed/unfollowed event of each pair told
        /// it. An unfollowed pair keeps its row (`following` false), so that an older event
        /// delivered later cannot bring the follow back.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "followers")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub followee_id: Uuid,
            #[sea_orm(primary_key, auto_increment = false)]
            pub follower_id: Uuid,
            pub following: bool,
            /// The id (UUIDv7) of the event that set `following`; none on rows written before
            /// versions were kept, which any event replaces.
            pub version: Option<Uuid>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use chrono::Utc;
use oba_kit::ServiceError;
use sea_orm::sea_query::{Alias, DynIden, Expr, ExprTrait, IntoIden, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::domain::NewNotification;
pub use entity::notification::Model as Notification;
use entity::{follower, notification};

/// Records that `follower` follows `followee` (`following`) or no longer does, as the event
/// `version` says. Only an event newer than the pair's last one changes it: event ids are
/// UUIDv7, in the order their writes were made (the order the outbox publishes in), so
/// events of one pair applied out of order (a redelivery after a nak, or NATS 2.9's
/// consumer per subject) still end as their writes did.
#[tracing::instrument(name = "db", skip_all, fields(otel.name = "notification-service/set_following", otel.kind = "client"))]
pub async fn set_following(
    db: &impl ConnectionTrait,
    follower_id: Uuid,
    followee_id: Uuid,
    following: bool,
    version: Uuid,
) -> Result<(), DbErr> {
    let version_of = |table: DynIden| Expr::col((table, follower::Column::Version));
    let stored_is_older = version_of(follower::Entity.into_iden())
        .is_null()
        .or(version_of(Alias::new("excluded").into_iden())
            .gt(version_of(follower::Entity.into_iden())));
    follower::Entity::insert(follower::ActiveModel {
        followee_id: Set(followee_id),
        follower_id: Set(follower_id),
        following: Set(following),
        version: Set(Some(version)),
    })
    .on_conflict(
        OnConflict::columns([follower::Column::FolloweeId, follower::Column::FollowerId])
            .update_columns([follower::Column::Following, follower::Column::Version])
            .action_and_where(stored_is_older)
            .to_owned(),
    )
    .exec_without_returning(db)
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
        .filter(follower::Column::Following.eq(true))
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
