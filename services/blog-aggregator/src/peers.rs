//! gRPC clients of the internal services the edge composes.
//!
//! The channels are shared by every request ([`PeerChannels`]); each is guarded (a bound on
//! calls in flight and a circuit breaker: a sick peer is failed fast). The clients a request
//! uses ([`Peers`]) are made per request around them and carry that request's credential
//! (the caller's own token, or none for an anonymous caller) and its deadline. The edge's
//! own work (cleanup after a post is deleted) carries its service credential instead.

use std::time::Instant;

use oba_kit::auth::Credential;
use oba_kit::config::{ConfigError, Setting};
use oba_kit::peer::{
    GuardedChannel, Outgoing, PeerMetrics, PeerPolicy, PeerTransport, peer_channel,
    peer_channel_for_streams,
};
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

/// A guarded channel whose requests carry a credential, a deadline and the trace context.
pub type PeerChannel = InterceptedService<GuardedChannel, Outgoing>;

/// One peer: its raw channel (health checks see the truth) and the guarded one calls use.
#[derive(Clone)]
struct Peer {
    name: &'static str,
    raw: Channel,
    guarded: GuardedChannel,
}

impl Peer {
    fn connect(
        name: &'static str,
        channel: PeerTransport,
        policy: PeerPolicy,
        metrics: &PeerMetrics,
    ) -> Self {
        Self {
            name,
            raw: channel.channel.clone(),
            guarded: GuardedChannel::new(channel, name, policy, metrics),
        }
    }
}

/// One shared, lazily connected channel per peer, and the edge's service credential.
#[derive(Clone)]
pub struct PeerChannels {
    users: Peer,
    posts: Peer,
    comments: Peer,
    likes: Peer,
    ranks: Peer,
    notifications: Peer,
    /// Live notification streams have their own connection, so that open streams never
    /// delay the unary calls (and those keep their deadline).
    notification_streams: GuardedChannel,
    service_credential: Credential,
    pub metrics: PeerMetrics,
    /// Reads of posts, reported to post-service in batches.
    pub views: crate::compose::views::ViewCounts,
    /// Post cards' facts kept in memory, fed by events.
    pub read_model: std::sync::Arc<crate::compose::read_model::ReadModel>,
}

/// Health of one peer's channel, as the edge sees it.
pub struct PeerChannelState {
    pub name: &'static str,
    pub channel: Channel,
    pub breaker_open: bool,
}

impl PeerChannels {
    pub fn connect(
        urls: &PeerUrls,
        service_credential: Credential,
        policy: PeerPolicy,
        metrics: PeerMetrics,
        read_model: std::sync::Arc<crate::compose::read_model::ReadModel>,
    ) -> Result<Self, ConfigError> {
        let peer = |name, url| -> Result<Peer, ConfigError> {
            Ok(Peer::connect(name, peer_channel(url)?, policy, &metrics))
        };
        Ok(Self {
            users: peer("user-service", &urls.user_service)?,
            posts: peer("post-service", &urls.post_service)?,
            comments: peer("comment-service", &urls.comment_service)?,
            likes: peer("like-service", &urls.like_service)?,
            ranks: peer("rank-service", &urls.rank_service)?,
            notifications: peer("notification-service", &urls.notification_service)?,
            notification_streams: GuardedChannel::new(
                peer_channel_for_streams(&urls.notification_service)?,
                "notification-service",
                policy,
                &metrics,
            ),
            service_credential,
            metrics,
            views: crate::compose::views::ViewCounts::default(),
            read_model,
        })
    }

    /// Clients whose calls carry `credential` (a user's token), or none (anonymous), and end
    /// by `deadline` (live streams excepted: they last as long as their subscriber).
    pub fn acting_for(&self, credential: Option<Credential>, deadline: Option<Instant>) -> Peers {
        let streaming = Outgoing::new(credential);
        let unary = match deadline {
            Some(deadline) => streaming.clone().until(deadline),
            None => streaming.clone(),
        };
        let client = |peer: &Peer| InterceptedService::new(peer.guarded.clone(), unary.clone());
        Peers {
            users: UserServiceClient::new(client(&self.users)),
            posts: PostServiceClient::new(client(&self.posts)),
            comments: CommentServiceClient::new(client(&self.comments)),
            likes: LikeServiceClient::new(client(&self.likes)),
            ranks: RankServiceClient::new(client(&self.ranks)),
            notifications: NotificationServiceClient::new(client(&self.notifications)),
            notification_streams: NotificationServiceClient::new(InterceptedService::new(
                self.notification_streams.clone(),
                streaming,
            )),
        }
    }

    /// Clients for the edge's own work, done on nobody's behalf, ending by `deadline`.
    pub fn as_service(&self, deadline: Option<Instant>) -> Peers {
        self.acting_for(Some(self.service_credential.clone()), deadline)
    }

    /// Every peer, for health and version checks.
    pub fn states(&self) -> Vec<PeerChannelState> {
        [
            &self.users,
            &self.posts,
            &self.comments,
            &self.likes,
            &self.ranks,
            &self.notifications,
        ]
        .into_iter()
        .map(|peer| PeerChannelState {
            name: peer.name,
            channel: peer.raw.clone(),
            breaker_open: peer.guarded.is_open(),
        })
        .collect()
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
