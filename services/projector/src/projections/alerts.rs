//! ALERTS → `alerts`: every command is recorded in `aggregate_events`, and each touched alert's row is
//! recomputed from all its commands with the merge rule, so both sites show the same alert whatever
//! order the commands reached them in.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;
use jiff::Timestamp;
use proto_events::events::alerts::ALERT_CREATED_VERSION;
use proto_events::events::{AlertCondition, AlertSpec, ChangeBasis, Direction, RepeatPolicy};
use proto_events::{Category, Event, Site};
use rust_decimal::Decimal;

use super::aggregates::{self, Aggregate, StoredCommand};
use super::{Applied, Params, execute_each, param, sequence};
use crate::event::StreamEvent;
use crate::merge::Versioned;

const UPSERT_ALERT: &str = "INSERT INTO alerts \
    (alert_id, user_id, home_site, kind, exchange, markets, condition, target_price, direction, \
     change_basis, change_threshold, repeat_mode, cooldown_seconds, expires_at, status, version, \
     subject_sequence, stream_sequence, created_at, updated_at, deleted_at, conflicts, last_message_id) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
            $21, $22, $23) \
    ON CONFLICT (alert_id) DO UPDATE SET \
        user_id = EXCLUDED.user_id, home_site = EXCLUDED.home_site, kind = EXCLUDED.kind, \
        exchange = EXCLUDED.exchange, markets = EXCLUDED.markets, condition = EXCLUDED.condition, \
        target_price = EXCLUDED.target_price, direction = EXCLUDED.direction, \
        change_basis = EXCLUDED.change_basis, change_threshold = EXCLUDED.change_threshold, \
        repeat_mode = EXCLUDED.repeat_mode, cooldown_seconds = EXCLUDED.cooldown_seconds, \
        expires_at = EXCLUDED.expires_at, status = EXCLUDED.status, version = EXCLUDED.version, \
        subject_sequence = EXCLUDED.subject_sequence, stream_sequence = EXCLUDED.stream_sequence, \
        created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
        deleted_at = EXCLUDED.deleted_at, conflicts = EXCLUDED.conflicts, \
        last_message_id = EXCLUDED.last_message_id";

pub(super) async fn apply(
    transaction: &Transaction<'_>,
    events: &[&StreamEvent],
) -> Result<Applied, tokio_postgres::Error> {
    let mut applied = Applied::default();
    let mut commands = Vec::new();
    let mut touched = BTreeSet::new();
    for event in events {
        let (alert_id, version) = match &event.envelope.data {
            Event::AlertCreated(created) => (created.alert_id.as_str(), ALERT_CREATED_VERSION),
            Event::AlertUpdated(updated) => (updated.alert_id.as_str(), updated.version),
            Event::AlertPaused(paused) => (paused.alert_id.as_str(), paused.version),
            Event::AlertResumed(resumed) => (resumed.alert_id.as_str(), resumed.version),
            Event::AlertDeleted(deleted) => (deleted.alert_id.as_str(), deleted.version),
            _ => {
                applied.ignored += 1;
                continue;
            }
        };
        // The body decoded a moment ago, so it is JSON; kept whole so recomputes run the upcasters.
        let body: serde_json::Value =
            serde_json::from_slice(&event.body).unwrap_or(serde_json::Value::Null);
        commands.push(aggregates::insert_params(
            Aggregate::Alert,
            alert_id,
            version,
            event,
            Some(body),
        ));
        touched.insert(alert_id.to_owned());
        applied.projected += 1;
    }
    aggregates::insert(transaction, &commands).await?;

    let touched: Vec<String> = touched.into_iter().collect();
    let mut rows = Vec::with_capacity(touched.len());
    for (alert_id, commands) in
        aggregates::load(transaction, Aggregate::Alert, &touched, true).await?
    {
        // Positions count every command, losers included: a losing command still moved the subject.
        let positions: Vec<Position> = commands.iter().map(Position::of).collect();
        let settled = aggregates::settle(commands);
        applied.conflicts +=
            aggregates::mark_superseded(transaction, Aggregate::Alert, &alert_id, &settled.changes)
                .await?;
        if let Some(state) = fold(&alert_id, &settled.winners, settled.losers, &positions) {
            rows.push(state.into_params());
        }
    }
    execute_each(transaction, UPSERT_ALERT, &rows).await?;
    Ok(applied)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    Paused,
    Deleted,
}

impl Status {
    const fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Deleted => "deleted",
        }
    }
}

/// An alert's current state, as the winning commands leave it.
#[derive(Debug, Clone)]
struct AlertState {
    alert_id: String,
    user_id: String,
    home_site: Site,
    spec: AlertSpec,
    status: Status,
    version: u64,
    created_at: Timestamp,
    updated_at: Timestamp,
    deleted_at: Option<Timestamp>,
    last_message_id: String,
    subject_sequence: Option<u64>,
    stream_sequence: u64,
    conflicts: usize,
}

/// Where one command sits in the local aggregate and in its origin stream.
#[derive(Debug, Clone)]
struct Position {
    stream_sequence: u64,
    origin_stream: Option<String>,
    origin_sequence: Option<u64>,
}

impl Position {
    fn of(command: &StoredCommand) -> Position {
        Position {
            stream_sequence: command.stream_sequence,
            origin_stream: command.origin_stream.clone(),
            origin_sequence: command.origin_sequence,
        }
    }
}

/// Applies the winners version by version. `None` until the creation has arrived (a later command
/// written at the other site can overtake it); deletion is terminal.
fn fold(
    alert_id: &str,
    winners: &[Versioned<StoredCommand>],
    losers: usize,
    positions: &[Position],
) -> Option<AlertState> {
    let mut state: Option<AlertState> = None;
    for winner in winners {
        let Some(event) = decode(alert_id, &winner.data) else {
            continue;
        };
        match (&mut state, event) {
            (None, Event::AlertCreated(created)) => {
                state = Some(AlertState {
                    alert_id: alert_id.to_owned(),
                    user_id: created.user_id.as_str().to_owned(),
                    home_site: created.home_site,
                    spec: created.spec,
                    status: Status::Active,
                    version: winner.version,
                    created_at: winner.time,
                    updated_at: winner.time,
                    deleted_at: None,
                    last_message_id: winner.message_id.clone(),
                    subject_sequence: None,
                    stream_sequence: 0,
                    conflicts: losers,
                });
                continue;
            }
            (Some(current), event) if current.status != Status::Deleted => {
                match event {
                    Event::AlertUpdated(updated) => current.spec = updated.spec,
                    Event::AlertPaused(_) => current.status = Status::Paused,
                    Event::AlertResumed(_) => current.status = Status::Active,
                    Event::AlertDeleted(_) => {
                        current.status = Status::Deleted;
                        current.deleted_at = Some(winner.time);
                    }
                    // A second creation of one id cannot be written (ids are new UUIDs).
                    _ => continue,
                }
                current.version = winner.version;
                current.updated_at = winner.time;
                current.last_message_id = winner.message_id.clone();
            }
            _ => {}
        }
    }
    let mut state = state?;
    let home_origin = Category::Alerts.origin_stream(state.home_site);
    state.stream_sequence = positions
        .iter()
        .map(|position| position.stream_sequence)
        .max()
        .unwrap_or_default();
    state.subject_sequence = positions
        .iter()
        .filter(|position| position.origin_stream.as_deref() == Some(home_origin.as_str()))
        .filter_map(|position| position.origin_sequence)
        .max();
    Some(state)
}

/// Re-decodes a stored envelope (upcasters included). A body that no longer decodes is skipped with an
/// error in the log rather than stalling the projection: a rebuild with fixed code restores it.
fn decode(alert_id: &str, command: &StoredCommand) -> Option<Event> {
    let body = command.body.clone()?;
    match proto_events::decode_value(body) {
        Ok(envelope) => Some(envelope.data),
        Err(error) => {
            tracing::error!(alert_id, message_id = %command.message_id, %error, "a recorded alert command no longer decodes; left out of the alert's state");
            metrics::counter!("coinalarm_projector_errors_total", "projection" => "alerts", "kind" => "stored_command_undecodable").increment(1);
            None
        }
    }
}

impl AlertState {
    fn into_params(self) -> Params {
        let condition = &self.spec.condition;
        let (target_price, direction, change_basis, change_threshold): (
            Option<Decimal>,
            Option<&'static str>,
            Option<&'static str>,
            Option<Decimal>,
        ) = match condition {
            AlertCondition::TargetPrice(target) => (
                Some(target.target.value()),
                Some(direction_name(target.direction)),
                None,
                None,
            ),
            AlertCondition::ChangeRate(change) => (
                None,
                Some(direction_name(change.direction)),
                Some(basis_name(change.basis)),
                Some(change.threshold.value()),
            ),
            AlertCondition::Scheduled(_) => (None, None, None, None),
        };
        let (repeat_mode, cooldown_seconds) = match self.spec.repeat {
            RepeatPolicy::Once => ("once", None),
            RepeatPolicy::Repeat { cooldown_seconds } => (
                "repeat",
                Some(i32::try_from(cooldown_seconds.get()).unwrap_or(i32::MAX)),
            ),
        };
        let markets: Vec<String> = condition
            .markets()
            .iter()
            .map(|market| market.as_str().to_owned())
            .collect();
        // Serializing a contract type to JSON cannot fail (string keys only).
        let condition_json = serde_json::to_value(condition).unwrap_or(serde_json::Value::Null);
        vec![
            param(self.alert_id),
            param(self.user_id),
            param(self.home_site.as_str()),
            param(condition.kind().as_str()),
            param(self.spec.exchange.as_str().to_owned()),
            param(markets),
            param(condition_json),
            param(target_price),
            param(direction),
            param(change_basis),
            param(change_threshold),
            param(repeat_mode),
            param(cooldown_seconds),
            param(self.spec.expires_at),
            param(self.status.as_str()),
            sequence(self.version),
            param(self.subject_sequence.map(crate::target::to_bigint)),
            sequence(self.stream_sequence),
            param(self.created_at),
            param(self.updated_at),
            param(self.deleted_at),
            param(i32::try_from(self.conflicts).unwrap_or(i32::MAX)),
            param(self.last_message_id),
        ]
    }
}

const fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Up => "up",
        Direction::Down => "down",
        Direction::Either => "either",
    }
}

/// The wire names of the bases (`daily`, `5m`, `1h`, `24h`).
const fn basis_name(basis: ChangeBasis) -> &'static str {
    match basis {
        ChangeBasis::Daily => "daily",
        ChangeBasis::Rolling5Minutes => "5m",
        ChangeBasis::Rolling1Hour => "1h",
        ChangeBasis::Rolling24Hours => "24h",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_names_match_the_wire() {
        for basis in [
            ChangeBasis::Daily,
            ChangeBasis::Rolling5Minutes,
            ChangeBasis::Rolling1Hour,
            ChangeBasis::Rolling24Hours,
        ] {
            assert_eq!(
                serde_json::to_value(basis).expect("serializes"),
                serde_json::json!(basis_name(basis))
            );
        }
        for direction in [Direction::Up, Direction::Down, Direction::Either] {
            assert_eq!(
                serde_json::to_value(direction).expect("serializes"),
                serde_json::json!(direction_name(direction))
            );
        }
    }
}
