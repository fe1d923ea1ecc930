//! The `comments` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "comments")]
pub struct Model {
    /// A growing integer, as the RealWorld API expects; also the listing cursor.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Owned by post-service; no foreign key across services.
    pub post_id: Uuid,
    /// Owned by user-service.
    pub author_id: Uuid,
    pub body: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
