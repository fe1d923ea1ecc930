//! What the pages change: every handler here takes a posted form, which
//! [`CheckedForm`] has checked for its CSRF token before the handler runs, changes
//! something through [`BlogApi`](crate::compose::BlogApi), and redirects (303) to the page
//! that shows the change. A signed-out visitor is sent to sign in; a refused form is shown
//! again with the reason, never as an error page.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use oba_kit::ErrorCode;
use serde::Deserialize;

use super::session::{self, CheckedForm};
use super::{Web, WebError, pages};
use crate::compose::{ApiError, PostInput, UserChanges};

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

pub async fn favorite(web: Web, Path(slug): Path<String>, _: CheckedForm<Empty>) -> Response {
    match web.api.like(&slug).await {
        Ok(post) => to(article_path(&post.slug)),
        Err(e) => refused(e),
    }
}

pub async fn unfavorite(web: Web, Path(slug): Path<String>, _: CheckedForm<Empty>) -> Response {
    match web.api.unlike(&slug).await {
        Ok(post) => to(article_path(&post.slug)),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize)]
pub struct CommentForm {
    body: String,
}

pub async fn add_comment(
    web: Web,
    Path(slug): Path<String>,
    CheckedForm(form): CheckedForm<CommentForm>,
) -> Response {
    match web.api.add_comment(&slug, form.body).await {
        Ok(comment) => to(format!("{}#comment-{}", article_path(&slug), comment.id)),
        Err(e) => refused(e),
    }
}

pub async fn delete_comment(
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

pub async fn follow(web: Web, Path(username): Path<String>, _: CheckedForm<Empty>) -> Response {
    match web.api.follow(&username).await {
        Ok(_) => to(profile_path(&username)),
        Err(e) => refused(e),
    }
}

pub async fn unfollow(web: Web, Path(username): Path<String>, _: CheckedForm<Empty>) -> Response {
    match web.api.unfollow(&username).await {
        Ok(_) => to(profile_path(&username)),
        Err(e) => refused(e),
    }
}

// ---- signing in and out ----

pub async fn login_page(web: Web) -> Response {
    pages::sign_in(&web.chrome, pages::SignIn::Login, None, "", "").into_response()
}

pub async fn register_page(web: Web) -> Response {
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
        Ok(session) => return with_session(web, &session.token, "/"),
        Err(e) => e,
    };
    let (status, message) = match error.code {
        ErrorCode::Unauthenticated => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Wrong email or password.".to_owned(),
        ),
        _ => form_error(error),
    };
    (
        status,
        pages::sign_in(&web.chrome, which, Some(&message), username, email),
    )
        .into_response()
}

pub async fn login(web: Web, CheckedForm(form): CheckedForm<LoginForm>) -> Response {
    let session = web.api.login(form.email.clone(), form.password).await;
    signed_in(&web, pages::SignIn::Login, session, "", &form.email)
}

pub async fn register(web: Web, CheckedForm(form): CheckedForm<RegisterForm>) -> Response {
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

pub async fn logout(web: Web, _: CheckedForm<Empty>) -> Response {
    (
        [(
            header::SET_COOKIE,
            session::cleared_session(web.secure_cookies),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

/// How a refused form is answered: its status, and the message shown above it.
fn form_error(error: ApiError) -> (StatusCode, String) {
    let status = match error.code {
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let message = match error.code {
        ErrorCode::Internal => "Something went wrong on our side.".to_owned(),
        _ => match &error.field {
            Some(field) => format!("{field}: {}", error.message),
            None => error.message,
        },
    };
    (status, message)
}

// ---- the editor ----

#[derive(Debug, Default, Deserialize)]
pub struct PostForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    body: String,
    /// Separated by commas or spaces.
    #[serde(default)]
    tags: String,
}

impl PostForm {
    fn input(&self) -> PostInput {
        PostInput {
            title: Some(self.title.clone()),
            description: Some(self.description.clone()),
            body: Some(self.body.clone()),
            tags: Some(
                self.tags
                    .split([',', ' '])
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
        }
    }

    fn editor(&self) -> pages::Editor<'_> {
        pages::Editor {
            slug: None,
            title: &self.title,
            description: &self.description,
            body: &self.body,
            tags: self.tags.clone(),
        }
    }
}

pub async fn new_post_page(web: Web) -> Response {
    if web.chrome.username.is_none() {
        return Redirect::to("/login").into_response();
    }
    pages::editor(&web.chrome, &PostForm::default().editor(), None).into_response()
}

pub async fn create_post(web: Web, CheckedForm(form): CheckedForm<PostForm>) -> Response {
    match web.api.create_post(form.input()).await {
        Ok(post) => to(article_path(&post.slug)),
        Err(e) if e.code == ErrorCode::Unauthenticated => refused(e),
        Err(e) => {
            let (status, message) = form_error(e);
            (
                status,
                pages::editor(&web.chrome, &form.editor(), Some(&message)),
            )
                .into_response()
        }
    }
}

pub async fn edit_post_page(web: Web, Path(slug): Path<String>) -> Response {
    if web.chrome.username.is_none() {
        return Redirect::to("/login").into_response();
    }
    let post = match web.api.post(&slug).await {
        Ok(post) => post,
        Err(e) => return WebError::from(e).into_response(),
    };
    let editor = pages::Editor {
        slug: Some(&post.slug),
        title: &post.title,
        description: &post.description,
        body: &post.body,
        tags: post.tags.join(", "),
    };
    pages::editor(&web.chrome, &editor, None).into_response()
}

pub async fn update_post(
    web: Web,
    Path(slug): Path<String>,
    CheckedForm(form): CheckedForm<PostForm>,
) -> Response {
    match web.api.update_post(&slug, form.input()).await {
        Ok(post) => to(article_path(&post.slug)),
        Err(e) if e.code == ErrorCode::Unauthenticated => refused(e),
        Err(e) => {
            let (status, message) = form_error(e);
            let mut editor = form.editor();
            editor.slug = Some(&slug);
            (status, pages::editor(&web.chrome, &editor, Some(&message))).into_response()
        }
    }
}

pub async fn delete_post(web: Web, Path(slug): Path<String>, _: CheckedForm<Empty>) -> Response {
    match web.api.delete_post(&slug).await {
        Ok(_) => to("/".to_owned()),
        Err(e) => refused(e),
    }
}

// ---- settings ----

#[derive(Debug, Default, Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    image: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    bio: String,
    #[serde(default)]
    email: String,
    /// Empty: unchanged.
    #[serde(default)]
    password: String,
}

impl SettingsForm {
    fn settings(&self) -> pages::Settings<'_> {
        pages::Settings {
            image: &self.image,
            username: &self.username,
            bio: &self.bio,
            email: &self.email,
        }
    }
}

pub async fn settings_page(web: Web) -> Response {
    let me = match web.api.me().await {
        Ok(me) => me,
        Err(e) => return refused(e),
    };
    let settings = pages::Settings {
        image: &me.image,
        username: &me.username,
        bio: &me.bio,
        email: &me.email,
    };
    pages::settings(&web.chrome, &settings, None).into_response()
}

pub async fn update_settings(web: Web, CheckedForm(form): CheckedForm<SettingsForm>) -> Response {
    let changes = UserChanges {
        username: Some(form.username.clone()),
        email: Some(form.email.clone()),
        password: (!form.password.is_empty()).then(|| form.password.clone()),
        bio: Some(form.bio.clone()),
        image: Some(form.image.clone()),
    };
    match web.api.update_me(changes).await {
        // A new name is a new token: the session cookie is replaced with it.
        Ok(session) => {
            let path = session
                .user
                .as_ref()
                .map_or_else(|| "/".to_owned(), |user| profile_path(&user.username));
            with_session(&web, &session.token, &path)
        }
        Err(e) if e.code == ErrorCode::Unauthenticated => refused(e),
        Err(e) => {
            let (status, message) = form_error(e);
            (
                status,
                pages::settings(&web.chrome, &form.settings(), Some(&message)),
            )
                .into_response()
        }
    }
}

/// A redirect to `path` that also signs the browser in with `token`; the cookie lives as
/// long as the token.
fn with_session(web: &Web, token: &str, path: &str) -> Response {
    let max_age = web
        .verifier
        .verify(token)
        .map_or(0, |claims| claims.exp - chrono::Utc::now().timestamp());
    match session::session_cookie(token, max_age, web.secure_cookies) {
        Some(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to(path)).into_response(),
        None => WebError::new(StatusCode::INTERNAL_SERVER_ERROR, "unusable token").into_response(),
    }
}

// ---- notifications ----

pub async fn mark_notifications_read(web: Web, _: CheckedForm<Empty>) -> Response {
    match web.api.mark_notifications_read().await {
        Ok(_) => to("/notifications".to_owned()),
        Err(e) => refused(e),
    }
}
