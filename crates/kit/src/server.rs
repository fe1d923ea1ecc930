//! Serving one service: gRPC and plain HTTP on one port.
//!
//! Every service is a [`ServiceApp`]: its gRPC services and optional HTTP routes. [`serve`]
//! adds what all services share: `/healthz` (liveness: the process answers), `/readyz`
//! (readiness: its dependencies answer), `/metrics` (Prometheus) and the standard gRPC
//! health service, then serves HTTP/1 and HTTP/2 (gRPC) on one listener until shutdown.
//!
//! Every gRPC call is authenticated here, once for all services: its `authorization`
//! credential is verified and the resulting [`Caller`] put in the request's extensions,
//! where handlers read it; a bad credential is refused before any handler runs. Only gRPC
//! requests reach the gRPC router: any other unknown path is a plain 404.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tower::Service;

use oba_proto::common::v1::{self as common, introspection_server::IntrospectionServer};

use crate::auth::{Caller, TokenError, TokenVerifier};
use crate::metrics::{Metrics, count_grpc_requests, count_http_requests};

/// A readiness check: `Err` says which dependency is not ready.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One service, ready to be served.
pub struct ServiceApp {
    name: &'static str,
    verifier: TokenVerifier,
    grpc: tonic::service::Routes,
    grpc_names: Vec<&'static str>,
    http: Router,
    operations: Router,
    readiness: Vec<ReadinessCheck>,
    metrics: Metrics,
    background: Vec<BackgroundTask>,
}

/// Work a service does besides answering requests (an outbox relay, an event consumer);
/// it runs while the service serves and must return once its token is cancelled.
pub type BackgroundTask = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// Background work handling each item of `items` with `handle`, in order, until shutdown or
/// until every sender is gone.
pub fn drain<T, F, Fut>(
    mut items: tokio::sync::mpsc::UnboundedReceiver<T>,
    mut handle: F,
) -> impl FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send + 'static
where
    T: Send + 'static,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    move |shutdown| {
        Box::pin(async move {
            loop {
                let item = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = items.recv() => match next {
                        Some(item) => item,
                        None => return,
                    },
                };
                handle(item).await;
            }
        })
    }
}

impl ServiceApp {
    /// A service whose callers are authenticated with `verifier`.
    pub fn new(name: &'static str, verifier: TokenVerifier) -> Self {
        Self {
            name,
            verifier,
            grpc: tonic::service::Routes::default(),
            grpc_names: Vec::new(),
            http: Router::new(),
            operations: Router::new(),
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

    /// Adds HTTP routes for operators and their tools (the edge's status page): like the
    /// probes, neither traced nor counted, so that watching the system does not show as its
    /// load nor crowd users' requests out of the recent traces.
    pub fn operations(mut self, router: Router) -> Self {
        self.operations = self.operations.merge(router);
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
        let introspection = IntrospectionServer::new(Introspection {
            name: self.name,
            metrics: self.metrics.clone(),
        });
        let grpc = self
            .grpc
            .add_service(health_service)
            .add_service(introspection)
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(
                self.verifier,
                authenticate,
            ))
            .layer(axum::middleware::from_fn(only_grpc))
            .layer(axum::middleware::from_fn_with_state(
                self.metrics.clone(),
                count_grpc_requests,
            ));
        let http = self.http.layer(axum::middleware::from_fn_with_state(
            self.metrics.clone(),
            count_http_requests,
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
            .merge(http)
            .fallback(not_found)
            .layer(axum::middleware::from_fn(crate::trace::propagate))
            .merge(probes)
            .merge(self.operations);
        (router, background)
    }
}

/// Verifies the credential of a gRPC call and records its [`Caller`]; refuses a bad one.
async fn authenticate(
    State(verifier): State<TokenVerifier>,
    mut request: Request,
    next: Next,
) -> Response {
    let value = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.to_str().map_err(|_| TokenError::Invalid))
        .transpose();
    match value.and_then(|v| Caller::from_authorization(v, &verifier)) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => tonic::Status::unauthenticated(e.to_string()).into_http(),
    }
}

/// Keeps plain HTTP requests away from the gRPC router: a browser's GET of a gRPC path is a
/// plain 404, like any other unknown path.
async fn only_grpc(request: Request, next: Next) -> Response {
    if crate::metrics::is_grpc(&request) {
        next.run(request).await
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}

/// An unknown gRPC method is UNIMPLEMENTED; any other unknown path is a plain 404.
async fn not_found(request: Request) -> Response {
    if crate::metrics::is_grpc(&request) {
        tonic::Status::unimplemented("no such method").into_http()
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}

/// Answers the edge's question "who are you and which version".
struct Introspection {
    name: &'static str,
    metrics: Metrics,
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

    async fn get_metrics(
        &self,
        _: tonic::Request<common::Empty>,
    ) -> Result<tonic::Response<common::MetricsText>, tonic::Status> {
        Ok(tonic::Response::new(common::MetricsText {
            text: self.metrics.encode(),
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

/// A client must send a request's whole header within this time (slow-header attacks hold
/// connections open otherwise); it also bounds how long an idle HTTP/1 connection stays.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 connections are pinged this often, and closed when a ping is not answered in
/// [`HTTP2_KEEP_ALIVE_TIMEOUT`].
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains in-flight requests.
///
/// Connections are served by hyper directly (not `axum::serve`) so that header-read and
/// keep-alive timeouts apply. Each request carries its client's address as axum's
/// `ConnectInfo<SocketAddr>`. On shutdown the listener closes first, then every connection
/// finishes its in-flight requests and closes.
pub async fn serve(
    app: PreparedApp,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;

    let name = app.name;
    tracing::info!(service = name, addr = %listener.local_addr()?, "serving");
    // Background work stops after the server: a request in flight may still enqueue events.
    let background_stop = CancellationToken::new();
    let background: Vec<_> = app
        .background
        .into_iter()
        .map(|task| tokio::spawn(task(background_stop.clone())))
        .collect();

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
        // Live streams (one per watcher) share a connection from the edge; the edge caps
        // watchers (OBA_SUBSCRIPTIONS_MAX), this caps what one connection may open.
        .max_concurrent_streams(4096);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(service = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = app.router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            router.clone().call(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    background_stop.cancel();
    for task in background {
        let _ = task.await;
    }
    tracing::info!(service = name, "stopped");
    Ok(())
}
