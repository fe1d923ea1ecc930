//! How events become notifications (the consumer side of notification-service).

use oba_kit::ServiceError;
use oba_kit::consumer::Projection;
use oba_kit::error::{parse_id, parse_optional_id};
use oba_proto::event::v1::{CommentChanged, Envelope, PostChanged, PostLiked, UserFollowed};
use prost::Message;
use sea_orm::DatabaseTransaction;
use tokio::sync::mpsc;

use crate::domain::{Kind, NewNotification, about_someone_else};
use crate::storage::{self, Notification};

/// The subjects notification-service consumes, under the bus namespace.
pub fn subjects(namespace: &str) -> Vec<String> {
    [
        "user.followed",
        "user.unfollowed",
        "comment.added",
        "post.liked",
        "post.created",
    ]
    .iter()
    .map(|t| format!("{namespace}.{t}"))
    .collect()
}

pub struct NotificationProjection {
    /// Each batch's new notifications, to announce to every replica's live watchers; sent
    /// only after they are committed, in the order they were made.
    pub announce: mpsc::UnboundedSender<Vec<Notification>>,
}

fn decode<M: Message + Default>(event: &Envelope) -> Result<M, ServiceError> {
    M::decode(event.payload.as_slice())
        .map_err(|e| ServiceError::Internal(format!("bad {} payload: {e}", event.r#type)))
}

#[tonic::async_trait]
impl Projection for NotificationProjection {
    // Follows are written at once (a later `post.created` of the batch reads them); the
    // batch's notifications together at its end.
    type Pending = Vec<NewNotification>;
    type Applied = Vec<Notification>;

    async fn apply(
        &self,
        event: &Envelope,
        pending: &mut Vec<NewNotification>,
        txn: &DatabaseTransaction,
    ) -> Result<(), ServiceError> {
        let new: Vec<NewNotification> = match event.r#type.as_str() {
            "user.followed" | "user.unfollowed" => {
                let e: UserFollowed = decode(event)?;
                let (follower, followee) = (
                    parse_id("follower_id", &e.follower_id)?,
                    parse_id("followee_id", &e.followee_id)?,
                );
                let following = event.r#type == "user.followed";
                let version = parse_id("id", &event.id)?;
                storage::set_following(txn, follower, followee, following, version).await?;
                if following {
                    // A follow happened even if a later unfollow was applied first: it notifies.
                    about_someone_else(Some(followee), follower, Kind::Followed, None)
                        .into_iter()
                        .collect()
                } else {
                    Vec::new()
                }
            }
            "comment.added" => {
                let e: CommentChanged = decode(event)?;
                let post = parse_id("post_id", &e.post_id)?;
                let author = parse_id("author_id", &e.author_id)?;
                let recipient = parse_optional_id("post_author_id", &e.post_author_id)?;
                about_someone_else(recipient, author, Kind::Commented, Some(post))
                    .into_iter()
                    .collect()
            }
            "post.liked" => {
                let e: PostLiked = decode(event)?;
                let post = parse_id("post_id", &e.post_id)?;
                let liker = parse_id("user_id", &e.user_id)?;
                let recipient = parse_optional_id("post_author_id", &e.post_author_id)?;
                about_someone_else(recipient, liker, Kind::Liked, Some(post))
                    .into_iter()
                    .collect()
            }
            "post.created" => {
                let e: PostChanged = decode(event)?;
                let post = parse_id("post_id", &e.post_id)?;
                let author = parse_id("author_id", &e.author_id)?;
                storage::followers_of(txn, author)
                    .await?
                    .into_iter()
                    .filter_map(|follower| {
                        about_someone_else(Some(follower), author, Kind::Published, Some(post))
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        pending.extend(new);
        Ok(())
    }

    async fn write(
        &self,
        pending: Vec<NewNotification>,
        txn: &DatabaseTransaction,
    ) -> Result<Vec<Notification>, ServiceError> {
        Ok(storage::insert(txn, pending).await?)
    }

    fn committed(&self, applied: Vec<Notification>) {
        // Announcing is best effort: the notifications are stored either way.
        if !applied.is_empty() {
            let _ = self.announce.send(applied);
        }
    }
}
