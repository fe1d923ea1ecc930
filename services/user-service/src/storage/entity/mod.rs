//! The `users` and `follows` tables.

pub mod follow;

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// UUIDv7: time-ordered, so new rows append to the index.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub username: String,
    /// Stored lower-case; see `domain::Email`.
    #[sea_orm(unique)]
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub bio: String,
    pub image: String,
    /// `USER` or `ADMIN`.
    pub role: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
