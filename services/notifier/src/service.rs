//! The notifier process: follows `USERS`, `ALERTS` and recent `DISPATCH` into its read model, then consumes
//! `TRIGGERS` (held briefly for coalescing) and `AUTH` (sign-in codes, never held) with durable pull
//! consumers, and publishes `dispatch.requested` / `dispatch.skipped` to this site's origin stream.
//!
//! A trigger message is acknowledged only after the events deciding it are acknowledged by JetStream; if
//! the process dies in between, the redelivered trigger finds its decision in the read model (which also
//! follows this site's own `DISPATCH_<SITE>` origin, so it sees its own writes without waiting for the
//! aggregate) or is decided again under the same deterministic ids, which JetStream de-duplicates.
//!
//! The other site's triggers and sign-in requests are *watched* (delivered again every heartbeat
//! interval) until that site has decided them, and decided here once its notifier is judged dead
//! (`coinalarm_runtime::sites`); while this site rejoins its peer, it holds even its own work.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use coinalarm_runtime::bus::{
    self, BatchHandler, Bus, ConsumerSpec, Delivery, Disposition, run_consumer,
};
use coinalarm_runtime::config::SectionError;
use coinalarm_runtime::sealing::{self, Sealer};
use coinalarm_runtime::shutdown::BoxError;
use coinalarm_runtime::sites::{Liveness, Responsibility, SitesConfig};
use coinalarm_runtime::trace::TraceContext;
use coinalarm_runtime::{Config, Shutdown};
use futures::{FutureExt as _, StreamExt as _};
use jiff::{SignedDuration, Timestamp};
use proto_events::envelope::{DecodeErrorKind, header};
use proto_events::events::TriggerFired;
use proto_events::{Category, DispatchId, Envelope, Event, Priority, Site};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::NotifierConfig;
use crate::policy::{
    self, Coalescer, Held, Limits, Ownership, Plan, Settlement, SignInError, plan_groups,
    plan_sign_in,
};
use crate::state::{DISPATCH_HORIZON, ReadModel};

/// Durable consumer name on `TRIGGERS` and `AUTH`.
pub const DURABLE: &str = "notifier";

/// How long a message whose events could not be published waits before it is delivered again.
const PUBLISH_RETRY: Duration = Duration::from_secs(2);

/// How long a sign-in request sealed with a key this site does not hold yet waits for the key to roll out.
const UNKNOWN_KEY_RETRY: Duration = Duration::from_secs(5);

/// How often dispatches older than the horizon are forgotten.
const PRUNE_EVERY: SignedDuration = SignedDuration::from_mins(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] SectionError),
    #[error("notifier.sealing_keys: {0}")]
    Sealing(#[from] sealing::Error),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error("consuming {stream}: {source}")]
    Consume { stream: String, source: BoxError },
    #[error("a notifier task panicked: {0}")]
    Task(String),
}

type SharedModel = Arc<Mutex<ReadModel>>;

fn lock(model: &SharedModel) -> MutexGuard<'_, ReadModel> {
    // The model is only ever updated by whole events; a panic mid-update leaves it usable.
    model.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the notifier until `shutdown`: read model first, then both consumers; on shutdown, triggers held
/// for coalescing are decided at once and published (or left unacknowledged for redelivery).
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let settings: NotifierConfig = config.section(crate::NAME)?;
    let sites = SitesConfig::from_config(&config)?;
    let sealer = Sealer::from_config(&settings.sealing_keys)?;
    let bus = Bus::connect(&config, crate::NAME).await?;
    let ownership = Ownership::new(config.site);
    let model: SharedModel = Arc::new(Mutex::new(ReadModel::new()));
    // Stops the internal tasks when one of them fails, without stopping the rest of the process.
    let internal = shutdown.child();
    let liveness = Liveness::start(&bus, sites, crate::NAME, internal.clone());

    let mut followers = JoinSet::new();
    let mut readiness = Vec::new();
    for feed in feeds(config.site, Timestamp::now()) {
        let (ready_sender, ready) = watch::channel(false);
        readiness.push(ready);
        followers.spawn(follow(
            bus.clone(),
            feed,
            model.clone(),
            ready_sender,
            internal.clone(),
        ));
    }
    let caught_up = async {
        for mut ready in readiness {
            // Err: the follower ended, which it only does at shutdown.
            let _ = ready.wait_for(|ready| *ready).await;
        }
    };
    tokio::select! {
        () = caught_up => {}
        () = internal.wait() => {
            followers.join_all().await;
            return Ok(());
        }
    }
    let (users, alerts, dispatches) = lock(&model).sizes();
    tracing::info!(
        site = %config.site,
        users,
        alerts,
        dispatches,
        "read model caught up; consuming triggers and sign-in requests"
    );

    let mut loops: JoinSet<Result<(), Error>> = JoinSet::new();
    loops.spawn(consume_sign_ins(
        bus.clone(),
        SignInHandler {
            bus: bus.clone(),
            model: model.clone(),
            sealer,
            ownership,
            liveness: liveness.clone(),
            segment_budget: settings.segment_budget.get(),
        },
        internal.clone(),
    ));
    loops.spawn(
        TriggerLoop {
            spec: trigger_consumer_spec(&settings),
            coalescer: Coalescer::new(Limits::from_config(&settings).coalesce_window),
            limits: Limits::from_config(&settings),
            bus,
            model,
            ownership,
            liveness,
            last_prune: Timestamp::now(),
        }
        .run(internal.clone()),
    );

    let mut first_error = None;
    while let Some(joined) = loops.join_next().await {
        let result = joined.unwrap_or_else(|panic| Err(Error::Task(panic.to_string())));
        if let Err(error) = result {
            tracing::error!(%error, "notifier loop failed; stopping the notifier");
            first_error.get_or_insert(error);
        }
        // Whichever loop ends first (shutdown or failure), the other follows.
        internal.trigger();
    }
    internal.trigger();
    followers.join_all().await;
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn trigger_consumer_spec(settings: &NotifierConfig) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(
        Category::Triggers.aggregate_stream(),
        DURABLE,
        vec![Category::Triggers.aggregate_filter()],
    );
    spec.batch_size = settings.batch_size.max(1);
    spec.max_ack_pending = settings.max_held_triggers.max(1);
    // Held messages must not be redelivered while they wait for their window.
    spec.ack_wait = (settings.coalesce_window * 2 + Duration::from_secs(10)).max(spec.ack_wait);
    spec
}

fn sign_in_consumer_spec() -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(
        Category::Auth.aggregate_stream(),
        DURABLE,
        vec![Category::Auth.aggregate_filter()],
    );
    // The other site's requests are watched (delivered again every recheck) until that site has
    // worded them or they expire; that must not count as failing.
    spec.park_after_deliveries = 10_000;
    spec
}

// ---------------------------------------------------------------------------------------------------
// Read model feeds

/// One stream the read model follows, from where.
#[derive(Debug, Clone)]
struct Feed {
    stream: String,
    filter_subjects: Vec<String>,
    since: Option<Timestamp>,
}

fn feeds(site: Site, now: Timestamp) -> Vec<Feed> {
    let dispatch_since = Some(policy::saturating_add(now, -DISPATCH_HORIZON));
    let decisions = |prefix: &str| {
        vec![
            format!("{prefix}dispatch.request.>"),
            format!("{prefix}dispatch.skipped.>"),
        ]
    };
    vec![
        Feed {
            stream: Category::Users.aggregate_stream().to_owned(),
            filter_subjects: Vec::new(),
            since: None,
        },
        Feed {
            stream: Category::Alerts.aggregate_stream().to_owned(),
            filter_subjects: Vec::new(),
            since: None,
        },
        Feed {
            stream: Category::Dispatch.aggregate_stream().to_owned(),
            filter_subjects: decisions(""),
            since: dispatch_since,
        },
        // This site's own decisions, without waiting for the aggregate to source them.
        Feed {
            stream: Category::Dispatch.origin_stream(site),
            filter_subjects: decisions(&format!("{site}.")),
            since: dispatch_since,
        },
    ]
}

/// Follows a stream into the read model with an ordered consumer, resuming after errors where it left off.
async fn follow(
    bus: Bus,
    feed: Feed,
    model: SharedModel,
    ready: watch::Sender<bool>,
    shutdown: Shutdown,
) {
    let mut resume_at: Option<u64> = None;
    let mut failures: u32 = 0;
    while !shutdown.is_triggered() {
        match follow_until_error(&bus, &feed, &model, &ready, &shutdown, &mut resume_at).await {
            Ok(()) => return,
            Err(error) => {
                failures = failures.saturating_add(1);
                metrics::counter!("coinalarm_notifier_read_model_errors_total", "stream" => feed.stream.clone())
                    .increment(1);
                tracing::warn!(stream = %feed.stream, %error, "read model feed interrupted; resuming");
                pause(retry_delay(failures), &shutdown).await;
            }
        }
    }
}

async fn follow_until_error(
    bus: &Bus,
    feed: &Feed,
    model: &SharedModel,
    ready: &watch::Sender<bool>,
    shutdown: &Shutdown,
    resume_at: &mut Option<u64>,
) -> Result<(), BoxError> {
    use jetstream::consumer::DeliverPolicy;
    let mut stream = bus.jetstream().get_stream(&feed.stream).await?;
    let last_sequence_now = stream.info().await?.state.last_sequence;
    let deliver_policy = match (*resume_at, feed.since) {
        (Some(start_sequence), _) => DeliverPolicy::ByStartSequence { start_sequence },
        (None, Some(since)) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(since.as_nanosecond())?,
        },
        (None, None) => DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subjects: feed.filter_subjects.clone(),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    if consumer.cached_info().num_pending == 0 {
        ready.send_replace(true);
    }
    let mut messages = consumer.messages().await?;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            () = shutdown.wait() => return Ok(()),
        };
        let Some(message) = next else {
            return Err("the ordered consumer ended".into());
        };
        let message = message?;
        let info = message.info()?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        match proto_events::decode(&message.payload) {
            Ok(envelope) => lock(model).apply(&envelope),
            Err(error) => {
                // A read model cannot park what it merely reads; the owning consumer dead-letters it.
                metrics::counter!("coinalarm_notifier_read_model_undecodable_total", "stream" => feed.stream.clone())
                    .increment(1);
                tracing::warn!(stream = %feed.stream, sequence, %error, "skipping an undecodable event in the read model");
            }
        }
        *resume_at = Some(sequence + 1);
        if pending == 0 || sequence >= last_sequence_now {
            ready.send_replace(true);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Triggers

struct TriggerLoop {
    bus: Bus,
    spec: ConsumerSpec,
    model: SharedModel,
    ownership: Ownership,
    liveness: Liveness,
    limits: Limits,
    coalescer: Coalescer<jetstream::Message>,
    last_prune: Timestamp,
}

impl TriggerLoop {
    async fn run(mut self, shutdown: Shutdown) -> Result<(), Error> {
        let consumer = self.bus.durable_consumer(&self.spec).await?;
        let stream_name = self.spec.stream.clone();
        let consume_error = |source: BoxError| Error::Consume {
            stream: stream_name.clone(),
            source,
        };
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.spec.batch_size)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|error| consume_error(Box::new(error)))?;
        tracing::info!(stream = %self.spec.stream, consumer = %self.spec.durable, "consuming triggers");
        loop {
            let wake_in = self.coalescer.next_due().map(|due| {
                let wait = due.duration_since(Timestamp::now());
                Duration::try_from(wait).unwrap_or(Duration::ZERO)
            });
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                next = messages.next() => match next {
                    None => return Err(consume_error("the pull stream ended".into())),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "trigger pull interrupted; continuing");
                    }
                    Some(Ok(message)) => {
                        self.receive(message).await;
                        // Take whatever else already arrived, so one flush covers the whole burst.
                        for _ in 1..self.spec.batch_size {
                            match messages.next().now_or_never() {
                                Some(Some(Ok(message))) => self.receive(message).await,
                                _ => break,
                            }
                        }
                    }
                },
                () = tokio::time::sleep(wake_in.unwrap_or(Duration::ZERO)), if wake_in.is_some() => {}
            }
            let due = self.coalescer.take_due(Timestamp::now());
            self.flush(due).await;
        }
        // Finish in-flight work: decide what is held now rather than leave it to wait for ack_wait, and hand
        // back what was fetched but not yet looked at, for the next instance to take at once.
        let held = self.coalescer.take_all();
        self.flush(held).await;
        while let Some(Some(Ok(message))) = messages.next().now_or_never() {
            ack(&message, AckKind::Nak(None)).await;
        }
        tracing::info!(stream = %self.spec.stream, consumer = %self.spec.durable, "trigger consumer drained");
        Ok(())
    }

    async fn receive(&mut self, message: jetstream::Message) {
        let envelope = match proto_events::decode_as::<TriggerFired>(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) if error.kind() == DecodeErrorKind::UnexpectedEventType => {
                count_trigger("ignored");
                ack(&message, AckKind::Ack).await;
                return;
            }
            Err(error) => {
                count_trigger("parked");
                bus::park(
                    &self.bus,
                    &self.spec,
                    &message,
                    error.kind().as_str(),
                    &error.to_string(),
                )
                .await;
                return;
            }
        };
        let trigger = &envelope.data;
        match self.ownership.trigger(trigger, &self.liveness.view()) {
            Responsibility::Act { taken_over: false } => {}
            Responsibility::Act { taken_over: true } => {
                if !lock(&self.model).is_trigger_handled(&trigger.trigger_id) {
                    count_takeover("trigger", trigger.home_site);
                    tracing::info!(trigger_id = %trigger.trigger_id, home_site = %trigger.home_site,
                        "taking over a trigger of a site judged dead");
                }
            }
            Responsibility::Hold { retry_after } => {
                // Catching up with the peer: it may have worded this trigger while this site was away.
                count_trigger("held");
                ack(&message, AckKind::Nak(Some(retry_after))).await;
                return;
            }
            Responsibility::Watch { recheck_after } => {
                let handled = lock(&self.model).is_trigger_handled(&trigger.trigger_id);
                let age = Timestamp::now().duration_since(trigger.evaluated_at);
                let outcome = if handled {
                    "foreign_handled"
                } else if age > self.limits.stale_limit(trigger.kind) {
                    // Too old to be sent by anyone now; its owner records the skip.
                    "foreign_expired"
                } else {
                    count_trigger("watched");
                    ack(&message, AckKind::Nak(Some(recheck_after))).await;
                    return;
                };
                count_trigger(outcome);
                ack(&message, AckKind::Ack).await;
                return;
            }
            Responsibility::Leave => {
                count_trigger("foreign");
                ack(&message, AckKind::Ack).await;
                return;
            }
        }
        if lock(&self.model).is_trigger_handled(&envelope.data.trigger_id) {
            count_trigger("duplicate");
            ack(&message, AckKind::Ack).await;
            return;
        }
        count_trigger("accepted");
        let trace = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(header::TRACEPARENT))
            .and_then(|value| TraceContext::parse(value.as_str()));
        self.coalescer.add(Held {
            envelope,
            trace,
            arrived_at: Timestamp::now(),
            handle: message,
        });
        metrics::gauge!("coinalarm_notifier_held_triggers").set(self.coalescer.held() as f64);
    }

    async fn flush(&mut self, groups: Vec<Vec<Held<jetstream::Message>>>) {
        if groups.is_empty() {
            return;
        }
        let now = Timestamp::now();
        let plan = plan_groups(
            groups,
            &lock(&self.model),
            self.ownership,
            &self.limits,
            now,
        );
        metrics::gauge!("coinalarm_notifier_held_triggers").set(self.coalescer.held() as f64);
        if !plan.events.is_empty() {
            if let Err(error) = self.bus.publish_all(&plan.events).await {
                metrics::counter!("coinalarm_notifier_publish_failures_total").increment(1);
                tracing::warn!(%error, triggers = plan.settlements.len(), "publishing dispatch decisions failed; triggers will be redelivered");
                for (message, _) in plan.settlements {
                    ack(&message, AckKind::Nak(Some(PUBLISH_RETRY))).await;
                }
                return;
            }
            let mut model = lock(&self.model);
            for (envelope, _) in &plan.events {
                model.apply(envelope);
            }
        }
        record_plan(&plan, now);
        for (message, settlement) in plan.settlements {
            let kind = match settlement {
                Settlement::Ack => AckKind::Ack,
                Settlement::Retry { after } => AckKind::Nak(Some(after)),
            };
            ack(&message, kind).await;
        }
        if now.duration_since(self.last_prune) >= PRUNE_EVERY {
            let mut model = lock(&self.model);
            model.prune(now);
            let (users, alerts, dispatches) = model.sizes();
            metrics::gauge!("coinalarm_notifier_read_model_users").set(users as f64);
            metrics::gauge!("coinalarm_notifier_read_model_alerts").set(alerts as f64);
            metrics::gauge!("coinalarm_notifier_read_model_dispatches").set(dispatches as f64);
            self.last_prune = now;
        }
    }
}

fn record_plan<H>(plan: &Plan<H>, now: Timestamp) {
    for dispatch in &plan.dispatches {
        metrics::counter!("coinalarm_notifier_dispatches_total", "priority" => priority_label(dispatch.priority))
            .increment(1);
        metrics::histogram!("coinalarm_notifier_sms_segments", "encoding" => dispatch.size.encoding.as_str())
            .record(f64::from(dispatch.size.segments));
        if dispatch.triggers > 1 {
            metrics::counter!("coinalarm_notifier_coalesced_triggers_total")
                .increment(dispatch.triggers as u64);
        }
        if !dispatch.within_budget {
            metrics::counter!("coinalarm_notifier_over_budget_total").increment(1);
        }
        // Includes the coalescing window on purpose: it is how late the user hears of the first firing.
        let age = now.duration_since(dispatch.oldest_evaluated_at);
        metrics::histogram!("coinalarm_notifier_trigger_age_seconds", "priority" => priority_label(dispatch.priority))
            .record(age.as_secs_f64().max(0.0));
        tracing::debug!(
            dispatch_id = %dispatch.dispatch_id,
            priority = priority_label(dispatch.priority),
            triggers = dispatch.triggers,
            segments = dispatch.size.segments,
            "dispatch requested"
        );
    }
    for code in &plan.skips {
        metrics::counter!("coinalarm_notifier_skips_total", "reason" => *code).increment(1);
    }
    if plan.already_handled > 0 {
        metrics::counter!("coinalarm_notifier_triggers_total", "outcome" => "duplicate")
            .increment(plan.already_handled as u64);
    }
}

fn count_trigger(outcome: &'static str) {
    metrics::counter!("coinalarm_notifier_triggers_total", "outcome" => outcome).increment(1);
}

/// Work of a site judged dead that this site's notifier decides instead (`kind`: trigger, sign_in).
fn count_takeover(kind: &'static str, from: Site) {
    metrics::counter!("coinalarm_notifier_takeovers_total", "kind" => kind, "from" => from.as_str())
        .increment(1);
}

pub(crate) fn priority_label(priority: Priority) -> &'static str {
    match priority {
        Priority::SignIn => "sign_in",
        Priority::Alert => "alert",
        Priority::Scheduled => "scheduled",
    }
}

async fn ack(message: &jetstream::Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        // Redelivered after ack_wait; the decision is found in the read model or repeated under the same ids.
        tracing::warn!(%error, "settling a trigger failed; it will be redelivered");
    }
}

// ---------------------------------------------------------------------------------------------------
// Sign-in codes

struct SignInHandler {
    bus: Bus,
    model: SharedModel,
    sealer: Sealer,
    ownership: Ownership,
    liveness: Liveness,
    segment_budget: u32,
}

async fn consume_sign_ins(
    bus: Bus,
    mut handler: SignInHandler,
    shutdown: Shutdown,
) -> Result<(), Error> {
    run_consumer(&bus, &sign_in_consumer_spec(), &mut handler, &shutdown).await?;
    Ok(())
}

impl BatchHandler for SignInHandler {
    async fn handle(&mut self, batch: &[Delivery]) -> Result<Vec<Disposition>, BoxError> {
        let now = Timestamp::now();
        let mut dispositions = Vec::with_capacity(batch.len());
        let mut outgoing = Vec::new();
        for delivery in batch {
            let Event::SignInCodeRequested(requested) = &delivery.envelope.data else {
                // Sign-in results share the subject; they are the API's and the projector's business.
                dispositions.push(Disposition::Ack);
                continue;
            };
            let dispatch_id = DispatchId::for_sign_in(&requested.phone_hash, &requested.request_id);
            let origin = delivery.envelope.origin_site;
            match self
                .ownership
                .sign_in(origin, delivery.envelope.time, &self.liveness.view())
            {
                Responsibility::Act { taken_over } => {
                    if taken_over && !lock(&self.model).is_dispatch_requested(&dispatch_id) {
                        count_takeover("sign_in", origin);
                        tracing::info!(%dispatch_id, %origin, "taking over a sign-in code of a site judged dead");
                    }
                }
                Responsibility::Hold { retry_after } => {
                    count_sign_in("held");
                    dispositions.push(Disposition::Retry { after: retry_after });
                    continue;
                }
                Responsibility::Watch { recheck_after } => {
                    if lock(&self.model).is_dispatch_requested(&dispatch_id) {
                        count_sign_in("foreign_handled");
                        dispositions.push(Disposition::Ack);
                    } else if requested.expires_at <= now {
                        count_sign_in("foreign_expired");
                        dispositions.push(Disposition::Ack);
                    } else {
                        count_sign_in("watched");
                        dispositions.push(Disposition::Retry {
                            after: recheck_after,
                        });
                    }
                    continue;
                }
                Responsibility::Leave => {
                    count_sign_in("foreign");
                    dispositions.push(Disposition::Ack);
                    continue;
                }
            }
            if lock(&self.model).is_dispatch_requested(&dispatch_id) {
                count_sign_in("duplicate");
                dispositions.push(Disposition::Ack);
                continue;
            }
            match plan_sign_in(
                requested,
                &self.sealer,
                self.ownership,
                self.segment_budget,
                now,
            ) {
                Ok(planned) => {
                    metrics::histogram!("coinalarm_notifier_sms_segments", "encoding" => planned.size.encoding.as_str())
                        .record(f64::from(planned.size.segments));
                    let envelope = Envelope::new(planned.request, self.ownership.site())
                        .at(now)
                        .caused_by(&delivery.envelope)
                        .into_event();
                    outgoing.push((envelope, delivery.trace));
                    dispositions.push(Disposition::Ack);
                }
                Err(SignInError::Open(sealing::Error::UnknownKey { key_id })) => {
                    count_sign_in("waiting_for_key");
                    tracing::warn!(%key_id, "a sign-in code is sealed with a key this site does not hold yet");
                    dispositions.push(Disposition::Retry {
                        after: UNKNOWN_KEY_RETRY,
                    });
                }
                Err(error) => {
                    count_sign_in("unsealable");
                    dispositions.push(Disposition::Park {
                        reason_code: "unsealable_sign_in_code".to_owned(),
                        reason: error.to_string(),
                    });
                }
            }
        }
        if !outgoing.is_empty() {
            self.bus.publish_all(&outgoing).await?;
            let mut model = lock(&self.model);
            for (envelope, _) in &outgoing {
                model.apply(envelope);
            }
            drop(model);
            for _ in &outgoing {
                count_sign_in("dispatched");
                metrics::counter!("coinalarm_notifier_dispatches_total", "priority" => priority_label(Priority::SignIn))
                    .increment(1);
            }
        }
        Ok(dispositions)
    }
}

fn count_sign_in(outcome: &'static str) {
    metrics::counter!("coinalarm_notifier_sign_in_requests_total", "outcome" => outcome)
        .increment(1);
}

// ---------------------------------------------------------------------------------------------------

fn retry_delay(failures: u32) -> Duration {
    let base = Duration::from_millis(200) * 2u32.pow(failures.min(6));
    base.min(Duration::from_secs(10)) + Duration::from_millis(u64::from(jitter_millis()))
}

/// Up to 200 ms of jitter, so many followers do not retry a recovered server in lock step.
fn jitter_millis() -> u16 {
    (uuid::Uuid::new_v4().as_u128() % 200) as u16
}

async fn pause(delay: Duration, shutdown: &Shutdown) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = shutdown.wait() => {}
    }
}
