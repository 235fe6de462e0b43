//! The live loop of one projection: a durable pull consumer on the local aggregate stream, positioned
//! from the checkpoint in Postgres, feeding batches to [`crate::batch::apply_batch`] strictly in
//! stream order.
//!
//! Order matters more here than in other services: a projection skips everything at or below its
//! checkpoint, so it must never apply a later event before an earlier one. Hence one batch in flight
//! at a time (the consumer's `max_ack_pending` is the batch size), no fetching while a batch is being
//! retried, and a hole between the checkpoint and a batch (left by a crash, a redelivery, an external
//! reset) repositions the consumer at the checkpoint instead of being stepped over.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use coinalarm_runtime::Shutdown;
use coinalarm_runtime::bus::Bus;
use deadpool_postgres::Pool;
use futures::StreamExt;
use proto_events::Envelope;
use proto_events::Site;
use proto_events::domain::NatsName;
use proto_events::events::{MessageParked, ParkedPayload};

use crate::batch::{self, BatchError, Committed, GapPolicy, Hole, Outcome};
use crate::config::ProjectorConfig;
use crate::event::Slot;
use crate::projections::Projection;
use crate::target::{self, Target};

/// How far behind the checkpoint an existing consumer may be and still be kept (its redeliveries are
/// skipped one by one); further behind, repositioning is cheaper than reading the difference.
const KEEP_BEHIND_BATCHES: u64 = 10;

/// Consecutive failed fetches after which the consumer is recreated (it may have been deleted).
const FETCH_FAILURES_BEFORE_REPOSITION: u32 = 5;

/// The definition of a projection's durable consumer. `start` is the first position to deliver.
pub fn consumer_config(
    projection: Projection,
    settings: &ProjectorConfig,
    site: Site,
    start: u64,
) -> consumer::pull::Config {
    let deliver_policy = if start <= 1 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start,
        }
    };
    consumer::pull::Config {
        durable_name: Some(projection.durable()),
        description: Some(format!(
            "projector at {site}: the {projection} read model, positioned from its postgres checkpoint"
        )),
        deliver_policy,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: -1,
        // One batch in flight: nothing past it is delivered until it is acknowledged, which keeps
        // order and makes a slow Postgres slow the consumer down instead of growing a backlog here.
        max_ack_pending: i64::try_from(settings.batch_size_for(projection)).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// Runs one projection until shutdown.
pub struct ProjectionRunner {
    pub projection: Projection,
    pub bus: Bus,
    pub pool: Pool,
    pub target: Target,
    pub settings: ProjectorConfig,
    pub shutdown: Shutdown,
}

/// What the consume loop asks for next.
enum Flow {
    Reposition,
    Stop,
}

/// Why positioning failed (retried).
#[derive(Debug, thiserror::Error)]
enum PositionError {
    #[error("cannot read the checkpoint")]
    Checkpoint(#[from] target::CheckpointError),
    #[error("jetstream refused the consumer call: {0}")]
    Consumer(String),
}

impl ProjectionRunner {
    pub async fn run(self) {
        let mut failures = 0u32;
        let mut accepted_hole = None;
        tracing::info!(projection = %self.projection, stream = self.projection.stream(), schema = %self.target, "projection starting");
        while !self.shutdown.is_triggered() {
            let consumer = match self.position().await {
                Ok(consumer) => {
                    failures = 0;
                    consumer
                }
                Err(error) => {
                    self.count_error("position");
                    tracing::warn!(projection = %self.projection, error = %ErrorChain(&error), "cannot position the consumer; retrying");
                    self.pause(&mut failures).await;
                    continue;
                }
            };
            match self.consume(&consumer, &mut accepted_hole).await {
                Flow::Reposition => {
                    metrics::counter!("coinalarm_projector_repositions_total", "projection" => self.projection.name()).increment(1);
                }
                Flow::Stop => break,
            }
        }
        // Acks are fire-and-forget publishes; flushing sends the last ones before the connection goes.
        if let Err(error) = self.bus.client().flush().await {
            tracing::debug!(%error, "flushing acknowledgements at shutdown failed");
        }
        tracing::info!(projection = %self.projection, "projection stopped");
    }

    /// Finds or (re)creates the durable consumer so that it delivers right after the checkpoint.
    async fn position(&self) -> Result<consumer::PullConsumer, PositionError> {
        let stream = self.projection.stream();
        let durable = self.projection.durable();
        let checkpoint =
            target::read_checkpoint(&self.pool, &self.target, self.projection.name(), stream)
                .await?;
        let jetstream = self.bus.jetstream();
        let desired = consumer_config(
            self.projection,
            &self.settings,
            self.bus.site(),
            checkpoint + 1,
        );
        match jetstream
            .get_consumer_from_stream::<consumer::pull::Config, _, _>(&durable, stream)
            .await
        {
            Ok(existing) => {
                let info = existing.cached_info();
                let acknowledged = info.ack_floor.stream_sequence;
                let same_settings = info.config.ack_wait == desired.ack_wait
                    && info.config.max_ack_pending == desired.max_ack_pending
                    && info.config.filter_subject.is_empty()
                    && info.config.filter_subjects.is_empty();
                let behind_ok = checkpoint.saturating_sub(acknowledged)
                    <= KEEP_BEHIND_BATCHES * self.settings.batch_size_for(self.projection) as u64;
                // Ahead of the checkpoint means the database lost what the consumer acknowledged
                // (restored, dropped, rebuilt): it must be rewound. Messages still pending belong to a
                // predecessor that died holding them; they would come back only after `ack_wait`, and
                // with a batch's worth pending nothing else is delivered meanwhile, so rewinding is
                // faster. Otherwise a consumer behind the checkpoint is kept: what it delivers again
                // is skipped by the checkpoint.
                let idle = info.num_ack_pending == 0;
                if same_settings && idle && acknowledged <= checkpoint && behind_ok {
                    tracing::info!(projection = %self.projection, checkpoint, acknowledged, "resuming the durable consumer");
                    return Ok(existing);
                }
                tracing::info!(projection = %self.projection, checkpoint, acknowledged, pending = info.num_ack_pending, same_settings, "repositioning the durable consumer at the checkpoint");
                jetstream
                    .delete_consumer_from_stream(&durable, stream)
                    .await
                    .map_err(|error| PositionError::Consumer(error.to_string()))?;
            }
            Err(error) if is_not_found(&error) => {
                tracing::info!(projection = %self.projection, checkpoint, "creating the durable consumer at the checkpoint");
            }
            Err(error) => return Err(PositionError::Consumer(error.to_string())),
        }
        jetstream
            .create_consumer_on_stream(desired, stream)
            .await
            .map_err(|error| PositionError::Consumer(error.to_string()))
    }

    /// Fetches and applies batches until shutdown or until the consumer must be repositioned.
    async fn consume(
        &self,
        consumer: &consumer::PullConsumer,
        accepted_hole: &mut Option<Hole>,
    ) -> Flow {
        let batch_size = self.settings.batch_size_for(self.projection);
        let mut fetch_failures = 0u32;
        let mut stall_failures = 0u32;
        loop {
            let fetched = tokio::select! {
                fetched = fetch(consumer, batch_size, self.settings.fetch_wait) => fetched,
                () = self.shutdown.wait() => return Flow::Stop,
            };
            let mut messages = match fetched {
                Ok(messages) => {
                    fetch_failures = 0;
                    messages
                }
                Err(error) => {
                    self.count_error("fetch");
                    tracing::warn!(projection = %self.projection, %error, "fetch failed");
                    if fetch_failures + 1 >= FETCH_FAILURES_BEFORE_REPOSITION {
                        return Flow::Reposition;
                    }
                    if self.pause(&mut fetch_failures).await {
                        return Flow::Stop;
                    }
                    continue;
                }
            };
            if messages.is_empty() {
                self.set_lag(0);
                continue;
            }
            // A fetch can mix redeliveries with new messages; the batch is applied in stream order.
            let mut paired: Vec<(jetstream::Message, Slot)> = messages
                .drain(..)
                .map(|message| {
                    let slot = to_slot(&message);
                    (message, slot)
                })
                .collect();
            paired.sort_by_key(|(_, slot)| slot.sequence());
            let (mut messages, mut slots): (Vec<jetstream::Message>, Vec<Slot>) =
                paired.into_iter().unzip();

            // Events from newer code stop the projection at their position until it is upgraded.
            let stalled_at = slots
                .iter()
                .position(|slot| matches!(slot, Slot::FromNewerCode { .. }));
            let held_back = stalled_at.map(|position| {
                let held: Vec<jetstream::Message> = messages.split_off(position);
                let slot = slots.split_off(position).into_iter().next();
                (held, slot)
            });
            if let Some((held, Some(Slot::FromNewerCode { sequence, reason }))) = &held_back {
                self.count_error("newer_code");
                tracing::error!(projection = %self.projection, sequence, reason, "an event written by newer code: the projection waits here until the projector is upgraded");
                settle_all(held, AckKind::Nak(None)).await;
            }

            if !self.park_poison(&messages, &slots).await {
                settle_all(&messages, AckKind::Nak(None)).await;
                if self.pause(&mut stall_failures).await {
                    return Flow::Stop;
                }
                continue;
            }
            let batch: Vec<&Slot> = slots.iter().collect();
            if !batch.is_empty() {
                match self
                    .apply_with_retry(&messages, &batch, accepted_hole)
                    .await
                {
                    BatchResult::Committed(committed) => {
                        settle_all(&messages, AckKind::Ack).await;
                        if !committed.skipped_holes.is_empty() {
                            *accepted_hole = None;
                        }
                        let lag = messages
                            .last()
                            .and_then(|message| message.info().ok())
                            .map_or(0, |info| info.pending);
                        self.set_lag(lag);
                        self.record(&committed);
                    }
                    BatchResult::Gap(hole) => {
                        self.count_error("gap");
                        tracing::warn!(projection = %self.projection, expected = hole.expected, found = hole.found, "positions missing before the batch; repositioning at the checkpoint");
                        *accepted_hole = Some(hole);
                        return Flow::Reposition;
                    }
                    BatchResult::Stopped => {
                        settle_all(&messages, AckKind::Nak(None)).await;
                        return Flow::Stop;
                    }
                }
            }
            if held_back.is_some() && self.pause(&mut stall_failures).await {
                return Flow::Stop;
            }
            if held_back.is_none() {
                stall_failures = 0;
            }
        }
    }

    /// Applies a batch, retrying with backoff while Postgres fails. The batch's acknowledgement
    /// deadline is extended on every retry, so an outage of any length redelivers nothing.
    async fn apply_with_retry(
        &self,
        messages: &[jetstream::Message],
        batch: &[&Slot],
        accepted_hole: &Option<Hole>,
    ) -> BatchResult {
        let mut failures = 0u32;
        loop {
            let started = std::time::Instant::now();
            let result = batch::apply_batch(
                &self.pool,
                &self.target,
                self.projection,
                batch,
                GapPolicy::Reject {
                    accepted: *accepted_hole,
                },
            )
            .await;
            match result {
                Ok(Outcome::Committed(committed)) => {
                    metrics::histogram!("coinalarm_projector_batch_seconds", "projection" => self.projection.name())
                        .record(started.elapsed().as_secs_f64());
                    return BatchResult::Committed(committed);
                }
                Ok(Outcome::Gap { hole, .. }) => return BatchResult::Gap(hole),
                Err(error) => {
                    self.count_error(match error {
                        BatchError::Pool(_) => "postgres_unavailable",
                        BatchError::Postgres(_) => "postgres",
                    });
                    tracing::warn!(projection = %self.projection, failures = failures + 1, error = %ErrorChain(&error), "batch not applied; retrying");
                    settle_all(messages, AckKind::Progress).await;
                    if self.pause(&mut failures).await {
                        return BatchResult::Stopped;
                    }
                }
            }
        }
    }

    /// Parks every poison message of the batch in the dead-letter stream before the batch moves past
    /// it (a dead letter's id is stable, so parking twice stores it once). The dead-letter projection
    /// itself never parks: that would feed its own stream; it logs and moves on.
    async fn park_poison(&self, messages: &[jetstream::Message], slots: &[Slot]) -> bool {
        for (message, slot) in messages.iter().zip(slots) {
            let Slot::Poison {
                sequence,
                reason_code,
                reason,
            } = slot
            else {
                continue;
            };
            self.count_error("poison");
            if self.projection == Projection::DeadLetters {
                tracing::error!(projection = %self.projection, sequence, reason_code, reason, "undecodable dead letter; passed over");
                continue;
            }
            match park(
                &self.bus,
                self.projection,
                message,
                *sequence,
                reason_code,
                reason,
            )
            .await
            {
                Ok(()) => {
                    tracing::warn!(projection = %self.projection, sequence, reason_code, reason, "parked an undecodable message in the dead-letter stream");
                }
                Err(error) => {
                    tracing::warn!(projection = %self.projection, sequence, %error, "cannot park an undecodable message; retrying the batch");
                    return false;
                }
            }
        }
        true
    }

    /// Sleeps the backoff for `failures` (incremented); true if shutdown came first.
    async fn pause(&self, failures: &mut u32) -> bool {
        *failures = failures.saturating_add(1);
        let delay = backoff(&self.settings, *failures);
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            () = self.shutdown.wait() => true,
        }
    }

    fn count_error(&self, kind: &'static str) {
        metrics::counter!("coinalarm_projector_errors_total", "projection" => self.projection.name(), "kind" => kind).increment(1);
    }

    fn set_lag(&self, lag: u64) {
        metrics::gauge!("coinalarm_projector_lag_events", "projection" => self.projection.name())
            .set(lag as f64);
    }

    fn record(&self, committed: &Committed) {
        let name = self.projection.name();
        let applied = &committed.applied;
        for (outcome, count) in [
            ("projected", applied.projected),
            ("ignored", applied.ignored),
            ("replayed", committed.replayed),
            ("undecodable", committed.undecodable),
        ] {
            if count > 0 {
                metrics::counter!("coinalarm_projector_events_total", "projection" => name, "outcome" => outcome)
                    .increment(count as u64);
            }
        }
        if applied.conflicts > 0 {
            metrics::counter!("coinalarm_projector_conflicts_total", "projection" => name)
                .increment(applied.conflicts as u64);
        }
        for hole in &committed.skipped_holes {
            tracing::warn!(projection = %self.projection, expected = hole.expected, found = hole.found, "positions no longer in the stream were skipped");
        }
        metrics::gauge!("coinalarm_projector_checkpoint", "projection" => name)
            .set(committed.checkpoint as f64);
        tracing::debug!(projection = %self.projection, checkpoint = committed.checkpoint, projected = applied.projected, replayed = committed.replayed, "batch committed");
    }
}

/// How a batch's retries ended.
enum BatchResult {
    Committed(Committed),
    Gap(Hole),
    /// Shutdown came while Postgres was still failing.
    Stopped,
}

/// Doubling from `retry_min` up to `retry_max`, with jitter so many projectors do not retry a
/// recovered database in lock step.
fn backoff(settings: &ProjectorConfig, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let base = settings
        .retry_min
        .saturating_mul(1u32 << exponent)
        .min(settings.retry_max);
    let jitter_range = (base.as_millis() / 5).max(1) as u64;
    let jitter = Duration::from_millis(fastrand_u64() % jitter_range);
    base.saturating_sub(jitter)
}

/// A cheap random number for jitter, without another dependency.
fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos() as u64),
    );
    hasher.finish()
}

async fn fetch(
    consumer: &consumer::PullConsumer,
    batch_size: usize,
    wait: Duration,
) -> Result<Vec<jetstream::Message>, Box<dyn std::error::Error + Send + Sync>> {
    let mut batch = consumer
        .fetch()
        .max_messages(batch_size)
        .expires(wait)
        .messages()
        .await?;
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        messages.push(message?);
    }
    Ok(messages)
}

fn to_slot(message: &jetstream::Message) -> Slot {
    let sequence = message.info().map_or(0, |info| info.stream_sequence);
    Slot::decode(
        sequence,
        message.subject.as_str(),
        message.headers.as_ref(),
        message.payload.clone(),
    )
}

async fn settle_all(messages: &[jetstream::Message], kind: AckKind) {
    for message in messages {
        if let Err(error) = message.ack_with(kind).await {
            // Harmless: the message comes back and is skipped, or applied, by the checkpoint.
            tracing::debug!(%error, "acknowledgement not sent");
        }
    }
}

/// Publishes a dead letter for a message this projection cannot decode.
async fn park(
    bus: &Bus,
    projection: Projection,
    message: &jetstream::Message,
    sequence: u64,
    reason_code: &str,
    reason: &str,
) -> Result<(), coinalarm_runtime::bus::Error> {
    let deliveries = message
        .info()
        .map_or(1, |info| u64::try_from(info.delivered).unwrap_or(1));
    let (Ok(stream), Ok(consumer)) = (
        NatsName::parse(projection.stream()),
        NatsName::parse(&projection.durable()),
    ) else {
        // Both names are constants of this crate and valid NATS names (tested).
        return Ok(());
    };
    let mut headers = std::collections::BTreeMap::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            headers.insert(
                name.to_string(),
                values.iter().map(ToString::to_string).collect(),
            );
        }
    }
    let parked = MessageParked {
        stream,
        consumer,
        stream_sequence: sequence,
        subject: message.subject.to_string(),
        headers,
        payload: ParkedPayload::from_bytes(&message.payload),
        reason_code: reason_code.to_owned(),
        reason: reason.to_owned(),
        deliveries,
        parked_at: jiff::Timestamp::now(),
    };
    let envelope: Envelope<MessageParked> = Envelope::new(parked, bus.site());
    bus.publish(&envelope, None).await?;
    metrics::counter!("coinalarm_dead_letters_total", "service" => crate::NAME, "reason" => reason_code.to_owned()).increment(1);
    Ok(())
}

fn is_not_found(error: &async_nats::jetstream::stream::ConsumerError) -> bool {
    matches!(
        error.kind(),
        async_nats::jetstream::stream::ConsumerErrorKind::JetStream(ref inner)
            if inner.error_code() == async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND
    )
}

/// Displays an error with its sources, `outer: inner: innermost`.
pub(crate) struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(formatter, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
