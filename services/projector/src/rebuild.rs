//! Rebuilding read models from the streams into a schema of one's choosing (for `coinalarm projections
//! rebuild`): the target is migrated, then each stream range is read in order through an ephemeral
//! ordered consumer and applied batch by batch with the same code and checkpoints as the live
//! projector. Nothing of the live projector is touched: no durable consumer, no other schema.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use deadpool_postgres::Pool;
use futures::StreamExt;

use crate::batch::{self, GapPolicy, Outcome};
use crate::event::Slot;
use crate::projections::Projection;
use crate::target::{MigrateError, Target};

/// What to rebuild, and where.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// The schema written to; created and migrated if needed. Its checkpoints say where a previous
    /// rebuild into it stopped, so running again continues rather than repeats.
    pub target: Target,
    pub projections: Vec<Projection>,
    /// First stream position to read (1: the whole stream).
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
    #[error("applying a batch of {stream} failed")]
    Batch {
        stream: String,
        #[source]
        source: batch::BatchError,
    },
}

/// Rebuilds `options.projections` from this site's aggregate streams.
pub async fn rebuild(
    jetstream: &jetstream::Context,
    pool: &Pool,
    options: &RebuildOptions,
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
        reports.push(rebuild_one(jetstream, pool, options, *projection).await?);
        tracing::info!(projection = %projection, schema = %options.target, "projection rebuilt");
    }
    Ok(reports)
}

async fn rebuild_one(
    jetstream: &jetstream::Context,
    pool: &Pool,
    options: &RebuildOptions,
    projection: Projection,
) -> Result<RebuildReport, RebuildError> {
    let stream_name = projection.stream();
    let stream_error = |message: String| RebuildError::Stream {
        stream: stream_name.to_owned(),
        message,
    };
    let mut stream = jetstream
        .get_stream(stream_name)
        .await
        .map_err(|error| stream_error(error.to_string()))?;
    let state = stream
        .info()
        .await
        .map_err(|error| stream_error(error.to_string()))?
        .state
        .clone();
    let from = options.from_sequence.max(state.first_sequence).max(1);
    let to = options
        .to_sequence
        .unwrap_or(state.last_sequence)
        .min(state.last_sequence);
    let mut report = RebuildReport {
        projection,
        stream: stream_name,
        from_sequence: from,
        to_sequence: to,
        checkpoint: 0,
        read: 0,
        projected: 0,
        undecodable: 0,
    };
    if to < from || state.messages == 0 {
        return Ok(report);
    }
    let ordered = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|error| stream_error(error.to_string()))?;
    let mut messages = ordered
        .messages()
        .await
        .map_err(|error| stream_error(error.to_string()))?;
    let mut reached = from.saturating_sub(1);
    let batch_size = options.batch_size.max(1);
    while reached < to {
        let mut slots = Vec::with_capacity(batch_size);
        while slots.len() < batch_size && reached < to {
            let next = tokio::time::timeout(options.idle_timeout, messages.next()).await;
            let message = match next {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => return Err(stream_error(error.to_string())),
                Ok(None) | Err(_) => {
                    return Err(RebuildError::Stalled {
                        stream: stream_name.to_owned(),
                        reached,
                        to,
                        waited: options.idle_timeout,
                    });
                }
            };
            let sequence = message.info().map_or(0, |info| info.stream_sequence);
            reached = sequence;
            if sequence > to {
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
                    stream: stream_name.to_owned(),
                    sequence,
                    reason,
                });
            }
            slots.push(slot);
        }
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
            stream: stream_name.to_owned(),
            source,
        })?;
        if let Outcome::Committed(committed) = outcome {
            report.checkpoint = committed.checkpoint;
            report.projected += committed.applied.projected;
            report.undecodable += committed.undecodable;
        }
    }
    Ok(report)
}
