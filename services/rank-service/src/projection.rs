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

use crate::storage::{self, Counter};

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
    type Applied = ();

    async fn apply(&self, event: &Envelope, txn: &DatabaseTransaction) -> Result<(), ServiceError> {
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
                storage::post_deleted(txn, parse_id("post_id", &e.post_id)?).await?;
            }
            "post.liked" | "post.unliked" => {
                let e: PostLiked = decode(event)?;
                let delta = if event.r#type == "post.liked" { 1 } else { -1 };
                storage::add(txn, parse_id("post_id", &e.post_id)?, Counter::Likes, delta).await?;
            }
            "comment.added" | "comment.deleted" => {
                let e: CommentChanged = decode(event)?;
                let delta = if event.r#type == "comment.added" {
                    1
                } else {
                    -1
                };
                storage::add(
                    txn,
                    parse_id("post_id", &e.post_id)?,
                    Counter::Comments,
                    delta,
                )
                .await?;
            }
            "post.viewed" => {
                let e: PostViewed = decode(event)?;
                let views = i64::from(e.count.max(1));
                storage::add(txn, parse_id("post_id", &e.post_id)?, Counter::Views, views).await?;
            }
            // Other events of these subjects (post.updated) do not move the score.
            _ => {}
        }
        Ok(())
    }
}
