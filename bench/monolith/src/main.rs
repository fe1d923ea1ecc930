//! A RealWorld (Conduit) monolith of the kind the performance issue measured oba against:
//! one axum process, SQLx on PostgreSQL, one SQL query per read (a page of articles with
//! authors, tags, counts, `favorited` and `following` is one statement). It implements what
//! `bench/realworld` seeds and loads — users, follows, articles with tags, favorites,
//! comments, lists, feed, article, comments, tags, profiles — not the whole API.
//!
//! usage: DATABASE_URL=postgres://… LISTEN_ADDR=127.0.0.1:0 realworld-monolith
//! (creates its tables; prints `listening on http://<addr>`)

use std::net::SocketAddr;

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};

const SECRET: &[u8] = b"realworld-monolith-bench-secret";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (id serial PRIMARY KEY, username text UNIQUE NOT NULL,
  email text UNIQUE NOT NULL, password_hash text NOT NULL, bio text, image text);
CREATE TABLE IF NOT EXISTS follows (follower int NOT NULL REFERENCES users, followee int NOT NULL
  REFERENCES users, PRIMARY KEY (follower, followee));
CREATE TABLE IF NOT EXISTS articles (id serial PRIMARY KEY, slug text UNIQUE NOT NULL,
  title text NOT NULL, description text NOT NULL, body text NOT NULL,
  author_id int NOT NULL REFERENCES users, created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS articles_recent ON articles (created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS article_tags (article_id int NOT NULL REFERENCES articles ON DELETE
  CASCADE, tag text NOT NULL, PRIMARY KEY (article_id, tag));
CREATE INDEX IF NOT EXISTS article_tags_tag ON article_tags (tag);
CREATE TABLE IF NOT EXISTS favorites (user_id int NOT NULL REFERENCES users, article_id int NOT
  NULL REFERENCES articles ON DELETE CASCADE, PRIMARY KEY (article_id, user_id));
CREATE INDEX IF NOT EXISTS favorites_user ON favorites (user_id);
CREATE TABLE IF NOT EXISTS comments (id serial PRIMARY KEY, article_id int NOT NULL REFERENCES
  articles ON DELETE CASCADE, author_id int NOT NULL REFERENCES users, body text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS comments_article ON comments (article_id, id);
";

/// An article with its author, tags, like count, `favorited` and `following`: `$1` the
/// viewer (0 when anonymous); each use adds its WHERE.
macro_rules! article_select {
    () => {
        "
SELECT a.slug, a.title, a.description, a.body,
  to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at,
  to_char(a.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS updated_at,
  u.username, u.bio, u.image,
  COALESCE((SELECT array_agg(t.tag ORDER BY t.tag) FROM article_tags t WHERE t.article_id = a.id),
    '{}') AS tags,
  (SELECT count(*) FROM favorites f WHERE f.article_id = a.id) AS favorites_count,
  EXISTS (SELECT 1 FROM favorites f WHERE f.article_id = a.id AND f.user_id = $1) AS favorited,
  EXISTS (SELECT 1 FROM follows o WHERE o.followee = u.id AND o.follower = $1) AS following,
  count(*) OVER () AS total
FROM articles a JOIN users u ON u.id = a.author_id"
    };
}

/// One query answers a page of articles.
const ARTICLES: &str = concat!(
    article_select!(),
    "
WHERE ($2::text IS NULL OR EXISTS (SELECT 1 FROM article_tags t WHERE t.article_id = a.id AND t.tag = $2))
  AND ($3::text IS NULL OR u.username = $3)
  AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM favorites f JOIN users fu ON fu.id = f.user_id
    WHERE f.article_id = a.id AND fu.username = $4))
  AND (NOT $5 OR EXISTS (SELECT 1 FROM follows o WHERE o.follower = $1 AND o.followee = a.author_id))
ORDER BY a.created_at DESC, a.id DESC
LIMIT $6 OFFSET $7"
);

/// One query answers one article, by its slug (`$2`), through the slug's index.
const ARTICLE: &str = concat!(article_select!(), " WHERE a.slug = $2");

#[derive(Debug)]
enum AppError {
    Unauthorized,
    NotFound,
    Invalid(String),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                AppError::Invalid("has already been taken".into())
            }
            _ => AppError::Database(e),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not found".to_owned()),
            AppError::Invalid(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            AppError::Database(e) => {
                eprintln!("database: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "database".to_owned())
            }
        };
        (status, Json(json!({"errors": {"body": [message]}}))).into_response()
    }
}

type Result<T> = std::result::Result<T, AppError>;

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: i32,
    exp: u64,
}

/// The signed-in user's id, or 0 when anonymous (a bad token is refused).
struct Viewer(i32);

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        let Some(header) = parts.headers.get("authorization") else {
            return Ok(Viewer(0));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Token ")
                    .or_else(|| h.strip_prefix("Bearer "))
            })
            .ok_or(AppError::Unauthorized)?;
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(SECRET).map_err(|_| AppError::Unauthorized)?,
            &Validation::new(Algorithm::HS256),
        )
        .map_err(|_| AppError::Unauthorized)?;
        Ok(Viewer(data.claims.sub))
    }
}

impl Viewer {
    fn required(&self) -> Result<i32> {
        if self.0 == 0 {
            Err(AppError::Unauthorized)
        } else {
            Ok(self.0)
        }
    }
}

fn token(id: i32) -> Result<String> {
    let claims = Claims {
        sub: id,
        exp: 4_102_444_800, // 2100-01-01
    };
    let key = EncodingKey::from_secret(SECRET).map_err(|e| AppError::Invalid(e.to_string()))?;
    jsonwebtoken::encode(&Header::default(), &claims, &key)
        .map_err(|e| AppError::Invalid(e.to_string()))
}

fn article_json(row: &PgRow) -> Value {
    json!({
        "slug": row.get::<String, _>("slug"),
        "title": row.get::<String, _>("title"),
        "description": row.get::<String, _>("description"),
        "body": row.get::<String, _>("body"),
        "tagList": row.get::<Vec<String>, _>("tags"),
        "createdAt": row.get::<String, _>("created_at"),
        "updatedAt": row.get::<String, _>("updated_at"),
        "favorited": row.get::<bool, _>("favorited"),
        "favoritesCount": row.get::<i64, _>("favorites_count"),
        "author": {
            "username": row.get::<String, _>("username"),
            "bio": row.get::<Option<String>, _>("bio"),
            "image": row.get::<Option<String>, _>("image"),
            "following": row.get::<bool, _>("following"),
        },
    })
}

#[derive(Deserialize)]
struct ListQuery {
    tag: Option<String>,
    author: Option<String>,
    favorited: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn articles(db: &PgPool, viewer: i32, q: &ListQuery, feed: bool) -> Result<Vec<PgRow>> {
    Ok(sqlx::query(ARTICLES)
        .bind(viewer)
        .bind(q.tag.as_deref())
        .bind(q.author.as_deref())
        .bind(q.favorited.as_deref())
        .bind(feed)
        .bind(q.limit.unwrap_or(20).clamp(1, 100))
        .bind(q.offset.unwrap_or(0).max(0))
        .fetch_all(db)
        .await?)
}

async fn list(
    State(db): State<PgPool>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>> {
    page(&db, viewer.0, &q, false).await
}

async fn feed(
    State(db): State<PgPool>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>> {
    let id = viewer.required()?;
    page(&db, id, &q, true).await
}

async fn page(db: &PgPool, viewer: i32, q: &ListQuery, feed: bool) -> Result<Json<Value>> {
    let rows = articles(db, viewer, q, feed).await?;
    let count = rows.first().map_or(0, |r| r.get::<i64, _>("total"));
    let list: Vec<Value> = rows.iter().map(article_json).collect();
    Ok(Json(json!({"articles": list, "articlesCount": count})))
}

async fn one(db: &PgPool, viewer: i32, slug: &str) -> Result<Json<Value>> {
    let row = sqlx::query(ARTICLE)
        .bind(viewer)
        .bind(slug)
        .fetch_optional(db)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(Json(json!({"article": article_json(&row)})))
}

async fn article(
    State(db): State<PgPool>,
    viewer: Viewer,
    Path(slug): Path<String>,
) -> Result<Json<Value>> {
    one(&db, viewer.0, &slug).await
}

#[derive(Deserialize)]
struct NewArticle {
    title: String,
    description: String,
    body: String,
    #[serde(default, rename = "tagList")]
    tag_list: Vec<String>,
}

#[derive(Deserialize)]
struct ArticleBody {
    article: NewArticle,
}

async fn create_article(
    State(db): State<PgPool>,
    viewer: Viewer,
    Json(input): Json<ArticleBody>,
) -> Result<Json<Value>> {
    let author = viewer.required()?;
    let a = input.article;
    if a.title.trim().is_empty() {
        return Err(AppError::Invalid("title can't be blank".into()));
    }
    let slug: String = a
        .title
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut tx = db.begin().await?;
    let id: i32 = sqlx::query_scalar(
        "INSERT INTO articles (slug, title, description, body, author_id) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(&slug)
    .bind(&a.title)
    .bind(&a.description)
    .bind(&a.body)
    .bind(author)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO article_tags (article_id, tag) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(&a.tag_list)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    one(&db, author, &slug).await
}

/// Runs `change` (`$1` the user, `$2` the slug), then answers the article as the user sees it.
async fn change_article(
    db: &PgPool,
    viewer: Viewer,
    slug: &str,
    change: &'static str,
) -> Result<Json<Value>> {
    let user = viewer.required()?;
    sqlx::query(change)
        .bind(user)
        .bind(slug)
        .execute(db)
        .await?;
    one(db, user, slug).await
}

async fn favorite(
    State(db): State<PgPool>,
    viewer: Viewer,
    Path(slug): Path<String>,
) -> Result<Json<Value>> {
    let like = "INSERT INTO favorites (user_id, article_id) SELECT $1, id FROM articles WHERE slug = $2 ON CONFLICT DO NOTHING";
    change_article(&db, viewer, &slug, like).await
}

async fn unfavorite(
    State(db): State<PgPool>,
    viewer: Viewer,
    Path(slug): Path<String>,
) -> Result<Json<Value>> {
    let unlike = "DELETE FROM favorites WHERE user_id = $1 AND article_id = (SELECT id FROM articles WHERE slug = $2)";
    change_article(&db, viewer, &slug, unlike).await
}

/// A comment with its author, `$1` the viewer; each use adds its WHERE.
macro_rules! comment_select {
    () => {
        "
SELECT c.id, c.body,
  to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at,
  to_char(c.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS updated_at,
  u.username, u.bio, u.image,
  EXISTS (SELECT 1 FROM follows o WHERE o.followee = u.id AND o.follower = $1) AS following
FROM comments c JOIN users u ON u.id = c.author_id"
    };
}

fn comment_json(row: &PgRow) -> Value {
    json!({
        "id": row.get::<i32, _>("id"),
        "body": row.get::<String, _>("body"),
        "createdAt": row.get::<String, _>("created_at"),
        "updatedAt": row.get::<String, _>("updated_at"),
        "author": {
            "username": row.get::<String, _>("username"),
            "bio": row.get::<Option<String>, _>("bio"),
            "image": row.get::<Option<String>, _>("image"),
            "following": row.get::<bool, _>("following"),
        },
    })
}

async fn comments(
    State(db): State<PgPool>,
    viewer: Viewer,
    Path(slug): Path<String>,
) -> Result<Json<Value>> {
    let rows = sqlx::query(concat!(
        comment_select!(),
        " JOIN articles a ON a.id = c.article_id WHERE a.slug = $2 ORDER BY c.id"
    ))
    .bind(viewer.0)
    .bind(&slug)
    .fetch_all(&db)
    .await?;
    Ok(Json(
        json!({"comments": rows.iter().map(comment_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
struct NewComment {
    body: String,
}

#[derive(Deserialize)]
struct CommentBody {
    comment: NewComment,
}

async fn add_comment(
    State(db): State<PgPool>,
    viewer: Viewer,
    Path(slug): Path<String>,
    Json(input): Json<CommentBody>,
) -> Result<Json<Value>> {
    let user = viewer.required()?;
    let id: Option<i32> = sqlx::query_scalar(
        "INSERT INTO comments (article_id, author_id, body) SELECT id, $1, $2 FROM articles WHERE slug = $3 RETURNING id",
    )
    .bind(user)
    .bind(&input.comment.body)
    .bind(&slug)
    .fetch_optional(&db)
    .await?;
    let id = id.ok_or(AppError::NotFound)?;
    let row = sqlx::query(concat!(comment_select!(), " WHERE c.id = $2"))
        .bind(user)
        .bind(id)
        .fetch_one(&db)
        .await?;
    Ok(Json(json!({"comment": comment_json(&row)})))
}

async fn tags(State(db): State<PgPool>) -> Result<Json<Value>> {
    let tags: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tag FROM article_tags ORDER BY tag")
            .fetch_all(&db)
            .await?;
    Ok(Json(json!({"tags": tags})))
}

async fn profile_of(db: &PgPool, viewer: i32, username: &str) -> Result<Json<Value>> {
    let row = sqlx::query(
        "SELECT u.username, u.bio, u.image, EXISTS (SELECT 1 FROM follows o WHERE o.followee = u.id AND o.follower = $1) AS following FROM users u WHERE u.username = $2",
    )
    .bind(viewer)
    .bind(username)
    .fetch_optional(db)
    .await?
    .ok_or(AppError::NotFound)?;
    Ok(Json(json!({"profile": {
        "username": row.get::<String, _>("username"),
        "bio": row.get::<Option<String>, _>("bio"),
        "image": row.get::<Option<String>, _>("image"),
        "following": row.get::<bool, _>("following"),
    }})))
}

async fn profile(
    State(db): State<PgPool>,
    viewer: Viewer,
    Path(username): Path<String>,
) -> Result<Json<Value>> {
    profile_of(&db, viewer.0, &username).await
}

async fn follow(
    State(db): State<PgPool>,
    viewer: Viewer,
    Path(username): Path<String>,
) -> Result<Json<Value>> {
    let user = viewer.required()?;
    sqlx::query(
        "INSERT INTO follows (follower, followee) SELECT $1, id FROM users WHERE username = $2 ON CONFLICT DO NOTHING",
    )
    .bind(user)
    .bind(&username)
    .execute(&db)
    .await?;
    profile_of(&db, user, &username).await
}

#[derive(Deserialize)]
struct NewUser {
    username: String,
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct UserBody {
    user: NewUser,
}

async fn register(State(db): State<PgPool>, Json(input): Json<UserBody>) -> Result<Json<Value>> {
    let u = input.user;
    let password = u.password.clone();
    // Hashing is CPU work: off the async workers, as a careful monolith would.
    let hash = tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h: PasswordHash| h.to_string())
    })
    .await
    .map_err(|e| AppError::Invalid(e.to_string()))?
    .map_err(|e| AppError::Invalid(e.to_string()))?;
    let id: i32 = sqlx::query_scalar(
        "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(&u.username)
    .bind(&u.email)
    .bind(&hash)
    .fetch_one(&db)
    .await?;
    Ok(Json(json!({"user": {
        "username": u.username, "email": u.email, "token": token(id)?, "bio": null, "image": null,
    }})))
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let addr: SocketAddr = std::env::var("LISTEN_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8090".into())
        .parse()?;
    let db = PgPoolOptions::new()
        .max_connections(10)
        .connect(&url)
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&db).await?;
    let app = Router::new()
        .route("/api/users", post(register))
        .route("/api/profiles/{username}", get(profile))
        .route("/api/profiles/{username}/follow", post(follow))
        .route("/api/articles", get(list).post(create_article))
        .route("/api/articles/feed", get(feed))
        .route("/api/articles/{slug}", get(article))
        .route(
            "/api/articles/{slug}/favorite",
            post(favorite).delete(unfavorite),
        )
        .route(
            "/api/articles/{slug}/comments",
            get(comments).post(add_comment),
        )
        .route("/api/tags", get(tags))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
