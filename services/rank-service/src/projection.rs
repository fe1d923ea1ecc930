//! How events move the trending projection (the consumer side of rank-service).

use oba_kit::ServiceError;
use oba_kit::consumer::Projection;
use oba_kit::error::parse_id;
use oba_proto::event::v1::{
    CommentChanged, Envelope, PostChanged, PostDeleted, PostLiked, PostViewed,
};
use oba_proto::time::datetime;
use prost::Message;
use sea_orm::DatabaseTransaction;

use crate::domain::{Counter, EngagementChanges};
use crate::storage;

/// The subjects rank-service consumes, under the bus namespace.
pub fn subjects(namespace: &str) -> Vec<String> {
    vec![
        format!("{namespace}.post.*"),
        format!("{namespace}.comment.*"),
    ]
}

pub struct TrendingProjection;

fn decode<M: Message + Default>(event: &Envelope) -> Result<M, ServiceError> {
    M::decode(event.payload.as_slice())
        .map_err(|e| ServiceError::Internal(format!("bad {} payload: {e}", event.r#type)))
}

#[tonic::async_trait]
impl Projection for TrendingProjection {
    // Counter changes wait for the end of the batch; creations and deletions are made at once.
    type Pending = EngagementChanges;
    type Applied = ();

    async fn apply(
        &self,
        event: &Envelope,
        changes: &mut EngagementChanges,
        txn: &DatabaseTransaction,
    ) -> Result<(), ServiceError> {
        match event.r#type.as_str() {
            "post.created" => {
                let e: PostChanged = decode(event)?;
                storage::post_created(
                    txn,
                    parse_id("post_id", &e.post_id)?,
                    datetime(e.created_at.as_ref()),
                )
                .await?;
            }
            "post.deleted" => {
                let e: PostDeleted = decode(event)?;
                let post = parse_id("post_id", &e.post_id)?;
                changes.forget(post);
                storage::post_deleted(txn, post).await?;
            }
            "post.liked" | "post.unliked" => {
                let e: PostLiked = decode(event)?;
                let delta = if event.r#type == "post.liked" { 1 } else { -1 };
                changes.add(parse_id("post_id", &e.post_id)?, Counter::Likes, delta);
            }
            "comment.added" | "comment.deleted" => {
                let e: CommentChanged = decode(event)?;
                let delta = if event.r#type == "comment.added" {
                    1
                } else {
                    -1
                };
                changes.add(parse_id("post_id", &e.post_id)?, Counter::Comments, delta);
            }
            "post.viewed" => {
                let e: PostViewed = decode(event)?;
                let views = i64::from(e.count.max(1));
                changes.add(parse_id("post_id", &e.post_id)?, Counter::Views, views);
            }
            // Other events of these subjects (post.updated) do not move the score.
            _ => {}
        }
        Ok(())
    }

    async fn write(
        &self,
        changes: EngagementChanges,
        txn: &DatabaseTransaction,
    ) -> Result<(), ServiceError> {
        Ok(storage::add(txn, &changes).await?)
    }
}
