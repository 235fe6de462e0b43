//! The dispatcher service: two durable pull consumers on the local `DISPATCH` aggregate (sign-in codes
//! in their own lane), and for every request the claim → provider call → outcome protocol with
//! retries, fallback, expiry and dead-lettering.

use std::sync::Arc;
use std::time::Duration;

use coinalarm_runtime::bus::{self, BatchHandler, Bus, ConsumerSpec, Delivery, Disposition};
use coinalarm_runtime::sealing::{self, Purpose, Sealer, Zeroizing};
use coinalarm_runtime::shutdown::BoxError;
use coinalarm_runtime::sites::{self, Liveness, Responsibility, SitesConfig};
use coinalarm_runtime::{Config, Shutdown};
use futures::future::BoxFuture;
use jiff::Timestamp;
use proto_events::domain::ProviderName;
use proto_events::events::{
    DeadLetterReason, DispatchClaimed, DispatchDeadLettered, DispatchFailed, DispatchRequested,
    DispatchSent, MessageBody,
};
use proto_events::subjects::subject;
use proto_events::{Category, DispatchId, Envelope, Event, EventPayload, Priority, Site};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::callback::CallbackTarget;
use crate::config::{self, DispatcherConfig};
use crate::outcomes::{self, Next, Outcome, OutcomeReader, WaitReason};
use crate::providers::{BreakerObserver, Choice, Provider, Providers};
use crate::twilio::{self, ErrorClass, NewMessage};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error("[dispatcher.sealing_keys] {0}")]
    Sealing(#[from] sealing::Error),
    #[error("provider client: {0}")]
    Provider(#[from] twilio::Error),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Outcomes(#[from] outcomes::Error),
    #[error(transparent)]
    Sites(#[from] coinalarm_runtime::config::SectionError),
}

/// What this site does with a request, by [`OwnershipPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnershipDecision {
    /// Send it (this site owns it, or has taken it over).
    Send,
    /// Acknowledge it and forget it: another site sends it.
    Skip,
    /// Not ours now, but keep it: look again after this long, and acknowledge it once its outcome is
    /// final. What a takeover policy returns while the owner is alive, so the request is still at hand
    /// when the owner is judged dead.
    Watch { recheck_after: Duration },
    /// Ours, but not now: this site is catching up with its peer after a start or a partition (the
    /// peer may have sent it meanwhile, and its outcome is on the way). Look again after this long.
    Hold { retry_after: Duration },
}

/// Which site sends a request. [`OwnerOnly`]: only the owning site. [`SiteAware`] (what `run` uses):
/// the owner, and the other site once the owner's dispatcher is judged dead by its heartbeats and the
/// request is older than the takeover delay; `Watch` for the peer's requests until then.
pub trait OwnershipPolicy: Send + Sync {
    fn decide(&self, request: &DispatchRequested, local_site: Site) -> OwnershipDecision;

    /// Whether another site's claim whose lease still runs can be treated as lost at once, because
    /// that site is judged dead: its attempt is no longer in flight (it reached the provider or it did
    /// not), so waiting for the lease would only delay the takeover.
    fn claim_abandoned(&self, claim: &DispatchClaimed, local_site: Site) -> bool {
        let _ = (claim, local_site);
        false
    }
}

/// Send only what this site owns; skip the rest.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnerOnly;

impl OwnershipPolicy for OwnerOnly {
    fn decide(&self, request: &DispatchRequested, local_site: Site) -> OwnershipDecision {
        if request.owning_site == local_site {
            OwnershipDecision::Send
        } else {
            OwnershipDecision::Skip
        }
    }
}

/// Decides by the site's judgement of its peer ([`coinalarm_runtime::sites`]): own requests are sent
/// (held while the site rejoins its peer), the peer's are watched, and taken over once the peer's
/// dispatcher is judged dead and the request is older than `sites.takeover_delay`.
#[derive(Debug, Clone)]
pub struct SiteAware {
    liveness: Liveness,
}

impl SiteAware {
    pub fn new(liveness: Liveness) -> SiteAware {
        SiteAware { liveness }
    }
}

impl OwnershipPolicy for SiteAware {
    fn decide(&self, request: &DispatchRequested, local_site: Site) -> OwnershipDecision {
        let view = self.liveness.view();
        debug_assert_eq!(view.site, local_site);
        match view.responsibility(request.owning_site, crate::NAME, request.created_at) {
            Responsibility::Act { .. } => OwnershipDecision::Send,
            Responsibility::Hold { retry_after } => OwnershipDecision::Hold { retry_after },
            Responsibility::Watch { recheck_after } => OwnershipDecision::Watch { recheck_after },
            Responsibility::Leave => OwnershipDecision::Skip,
        }
    }

    fn claim_abandoned(&self, claim: &DispatchClaimed, local_site: Site) -> bool {
        claim.site != local_site && self.liveness.view().takes_over(claim.site, crate::NAME)
    }
}

/// How to run the dispatcher beyond its config.
#[derive(Clone)]
pub struct Options {
    pub hooks: Hooks,
    pub ownership: Arc<dyn OwnershipPolicy>,
    /// When set, the dispatcher watches its peer with these settings and decides with [`SiteAware`]
    /// instead of `ownership` (what [`crate::run`] does, from the config's `[sites]`).
    pub sites: Option<SitesConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hooks: Hooks::default(),
            ownership: Arc::new(OwnerOnly),
            sites: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Options")
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

/// Where a hook runs, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookPoint {
    pub dispatch_id: DispatchId,
    pub attempt: u32,
    pub provider: ProviderName,
}

/// A hook: awaited in line, so a test can hold the dispatcher at that point (and kill it there).
pub type Hook = Arc<dyn Fn(HookPoint) -> BoxFuture<'static, ()> + Send + Sync>;

/// Test hooks into the send path. Production runs with none.
#[derive(Clone, Default)]
pub struct Hooks {
    /// After the claim is stored, before the provider is called.
    pub before_provider_call: Option<Hook>,
    /// After the provider answered, before the outcome is published: the crash window.
    pub after_provider_call: Option<Hook>,
    /// Every circuit-breaker transition.
    pub on_breaker_change: Option<BreakerObserver>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Hooks")
            .field("before_provider_call", &self.before_provider_call.is_some())
            .field("after_provider_call", &self.after_provider_call.is_some())
            .field("on_breaker_change", &self.on_breaker_change.is_some())
            .finish()
    }
}

/// The two consumers of dispatch requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// `dispatch.request.p0.>`: sign-in codes, a person waiting at a screen.
    SignIn,
    /// `dispatch.request.p1.>` and `p2.>`: alerts and scheduled reports.
    Notifications,
}

impl Lane {
    pub const fn durable_name(self) -> &'static str {
        match self {
            Lane::SignIn => "dispatcher-sign-in",
            Lane::Notifications => "dispatcher",
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Lane::SignIn => "sign_in",
            Lane::Notifications => "notifications",
        }
    }

    fn priorities(self) -> &'static [Priority] {
        match self {
            Lane::SignIn => &[Priority::SignIn],
            Lane::Notifications => &[Priority::Alert, Priority::Scheduled],
        }
    }

    /// The durable pull consumer of this lane on the local `DISPATCH` aggregate.
    pub fn consumer_spec(self, settings: &DispatcherConfig) -> ConsumerSpec {
        let filters = self
            .priorities()
            .iter()
            .map(|priority| subject::dispatch_request(None, *priority, ">"))
            .collect();
        let mut spec = ConsumerSpec::new(
            Category::Dispatch.aggregate_stream(),
            self.durable_name(),
            filters,
        );
        spec.ack_wait = settings.ack_wait;
        spec.batch_size = settings.batch_size;
        spec.max_ack_pending = settings.max_ack_pending;
        spec.park_after_deliveries = settings.park_after_deliveries;
        spec
    }
}

/// Runs the dispatcher until `shutdown`.
pub async fn run_with(config: Config, shutdown: Shutdown, options: Options) -> Result<(), Error> {
    let Options {
        hooks,
        ownership,
        sites: sites_settings,
    } = options;
    let settings = DispatcherConfig::from_runtime(&config)?;
    let (providers, lease) = build_providers(&settings, &hooks)?;
    let worst_case = settings.worst_case_batch(lease);
    if worst_case > settings.ack_wait {
        tracing::warn!(
            ack_wait_seconds = settings.ack_wait.as_secs_f64(),
            worst_case_seconds = worst_case.as_secs_f64(),
            "a batch of slow provider calls can outlast ack_wait; raise ack_wait or lower batch_size"
        );
    }
    let sealer = if settings.sealing_keys.is_configured() {
        Some(Sealer::from_config(&settings.sealing_keys)?)
    } else {
        tracing::warn!(
            "no [dispatcher.sealing_keys]: sealed bodies (sign-in codes) cannot be opened and will be parked"
        );
        None
    };
    let bus = Bus::connect(&config, crate::NAME).await?;
    let outcomes = OutcomeReader::new(bus.jetstream(), bus.site()).await?;
    let ownership: Arc<dyn OwnershipPolicy> = match sites_settings {
        Some(sites_settings) => Arc::new(SiteAware::new(Liveness::start(
            &bus,
            sites_settings,
            crate::NAME,
            shutdown.clone(),
        ))),
        None => ownership,
    };
    tokio::spawn(sites::count_duplicate_sends(
        bus.clone(),
        crate::NAME,
        shutdown.clone(),
    ));
    tracing::info!(
        site = %bus.site(),
        primary = %providers.primary().name(),
        fallback = providers.fallback().map(|provider| provider.name().as_str()).unwrap_or("none"),
        concurrency = settings.concurrency,
        sign_in_concurrency = settings.sign_in_concurrency,
        "dispatcher starting"
    );
    let dispatcher = Arc::new(Dispatcher {
        site: bus.site(),
        bus: bus.clone(),
        lease,
        providers,
        outcomes,
        sealer,
        hooks,
        ownership,
        shutdown: shutdown.clone(),
        settings: settings.clone(),
    });
    let mut sign_in = LaneHandler::new(
        Arc::clone(&dispatcher),
        Lane::SignIn,
        settings.sign_in_concurrency,
    );
    let mut notifications = LaneHandler::new(dispatcher, Lane::Notifications, settings.concurrency);
    let sign_in_spec = Lane::SignIn.consumer_spec(&settings);
    let notifications_spec = Lane::Notifications.consumer_spec(&settings);
    let consumed = tokio::try_join!(
        bus::run_consumer(&bus, &sign_in_spec, &mut sign_in, &shutdown),
        bus::run_consumer(&bus, &notifications_spec, &mut notifications, &shutdown),
    );
    // Acks are fire-and-forget publishes: push the last batch's out before the connection goes, or
    // its requests come back after ack_wait (harmless, but avoidable).
    if let Err(error) = bus.client().flush().await {
        tracing::warn!(%error, "flushing the last acknowledgements failed; those requests will be redelivered");
    }
    consumed?;
    tracing::info!("dispatcher stopped");
    Ok(())
}

/// The primary and fallback providers, and the claim lease: the longest provider timeout plus the
/// margin.
fn build_providers(
    settings: &DispatcherConfig,
    hooks: &Hooks,
) -> Result<(Providers, Duration), Error> {
    let (primary, fallback) = settings.resolve()?;
    let longest_timeout = primary.client.timeout.max(
        fallback
            .as_ref()
            .map_or(Duration::ZERO, |fallback| fallback.client.timeout),
    );
    let build = |resolved: crate::config::ResolvedProvider| {
        let breaker = settings.breaker_settings(resolved.client.timeout);
        Provider::new(resolved, breaker, hooks.on_breaker_change.clone())
    };
    let primary = build(primary)?;
    let fallback = fallback.map(build).transpose()?;
    Ok((
        Providers::new(primary, fallback),
        longest_timeout + settings.lease_margin,
    ))
}

/// Hands a batch's requests to the dispatcher, at most `permits` provider conversations at once. The
/// consumer fetches the next batch only when this one is settled: a slow provider slows the consumer.
struct LaneHandler {
    dispatcher: Arc<Dispatcher>,
    lane: Lane,
    permits: Arc<Semaphore>,
}

impl LaneHandler {
    fn new(dispatcher: Arc<Dispatcher>, lane: Lane, concurrency: usize) -> LaneHandler {
        LaneHandler {
            dispatcher,
            lane,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }
}

impl BatchHandler for LaneHandler {
    async fn handle(&mut self, batch: &[Delivery]) -> Result<Vec<Disposition>, BoxError> {
        let dispatcher = &self.dispatcher;
        let permits = &self.permits;
        let lane = self.lane;
        let work = batch.iter().map(|delivery| async move {
            let Ok(_permit) = permits.acquire().await else {
                // The semaphore is never closed; if it were, hand the request back.
                return Disposition::Retry {
                    after: Duration::from_secs(1),
                };
            };
            dispatcher.handle(delivery, lane).await
        });
        Ok(futures::future::join_all(work).await)
    }
}

/// A failed send attempt, as recorded.
struct FailedAttempt<'a> {
    attempt: u32,
    failed_at: Timestamp,
    provider: &'a ProviderName,
    error: &'a twilio::Error,
    retry_at: Option<Timestamp>,
}

struct Dispatcher {
    bus: Bus,
    site: Site,
    settings: DispatcherConfig,
    providers: Providers,
    outcomes: OutcomeReader,
    sealer: Option<Sealer>,
    hooks: Hooks,
    ownership: Arc<dyn OwnershipPolicy>,
    shutdown: Shutdown,
    /// How long a claim holds: the longest provider timeout plus a margin.
    lease: Duration,
}

fn count_request(lane: Lane, result: &'static str) {
    metrics::counter!("coinalarm_dispatcher_requests_total", "lane" => lane.label(), "result" => result)
        .increment(1);
}

fn count_dead_letter(reason: &DeadLetterReason) {
    let reason = match reason {
        DeadLetterReason::AttemptsExhausted { .. } => "attempts_exhausted",
        DeadLetterReason::Expired => "expired",
        DeadLetterReason::PermanentError { .. } => "permanent_error",
        DeadLetterReason::InvalidDestination => "invalid_destination",
    };
    metrics::counter!("coinalarm_dispatcher_dead_letters_total", "reason" => reason).increment(1);
}

/// Deliveries of a watched request at the normal recheck pace before it is looked at less often.
const WATCH_FAST_DELIVERIES: u64 = 60;

/// The slower pace.
const WATCH_SLOW_RECHECK: Duration = Duration::from_secs(5);

/// `wait` plus up to half of it again, at least 100 ms.
fn with_jitter(wait: Duration) -> Duration {
    let wait = wait.max(Duration::from_millis(100));
    wait + wait.mul_f64(fastrand::f64() / 2.0)
}

fn until(instant: Timestamp) -> Duration {
    let remaining = instant.duration_since(Timestamp::now());
    Duration::try_from(remaining)
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_millis(50))
}

impl Dispatcher {
    async fn handle(&self, delivery: &Delivery, lane: Lane) -> Disposition {
        let Event::DispatchRequested(request) = &delivery.envelope.data else {
            return Disposition::Park {
                reason_code: "unexpected_event_type".to_owned(),
                reason: format!(
                    "{} on a dispatch request subject; the dispatcher only sends dispatch.requested",
                    delivery.envelope.data.type_name()
                ),
            };
        };
        let decision = self.ownership.decide(request, self.site);
        let decision_label = match decision {
            OwnershipDecision::Send if request.owning_site == self.site => "own",
            OwnershipDecision::Send => "takeover",
            OwnershipDecision::Skip => "not_owner",
            OwnershipDecision::Watch { .. } => "watch",
            OwnershipDecision::Hold { .. } => "hold",
        };
        metrics::counter!("coinalarm_dispatcher_ownership_total", "lane" => lane.label(), "owner" => request.owning_site.as_str(), "decision" => decision_label)
            .increment(1);
        let watch = match decision {
            OwnershipDecision::Send => None,
            OwnershipDecision::Skip => {
                count_request(lane, "not_owner");
                tracing::debug!(dispatch_id = %request.dispatch_id, owner = %request.owning_site, "not this site's dispatch; skipped");
                return Disposition::Ack;
            }
            OwnershipDecision::Hold { retry_after } => {
                count_request(lane, "held");
                return Disposition::Retry { after: retry_after };
            }
            OwnershipDecision::Watch { recheck_after } => {
                // A request watched for long (the owner alive but slow, or takeover disabled) is
                // looked at less often, so it stays far from the redelivery limit until it expires.
                Some(if delivery.deliveries > WATCH_FAST_DELIVERIES {
                    recheck_after.max(WATCH_SLOW_RECHECK)
                } else {
                    recheck_after
                })
            }
        };
        if self.shutdown.is_triggered() {
            return Disposition::Retry {
                after: Duration::ZERO,
            };
        }
        let span = tracing::info_span!(
            "dispatch",
            dispatch_id = %request.dispatch_id,
            lane = lane.label(),
            trace_id = delivery.trace.map(|trace| trace.trace_id_hex()).unwrap_or_default(),
        );
        if let Some(recheck_after) = watch {
            if request.expires_at <= Timestamp::now() {
                // Nobody sends it any more; its owner dead-letters it.
                count_request(lane, "watched_expired");
                return Disposition::Ack;
            }
            return match self.outcomes.latest(&request.dispatch_id).await {
                Ok(Some(outcome)) if outcome.is_final() => {
                    count_request(lane, "watched_finished");
                    Disposition::Ack
                }
                Ok(_) => Disposition::Retry {
                    after: recheck_after,
                },
                Err(error) => {
                    tracing::warn!(dispatch_id = %request.dispatch_id, %error, "cannot read a watched dispatch; will look again");
                    Disposition::Retry {
                        after: recheck_after,
                    }
                }
            };
        }
        // While every breaker is open there is nothing to try: hand the request back without
        // reading anything, spread over a little more than the wait so the backlog does not return
        // all at once when a probe is due. Expired requests go on, to be dead-lettered now.
        if let Some(refusing_for) = self.providers.all_refusing_for()
            && request.expires_at > Timestamp::now()
        {
            count_request(lane, "providers_unavailable");
            return Disposition::Retry {
                after: with_jitter(refusing_for),
            };
        }
        match self.process(delivery, request, lane).instrument(span).await {
            Ok(disposition) => disposition,
            Err(error) => {
                tracing::warn!(dispatch_id = %request.dispatch_id, %error, "dispatch failed for now; will retry");
                Disposition::Retry {
                    after: Duration::from_secs(1),
                }
            }
        }
    }

    async fn process(
        &self,
        delivery: &Delivery,
        request: &DispatchRequested,
        lane: Lane,
    ) -> Result<Disposition, Error> {
        // On a first delivery no dispatcher at this site has touched the request yet, so the aggregate
        // alone says what the other site did (see `Outcomes::latest_in_aggregate`); redeliveries read both.
        let latest = if delivery.deliveries <= 1 {
            self.outcomes
                .latest_in_aggregate(&request.dispatch_id)
                .await?
        } else {
            self.outcomes.latest(&request.dispatch_id).await?
        };
        let mut next = outcomes::decide(latest.as_ref(), Timestamp::now());
        if let (
            Next::WaitUntil {
                reason: WaitReason::ClaimLeased,
                ..
            },
            Some(Outcome::Claimed(claim)),
        ) = (&next, &latest)
            && self.ownership.claim_abandoned(claim, self.site)
        {
            tracing::warn!(claimed_by = %claim.site, attempt = claim.attempt,
                "the site that claimed this dispatch is judged dead; not waiting for its lease");
            next = Next::Attempt {
                number: claim.attempt.saturating_add(1),
                lost_claim: Some(claim.site),
            };
        }
        let mut attempt = match next {
            Next::Finished { outcome } => {
                count_request(lane, "already_finished");
                tracing::debug!(outcome, "dispatch already finished; not sending again");
                return Ok(Disposition::Ack);
            }
            Next::WaitUntil { until: at, reason } => {
                count_request(
                    lane,
                    match reason {
                        WaitReason::ClaimLeased => "claim_leased",
                        WaitReason::RetryScheduled => "retry_scheduled",
                    },
                );
                return Ok(Disposition::Retry { after: until(at) });
            }
            Next::Attempt { number, lost_claim } => {
                if let Some(claimed_by) = lost_claim {
                    metrics::counter!("coinalarm_dispatcher_lost_claims_total", "claimed_by" => claimed_by.as_str())
                        .increment(1);
                    tracing::warn!(
                        previous_attempt = number - 1,
                        %claimed_by,
                        "a claimed attempt never recorded an outcome and its lease ran out; the provider may \
                         or may not have taken it, sending again"
                    );
                }
                number
            }
        };
        let body = match self.open_body(request) {
            Ok(body) => body,
            Err(error) => {
                count_request(lane, "unsealable");
                return Ok(Disposition::Park {
                    reason_code: "unsealable_body".to_owned(),
                    reason: error,
                });
            }
        };
        let mut calls_this_delivery: u32 = 0;
        loop {
            if request.expires_at <= Timestamp::now() {
                count_request(lane, "expired");
                self.dead_letter(delivery, request, attempt - 1, DeadLetterReason::Expired)
                    .await?;
                return Ok(Disposition::Ack);
            }
            if attempt > self.settings.retry.max_attempts {
                count_request(lane, "attempts_exhausted");
                let attempts = attempt - 1;
                self.dead_letter(
                    delivery,
                    request,
                    attempts,
                    DeadLetterReason::AttemptsExhausted { attempts },
                )
                .await?;
                return Ok(Disposition::Ack);
            }
            if self.shutdown.is_triggered() {
                return Ok(Disposition::Retry {
                    after: Duration::ZERO,
                });
            }
            let provider = match self.providers.choose() {
                Choice::Use(provider) => provider,
                Choice::AllOpen { retry_in } => {
                    count_request(lane, "providers_unavailable");
                    return Ok(Disposition::Retry {
                        after: with_jitter(retry_in),
                    });
                }
            };
            if !provider.wait_for_rate_slot(&self.shutdown).await {
                return Ok(Disposition::Retry {
                    after: Duration::ZERO,
                });
            }
            if !self.claim(delivery, request, attempt).await? {
                // This attempt was claimed before, by an earlier delivery that stopped right after the
                // claim: its lease decides, as for any claim without an outcome.
                count_request(lane, "claim_leased");
                return Ok(Disposition::Retry { after: self.lease });
            }
            calls_this_delivery += 1;
            let point = HookPoint {
                dispatch_id: request.dispatch_id.clone(),
                attempt,
                provider: provider.name().clone(),
            };
            if let Some(hook) = &self.hooks.before_provider_call {
                hook(point.clone()).await;
            }
            let target = CallbackTarget {
                dispatch_id: request.dispatch_id.clone(),
                attempt,
                provider: provider.name().clone(),
            };
            let status_callback = provider.status_callback(&target);
            let message = NewMessage {
                to: request.destination.as_str(),
                body: &body,
                status_callback: status_callback.as_ref(),
                traceparent: delivery.trace.map(|trace| trace.child().to_string()),
            };
            let result = provider.send(&message).await;
            if let Some(hook) = &self.hooks.after_provider_call {
                hook(point).await;
            }
            let error = match result {
                Ok(resource) => {
                    self.record_sent(delivery, request, attempt, provider.name(), resource.sid)
                        .await?;
                    count_request(lane, "sent");
                    let age = Timestamp::now().duration_since(request.created_at);
                    metrics::histogram!("coinalarm_dispatcher_request_to_sent_seconds", "lane" => lane.label())
                        .record(age.as_secs_f64().max(0.0));
                    return Ok(Disposition::Ack);
                }
                Err(error) => error,
            };
            if error.class() == ErrorClass::Permanent {
                tracing::warn!(
                    attempt,
                    provider = %provider.name(),
                    destination = %request.destination.masked(),
                    code = %error.code(),
                    %error,
                    "provider refused the message permanently; not retrying"
                );
                let reason = match error.twilio_code() {
                    Some(code) if twilio::codes::is_invalid_destination(code) => {
                        DeadLetterReason::InvalidDestination
                    }
                    _ => DeadLetterReason::PermanentError {
                        provider: provider.name().clone(),
                        error_code: error.code(),
                    },
                };
                let failed = FailedAttempt {
                    attempt,
                    failed_at: Timestamp::now(),
                    provider: provider.name(),
                    error: &error,
                    retry_at: None,
                };
                self.record_failed(delivery, request, &failed, Some(reason))
                    .await?;
                count_request(lane, "refused");
                return Ok(Disposition::Ack);
            }
            let backoff = self.settings.retry.backoff_after(attempt);
            // A provider asking for more than an hour is treated as asking for an hour: the request
            // would expire first anyway.
            let delay = error
                .retry_after()
                .map_or(backoff, |asked| asked.max(backoff))
                .min(Duration::from_secs(3600));
            let last_attempt = attempt >= self.settings.retry.max_attempts;
            tracing::warn!(
                attempt,
                provider = %provider.name(),
                code = %error.code(),
                %error,
                retry_in_seconds = (!last_attempt).then_some(delay.as_secs_f64()),
                "send attempt failed"
            );
            let failed_at = Timestamp::now();
            let retry_at = (!last_attempt)
                .then(|| {
                    jiff::SignedDuration::try_from(delay)
                        .ok()
                        .and_then(|delay| failed_at.checked_add(delay).ok())
                })
                .flatten();
            let failed = FailedAttempt {
                attempt,
                failed_at,
                provider: provider.name(),
                error: &error,
                retry_at,
            };
            if last_attempt {
                count_request(lane, "attempts_exhausted");
                let reason = DeadLetterReason::AttemptsExhausted { attempts: attempt };
                self.record_failed(delivery, request, &failed, Some(reason))
                    .await?;
                return Ok(Disposition::Ack);
            }
            self.record_failed(delivery, request, &failed, None).await?;
            metrics::counter!("coinalarm_dispatcher_retries_total", "provider" => provider.name().as_str().to_owned())
                .increment(1);
            attempt += 1;
            let retry_here = calls_this_delivery < self.settings.retry.attempts_per_delivery
                && delay <= self.settings.retry.max_in_process_delay;
            if !retry_here {
                return Ok(Disposition::Retry { after: delay });
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.wait() => return Ok(Disposition::Retry { after: delay }),
            }
        }
    }

    /// The text to send. Sealed bodies are opened here, just before the provider call, and never
    /// logged; an error names the problem, not the content.
    fn open_body(&self, request: &DispatchRequested) -> Result<Zeroizing<String>, String> {
        match &request.body {
            MessageBody::Plain { text } => Ok(Zeroizing::new(text.clone())),
            MessageBody::Sealed(sealed) => {
                let Some(sealer) = &self.sealer else {
                    return Err(
                        "the body is sealed and this dispatcher has no sealing keys".to_owned()
                    );
                };
                let purpose = Purpose::MessageBody {
                    dispatch_id: &request.dispatch_id,
                    destination: &request.destination,
                };
                let bytes = sealer
                    .open(sealed, &purpose)
                    .map_err(|error| format!("the sealed body does not open: {error}"))?;
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| "the sealed body is not UTF-8 text".to_owned())?;
                Ok(Zeroizing::new(text.to_owned()))
            }
        }
    }

    /// Publishes the claim of `attempt`; `false` when this very claim was already stored.
    async fn claim(
        &self,
        delivery: &Delivery,
        request: &DispatchRequested,
        attempt: u32,
    ) -> Result<bool, Error> {
        let now = Timestamp::now();
        let claim = DispatchClaimed {
            dispatch_id: request.dispatch_id.clone(),
            site: self.site,
            attempt,
            claimed_at: now,
            lease_expires_at: now
                + jiff::SignedDuration::try_from(self.lease)
                    .unwrap_or(jiff::SignedDuration::from_secs(60)),
        };
        let published = self.publish(delivery, claim).await?;
        Ok(!published.duplicate)
    }

    async fn record_sent(
        &self,
        delivery: &Delivery,
        request: &DispatchRequested,
        attempt: u32,
        provider: &ProviderName,
        provider_message_id: String,
    ) -> Result<(), Error> {
        tracing::info!(
            attempt,
            %provider,
            destination = %request.destination.masked(),
            provider_message_id = %provider_message_id,
            owner = %request.owning_site,
            "sms sent"
        );
        if request.owning_site != self.site {
            metrics::counter!("coinalarm_dispatcher_takeovers_total", "site" => self.site.as_str(), "from" => request.owning_site.as_str())
                .increment(1);
        }
        let sent = DispatchSent {
            dispatch_id: request.dispatch_id.clone(),
            site: self.site,
            attempt,
            provider: provider.clone(),
            provider_message_id,
            sent_at: Timestamp::now(),
        };
        // The provider has the SMS: this is the record that keeps a redelivery from sending it again,
        // so it is retried for as long as the claim's lease would have held.
        let deadline = tokio::time::Instant::now() + self.lease;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.publish(delivery, sent.clone()).await {
                Ok(_) => return Ok(()),
                Err(error) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::warn!(%error, "recording a sent sms failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn record_failed(
        &self,
        delivery: &Delivery,
        request: &DispatchRequested,
        failed: &FailedAttempt<'_>,
        dead_letter: Option<DeadLetterReason>,
    ) -> Result<(), Error> {
        let now = failed.failed_at;
        let error_message = match failed.error {
            twilio::Error::Api { message, .. } if !message.is_empty() => Some(message.clone()),
            twilio::Error::Api { .. } => None,
            other => Some(other.to_string()),
        };
        let event = DispatchFailed {
            dispatch_id: request.dispatch_id.clone(),
            site: self.site,
            attempt: failed.attempt,
            provider: failed.provider.clone(),
            error_code: failed.error.code(),
            error_message,
            retryable: failed.error.class() == ErrorClass::Transient,
            failed_at: now,
            retry_at: failed.retry_at,
        };
        let mut envelopes = vec![(self.envelope(delivery, event).into_event(), delivery.trace)];
        if let Some(reason) = dead_letter {
            count_dead_letter(&reason);
            let dead = DispatchDeadLettered {
                dispatch_id: request.dispatch_id.clone(),
                site: self.site,
                attempt: failed.attempt,
                reason,
                dead_lettered_at: now,
            };
            envelopes.push((self.envelope(delivery, dead).into_event(), delivery.trace));
        }
        self.bus.publish_all(&envelopes).await?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        request: &DispatchRequested,
        attempt: u32,
        reason: DeadLetterReason,
    ) -> Result<(), Error> {
        tracing::warn!(attempt, ?reason, "dispatch dead-lettered");
        count_dead_letter(&reason);
        let dead = DispatchDeadLettered {
            dispatch_id: request.dispatch_id.clone(),
            site: self.site,
            attempt,
            reason,
            dead_lettered_at: Timestamp::now(),
        };
        self.publish(delivery, dead).await?;
        Ok(())
    }

    fn envelope<T: EventPayload>(&self, delivery: &Delivery, event: T) -> Envelope<T> {
        Envelope::new(event, self.site).caused_by(&delivery.envelope)
    }

    /// Publishes an outcome continuing the request's causal chain and trace.
    async fn publish<T: EventPayload>(
        &self,
        delivery: &Delivery,
        event: T,
    ) -> Result<bus::Published, Error> {
        let envelope = self.envelope(delivery, event);
        Ok(self.bus.publish(&envelope, delivery.trace.as_ref()).await?)
    }
}
