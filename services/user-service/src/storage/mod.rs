//! Accounts in user-service's own database, behind SeaORM.

pub mod entity;
pub mod migration;

use chrono::Utc;
use oba_kit::ServiceError;
use oba_kit::auth::Role;
use oba_kit::db::unique_violation;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::domain::{Email, Username};
pub use entity::Model as Account;
use entity::{ActiveModel, Column, Entity as Users};

/// A new account, validated and with its password already hashed.
pub struct NewAccount {
    pub username: Username,
    pub email: Email,
    pub password_hash: String,
    pub role: Role,
}

#[derive(Clone)]
pub struct UserStore {
    db: DatabaseConnection,
}

impl UserStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn insert(&self, new: NewAccount) -> Result<Account, ServiceError> {
        let now = Utc::now();
        let row = ActiveModel {
            id: Set(Uuid::now_v7()),
            username: Set(new.username.as_str().to_owned()),
            email: Set(new.email.as_str().to_owned()),
            password_hash: Set(new.password_hash),
            bio: Set(String::new()),
            image: Set(String::new()),
            role: Set(role_name(new.role).to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        };
        Users::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| match unique_violation(&e) {
                // The constraint message names the column on SQLite and the index on PostgreSQL.
                Some(m) if m.contains("username") => ServiceError::Conflict {
                    field: "username",
                    message: "has already been taken".into(),
                },
                Some(m) if m.contains("email") => ServiceError::Conflict {
                    field: "email",
                    message: "has already been taken".into(),
                },
                _ => e.into(),
            })
    }

    pub async fn by_email(&self, email: &str) -> Result<Option<Account>, ServiceError> {
        Ok(Users::find()
            .filter(Column::Email.eq(email.trim().to_lowercase()))
            .one(&self.db)
            .await?)
    }

    pub async fn by_id(&self, id: Uuid) -> Result<Option<Account>, ServiceError> {
        Ok(Users::find_by_id(id).one(&self.db).await?)
    }

    pub async fn by_ids(&self, ids: Vec<Uuid>) -> Result<Vec<Account>, ServiceError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(Users::find()
            .filter(Column::Id.is_in(ids))
            .all(&self.db)
            .await?)
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "USER",
        Role::Admin => "ADMIN",
    }
}

pub fn role_of(account: &Account) -> Role {
    if account.role == "ADMIN" {
        Role::Admin
    } else {
        Role::User
    }
}
