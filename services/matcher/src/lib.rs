//! Matcher: builds the alert index from the alert stream and turns ticks and schedules into triggers.
//!
//! The service ([`run`]) rebuilds its whole state from the local aggregates at start, then follows
//! `ALERTS`, consumes `TICKS` with a durable pull consumer, fires scheduled occurrences on a timer, and
//! publishes one `trigger.fired` per firing to this site's `TRIGGERS` origin. The index
//! ([`AlertIndex`]) is pure and usable on its own (`insert`, `remove`, `on_tick`, `fire_due`).
//!
//! # What fires when
//!
//! **Target price.** An alert fires when the last trade price *reaches* its target coming from the side it
//! was armed on: `up` when the price goes from below the target to the target or above, `down` from above
//! to the target or below, `either` whichever way. A jump over several targets fires all of them, on the
//! tick that jumped. An alert is armed while the price is strictly on its arming side; reaching the
//! target disarms it (fires, or waits if it came from the wrong side).
//!
//! The API records the side the price was on when the alert was written (`side_at_creation`, from the
//! latest price it knew). The first tick stamped at or after the alert event is evaluated as if the
//! previous price had been on that side. So:
//!
//! * created *below* an `up` target: the first tick at or above the target fires it (the price really
//!   moved there after the user looked);
//! * created with the target **already reached or passed** (`up` with the price at or above the target,
//!   `down` at or below, `either` exactly at it): it does **not** fire on that stale price. It waits until
//!   a tick is back strictly on the arming side (below for `up`), and fires when a later tick reaches the
//!   target again. Until then it is armed but silent, however long the price stays past the target.
//!
//! **Change rate.** The change in percent over the alert's basis: `daily` is the exchange's own
//! `signed_change_rate` (Upbit: since 00:00 KST); `5m`, `1h` and `24h` are computed from the tick stream
//! itself, `(price − price at window start) / price at window start`, with the window start exact to
//! 1 s / 10 s / 60 s and rounded to 0.0001 %. `up` fires when the change rises to `+threshold` or above,
//! `down` when it falls to `−threshold` or below, `either` when its size rises to the threshold — on
//! *crossing*, never again while it stays past. A new, edited or resumed change alert takes the side of
//! the change before its first tick; created with the threshold already passed, it waits for the change
//! to come back and cross again. A rolling window fires nothing until the ticks seen cover it.
//!
//! **Scheduled.** At `time_of_day` in the alert's time zone (default Asia/Seoul) on each of its weekdays
//! and dates; a time skipped by a daylight-saving jump fires at the end of the gap, a repeated one once, at
//! the first. The trigger carries the latest price (and tick) of each chosen market known to this
//! matcher. Occurrences are strictly after the alert was created, edited or resumed. On restart or
//! failover, an occurrence missed by at most `schedule_grace` (10 min) fires once; older ones are skipped
//! and counted. Occurrence ids make a repeat a stored duplicate.
//!
//! **Every alert.** `once` fires once, then is spent until edited (resuming does not re-arm it).
//! `repeat` re-arms `cooldown_seconds` after a firing (by trade time) at the first tick after that,
//! taking the side of the value before that tick — so a price still past the target must come back and
//! cross again; scheduled alerts fire at every occurrence and drop one that falls inside the cooldown.
//! Paused alerts never fire; resuming re-arms from the current side. Expired alerts (`expires_at`, by
//! trade time, inclusive) never fire. Deleted alerts leave the index for good. An edit is a fresh alert:
//! new definition, not spent, no cooldown.
//!
//! # Same triggers at both sites
//!
//! Both sites' matchers compute every trigger, and the trigger id makes the two copies one message in the
//! aggregates. A firing's id is `trg:<alert>:g<generation>` with generation `version × 10⁹ + n`, `n`
//! counting firings under that alert version ([`index::generation`]), or `trg:<alert>:o<occurrence>`.
//! Everything these depend on comes from the streams, never from a local clock or arrival order:
//!
//! * per market, ticks are evaluated in exchange `sequential_id` order and a tick not after the last one
//!   evaluated is dropped (the two aggregates interleave their origins differently);
//! * alert events take effect at their event time: only ticks *stamped* at or after it are evaluated
//!   against them; cooldowns and expiry use trade times;
//! * an alert event that arrives after ticks stamped later than it (replication lag) is replayed against
//!   the market's recent ticks (`replay_window`, `replay_ticks_max`), so it fires exactly as if it had
//!   arrived first.
//!
//! Not covered: a pause or delete that arrives after a tick it should have stopped (one site may fire
//! where the other did not; the trigger is real but late), an alert event older than the replay window
//! (a long partition), and the cross-site conflict of two events with one version — applied in
//! (version, time, site) order, which both sites reach only when they see the events in the same order.

mod config;
mod crossing;
pub mod index;
mod model;
mod rebuild;
pub mod schedule;
mod service;
mod window;

use coinalarm_runtime::shutdown::ServiceFuture;
use coinalarm_runtime::{Config, Shutdown};

pub use config::MatcherConfig;
pub use index::{AlertIndex, Applied, DueOutcome, IndexSettings, IndexSizes, TickOutcome};
pub use rebuild::RebuildCounts;
pub use service::Error;
pub use window::ROLLING_BASES;

/// The name this service goes by in config (`nats.users.matcher`), logs and metrics.
pub const NAME: &str = "matcher";

/// Runs the service until `shutdown` is triggered.
pub async fn run(
    config: Config,
    shutdown: Shutdown,
) -> Result<(), coinalarm_runtime::shutdown::BoxError> {
    service::run(config, shutdown).await.map_err(Into::into)
}

/// `run` as a boxed future, the shape the process host takes.
pub fn start(config: Config, shutdown: Shutdown) -> ServiceFuture {
    Box::pin(run(config, shutdown))
}
