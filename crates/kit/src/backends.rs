//! What a stateful service connects to — its own database and the event bus — and the
//! key it verifies its callers with, and the two ways it uses the bus: publishing through
//! its outbox, or consuming into a projection. Every service's `app` starts here, so none
//! copies another's set-up.

use std::path::PathBuf;

use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;

use crate::auth::TokenVerifier;
use crate::bus::{self, Bus, BusConfig};
use crate::config::{ConfigError, Env, Setting};
use crate::consumer::{self, Projection};
use crate::db::{self, DbConfig};
use crate::outbox::{Outbox, Relay};
use crate::peer::PostDirectory;
use crate::server::ServiceApp;

/// `OBA_DATABASE_*`, `OBA_BUS_*` and `OBA_TOKEN_PUBLIC_KEY_FILE`.
#[derive(Debug, Clone)]
pub struct BackendsConfig {
    pub database: DbConfig,
    pub bus: BusConfig,
    /// Ed25519 public key (SPKI PEM) that verifies every caller's credential.
    pub token_public_key: Setting<PathBuf>,
}

impl BackendsConfig {
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            database: DbConfig::from_env(env),
            bus: BusConfig::from_env(env),
            token_public_key: env.required("OBA_TOKEN_PUBLIC_KEY_FILE").map(PathBuf::from),
        }
    }

    /// Connects and migrates the database (schema `M`) and connects the bus (`in_process`
    /// when no `OBA_BUS_URL` is set, as in `oba up`).
    pub async fn connect<M: MigratorTrait>(
        &self,
        in_process: Option<Bus>,
    ) -> Result<Backends, ConfigError> {
        let verifier = TokenVerifier::from_pem_file(&self.token_public_key)?;
        Ok(Backends {
            verifier,
            db: db::connect_and_migrate::<M>(&self.database).await?,
            bus: self.bus.connect(in_process).await?,
            namespace: self.bus.namespace.value.clone(),
        })
    }
}

/// [`BackendsConfig`] plus post-service's address, for the services that ask post-service
/// about the posts they are called about (`OBA_POST_SERVICE_URL`).
#[derive(Debug, Clone)]
pub struct PostReaderConfig {
    pub backends: BackendsConfig,
    pub post_service: Setting<String>,
}

impl PostReaderConfig {
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            backends: BackendsConfig::from_env(env),
            post_service: env.required("OBA_POST_SERVICE_URL"),
        }
    }
}

/// A service's connected database and bus.
#[derive(Clone)]
pub struct Backends {
    pub verifier: TokenVerifier,
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub namespace: String,
}

impl Backends {
    fn app(&self, name: &'static str) -> ServiceApp {
        let app = ServiceApp::new(name, self.verifier.clone())
            .readiness(db::readiness(self.db.clone()))
            .readiness(bus::readiness(self.bus.clone()));
        match db::Checkpointer::of(&self.db, db::SQLITE_CHECKPOINT_EVERY, db::SQLITE_LOG_LIMIT) {
            Some(checkpointer) => app.background(move |stop| Box::pin(checkpointer.run(stop))),
            None => app,
        }
    }

    /// The app of a service that publishes events, with its outbox relay running; its stores
    /// write events through the returned outbox.
    pub fn publishing_app(&self, name: &'static str) -> (ServiceApp, Outbox) {
        let outbox = Outbox::default();
        let app = self.app(name);
        let relay = Relay::new(
            self.db.clone(),
            self.bus.clone(),
            &self.namespace,
            outbox.clone(),
            app.metrics(),
        );
        (
            app.background(move |shutdown| Box::pin(relay.run(shutdown))),
            outbox,
        )
    }

    /// [`Backends::publishing_app`] for a service that also asks post-service (at
    /// `post_service`) about the posts it is called about: the directory it asks through
    /// forgets each deleted post as its event passes, in every replica.
    pub fn publishing_post_reader(
        &self,
        name: &'static str,
        post_service: &Setting<String>,
    ) -> Result<(ServiceApp, Outbox, PostDirectory), ConfigError> {
        let posts = PostDirectory::connect(post_service)?;
        let deleted = self.bus.listen(&format!("{}.post.deleted", self.namespace));
        let (app, outbox) = self.publishing_app(name);
        let forgetting = posts.clone();
        let app =
            app.background(move |shutdown| Box::pin(forgetting.forget_deleted(deleted, shutdown)));
        Ok((app, outbox, posts))
    }

    /// The app of a service that consumes `subjects` (durable consumer `name`) into
    /// `projection`. It subscribes now, before any relay can publish.
    pub fn consuming_app<P: Projection>(
        &self,
        name: &'static str,
        subjects: Vec<String>,
        projection: P,
    ) -> ServiceApp {
        let app = self.app(name);
        let deliveries = self.bus.subscribe(name, subjects.clone());
        let (db, metrics) = (self.db.clone(), app.metrics().clone());
        let (bus, lag_metrics) = (self.bus.clone(), metrics.clone());
        let pruned = self.db.clone();
        app.background(move |shutdown| {
            Box::pin(
                async move { consumer::run(deliveries, db, projection, &metrics, shutdown).await },
            )
        })
        .background(move |shutdown| {
            Box::pin(async move {
                consumer::report_lag(bus, name, subjects, &lag_metrics, shutdown).await
            })
        })
        .background(move |shutdown| Box::pin(consumer::prune_until(pruned, shutdown)))
    }
}
