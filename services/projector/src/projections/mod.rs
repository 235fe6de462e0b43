//! The projections: one per aggregate stream, each turning a batch of events into idempotent writes
//! inside the transaction that also advances its checkpoint.

mod aggregates;
mod alerts;
mod deadletters;
mod dispatch;
mod ticks;
mod triggers;
mod users;

use deadpool_postgres::Transaction;
use proto_events::Category;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;

use crate::event::StreamEvent;

/// A read model fed by one aggregate stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Projection {
    Users,
    Alerts,
    Triggers,
    Dispatch,
    Ticks,
    DeadLetters,
}

impl Projection {
    pub const ALL: [Projection; 6] = [
        Projection::Users,
        Projection::Alerts,
        Projection::Triggers,
        Projection::Dispatch,
        Projection::Ticks,
        Projection::DeadLetters,
    ];

    /// The name in `projection_checkpoints.projection`, metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Projection::Users => "users",
            Projection::Alerts => "alerts",
            Projection::Triggers => "triggers",
            Projection::Dispatch => "dispatch",
            Projection::Ticks => "ticks",
            Projection::DeadLetters => "dead_letters",
        }
    }

    pub const fn category(self) -> Category {
        match self {
            Projection::Users => Category::Users,
            Projection::Alerts => Category::Alerts,
            Projection::Triggers => Category::Triggers,
            Projection::Dispatch => Category::Dispatch,
            Projection::Ticks => Category::Ticks,
            Projection::DeadLetters => Category::Deadletter,
        }
    }

    /// The local aggregate stream it reads.
    pub const fn stream(self) -> &'static str {
        self.category().aggregate_stream()
    }

    /// Its durable consumer on that stream, e.g. `projector-alerts`.
    pub fn durable(self) -> String {
        format!("projector-{}", self.name().replace('_', "-"))
    }

    /// The tables it writes (in the schema it projects into). `aggregate_events` is shared by the two
    /// aggregates, `users` and `alerts`: they are rebuilt and swapped together.
    pub const fn tables(self) -> &'static [&'static str] {
        match self {
            Projection::Users => &["users", "aggregate_events"],
            Projection::Alerts => &["alerts", "aggregate_events"],
            Projection::Triggers => &["triggers", "trigger_prices", "alert_trigger_stats"],
            Projection::Dispatch => &[
                "dispatches",
                "dispatch_triggers",
                "dispatch_timeline",
                "dispatch_skips",
            ],
            Projection::Ticks => &["markets", "candles_1m"],
            Projection::DeadLetters => &["dead_letters"],
        }
    }

    /// `requested` plus every projection sharing a table with one of them (transitively), in
    /// [`Projection::ALL`] order: a table can only be swapped whole, with everything written to it.
    pub fn closed_selection(requested: &[Projection]) -> Vec<Projection> {
        let mut selected: Vec<Projection> = requested.to_vec();
        loop {
            let before = selected.len();
            for candidate in Projection::ALL {
                let shares = selected.iter().any(|chosen| {
                    chosen
                        .tables()
                        .iter()
                        .any(|table| candidate.tables().contains(table))
                });
                if shares && !selected.contains(&candidate) {
                    selected.push(candidate);
                }
            }
            if selected.len() == before {
                break;
            }
        }
        Projection::ALL
            .into_iter()
            .filter(|projection| selected.contains(projection))
            .collect()
    }

    pub fn from_name(name: &str) -> Option<Projection> {
        Projection::ALL
            .into_iter()
            .find(|projection| projection.name() == name)
    }

    /// Writes what `events` (in stream order, none applied before) mean for this read model.
    pub async fn apply(
        self,
        transaction: &Transaction<'_>,
        events: &[&StreamEvent],
    ) -> Result<Applied, tokio_postgres::Error> {
        match self {
            Projection::Users => users::apply(transaction, events).await,
            Projection::Alerts => alerts::apply(transaction, events).await,
            Projection::Triggers => triggers::apply(transaction, events).await,
            Projection::Dispatch => dispatch::apply(transaction, events).await,
            Projection::Ticks => ticks::apply(transaction, events).await,
            Projection::DeadLetters => deadletters::apply(transaction, events).await,
        }
    }
}

impl std::fmt::Display for Projection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// What a batch did to a read model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Events that belong to this projection and were written.
    pub projected: usize,
    /// Events of other types found in the stream (e.g. a heartbeat), passed over.
    pub ignored: usize,
    /// Aggregate commands that lost a cross-site conflict, newly found in this batch.
    pub conflicts: usize,
}

/// One statement's parameters, owned so a whole batch of them can be in flight at once.
type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// Runs one prepared statement once per parameter row, all rows pipelined on the connection (one round
/// trip for the batch rather than one per row). The rows must not depend on each other's effects.
async fn execute_each(
    transaction: &Transaction<'_>,
    sql: &str,
    rows: &[Params],
) -> Result<u64, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let statement = transaction.prepare_cached(sql).await?;
    let borrowed: Vec<Vec<&(dyn ToSql + Sync)>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|value| value.as_ref() as &(dyn ToSql + Sync))
                .collect()
        })
        .collect();
    let pending = borrowed
        .iter()
        .map(|row| transaction.execute(&statement, row.as_slice()));
    let counts = futures::future::try_join_all(pending).await?;
    Ok(counts.into_iter().sum())
}

/// Boxes a parameter for [`execute_each`].
fn param<T: ToSql + Sync + Send + 'static>(value: T) -> Box<dyn ToSql + Sync + Send> {
    Box::new(value)
}

/// A stream sequence as the BIGINT the tables store.
fn sequence(value: u64) -> Box<dyn ToSql + Sync + Send> {
    param(crate::target::to_bigint(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_durables_are_valid_nats_names() {
        for projection in Projection::ALL {
            assert_eq!(Projection::from_name(projection.name()), Some(projection));
            let durable = projection.durable();
            assert!(
                durable
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-'),
                "{durable}"
            );
            let json = serde_json::to_value(projection).expect("serializes");
            assert_eq!(json, serde_json::json!(projection.name()));
        }
        assert_eq!(Projection::DeadLetters.durable(), "projector-dead-letters");
    }

    #[test]
    fn projections_sharing_a_table_are_selected_together() {
        assert_eq!(
            Projection::closed_selection(&[Projection::Users]),
            vec![Projection::Users, Projection::Alerts]
        );
        assert_eq!(
            Projection::closed_selection(&[Projection::Ticks, Projection::Triggers]),
            vec![Projection::Triggers, Projection::Ticks]
        );
        assert_eq!(
            Projection::closed_selection(&Projection::ALL),
            Projection::ALL.to_vec()
        );
        assert_eq!(Projection::DeadLetters.stream(), "DEADLETTER");
    }
}
