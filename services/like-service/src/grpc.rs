//! The gRPC face of like-service. Who likes is the caller; whose post it is (whom a like
//! notifies) comes from post-service, never from the request.

use std::collections::HashSet;

use oba_kit::auth::Caller;
use oba_kit::error::{parse_id, parse_ids};
use oba_kit::peer::PostDirectory;
use oba_proto::common::v1::{Empty, IdSet};
use oba_proto::like::v1 as pb;
use pb::like_service_server::LikeService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{LikeCounts, summarize};
use crate::storage::{LikeKey, LikeStore};

pub struct LikeGrpc {
    store: LikeStore,
    posts: PostDirectory,
}

/// Only the edge removes the likes of a post it has just deleted.
const CLEANUP_CALLERS: &[&str] = &["blog-aggregator"];

impl LikeGrpc {
    pub fn new(store: LikeStore, posts: PostDirectory) -> Self {
        Self { store, posts }
    }

    /// The like the caller of `request` asks for; the post's author is not looked up.
    fn like_of(request: &Request<pb::LikeRequest>) -> Result<LikeKey, Status> {
        Ok(LikeKey {
            post_id: parse_id("post_id", &request.get_ref().post_id)?,
            user_id: Caller::of(request).user()?.user_id,
            post_author_id: None,
        })
    }
}

#[tonic::async_trait]
impl LikeService for LikeGrpc {
    async fn like(
        &self,
        request: Request<pb::LikeRequest>,
    ) -> Result<Response<pb::LikeSummary>, Status> {
        let mut like = Self::like_of(&request)?;
        // A like is only taken on a post that exists, and its event says whom to notify.
        like.post_author_id = Some(self.posts.author_of(like.post_id).await?);
        let count = self.store.like(like).await?;
        Ok(Response::new(pb::LikeSummary {
            post_id: like.post_id.to_string(),
            count,
            liked_by_viewer: true,
        }))
    }

    async fn unlike(
        &self,
        request: Request<pb::LikeRequest>,
    ) -> Result<Response<pb::LikeSummary>, Status> {
        // Removing a like that may not exist needs no post: unknown posts have none to remove.
        let like = Self::like_of(&request)?;
        let count = self.store.unlike(like).await?;
        Ok(Response::new(pb::LikeSummary {
            post_id: like.post_id.to_string(),
            count,
            liked_by_viewer: false,
        }))
    }

    async fn count_likes(
        &self,
        request: Request<pb::CountLikesRequest>,
    ) -> Result<Response<pb::LikeSummaries>, Status> {
        let viewer = Caller::of(&request).viewer();
        let post_ids = parse_ids("post_ids", &request.into_inner().post_ids)?;
        let counts = self.store.counts(&post_ids).await?;
        let liked = match viewer {
            Some(viewer) => self.store.liked_among(viewer, &post_ids).await?,
            None => HashSet::new(),
        };
        let summaries = summarize(&post_ids, &counts, &liked)
            .into_iter()
            .map(summary_message)
            .collect();
        Ok(Response::new(pb::LikeSummaries { summaries }))
    }

    async fn list_liked_posts(
        &self,
        request: Request<pb::ListLikedPostsRequest>,
    ) -> Result<Response<IdSet>, Status> {
        let user_id = parse_id("user_id", &request.into_inner().user_id)?;
        let ids = self
            .store
            .liked_by(user_id)
            .await?
            .iter()
            .map(Uuid::to_string)
            .collect();
        Ok(Response::new(IdSet { ids }))
    }

    async fn delete_post_likes(
        &self,
        request: Request<pb::DeletePostLikesRequest>,
    ) -> Result<Response<Empty>, Status> {
        Caller::of(&request).require_service(CLEANUP_CALLERS)?;
        let post_id = parse_id("post_id", &request.into_inner().post_id)?;
        let removed = self.store.delete_for_post(post_id).await?;
        tracing::info!(%post_id, removed, "likes of a deleted post removed");
        Ok(Response::new(Empty {}))
    }
}

fn summary_message(s: LikeCounts) -> pb::LikeSummary {
    pb::LikeSummary {
        post_id: s.post_id.to_string(),
        count: s.count,
        liked_by_viewer: s.liked_by_viewer,
    }
}
