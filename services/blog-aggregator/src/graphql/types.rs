//! The GraphQL object and input types, named as in the protos: `User`, `Profile`, `Post`.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use oba_kit::ErrorCode;
use oba_proto::post::v1 as post_pb;
use oba_proto::time::datetime;
use oba_proto::user::v1 as user_pb;

use super::error::coded;
use super::loaders::ProfileLoader;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

/// A signed-in user's own account.
#[derive(SimpleObject)]
pub struct User {
    pub id: ID,
    pub username: String,
    pub email: String,
    pub bio: Option<String>,
    pub image: Option<String>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

impl From<user_pb::User> for User {
    fn from(u: user_pb::User) -> Self {
        let role = if u.role() == user_pb::Role::Admin {
            Role::Admin
        } else {
            Role::User
        };
        Self {
            id: ID(u.id),
            username: u.username,
            email: u.email,
            bio: non_empty(u.bio),
            image: non_empty(u.image),
            role,
            created_at: datetime(u.created_at.as_ref()),
        }
    }
}

/// What anybody may see of a user.
#[derive(SimpleObject)]
pub struct Profile {
    pub id: ID,
    pub username: String,
    pub bio: Option<String>,
    pub image: Option<String>,
}

impl From<user_pb::Profile> for Profile {
    fn from(p: user_pb::Profile) -> Self {
        Self {
            id: ID(p.id),
            username: p.username,
            bio: non_empty(p.bio),
            image: non_empty(p.image),
        }
    }
}

/// A token and the account it signs in.
#[derive(SimpleObject)]
pub struct AuthPayload {
    pub token: String,
    pub user: User,
}

pub struct Post(pub post_pb::Post);

#[Object]
impl Post {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn slug(&self) -> &str {
        &self.0.slug
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn body(&self) -> &str {
        &self.0.body
    }
    async fn tags(&self) -> &[String] {
        &self.0.tags
    }
    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.created_at.as_ref())
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        datetime(self.0.updated_at.as_ref())
    }
    /// Resolved from user-service, batched with every other author on the page.
    async fn author(&self, ctx: &Context<'_>) -> async_graphql::Result<Profile> {
        let loader = ctx.data::<DataLoader<ProfileLoader>>()?;
        loader
            .load_one(self.0.author_id.clone())
            .await?
            .map(Profile::from)
            .ok_or_else(|| coded(ErrorCode::NotFound, "author not found", None))
    }
}

#[derive(InputObject)]
pub struct RegisterInput {
    pub username: String,
    pub email: String,
    pub password: String,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
}

#[derive(InputObject)]
pub struct CreatePostInput {
    pub title: String,
    #[graphql(default)]
    pub description: String,
    pub body: String,
    #[graphql(default)]
    pub tags: Vec<String>,
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}
