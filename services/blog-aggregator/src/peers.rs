//! gRPC clients of the internal services the edge composes.

use oba_kit::config::{ConfigError, Setting};
use oba_kit::server::peer_channel;
use oba_proto::post::v1::post_service_client::PostServiceClient;
use oba_proto::user::v1::user_service_client::UserServiceClient;
use tonic::transport::Channel;

/// One shared, lazily connected channel per peer; cloning a client is cheap.
#[derive(Clone)]
pub struct Peers {
    pub users: UserServiceClient<Channel>,
    pub posts: PostServiceClient<Channel>,
}

impl Peers {
    pub fn connect(
        user_service: &Setting<String>,
        post_service: &Setting<String>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            users: UserServiceClient::new(peer_channel(user_service)?),
            posts: PostServiceClient::new(peer_channel(post_service)?),
        })
    }
}
