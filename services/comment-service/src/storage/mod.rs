//! Comments in comment-service's own database, behind SeaORM.

pub mod entity;
pub mod migration;

use std::collections::HashMap;

use chrono::Utc;
use oba_kit::ServiceError;
use oba_kit::auth::Actor;
use oba_kit::outbox::Outbox;
use oba_proto::event::v1::CommentChanged;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use uuid::Uuid;

pub use entity::Model as Comment;
use entity::{ActiveModel, Column, Entity as Comments};

pub struct CommentPage {
    pub comments: Vec<Comment>,
    pub has_next_page: bool,
    pub total_count: u64,
}

#[derive(Clone)]
pub struct CommentStore {
    db: DatabaseConnection,
    outbox: Outbox,
}

impl CommentStore {
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "CommentStore::add", otel.kind = "client"))]
    pub async fn add(
        &self,
        post_id: Uuid,
        post_author_id: Option<Uuid>,
        author_id: Uuid,
        body: String,
    ) -> Result<Comment, ServiceError> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let comment = Comments::insert(ActiveModel {
            post_id: Set(post_id),
            author_id: Set(author_id),
            body: Set(body),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .exec_with_returning(&txn)
        .await?;
        let event = comment_event(&comment, post_author_id);
        self.outbox
            .enqueue(&txn, "comment.added", post_id, &event)
            .await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(comment)
    }

    /// Up to `limit` comments of a post after the cursor, oldest first.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "CommentStore::list", otel.kind = "client"))]
    pub async fn list(
        &self,
        post_id: Uuid,
        limit: u64,
        after: Option<i64>,
    ) -> Result<CommentPage, ServiceError> {
        let of_post = Comments::find().filter(Column::PostId.eq(post_id));
        let total_count = of_post.clone().count(&self.db).await?;
        let mut query = of_post.order_by_asc(Column::Id);
        if let Some(after) = after {
            query = query.filter(Column::Id.gt(after));
        }
        let mut comments = query.limit(limit + 1).all(&self.db).await?;
        let has_next_page = comments.len() as u64 > limit;
        comments.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(CommentPage {
            comments,
            has_next_page,
            total_count,
        })
    }

    /// The first `limit` comments of each of `post_ids`, oldest first, in one query (a
    /// window function numbers each post's comments), with each post's total.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "CommentStore::first_of_posts", otel.kind = "client"))]
    pub async fn first_of_posts(
        &self,
        post_ids: &[Uuid],
        limit: u64,
    ) -> Result<HashMap<Uuid, CommentPage>, ServiceError> {
        use sea_orm::{DbBackend, Statement, Value};
        if post_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let backend = self.db.get_database_backend();
        let placeholder = |i: usize| match backend {
            DbBackend::Postgres => format!("${i}"),
            _ => "?".to_owned(),
        };
        let list: Vec<String> = (1..=post_ids.len()).map(placeholder).collect();
        let limit_at = placeholder(post_ids.len() + 1);
        // One more than the page, to tell whether a next page exists.
        let sql = format!(
            "SELECT id, post_id, author_id, body, created_at, updated_at FROM (               SELECT comments.*, ROW_NUMBER() OVER (PARTITION BY post_id ORDER BY id) AS rn                FROM comments WHERE post_id IN ({})             ) ranked WHERE rn <= {limit_at} ORDER BY post_id, id",
            list.join(", ")
        );
        let mut values: Vec<Value> = post_ids.iter().map(|id| Value::from(*id)).collect();
        values.push(Value::from(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
        let rows = Comments::find()
            .from_raw_sql(Statement::from_sql_and_values(backend, sql, values))
            .all(&self.db)
            .await?;
        let totals = self.counts(post_ids.to_vec()).await?;
        let mut pages: HashMap<Uuid, CommentPage> = post_ids
            .iter()
            .map(|id| {
                let page = CommentPage {
                    comments: Vec::new(),
                    has_next_page: false,
                    total_count: totals.get(id).copied().unwrap_or(0),
                };
                (*id, page)
            })
            .collect();
        for comment in rows {
            if let Some(page) = pages.get_mut(&comment.post_id) {
                if page.comments.len() as u64 == limit {
                    page.has_next_page = true;
                } else {
                    page.comments.push(comment);
                }
            }
        }
        Ok(pages)
    }

    /// Deletes a comment of `post_id`; its author, the post's author or an admin may.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "CommentStore::delete", otel.kind = "client"))]
    pub async fn delete(
        &self,
        actor: Actor,
        id: i64,
        post_id: Uuid,
        post_author_id: Option<Uuid>,
    ) -> Result<Comment, ServiceError> {
        let comment = Comments::find_by_id(id)
            .filter(Column::PostId.eq(post_id))
            .one(&self.db)
            .await?
            .ok_or(ServiceError::NotFound("comment"))?;
        let owners: Vec<Uuid> = [Some(comment.author_id), post_author_id]
            .into_iter()
            .flatten()
            .collect();
        actor.may_change(&owners)?;
        let txn = self.db.begin().await?;
        Comments::delete_by_id(id).exec(&txn).await?;
        let event = comment_event(&comment, post_author_id);
        self.outbox
            .enqueue(&txn, "comment.deleted", post_id, &event)
            .await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(comment)
    }

    /// Comment counts of many posts in one query; posts without comments are left out.
    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "CommentStore::counts", otel.kind = "client"))]
    pub async fn counts(&self, post_ids: Vec<Uuid>) -> Result<HashMap<Uuid, u64>, ServiceError> {
        if post_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(Uuid, i64)> = Comments::find()
            .select_only()
            .column(Column::PostId)
            .column_as(Expr::col(Column::Id).count(), "comments")
            .filter(Column::PostId.is_in(post_ids))
            .group_by(Column::PostId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(post, n)| (post, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    #[tracing::instrument(name = "db", skip_all, fields(otel.name = "CommentStore::delete_for_post", otel.kind = "client"))]
    pub async fn delete_for_post(&self, post_id: Uuid) -> Result<u64, ServiceError> {
        Ok(Comments::delete_many()
            .filter(Column::PostId.eq(post_id))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}

fn comment_event(comment: &Comment, post_author_id: Option<Uuid>) -> CommentChanged {
    CommentChanged {
        comment_id: comment.id,
        post_id: comment.post_id.to_string(),
        post_author_id: post_author_id.map(|id| id.to_string()).unwrap_or_default(),
        author_id: comment.author_id.to_string(),
    }
}
