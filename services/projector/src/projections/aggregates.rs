//! The command log of versioned aggregates (`aggregate_events`) shared by the users and alerts
//! projections: recording each command once, and settling cross-site conflicts with the merge rule.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use jiff::Timestamp;

use super::{Params, execute_each, param, sequence};
use crate::event::StreamEvent;
use crate::merge::{self, Versioned};

/// `aggregate_events.aggregate` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Aggregate {
    User,
    Alert,
}

impl Aggregate {
    pub(super) const fn as_str(self) -> &'static str {
        match self {
            Aggregate::User => "user",
            Aggregate::Alert => "alert",
        }
    }
}

const INSERT: &str = "INSERT INTO aggregate_events \
    (aggregate, aggregate_id, version, message_id, event_type, origin_site, event_time, \
     stream_sequence, origin_stream, origin_sequence, body) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
    ON CONFLICT (aggregate, aggregate_id, message_id) DO NOTHING";

/// The row recording one command.
pub(super) fn insert_params(
    aggregate: Aggregate,
    aggregate_id: &str,
    version: u64,
    event: &StreamEvent,
    body: Option<serde_json::Value>,
) -> Params {
    let envelope = &event.envelope;
    vec![
        param(aggregate.as_str()),
        param(aggregate_id.to_owned()),
        sequence(version),
        param(envelope.id.as_str().to_owned()),
        param(envelope.data.type_name()),
        param(envelope.origin_site.as_str()),
        param(envelope.time),
        sequence(event.sequence),
        param(event.source.as_ref().map(|source| source.stream.clone())),
        param(
            event
                .source
                .as_ref()
                .map(|source| crate::target::to_bigint(source.sequence)),
        ),
        param(body),
    ]
}

pub(super) async fn insert(
    transaction: &Transaction<'_>,
    rows: &[Params],
) -> Result<u64, tokio_postgres::Error> {
    execute_each(transaction, INSERT, rows).await
}

/// A recorded command as read back for a recompute.
#[derive(Debug, Clone)]
pub(super) struct StoredCommand {
    pub aggregate_id: String,
    pub version: u64,
    pub message_id: String,
    pub time: Timestamp,
    pub site: String,
    pub stream_sequence: u64,
    pub origin_stream: Option<String>,
    pub origin_sequence: Option<u64>,
    pub superseded_by: Option<String>,
    pub body: Option<serde_json::Value>,
}

/// Every recorded command of the given aggregates, grouped by aggregate id.
pub(super) async fn load(
    transaction: &Transaction<'_>,
    aggregate: Aggregate,
    ids: &[String],
    with_body: bool,
) -> Result<BTreeMap<String, Vec<StoredCommand>>, tokio_postgres::Error> {
    let statement = transaction
        .prepare_cached(
            "SELECT aggregate_id, version, message_id, event_time, origin_site, stream_sequence, \
                    origin_stream, origin_sequence, superseded_by, \
                    CASE WHEN $3 THEN body END AS body \
             FROM aggregate_events WHERE aggregate = $1 AND aggregate_id = ANY($2)",
        )
        .await?;
    let rows = transaction
        .query(&statement, &[&aggregate.as_str(), &ids, &with_body])
        .await?;
    let mut grouped: BTreeMap<String, Vec<StoredCommand>> = BTreeMap::new();
    for row in rows {
        let command = StoredCommand {
            aggregate_id: row.get(0),
            version: crate::target::to_sequence(row.get(1)),
            message_id: row.get(2),
            time: row.get(3),
            site: row.get(4),
            stream_sequence: crate::target::to_sequence(row.get(5)),
            origin_stream: row.get(6),
            origin_sequence: row.get::<_, Option<i64>>(7).map(crate::target::to_sequence),
            superseded_by: row.get(8),
            body: row.get(9),
        };
        grouped
            .entry(command.aggregate_id.clone())
            .or_default()
            .push(command);
    }
    Ok(grouped)
}

/// The merge rule over one aggregate's commands, and the `superseded_by` changes it implies.
pub(super) struct Settled {
    pub winners: Vec<Versioned<StoredCommand>>,
    /// Commands that lost their version.
    pub losers: usize,
    /// `(message id, new superseded_by)` where the stored value differs.
    pub changes: Vec<(String, Option<String>)>,
}

pub(super) fn settle(commands: Vec<StoredCommand>) -> Settled {
    let previous: BTreeMap<String, Option<String>> = commands
        .iter()
        .map(|command| (command.message_id.clone(), command.superseded_by.clone()))
        .collect();
    let versioned = commands
        .into_iter()
        .map(|command| Versioned {
            version: command.version,
            time: command.time,
            site: command.site.clone(),
            message_id: command.message_id.clone(),
            data: command,
        })
        .collect();
    let resolution = merge::resolve(versioned);
    let mut now: BTreeMap<String, Option<String>> = previous
        .keys()
        .map(|message_id| (message_id.clone(), None))
        .collect();
    for (loser, winner) in &resolution.superseded {
        now.insert(loser.clone(), Some(winner.clone()));
    }
    let changes = now
        .into_iter()
        .filter(|(message_id, superseded_by)| previous.get(message_id) != Some(superseded_by))
        .collect();
    Settled {
        winners: resolution.winners,
        losers: resolution.superseded.len(),
        changes,
    }
}

/// Stores `superseded_by` changes; returns how many commands newly lost.
pub(super) async fn mark_superseded(
    transaction: &Transaction<'_>,
    aggregate: Aggregate,
    aggregate_id: &str,
    changes: &[(String, Option<String>)],
) -> Result<usize, tokio_postgres::Error> {
    let rows: Vec<Params> = changes
        .iter()
        .map(|(message_id, superseded_by)| {
            vec![
                param(aggregate.as_str()),
                param(aggregate_id.to_owned()),
                param(message_id.clone()),
                param(superseded_by.clone()),
            ]
        })
        .collect();
    execute_each(
        transaction,
        "UPDATE aggregate_events SET superseded_by = $4 \
         WHERE aggregate = $1 AND aggregate_id = $2 AND message_id = $3",
        &rows,
    )
    .await?;
    let newly_lost = changes
        .iter()
        .filter(|(_, superseded_by)| superseded_by.is_some())
        .count();
    if newly_lost > 0 {
        tracing::warn!(
            aggregate = aggregate.as_str(),
            aggregate_id,
            newly_lost,
            "cross-site conflict: commands for the same version were written at both sites"
        );
    }
    Ok(newly_lost)
}
