//! The pages' HTML. `maud` escapes every value it is given; the only raw HTML inserted is
//! an article body, and only after [`super::markdown::to_safe_html`] has sanitized it.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use oba_proto::comment::v1 as comment_pb;
use oba_proto::like::v1 as like_pb;
use oba_proto::notification::v1 as notification_pb;
use oba_proto::post::v1 as post_pb;
use oba_proto::user::v1 as user_pb;

use super::Chrome;
use super::markdown;
use super::session::CSRF_FIELD;

/// A post with what a list shows of it; None where the owning service was unavailable.
pub struct Card {
    pub post: post_pb::Post,
    pub author: user_pb::Profile,
    pub likes: Option<like_pb::LikeSummary>,
    pub comments: Option<u64>,
}

pub struct CommentView {
    pub comment: comment_pb::Comment,
    pub author: user_pb::Profile,
}

pub struct Home<'a> {
    /// "Your feed": posts by people the viewer follows.
    pub feed: bool,
    pub tag: Option<&'a str>,
    pub cards: &'a [Card],
    pub page: u32,
    pub pages: u64,
    /// None: post-service could not list them.
    pub tags: Option<&'a [String]>,
    /// None: rank-service is unavailable.
    pub trending: Option<&'a [post_pb::Post]>,
}

pub struct ProfilePage<'a> {
    pub person: &'a user_pb::Profile,
    pub favorited: bool,
    pub cards: &'a [Card],
    pub page: u32,
    pub pages: u64,
}

/// Shown in place of a fact whose service did not answer.
const UNAVAILABLE: &str = "unavailable";
/// Tags shown in the side bar.
const TAGS_SHOWN: usize = 20;

/// The hidden field that proves a form was sent from one of these pages.
fn csrf(chrome: &Chrome) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(chrome.csrf); }
}

/// A form that is one button (favorite, follow, sign out, delete): a POST, never a link,
/// so that nothing changes by following a link or prefetching.
fn button(chrome: &Chrome, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(chrome))
            button.(class) type="submit" { (label) }
        }
    }
}

/// "Notifications" with the unread count, which `live.js` keeps up to date.
fn notifications_link(chrome: &Chrome) -> Markup {
    let (count, more) = chrome.unread.map_or((0, false), |u| (u.count, u.more));
    html! {
        a href="/notifications" {
            "Notifications"
            span #unread.badge data-count=(count) hidden[count == 0 && !more]
                aria-label="unread" {
                (count) @if more { "+" }
            }
        }
    }
}

fn layout(chrome: &Chrome, title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · oba" }
                link rel="stylesheet" href="/web/style.css";
                // Only for the unread badge; every page works without it.
                @if chrome.username.is_some() { script src="/web/live.js" defer {} }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.site {
                    nav aria-label="Site" {
                        a.brand href="/" { "oba" }
                        ul {
                            li { a href="/" { "Home" } }
                            @match &chrome.username {
                                Some(username) => {
                                    li { a href="/?feed=1" { "Your feed" } }
                                    li { a href="/editor" { "New post" } }
                                    li { (notifications_link(chrome)) }
                                    li { a href="/settings" { "Settings" } }
                                    li { a href={ "/profile/" (urlencode(username)) } { (username) } }
                                    li { (button(chrome, "/logout", "Sign out", "link")) }
                                }
                                None => {
                                    li { a href="/login" { "Sign in" } }
                                    li { a href="/register" { "Sign up" } }
                                }
                            }
                            li { a href="/status" { "Status" } }
                            li { a href="/graphiql" { "API (GraphiQL)" } }
                        }
                    }
                }
                main #main { (main) }
                footer.site {
                    p {
                        "oba, the over-engineered blog app. Also as "
                        a href="/graphiql" { "GraphQL" } " and the RealWorld REST API at "
                        code { "/api" } "."
                    }
                }
            }
        }
    }
}

fn date(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%B %-d, %Y").to_string())
        .unwrap_or_default()
}

fn datetime_attr(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// An image URL its owner chose, if it is one a page may load (http or https).
fn image_url(url: &str) -> Option<&str> {
    (url.starts_with("https://") || url.starts_with("http://")).then_some(url)
}

fn author_link(author: &user_pb::Profile) -> Markup {
    html! { a.author href={ "/profile/" (urlencode(&author.username)) } { (author.username) } }
}

/// A path segment or query value, percent-encoded.
pub fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn counts(card: &Card) -> Markup {
    html! {
        span.likes {
            @match &card.likes {
                Some(likes) => { (likes.count) " " (if likes.count == 1 { "like" } else { "likes" }) }
                None => { "likes " (UNAVAILABLE) }
            }
        }
        " · "
        span.comments {
            @match card.comments {
                Some(n) => { (n) " " (if n == 1 { "comment" } else { "comments" }) }
                None => { "comments " (UNAVAILABLE) }
            }
        }
    }
}

fn tag_list(tags: &[String]) -> Markup {
    html! {
        @if !tags.is_empty() {
            ul.tags aria-label="Tags" {
                @for tag in tags {
                    li { a href={ "/?tag=" (urlencode(tag)) } { (tag) } }
                }
            }
        }
    }
}

fn card(card: &Card) -> Markup {
    let post = &card.post;
    html! {
        article.card {
            p.meta {
                (author_link(&card.author)) " · "
                time datetime=(datetime_attr(post.created_at.as_ref())) { (date(post.created_at.as_ref())) }
            }
            h2 { a href={ "/article/" (urlencode(&post.slug)) } { (post.title) } }
            p.description { (post.description) }
            p.facts { (counts(card)) }
            (tag_list(&post.tags))
        }
    }
}

/// Links to the previous and next pages of a list at `base` (which may carry a query).
fn pagination(base: &str, page: u32, pages: u64) -> Markup {
    let join = if base.contains('?') { '&' } else { '?' };
    html! {
        @if pages > 1 {
            nav.pages aria-label="Pages" {
                @if page > 1 {
                    a rel="prev" href={ (base) (join) "page=" (page - 1) } { "← Newer" }
                }
                span { "Page " (page) " of " (pages) }
                @if u64::from(page) < pages {
                    a rel="next" href={ (base) (join) "page=" (page + 1) } { "Older →" }
                }
            }
        }
    }
}

pub fn home(chrome: &Chrome, home: &Home<'_>) -> Markup {
    let heading = match (home.feed, home.tag) {
        (_, Some(tag)) => format!("Posts tagged “{tag}”"),
        (true, None) => "Your feed".to_owned(),
        (false, None) => "Latest posts".to_owned(),
    };
    let base = match (home.feed, home.tag) {
        (_, Some(tag)) => format!("/?tag={}", urlencode(tag)),
        (true, None) => "/?feed=1".to_owned(),
        (false, None) => "/".to_owned(),
    };
    layout(
        chrome,
        &heading,
        html! {
            div.columns {
                section.feed aria-labelledby="feed-title" {
                    h1 #feed-title { (heading) }
                    @if chrome.username.is_some() && home.tag.is_none() {
                        nav.tabs aria-label="Lists" {
                            a href="/?feed=1" aria-current=[home.feed.then_some("page")] { "Your feed" }
                            a href="/" aria-current=[(!home.feed).then_some("page")] { "Everyone" }
                        }
                    }
                    @if home.tag.is_some() { p { a href="/" { "All posts" } } }
                    @if home.cards.is_empty() {
                        p.empty { "No posts here yet." }
                    }
                    @for c in home.cards { (card(c)) }
                    (pagination(&base, home.page, home.pages))
                }
                aside {
                    section aria-labelledby="tags-title" {
                        h2 #tags-title { "Popular tags" }
                        @match home.tags {
                            Some(tags) => (tag_list(&tags[..tags.len().min(TAGS_SHOWN)])),
                            None => p.unavailable { "Tags are " (UNAVAILABLE) " right now." },
                        }
                    }
                    section aria-labelledby="trending-title" {
                        h2 #trending-title { "Trending" }
                        @match home.trending {
                            Some([]) => p { "Nothing yet." },
                            Some(posts) => ol.trending {
                                @for post in posts {
                                    li { a href={ "/article/" (urlencode(&post.slug)) } { (post.title) } }
                                }
                            },
                            None => p.unavailable { "Trending is " (UNAVAILABLE) " right now." },
                        }
                    }
                }
            }
        },
    )
}

pub fn article(chrome: &Chrome, card: &Card, comments: Option<&[CommentView]>) -> Markup {
    let post = &card.post;
    let path = format!("/article/{}", urlencode(&post.slug));
    let viewer = chrome.username.as_deref();
    let liked = card.likes.as_ref().is_some_and(|l| l.liked_by_viewer);
    layout(
        chrome,
        &post.title,
        html! {
            article.post {
                header {
                    h1 { (post.title) }
                    p.meta {
                        "By " (author_link(&card.author)) " · "
                        time datetime=(datetime_attr(post.created_at.as_ref())) { (date(post.created_at.as_ref())) }
                    }
                    p.facts { (counts(card)) }
                    @if viewer == Some(card.author.username.as_str()) {
                        div.actions {
                            a.edit href={ "/editor/" (urlencode(&post.slug)) } { "Edit" }
                            " "
                            (button(chrome, &format!("{path}/delete"), "Delete post", "secondary danger"))
                        }
                    }
                    @if viewer.is_some() && card.likes.is_some() {
                        @if liked {
                            (button(chrome, &format!("{path}/unfavorite"), "Unfavorite", "secondary"))
                        } @else {
                            (button(chrome, &format!("{path}/favorite"), "Favorite", "primary"))
                        }
                    }
                }
                div.body { (PreEscaped(markdown::to_safe_html(&post.body))) }
                (tag_list(&post.tags))
            }
            section.comments aria-labelledby="comments-title" {
                h2 #comments-title { "Comments" }
                @match comments {
                    None => p.unavailable { "Comments are " (UNAVAILABLE) " right now." },
                    Some([]) => p { "No comments yet." },
                    Some(comments) => ol {
                        @for view in comments {
                            li.comment id={ "comment-" (view.comment.id) } {
                                p.body { (view.comment.body) }
                                p.meta {
                                    (author_link(&view.author)) " · "
                                    time datetime=(datetime_attr(view.comment.created_at.as_ref())) {
                                        (date(view.comment.created_at.as_ref()))
                                    }
                                }
                                // Its author and the post's may delete it (comment-service decides).
                                @if viewer.is_some_and(|v| v == view.author.username || v == card.author.username) {
                                    (button(chrome, &format!("{path}/comments/{}/delete", view.comment.id), "Delete", "link danger"))
                                }
                            }
                        }
                    },
                }
                @match viewer {
                    Some(_) => form.comment-form method="post" action={ (path) "/comments" } {
                        (csrf(chrome))
                        label for="comment-body" { "Add a comment" }
                        textarea #comment-body name="body" rows="3" required maxlength="10000" {}
                        button.primary type="submit" { "Post comment" }
                    },
                    None => p { a href="/login" { "Sign in" } " to comment." },
                }
            }
        },
    )
}

pub fn profile(chrome: &Chrome, page: &ProfilePage<'_>) -> Markup {
    let person = page.person;
    let base = format!("/profile/{}", urlencode(&person.username));
    let listed = if page.favorited {
        format!("{base}?tab=favorited")
    } else {
        base.clone()
    };
    let own = chrome.username.as_deref() == Some(person.username.as_str());
    layout(
        chrome,
        &person.username,
        html! {
            header.profile {
                @if let Some(url) = image_url(&person.image) {
                    img src=(url) alt="" width="96" height="96";
                }
                h1 { (person.username) }
                @if chrome.username.is_some() && !own {
                    @if person.following {
                        (button(chrome, &format!("{base}/unfollow"), &format!("Unfollow {}", person.username), "secondary"))
                    } @else {
                        (button(chrome, &format!("{base}/follow"), &format!("Follow {}", person.username), "primary"))
                    }
                }
                @if !person.bio.is_empty() { p.bio { (person.bio) } }
            }
            nav.tabs aria-label="Posts" {
                a href=(base) aria-current=[(!page.favorited).then_some("page")] { "Posts" }
                a href={ (base) "?tab=favorited" } aria-current=[page.favorited.then_some("page")] { "Favorited" }
            }
            @if page.cards.is_empty() {
                p.empty { "No posts here yet." }
            }
            @for c in page.cards { (card(c)) }
            (pagination(&listed, page.page, page.pages))
        },
    )
}

/// Which of the two sign-in forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    Login,
    Register,
}

/// The sign-in or sign-up form, again with what was typed (never the password) and the
/// reason it was refused.
pub fn sign_in(
    chrome: &Chrome,
    which: SignIn,
    error: Option<&str>,
    username: &str,
    email: &str,
) -> Markup {
    let (title, action, other, other_label) = match which {
        SignIn::Login => ("Sign in", "/login", "/register", "Need an account?"),
        SignIn::Register => ("Sign up", "/register", "/login", "Have an account?"),
    };
    layout(
        chrome,
        title,
        html! {
            section.sign-in {
                h1 { (title) }
                p { a href=(other) { (other_label) } }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                form method="post" action=(action) {
                    (csrf(chrome))
                    @if which == SignIn::Register {
                        label for="username" { "Username" }
                        input #username name="username" type="text" required autocomplete="username" value=(username);
                    }
                    label for="email" { "Email" }
                    input #email name="email" type="email" required autocomplete="email" value=(email);
                    label for="password" { "Password" }
                    input #password name="password" type="password" required
                        autocomplete=(if which == SignIn::Login { "current-password" } else { "new-password" });
                    button.primary type="submit" { (title) }
                }
            }
        },
    )
}

pub fn error(chrome: &Chrome, status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    layout(
        chrome,
        title,
        html! {
            h1 { (status.as_u16()) " " (title) }
            p { (message) }
            p { a href="/" { "Back to the home page" } }
        },
    )
}

/// What the editor shows: a new post (`slug` None) or the one being edited.
pub struct Editor<'a> {
    pub slug: Option<&'a str>,
    pub title: &'a str,
    pub description: &'a str,
    pub body: &'a str,
    pub tags: String,
}

pub fn editor(chrome: &Chrome, post: &Editor<'_>, error: Option<&str>) -> Markup {
    let (heading, action) = match post.slug {
        Some(slug) => ("Edit post", format!("/editor/{}", urlencode(slug))),
        None => ("New post", "/editor".to_owned()),
    };
    layout(
        chrome,
        heading,
        html! {
            section.editor {
                h1 { (heading) }
                @if let Some(error) = error { p.error role="alert" { (error) } }
                form method="post" action=(action) {
                    (csrf(chrome))
                    label for="title" { "Title" }
                    input #title name="title" type="text" required value=(post.title);
                    label for="description" { "What it is about" }
                    input #description name="description" type="text" value=(post.description);
                    label for="body" { "Body " small { "(Markdown)" } }
                    textarea #body name="body" rows="14" required { (post.body) }
                    label for="tags" { "Tags " small { "(separated by commas)" } }
                    input #tags name="tags" type="text" value=(post.tags);
                    button.primary type="submit" { "Publish" }
                }
            }
        },
    )
}

/// What the settings form shows.
pub struct Settings<'a> {
    pub image: &'a str,
    pub username: &'a str,
    pub bio: &'a str,
    pub email: &'a str,
}

pub fn settings(chrome: &Chrome, me: &Settings<'_>, error: Option<&str>) -> Markup {
    layout(
        chrome,
        "Settings",
        html! {
            section.editor {
                h1 { "Your settings" }
                @if let Some(error) = error { p.error role="alert" { (error) } }
                form method="post" action="/settings" {
                    (csrf(chrome))
                    label for="image" { "Picture (an https URL)" }
                    input #image name="image" type="url" value=(me.image);
                    label for="username" { "Username" }
                    input #username name="username" type="text" required autocomplete="username" value=(me.username);
                    label for="bio" { "Bio" }
                    textarea #bio name="bio" rows="5" { (me.bio) }
                    label for="email" { "Email" }
                    input #email name="email" type="email" required autocomplete="email" value=(me.email);
                    label for="password" { "New password " small { "(leave empty to keep it)" } }
                    input #password name="password" type="password" autocomplete="new-password";
                    button.primary type="submit" { "Save" }
                }
            }
        },
    )
}

pub struct NotificationView {
    pub notification: notification_pb::Notification,
    pub actor: user_pb::Profile,
    /// None when the notification is about no post, or its post is gone.
    pub post: Option<post_pb::Post>,
}

fn what_happened(kind: i32) -> &'static str {
    use notification_pb::Kind;
    match Kind::try_from(kind) {
        Ok(Kind::Followed) => "followed you",
        Ok(Kind::Commented) => "commented on your post",
        Ok(Kind::Liked) => "liked your post",
        Ok(Kind::Published) => "published",
        _ => "did something",
    }
}

pub fn notifications(chrome: &Chrome, list: &[NotificationView]) -> Markup {
    layout(
        chrome,
        "Notifications",
        html! {
            h1 { "Notifications" }
            @if list.is_empty() {
                p.empty { "Nothing yet." }
            } @else {
                (button(chrome, "/notifications/read", "Mark all as read", "secondary"))
                ol.notifications {
                    @for view in list {
                        li.unread[!view.notification.read] {
                            (author_link(&view.actor)) " " (what_happened(view.notification.kind))
                            @if let Some(post) = &view.post {
                                " " a href={ "/article/" (urlencode(&post.slug)) } { (post.title) }
                            }
                            " · "
                            time datetime=(datetime_attr(view.notification.created_at.as_ref())) {
                                (date(view.notification.created_at.as_ref()))
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_urls_are_encoded() {
        let author = user_pb::Profile {
            username: "<b>x</b> y".to_owned(),
            ..Default::default()
        };
        let html = author_link(&author).into_string();
        assert_eq!(
            html,
            r#"<a class="author" href="/profile/%3Cb%3Ex%3C%2Fb%3E%20y">&lt;b&gt;x&lt;/b&gt; y</a>"#
        );
    }

    #[test]
    fn only_web_images_are_shown() {
        assert_eq!(
            image_url("https://example.com/a.png"),
            Some("https://example.com/a.png")
        );
        assert_eq!(image_url("javascript:alert(1)"), None);
        assert_eq!(image_url("data:image/svg+xml,<svg/>"), None);
    }
}
