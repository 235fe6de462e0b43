//! One batch of a stream applied to a target schema in one transaction, together with the
//! projection's checkpoint: the heart of exactly-once projection on at-least-once delivery.
//!
//! The transaction locks the checkpoint row, skips every position at or below it (a redelivered or
//! replayed batch writes nothing twice), insists that what is left continues the checkpoint without a
//! hole (an event applied out of order could never be applied later: its position would be below the
//! checkpoint), writes the rows, and moves the checkpoint to the last position — or writes nothing.

use deadpool_postgres::{Pool, Transaction};

use crate::event::{Slot, StreamEvent};
use crate::projections::{Applied, Projection};
use crate::target::{self, Target};

/// Positions `expected..found` are missing before `found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hole {
    pub expected: u64,
    pub found: u64,
}

/// How to treat missing positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapPolicy {
    /// Refuse the batch on a hole, unless it is exactly this one (already re-read and still missing:
    /// those messages no longer exist in the stream).
    Reject { accepted: Option<Hole> },
    /// Every hole is a gap in the stream itself (an ordered read of the stream: it never skips).
    AcceptAll,
}

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Committed(Committed),
    /// Nothing was written: positions are missing between the checkpoint and the batch.
    Gap {
        checkpoint: u64,
        hole: Hole,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The checkpoint after the batch.
    pub checkpoint: u64,
    /// Whether the batch held anything past the checkpoint (else nothing was written).
    pub checkpoint_moved: bool,
    pub applied: Applied,
    /// Positions at or below the checkpoint: already applied, skipped.
    pub replayed: usize,
    /// Positions that hold no decodable event; passed over.
    pub undecodable: usize,
    /// Holes the policy let through.
    pub skipped_holes: Vec<Hole>,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot get a postgres connection")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("postgres failed while applying the batch")]
    Postgres(#[source] tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(error: tokio_postgres::Error) -> Self {
        BatchError::Postgres(error)
    }
}

/// Applies `slots` (sorted by position; no [`Slot::FromNewerCode`]) to `target` in one transaction.
pub async fn apply_batch(
    pool: &Pool,
    target: &Target,
    projection: Projection,
    slots: &[&Slot],
    gaps: GapPolicy,
) -> Result<Outcome, BatchError> {
    let mut client = pool.get().await.map_err(BatchError::Pool)?;
    let transaction = client.transaction().await?;
    let outcome = apply_batch_in(&transaction, target, projection, slots, gaps).await?;
    let wrote = matches!(&outcome, Outcome::Committed(committed) if committed.checkpoint_moved);
    if wrote {
        transaction.commit().await?;
    } else {
        transaction.rollback().await?;
    }
    Ok(outcome)
}

/// [`apply_batch`] inside a transaction the caller owns and ends (a table swap applies the last events
/// to a rebuilt schema in the transaction that holds the live checkpoint). Leaves the transaction's
/// `search_path` at `target`. On [`Outcome::Gap`] nothing was written.
pub async fn apply_batch_in(
    transaction: &Transaction<'_>,
    target: &Target,
    projection: Projection,
    slots: &[&Slot],
    gaps: GapPolicy,
) -> Result<Outcome, BatchError> {
    target.enter(transaction).await?;
    let checkpoint =
        target::lock_checkpoint(transaction, projection.name(), projection.stream()).await?;

    let mut last = checkpoint;
    let mut fresh: Vec<&Slot> = Vec::with_capacity(slots.len());
    let mut replayed = 0;
    let mut skipped_holes = Vec::new();
    for slot in slots {
        let position = slot.sequence();
        if position <= last {
            replayed += 1;
            continue;
        }
        if position != last + 1 {
            let hole = Hole {
                expected: last + 1,
                found: position,
            };
            let allowed = match gaps {
                GapPolicy::AcceptAll => true,
                GapPolicy::Reject { accepted } => accepted == Some(hole),
            };
            if !allowed {
                return Ok(Outcome::Gap { checkpoint, hole });
            }
            skipped_holes.push(hole);
        }
        fresh.push(slot);
        last = position;
    }
    if fresh.is_empty() {
        return Ok(Outcome::Committed(Committed {
            checkpoint,
            checkpoint_moved: false,
            applied: Applied::default(),
            replayed,
            undecodable: 0,
            skipped_holes,
        }));
    }
    let events: Vec<&StreamEvent> = fresh
        .iter()
        .filter_map(|slot| match slot {
            Slot::Event(event) => Some(event.as_ref()),
            Slot::Poison { .. } | Slot::FromNewerCode { .. } => None,
        })
        .collect();
    let undecodable = fresh.len() - events.len();
    let applied = projection.apply(transaction, &events).await?;
    target::advance_checkpoint(transaction, projection.name(), projection.stream(), last).await?;
    Ok(Outcome::Committed(Committed {
        checkpoint: last,
        checkpoint_moved: true,
        applied,
        replayed,
        undecodable,
        skipped_holes,
    }))
}
