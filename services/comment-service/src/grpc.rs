//! The gRPC face of comment-service. The author of a comment is the caller; the author of
//! its post comes from post-service, never from the request.

use oba_kit::ServiceError;
use oba_kit::auth::Caller;
use oba_kit::error::{parse_id, parse_ids};
use oba_kit::page::page_size;
use oba_kit::peer::PostDirectory;
use oba_proto::comment::v1 as pb;
use oba_proto::common::v1::Empty;
use oba_proto::time::timestamp;
use pb::comment_service_server::CommentService;
use tonic::{Request, Response, Status};

use crate::domain::{parse_body, parse_cursor};
use crate::storage::{Comment, CommentPage, CommentStore};

pub struct CommentGrpc {
    store: CommentStore,
    posts: PostDirectory,
}

impl CommentGrpc {
    pub fn new(store: CommentStore, posts: PostDirectory) -> Self {
        Self { store, posts }
    }
}

/// Only the edge removes the comments of a post it has just deleted.
const CLEANUP_CALLERS: &[&str] = &["blog-aggregator"];

#[tonic::async_trait]
impl CommentService for CommentGrpc {
    async fn add_comment(
        &self,
        request: Request<pb::AddCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        let author_id = Caller::of(&request).user()?.user_id;
        let req = request.into_inner();
        let post_id = parse_id("post_id", &req.post_id)?;
        let body = parse_body(&req.body)?;
        let post_author_id = self.posts.author_of(post_id).await?;
        let comment = self
            .store
            .add(post_id, Some(post_author_id), author_id, body)
            .await?;
        Ok(Response::new(comment_message(comment)))
    }

    async fn list_comments(
        &self,
        request: Request<pb::ListCommentsRequest>,
    ) -> Result<Response<pb::CommentPage>, Status> {
        let req = request.into_inner();
        let post_id = parse_id("post_id", &req.post_id)?;
        let limit = page_size(req.first)?;
        let after = parse_cursor(&req.after)?;
        let page = self.store.list(post_id, limit, after).await?;
        Ok(Response::new(page_message(page)))
    }

    async fn list_first_comments(
        &self,
        request: Request<pb::ListFirstCommentsRequest>,
    ) -> Result<Response<pb::CommentPages>, Status> {
        let req = request.into_inner();
        let post_ids = parse_ids("post_ids", &req.post_ids)?;
        if post_ids.len() > 100 {
            return Err(ServiceError::invalid("post_ids", "at most 100 posts at once").into());
        }
        let limit = page_size(req.first)?;
        let pages = self.store.first_of_posts(&post_ids, limit).await?;
        Ok(Response::new(pb::CommentPages {
            pages: pages
                .into_iter()
                .map(|(id, page)| (id.to_string(), page_message(page)))
                .collect(),
        }))
    }

    async fn delete_comment(
        &self,
        request: Request<pb::DeleteCommentRequest>,
    ) -> Result<Response<pb::Comment>, Status> {
        let actor = Caller::of(&request).user()?;
        let req = request.into_inner();
        let post_id = parse_id("post_id", &req.post_id)?;
        let post_author = self.posts.author_of(post_id).await?;
        let comment = self
            .store
            .delete(actor, req.id, post_id, Some(post_author))
            .await?;
        Ok(Response::new(comment_message(comment)))
    }

    async fn count_comments(
        &self,
        request: Request<pb::CountCommentsRequest>,
    ) -> Result<Response<pb::CommentCounts>, Status> {
        let post_ids = parse_ids("post_ids", &request.into_inner().post_ids)?;
        let counts = self.store.counts(post_ids).await?;
        Ok(Response::new(pb::CommentCounts {
            counts: counts
                .into_iter()
                .map(|(id, n)| (id.to_string(), n))
                .collect(),
        }))
    }

    async fn delete_post_comments(
        &self,
        request: Request<pb::DeletePostCommentsRequest>,
    ) -> Result<Response<Empty>, Status> {
        Caller::of(&request).require_service(CLEANUP_CALLERS)?;
        let post_id = parse_id("post_id", &request.into_inner().post_id)?;
        let removed = self.store.delete_for_post(post_id).await?;
        tracing::info!(%post_id, removed, "comments of a deleted post removed");
        Ok(Response::new(Empty {}))
    }
}

fn page_message(page: CommentPage) -> pb::CommentPage {
    let end_cursor = page
        .comments
        .last()
        .map(|c| c.id.to_string())
        .unwrap_or_default();
    pb::CommentPage {
        comments: page.comments.into_iter().map(comment_message).collect(),
        end_cursor,
        has_next_page: page.has_next_page,
        total_count: page.total_count,
    }
}

fn comment_message(c: Comment) -> pb::Comment {
    pb::Comment {
        id: c.id,
        post_id: c.post_id.to_string(),
        author_id: c.author_id.to_string(),
        body: c.body,
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
    }
}
