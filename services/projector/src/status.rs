//! Where each projection stands against its stream (for `coinalarm projections status` and readiness):
//! the checkpoint in Postgres next to the stream's last position.

use async_nats::jetstream;
use deadpool_postgres::Pool;

use crate::projections::Projection;
use crate::target::{self, Target};

/// One projection's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    pub projection: Projection,
    pub stream: &'static str,
    /// Last stream position applied to the target schema.
    pub checkpoint: u64,
    /// The stream's last position now.
    pub stream_last_sequence: u64,
}

impl ProjectionStatus {
    /// Events stored but not yet projected.
    pub fn lag(&self) -> u64 {
        self.stream_last_sequence.saturating_sub(self.checkpoint)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Checkpoint(#[from] target::CheckpointError),
    #[error("cannot read stream {stream}: {message}")]
    Stream {
        stream: &'static str,
        message: String,
    },
}

/// The position of every projection of `target` against this site's streams.
pub async fn status(
    jetstream: &jetstream::Context,
    pool: &Pool,
    target: &Target,
) -> Result<Vec<ProjectionStatus>, StatusError> {
    let mut statuses = Vec::with_capacity(Projection::ALL.len());
    for projection in Projection::ALL {
        let stream = projection.stream();
        let checkpoint = target::read_checkpoint(pool, target, projection.name(), stream).await?;
        let stream_error = |message: String| StatusError::Stream { stream, message };
        let mut handle = jetstream
            .get_stream(stream)
            .await
            .map_err(|error| stream_error(error.to_string()))?;
        let stream_last_sequence = handle
            .info()
            .await
            .map_err(|error| stream_error(error.to_string()))?
            .state
            .last_sequence;
        statuses.push(ProjectionStatus {
            projection,
            stream,
            checkpoint,
            stream_last_sequence,
        });
    }
    Ok(statuses)
}
