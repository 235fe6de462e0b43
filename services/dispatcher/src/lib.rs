//! Dispatcher: sends SMS through providers with retries and fallback, and records every outcome as an event.
//!
//! # What it does
//!
//! It consumes `dispatch.requested` events from the local `DISPATCH` aggregate with two durable pull
//! consumers — `dispatcher-sign-in` for `dispatch.request.p0.>` (sign-in codes) and `dispatcher` for
//! `p1`/`p2` (alerts, scheduled reports) — each with its own bound on provider calls in flight, so a
//! backlog of alerts never delays a code someone is waiting for. For each request:
//!
//! 1. **Ownership.** The request's `owning_site` sends it; the other site watches it until its
//!    outcome is final ([`OwnershipDecision::Watch`]) and takes it over when the owner's dispatcher is
//!    judged dead by its heartbeats and the request is older than the takeover delay ([`SiteAware`],
//!    `coinalarm_runtime::sites`); a claim by a site judged dead counts as lost at once. While a site
//!    rejoins its peer (after a start or a partition) it holds even its own requests until the peer's
//!    outcomes have reached it ([`OwnershipDecision::Hold`]), so it never resends what the peer sent
//!    while it was away.
//! 2. **State.** It reads the last outcome on `dispatch.outcome.<dispatch_id>` (direct get from the
//!    aggregate and from this site's origin stream, see [`outcomes`]) and stops if the dispatch was
//!    already sent, refused or dead-lettered; waits if an attempt is claimed and its lease still runs or
//!    a retry is scheduled for later.
//! 3. **Expiry and attempts.** A request past `expires_at`, or out of attempts, is dead-lettered
//!    (`dispatch.dead_lettered`, reason `expired` / `attempts_exhausted`) instead of sent.
//! 4. **Claim.** It publishes `dispatch.claimed` for attempt *n* (message id
//!    `out:<dispatch_id>:claimed:<site>:<n>`, lease = provider timeout + margin) *before* calling
//!    the provider. If JetStream reports that claim as a duplicate, an earlier delivery claimed the same
//!    attempt and the lease decides.
//! 5. **Send.** The primary provider while its circuit breaker is closed, the fallback while it is
//!    open; after the sender's token-bucket slot. Sealed bodies (sign-in codes) are opened only here.
//! 6. **Outcome.** `dispatch.sent` with the provider's message SID, or `dispatch.failed` (permanent:
//!    no retry, plus `dispatch.dead_lettered`; transient: retry with exponential backoff and jitter,
//!    honouring `Retry-After`, inside the delivery for short waits, as a delayed redelivery for long
//!    ones). Every outcome continues the request's correlation id, causation and trace.
//!
//! Undecodable messages are parked in the `DEADLETTER` stream by the runtime's consumer loop and never
//! block the lane.
//!
//! # The remaining window: exactly-once effect, at-least-once in one crash case
//!
//! A claim followed by an outcome makes a redelivered request harmless: the dispatcher sees `sent`
//! (or `failed`, or a live claim) and does not call the provider again. What no protocol on our side can
//! close is the gap **between the provider accepting the SMS and `dispatch.sent` being stored**. If the
//! process dies in that gap (or NATS refuses every attempt to store `sent` for a whole lease), the
//! request is redelivered after `ack_wait`, the dispatcher finds a claim without an outcome, waits for
//! its lease to run out (the attempt might still be in flight), counts a *lost claim*
//! (`coinalarm_dispatcher_lost_claims_total`) and **sends again** as attempt *n + 1*: one duplicate SMS.
//!
//! Why send again rather than give up: a dispatcher that dies after the claim but *before* the provider
//! call looks exactly the same from the streams, and there the SMS was never sent. Twilio's Messages API
//! has no idempotency key to ask "did you already take this one?", so we choose at-least-once: a
//! duplicate price alert is an annoyance, a lost one (or a lost sign-in code) is a failure of the
//! product. The window is the time of one `publish` round trip to the local NATS (about a millisecond),
//! the duplicate is bounded to one per crash per in-flight request (at most `concurrency +
//! sign_in_concurrency` per crash), and it stays visible: the timeline shows a claim without an outcome
//! before the attempt that was sent, and both SMS carry the dispatch and their attempt in their
//! status-callback URL, so delivery reports arrive for both attempts. The test
//! `crash_window` measures it: a crash after the provider call gives exactly one duplicate in the fake
//! provider's ledger; a crash after the claim but before the call gives none.
//!
//! A related, smaller window: a provider call that **times out** may have been accepted anyway (the
//! answer was lost, not the request). It is retried like any transient failure, so it can also give one
//! duplicate; the provider timeout should sit well above the provider's normal latency.
//!
//! # Entry points
//!
//! [`run`] / [`start`] run the service; [`run_with_hooks`] adds test hooks. [`twilio`] is the provider
//! client and the `X-Twilio-Signature` functions (the API uses them for status callbacks, with
//! [`callback::CallbackTarget`] to read which dispatch a callback is about). [`fake_twilio`] is the
//! fake provider for tests and the demo.

pub mod breaker;
pub mod callback;
pub mod config;
pub mod fake_twilio;
pub mod outcomes;
pub mod providers;
pub mod rate_limit;
pub mod service;
pub mod twilio;

use coinalarm_runtime::shutdown::ServiceFuture;
use coinalarm_runtime::{Config, Shutdown};

pub use config::DispatcherConfig;
pub use service::{
    Error, Hook, HookPoint, Hooks, Lane, Options, OwnerOnly, OwnershipDecision, OwnershipPolicy,
    SiteAware,
};

/// The name this service goes by in config (`nats.users.dispatcher`), logs and metrics.
pub const NAME: &str = "dispatcher";

/// Runs the service until `shutdown` is triggered, taking over the peer's requests when it is judged
/// dead (`[sites]`).
pub async fn run(
    config: Config,
    shutdown: Shutdown,
) -> Result<(), coinalarm_runtime::shutdown::BoxError> {
    let options = Options {
        sites: Some(coinalarm_runtime::sites::SitesConfig::from_config(&config)?),
        ..Options::default()
    };
    service::run_with(config, shutdown, options)
        .await
        .map_err(Into::into)
}

/// [`run`] with test hooks in the send path.
pub async fn run_with_hooks(config: Config, shutdown: Shutdown, hooks: Hooks) -> Result<(), Error> {
    let options = Options {
        hooks,
        ..Options::default()
    };
    service::run_with(config, shutdown, options).await
}

/// [`run`] with hooks and an ownership policy (the two-site takeover plugs in here).
pub async fn run_with_options(
    config: Config,
    shutdown: Shutdown,
    options: Options,
) -> Result<(), Error> {
    service::run_with(config, shutdown, options).await
}

/// `run` as a boxed future, the shape the process host takes.
pub fn start(config: Config, shutdown: Shutdown) -> ServiceFuture {
    Box::pin(run(config, shutdown))
}
