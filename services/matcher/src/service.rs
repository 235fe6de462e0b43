//! The running service: rebuild, then one loop that owns the index and takes, in turn, new alert events
//! (an ordered read of `ALERTS` continuing from the rebuild), due scheduled occurrences (a timer on the
//! earliest one) and batches of ticks (the durable pull consumer of `TICKS`). Each batch's triggers are
//! published together with pipelined acknowledgements, and the ticks are acknowledged only after their
//! triggers are stored: a crash in between delivers the ticks again and the same trigger ids are
//! de-duplicated by the streams.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::Ordered;
use async_nats::jetstream::{self, AckKind};
use coinalarm_runtime::bus::{self, Bus, ConsumerSpec};
use coinalarm_runtime::trace::TraceContext;
use coinalarm_runtime::{Config, Shutdown};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use proto_events::domain::NatsName;
use proto_events::envelope::{self, header};
use proto_events::events::TriggerFired;
use proto_events::{Category, Envelope, Event};

use crate::NAME;
use crate::config::MatcherConfig;
use crate::index::{AlertIndex, Applied, IndexSettings, TickOutcome};
use crate::rebuild::{self, TickPosition};

/// Most alert events applied together before a tick batch gets its turn.
const ALERT_BATCH: usize = 256;
/// Longest sleep of the scheduling timer; it also wakes when the index changes.
const SCHEDULE_TICK_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] coinalarm_runtime::config::SectionError),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Rebuild(#[from] rebuild::Error),
    #[error("the {stream} subscription ended: {reason}")]
    StreamEnded { stream: String, reason: String },
    #[error("invalid [matcher] setting: {0}")]
    Setting(&'static str),
}

/// Runs the matcher until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let settings: MatcherConfig = config.section(NAME)?;
    if settings.tick_batch_size == 0 {
        return Err(Error::Setting("tick_batch_size must be at least 1"));
    }
    let grace = SignedDuration::try_from(settings.schedule_grace)
        .map_err(|_| Error::Setting("schedule_grace is too long"))?;
    let bus = Bus::connect(&config, NAME).await?;
    let rebuild_started = Instant::now();
    let mut index = AlertIndex::new(IndexSettings {
        site: config.site,
        tick_stream: stream_name(Category::Ticks),
        replay_window: SignedDuration::try_from(settings.replay_window)
            .map_err(|_| Error::Setting("replay_window is too long"))?,
        replay_ticks_max: settings.replay_ticks_max,
    });
    let position = rebuild::tick_position(&bus, &settings).await?;
    let (alerts, counts) = rebuild::rebuild(&bus, &settings, &mut index, &position).await?;
    let rebuild_seconds = rebuild_started.elapsed().as_secs_f64();
    metrics::gauge!("coinalarm_matcher_rebuild_seconds").set(rebuild_seconds);
    report_sizes(&index);
    tracing::info!(
        site = %config.site,
        seconds = rebuild_seconds,
        alerts = index.len(),
        alert_events = counts.alert_events,
        triggers = counts.triggers,
        ticks = counts.ticks,
        undecodable = counts.undecodable,
        evaluated_through = position.evaluated_through,
        "index rebuilt"
    );
    let mut matcher = Matcher {
        bus,
        index,
        grace,
        position,
        alerts_spec: ConsumerSpec::new(
            Category::Alerts.aggregate_stream(),
            &format!("{}-alerts", settings.durable),
            Vec::new(),
        ),
        settings,
        shutdown,
    };
    matcher.serve(alerts).await
}

fn stream_name(category: Category) -> NatsName {
    // Stream names of the catalogue are valid names: the parse cannot fail.
    NatsName::parse(category.aggregate_stream())
        .unwrap_or_else(|_| unreachable!("aggregate stream names are valid"))
}

struct Matcher {
    bus: Bus,
    index: AlertIndex,
    grace: SignedDuration,
    position: TickPosition,
    /// Names the dead letters of undecodable alert events (the ordered read has no durable of its own).
    alerts_spec: ConsumerSpec,
    settings: MatcherConfig,
    shutdown: Shutdown,
}

/// Why publishing stopped before the batch was stored.
struct ShuttingDown;

impl Matcher {
    async fn serve(&mut self, alerts: Ordered) -> Result<(), Error> {
        let consumer = self.bus.durable_consumer(&self.position.spec).await?;
        let ticks = consumer
            .stream()
            .max_messages_per_batch(self.settings.tick_batch_size)
            .messages()
            .await
            .map_err(|error| Error::StreamEnded {
                stream: Category::Ticks.aggregate_stream().to_owned(),
                reason: error.to_string(),
            })?;
        let mut ticks = ticks.ready_chunks(self.settings.tick_batch_size);
        let mut alerts = alerts.ready_chunks(ALERT_BATCH);
        let mut metrics_timer = tokio::time::interval(self.settings.metrics_interval);
        metrics_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Occurrences missed while no matcher ran here, within the grace period, fire now.
        self.fire_scheduled().await;
        tracing::info!(consumer = %self.position.spec.durable, "matching");
        loop {
            let until_scheduled = self.until_next_occurrence();
            tokio::select! {
                biased;
                () = self.shutdown.wait() => break,
                chunk = alerts.next() => match chunk {
                    Some(messages) => self.on_alert_events(messages).await,
                    None => return Err(Error::StreamEnded {
                        stream: Category::Alerts.aggregate_stream().to_owned(),
                        reason: "no more messages".to_owned(),
                    }),
                },
                () = tokio::time::sleep(until_scheduled) => self.fire_scheduled().await,
                chunk = ticks.next() => match chunk {
                    Some(messages) => self.on_ticks(messages).await,
                    None => return Err(Error::StreamEnded {
                        stream: Category::Ticks.aggregate_stream().to_owned(),
                        reason: "no more messages".to_owned(),
                    }),
                },
                _ = metrics_timer.tick() => report_sizes(&self.index),
            }
        }
        // Draining flushes the last acknowledgements before the connection closes. Ticks the server still
        // hands to this process's open pull requests stay unacknowledged; the next start sees them and
        // recreates the consumer (see `rebuild::tick_position`).
        if let Err(error) = self.bus.client().drain().await {
            tracing::debug!(%error, "draining the nats connection failed");
        }
        tracing::info!("matcher stopped");
        Ok(())
    }

    fn until_next_occurrence(&self) -> Duration {
        let Some(next) = self.index.next_scheduled_at() else {
            return SCHEDULE_TICK_MAX;
        };
        let wait = next.duration_since(Timestamp::now());
        Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .min(SCHEDULE_TICK_MAX)
    }

    async fn on_alert_events<E: std::fmt::Display>(
        &mut self,
        messages: Vec<Result<jetstream::Message, E>>,
    ) {
        let evaluated_at = Timestamp::now();
        let mut batch = Vec::new();
        for result in messages {
            let message = match result {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "reading alert events failed; the ordered read resumes by itself");
                    continue;
                }
            };
            let envelope = match envelope::decode(&message.payload) {
                Ok(envelope) => envelope,
                Err(error) => {
                    metrics::counter!("coinalarm_matcher_alert_events_total", "outcome" => "undecodable").increment(1);
                    bus::park(
                        &self.bus,
                        &self.alerts_spec,
                        &message,
                        error.kind().as_str(),
                        &error.to_string(),
                    )
                    .await;
                    continue;
                }
            };
            let mut fired = Vec::new();
            let applied = self.index.apply(
                &envelope.data,
                envelope.time,
                envelope.origin_site,
                evaluated_at,
                &mut fired,
            );
            metrics::counter!("coinalarm_matcher_alert_events_total", "outcome" => applied_label(applied)).increment(1);
            if applied != Applied::Changed {
                tracing::debug!(
                    event = envelope.id.as_str(),
                    ?applied,
                    "alert event not applied"
                );
            }
            let trace = trace_of(&message);
            for trigger in fired {
                batch.push((
                    Envelope::new(trigger, self.bus.site()).caused_by(&envelope),
                    trace,
                ));
            }
        }
        if !batch.is_empty() {
            let _ = self.publish(&batch, &[]).await;
        }
    }

    async fn fire_scheduled(&mut self) {
        let now = Timestamp::now();
        let mut fired = Vec::new();
        let outcome = self.index.fire_due(now, self.grace, now, &mut fired);
        for (alert_id, occurrence) in &outcome.missed {
            metrics::counter!("coinalarm_matcher_scheduled_missed_total").increment(1);
            tracing::warn!(alert = %alert_id, %occurrence, "scheduled occurrence missed beyond the grace period; skipped");
        }
        if outcome.in_cooldown > 0 {
            tracing::debug!(
                count = outcome.in_cooldown,
                "scheduled occurrences dropped inside their cooldown"
            );
        }
        if fired.is_empty() {
            return;
        }
        let batch: Vec<_> = fired
            .into_iter()
            .map(|trigger| (Envelope::new(trigger, self.bus.site()), None))
            .collect();
        // On shutdown the occurrence is re-fired by the next start (within the grace period).
        let _ = self.publish(&batch, &[]).await;
    }

    async fn on_ticks<E: std::fmt::Display>(
        &mut self,
        messages: Vec<Result<jetstream::Message, E>>,
    ) {
        let evaluated_at = Timestamp::now();
        let mut batch: Vec<(Envelope<TriggerFired>, Option<TraceContext>)> = Vec::new();
        let mut stored_at = Vec::new();
        let mut evaluated = Vec::with_capacity(messages.len());
        let mut fired = Vec::new();
        for result in messages {
            let message = match result {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "fetching ticks failed; the consumer retries");
                    continue;
                }
            };
            let envelope = match envelope::decode(&message.payload) {
                Ok(envelope) => envelope,
                Err(error) => {
                    bus::park(
                        &self.bus,
                        &self.position.spec,
                        &message,
                        error.kind().as_str(),
                        &error.to_string(),
                    )
                    .await;
                    continue;
                }
            };
            let Event::TickObserved(tick) = &envelope.data else {
                let reason = format!("{} is not a tick", envelope.data.type_name());
                bus::park(
                    &self.bus,
                    &self.position.spec,
                    &message,
                    "unexpected_event_type",
                    &reason,
                )
                .await;
                continue;
            };
            let info = message.info().ok();
            let sequence = info
                .as_ref()
                .map(|info| info.stream_sequence)
                .unwrap_or_default();
            let outcome = self.index.on_tick(tick, sequence, evaluated_at, &mut fired);
            match outcome {
                TickOutcome::Evaluated { .. } => {
                    metrics::counter!("coinalarm_matcher_ticks_total", "outcome" => "evaluated")
                        .increment(1);
                }
                TickOutcome::Stale => {
                    metrics::counter!("coinalarm_matcher_ticks_total", "outcome" => "stale")
                        .increment(1);
                }
            }
            if !fired.is_empty() {
                let trace = trace_of(&message);
                let tick_stored_at = info.and_then(|info| {
                    Timestamp::from_nanosecond(info.published.unix_timestamp_nanos()).ok()
                });
                for trigger in fired.drain(..) {
                    stored_at.push(tick_stored_at);
                    batch.push((
                        Envelope::new(trigger, self.bus.site()).caused_by(&envelope),
                        trace,
                    ));
                }
            }
            evaluated.push(message);
        }
        if self.publish(&batch, &stored_at).await.is_err() {
            // Shutting down before the triggers were stored: hand the ticks back at once for the next run.
            for message in &evaluated {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
            return;
        }
        for message in &evaluated {
            if let Err(error) = message.ack().await {
                // Delivered again after ack_wait: a stale tick by then, or evaluated to the same trigger ids.
                tracing::warn!(%error, "acknowledging a tick failed");
            }
        }
    }

    /// Publishes triggers until they are stored, retrying with backoff while NATS refuses them; gives up
    /// only at shutdown. `stored_at` (parallel to `batch`, may be empty) is when each trigger's tick was
    /// stored, for the latency metric.
    async fn publish(
        &self,
        batch: &[(Envelope<TriggerFired>, Option<TraceContext>)],
        stored_at: &[Option<Timestamp>],
    ) -> Result<(), ShuttingDown> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut failures: u32 = 0;
        loop {
            match self.bus.publish_all(batch).await {
                Ok(published) => {
                    let now = Timestamp::now();
                    for ((envelope, _), stored) in batch.iter().zip(&published) {
                        let kind = envelope.data.kind.as_str();
                        metrics::counter!("coinalarm_matcher_triggers_total", "kind" => kind)
                            .increment(1);
                        if stored.duplicate {
                            metrics::counter!("coinalarm_matcher_triggers_duplicate_total")
                                .increment(1);
                        }
                        tracing::info!(
                            trigger = envelope.data.trigger_id.as_str(),
                            alert = %envelope.data.alert_id,
                            kind,
                            duplicate = stored.duplicate,
                            "trigger published"
                        );
                    }
                    for tick_stored_at in stored_at.iter().flatten() {
                        let latency = now.duration_since(*tick_stored_at).as_secs_f64().max(0.0);
                        metrics::histogram!("coinalarm_matcher_tick_to_trigger_seconds")
                            .record(latency);
                    }
                    return Ok(());
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    metrics::counter!("coinalarm_matcher_publish_failures_total").increment(1);
                    let delay = (Duration::from_millis(100) * 2u32.saturating_pow(failures.min(8)))
                        .min(self.settings.publish_retry_max);
                    tracing::warn!(%error, attempt = failures, ?delay, "publishing triggers failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.wait() => return Err(ShuttingDown),
                    }
                }
            }
        }
    }
}

fn trace_of(message: &jetstream::Message) -> Option<TraceContext> {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(header::TRACEPARENT))
        .and_then(|value| TraceContext::parse(value.as_str()))
}

fn applied_label(applied: Applied) -> &'static str {
    match applied {
        Applied::Changed => "applied",
        Applied::Stale => "stale",
        Applied::UnknownAlert => "unknown_alert",
        Applied::AlreadyDeleted => "deleted",
        Applied::NotAnAlertEvent => "not_an_alert_event",
    }
}

fn report_sizes(index: &AlertIndex) {
    let sizes = index.sizes();
    for (state, count) in [
        ("target_price", sizes.target_price),
        ("change_rate", sizes.change_rate),
        ("scheduled", sizes.scheduled),
        ("inactive", sizes.inactive),
    ] {
        metrics::gauge!("coinalarm_matcher_index_alerts", "state" => state).set(count as f64);
    }
    metrics::gauge!("coinalarm_matcher_markets").set(index.market_count() as f64);
}
