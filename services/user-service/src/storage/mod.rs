//! Accounts in user-service's own database, behind SeaORM.

pub mod entity;
pub mod migration;
mod sign_in;

pub use sign_in::SignInAttempts;

use chrono::Utc;
use oba_kit::ServiceError;
use oba_kit::auth::Role;
use oba_kit::db::unique_violation;
use std::collections::HashSet;

use oba_kit::outbox::Outbox;
use oba_proto::event::v1::{UserFollowed, UserRegistered, UserUpdated};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter,
    TransactionTrait,
};
use uuid::Uuid;

use crate::domain::{Email, Username};
pub use entity::Model as Account;
use entity::{ActiveModel, Column, Entity as Users, follow};

/// Changes to an account, validated; `None` leaves a field as it is.
#[derive(Default)]
pub struct AccountChanges {
    pub username: Option<Username>,
    pub email: Option<Email>,
    pub password_hash: Option<String>,
    pub bio: Option<String>,
    pub image: Option<String>,
}

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
    outbox: Outbox,
}

impl UserStore {
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::insert", otel.kind = "client"))]
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
        let txn = self.db.begin().await?;
        let account = Users::insert(row)
            .exec_with_returning(&txn)
            .await
            .map_err(taken)?;
        let event = UserRegistered {
            user_id: account.id.to_string(),
            username: account.username.clone(),
        };
        self.outbox
            .enqueue(&txn, "user.registered", account.id, &event)
            .await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(account)
    }

    /// Applies the changes that are present; unique fields still checked by the database.
    /// `user.updated` tells readers of public profiles (the edge's read model) to forget this
    /// one.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::update", otel.kind = "client"))]
    pub async fn update(&self, id: Uuid, changes: AccountChanges) -> Result<Account, ServiceError> {
        let account = self
            .by_id(id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        let mut row: ActiveModel = account.into();
        if let Some(username) = changes.username {
            row.username = Set(username.as_str().to_owned());
        }
        if let Some(email) = changes.email {
            row.email = Set(email.as_str().to_owned());
        }
        if let Some(hash) = changes.password_hash {
            row.password_hash = Set(hash);
        }
        if let Some(bio) = changes.bio {
            row.bio = Set(bio);
        }
        if let Some(image) = changes.image {
            row.image = Set(image);
        }
        row.updated_at = Set(Utc::now());
        let txn = self.db.begin().await?;
        let account = row.update(&txn).await.map_err(taken)?;
        let event = UserUpdated {
            user_id: account.id.to_string(),
            username: account.username.clone(),
        };
        self.outbox
            .enqueue(&txn, "user.updated", account.id, &event)
            .await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(account)
    }

    /// Makes the account with `new.email` an admin, creating it if needed.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::ensure_admin", otel.kind = "client"))]
    pub async fn ensure_admin(&self, new: NewAccount) -> Result<Account, ServiceError> {
        match self.by_email(new.email.as_str()).await? {
            Some(account) if role_of(&account) == Role::Admin => Ok(account),
            Some(account) => {
                let mut row: ActiveModel = account.into();
                row.role = Set(role_name(Role::Admin).to_owned());
                Ok(row.update(&self.db).await?)
            }
            None => {
                self.insert(NewAccount {
                    role: Role::Admin,
                    ..new
                })
                .await
            }
        }
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::by_username", otel.kind = "client"))]
    pub async fn by_username(&self, username: &str) -> Result<Option<Account>, ServiceError> {
        Ok(Users::find()
            .filter(Column::Username.eq(username))
            .one(&self.db)
            .await?)
    }

    /// Idempotent: a second follow of the same user is no change.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::follow", otel.kind = "client"))]
    pub async fn follow(&self, follower: Uuid, followee: Uuid) -> Result<(), ServiceError> {
        let row = follow::ActiveModel {
            follower_id: Set(follower),
            followee_id: Set(followee),
            created_at: Set(Utc::now()),
        };
        let txn = self.db.begin().await?;
        let inserted = follow::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([follow::Column::FollowerId, follow::Column::FolloweeId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        // Only a change is an event: following twice notifies once.
        if inserted > 0 {
            let event = follow_event(follower, followee);
            self.outbox
                .enqueue(&txn, "user.followed", followee, &event)
                .await?;
        }
        txn.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::unfollow", otel.kind = "client"))]
    pub async fn unfollow(&self, follower: Uuid, followee: Uuid) -> Result<(), ServiceError> {
        let txn = self.db.begin().await?;
        let deleted = follow::Entity::delete_many()
            .filter(follow::Column::FollowerId.eq(follower))
            .filter(follow::Column::FolloweeId.eq(followee))
            .exec(&txn)
            .await?;
        if deleted.rows_affected > 0 {
            let event = follow_event(follower, followee);
            self.outbox
                .enqueue(&txn, "user.unfollowed", followee, &event)
                .await?;
        }
        txn.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    /// Which of `ids` the viewer follows, in one query.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::followed_among", otel.kind = "client"))]
    pub async fn followed_among(
        &self,
        viewer: Uuid,
        ids: &[Uuid],
    ) -> Result<HashSet<Uuid>, ServiceError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(follow::Entity::find()
            .filter(follow::Column::FollowerId.eq(viewer))
            .filter(follow::Column::FolloweeId.is_in(ids.iter().copied()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|f| f.followee_id)
            .collect())
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::following", otel.kind = "client"))]
    pub async fn following(&self, user: Uuid) -> Result<Vec<Uuid>, ServiceError> {
        Ok(follow::Entity::find()
            .filter(follow::Column::FollowerId.eq(user))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|f| f.followee_id)
            .collect())
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::by_email", otel.kind = "client"))]
    pub async fn by_email(&self, email: &str) -> Result<Option<Account>, ServiceError> {
        Ok(Users::find()
            .filter(Column::Email.eq(email.trim().to_lowercase()))
            .one(&self.db)
            .await?)
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::by_id", otel.kind = "client"))]
    pub async fn by_id(&self, id: Uuid) -> Result<Option<Account>, ServiceError> {
        Ok(Users::find_by_id(id).one(&self.db).await?)
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "UserStore::by_ids", otel.kind = "client"))]
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

fn follow_event(follower: Uuid, followee: Uuid) -> UserFollowed {
    UserFollowed {
        follower_id: follower.to_string(),
        followee_id: followee.to_string(),
    }
}

/// A unique column already holds the value: the constraint message names the column on
/// SQLite and the index (`users_<column>_key`) on PostgreSQL.
fn taken(err: sea_orm::DbErr) -> ServiceError {
    let field = match unique_violation(&err) {
        Some(m) if m.contains("username") => "username",
        Some(m) if m.contains("email") => "email",
        _ => return err.into(),
    };
    ServiceError::Conflict {
        field,
        message: "has already been taken".into(),
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
