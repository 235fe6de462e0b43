//! Rebuilding read models from the streams into a schema of one's choosing (for `coinalarm projections
//! rebuild`): the target is migrated, then each stream range is read in order through an ephemeral
//! ordered consumer and applied batch by batch with the same code and checkpoints as the live
//! projector. Nothing of the live projector is touched: no durable consumer, no other schema.
//! [`crate::swap`] then brings such a schema in place of the live tables.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use deadpool_postgres::Pool;
use futures::StreamExt;

use crate::batch::{self, GapPolicy, Outcome};
use crate::event::Slot;
use crate::projections::Projection;
use crate::target::{self, MigrateError, Target};

/// What to rebuild, and where.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// The schema written to; created and migrated if needed. Its checkpoints say where a previous
    /// rebuild into it stopped, so running again continues rather than repeats.
    pub target: Target,
    pub projections: Vec<Projection>,
    /// First stream position to read (1: the whole stream); reading starts after the target's
    /// checkpoint when that is further.
    pub from_sequence: u64,
    /// Last position to read; `None`: the stream's last position when the rebuild starts.
    pub to_sequence: Option<u64>,
    pub batch_size: usize,
    /// How long to wait for the next message before giving up on a range the stream said it holds.
    pub idle_timeout: Duration,
}

impl RebuildOptions {
    /// Every projection, whole streams, into `target`.
    pub fn everything_into(target: Target) -> RebuildOptions {
        RebuildOptions {
            target,
            projections: Projection::ALL.to_vec(),
            from_sequence: 1,
            to_sequence: None,
            batch_size: 1_000,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// What a rebuild did for one projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    pub projection: Projection,
    pub stream: &'static str,
    /// The range read (`to < from` when there was nothing to read).
    pub from_sequence: u64,
    pub to_sequence: u64,
    /// The target's checkpoint afterwards.
    pub checkpoint: u64,
    /// Messages read, and events written among them.
    pub read: usize,
    pub projected: usize,
    /// Messages that could not be decoded (already parked by the live consumers), passed over.
    pub undecodable: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("cannot prepare schema {schema}")]
    Migrate {
        schema: String,
        #[source]
        source: MigrateError,
    },
    #[error("cannot read stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error(
        "stream {stream} stopped delivering at position {reached} of {to}: nothing arrived for {waited:?}"
    )]
    Stalled {
        stream: String,
        reached: u64,
        to: u64,
        waited: Duration,
    },
    #[error(
        "position {sequence} of {stream} was written by newer code ({reason}); rebuild with the newer projector"
    )]
    NewerCode {
        stream: String,
        sequence: u64,
        reason: String,
    },
    #[error("cannot read the checkpoint of the target")]
    Checkpoint(#[source] target::CheckpointError),
    #[error("applying a batch of {stream} failed")]
    Batch {
        stream: String,
        #[source]
        source: batch::BatchError,
    },
}

/// Told how a rebuild advances, e.g. to draw a progress bar. Calls come from the rebuilding task.
pub trait RebuildProgress: Send + Sync {
    /// `projection` starts reading `total` positions of its stream.
    fn started(&self, projection: Projection, total: u64);
    /// `read` more positions were applied.
    fn advanced(&self, projection: Projection, read: u64);
    /// `projection` is done.
    fn finished(&self, projection: Projection);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl RebuildProgress for NoProgress {
    fn started(&self, _projection: Projection, _total: u64) {}
    fn advanced(&self, _projection: Projection, _read: u64) {}
    fn finished(&self, _projection: Projection) {}
}

/// Rebuilds `options.projections` from this site's aggregate streams.
pub async fn rebuild(
    jetstream: &jetstream::Context,
    pool: &Pool,
    options: &RebuildOptions,
) -> Result<Vec<RebuildReport>, RebuildError> {
    rebuild_with_progress(jetstream, pool, options, &NoProgress).await
}

/// [`rebuild`], telling `progress` how far each projection got.
pub async fn rebuild_with_progress(
    jetstream: &jetstream::Context,
    pool: &Pool,
    options: &RebuildOptions,
    progress: &dyn RebuildProgress,
) -> Result<Vec<RebuildReport>, RebuildError> {
    options
        .target
        .migrate(pool)
        .await
        .map_err(|source| RebuildError::Migrate {
            schema: options.target.to_string(),
            source,
        })?;
    let mut reports = Vec::with_capacity(options.projections.len());
    for projection in &options.projections {
        reports.push(rebuild_one(jetstream, pool, options, *projection, progress).await?);
        tracing::info!(projection = %projection, schema = %options.target, "projection rebuilt");
    }
    Ok(reports)
}

async fn rebuild_one(
    jetstream: &jetstream::Context,
    pool: &Pool,
    options: &RebuildOptions,
    projection: Projection,
    progress: &dyn RebuildProgress,
) -> Result<RebuildReport, RebuildError> {
    let checkpoint = target::read_checkpoint(
        pool,
        &options.target,
        projection.name(),
        projection.stream(),
    )
    .await
    .map_err(RebuildError::Checkpoint)?;
    let from = options.from_sequence.max(checkpoint + 1);
    let mut reader = RangeReader::open(
        jetstream,
        projection.stream(),
        from,
        options.to_sequence,
        options.batch_size,
        options.idle_timeout,
    )
    .await?;
    let mut report = RebuildReport {
        projection,
        stream: projection.stream(),
        from_sequence: reader.from,
        to_sequence: reader.to,
        checkpoint,
        read: 0,
        projected: 0,
        undecodable: 0,
    };
    progress.started(projection, reader.len());
    while let Some(slots) = reader.next_batch().await? {
        report.read += slots.len();
        let batch: Vec<&Slot> = slots.iter().collect();
        let outcome = batch::apply_batch(
            pool,
            &options.target,
            projection,
            &batch,
            GapPolicy::AcceptAll,
        )
        .await
        .map_err(|source| RebuildError::Batch {
            stream: projection.stream().to_owned(),
            source,
        })?;
        if let Outcome::Committed(committed) = outcome {
            report.checkpoint = committed.checkpoint;
            report.projected += committed.applied.projected;
            report.undecodable += committed.undecodable;
        }
        progress.advanced(projection, slots.len() as u64);
    }
    progress.finished(projection);
    Ok(report)
}

/// Reads a range of an aggregate stream in order, a batch at a time, through an ephemeral ordered
/// consumer: what a rebuild, and the catch-up before a swap, apply.
pub struct RangeReader {
    stream: &'static str,
    /// First and last position to read (`to < from`: nothing to read).
    pub from: u64,
    pub to: u64,
    reached: u64,
    batch_size: usize,
    idle_timeout: Duration,
    messages: Option<consumer::pull::Ordered>,
}

impl RangeReader {
    /// Positions `from..=to` of `stream` (`to`: `None` for its last position now), clamped to what
    /// the stream holds.
    pub async fn open(
        jetstream: &jetstream::Context,
        stream: &'static str,
        from: u64,
        to: Option<u64>,
        batch_size: usize,
        idle_timeout: Duration,
    ) -> Result<RangeReader, RebuildError> {
        let stream_error = |message: String| RebuildError::Stream {
            stream: stream.to_owned(),
            message,
        };
        let mut handle = jetstream
            .get_stream(stream)
            .await
            .map_err(|error| stream_error(error.to_string()))?;
        let state = handle
            .info()
            .await
            .map_err(|error| stream_error(error.to_string()))?
            .state
            .clone();
        let from = from.max(state.first_sequence).max(1);
        let to = to.unwrap_or(state.last_sequence).min(state.last_sequence);
        let mut reader = RangeReader {
            stream,
            from,
            to,
            reached: from.saturating_sub(1),
            batch_size: batch_size.max(1),
            idle_timeout,
            messages: None,
        };
        if to < from || state.messages == 0 {
            reader.reached = to.max(reader.reached);
            return Ok(reader);
        }
        let ordered = handle
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await
            .map_err(|error| stream_error(error.to_string()))?;
        reader.messages = Some(
            ordered
                .messages()
                .await
                .map_err(|error| stream_error(error.to_string()))?,
        );
        Ok(reader)
    }

    /// How many positions the range spans.
    pub fn len(&self) -> u64 {
        (self.to + 1).saturating_sub(self.from)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next batch in stream order, `None` once the range is read.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Slot>>, RebuildError> {
        let Some(messages) = self.messages.as_mut() else {
            return Ok(None);
        };
        let mut slots = Vec::with_capacity(self.batch_size);
        while slots.len() < self.batch_size && self.reached < self.to {
            let next = tokio::time::timeout(self.idle_timeout, messages.next()).await;
            let message = match next {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => {
                    return Err(RebuildError::Stream {
                        stream: self.stream.to_owned(),
                        message: error.to_string(),
                    });
                }
                Ok(None) | Err(_) => {
                    return Err(RebuildError::Stalled {
                        stream: self.stream.to_owned(),
                        reached: self.reached,
                        to: self.to,
                        waited: self.idle_timeout,
                    });
                }
            };
            let sequence = message.info().map_or(0, |info| info.stream_sequence);
            self.reached = sequence;
            if sequence > self.to {
                break;
            }
            let slot = Slot::decode(
                sequence,
                message.subject.as_str(),
                message.headers.as_ref(),
                message.payload.clone(),
            );
            if let Slot::FromNewerCode { sequence, reason } = slot {
                return Err(RebuildError::NewerCode {
                    stream: self.stream.to_owned(),
                    sequence,
                    reason,
                });
            }
            slots.push(slot);
        }
        if slots.is_empty() {
            // Done: dropping the ordered consumer's stream deletes the ephemeral consumer.
            self.messages = None;
            return Ok(None);
        }
        Ok(Some(slots))
    }
}
