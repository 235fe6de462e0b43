//! API: the REST service for the web client. Commands (sign-in, alerts, preferences, provider
//! callbacks) become events on the streams; reads come from the Postgres read models; Redis holds
//! sign-in codes, rate-limit counters and revoked sessions.
//!
//! * Routes and their documentation: [`routes`] (OpenAPI at `/openapi.json`, Swagger UI at `/docs`).
//! * Errors: one [`error::ErrorCode`] enum, every 4xx/5xx is `{"code", "message"}`.
//! * Command side: [`aggregates`] (state from the aggregate's own subject, optimistic concurrency,
//!   home-site routing); reads see the user's own writes: [`consistency`].
//! * Sessions: signed tokens checked without a store ([`session`]), sign-outs replicated as events
//!   ([`revocations`]).
//!
//! * The web client: [`web_root`] serves its built files at `/` when `api.web_root` is set.
//!
//! The service starts whatever is down: Postgres and Redis are connected in the background and each
//! route answers 503 with a code naming what is missing; `/readyz` says which.

pub mod aggregates;
pub mod auth;
pub mod config;
pub mod consistency;
pub mod error;
pub mod live;
pub mod market_data;
pub mod revocations;
pub mod routes;
pub mod session;
pub mod state;
pub mod statements;
pub mod web_root;

use std::net::SocketAddr;
use std::sync::OnceLock;

use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::sealing::Sealer;
use coinalarm_runtime::shutdown::{BoxError, ServiceFuture};
use coinalarm_runtime::{Config, Shutdown};
use proto_events::domain::Exchange;
use proto_events::markets::Catalogue;

pub use config::ApiConfig;
pub use routes::api_router;

use crate::session::SessionKeyring;
use crate::state::{AppState, Inner, Keys};

/// The name this service goes by in config (`nats.users.api`), logs and metrics.
pub const NAME: &str = "api";

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error("[api] sealing_keys: {0}")]
    Sealing(#[from] coinalarm_runtime::sealing::Error),
    #[error("[api] exchange: {0}")]
    Exchange(proto_events::domain::ParseError),
    #[error(transparent)]
    Bus(#[from] coinalarm_runtime::bus::Error),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("the http server failed: {0}")]
    Serve(std::io::Error),
}

/// A bound, not yet serving API: lets a caller (tests, the CLI) learn the address first.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
    web_root: Option<web_root::WebRoot>,
    shutdown: Shutdown,
}

/// The recorder this process renders on `/metrics`: the one telemetry installed, else one installed
/// here (once per process).
fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static OWN: OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> = OnceLock::new();
    if let Some(handle) = coinalarm_runtime::telemetry::prometheus_handle() {
        return Some(handle);
    }
    OWN.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .ok()
    })
    .clone()
}

impl Server {
    /// Checks the configuration, connects (NATS at once; Postgres and Redis in the background) and
    /// binds the listener.
    pub async fn bind(config: Config, shutdown: Shutdown) -> Result<Server, Error> {
        let settings: ApiConfig = config
            .section(NAME)
            .map_err(|error| Error::Config(error.into()))?;
        settings.validate()?;
        let web_root = settings.web_root()?;
        let sealer = Sealer::from_config(&settings.sealing_keys)?;
        let exchange = Exchange::parse(&settings.exchange).map_err(Error::Exchange)?;
        let sessions = SessionKeyring::new(
            settings.session_keys.current.clone(),
            config::session_key_bytes(&settings.session_keys)?,
        );
        let keys = Keys::new(settings.phone_hash_key_bytes()?);
        let public_base = settings.public_base()?;
        let bus = Bus::connect(&config, NAME).await?;
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .map_err(|source| Error::Listen {
                address: settings.listen.clone(),
                source,
            })?;
        let state = AppState::new(Inner {
            site: config.site,
            exchange,
            bus: bus.clone(),
            postgres: OnceLock::new(),
            redis: OnceLock::new(),
            keys,
            sessions,
            sealer,
            public_base,
            catalogue: Catalogue::upbit(),
            revoked: state::RevokedSessions::default(),
            live: live::LiveHub::default(),
            projections: consistency::ProjectionWaiter::default(),
            metrics: metrics_handle(),
            shutdown: shutdown.clone(),
            settings,
        });
        state::connect_postgres_in_background(state.clone(), config.clone(), shutdown.clone());
        state::connect_redis_in_background(state.clone(), config.clone(), shutdown.clone());
        revocations::start(state.clone(), shutdown.clone());
        consistency::ProjectionWaiter::start(&state, shutdown.clone());
        state.live.start(bus, shutdown.clone());
        Ok(Server {
            listener,
            state,
            web_root,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until shutdown, then lets requests in flight finish (the live streams end at once).
    pub async fn serve(self) -> Result<(), Error> {
        let address = self.local_addr().ok();
        tracing::info!(service = NAME, site = %self.state.site, address = ?address, "api listening");
        let mut app = routes::app(self.state.clone());
        if let Some(web_root) = &self.web_root {
            tracing::info!(service = NAME, directory = %web_root.directory().display(), "serving the web client at /");
            app = web_root.attach(app);
        }
        let shutdown = self.shutdown.clone();
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .map_err(Error::Serve)?;
        if let Some(redis) = self.state.redis.get() {
            let _ = redis.quit().await;
        }
        if let Err(error) = self.state.bus.client().flush().await {
            tracing::debug!(%error, "flushing the bus at shutdown failed");
        }
        tracing::info!(service = NAME, "api stopped");
        Ok(())
    }
}

/// Runs the service until `shutdown` is triggered.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), BoxError> {
    let server = Server::bind(config, shutdown).await?;
    server.serve().await?;
    Ok(())
}

/// `run` as a boxed future, the shape the process host takes.
pub fn start(config: Config, shutdown: Shutdown) -> ServiceFuture {
    Box::pin(run(config, shutdown))
}
