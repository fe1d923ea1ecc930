//! blog-aggregator: the edge. It owns no database; it verifies tokens and composes the
//! internal services over gRPC into the public GraphQL API.
//!
//! Same shape as the other service crates, with `compose` in place of `domain` and `storage`:
//! `peers` (gRPC clients), `viewer` (who is asking), `compose` (the blog assembled from the
//! services, for one caller), `graphql` (the API over it), and [`app`].

pub mod client;
pub mod compose;
pub mod graphql;
pub mod peers;
pub mod rest;
pub mod status;
pub mod viewer;
pub mod web;

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{get, post};
use oba_kit::auth::{Credential, TokenVerifier};
use oba_kit::bus::{Bus, BusConfig};
use oba_kit::config::{ConfigError, Env, Setting};
use oba_kit::peer::{PeerMetrics, PeerPolicy};
use oba_kit::server::ServiceApp;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;

pub const NAME: &str = "blog-aggregator";

/// Largest request body the edge accepts.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub peers: peers::PeerUrls,
    /// Ed25519 public key (SPKI PEM) that verifies tokens.
    pub token_public_key: Setting<PathBuf>,
    /// The edge's service credential, for its calls made on nobody's behalf (a file made
    /// by `oba service-token blog-aggregator`).
    pub service_token: Setting<PathBuf>,
    /// Browser origins allowed to call the APIs (`*` for any); none by default.
    pub cors_allowed_origins: Setting<String>,
    /// Sign-in attempts (login, register) one client address may make per minute.
    pub sign_ins_per_minute: NonZeroU32,
    /// The header a trusted proxy puts the client's address in (its last entry); unset: the
    /// connection's peer address.
    pub client_address_header: Option<Setting<String>>,
    /// Caps on live subscriptions (`OBA_SUBSCRIPTIONS_PER_CONNECTION`, `_PER_USER`, `_MAX`).
    pub live: compose::live::LiveCaps,
    /// Time budgets of a read and a write request (`OBA_READ_BUDGET_MS`, `OBA_WRITE_BUDGET_MS`).
    pub budgets: compose::Budgets,
    /// How peers are guarded (`OBA_PEER_MAX_IN_FLIGHT`, `OBA_PEER_BREAKER_FAILURES`,
    /// `OBA_PEER_BREAKER_SILENCE_MS`, `OBA_PEER_BREAKER_OPEN_MS`).
    pub peer_policy: PeerPolicy,
    /// How often counted reads of posts are reported to post-service (`OBA_VIEW_REPORT_MS`).
    pub view_report_interval: Duration,
    /// The bus whose events keep the read model fresh (`OBA_BUS_URL`; unset when the edge
    /// runs alone: then it has no read model and reads everything from the services).
    pub bus: BusConfig,
    /// Bounds of the read model (`OBA_READ_MODEL_ENTRIES`, `OBA_READ_MODEL_MAX_MIB`,
    /// `OBA_READ_MODEL_MAX_AGE_MS`; an age of 0 turns it off).
    pub read_model: compose::read_model::ReadModelLimits,
    /// Whether the web pages' session cookie is `Secure` (`OBA_WEB_SECURE_COOKIES`, true;
    /// `oba up`, on plain http, sets false).
    pub web_secure_cookies: bool,
}

impl Config {
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            peers: peers::PeerUrls {
                user_service: env.required("OBA_USER_SERVICE_URL"),
                post_service: env.required("OBA_POST_SERVICE_URL"),
                comment_service: env.required("OBA_COMMENT_SERVICE_URL"),
                like_service: env.required("OBA_LIKE_SERVICE_URL"),
                rank_service: env.required("OBA_RANK_SERVICE_URL"),
                notification_service: env.required("OBA_NOTIFICATION_SERVICE_URL"),
            },
            token_public_key: env.required("OBA_TOKEN_PUBLIC_KEY_FILE").map(PathBuf::from),
            service_token: env.required("OBA_SERVICE_TOKEN_FILE").map(PathBuf::from),
            cors_allowed_origins: env
                .optional("OBA_CORS_ALLOWED_ORIGINS")
                .unwrap_or_else(|| Setting::new("OBA_CORS_ALLOWED_ORIGINS", String::new())),
            sign_ins_per_minute: env
                .parsed(
                    "OBA_SIGN_INS_PER_MINUTE",
                    NonZeroU32::new(60).unwrap_or(NonZeroU32::MIN),
                )
                .value,
            client_address_header: env.optional("OBA_CLIENT_ADDRESS_HEADER"),
            live: compose::live::LiveCaps {
                per_connection: env.parsed("OBA_SUBSCRIPTIONS_PER_CONNECTION", 5).value,
                per_user: env.parsed("OBA_SUBSCRIPTIONS_PER_USER", 10).value,
                total: env.parsed("OBA_SUBSCRIPTIONS_MAX", 1000).value,
            },
            budgets: compose::Budgets {
                read: Duration::from_millis(env.parsed("OBA_READ_BUDGET_MS", 2_000).value),
                write: Duration::from_millis(env.parsed("OBA_WRITE_BUDGET_MS", 5_000).value),
            },
            peer_policy: PeerPolicy {
                max_in_flight: env.parsed("OBA_PEER_MAX_IN_FLIGHT", 256).value,
                breaker_failures: env.parsed("OBA_PEER_BREAKER_FAILURES", 5).value,
                breaker_silence: Duration::from_millis(
                    env.parsed("OBA_PEER_BREAKER_SILENCE_MS", 500).value,
                ),
                breaker_open_for: Duration::from_millis(
                    env.parsed("OBA_PEER_BREAKER_OPEN_MS", 2_000).value,
                ),
            },
            view_report_interval: Duration::from_millis(
                env.parsed("OBA_VIEW_REPORT_MS", 1_000).value.max(1),
            ),
            bus: BusConfig::from_env(env),
            read_model: compose::read_model::ReadModelLimits {
                entries: env
                    .parsed(
                        "OBA_READ_MODEL_ENTRIES",
                        NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
                    )
                    .value,
                max_bytes: env
                    .parsed("OBA_READ_MODEL_MAX_MIB", 128_usize)
                    .value
                    .saturating_mul(1 << 20),
                max_age: Duration::from_millis(
                    env.parsed("OBA_READ_MODEL_MAX_AGE_MS", 30_000).value,
                ),
            },
            web_secure_cookies: env.parsed("OBA_WEB_SECURE_COOKIES", true).value,
        }
    }
}

/// CORS for browser front ends served from another origin: a comma-separated list of
/// origins, `*` for any (what `oba up` uses), or nothing (no cross-origin access).
fn cors(origins: &Setting<String>) -> Result<CorsLayer, ConfigError> {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    let value = origins.value.trim();
    if value == "*" {
        return Ok(layer.allow_origin(AllowOrigin::any()));
    }
    let list = value
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            HeaderValue::from_str(o)
                .map_err(|_| origins.problem(format!("{o:?} is not a valid origin")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(layer.allow_origin(AllowOrigin::list(list)))
}

/// The edge; `bus` is `oba up`'s in-process bus (None when the edge runs alone).
pub async fn app(config: &Config, bus: Option<Bus>) -> Result<ServiceApp, ConfigError> {
    let verifier = TokenVerifier::from_pem_file(&config.token_public_key)?;
    let service_credential = service_credential(&config.service_token, &verifier)?;
    let app = ServiceApp::new(NAME, verifier.clone());
    let peer_metrics = PeerMetrics::register(app.metrics());
    let read_model = Arc::new(compose::read_model::ReadModel::new(config.read_model));
    read_model.register(app.metrics());
    // Without a bus the model hears no changes, so it never serves.
    let bus = match (&config.bus.url, bus) {
        (None, None) => None,
        (_, in_process) => Some(config.bus.connect(in_process).await?),
    };
    let peers = peers::PeerChannels::connect(
        &config.peers,
        service_credential,
        config.peer_policy,
        peer_metrics,
        read_model.clone(),
    )?;
    let address_header = config
        .client_address_header
        .as_ref()
        .map(|h| {
            axum::http::HeaderName::from_bytes(h.value.trim().as_bytes())
                .map_err(|_| h.problem("is not a valid header name"))
        })
        .transpose()?;
    let clients = client::Clients::new(address_header, config.sign_ins_per_minute);
    let reporting = peers.clone();
    let state = graphql::GraphqlState {
        schema: graphql::schema(),
        introspection_schema: graphql::introspection_schema(),
        peers,
        verifier,
        clients: clients.clone(),
        live: compose::live::LiveLimits::new(config.live),
        budgets: config.budgets,
    };
    let cors = cors(&config.cors_allowed_origins)?;
    let web = web::router(web::WebState {
        peers: state.peers.clone(),
        verifier: state.verifier.clone(),
        clients: clients.clone(),
        budgets: config.budgets,
        secure_cookies: config.web_secure_cookies,
        live: state.live.clone(),
    });
    let rest = rest::router(rest::RestState {
        peers: state.peers.clone(),
        verifier: state.verifier.clone(),
        clients,
        budgets: config.budgets,
    });
    // The limit layer refuses an announced oversized body from its headers, unread; REST
    // answers that in the RealWorld error shape.
    let graphql = Router::new()
        .route("/graphql", post(graphql::graphql_handler))
        .route("/graphiql", get(graphql::graphiql::page))
        .route("/graphiql/assets/{file}", get(graphql::graphiql::asset))
        .route("/graphql/ws", get(graphql::graphql_ws))
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES));
    let rest = rest
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        .layer(axum::middleware::map_response(rest::error::realworld_413));
    let status = status::router(status::StatusState {
        peers: reporting.clone(),
        board: Default::default(),
        metrics: app.metrics().clone(),
    });
    let http = graphql.merge(rest).layer(cors).merge(web);
    let interval = config.view_report_interval;
    let app = app
        .http(http)
        .operations(status)
        .background(move |shutdown| {
            Box::pin(compose::views::report_every(reporting, interval, shutdown))
        });
    Ok(match bus {
        Some(_) if config.read_model.max_age.is_zero() => {
            tracing::info!(
                "read model off (OBA_READ_MODEL_MAX_AGE_MS=0): every read goes to the services"
            );
            app
        }
        Some(bus) => {
            let namespace = config.bus.namespace.value.clone();
            app.background(move |shutdown| Box::pin(read_model.follow(bus, namespace, shutdown)))
        }
        None => {
            tracing::info!("no event bus (OBA_BUS_URL unset): every read goes to the services");
            app
        }
    })
}

/// Reads the service credential and checks it now, so that a wrong or expired one fails
/// start-up instead of every cleanup.
fn service_credential(
    file: &Setting<PathBuf>,
    verifier: &TokenVerifier,
) -> Result<Credential, ConfigError> {
    let token = std::fs::read_to_string(&file.value)
        .map_err(|e| file.problem(format!("cannot read {}: {e}", file.value.display())))?;
    let token = token.trim();
    let claims = verifier
        .verify_service(token)
        .map_err(|e| file.problem(format!("not a valid service credential: {e}")))?;
    if claims.svc != NAME {
        return Err(file.problem(format!("is a credential of {}, not of {NAME}", claims.svc)));
    }
    Credential::bearer(token).ok_or_else(|| file.problem("not a valid service credential"))
}

/// A file compiled into the binary (a page's script or stylesheet), served as `content_type`
/// with `nosniff`: the browser takes it as what it is said to be, never as something else.
pub(crate) fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}
