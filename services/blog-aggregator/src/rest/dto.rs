//! The RealWorld wire shapes: what the REST API reads and writes.

use chrono::{DateTime, SecondsFormat, Utc};
use oba_proto::comment::v1 as comment_pb;
use oba_proto::like::v1::LikeSummary;
use oba_proto::post::v1 as post_pb;
use oba_proto::time::datetime;
use oba_proto::user::v1 as user_pb;
use serde::{Deserialize, Serialize};

/// RealWorld timestamps always carry milliseconds (`2026-11-29T05:25:28.123Z`).
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

#[derive(Deserialize)]
pub struct UserEnvelope<T> {
    pub user: T,
}

#[derive(Deserialize)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password: String,
}

#[derive(Deserialize)]
pub struct LoginUser {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct UpdateUser {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub bio: Option<String>,
    pub image: Option<String>,
}

#[derive(Serialize)]
pub struct User {
    pub email: String,
    pub token: String,
    pub username: String,
    pub bio: Option<String>,
    pub image: Option<String>,
}

impl User {
    pub fn new(user: user_pb::User, token: String) -> Self {
        Self {
            email: user.email,
            token,
            username: user.username,
            bio: non_empty(user.bio),
            image: non_empty(user.image),
        }
    }
}

#[derive(Serialize)]
pub struct Profile {
    pub username: String,
    pub bio: Option<String>,
    pub image: Option<String>,
    pub following: bool,
}

impl From<user_pb::Profile> for Profile {
    fn from(p: user_pb::Profile) -> Self {
        Self {
            username: p.username,
            bio: non_empty(p.bio),
            image: non_empty(p.image),
            following: p.following,
        }
    }
}

#[derive(Deserialize)]
pub struct ArticleEnvelope<T> {
    pub article: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewArticle {
    pub title: String,
    pub description: String,
    pub body: String,
    #[serde(default)]
    pub tag_list: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct UpdateArticle {
    pub title: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
    pub tag_list: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Article {
    pub slug: String,
    pub title: String,
    pub description: String,
    pub body: String,
    pub tag_list: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub favorited: bool,
    pub favorites_count: u64,
    pub author: Profile,
}

impl Article {
    pub fn new(post: post_pb::Post, author: user_pb::Profile, likes: LikeSummary) -> Self {
        let mut tag_list = post.tags;
        // RealWorld lists tags alphabetically (its test collection checks the order).
        tag_list.sort();
        Self {
            slug: post.slug,
            title: post.title,
            description: post.description,
            body: post.body,
            tag_list,
            created_at: timestamp(datetime(post.created_at.as_ref())),
            updated_at: timestamp(datetime(post.updated_at.as_ref())),
            favorited: likes.liked_by_viewer,
            favorites_count: likes.count,
            author: author.into(),
        }
    }
}

#[derive(Deserialize)]
pub struct CommentEnvelope<T> {
    pub comment: T,
}

#[derive(Deserialize)]
pub struct NewComment {
    pub body: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    pub id: i64,
    pub created_at: String,
    pub updated_at: String,
    pub body: String,
    pub author: Profile,
}

impl Comment {
    pub fn new(comment: comment_pb::Comment, author: user_pb::Profile) -> Self {
        Self {
            id: comment.id,
            created_at: timestamp(datetime(comment.created_at.as_ref())),
            updated_at: timestamp(datetime(comment.updated_at.as_ref())),
            body: comment.body,
            author: author.into(),
        }
    }
}

/// Query string of `GET /articles` and `GET /articles/feed`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ArticleQuery {
    pub tag: Option<String>,
    pub author: Option<String>,
    pub favorited: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_always_have_milliseconds() {
        let whole = DateTime::from_timestamp(1_790_000_000, 0).expect("valid");
        assert_eq!(timestamp(whole), "2026-09-21T14:13:20.000Z");
    }
}
