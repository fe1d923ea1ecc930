//! Calling peer services: lazily connected channels, and the interceptor that carries the
//! caller's credential and trace context on every call.
//!
//! A service takes the actor of a call from the credential it verifies, never from the
//! request body, so whoever calls a peer forwards a credential: the user's own token for
//! work done for a user, or a service credential for work done on nobody's behalf.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::auth::Credential;
use crate::config::{ConfigError, Setting};
use crate::error::{ErrorCode, ServiceError};
use crate::trace;

/// A lazily connected channel to a peer service; calls fail fast with UNAVAILABLE while the
/// peer is down instead of hanging, and succeed again once it is back. Every call on it has
/// a deadline.
pub fn peer_channel(url: &Setting<String>) -> Result<Channel, ConfigError> {
    Ok(peer_endpoint(url)?
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// As [`peer_channel`], without a per-request timeout: for server streams that stay open.
/// Kept apart from the unary channel, so that many open streams never delay a unary call.
pub fn peer_channel_for_streams(url: &Setting<String>) -> Result<Channel, ConfigError> {
    Ok(peer_endpoint(url)?.connect_lazy())
}

fn peer_endpoint(url: &Setting<String>) -> Result<Endpoint, ConfigError> {
    Ok(Endpoint::from_shared(url.value.clone())
        .map_err(|e| url.problem(format!("not a valid URL: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30)))
}

/// Adds the credential (`authorization`) and the current `traceparent` to outgoing calls.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    credential: Option<Credential>,
}

impl Outgoing {
    /// Calls made with `credential`, or anonymously with None.
    pub fn new(credential: Option<Credential>) -> Self {
        Self { credential }
    }
}

impl tonic::service::Interceptor for Outgoing {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = trace::current().and_then(|t| t.parse().ok()) {
            request.metadata_mut().insert(trace::HEADER, value);
        }
        if let Some(credential) = &self.credential {
            request
                .metadata_mut()
                .insert("authorization", credential.header_value().clone());
        }
        Ok(request)
    }
}

/// Facts about posts from their owner, post-service, for services that must not take them
/// from their caller: whether a post exists and who wrote it (whom a comment or a like
/// notifies, who may delete a post's comments).
#[derive(Clone)]
pub struct PostDirectory {
    posts: oba_proto::post::v1::post_service_client::PostServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Outgoing>,
    >,
}

impl PostDirectory {
    /// Reaches post-service at `url` (`OBA_POST_SERVICE_URL`).
    pub fn connect(url: &Setting<String>) -> Result<Self, ConfigError> {
        let channel = peer_channel(url)?;
        Ok(Self {
            posts: oba_proto::post::v1::post_service_client::PostServiceClient::with_interceptor(
                channel,
                Outgoing::default(),
            ),
        })
    }

    /// The author of `post_id`; NOT_FOUND when there is no such post.
    pub async fn author_of(&self, post_id: uuid::Uuid) -> Result<uuid::Uuid, ServiceError> {
        use oba_proto::common::v1::IdSet;
        use oba_proto::post::v1::ListPostsRequest;
        let request = ListPostsRequest {
            first: 1,
            post_ids: Some(IdSet {
                ids: vec![post_id.to_string()],
            }),
            ..Default::default()
        };
        let page = self
            .posts
            .clone()
            .list_posts(request)
            .await
            .map_err(|status| match ErrorCode::of_status(&status) {
                ErrorCode::Unavailable => ServiceError::Unavailable("post-service".into()),
                _ => ServiceError::Internal(format!("post-service: {status:?}")),
            })?
            .into_inner();
        let post = page
            .posts
            .into_iter()
            .next()
            .ok_or(ServiceError::NotFound("post"))?;
        crate::error::parse_id("author_id", &post.author_id)
    }
}
