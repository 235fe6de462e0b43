//! Projector: projects the aggregate streams (USERS, ALERTS, TRIGGERS, DISPATCH, TICKS, DEADLETTER)
//! into the Postgres read models the API reads, exactly once per event.
//!
//! Each projection has its own durable pull consumer on this site's aggregate stream
//! (`projector-<name>`) and applies every batch in one transaction together with its
//! `projection_checkpoints` row; see [`batch`] for why that is exactly-once, [`runner`] for ordering,
//! back-pressure and retries, [`merge`] for cross-site conflicts, [`mod@rebuild`] for rebuilding into
//! another schema, [`mod@swap`] for putting such a rebuild in place of the live tables and
//! [`mod@status`] for how far each projection is behind its stream.

pub mod batch;
pub mod config;
pub mod event;
pub mod merge;
pub mod projections;
pub mod rebuild;
pub mod runner;
pub mod status;
pub mod swap;
pub mod target;

use std::time::Duration;

use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::shutdown::{BoxError, ServiceFuture};
use coinalarm_runtime::{Config, Shutdown};
use deadpool_postgres::Pool;

pub use config::ProjectorConfig;
pub use projections::Projection;
pub use rebuild::{
    NoProgress, RebuildOptions, RebuildProgress, RebuildReport, rebuild, rebuild_with_progress,
};
pub use status::{ProjectionStatus, status};
pub use swap::{SwapOptions, SwapReport, swap};
pub use target::Target;

/// The name this service goes by in config (`nats.users.projector`), logs and metrics.
pub const NAME: &str = "projector";

/// Why the projector could not start. Once running it does not fail: NATS and Postgres outages are
/// waited out with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Section(#[from] coinalarm_runtime::config::SectionError),
    #[error(transparent)]
    Settings(#[from] config::ConfigError),
    #[error(transparent)]
    Nats(#[from] coinalarm_runtime::bus::Error),
    #[error("invalid postgres settings")]
    Postgres(#[source] coinalarm_runtime::postgres::Error),
    #[error("the read-model migrations cannot be applied")]
    Migrate(#[source] target::MigrateError),
}

/// Runs the service until `shutdown` is triggered.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), BoxError> {
    run_projector(config, shutdown).await.map_err(Into::into)
}

/// `run` as a boxed future, the shape the process host takes.
pub fn start(config: Config, shutdown: Shutdown) -> ServiceFuture {
    Box::pin(run(config, shutdown))
}

async fn run_projector(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let settings: ProjectorConfig = config.section(NAME)?;
    let target = settings.validate()?;
    let bus = Bus::connect(&config, NAME).await?;
    let Some(pool) = connect_pool(&config, &settings, &shutdown).await? else {
        return Ok(());
    };
    if settings.migrate && !migrate(&pool, &target, &settings, &shutdown).await? {
        return Ok(());
    }
    tracing::info!(site = %config.site, schema = %target, projections = ?settings.projections, "projector running");
    let mut running = tokio::task::JoinSet::new();
    for projection in settings.projections.iter().copied() {
        let runner = runner::ProjectionRunner {
            projection,
            bus: bus.clone(),
            pool: pool.clone(),
            target: target.clone(),
            settings: settings.clone(),
            shutdown: shutdown.clone(),
        };
        running.spawn(runner.run());
    }
    while let Some(joined) = running.join_next().await {
        if let Err(error) = joined {
            // A panic is a bug; the others go on, and the process host sees the service end when all do.
            tracing::error!(%error, "a projection task ended abnormally");
        }
    }
    Ok(())
}

/// Connects to Postgres, waiting for it with backoff: the projector may start before its database.
/// `None` if shutdown came first.
async fn connect_pool(
    config: &Config,
    settings: &ProjectorConfig,
    shutdown: &Shutdown,
) -> Result<Option<Pool>, Error> {
    let mut delay = settings.retry_min;
    loop {
        match coinalarm_runtime::postgres::connect_pool(&config.postgres).await {
            Ok(pool) => return Ok(Some(pool)),
            Err(error @ coinalarm_runtime::postgres::Error::InvalidUrl(_))
            | Err(error @ coinalarm_runtime::postgres::Error::Build(_)) => {
                return Err(Error::Postgres(error));
            }
            Err(error) => {
                tracing::warn!(error = %runner::ErrorChain(&error), "postgres not reachable yet; retrying");
            }
        }
        if wait_or_stop(&mut delay, settings.retry_max, shutdown).await {
            return Ok(None);
        }
    }
}

/// Applies the migrations to the target, retrying while the database is unreachable. `false` if
/// shutdown came first.
async fn migrate(
    pool: &Pool,
    target: &Target,
    settings: &ProjectorConfig,
    shutdown: &Shutdown,
) -> Result<bool, Error> {
    let mut delay = settings.retry_min;
    loop {
        match target.migrate(pool).await {
            Ok(applied) => {
                tracing::info!(schema = %target, applied, "read-model schema up to date");
                return Ok(true);
            }
            Err(
                error @ (target::MigrateError::Migrate(_)
                | target::MigrateError::Runtime(
                    coinalarm_runtime::postgres::Error::Migrate(_),
                )),
            ) => return Err(Error::Migrate(error)),
            Err(error) => {
                tracing::warn!(error = %runner::ErrorChain(&error), "cannot migrate yet; retrying");
            }
        }
        if wait_or_stop(&mut delay, settings.retry_max, shutdown).await {
            return Ok(false);
        }
    }
}

/// Sleeps `delay` (doubled for next time, up to `max`); true if shutdown came first.
async fn wait_or_stop(delay: &mut Duration, max: Duration, shutdown: &Shutdown) -> bool {
    let current = *delay;
    *delay = (*delay * 2).min(max);
    tokio::select! {
        () = tokio::time::sleep(current) => false,
        () = shutdown.wait() => true,
    }
}
