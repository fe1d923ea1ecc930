//! The gRPC face of post-service. Authors and actors come from the caller's token.

use oba_kit::ServiceError;
use oba_kit::auth::Caller;
use oba_kit::error::{parse_id, parse_ids};
use oba_proto::common::v1::Empty;
use oba_proto::post::v1 as pb;
use oba_proto::time::timestamp;
use pb::post_service_server::PostService;
use tonic::{Request, Response, Status};

use oba_kit::page::page_size;

use crate::domain::{PostChanges, PostContent, PostFilter};
use crate::storage::{PageStart, Post, PostStore};

/// Who may report views: the edge, which counts the reads it serves.
const VIEW_REPORTERS: &[&str] = &["blog-aggregator"];
/// Posts per `RecordViews` call at most (the edge sends larger batches in chunks).
pub const MAX_VIEWED_POSTS_PER_CALL: usize = 1_000;

pub struct PostGrpc {
    store: PostStore,
}

impl PostGrpc {
    pub fn new(store: PostStore) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl PostService for PostGrpc {
    async fn create_post(
        &self,
        request: Request<pb::CreatePostRequest>,
    ) -> Result<Response<pb::Post>, Status> {
        let author_id = Caller::of(&request).user()?.user_id;
        let req = request.into_inner();
        let content = PostContent::parse(&req.title, &req.description, &req.body, &req.tags)?;
        let post = self.store.create(author_id, content).await?;
        tracing::info!(post_id = %post.row.id, slug = %post.row.slug, "post created");
        Ok(Response::new(post_message(post)))
    }

    async fn get_post(
        &self,
        request: Request<pb::GetPostRequest>,
    ) -> Result<Response<pb::Post>, Status> {
        let post = self
            .store
            .by_slug(&request.into_inner().slug)
            .await?
            .ok_or(ServiceError::NotFound("post"))?;
        Ok(Response::new(post_message(post)))
    }

    async fn update_post(
        &self,
        request: Request<pb::UpdatePostRequest>,
    ) -> Result<Response<pb::Post>, Status> {
        let actor = Caller::of(&request).user()?;
        let req = request.into_inner();
        let changes = PostChanges {
            title: req.title,
            description: req.description,
            body: req.body,
            tags: req.tags.map(|t| t.tags),
        };
        let post = self.store.update(actor, &req.slug, changes).await?;
        Ok(Response::new(post_message(post)))
    }

    async fn delete_post(
        &self,
        request: Request<pb::DeletePostRequest>,
    ) -> Result<Response<pb::Post>, Status> {
        let actor = Caller::of(&request).user()?;
        let post = self.store.delete(actor, &request.into_inner().slug).await?;
        tracing::info!(post_id = %post.row.id, "post deleted");
        Ok(Response::new(post_message(post)))
    }

    async fn list_posts(
        &self,
        request: Request<pb::ListPostsRequest>,
    ) -> Result<Response<pb::PostPage>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.first)?;
        let start = match req.after.as_str() {
            "" => PageStart::Offset(u64::from(req.offset)),
            cursor => PageStart::After(parse_id("after", cursor)?),
        };
        let filter = PostFilter {
            tag: Some(req.tag).filter(|t| !t.is_empty()),
            author_ids: req
                .author_ids
                .map(|s| parse_ids("author_ids", &s.ids))
                .transpose()?,
            post_ids: req
                .post_ids
                .map(|s| parse_ids("post_ids", &s.ids))
                .transpose()?,
        };
        let page = self.store.list(&filter, limit, start).await?;
        let end_cursor = page
            .posts
            .last()
            .map(|p| p.row.id.to_string())
            .unwrap_or_default();
        Ok(Response::new(pb::PostPage {
            posts: page.posts.into_iter().map(post_message).collect(),
            end_cursor,
            has_next_page: page.has_next_page,
            total_count: page.total_count,
        }))
    }

    async fn record_views(
        &self,
        request: Request<pb::RecordViewsRequest>,
    ) -> Result<Response<Empty>, Status> {
        // Views rank posts: only the edge, which counted real reads, may report them.
        Caller::of(&request).require_service(VIEW_REPORTERS)?;
        let posts = request.into_inner().posts;
        if posts.len() > MAX_VIEWED_POSTS_PER_CALL {
            return Err(ServiceError::InvalidInput {
                field: "posts",
                message: format!("at most {MAX_VIEWED_POSTS_PER_CALL} posts per call"),
            }
            .into());
        }
        let mut views = Vec::with_capacity(posts.len());
        for post in posts {
            views.push((parse_id("post_id", &post.post_id)?, post.count.max(1)));
        }
        self.store.record_views(views).await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_tags(&self, _: Request<Empty>) -> Result<Response<pb::TagList>, Status> {
        Ok(Response::new(pb::TagList {
            tags: self.store.tags().await?,
        }))
    }
}

fn post_message(post: Post) -> pb::Post {
    let row = post.row;
    pb::Post {
        id: row.id.to_string(),
        slug: row.slug,
        title: row.title,
        description: row.description,
        body: row.body,
        tags: post.tags,
        author_id: row.author_id.to_string(),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}
