//! The gRPC face of rank-service.

use oba_kit::page::page_size;
use oba_proto::rank::v1 as pb;
use pb::rank_service_server::RankService;
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::storage;

pub struct RankGrpc {
    db: DatabaseConnection,
}

impl RankGrpc {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[tonic::async_trait]
impl RankService for RankGrpc {
    async fn trending(
        &self,
        request: Request<pb::TrendingRequest>,
    ) -> Result<Response<pb::TrendingResponse>, Status> {
        let first = page_size(request.into_inner().first)?;
        let ranked = storage::trending(
            &self.db,
            usize::try_from(first).unwrap_or(0),
            chrono::Utc::now(),
        )
        .await?;
        Ok(Response::new(pb::TrendingResponse {
            posts: ranked
                .into_iter()
                .map(|(id, score)| pb::RankedPost {
                    post_id: id.to_string(),
                    score,
                })
                .collect(),
        }))
    }
}
