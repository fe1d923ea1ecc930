//! gRPC clients of the internal services the edge composes.

use oba_kit::config::{ConfigError, Setting};
use oba_kit::server::{peer_channel, peer_channel_for_streams};
use oba_kit::trace::TraceInterceptor;
use oba_proto::comment::v1::comment_service_client::CommentServiceClient;
use oba_proto::like::v1::like_service_client::LikeServiceClient;
use oba_proto::notification::v1::notification_service_client::NotificationServiceClient;
use oba_proto::post::v1::post_service_client::PostServiceClient;
use oba_proto::rank::v1::rank_service_client::RankServiceClient;
use oba_proto::user::v1::user_service_client::UserServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Where each peer is.
#[derive(Debug, Clone)]
pub struct PeerUrls {
    pub user_service: Setting<String>,
    pub post_service: Setting<String>,
    pub comment_service: Setting<String>,
    pub like_service: Setting<String>,
    pub rank_service: Setting<String>,
    pub notification_service: Setting<String>,
}

/// A channel whose requests carry the caller's trace context.
pub type PeerChannel = InterceptedService<Channel, TraceInterceptor>;

/// One shared, lazily connected channel per peer; cloning a client is cheap.
#[derive(Clone)]
pub struct Peers {
    pub users: UserServiceClient<PeerChannel>,
    pub posts: PostServiceClient<PeerChannel>,
    pub comments: CommentServiceClient<PeerChannel>,
    pub likes: LikeServiceClient<PeerChannel>,
    pub ranks: RankServiceClient<PeerChannel>,
    pub notifications: NotificationServiceClient<PeerChannel>,
    /// Every peer by name, for health and version checks.
    pub channels: Vec<(&'static str, Channel)>,
}

impl Peers {
    pub fn connect(urls: &PeerUrls) -> Result<Self, ConfigError> {
        let users = peer_channel(&urls.user_service)?;
        let posts = peer_channel(&urls.post_service)?;
        let comments = peer_channel(&urls.comment_service)?;
        let likes = peer_channel(&urls.like_service)?;
        let ranks = peer_channel(&urls.rank_service)?;
        // Watch streams stay open for as long as a subscriber listens: no request timeout.
        let notifications = peer_channel_for_streams(&urls.notification_service)?;
        Ok(Self {
            users: UserServiceClient::with_interceptor(users.clone(), TraceInterceptor),
            posts: PostServiceClient::with_interceptor(posts.clone(), TraceInterceptor),
            comments: CommentServiceClient::with_interceptor(comments.clone(), TraceInterceptor),
            likes: LikeServiceClient::with_interceptor(likes.clone(), TraceInterceptor),
            ranks: RankServiceClient::with_interceptor(ranks.clone(), TraceInterceptor),
            notifications: NotificationServiceClient::with_interceptor(
                notifications.clone(),
                TraceInterceptor,
            ),
            channels: vec![
                ("user-service", users),
                ("post-service", posts),
                ("comment-service", comments),
                ("like-service", likes),
                ("rank-service", ranks),
                ("notification-service", notifications),
            ],
        })
    }
}
