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
pub mod session;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Redirect;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::try_join_all;
use oba_kit::ErrorCode;
use oba_kit::auth::TokenVerifier;
use oba_proto::post::v1 as post_pb;
use serde::Deserialize;
use tower_http::limit::RequestBodyLimitLayer;

use crate::client::Clients;
use crate::compose::{ApiError, BlogApi, Budgets, PostFacts, PostQuery, RequestScope};
use crate::peers::PeerChannels;
use crate::viewer::Viewer;
use pages::{Card, CommentView};
use session::CheckedForm;

/// Posts on a page of a list.
const PAGE_SIZE: u32 = 20;
/// Comments shown under an article.
const COMMENTS_SHOWN: u32 = 100;
/// The largest form body taken (an article is the largest thing a page posts).
const FORM_LIMIT_BYTES: usize = 256 * 1024;

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
    /// Whether the session cookie is `Secure` (sent over https only).
    pub secure_cookies: bool,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/article/{slug}", get(article))
        .route("/article/{slug}/favorite", post(favorite))
        .route("/article/{slug}/unfavorite", post(unfavorite))
        .route("/article/{slug}/comments", post(add_comment))
        .route("/article/{slug}/comments/{id}/delete", post(delete_comment))
        .route("/profile/{username}", get(profile))
        .route("/profile/{username}/follow", post(follow))
        .route("/profile/{username}/unfollow", post(unfollow))
        .route("/login", get(login_page).post(login))
        .route("/register", get(register_page).post(register))
        .route("/logout", post(logout))
        .route("/web/style.css", get(style))
        .with_state(state)
        .layer(axum::middleware::from_fn(session::csrf_cookie))
        .layer(RequestBodyLimitLayer::new(FORM_LIMIT_BYTES))
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

/// The composition for a page, and what every page shows of the visit: its viewer is the
/// session cookie's bearer (a session that no longer verifies — expired, signed with
/// another key — reads as signed out).
pub struct Web {
    api: BlogApi,
    chrome: Chrome,
    verifier: TokenVerifier,
    secure_cookies: bool,
}

/// What the frame of every page needs: who is signed in, and the token its forms carry.
pub struct Chrome {
    pub username: Option<String>,
    pub csrf: String,
}

impl FromRequestParts<WebState> for Web {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, WebError> {
        let viewer = session::cookie(&parts.headers, session::SESSION_COOKIE)
            .and_then(|token| {
                Viewer::from_authorization(Some(&format!("Bearer {token}")), &state.verifier).ok()
            })
            .unwrap_or(Viewer::Anonymous);
        let chrome = Chrome {
            username: viewer.require().ok().map(|claims| claims.username.clone()),
            csrf: parts
                .extensions
                .get::<session::CsrfToken>()
                .map(|token| token.0.clone())
                .unwrap_or_default(),
        };
        let write = parts.method != axum::http::Method::GET;
        let scope = RequestScope {
            client: state.clients.client(&parts.headers, &parts.extensions),
            deadline: Some(state.budgets.deadline(write)),
            degraded: Default::default(),
        };
        Ok(Self {
            api: BlogApi::new(state.peers.clone(), viewer, scope),
            chrome,
            verifier: state.verifier.clone(),
            secure_cookies: state.secure_cookies,
        })
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
        // Rendered without the visit's chrome: the error may be that there is none.
        let chrome = Chrome {
            username: None,
            csrf: String::new(),
        };
        (
            self.status,
            pages::error(&chrome, self.status, &self.message),
        )
            .into_response()
    }
}

type WebResult<T> = Result<T, WebError>;

/// A list page's query: `?tag=…&page=…`; anything unreadable is a 400 page.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    tag: Option<String>,
    page: Option<String>,
    tab: Option<String>,
    /// `?feed=1`: only posts by people the viewer follows.
    feed: Option<String>,
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

async fn home(web: Web, query: ListQuery) -> WebResult<Response> {
    let (page, offset) = query.page()?;
    let tag = query.tag.filter(|t| !t.is_empty());
    let feed = query.feed.is_some() && web.chrome.username.is_some();
    let api = &web.api;
    let posts = PostQuery {
        first: PAGE_SIZE,
        offset,
        tag: tag.clone(),
        feed,
        ..PostQuery::default()
    };
    let (listed, tags, trending) = futures::join!(api.posts(posts), api.tags(), api.trending(5));
    let listed = listed?;
    let total = listed.total_count;
    let cards = cards(api, listed.posts).await?;
    // The side facts are optional: without them the page still shows the posts.
    let tags = tags.ok();
    let trending = trending.ok().flatten();
    let home = pages::Home {
        feed,
        tag: tag.as_deref(),
        cards: &cards,
        page,
        pages: total.div_ceil(u64::from(PAGE_SIZE)),
        tags: tags.as_deref(),
        trending: trending.as_deref(),
    };
    Ok(pages::home(&web.chrome, &home).into_response())
}

async fn article(web: Web, Path(slug): Path<String>) -> WebResult<Response> {
    let api = &web.api;
    let post = api.read_post(&slug).await?;
    let post_id = post.id.clone();
    let card = cards(api, vec![post])
        .await?
        .pop()
        .ok_or_else(|| WebError::new(StatusCode::NOT_FOUND, "no such article"))?;
    let comments = match api.comments(&post_id, COMMENTS_SHOWN, None).await {
        Ok(page) => {
            api.prefetch_authors(page.comments.iter().map(|c| c.author_id.clone()))
                .await?;
            let views = try_join_all(page.comments.into_iter().map(|comment| async move {
                let author = api.profile_by_id(&comment.author_id).await?;
                Ok::<_, ApiError>(CommentView { comment, author })
            }))
            .await?;
            Some(views)
        }
        // The article without its comments is still worth showing.
        Err(e) if e.code == ErrorCode::Unavailable => None,
        Err(e) => return Err(e.into()),
    };
    Ok(pages::article(&web.chrome, &card, comments.as_deref()).into_response())
}

async fn profile(web: Web, Path(username): Path<String>, query: ListQuery) -> WebResult<Response> {
    let api = &web.api;
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
    let cards = cards(api, listed.posts).await?;
    Ok(pages::profile(
        &web.chrome,
        &pages::ProfilePage {
            person: &person,
            favorited,
            cards: &cards,
            page,
            pages: total.div_ceil(u64::from(PAGE_SIZE)),
        },
    )
    .into_response())
}

// ---- forms: each checks its CSRF token first, changes something, and redirects (303) to
// the page that shows the change; a signed-out visitor is sent to sign in. ----

/// Where a form's change is shown; `303 See Other`, so a reload does not post again.
fn to(path: String) -> Response {
    Redirect::to(&path).into_response()
}

/// The error of a write, or the sign-in page when the visitor is not signed in.
fn refused(e: ApiError) -> Response {
    if e.code == ErrorCode::Unauthenticated {
        return Redirect::to("/login").into_response();
    }
    WebError::from(e).into_response()
}

/// A form with no fields but its CSRF token.
#[derive(Deserialize)]
pub struct Empty {}

fn article_path(slug: &str) -> String {
    format!("/article/{}", pages::urlencode(slug))
}

async fn favorite(web: Web, Path(slug): Path<String>, _: CheckedForm<Empty>) -> Response {
    match web.api.like(&slug).await {
        Ok(post) => to(article_path(&post.slug)),
        Err(e) => refused(e),
    }
}

async fn unfavorite(web: Web, Path(slug): Path<String>, _: CheckedForm<Empty>) -> Response {
    match web.api.unlike(&slug).await {
        Ok(post) => to(article_path(&post.slug)),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize)]
pub struct CommentForm {
    body: String,
}

async fn add_comment(
    web: Web,
    Path(slug): Path<String>,
    CheckedForm(form): CheckedForm<CommentForm>,
) -> Response {
    match web.api.add_comment(&slug, form.body).await {
        Ok(comment) => to(format!("{}#comment-{}", article_path(&slug), comment.id)),
        Err(e) => refused(e),
    }
}

async fn delete_comment(
    web: Web,
    Path((slug, id)): Path<(String, String)>,
    _: CheckedForm<Empty>,
) -> Response {
    match web.api.delete_comment(&slug, &id).await {
        Ok(_) => to(format!("{}#comments-title", article_path(&slug))),
        Err(e) => refused(e),
    }
}

fn profile_path(username: &str) -> String {
    format!("/profile/{}", pages::urlencode(username))
}

async fn follow(web: Web, Path(username): Path<String>, _: CheckedForm<Empty>) -> Response {
    match web.api.follow(&username).await {
        Ok(_) => to(profile_path(&username)),
        Err(e) => refused(e),
    }
}

async fn unfollow(web: Web, Path(username): Path<String>, _: CheckedForm<Empty>) -> Response {
    match web.api.unfollow(&username).await {
        Ok(_) => to(profile_path(&username)),
        Err(e) => refused(e),
    }
}

// ---- signing in and out ----

async fn login_page(web: Web) -> Response {
    pages::sign_in(&web.chrome, pages::SignIn::Login, None, "", "").into_response()
}

async fn register_page(web: Web) -> Response {
    pages::sign_in(&web.chrome, pages::SignIn::Register, None, "", "").into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
}

#[derive(Deserialize)]
pub struct RegisterForm {
    username: String,
    email: String,
    password: String,
}

/// Signs the browser in with `session`'s token, or shows the form again with the error
/// (never an error page: the visitor fixes the form and sends it again).
fn signed_in(
    web: &Web,
    which: pages::SignIn,
    session: Result<oba_proto::user::v1::Session, ApiError>,
    username: &str,
    email: &str,
) -> Response {
    let error = match session {
        Ok(session) => {
            // The cookie lives as long as the token it holds.
            let max_age = web
                .verifier
                .verify(&session.token)
                .map_or(0, |claims| claims.exp - chrono::Utc::now().timestamp());
            return match session::session_cookie(&session.token, max_age, web.secure_cookies) {
                Some(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response(),
                None => WebError::new(StatusCode::INTERNAL_SERVER_ERROR, "unusable token")
                    .into_response(),
            };
        }
        Err(e) => e,
    };
    let status = match error.code {
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let message = match error.code {
        ErrorCode::Unauthenticated => "Wrong email or password.".to_owned(),
        ErrorCode::Internal => "Something went wrong on our side.".to_owned(),
        _ => match &error.field {
            Some(field) => format!("{field}: {}", error.message),
            None => error.message,
        },
    };
    (
        status,
        pages::sign_in(&web.chrome, which, Some(&message), username, email),
    )
        .into_response()
}

async fn login(web: Web, CheckedForm(form): CheckedForm<LoginForm>) -> Response {
    let session = web.api.login(form.email.clone(), form.password).await;
    signed_in(&web, pages::SignIn::Login, session, "", &form.email)
}

async fn register(web: Web, CheckedForm(form): CheckedForm<RegisterForm>) -> Response {
    let session = web
        .api
        .register(form.username.clone(), form.email.clone(), form.password)
        .await;
    signed_in(
        &web,
        pages::SignIn::Register,
        session,
        &form.username,
        &form.email,
    )
}

async fn logout(web: Web, _: CheckedForm<Empty>) -> Response {
    (
        [(
            header::SET_COOKIE,
            session::cleared_session(web.secure_cookies),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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
