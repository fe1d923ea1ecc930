//! The `likes` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "likes")]
pub struct Model {
    /// Owned by post-service; no foreign key across services.
    #[sea_orm(primary_key, auto_increment = false)]
    pub post_id: Uuid,
    /// Owned by user-service.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
