//! gRPC clients of the internal services the edge composes.
//!
//! The channels are shared by every request ([`PeerChannels`]); each is guarded (a bound on
//! calls in flight and a circuit breaker: a sick peer is failed fast). The clients a request
//! uses ([`Peers`]) are made per request around them and carry that request's credential
//! (the caller's own token, or none for an anonymous caller) and its deadline. The edge's
//! own work (cleanup after a post is deleted) carries its service credential instead.

use std::sync::Arc;
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

/// One shared, lazily connected channel per peer, and the edge's service credential. Every
/// request holds a handle: cloning it is one reference count, not a channel per peer.
#[derive(Clone)]
pub struct PeerChannels(Arc<PeerSet>);

struct PeerSet {
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
    metrics: PeerMetrics,
    /// Reads of posts, reported to post-service in batches.
    views: crate::compose::views::ViewCounts,
    /// Post cards' facts kept in memory, fed by events.
    read_model: Arc<crate::compose::read_model::ReadModel>,
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
        Ok(Self(Arc::new(PeerSet {
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
        })))
    }

    pub fn metrics(&self) -> &PeerMetrics {
        &self.0.metrics
    }

    pub fn views(&self) -> &crate::compose::views::ViewCounts {
        &self.0.views
    }

    pub fn read_model(&self) -> &Arc<crate::compose::read_model::ReadModel> {
        &self.0.read_model
    }

    /// Clients whose calls carry `credential` (a user's token), or none (anonymous), and end
    /// by `deadline` (live streams excepted: they last as long as their subscriber).
    pub fn acting_for(&self, credential: Option<Credential>, deadline: Option<Instant>) -> Peers {
        let streaming = Outgoing::new(credential);
        let unary = match deadline {
            Some(deadline) => streaming.clone().until(deadline),
            None => streaming.clone(),
        };
        Peers {
            channels: self.0.clone(),
            unary,
            streaming,
        }
    }

    /// Clients for the edge's own work, done on nobody's behalf, ending by `deadline`.
    pub fn as_service(&self, deadline: Option<Instant>) -> Peers {
        self.acting_for(Some(self.0.service_credential.clone()), deadline)
    }

    /// Every peer, for health and version checks.
    pub fn states(&self) -> Vec<PeerChannelState> {
        let set = &self.0;
        [
            &set.users,
            &set.posts,
            &set.comments,
            &set.likes,
            &set.ranks,
            &set.notifications,
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

/// The calls one request makes, with its credential and deadline. A client is made when a
/// call is (a warm read makes none), so a request costs no channel handles it does not use.
#[derive(Clone)]
pub struct Peers {
    channels: Arc<PeerSet>,
    unary: Outgoing,
    streaming: Outgoing,
}

impl Peers {
    fn unary(&self, peer: &Peer) -> PeerChannel {
        InterceptedService::new(peer.guarded.clone(), self.unary.clone())
    }

    pub fn users(&self) -> UserServiceClient<PeerChannel> {
        UserServiceClient::new(self.unary(&self.channels.users))
    }

    pub fn posts(&self) -> PostServiceClient<PeerChannel> {
        PostServiceClient::new(self.unary(&self.channels.posts))
    }

    pub fn comments(&self) -> CommentServiceClient<PeerChannel> {
        CommentServiceClient::new(self.unary(&self.channels.comments))
    }

    pub fn likes(&self) -> LikeServiceClient<PeerChannel> {
        LikeServiceClient::new(self.unary(&self.channels.likes))
    }

    pub fn ranks(&self) -> RankServiceClient<PeerChannel> {
        RankServiceClient::new(self.unary(&self.channels.ranks))
    }

    pub fn notifications(&self) -> NotificationServiceClient<PeerChannel> {
        NotificationServiceClient::new(self.unary(&self.channels.notifications))
    }

    /// Live streams: no deadline, and a connection of their own.
    pub fn notification_streams(&self) -> NotificationServiceClient<PeerChannel> {
        NotificationServiceClient::new(InterceptedService::new(
            self.channels.notification_streams.clone(),
            self.streaming.clone(),
        ))
    }
}
