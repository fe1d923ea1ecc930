//! The GraphQL API: schema, the HTTP handler that verifies the caller, and GraphiQL.
//! Resolvers are thin: each calls [`BlogApi`], which holds the rules and the batching.

pub mod graphiql;
pub mod limits;
pub mod types;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ErrorExtensions, ID, Object, Schema, Subscription};
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use oba_kit::ErrorCode;
use oba_kit::auth::{TokenError, TokenVerifier};
use oba_kit::page::PAGE_MAX;
use oba_proto::user::v1 as user_pb;

use crate::client::Clients;
use crate::compose::live::LiveLimits;
use crate::compose::{
    ApiError, ApiResult, BlogApi, Budgets, Degraded, PostFacts, PostInput, PostQuery, RequestScope,
    UserChanges,
};
use crate::peers::PeerChannels;
use crate::viewer::Viewer;
use types::{
    AuthPayload, Comment, CreatePostInput, LoginInput, Notification, NotificationConnection, Post,
    PostConnection, Profile, RegisterInput, ServiceStatus, UpdateMeInput, UpdatePostInput, User,
    post_connection,
};

pub type BlogSchema = Schema<Query, Mutation, Subscription>;

const PAGE_DEFAULT: u32 = 20;

/// Deepest selection a data query may have.
pub const MAX_DEPTH: usize = 12;
/// Most a document may cost: every field 1, a list field its page size times its items.
pub const MAX_COMPLEXITY: usize = 5_000;

pub fn schema() -> BlogSchema {
    Schema::build(Query, Mutation, Subscription)
        // Bounds on what one document may cost, so a hostile query cannot exhaust the edge.
        .extension(limits::DocumentLimits)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The same schema for documents that only introspect (GraphiQL's docs, code generators):
/// the standard introspection query selects deeper than any data query may, and reads no
/// service, so it gets a deeper limit and keeps the others.
pub fn introspection_schema() -> BlogSchema {
    Schema::build(Query, Mutation, Subscription)
        .extension(limits::DocumentLimits)
        .limit_depth(32)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// Whether every operation of a document selects only `__schema`, `__type` and
/// `__typename` at its root. Runs after the nesting check of [`limits`], on text the
/// parser can take.
fn only_introspects(query: &str) -> bool {
    use async_graphql::parser::types::Selection;
    if !query.contains("__schema") && !query.contains("__type") {
        return false;
    }
    if limits::nesting_depth(query) > limits::MAX_NESTING {
        return false;
    }
    let Ok(document) = async_graphql::parser::parse_query(query) else {
        return false;
    };
    document.operations.iter().all(|(_, operation)| {
        operation
            .node
            .selection_set
            .node
            .items
            .iter()
            .all(|item| match &item.node {
                Selection::Field(field) => field.node.name.node.starts_with("__"),
                _ => false,
            })
    })
}

/// The request's composition context.
pub(crate) fn api<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a BlogApi> {
    ctx.data::<BlogApi>()
}

/// A GraphQL error with `extensions.code` (and `extensions.field` for input errors).
pub fn graphql_error(err: ApiError) -> async_graphql::Error {
    async_graphql::Error::new(err.message.clone()).extend_with(|_, ext| {
        ext.set("code", err.code.as_str());
        if let Some(field) = &err.field {
            ext.set("field", field.as_str());
        }
        if let Some(secs) = err.retry_after_secs {
            ext.set("retryAfter", secs);
        }
    })
}

/// `?` on a composed operation inside a resolver.
pub trait OrGraphqlError<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> OrGraphqlError<T> for ApiResult<T> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(graphql_error)
    }
}

/// `first` of a connection: 1 to 100, default 20.
pub(crate) fn page_size(first: Option<i32>) -> async_graphql::Result<u32> {
    let first = first.unwrap_or(PAGE_DEFAULT as i32);
    u32::try_from(first)
        .ok()
        .filter(|n| (1..=PAGE_MAX).contains(n))
        .ok_or_else(|| {
            graphql_error(ApiError::invalid(
                "first",
                format!("must be between 1 and {PAGE_MAX}"),
            ))
        })
}

pub struct Query;

#[Object]
impl Query {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        Ok(api(ctx)?.me().await.gql()?.into())
    }

    /// A user's public profile.
    async fn profile(&self, ctx: &Context<'_>, username: String) -> async_graphql::Result<Profile> {
        Ok(api(ctx)?.profile(&username).await.gql()?.into())
    }

    /// One post by its slug (counts as a view for trending).
    async fn post(&self, ctx: &Context<'_>, slug: String) -> async_graphql::Result<Post> {
        Ok(Post(api(ctx)?.read_post(&slug).await.gql()?))
    }

    /// The hottest posts now, best first (see rank-service for the formula). `first` is 1
    /// to 100 (default 10). Null while rank-service is unavailable.
    #[graphql(complexity = "limits::page_cost(Some(first.unwrap_or(10)), child_complexity)")]
    async fn trending(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
    ) -> async_graphql::Result<Option<Vec<Post>>> {
        let first = page_size(Some(first.unwrap_or(10)))?;
        let api = api(ctx)?;
        let Some(posts) = api.trending(first).await.gql()? else {
            return Ok(None);
        };
        api.prefetch(&posts, list_facts(ctx, false)).await.gql()?;
        Ok(Some(posts.into_iter().map(Post).collect()))
    }

    /// The signed-in user's notifications, newest first.
    #[graphql(complexity = "limits::page_cost(first, child_complexity)")]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        unread_only: Option<bool>,
    ) -> async_graphql::Result<NotificationConnection> {
        let has_previous_page = after.is_some();
        let page = api(ctx)?
            .notifications(page_size(first)?, after, unread_only.unwrap_or(false))
            .await
            .gql()?;
        let mut connection = Connection::new(has_previous_page, page.has_next_page);
        connection.edges.extend(
            page.notifications
                .into_iter()
                .map(|n| Edge::new(n.id.to_string(), Notification(n))),
        );
        Ok(connection)
    }

    /// Posts, newest first, optionally only those with `tag`, by `author` or liked by
    /// `likedBy` (usernames). `first` is 1 to 100 (default 20); `after` is an `endCursor`.
    #[graphql(complexity = "limits::page_cost(first, child_complexity)")]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        tag: Option<String>,
        author: Option<String>,
        liked_by: Option<String>,
    ) -> async_graphql::Result<PostConnection> {
        let has_previous_page = after.is_some();
        let query = PostQuery {
            first: page_size(first)?,
            after,
            tag,
            author,
            liked_by,
            ..PostQuery::default()
        };
        post_page(ctx, query, has_previous_page).await
    }

    /// Posts by the authors the signed-in user follows, newest first.
    #[graphql(complexity = "limits::page_cost(first, child_complexity)")]
    async fn feed(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PostConnection> {
        let has_previous_page = after.is_some();
        let query = PostQuery {
            first: page_size(first)?,
            after,
            feed: true,
            ..PostQuery::default()
        };
        post_page(ctx, query, has_previous_page).await
    }

    /// Every tag in use, most used first.
    async fn tags(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<String>> {
        api(ctx)?.tags().await.gql()
    }

    /// Health and version of every service, asked concurrently. No sign-in needed.
    async fn system_status(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ServiceStatus>> {
        Ok(api(ctx)?
            .system_status()
            .await
            .into_iter()
            .map(|s| ServiceStatus {
                healthy: s.status == "SERVING",
                name: s.name,
                status: s.status,
                version: s.version,
                breaker_open: s.breaker_open,
            })
            .collect())
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates an account and signs it in.
    async fn register(
        &self,
        ctx: &Context<'_>,
        input: RegisterInput,
    ) -> async_graphql::Result<AuthPayload> {
        let session = api(ctx)?
            .register(input.username, input.email, input.password)
            .await
            .gql()?;
        auth_payload(session)
    }

    /// Signs in with email and password.
    async fn login(
        &self,
        ctx: &Context<'_>,
        input: LoginInput,
    ) -> async_graphql::Result<AuthPayload> {
        auth_payload(api(ctx)?.login(input.email, input.password).await.gql()?)
    }

    /// Changes the signed-in user's account; returns a fresh token.
    async fn update_me(
        &self,
        ctx: &Context<'_>,
        input: UpdateMeInput,
    ) -> async_graphql::Result<AuthPayload> {
        let changes = UserChanges {
            username: input.username,
            email: input.email,
            password: input.password,
            bio: input.bio,
            image: input.image,
        };
        auth_payload(api(ctx)?.update_me(changes).await.gql()?)
    }

    async fn follow(&self, ctx: &Context<'_>, username: String) -> async_graphql::Result<Profile> {
        Ok(api(ctx)?.follow(&username).await.gql()?.into())
    }

    async fn unfollow(
        &self,
        ctx: &Context<'_>,
        username: String,
    ) -> async_graphql::Result<Profile> {
        Ok(api(ctx)?.unfollow(&username).await.gql()?.into())
    }

    /// Publishes a post by the signed-in user.
    async fn create_post(
        &self,
        ctx: &Context<'_>,
        input: CreatePostInput,
    ) -> async_graphql::Result<Post> {
        let input = PostInput {
            title: Some(input.title),
            description: Some(input.description),
            body: Some(input.body),
            tags: Some(input.tags),
        };
        Ok(Post(api(ctx)?.create_post(input).await.gql()?))
    }

    /// Changes a post (its author or an admin).
    async fn update_post(
        &self,
        ctx: &Context<'_>,
        slug: String,
        input: UpdatePostInput,
    ) -> async_graphql::Result<Post> {
        let changes = PostInput {
            title: input.title,
            description: input.description,
            body: input.body,
            tags: input.tags,
        };
        Ok(Post(api(ctx)?.update_post(&slug, changes).await.gql()?))
    }

    /// Deletes a post with its comments and likes (its author or an admin).
    async fn delete_post(&self, ctx: &Context<'_>, slug: String) -> async_graphql::Result<bool> {
        api(ctx)?.delete_post(&slug).await.gql()?;
        Ok(true)
    }

    /// Likes a post; liking twice counts once.
    async fn like_post(&self, ctx: &Context<'_>, slug: String) -> async_graphql::Result<Post> {
        Ok(Post(api(ctx)?.like(&slug).await.gql()?))
    }

    /// Marks all the signed-in user's notifications read; returns how many were unread.
    async fn mark_notifications_read(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        api(ctx)?.mark_notifications_read().await.gql()
    }

    /// Takes a like back; unliking a post not liked changes nothing.
    async fn unlike_post(&self, ctx: &Context<'_>, slug: String) -> async_graphql::Result<Post> {
        Ok(Post(api(ctx)?.unlike(&slug).await.gql()?))
    }

    async fn add_comment(
        &self,
        ctx: &Context<'_>,
        slug: String,
        body: String,
    ) -> async_graphql::Result<Comment> {
        Ok(Comment(api(ctx)?.add_comment(&slug, body).await.gql()?))
    }

    /// Deletes a comment (its author, the post's author or an admin).
    async fn delete_comment(
        &self,
        ctx: &Context<'_>,
        slug: String,
        id: ID,
    ) -> async_graphql::Result<bool> {
        api(ctx)?.delete_comment(&slug, &id).await.gql()?;
        Ok(true)
    }
}

/// A page of posts with the per-post facts the document asks for fetched up front.
async fn post_page(
    ctx: &Context<'_>,
    query: PostQuery,
    has_previous_page: bool,
) -> async_graphql::Result<PostConnection> {
    let api = api(ctx)?;
    let page = api.posts(query).await.gql()?;
    api.prefetch(&page.posts, wanted_facts(ctx)).await.gql()?;
    Ok(post_connection(page, has_previous_page))
}

/// Which per-post facts the selection of a post connection mentions.
fn wanted_facts(ctx: &Context<'_>) -> PostFacts {
    list_facts(ctx, true)
}

/// Which per-post facts a selection of posts mentions, as a connection or a plain list.
fn list_facts(ctx: &Context<'_>, connection: bool) -> PostFacts {
    let look = ctx.look_ahead();
    let wants = |field: &str| {
        if connection {
            look.field("edges").field("node").field(field).exists()
                || look.field("nodes").field(field).exists()
        } else {
            look.field(field).exists()
        }
    };
    let comments = if connection {
        [
            look.field("edges").field("node").field("comments"),
            look.field("nodes").field("comments"),
        ]
        .into_iter()
        .find(|l| l.exists())
    } else {
        Some(look.field("comments")).filter(|l| l.exists())
    };
    PostFacts {
        authors: wants("author"),
        likes: wants("likeCount") || wants("likedByMe"),
        comment_counts: wants("commentCount"),
        first_comments: comments.and_then(|look| first_comments_wanted(&look)),
    }
}

/// The page size of the first `comments` selection without `after`, and whether it asks for
/// authors: what a page of posts prefetches for all its posts in one call.
fn first_comments_wanted(look: &async_graphql::Lookahead<'_>) -> Option<(u32, bool)> {
    let field = look.selection_fields().into_iter().next()?;
    let arguments = field.arguments().ok()?;
    if arguments
        .iter()
        .any(|(name, value)| name.as_str() == "after" && *value != async_graphql::Value::Null)
    {
        return None;
    }
    let first = arguments
        .iter()
        .find(|(name, _)| name.as_str() == "first")
        .and_then(|(_, value)| match value {
            async_graphql::Value::Number(n) => n.as_i64(),
            _ => None,
        });
    let first = page_size(first.and_then(|n| i32::try_from(n).ok())).ok()?;
    let authors = look.field("nodes").field("author").exists()
        || look.field("edges").field("node").field("author").exists();
    Some((first, authors))
}

pub struct Subscription;

#[Subscription]
impl Subscription {
    /// The signed-in user's new notifications as they happen (graphql-transport-ws at
    /// `/graphql/ws`; send the token as `{"Authorization": "Bearer <token>"}` in
    /// `connection_init`).
    async fn notification_added(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Notification> + use<>> {
        let limits = ctx.data::<std::sync::Arc<LiveLimits>>()?;
        let (stream, permit) = api(ctx)?.watch_notifications(limits).await.gql()?;
        Ok(stream
            .take_while(|n| std::future::ready(n.is_ok()))
            .filter_map(move |n| {
                // The slot stays taken for as long as the stream lives.
                let _held = &permit;
                let n = n.ok().map(Notification);
                async move { n }
            }))
    }
}

fn auth_payload(session: user_pb::Session) -> async_graphql::Result<AuthPayload> {
    let user = session
        .user
        .ok_or_else(|| graphql_error(ApiError::new(ErrorCode::Internal, "internal error")))?;
    Ok(AuthPayload {
        token: session.token,
        user: user.into(),
    })
}

/// What the GraphQL handler needs besides the schema.
#[derive(Clone)]
pub struct GraphqlState {
    pub schema: BlogSchema,
    pub introspection_schema: BlogSchema,
    pub peers: PeerChannels,
    pub verifier: TokenVerifier,
    pub clients: Clients,
    pub live: std::sync::Arc<LiveLimits>,
    pub budgets: Budgets,
}

/// `POST /graphql`: verifies the caller, then runs the document with a request-scoped
/// [`BlogApi`].
pub async fn graphql_handler(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    let request = match request {
        Ok(request) => request.into_inner(),
        Err(GraphQLRejection(e)) => {
            let status = match e {
                async_graphql::ParseRequestError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return error_response(
                status,
                ErrorCode::BadUserInput,
                &format!("invalid GraphQL request: {e}"),
            );
        }
    };
    let viewer = match Viewer::from_headers(&headers, &state.verifier) {
        Ok(viewer) => viewer,
        Err(e) => {
            return error_response(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                &e.to_string(),
            );
        }
    };
    let schema = if only_introspects(&request.query) {
        &state.introspection_schema
    } else {
        &state.schema
    };
    let degraded = Degraded::default();
    let scope = RequestScope {
        client: state.clients.client(&headers, &extensions),
        deadline: Some(state.budgets.deadline(is_mutation(&request.query))),
        degraded: degraded.clone(),
    };
    let request = request.data(BlogApi::new(state.peers.clone(), viewer, scope));
    let mut response = schema.execute(request).await;
    // One error per optional source the answer went without; its fields are null.
    for service in degraded.services() {
        let mut error = async_graphql::ServerError::new(
            format!("{service} is unavailable; its facts are null in this response"),
            None,
        );
        let mut extensions = async_graphql::ErrorExtensionValues::default();
        extensions.set("code", ErrorCode::Unavailable.as_str());
        extensions.set("service", service);
        error.extensions = Some(extensions);
        response.errors.push(error);
    }
    // Resolver errors all carry a code; the rest are parse and validation errors.
    for error in &mut response.errors {
        let ext = error.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_none() {
            ext.set("code", ErrorCode::BadUserInput.as_str());
        }
    }
    GraphQLResponse::from(response).into_response()
}

/// Whether a document is a mutation (it gets the write budget); a guess from the text,
/// which errs towards the shorter read budget only for documents that are not mutations.
fn is_mutation(query: &str) -> bool {
    query
        .split(['{', '('])
        .next()
        .is_some_and(|head| head.split_whitespace().any(|word| word == "mutation"))
}

fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({
        "data": null,
        "errors": [{ "message": message, "extensions": { "code": code.as_str() } }],
    });
    (status, axum::Json(body)).into_response()
}

/// The `Authorization` (or `authorization`) of a WebSocket client, in the `connection_init`
/// payload or under its `headers`. Present but not a string is refused, as over HTTP.
fn init_authorization(payload: &serde_json::Value) -> Result<Option<&str>, TokenError> {
    let holder = payload.get("headers").unwrap_or(payload);
    match holder
        .get("Authorization")
        .or_else(|| holder.get("authorization"))
    {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => value.as_str().map(Some).ok_or(TokenError::Invalid),
    }
}

/// `GET /graphql/ws`: subscriptions over WebSocket; the caller is verified at
/// `connection_init`, and a bad token closes the connection.
pub async fn graphql_ws(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    protocol: async_graphql_axum::GraphQLProtocol,
    upgrade: axum::extract::WebSocketUpgrade,
) -> Response {
    let scope = RequestScope {
        client: state.clients.client(&headers, &extensions),
        // A connection lives long; each call still has its channel's timeout.
        deadline: None,
        degraded: Degraded::default(),
    };
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            let GraphqlState {
                schema,
                peers,
                verifier,
                live,
                ..
            } = state;
            async_graphql_axum::GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let viewer = init_authorization(&payload)
                        .and_then(|value| Viewer::from_authorization(value, &verifier))
                        .map_err(|e| async_graphql::Error::new(e.to_string()))?;
                    let mut data = async_graphql::Data::default();
                    data.insert(BlogApi::new(peers, viewer, scope));
                    data.insert(live);
                    Ok(data)
                })
                .serve()
        })
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schema.graphql` is the reviewed, committed contract; regenerate it with
    /// `OBA_UPDATE_SCHEMA=1 cargo test -p blog-aggregator`.
    #[test]
    fn committed_schema_matches_the_code() {
        let sdl = schema().sdl();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
        if std::env::var_os("OBA_UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &sdl).expect("write schema.graphql");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == sdl,
            "schema.graphql is stale: run OBA_UPDATE_SCHEMA=1 cargo test -p blog-aggregator"
        );
    }

    #[test]
    fn authorization_is_read_from_connection_init() {
        let payload = serde_json::json!({ "Authorization": "Bearer abc" });
        assert_eq!(init_authorization(&payload), Ok(Some("Bearer abc")));
        let payload = serde_json::json!({ "headers": { "authorization": "Token xyz" } });
        assert_eq!(init_authorization(&payload), Ok(Some("Token xyz")));
        assert_eq!(init_authorization(&serde_json::json!({})), Ok(None));
        let payload = serde_json::json!({ "Authorization": 42 });
        assert_eq!(init_authorization(&payload), Err(TokenError::Invalid));
    }

    #[test]
    fn page_size_is_bounded() {
        assert_eq!(page_size(None).expect("default"), PAGE_DEFAULT);
        assert_eq!(page_size(Some(100)).expect("max"), 100);
        for bad in [0, -1, 101] {
            assert!(page_size(Some(bad)).is_err(), "{bad}");
        }
    }
}
