//! Server-rendered web pages at `/`: the third adapter beside GraphQL and REST, over the
//! same composition code ([`BlogApi`]), so the same rules, batching and degradation apply.
//! HTML from `maud` (escaped by construction), article bodies rendered from Markdown and
//! sanitized ([`markdown`]), the stylesheet compiled into the binary: no build step, no CDN,
//! and every page works with JavaScript off.
//!
//! A page whose optional facts are missing (a service down) still renders, with those facts
//! shown as unavailable; only what the page is about (the post, the profile) is required.

mod forms;
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

/// Posts on a page of a list.
const PAGE_SIZE: u32 = 20;
/// Comments shown under an article.
const COMMENTS_SHOWN: u32 = 100;
/// The largest form body taken (an article is the largest thing a page posts).
const FORM_LIMIT_BYTES: usize = 256 * 1024;

const STYLE: &str = include_str!("../../assets/web/style.css");
const SCRIPT: &str = include_str!("../../assets/web/live.js");
/// Notifications listed on their page (and the most the unread badge counts exactly).
const NOTIFICATIONS_SHOWN: u32 = 20;

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
    /// The caps on live streams, shared with GraphQL's subscriptions.
    pub live: std::sync::Arc<crate::compose::live::LiveLimits>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/article/{slug}", get(article))
        .route("/article/{slug}/favorite", post(forms::favorite))
        .route("/article/{slug}/unfavorite", post(forms::unfavorite))
        .route("/article/{slug}/comments", post(forms::add_comment))
        .route(
            "/article/{slug}/comments/{id}/delete",
            post(forms::delete_comment),
        )
        .route("/article/{slug}/delete", post(forms::delete_post))
        .route(
            "/editor",
            get(forms::new_post_page).post(forms::create_post),
        )
        .route(
            "/editor/{slug}",
            get(forms::edit_post_page).post(forms::update_post),
        )
        .route("/profile/{username}", get(profile))
        .route("/profile/{username}/follow", post(forms::follow))
        .route("/profile/{username}/unfollow", post(forms::unfollow))
        .route(
            "/settings",
            get(forms::settings_page).post(forms::update_settings),
        )
        .route("/notifications", get(notifications))
        .route("/notifications/read", post(forms::mark_notifications_read))
        .route("/notifications/live", get(live_notifications))
        .route("/login", get(forms::login_page).post(forms::login))
        .route("/register", get(forms::register_page).post(forms::register))
        .route("/logout", post(forms::logout))
        .route("/web/style.css", get(style))
        .route("/web/live.js", get(script))
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

async fn script() -> Response {
    crate::asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    crate::asset("text/css; charset=utf-8", STYLE)
}

/// The composition for a page, and what every page shows of the visit: its viewer is the
/// session cookie's bearer (a session that no longer verifies — expired, signed with
/// another key — reads as signed out).
pub struct Web {
    api: BlogApi,
    chrome: Chrome,
    verifier: TokenVerifier,
    secure_cookies: bool,
    live: std::sync::Arc<crate::compose::live::LiveLimits>,
}

/// What the frame of every page needs: who is signed in, the token its forms carry, and
/// the signed-in visitor's unread notifications (None when unknown: signed out, a form's
/// answer, or notification-service unavailable).
pub struct Chrome {
    pub username: Option<String>,
    pub csrf: String,
    pub unread: Option<Unread>,
}

/// Unread notifications: how many, up to [`NOTIFICATIONS_SHOWN`], and whether more.
#[derive(Debug, Clone, Copy)]
pub struct Unread {
    pub count: usize,
    pub more: bool,
}

impl FromRequestParts<WebState> for Web {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, WebError> {
        let write = parts.method != axum::http::Method::GET;
        // A page shows the badge; a form's answer is a redirect and shows nothing.
        Ok(Self::of(parts, state, Some(state.budgets.deadline(write)), !write).await)
    }
}

/// [`Web`] for a stream that stays open (the badge's events): no time budget (each call
/// still has its channel's timeout), and no page around it.
pub struct LiveWeb(Web);

impl FromRequestParts<WebState> for LiveWeb {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, WebError> {
        Ok(Self(Web::of(parts, state, None, false).await))
    }
}

impl Web {
    async fn of(
        parts: &Parts,
        state: &WebState,
        deadline: Option<std::time::Instant>,
        with_badge: bool,
    ) -> Self {
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
            unread: None,
        };
        let scope = RequestScope {
            client: state.clients.client(&parts.headers, &parts.extensions),
            deadline,
            degraded: Default::default(),
        };
        let api = BlogApi::new(state.peers.clone(), viewer, scope);
        let mut chrome = chrome;
        if with_badge && chrome.username.is_some() {
            chrome.unread = api
                .notifications(NOTIFICATIONS_SHOWN, None, true)
                .await
                .ok()
                .map(|page| Unread {
                    count: page.notifications.len(),
                    more: page.has_next_page,
                });
        }
        Self {
            api,
            chrome,
            verifier: state.verifier.clone(),
            secure_cookies: state.secure_cookies,
            live: state.live.clone(),
        }
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
            unread: None,
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

async fn notifications(web: Web) -> WebResult<Response> {
    if web.chrome.username.is_none() {
        return Ok(Redirect::to("/login").into_response());
    }
    let api = &web.api;
    let page = api.notifications(NOTIFICATIONS_SHOWN, None, false).await?;
    api.prefetch_authors(page.notifications.iter().map(|n| n.actor_id.clone()))
        .await?;
    let views = try_join_all(
        page.notifications
            .into_iter()
            .map(|notification| async move {
                let actor = api.profile_by_id(&notification.actor_id).await?;
                // The post may be gone since; the notification still shows, without its link.
                let post = match notification.post_id.as_str() {
                    "" => None,
                    id => api.post_by_id(id).await?,
                };
                Ok::<_, ApiError>(pages::NotificationView {
                    notification,
                    actor,
                    post,
                })
            }),
    )
    .await?;
    Ok(pages::notifications(&web.chrome, &views).into_response())
}

/// The signed-in visitor's unread count as server-sent events, for the badge: first
/// `unread` (the count now, `20+` past [`NOTIFICATIONS_SHOWN`]), then a `notification` for
/// each new one, from the same notification stream, and under the same caps, as GraphQL's
/// subscription. Starting with the count makes a reconnect (the script closes the stream
/// while its tab is hidden) show the truth again.
async fn live_notifications(LiveWeb(web): LiveWeb) -> WebResult<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    // Watching first, counting second: a notification in between is counted twice at
    // worst (until the next page), never missed.
    let (stream, permit) = web.api.watch_notifications(&web.live).await?;
    let unread = web
        .api
        .notifications(NOTIFICATIONS_SHOWN, None, true)
        .await?;
    let count = match unread.has_next_page {
        true => format!("{}+", unread.notifications.len()),
        false => unread.notifications.len().to_string(),
    };
    let first = futures::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(
        Event::default().event("unread").data(count),
    )));
    let events = stream
        .take_while(|next| std::future::ready(next.is_ok()))
        .map(move |_| {
            // Holds the stream's slot for as long as the stream is open.
            let _open = &permit;
            Ok(Event::default().event("notification").data("1"))
        });
    Ok(Sse::new(first.chain(events))
        .keep_alive(KeepAlive::default())
        .into_response())
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
