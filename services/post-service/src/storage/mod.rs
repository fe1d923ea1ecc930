//! Posts and their tags in post-service's own database, behind SeaORM.

pub mod entity;
pub mod migration;

use std::collections::{HashMap, HashSet};
use std::future::Future;

use chrono::Utc;
use oba_kit::ServiceError;
use oba_kit::auth::Actor;
use oba_kit::db::unique_violation;
use oba_kit::outbox::Outbox;
use oba_proto::event::v1::{PostChanged, PostDeleted, PostViewed};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, Order,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select, TransactionTrait,
};
use uuid::Uuid;

use crate::domain::{PostChanges, PostContent, PostFilter, slug_base, slug_with_suffix};
use entity::{post, post_tag};

/// A post with its tags, as the service hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub row: post::Model,
    pub tags: Vec<String>,
}

impl Post {
    fn content(&self) -> PostContent {
        PostContent {
            title: self.row.title.clone(),
            description: self.row.description.clone(),
            body: self.row.body.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// One page of posts, newest first.
pub struct PostPage {
    pub posts: Vec<Post>,
    pub has_next_page: bool,
    pub total_count: u64,
}

/// Where a page starts.
pub enum PageStart {
    After(Uuid),
    Offset(u64),
}

/// How many times a write retries with a new slug suffix before giving up.
const SLUG_ATTEMPTS: usize = 4;

#[derive(Clone)]
pub struct PostStore {
    db: DatabaseConnection,
    outbox: Outbox,
}

impl PostStore {
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// Inserts a post under a unique slug: the bare title slug if free, else with a suffix.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "PostStore::create", otel.kind = "client"))]
    pub async fn create(
        &self,
        author_id: Uuid,
        content: PostContent,
    ) -> Result<Post, ServiceError> {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let content = &content;
        claim_slug(&slug_base(&content.title), |slug| async move {
            let txn = self.db.begin().await?;
            let row = post::Entity::insert(post::ActiveModel {
                id: Set(id),
                slug: Set(slug),
                title: Set(content.title.clone()),
                description: Set(content.description.clone()),
                body: Set(content.body.clone()),
                author_id: Set(author_id),
                created_at: Set(now),
                updated_at: Set(now),
            })
            .exec_with_returning(&txn)
            .await?;
            insert_tags(&txn, id, &content.tags).await?;
            self.outbox
                .enqueue(&txn, "post.created", id, &changed(&row))
                .await?;
            txn.commit().await?;
            Ok(Post {
                row,
                tags: content.tags.clone(),
            })
        })
        .await
        .inspect(|_| self.outbox.committed())
    }

    /// Changes a post; only its author or an admin may. A changed title gives a new slug.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "PostStore::update", otel.kind = "client"))]
    pub async fn update(
        &self,
        actor: Actor,
        slug: &str,
        changes: PostChanges,
    ) -> Result<Post, ServiceError> {
        let current = self
            .by_slug(slug)
            .await?
            .ok_or(ServiceError::NotFound("post"))?;
        actor.may_change(&[current.row.author_id])?;
        let content = current.content().with_changes(changes)?;
        let base = slug_base(&content.title);
        // Same words, same slug: a fixed typo in case or punctuation keeps links working.
        let base = if base == slug_base(&current.row.title) {
            current.row.slug.clone()
        } else {
            base
        };
        let id = current.row.id;
        claim_slug(&base, |slug| {
            let content = &content;
            async move {
                let txn = self.db.begin().await?;
                let row = post::Entity::update(post::ActiveModel {
                    id: Set(id),
                    slug: Set(slug),
                    title: Set(content.title.clone()),
                    description: Set(content.description.clone()),
                    body: Set(content.body.clone()),
                    updated_at: Set(Utc::now()),
                    ..Default::default()
                })
                .exec(&txn)
                .await?;
                post_tag::Entity::delete_many()
                    .filter(post_tag::Column::PostId.eq(id))
                    .exec(&txn)
                    .await?;
                insert_tags(&txn, id, &content.tags).await?;
                self.outbox
                    .enqueue(&txn, "post.updated", id, &changed(&row))
                    .await?;
                txn.commit().await?;
                Ok(Post {
                    row,
                    tags: content.tags.clone(),
                })
            }
        })
        .await
        .inspect(|_| self.outbox.committed())
    }

    /// Deletes a post and its tags; only its author or an admin may.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "PostStore::delete", otel.kind = "client"))]
    pub async fn delete(&self, actor: Actor, slug: &str) -> Result<Post, ServiceError> {
        let post = self
            .by_slug(slug)
            .await?
            .ok_or(ServiceError::NotFound("post"))?;
        actor.may_change(&[post.row.author_id])?;
        let txn = self.db.begin().await?;
        post_tag::Entity::delete_many()
            .filter(post_tag::Column::PostId.eq(post.row.id))
            .exec(&txn)
            .await?;
        post::Entity::delete_by_id(post.row.id).exec(&txn).await?;
        let event = PostDeleted {
            post_id: post.row.id.to_string(),
            author_id: post.row.author_id.to_string(),
        };
        self.outbox
            .enqueue(&txn, "post.deleted", post.row.id, &event)
            .await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(post)
    }

    /// Records counted reads of posts: one `post.viewed` event per existing post, all in one
    /// transaction (no state of their own); reads of posts deleted meanwhile are dropped.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "PostStore::record_views", otel.kind = "client"))]
    pub async fn record_views(&self, views: Vec<(Uuid, u32)>) -> Result<(), ServiceError> {
        let ids: Vec<Uuid> = views.iter().map(|(id, _)| *id).collect();
        let existing: HashSet<Uuid> = post::Entity::find()
            .select_only()
            .column(post::Column::Id)
            .filter(post::Column::Id.is_in(ids))
            .into_tuple::<Uuid>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        let txn = self.db.begin().await?;
        for (post_id, count) in views.into_iter().filter(|(id, _)| existing.contains(id)) {
            let event = PostViewed {
                post_id: post_id.to_string(),
                count,
            };
            self.outbox
                .enqueue(&txn, "post.viewed", post_id, &event)
                .await?;
        }
        txn.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "PostStore::by_slug", otel.kind = "client"))]
    pub async fn by_slug(&self, slug: &str) -> Result<Option<Post>, ServiceError> {
        let Some(row) = post::Entity::find()
            .filter(post::Column::Slug.eq(slug))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(self.with_tags(vec![row]).await?.pop())
    }

    /// Up to `limit` posts matching `filter`, newest first, from `start`.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "PostStore::list", otel.kind = "client"))]
    pub async fn list(
        &self,
        filter: &PostFilter,
        limit: u64,
        start: PageStart,
    ) -> Result<PostPage, ServiceError> {
        if filter.matches_nothing() {
            return Ok(PostPage {
                posts: Vec::new(),
                has_next_page: false,
                total_count: 0,
            });
        }
        let matching = filtered(filter);
        let total_count = matching.clone().count(&self.db).await?;
        let mut query = matching.order_by_desc(post::Column::Id);
        query = match start {
            PageStart::After(after) => query.filter(post::Column::Id.lt(after)),
            PageStart::Offset(offset) => query.offset(offset),
        };
        // One extra row tells whether another page follows.
        let mut rows = query.limit(limit + 1).all(&self.db).await?;
        let has_next_page = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(PostPage {
            posts: self.with_tags(rows).await?,
            has_next_page,
            total_count,
        })
    }

    /// Every tag in use, most used first (ties alphabetically).
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "PostStore::tags", otel.kind = "client"))]
    pub async fn tags(&self) -> Result<Vec<String>, ServiceError> {
        let uses = Expr::col(post_tag::Column::Tag).count();
        let rows: Vec<(String, i64)> = post_tag::Entity::find()
            .select_only()
            .column(post_tag::Column::Tag)
            .column_as(uses.clone(), "uses")
            .group_by(post_tag::Column::Tag)
            .order_by(uses, Order::Desc)
            .order_by_asc(post_tag::Column::Tag)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(|(tag, _)| tag).collect())
    }

    /// Attaches tags to posts with one query for the whole batch.
    async fn with_tags(&self, rows: Vec<post::Model>) -> Result<Vec<Post>, ServiceError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut by_post: HashMap<Uuid, Vec<String>> = HashMap::new();
        for tag in post_tag::Entity::find()
            .filter(post_tag::Column::PostId.is_in(ids))
            .order_by_asc(post_tag::Column::Position)
            .all(&self.db)
            .await?
        {
            by_post.entry(tag.post_id).or_default().push(tag.tag);
        }
        Ok(rows
            .into_iter()
            .map(|row| Post {
                tags: by_post.remove(&row.id).unwrap_or_default(),
                row,
            })
            .collect())
    }
}

fn changed(row: &post::Model) -> PostChanged {
    PostChanged {
        post_id: row.id.to_string(),
        author_id: row.author_id.to_string(),
        slug: row.slug.clone(),
        title: row.title.clone(),
        created_at: Some(oba_proto::time::timestamp(row.created_at)),
    }
}

fn filtered(filter: &PostFilter) -> Select<post::Entity> {
    let mut query = post::Entity::find();
    if let Some(tag) = &filter.tag {
        query = query.filter(
            post::Column::Id.in_subquery(
                Query::select()
                    .column(post_tag::Column::PostId)
                    .from(post_tag::Entity)
                    .and_where(post_tag::Column::Tag.eq(tag.as_str()))
                    .to_owned(),
            ),
        );
    }
    if let Some(authors) = &filter.author_ids {
        query = query.filter(post::Column::AuthorId.is_in(authors.iter().copied()));
    }
    if let Some(ids) = &filter.post_ids {
        query = query.filter(post::Column::Id.is_in(ids.iter().copied()));
    }
    query
}

async fn insert_tags(
    db: &impl ConnectionTrait,
    post_id: Uuid,
    tags: &[String],
) -> Result<(), DbErr> {
    if tags.is_empty() {
        return Ok(());
    }
    let rows = tags
        .iter()
        .zip(0..)
        .map(|(tag, position)| post_tag::ActiveModel {
            post_id: Set(post_id),
            tag: Set(tag.clone()),
            position: Set(position),
        });
    post_tag::Entity::insert_many(rows).exec(db).await?;
    Ok(())
}

/// Runs `write` with `base` as the slug, then with random suffixes while the slug is taken.
async fn claim_slug<T, F, Fut>(base: &str, mut write: F) -> Result<T, ServiceError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<T, DbErr>>,
{
    let mut slug = base.to_owned();
    for _ in 0..SLUG_ATTEMPTS {
        match write(slug).await {
            Ok(done) => return Ok(done),
            Err(e) if unique_violation(&e).is_some_and(|m| m.contains("slug")) => {
                slug = slug_with_suffix(base, &random_suffix());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::Internal(format!("no free slug for {base:?}")))
}

fn random_suffix() -> String {
    // The random tail of a fresh UUIDv7: 6 hex digits are 16.7 million choices per title.
    let simple = Uuid::now_v7().simple().to_string();
    simple[simple.len() - 6..].to_owned()
}
