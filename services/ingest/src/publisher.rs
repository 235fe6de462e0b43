//! Publishing ticks: frames from the channel become `TickObserved` envelopes, published to this site's
//! TICKS origin in small batches with their acknowledgements in flight together. One message per trade;
//! the message id (`tick:<exchange>:<market>:<sequential id>`) lets JetStream drop the copy another
//! ingester (or a retry) publishes.

use std::time::Duration;

use backon::BackoffBuilder;
use coinalarm_runtime::Shutdown;
use coinalarm_runtime::bus::{self, Bus};
use coinalarm_runtime::trace::TraceContext;
use proto_events::Envelope;
use proto_events::events::ticks::TickObserved;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::frame::Frame;
use crate::ticks::{Outcome, TickProcessor};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("gave up publishing {ticks} ticks at shutdown: {reason}")]
    FlushAbandoned { ticks: usize, reason: String },
}

/// What a publisher did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishReport {
    pub frames: u64,
    /// Ticks stored as new messages.
    pub published: u64,
    /// Ticks JetStream already held (another ingester's or a retried copy).
    pub already_stored: u64,
    /// Trades dropped locally as repeats of one already seen.
    pub duplicates: u64,
    pub invalid: u64,
}

#[derive(Debug)]
pub struct TickPublisher {
    bus: Bus,
    processor: TickProcessor,
    batch_size: usize,
    flush_timeout: Duration,
    /// Live feeds record how old a tick is when published; a replay's ticks are years old by design.
    live: bool,
    report: PublishReport,
}

type Batch = Vec<(Envelope<TickObserved>, Option<TraceContext>)>;

impl TickPublisher {
    pub fn new(
        bus: Bus,
        processor: TickProcessor,
        batch_size: usize,
        flush_timeout: Duration,
        live: bool,
    ) -> TickPublisher {
        TickPublisher {
            bus,
            processor,
            batch_size: batch_size.max(1),
            flush_timeout,
            live,
            report: PublishReport::default(),
        }
    }

    /// Publishes until the channel closes (the source stopped) and everything in it is flushed.
    /// Shutdown does not stop it: the source stops, and what it already read is still published.
    pub async fn run(
        mut self,
        mut frames: mpsc::Receiver<Frame>,
        shutdown: &Shutdown,
    ) -> Result<PublishReport, Error> {
        let mut batch: Batch = Vec::with_capacity(self.batch_size);
        while let Some(frame) = frames.recv().await {
            self.take(frame, &mut batch);
            // Whatever else is already waiting joins this batch: no lingering for a full one, so a quiet
            // feed publishes each trade at once and a busy one batches by itself.
            while batch.len() < self.batch_size {
                match frames.try_recv() {
                    Ok(frame) => self.take(frame, &mut batch),
                    Err(_) => break,
                }
            }
            metrics::gauge!("coinalarm_ingest_channel_depth").set(frames.len() as f64);
            if !batch.is_empty() {
                self.publish(&mut batch, shutdown).await?;
            }
        }
        Ok(self.report)
    }

    fn take(&mut self, frame: Frame, batch: &mut Batch) {
        self.report.frames += 1;
        match self.processor.accept(frame) {
            Outcome::Tick(tick) => {
                let trace = TraceContext::new_root();
                tracing::debug!(market = %tick.market, sequential_id = tick.sequential_id, trace_id = %trace.trace_id_hex(), "tick observed");
                batch.push((Envelope::new(*tick, self.bus.site()), Some(trace)));
            }
            Outcome::Duplicate => self.report.duplicates += 1,
            Outcome::Invalid { reason } => {
                self.report.invalid += 1;
                metrics::counter!("coinalarm_ingest_invalid_frames_total", "reason" => reason)
                    .increment(1);
            }
            Outcome::Refreshed | Outcome::Ignored => {}
        }
    }

    /// Publishes the batch, retrying all of it on failure (ids make the retry harmless) until it is
    /// stored, or, once shutdown has begun, until the flush timeout runs out.
    async fn publish(&mut self, batch: &mut Batch, shutdown: &Shutdown) -> Result<(), Error> {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .with_jitter_seed(fastrand::u64(..))
            .without_max_times()
            .build();
        let mut give_up_at: Option<Instant> = None;
        loop {
            let deadline = shutdown
                .is_triggered()
                .then(|| *give_up_at.get_or_insert_with(|| Instant::now() + self.flush_timeout));
            let started = Instant::now();
            let attempt = self.bus.publish_all(batch);
            let result = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(result) => result,
                    Err(_) => return Err(self.abandon(batch, "no acknowledgement in time")),
                },
                None => attempt.await,
            };
            let error = match result {
                Ok(published) => {
                    self.record(batch, &published, started);
                    batch.clear();
                    return Ok(());
                }
                Err(error) => error,
            };
            metrics::counter!("coinalarm_ingest_publish_errors_total").increment(1);
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            if let Some(deadline) = deadline
                && Instant::now() + delay > deadline
            {
                return Err(self.abandon(batch, &error.to_string()));
            }
            tracing::warn!(ticks = batch.len(), %error, delay_ms = delay.as_millis() as u64, "publishing ticks failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn abandon(&self, batch: &Batch, reason: &str) -> Error {
        tracing::error!(
            ticks = batch.len(),
            reason,
            "giving up on the last ticks at shutdown"
        );
        Error::FlushAbandoned {
            ticks: batch.len(),
            reason: reason.to_owned(),
        }
    }

    fn record(&mut self, batch: &Batch, published: &[bus::Published], started: Instant) {
        metrics::histogram!("coinalarm_ingest_publish_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("coinalarm_ingest_publish_batch_size").record(batch.len() as f64);
        let already_stored = published.iter().filter(|stored| stored.duplicate).count() as u64;
        let stored = published.len() as u64 - already_stored;
        self.report.published += stored;
        self.report.already_stored += already_stored;
        metrics::counter!("coinalarm_ingest_ticks_published_total").increment(stored);
        metrics::counter!("coinalarm_ingest_publish_duplicates_total").increment(already_stored);
        if self.live {
            let now = jiff::Timestamp::now();
            for (envelope, _) in batch {
                let age = now.duration_since(envelope.data.trade_timestamp);
                metrics::histogram!("coinalarm_ingest_tick_age_seconds")
                    .record(age.as_secs_f64().max(0.0));
            }
        }
    }
}
