//! gRPC clients of the internal services the edge composes.
//!
//! The channels are shared by every request ([`PeerChannels`]); the clients a request uses
//! ([`Peers`]) are made per request around them and carry that request's credential: the
//! caller's own token, or none for an anonymous caller. The edge's own work (cleanup after a
//! post is deleted) carries its service credential instead.

use oba_kit::auth::Credential;
use oba_kit::config::{ConfigError, Setting};
use oba_kit::peer::{Outgoing, peer_channel, peer_channel_for_streams};
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

/// A channel whose requests carry a credential and the caller's trace context.
pub type PeerChannel = InterceptedService<Channel, Outgoing>;

/// One shared, lazily connected channel per peer, and the edge's service credential.
#[derive(Clone)]
pub struct PeerChannels {
    users: Channel,
    posts: Channel,
    comments: Channel,
    likes: Channel,
    ranks: Channel,
    notifications: Channel,
    /// Live notification streams have their own connection, so that open streams never
    /// delay the unary calls (and those keep their deadline).
    notification_streams: Channel,
    service_credential: Credential,
}

impl PeerChannels {
    pub fn connect(urls: &PeerUrls, service_credential: Credential) -> Result<Self, ConfigError> {
        Ok(Self {
            users: peer_channel(&urls.user_service)?,
            posts: peer_channel(&urls.post_service)?,
            comments: peer_channel(&urls.comment_service)?,
            likes: peer_channel(&urls.like_service)?,
            ranks: peer_channel(&urls.rank_service)?,
            notifications: peer_channel(&urls.notification_service)?,
            notification_streams: peer_channel_for_streams(&urls.notification_service)?,
            service_credential,
        })
    }

    /// Clients whose calls carry `credential` (a user's token), or none (anonymous).
    pub fn acting_for(&self, credential: Option<Credential>) -> Peers {
        let outgoing = Outgoing::new(credential);
        let client = |channel: &Channel| InterceptedService::new(channel.clone(), outgoing.clone());
        Peers {
            users: UserServiceClient::new(client(&self.users)),
            posts: PostServiceClient::new(client(&self.posts)),
            comments: CommentServiceClient::new(client(&self.comments)),
            likes: LikeServiceClient::new(client(&self.likes)),
            ranks: RankServiceClient::new(client(&self.ranks)),
            notifications: NotificationServiceClient::new(client(&self.notifications)),
            notification_streams: NotificationServiceClient::new(client(
                &self.notification_streams,
            )),
        }
    }

    /// Clients for the edge's own work, done on nobody's behalf.
    pub fn as_service(&self) -> Peers {
        self.acting_for(Some(self.service_credential.clone()))
    }

    /// Every peer by name, for health and version checks.
    pub fn by_name(&self) -> [(&'static str, Channel); 6] {
        [
            ("user-service", self.users.clone()),
            ("post-service", self.posts.clone()),
            ("comment-service", self.comments.clone()),
            ("like-service", self.likes.clone()),
            ("rank-service", self.ranks.clone()),
            ("notification-service", self.notifications.clone()),
        ]
    }
}

/// The clients one request uses; cloning a client is cheap.
#[derive(Clone)]
pub struct Peers {
    pub users: UserServiceClient<PeerChannel>,
    pub posts: PostServiceClient<PeerChannel>,
    pub comments: CommentServiceClient<PeerChannel>,
    pub likes: LikeServiceClient<PeerChannel>,
    pub ranks: RankServiceClient<PeerChannel>,
    pub notifications: NotificationServiceClient<PeerChannel>,
    pub notification_streams: NotificationServiceClient<PeerChannel>,
}
