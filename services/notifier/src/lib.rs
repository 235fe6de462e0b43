//! Notifier: turns triggers and sign-in code requests into SMS dispatch requests — Korean and English
//! texts fitted to a segment budget, per-user caps, quiet hours, coalescing and staleness — with every
//! trigger that is not sent recorded as a `dispatch.skipped` event with its reason.
//!
//! Pure parts ([`templates`], [`sms`], [`format`], [`policy`], [`state`]) are usable and tested on their
//! own; [`service`] wires them to the streams.

pub mod config;
pub mod format;
pub mod policy;
pub mod service;
pub mod sms;
pub mod state;
pub mod templates;

use coinalarm_runtime::shutdown::ServiceFuture;
use coinalarm_runtime::{Config, Shutdown};

pub use config::NotifierConfig;
pub use policy::Ownership;
pub use service::Error;

/// The name this service goes by in config (`[notifier]`, `nats.users.notifier`), logs and metrics.
pub const NAME: &str = "notifier";

/// Runs the service until `shutdown` is triggered.
pub async fn run(
    config: Config,
    shutdown: Shutdown,
) -> Result<(), coinalarm_runtime::shutdown::BoxError> {
    service::run(config, shutdown).await?;
    Ok(())
}

/// `run` as a boxed future, the shape the process host takes.
pub fn start(config: Config, shutdown: Shutdown) -> ServiceFuture {
    Box::pin(run(config, shutdown))
}
