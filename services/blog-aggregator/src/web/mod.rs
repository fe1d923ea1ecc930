//! Server-rendered web pages at `/`: the third adapter beside GraphQL and REST, over the
//! same composition code ([`BlogApi`]), so the same rules, batching and degradation apply.
//! HTML from `maud` (escaped by construction), article bodies rendered from Markdown and
//! sanitized ([`markdown`]), the stylesheet compiled into the binary: no build step, no CDN,
//! and every page works with JavaScript off.
//!
//! A page whose optional facts are missing (a service down) still renders, with those facts
//! shown as unavailable; only what the page is about (the post, the profile) is required.

pub mod markdown;
mod pages;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::try_join_all;
use oba_kit::ErrorCode;
use oba_kit::auth::TokenVerifier;
use oba_proto::post::v1 as post_pb;
use serde::Deserialize;

use crate::client::Clients;
use crate::compose::{ApiError, BlogApi, Budgets, PostFacts, PostQuery, RequestScope};
use crate::peers::PeerChannels;
use crate::viewer::Viewer;
use pages::{Card, CommentView};

/// Posts on a page of a list.
const PAGE_SIZE: u32 = 20;
/// Comments shown under an article.
const COMMENTS_SHOWN: u32 = 100;
/// The session cookie: the same token the APIs take, kept where scripts cannot read it.
pub const SESSION_COOKIE: &str = "oba_session";

const STYLE: &str = include_str!("../../assets/web/style.css");

/// Scripts, styles, images and form posts from this origin only; images may also come
/// from https (profile pictures are URLs their owners chose).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' https:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

#[derive(Clone)]
pub struct WebState {
    pub peers: PeerChannels,
    pub verifier: TokenVerifier,
    pub clients: Clients,
    pub budgets: Budgets,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/article/{slug}", get(article))
        .route("/profile/{username}", get(profile))
        .route("/web/style.css", get(style))
        .with_state(state)
        .layer(axum::middleware::map_response(secure_headers))
}

/// Every page: no framing, no sniffing, this origin's resources only.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    response
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        STYLE,
    )
        .into_response()
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The composition for a page: its viewer is the session cookie's bearer. A session that
/// no longer verifies (expired, signed with another key) reads as signed out.
pub struct Web(BlogApi);

impl FromRequestParts<WebState> for Web {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, WebError> {
        let viewer = cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|token| {
                Viewer::from_authorization(Some(&format!("Bearer {token}")), &state.verifier).ok()
            })
            .unwrap_or(Viewer::Anonymous);
        let write = parts.method != axum::http::Method::GET;
        let scope = RequestScope {
            client: state.clients.client(&parts.headers, &parts.extensions),
            deadline: Some(state.budgets.deadline(write)),
            degraded: Default::default(),
        };
        Ok(Self(BlogApi::new(state.peers.clone(), viewer, scope)))
    }
}

/// A page that could not be made: shown as a page, with the status that says why.
#[derive(Debug)]
pub struct WebError {
    status: StatusCode,
    message: String,
}

impl WebError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        let status = match e.code {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::BadUserInput => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // Internal details are logged where they happen, never shown.
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "Something went wrong on our side.".to_owned()
        } else {
            e.message
        };
        Self::new(status, message)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        (self.status, pages::error(self.status, &self.message)).into_response()
    }
}

type WebResult<T> = Result<T, WebError>;

/// A list page's query: `?tag=…&page=…`; anything unreadable is a 400 page.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    tag: Option<String>,
    page: Option<String>,
    tab: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, WebError> {
        axum::extract::Query::<Self>::from_request_parts(parts, state)
            .await
            .map(|query| query.0)
            .map_err(|_| WebError::new(StatusCode::BAD_REQUEST, "unreadable query"))
    }
}

impl ListQuery {
    /// The 1-based page asked for, and the offset of its first post.
    fn page(&self) -> WebResult<(u32, u32)> {
        let bad = || WebError::new(StatusCode::BAD_REQUEST, "page must be a number from 1");
        let page = match self.page.as_deref() {
            None | Some("") => 1,
            Some(page) => page.parse::<u32>().map_err(|_| bad())?,
        };
        let offset = page
            .checked_sub(1)
            .and_then(|p| p.checked_mul(PAGE_SIZE))
            .ok_or_else(bad)?;
        Ok((page, offset))
    }
}

/// Posts as cards: authors, like and comment counts fetched for the whole list at once;
/// a count whose service is down is None (shown as unavailable).
async fn cards(api: &BlogApi, posts: Vec<post_pb::Post>) -> WebResult<Vec<Card>> {
    let facts = PostFacts {
        authors: true,
        likes: true,
        comment_counts: true,
        first_comments: None,
    };
    api.prefetch(&posts, facts).await?;
    let cards = try_join_all(posts.into_iter().map(|post| async move {
        let (author, likes, comments) = futures::try_join!(
            api.profile_by_id(&post.author_id),
            api.like_summary(&post.id),
            api.comment_count(&post.id),
        )?;
        Ok::<_, ApiError>(Card {
            post,
            author,
            likes,
            comments,
        })
    }))
    .await?;
    Ok(cards)
}

async fn home(Web(api): Web, query: ListQuery) -> WebResult<Response> {
    let (page, offset) = query.page()?;
    let tag = query.tag.filter(|t| !t.is_empty());
    let posts = PostQuery {
        first: PAGE_SIZE,
        offset,
        tag: tag.clone(),
        ..PostQuery::default()
    };
    let (listed, tags, trending) = futures::join!(api.posts(posts), api.tags(), api.trending(5));
    let listed = listed?;
    let total = listed.total_count;
    let cards = cards(&api, listed.posts).await?;
    // The side facts are optional: without them the page still shows the posts.
    let tags = tags.ok();
    let trending = trending.ok().flatten();
    let home = pages::Home {
        tag: tag.as_deref(),
        cards: &cards,
        page,
        pages: total.div_ceil(u64::from(PAGE_SIZE)),
        tags: tags.as_deref(),
        trending: trending.as_deref(),
    };
    Ok(pages::home(&home).into_response())
}

async fn article(Web(api): Web, Path(slug): Path<String>) -> WebResult<Response> {
    let post = api.read_post(&slug).await?;
    let post_id = post.id.clone();
    let card = cards(&api, vec![post])
        .await?
        .pop()
        .ok_or_else(|| WebError::new(StatusCode::NOT_FOUND, "no such article"))?;
    let comments = match api.comments(&post_id, COMMENTS_SHOWN, None).await {
        Ok(page) => {
            api.prefetch_authors(page.comments.iter().map(|c| c.author_id.clone()))
                .await?;
            let views = try_join_all(page.comments.into_iter().map(|comment| {
                let api = &api;
                async move {
                    let author = api.profile_by_id(&comment.author_id).await?;
                    Ok::<_, ApiError>(CommentView { comment, author })
                }
            }))
            .await?;
            Some(views)
        }
        // The article without its comments is still worth showing.
        Err(e) if e.code == ErrorCode::Unavailable => None,
        Err(e) => return Err(e.into()),
    };
    Ok(pages::article(&card, comments.as_deref()).into_response())
}

async fn profile(
    Web(api): Web,
    Path(username): Path<String>,
    query: ListQuery,
) -> WebResult<Response> {
    let (page, offset) = query.page()?;
    let favorited = query.tab.as_deref() == Some("favorited");
    let person = api.profile(&username).await?;
    let posts = PostQuery {
        first: PAGE_SIZE,
        offset,
        author: (!favorited).then(|| username.clone()),
        liked_by: favorited.then(|| username.clone()),
        ..PostQuery::default()
    };
    let listed = api.posts(posts).await?;
    let total = listed.total_count;
    let cards = cards(&api, listed.posts).await?;
    Ok(pages::profile(&pages::ProfilePage {
        person: &person,
        favorited,
        cards: &cards,
        page,
        pages: total.div_ceil(u64::from(PAGE_SIZE)),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_read_from_its_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "theme=dark; oba_session=abc.def".parse().expect("ascii"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc.def"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn a_page_number_must_be_a_number_from_one() {
        let page = |page: Option<&str>| {
            let query = ListQuery {
                page: page.map(str::to_owned),
                ..ListQuery::default()
            };
            query.page().map_err(|e| e.status)
        };
        assert_eq!(page(None), Ok((1, 0)));
        assert_eq!(page(Some("3")), Ok((3, 40)));
        assert_eq!(page(Some("0")), Err(StatusCode::BAD_REQUEST));
        assert_eq!(page(Some("abc")), Err(StatusCode::BAD_REQUEST));
        assert_eq!(page(Some("4294967295")), Err(StatusCode::BAD_REQUEST));
    }
}
