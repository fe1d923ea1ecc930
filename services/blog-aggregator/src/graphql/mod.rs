//! The GraphQL API: schema, the HTTP handler that verifies the caller, and GraphiQL.

pub mod error;
pub mod loaders;
pub mod types;

use async_graphql::connection::{Connection, Edge};
use async_graphql::dataloader::DataLoader;
use async_graphql::http::GraphiQLSource;
use async_graphql::{Context, EmptySubscription, Object, Schema};
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use oba_kit::ErrorCode;
use oba_kit::auth::TokenVerifier;
use oba_proto::post::v1 as post_pb;
use oba_proto::user::v1 as user_pb;

use crate::peers::Peers;
use crate::viewer::Viewer;
use error::{OrGraphqlError, coded};
use loaders::ProfileLoader;
use types::{AuthPayload, CreatePostInput, LoginInput, Post, RegisterInput, User};

pub type BlogSchema = Schema<Query, Mutation, EmptySubscription>;

/// Largest page a client may ask for.
pub const PAGE_MAX: i32 = 100;
const PAGE_DEFAULT: i32 = 20;

pub fn schema(peers: Peers) -> BlogSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .data(peers)
        // Bounds on what one document may cost, so a hostile query cannot exhaust the edge.
        .limit_depth(12)
        .limit_complexity(5_000)
        .finish()
}

fn peers<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Peers> {
    ctx.data::<Peers>()
}

fn viewer<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Viewer> {
    ctx.data::<Viewer>()
}

pub struct Query;

#[Object]
impl Query {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let claims = viewer(ctx)?.require().gql()?;
        let user = peers(ctx)?
            .users
            .clone()
            .get_user(user_pb::GetUserRequest {
                id: claims.sub.to_string(),
            })
            .await
            .gql()?;
        Ok(user.into_inner().into())
    }

    /// One post by its slug.
    async fn post(&self, ctx: &Context<'_>, slug: String) -> async_graphql::Result<Post> {
        let post = peers(ctx)?
            .posts
            .clone()
            .get_post(post_pb::GetPostRequest { slug })
            .await
            .gql()?;
        Ok(Post(post.into_inner()))
    }

    /// Posts, newest first. `first` is 1 to 100 (default 20); `after` is a previous `endCursor`.
    async fn posts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Post>> {
        let first = first.unwrap_or(PAGE_DEFAULT);
        let first = u32::try_from(first)
            .ok()
            .filter(|n| (1..=PAGE_MAX.unsigned_abs()).contains(n))
            .ok_or_else(|| {
                coded(
                    ErrorCode::BadUserInput,
                    format!("first must be between 1 and {PAGE_MAX}"),
                    Some("first"),
                )
            })?;
        let has_previous_page = after.is_some();
        let page = peers(ctx)?
            .posts
            .clone()
            .list_posts(post_pb::ListPostsRequest {
                first,
                after: after.unwrap_or_default(),
            })
            .await
            .gql()?
            .into_inner();
        let mut connection = Connection::new(has_previous_page, page.has_next_page);
        connection.edges.extend(
            page.posts
                .into_iter()
                .map(|p| Edge::new(p.id.clone(), Post(p))),
        );
        Ok(connection)
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
        let session = peers(ctx)?
            .users
            .clone()
            .register(user_pb::RegisterRequest {
                username: input.username,
                email: input.email,
                password: input.password,
            })
            .await
            .gql()?;
        auth_payload(session.into_inner())
    }

    /// Signs in with email and password.
    async fn login(
        &self,
        ctx: &Context<'_>,
        input: LoginInput,
    ) -> async_graphql::Result<AuthPayload> {
        let session = peers(ctx)?
            .users
            .clone()
            .login(user_pb::LoginRequest {
                email: input.email,
                password: input.password,
            })
            .await
            .gql()?;
        auth_payload(session.into_inner())
    }

    /// Publishes a post by the signed-in user.
    async fn create_post(
        &self,
        ctx: &Context<'_>,
        input: CreatePostInput,
    ) -> async_graphql::Result<Post> {
        let claims = viewer(ctx)?.require().gql()?;
        let post = peers(ctx)?
            .posts
            .clone()
            .create_post(post_pb::CreatePostRequest {
                author_id: claims.sub.to_string(),
                title: input.title,
                description: input.description,
                body: input.body,
                tags: input.tags,
            })
            .await
            .gql()?;
        Ok(Post(post.into_inner()))
    }
}

fn auth_payload(session: user_pb::Session) -> async_graphql::Result<AuthPayload> {
    let user = session
        .user
        .ok_or_else(|| coded(ErrorCode::Internal, "internal error", None))?;
    Ok(AuthPayload {
        token: session.token,
        user: user.into(),
    })
}

/// What the GraphQL handler needs besides the schema.
#[derive(Clone)]
pub struct GraphqlState {
    pub schema: BlogSchema,
    pub peers: Peers,
    pub verifier: TokenVerifier,
}

/// `POST /graphql`: verifies the caller, then runs the document with request-scoped loaders.
pub async fn graphql_handler(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
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
    let request = request.data(viewer).data(DataLoader::new(
        ProfileLoader::new(state.peers.clone()),
        tokio::spawn,
    ));
    let mut response = state.schema.execute(request).await;
    // Resolver errors all carry a code; the rest are parse and validation errors.
    for error in &mut response.errors {
        let ext = error.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_none() {
            ext.set("code", ErrorCode::BadUserInput.as_str());
        }
    }
    GraphQLResponse::from(response).into_response()
}

fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({
        "data": null,
        "errors": [{ "message": message, "extensions": { "code": code.as_str() } }],
    });
    (status, axum::Json(body)).into_response()
}

/// `GET /graphiql`: the in-browser IDE.
pub async fn graphiql() -> impl IntoResponse {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}
