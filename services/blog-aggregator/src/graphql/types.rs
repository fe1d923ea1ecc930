//! The GraphQL object and input types, named as in the protos: `User`, `Profile`, `Post`,
//! `Comment`.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use oba_proto::comment::v1 as comment_pb;
use oba_proto::notification::v1 as notification_pb;
use oba_proto::post::v1 as post_pb;
use oba_proto::time::datetime;
use oba_proto::user::v1 as user_pb;

use super::{OrGraphqlError, api, page_size};

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
    /// Whether the signed-in viewer follows this user (false when anonymous).
    pub following: bool,
}

impl From<user_pb::Profile> for Profile {
    fn from(p: user_pb::Profile) -> Self {
        Self {
            id: ID(p.id),
            username: p.username,
            bio: non_empty(p.bio),
            image: non_empty(p.image),
            following: p.following,
        }
    }
}

/// A token and the account it signs in.
#[derive(SimpleObject)]
pub struct AuthPayload {
    pub token: String,
    pub user: User,
}

/// Extra fields of a paginated list.
#[derive(SimpleObject)]
pub struct ListInfo {
    /// Every item matching the query, not just this page.
    pub total_count: u64,
}

pub type PostConnection = Connection<String, Post, ListInfo>;
pub type CommentConnection = Connection<String, Comment, ListInfo>;

pub fn post_connection(page: post_pb::PostPage, has_previous_page: bool) -> PostConnection {
    let mut connection = Connection::with_additional_fields(
        has_previous_page,
        page.has_next_page,
        ListInfo {
            total_count: page.total_count,
        },
    );
    connection.edges.extend(
        page.posts
            .into_iter()
            .map(|p| Edge::new(p.id.clone(), Post(p))),
    );
    connection
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
    /// From user-service, batched with every other author in the response.
    async fn author(&self, ctx: &Context<'_>) -> async_graphql::Result<Profile> {
        Ok(api(ctx)?
            .profile_by_id(&self.0.author_id)
            .await
            .gql()?
            .into())
    }
    /// From like-service, batched across the response; null while like-service is
    /// unavailable (the response then carries an UNAVAILABLE error naming it).
    async fn like_count(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<u64>> {
        Ok(api(ctx)?
            .like_summary(&self.0.id)
            .await
            .gql()?
            .map(|s| s.count))
    }
    /// Whether the signed-in viewer likes this post (false when anonymous); null while
    /// like-service is unavailable.
    async fn liked_by_me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<bool>> {
        Ok(api(ctx)?
            .like_summary(&self.0.id)
            .await
            .gql()?
            .map(|s| s.liked_by_viewer))
    }
    /// From comment-service, batched across the response; null while comment-service is
    /// unavailable.
    async fn comment_count(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<u64>> {
        api(ctx)?.comment_count(&self.0.id).await.gql()
    }
    /// Comments, oldest first. `first` is 1 to 100 (default 20).
    #[graphql(complexity = "super::limits::page_cost(first, child_complexity)")]
    async fn comments(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<CommentConnection> {
        let has_previous_page = after.is_some();
        let api = api(ctx)?;
        let first = page_size(first)?;
        // A first page comes from the response's batch (prefetched for a whole page of posts).
        let page = match after {
            None => api.first_comments(&self.0.id, first).await.gql()?,
            Some(after) => api.comments(&self.0.id, first, Some(after)).await.gql()?,
        };
        let look = ctx.look_ahead();
        if look.field("edges").field("node").field("author").exists()
            || look.field("nodes").field("author").exists()
        {
            api.prefetch_authors(page.comments.iter().map(|c| c.author_id.clone()))
                .await
                .gql()?;
        }
        let mut connection = Connection::with_additional_fields(
            has_previous_page,
            page.has_next_page,
            ListInfo {
                total_count: page.total_count,
            },
        );
        connection.edges.extend(
            page.comments
                .into_iter()
                .map(|c| Edge::new(c.id.to_string(), Comment(c))),
        );
        Ok(connection)
    }
}

pub struct Comment(pub comment_pb::Comment);

#[Object]
impl Comment {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn body(&self) -> &str {
        &self.0.body
    }
    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.created_at.as_ref())
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        datetime(self.0.updated_at.as_ref())
    }
    async fn author(&self, ctx: &Context<'_>) -> async_graphql::Result<Profile> {
        Ok(api(ctx)?
            .profile_by_id(&self.0.author_id)
            .await
            .gql()?
            .into())
    }
}

/// Health and version of one service.
#[derive(SimpleObject)]
pub struct ServiceStatus {
    pub name: String,
    /// `SERVING`, `NOT_SERVING`, `UNREACHABLE`, `TIMED_OUT` or `UNKNOWN`.
    pub status: String,
    pub healthy: bool,
    pub version: Option<String>,
    /// Whether the edge's circuit breaker for this service is open: calls are refused at
    /// once until a probe call succeeds.
    pub breaker_open: bool,
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

/// Fields to change; omitted ones stay. An empty `bio` or `image` clears it.
#[derive(InputObject)]
pub struct UpdateMeInput {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub bio: Option<String>,
    pub image: Option<String>,
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

/// Fields to change; omitted ones stay. `tags`, when given, replaces every tag.
#[derive(InputObject)]
pub struct UpdatePostInput {
    pub title: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum NotificationKind {
    /// The actor followed you.
    Followed,
    /// The actor commented on your post.
    Commented,
    /// The actor liked your post.
    Liked,
    /// The actor, whom you follow, published a post.
    Published,
}

pub type NotificationConnection = Connection<String, Notification>;

pub struct Notification(pub notification_pb::Notification);

#[Object]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn kind(&self) -> NotificationKind {
        match self.0.kind() {
            notification_pb::Kind::Followed => NotificationKind::Followed,
            notification_pb::Kind::Commented => NotificationKind::Commented,
            notification_pb::Kind::Liked => NotificationKind::Liked,
            notification_pb::Kind::Published | notification_pb::Kind::Unspecified => {
                NotificationKind::Published
            }
        }
    }
    /// Who did it.
    async fn actor(&self, ctx: &Context<'_>) -> async_graphql::Result<Profile> {
        Ok(api(ctx)?
            .profile_by_id(&self.0.actor_id)
            .await
            .gql()?
            .into())
    }
    /// The post it is about (none for follows, or when the post is gone).
    async fn post(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Post>> {
        if self.0.post_id.is_empty() {
            return Ok(None);
        }
        Ok(api(ctx)?.post_by_id(&self.0.post_id).await.gql()?.map(Post))
    }
    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.created_at.as_ref())
    }
    async fn read(&self) -> bool {
        self.0.read
    }
}
