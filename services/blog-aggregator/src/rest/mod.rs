//! The RealWorld ("Conduit") REST API under `/api`, so any RealWorld front end runs against
//! oba unchanged. A thin adapter over [`BlogApi`]: same rules, same batching as GraphQL.

pub mod dto;
pub mod error;

use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::future::try_join_all;
use oba_kit::ErrorCode;
use oba_kit::auth::TokenVerifier;
use oba_kit::page::page_size;
use oba_proto::post::v1 as post_pb;
use oba_proto::user::v1 as user_pb;
use serde_json::{Value, json};

use crate::client::Clients;
use crate::compose::{
    ApiError, BlogApi, Budgets, Degraded, PostFacts, PostInput, PostQuery, RequestScope,
    UserChanges,
};
use crate::peers::PeerChannels;
use crate::viewer::Viewer;
use dto::{
    Article, ArticleEnvelope, ArticleQuery, Comment, CommentEnvelope, LoginUser, NewArticle,
    NewComment, NewUser, Profile, UpdateArticle, UpdateUser, User, UserEnvelope,
};
use error::{RestError, RestResult};

const LIMIT_DEFAULT: u32 = 20;

#[derive(Clone)]
pub struct RestState {
    pub peers: PeerChannels,
    pub verifier: TokenVerifier,
    pub clients: Clients,
    pub budgets: Budgets,
}

/// The header naming the services whose optional facts a response went without (their
/// counts and flags then have RealWorld's defaults: 0, false).
pub const DEGRADED_HEADER: &str = "oba-degraded";

/// Middleware: gives the request a [`Degraded`] record and, after it is answered, names
/// what it went without in [`DEGRADED_HEADER`].
async fn report_degraded(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let degraded = Degraded::default();
    request.extensions_mut().insert(degraded.clone());
    let mut response = next.run(request).await;
    let services = degraded.services();
    if !services.is_empty()
        && let Ok(value) = axum::http::HeaderValue::from_str(&services.join(", "))
    {
        response.headers_mut().insert(DEGRADED_HEADER, value);
    }
    response
}

/// The routes, nested under `/api` (RealWorld's `APIURL` includes it).
pub fn router(state: RestState) -> Router {
    let api = Router::new()
        .route("/users", post(register))
        .route("/users/login", post(login))
        .route("/user", get(current_user).put(update_user))
        .route("/profiles/{username}", get(profile))
        .route("/profiles/{username}/follow", post(follow).delete(unfollow))
        .route("/articles", get(list_articles).post(create_article))
        .route("/articles/feed", get(feed))
        .route(
            "/articles/{slug}",
            get(article).put(update_article).delete(delete_article),
        )
        .route(
            "/articles/{slug}/favorite",
            post(favorite).delete(unfavorite),
        )
        .route("/articles/{slug}/comments", get(comments).post(add_comment))
        .route("/articles/{slug}/comments/{id}", delete(delete_comment))
        .route("/tags", get(tags))
        .fallback(|| async { RestError::new(StatusCode::NOT_FOUND, "body", "no such endpoint") })
        .with_state(state)
        .layer(axum::middleware::from_fn(report_degraded));
    Router::new().nest("/api", api)
}

/// The caller's composition context; a present but invalid token is a 401.
pub struct Api(BlogApi);

impl FromRequestParts<RestState> for Api {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &RestState) -> Result<Self, RestError> {
        let viewer = Viewer::from_headers(&parts.headers, &state.verifier)
            .map_err(|e| RestError::new(StatusCode::UNAUTHORIZED, "body", e.to_string()))?;
        let write = parts.method != axum::http::Method::GET;
        let scope = RequestScope {
            client: state.clients.client(&parts.headers, &parts.extensions),
            deadline: Some(state.budgets.deadline(write)),
            // Shared with `report_degraded`, which marks the response.
            degraded: parts
                .extensions
                .get::<Degraded>()
                .cloned()
                .unwrap_or_default(),
        };
        Ok(Self(BlogApi::new(state.peers.clone(), viewer, scope)))
    }
}

/// A JSON body whose rejection (bad JSON, wrong shape) is a RealWorld error, not a panic.
pub struct Body<T>(T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    Json<T>: axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = RestError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, RestError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// A query string whose rejection (`limit=abc`) is a RealWorld 422, not plain text.
pub struct Query<T>(T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, RestError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    RestError::new(StatusCode::UNPROCESSABLE_ENTITY, "query", e.body_text())
                })?;
        Ok(Self(value))
    }
}

fn user_response(session: user_pb::Session) -> RestResult<Json<Value>> {
    let user = session
        .user
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "internal error"))?;
    Ok(Json(json!({ "user": User::new(user, session.token) })))
}

async fn register(Api(api): Api, Body(body): Body<UserEnvelope<NewUser>>) -> RestResult<Response> {
    let u = body.user;
    let session = api.register(u.username, u.email, u.password).await?;
    Ok((StatusCode::CREATED, user_response(session)?).into_response())
}

async fn login(
    Api(api): Api,
    Body(body): Body<UserEnvelope<LoginUser>>,
) -> RestResult<Json<Value>> {
    user_response(api.login(body.user.email, body.user.password).await?)
}

async fn current_user(Api(api): Api, parts: axum::http::HeaderMap) -> RestResult<Json<Value>> {
    let user = api.me().await?;
    // RealWorld echoes the caller's token back with the user.
    let token = parts
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, t)| t.trim().to_owned())
        .unwrap_or_default();
    Ok(Json(json!({ "user": User::new(user, token) })))
}

async fn update_user(
    Api(api): Api,
    Body(body): Body<UserEnvelope<UpdateUser>>,
) -> RestResult<Json<Value>> {
    let u = body.user;
    let changes = UserChanges {
        username: u.username,
        email: u.email,
        password: u.password,
        bio: u.bio,
        image: u.image,
    };
    user_response(api.update_me(changes).await?)
}

async fn profile(Api(api): Api, Path(username): Path<String>) -> RestResult<Json<Value>> {
    Ok(Json(
        json!({ "profile": Profile::from(api.profile(&username).await?) }),
    ))
}

async fn follow(Api(api): Api, Path(username): Path<String>) -> RestResult<Json<Value>> {
    Ok(Json(
        json!({ "profile": Profile::from(api.follow(&username).await?) }),
    ))
}

async fn unfollow(Api(api): Api, Path(username): Path<String>) -> RestResult<Json<Value>> {
    Ok(Json(
        json!({ "profile": Profile::from(api.unfollow(&username).await?) }),
    ))
}

/// Articles with their authors and likes, fetched for the whole list in one call per service.
async fn articles(api: &BlogApi, posts: Vec<post_pb::Post>) -> RestResult<Vec<Article>> {
    let facts = PostFacts {
        authors: true,
        likes: true,
        comment_counts: false,
        first_comments: None,
    };
    api.prefetch(&posts, facts).await?;
    let articles = try_join_all(posts.into_iter().map(|post| async move {
        let (author, likes) = futures::try_join!(
            api.profile_by_id(&post.author_id),
            api.like_summary(&post.id)
        )?;
        // RealWorld needs the counts: without like-service they default (0, not favorited)
        // and the response is marked degraded.
        Ok::<_, ApiError>(Article::new(post, author, likes.unwrap_or_default()))
    }))
    .await?;
    Ok(articles)
}

async fn one_article(api: &BlogApi, post: post_pb::Post) -> RestResult<Json<Value>> {
    let article = articles(api, vec![post]).await?.pop();
    Ok(Json(json!({ "article": article })))
}

async fn article_list(api: &BlogApi, query: PostQuery) -> RestResult<Json<Value>> {
    let filtered_by_user = query.author.is_some() || query.liked_by.is_some();
    let page = match api.posts(query).await {
        Ok(page) => page,
        // RealWorld answers an unknown author or liker with an empty list, not a 404.
        Err(e) if e.code == ErrorCode::NotFound && filtered_by_user => post_pb::PostPage::default(),
        Err(e) => return Err(e.into()),
    };
    let count = page.total_count;
    let articles = articles(api, page.posts).await?;
    Ok(Json(
        json!({ "articles": articles, "articlesCount": count }),
    ))
}

fn page(q: &ArticleQuery) -> RestResult<(u32, u32)> {
    let limit = q.limit.unwrap_or(LIMIT_DEFAULT);
    page_size(limit).map_err(|e| RestError::from(ApiError::from(e)))?;
    Ok((limit, q.offset.unwrap_or(0)))
}

async fn list_articles(Api(api): Api, Query(q): Query<ArticleQuery>) -> RestResult<Json<Value>> {
    let (first, offset) = page(&q)?;
    let query = PostQuery {
        first,
        offset,
        tag: q.tag,
        author: q.author,
        liked_by: q.favorited,
        ..PostQuery::default()
    };
    article_list(&api, query).await
}

async fn feed(Api(api): Api, Query(q): Query<ArticleQuery>) -> RestResult<Json<Value>> {
    let (first, offset) = page(&q)?;
    let query = PostQuery {
        first,
        offset,
        feed: true,
        ..PostQuery::default()
    };
    article_list(&api, query).await
}

async fn article(Api(api): Api, Path(slug): Path<String>) -> RestResult<Json<Value>> {
    let post = api.read_post(&slug).await?;
    one_article(&api, post).await
}

async fn create_article(
    Api(api): Api,
    Body(body): Body<ArticleEnvelope<NewArticle>>,
) -> RestResult<Response> {
    let a = body.article;
    let input = PostInput {
        title: Some(a.title),
        description: Some(a.description),
        body: Some(a.body),
        tags: Some(a.tag_list),
    };
    let post = api.create_post(input).await?;
    Ok((StatusCode::CREATED, one_article(&api, post).await?).into_response())
}

async fn update_article(
    Api(api): Api,
    Path(slug): Path<String>,
    Body(body): Body<ArticleEnvelope<UpdateArticle>>,
) -> RestResult<Json<Value>> {
    let a = body.article;
    let changes = PostInput {
        title: a.title,
        description: a.description,
        body: a.body,
        tags: a.tag_list,
    };
    let post = api.update_post(&slug, changes).await?;
    one_article(&api, post).await
}

async fn delete_article(Api(api): Api, Path(slug): Path<String>) -> RestResult<StatusCode> {
    api.delete_post(&slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn favorite(Api(api): Api, Path(slug): Path<String>) -> RestResult<Json<Value>> {
    let post = api.like(&slug).await?;
    one_article(&api, post).await
}

async fn unfavorite(Api(api): Api, Path(slug): Path<String>) -> RestResult<Json<Value>> {
    let post = api.unlike(&slug).await?;
    one_article(&api, post).await
}

async fn comments(Api(api): Api, Path(slug): Path<String>) -> RestResult<Json<Value>> {
    let post = api.post(&slug).await?;
    // RealWorld returns every comment at once: walk the pages.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = api
            .comments(&post.id, oba_kit::page::PAGE_MAX, after)
            .await?;
        after = Some(page.end_cursor.clone());
        all.extend(page.comments);
        if !page.has_next_page {
            break;
        }
    }
    api.prefetch_authors(all.iter().map(|c| c.author_id.clone()))
        .await?;
    let comments = try_join_all(all.into_iter().map(|c| {
        let api = &api;
        async move {
            let author = api.profile_by_id(&c.author_id).await?;
            Ok::<_, ApiError>(Comment::new(c, author))
        }
    }))
    .await?;
    Ok(Json(json!({ "comments": comments })))
}

async fn add_comment(
    Api(api): Api,
    Path(slug): Path<String>,
    Body(body): Body<CommentEnvelope<NewComment>>,
) -> RestResult<Json<Value>> {
    let comment = api.add_comment(&slug, body.comment.body).await?;
    let author = api.profile_by_id(&comment.author_id).await?;
    Ok(Json(json!({ "comment": Comment::new(comment, author) })))
}

async fn delete_comment(
    Api(api): Api,
    Path((slug, id)): Path<(String, String)>,
) -> RestResult<StatusCode> {
    api.delete_comment(&slug, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tags(Api(api): Api) -> RestResult<Json<Value>> {
    Ok(Json(json!({ "tags": api.tags().await? })))
}
