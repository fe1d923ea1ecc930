//! Serving one service: gRPC and plain HTTP on one port.
//!
//! Every service is a [`ServiceApp`]: its gRPC services and optional HTTP routes. [`serve`]
//! adds what all services share: `/healthz` (liveness: the process answers), `/readyz`
//! (readiness: its dependencies answer), `/metrics` (Prometheus) and the standard gRPC
//! health service, then serves HTTP/1 and HTTP/2 (gRPC) on one listener until shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint};
use tower::Service;

use oba_proto::common::v1::{self as common, introspection_server::IntrospectionServer};

use crate::config::{ConfigError, Setting};
use crate::metrics::{Metrics, count_grpc_requests};

/// A readiness check: `Err` says which dependency is not ready.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One service, ready to be served.
pub struct ServiceApp {
    name: &'static str,
    grpc: tonic::service::Routes,
    grpc_names: Vec<&'static str>,
    http: Router,
    readiness: Vec<ReadinessCheck>,
    metrics: Metrics,
    background: Vec<BackgroundTask>,
}

/// Work a service does besides answering requests (an outbox relay, an event consumer);
/// it runs while the service serves and must return once its token is cancelled.
pub type BackgroundTask = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

impl ServiceApp {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            grpc: tonic::service::Routes::default(),
            grpc_names: Vec::new(),
            http: Router::new(),
            readiness: Vec::new(),
            metrics: Metrics::new(name),
            background: Vec::new(),
        }
    }

    /// Adds background work started with the server and stopped after it drains.
    pub fn background(
        mut self,
        task: impl FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send + 'static,
    ) -> Self {
        self.background.push(Box::new(task));
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Adds a generated tonic server.
    pub fn grpc<S>(mut self, service: S) -> Self
    where
        S: Service<
                axum::http::Request<tonic::body::Body>,
                Error = Infallible,
                Response = axum::http::Response<tonic::body::Body>,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.grpc_names.push(S::NAME);
        self.grpc = self.grpc.add_service(service);
        self
    }

    /// Adds plain HTTP routes (the edge's GraphQL and REST APIs).
    pub fn http(mut self, router: Router) -> Self {
        self.http = self.http.merge(router);
        self
    }

    /// Adds a check that must pass for `/readyz` to answer 200.
    pub fn readiness(mut self, check: ReadinessCheck) -> Self {
        self.readiness.push(check);
        self
    }

    /// Builds the router: the service's routes plus probes, metrics and gRPC health. Done
    /// before serving, so that a wiring mistake fails start-up instead of a serving task.
    pub async fn into_router(mut self) -> (Router, Vec<BackgroundTask>) {
        let background = std::mem::take(&mut self.background);
        let (reporter, health_service) = tonic_health::server::health_reporter();
        for name in &self.grpc_names {
            reporter
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let introspection = IntrospectionServer::new(Introspection { name: self.name });
        let grpc = self
            .grpc
            .add_service(health_service)
            .add_service(introspection)
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(
                self.metrics.clone(),
                count_grpc_requests,
            ));
        let probes = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(Probes {
                readiness: Arc::new(self.readiness),
                metrics: self.metrics,
            });
        let router = grpc
            .merge(self.http)
            .merge(probes)
            .layer(axum::middleware::from_fn(crate::trace::propagate));
        (router, background)
    }
}

/// Answers the edge's question "who are you and which version".
struct Introspection {
    name: &'static str,
}

#[tonic::async_trait]
impl oba_proto::common::v1::introspection_server::Introspection for Introspection {
    async fn get_service_info(
        &self,
        _: tonic::Request<common::Empty>,
    ) -> Result<tonic::Response<common::ServiceInfo>, tonic::Status> {
        Ok(tonic::Response::new(common::ServiceInfo {
            name: self.name.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}

#[derive(Clone)]
struct Probes {
    readiness: Arc<Vec<ReadinessCheck>>,
    metrics: Metrics,
}

async fn readyz(State(probes): State<Probes>) -> impl IntoResponse {
    let results = futures::future::join_all(probes.readiness.iter().map(|check| check())).await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", failures.join("; ")),
        )
    }
}

async fn metrics(State(probes): State<Probes>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probes.metrics.encode(),
    )
}

/// A service ready to serve: its name and complete router.
pub struct PreparedApp {
    pub name: &'static str,
    router: Router,
    background: Vec<BackgroundTask>,
}

impl ServiceApp {
    pub async fn prepare(self) -> PreparedApp {
        let name = self.name;
        let (router, background) = self.into_router().await;
        PreparedApp {
            name,
            router,
            background,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn serve(
    app: PreparedApp,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let name = app.name;
    tracing::info!(service = name, addr = %listener.local_addr()?, "serving");
    // Background work stops after the server: a request in flight may still enqueue events.
    let background_stop = CancellationToken::new();
    let background: Vec<_> = app
        .background
        .into_iter()
        .map(|task| tokio::spawn(task(background_stop.clone())))
        .collect();
    let served = axum::serve(listener, app.router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    background_stop.cancel();
    for task in background {
        let _ = task.await;
    }
    served?;
    tracing::info!(service = name, "stopped");
    Ok(())
}

/// A lazily connected channel to a peer service; calls fail fast with UNAVAILABLE while the
/// peer is down instead of hanging, and succeed again once it is back.
pub fn peer_channel(url: &Setting<String>) -> Result<Channel, ConfigError> {
    Ok(peer_endpoint(url)?
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// As [`peer_channel`], without a per-request timeout: for server streams that stay open.
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
