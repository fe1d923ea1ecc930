//! Posts and their tags in post-service's own database, behind SeaORM.

pub mod entity;
pub mod migration;

use std::collections::HashMap;

use chrono::Utc;
use oba_kit::ServiceError;
use oba_kit::db::unique_violation;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use uuid::Uuid;

use crate::domain::{PostContent, slug_base, slug_with_suffix};
use entity::{post, post_tag};

/// A post with its tags, as the service hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub row: post::Model,
    pub tags: Vec<String>,
}

/// One page of posts, newest first.
pub struct PostPage {
    pub posts: Vec<Post>,
    pub has_next_page: bool,
}

/// How many times a create retries with a new slug suffix before giving up.
const SLUG_ATTEMPTS: usize = 4;

#[derive(Clone)]
pub struct PostStore {
    db: DatabaseConnection,
}

impl PostStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Inserts a post under a unique slug: the bare title slug if free, else with a suffix.
    pub async fn create(
        &self,
        author_id: Uuid,
        content: PostContent,
    ) -> Result<Post, ServiceError> {
        let id = Uuid::now_v7();
        let base = slug_base(&content.title);
        let mut slug = base.clone();
        for _ in 0..SLUG_ATTEMPTS {
            match self.insert(id, &slug, author_id, &content).await {
                Ok(post) => return Ok(post),
                Err(e) if unique_violation(&e).is_some_and(|m| m.contains("slug")) => {
                    slug = slug_with_suffix(&base, &random_suffix());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Internal(format!("no free slug for {base:?}")))
    }

    async fn insert(
        &self,
        id: Uuid,
        slug: &str,
        author_id: Uuid,
        content: &PostContent,
    ) -> Result<Post, sea_orm::DbErr> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let row = post::Entity::insert(post::ActiveModel {
            id: Set(id),
            slug: Set(slug.to_owned()),
            title: Set(content.title.clone()),
            description: Set(content.description.clone()),
            body: Set(content.body.clone()),
            author_id: Set(author_id),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_with_returning(&txn)
        .await?;
        if !content.tags.is_empty() {
            let tags = content
                .tags
                .iter()
                .zip(0..)
                .map(|(tag, position)| post_tag::ActiveModel {
                    post_id: Set(id),
                    tag: Set(tag.clone()),
                    position: Set(position),
                });
            post_tag::Entity::insert_many(tags).exec(&txn).await?;
        }
        txn.commit().await?;
        Ok(Post {
            row,
            tags: content.tags.clone(),
        })
    }

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

    /// Up to `limit` posts older than `after`, newest first.
    pub async fn list(&self, limit: u64, after: Option<Uuid>) -> Result<PostPage, ServiceError> {
        let mut query = post::Entity::find().order_by_desc(post::Column::Id);
        if let Some(after) = after {
            query = query.filter(post::Column::Id.lt(after));
        }
        // One extra row tells whether another page follows.
        let mut rows = query.limit(limit + 1).all(&self.db).await?;
        let has_next_page = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(PostPage {
            posts: self.with_tags(rows).await?,
            has_next_page,
        })
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

fn random_suffix() -> String {
    // The random tail of a fresh UUIDv7: 6 hex digits are 16.7 million choices per title.
    let simple = Uuid::now_v7().simple().to_string();
    simple[simple.len() - 6..].to_owned()
}
