//! blog-aggregator: the edge. It owns no database; it verifies tokens and composes the
//! internal services over gRPC into the public GraphQL API.
//!
//! Same shape as the other service crates, with `compose` in place of `domain` and `storage`:
//! `peers` (gRPC clients), `viewer` (who is asking), `compose` (the blog assembled from the
//! services, for one caller), `graphql` (the API over it), and [`app`].

pub mod compose;
pub mod graphql;
pub mod peers;
pub mod viewer;

use std::path::PathBuf;

use axum::Router;
use axum::routing::{get, post};
use oba_kit::auth::TokenVerifier;
use oba_kit::config::{ConfigError, Env, Setting};
use oba_kit::server::ServiceApp;
use tower_http::limit::RequestBodyLimitLayer;

pub const NAME: &str = "blog-aggregator";

/// Largest request body the edge accepts.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub peers: peers::PeerUrls,
    /// Ed25519 public key (SPKI PEM) that verifies tokens.
    pub token_public_key: Setting<PathBuf>,
}

impl Config {
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            peers: peers::PeerUrls {
                user_service: env.required("OBA_USER_SERVICE_URL"),
                post_service: env.required("OBA_POST_SERVICE_URL"),
                comment_service: env.required("OBA_COMMENT_SERVICE_URL"),
                like_service: env.required("OBA_LIKE_SERVICE_URL"),
            },
            token_public_key: env.required("OBA_TOKEN_PUBLIC_KEY_FILE").map(PathBuf::from),
        }
    }
}

pub async fn app(config: &Config) -> Result<ServiceApp, ConfigError> {
    let verifier = TokenVerifier::from_pem_file(&config.token_public_key)?;
    let peers = peers::Peers::connect(&config.peers)?;
    let state = graphql::GraphqlState {
        schema: graphql::schema(),
        peers,
        verifier,
    };
    let http = Router::new()
        .route("/graphql", post(graphql::graphql_handler))
        .route("/graphiql", get(graphql::graphiql))
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES));
    Ok(ServiceApp::new(NAME).http(http))
}
