//! The gRPC face of post-service.

use oba_kit::ServiceError;
use oba_proto::post::v1 as pb;
use oba_proto::time::timestamp;
use pb::post_service_server::PostService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{PostContent, page_size};
use crate::storage::{Post, PostStore};

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
        let req = request.into_inner();
        let author_id = parse_id("author_id", &req.author_id)?;
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

    async fn list_posts(
        &self,
        request: Request<pb::ListPostsRequest>,
    ) -> Result<Response<pb::PostPage>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.first)?;
        let after = match req.after.as_str() {
            "" => None,
            cursor => Some(parse_id("after", cursor)?),
        };
        let page = self.store.list(limit, after).await?;
        let end_cursor = page
            .posts
            .last()
            .map(|p| p.row.id.to_string())
            .unwrap_or_default();
        Ok(Response::new(pb::PostPage {
            posts: page.posts.into_iter().map(post_message).collect(),
            end_cursor,
            has_next_page: page.has_next_page,
        }))
    }
}

fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, ServiceError> {
    Uuid::parse_str(raw).map_err(|_| ServiceError::invalid(field, "is not a valid id"))
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
