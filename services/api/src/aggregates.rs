//! The command side: an aggregate's current state read from its own subject in the local aggregate
//! stream (not from Postgres, so commands keep working when the read models are down), and commands
//! published to the aggregate's home-site origin with `Nats-Expected-Last-Subject-Sequence`.
//!
//! Positions: each event in the local aggregate carries `Nats-Stream-Source: <origin stream> <seq>`, so
//! the last sequence of `<home>.alerts.<id>` in the home origin is known locally. A command built on a
//! stale local view (replication lag) fails with "wrong last sequence"; the command then waits for the
//! local copy to catch up, reloads, and only answers 409 if the aggregate really moved past the version
//! the client built on.
//!
//! Home site unreachable (the publish across the link finds no stream): the command goes to the local
//! origin instead, under the local origin's own subject sequence, and the projections settle any
//! cross-site conflict with the merge rule (later event time, then site name) — DESIGN.md §4.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use coinalarm_runtime::bus::{self, Bus, Published};
use coinalarm_runtime::trace::TraceContext;
use jiff::Timestamp;
use proto_events::events::{AlertSpec, EventData, Preferences};
use proto_events::{Category, Envelope, Event, Site};

use crate::error::ApiError;

/// How long a command waits for the local aggregate to catch up after losing a race.
const CATCH_UP_WAIT: Duration = Duration::from_millis(1_500);
/// Races lost in a row before a command gives up with 409.
const MAX_ATTEMPTS: usize = 4;

/// Header JetStream adds to messages a stream copied from a source.
const STREAM_SOURCE_HEADER: &str = "Nats-Stream-Source";

/// One event of an aggregate as stored in the local aggregate stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub envelope: Envelope<Event>,
    /// Sequence in the local aggregate stream.
    pub sequence: u64,
    /// Origin stream and sequence there, from `Nats-Stream-Source`.
    pub origin: Option<(String, u64)>,
}

/// Why an aggregate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the local {stream} stream cannot be read: {message}")]
    Unavailable { stream: String, message: String },
}

impl From<LoadError> for ApiError {
    fn from(error: LoadError) -> ApiError {
        tracing::warn!(%error, "cannot load an aggregate");
        ApiError::bus_unavailable()
    }
}

/// Every event stored under `subject` in the local aggregate `stream`, in stream order. Events that no
/// longer decode are skipped (they are parked by the consumers; a command cannot use them either).
pub async fn load_subject(
    jetstream: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<Vec<StoredEvent>, LoadError> {
    let unavailable = |message: String| LoadError::Unavailable {
        stream: stream.to_owned(),
        message,
    };
    let handle = jetstream
        .get_stream_no_info(stream)
        .await
        .map_err(|error| unavailable(error.to_string()))?;
    let mut events = Vec::new();
    let mut next = 1;
    loop {
        let message = match handle
            .direct_get_next_for_subject(subject, Some(next))
            .await
        {
            Ok(message) => message,
            Err(error) if error.kind() == jetstream::stream::DirectGetErrorKind::NotFound => break,
            Err(error) => return Err(unavailable(error.to_string())),
        };
        next = message.sequence + 1;
        let origin = message
            .headers
            .get(STREAM_SOURCE_HEADER)
            .and_then(|value| parse_source(value.as_str()));
        match proto_events::decode(&message.payload) {
            Ok(envelope) => events.push(StoredEvent {
                envelope,
                sequence: message.sequence,
                origin,
            }),
            Err(error) => {
                tracing::warn!(subject, sequence = message.sequence, %error, "skipping an undecodable aggregate event");
            }
        }
    }
    Ok(events)
}

/// `<source stream>[:<hash>] <sequence> ...` → (stream, sequence).
fn parse_source(value: &str) -> Option<(String, u64)> {
    let mut tokens = value.split_whitespace();
    let stream_token = tokens.next()?;
    let stream = stream_token
        .split_once(':')
        .map_or(stream_token, |(name, _)| name);
    let sequence = tokens.next()?.parse().ok()?;
    (!stream.is_empty()).then(|| (stream.to_owned(), sequence))
}

/// Per version, the command that wins by the merge rule (later time, then greater site name, then
/// greater message id), in ascending version order.
fn winners(
    events: &[StoredEvent],
    version_of: impl Fn(&Event) -> Option<u64>,
) -> Vec<(u64, &StoredEvent)> {
    let mut by_version: BTreeMap<u64, &StoredEvent> = BTreeMap::new();
    for event in events {
        let Some(version) = version_of(&event.envelope.data) else {
            continue;
        };
        let replace = by_version.get(&version).is_none_or(|current| {
            let key = |stored: &StoredEvent| {
                (
                    stored.envelope.time,
                    stored.envelope.origin_site.as_str(),
                    stored.envelope.id.as_str().to_owned(),
                )
            };
            key(event) > key(current)
        });
        if replace {
            by_version.insert(version, event);
        }
    }
    by_version.into_iter().collect()
}

/// Where an aggregate's subject stands in each origin stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Positions {
    /// Last sequence of the subject in the home origin (0: none yet).
    pub home: u64,
    /// Last sequence of the subject in the local origin, when that is not the home origin.
    pub local: u64,
    /// Last position in the local aggregate stream.
    pub aggregate: u64,
}

fn positions(events: &[StoredEvent], category: Category, home: Site, local: Site) -> Positions {
    let home_stream = category.origin_stream(home);
    let local_stream = category.origin_stream(local);
    let mut positions = Positions::default();
    for event in events {
        positions.aggregate = positions.aggregate.max(event.sequence);
        if let Some((stream, sequence)) = &event.origin {
            if *stream == home_stream {
                positions.home = positions.home.max(*sequence);
            } else if *stream == local_stream {
                positions.local = positions.local.max(*sequence);
            }
        }
    }
    positions
}

/// An alert's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Active,
    Paused,
    Deleted,
}

impl AlertStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Active => "active",
            AlertStatus::Paused => "paused",
            AlertStatus::Deleted => "deleted",
        }
    }
}

/// An alert as its events leave it.
#[derive(Debug, Clone)]
pub struct AlertState {
    pub alert_id: proto_events::domain::AlertId,
    pub user_id: proto_events::domain::UserId,
    pub home_site: Site,
    pub spec: AlertSpec,
    pub status: AlertStatus,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub positions: Positions,
}

fn alert_version(event: &Event) -> Option<u64> {
    match event {
        Event::AlertCreated(created) => Some(created.version()),
        Event::AlertUpdated(updated) => Some(updated.version),
        Event::AlertPaused(paused) => Some(paused.version),
        Event::AlertResumed(resumed) => Some(resumed.version),
        Event::AlertDeleted(deleted) => Some(deleted.version),
        _ => None,
    }
}

/// Folds an alert's events (same rules as the projector); `None` until its creation is there.
pub fn fold_alert(events: &[StoredEvent], local: Site) -> Option<AlertState> {
    let mut state: Option<AlertState> = None;
    for (version, stored) in winners(events, alert_version) {
        let time = stored.envelope.time;
        match (&mut state, &stored.envelope.data) {
            (None, Event::AlertCreated(created)) => {
                state = Some(AlertState {
                    alert_id: created.alert_id.clone(),
                    user_id: created.user_id.clone(),
                    home_site: created.home_site,
                    spec: created.spec.clone(),
                    status: AlertStatus::Active,
                    version,
                    created_at: time,
                    updated_at: time,
                    positions: Positions::default(),
                });
            }
            (Some(current), event) if current.status != AlertStatus::Deleted => {
                match event {
                    Event::AlertUpdated(updated) => current.spec = updated.spec.clone(),
                    Event::AlertPaused(_) => current.status = AlertStatus::Paused,
                    Event::AlertResumed(_) => current.status = AlertStatus::Active,
                    Event::AlertDeleted(_) => current.status = AlertStatus::Deleted,
                    _ => continue,
                }
                current.version = version;
                current.updated_at = time;
            }
            _ => {}
        }
    }
    let mut state = state?;
    state.positions = positions(events, Category::Alerts, state.home_site, local);
    Some(state)
}

/// A user as its events leave it.
#[derive(Debug, Clone)]
pub struct UserState {
    pub user_id: proto_events::domain::UserId,
    pub home_site: Site,
    pub preferences: Preferences,
    pub version: u64,
    pub positions: Positions,
}

fn user_version(event: &Event) -> Option<u64> {
    match event {
        Event::UserRegistered(registered) => Some(registered.version()),
        Event::UserPreferencesChanged(changed) => Some(changed.version),
        _ => None,
    }
}

/// Folds a user's events; `None` until the registration is there.
pub fn fold_user(events: &[StoredEvent], local: Site) -> Option<UserState> {
    let mut state: Option<UserState> = None;
    for (version, stored) in winners(events, user_version) {
        match (&mut state, &stored.envelope.data) {
            (None, Event::UserRegistered(registered)) => {
                state = Some(UserState {
                    user_id: registered.user_id.clone(),
                    home_site: registered.home_site,
                    preferences: Preferences::default(),
                    version,
                    positions: Positions::default(),
                });
            }
            (Some(current), Event::UserPreferencesChanged(changed)) => {
                current.preferences = changed.preferences.clone();
                current.version = version;
            }
            _ => {}
        }
    }
    let mut state = state?;
    state.positions = positions(events, Category::Users, state.home_site, local);
    Some(state)
}

pub async fn load_alert(
    bus: &Bus,
    alert_id: &proto_events::domain::AlertId,
) -> Result<Option<AlertState>, LoadError> {
    let subject = proto_events::subjects::subject::alert(None, alert_id.as_str());
    let events = load_subject(
        bus.jetstream(),
        Category::Alerts.aggregate_stream(),
        &subject,
    )
    .await?;
    Ok(fold_alert(&events, bus.site()))
}

pub async fn load_user(
    bus: &Bus,
    user_id: &proto_events::domain::UserId,
) -> Result<Option<UserState>, LoadError> {
    let subject = proto_events::subjects::subject::user(None, user_id.as_str());
    let events = load_subject(
        bus.jetstream(),
        Category::Users.aggregate_stream(),
        &subject,
    )
    .await?;
    Ok(fold_user(&events, bus.site()))
}

/// How a command publish ended.
#[derive(Debug)]
pub enum Outcome {
    Stored {
        published: Published,
        at: Site,
    },
    /// The subject moved since the positions the command was built on.
    LostRace,
}

/// Publishes a command of an existing aggregate: to the home origin under its subject sequence, or to
/// the local origin when the home site is unreachable.
pub async fn publish_command<T: EventData>(
    bus: &Bus,
    envelope: &Envelope<T>,
    home: Site,
    positions: Positions,
    trace: Option<&TraceContext>,
) -> Result<Outcome, ApiError> {
    match bus
        .publish_expecting(envelope, home, positions.home, trace)
        .await
    {
        Ok(published) => Ok(Outcome::Stored {
            published,
            at: home,
        }),
        Err(bus::Error::WrongLastSequence { .. }) => Ok(Outcome::LostRace),
        Err(bus::Error::Publish { source, .. })
            if home != bus.site() && source.kind() == PublishErrorKind::StreamNotFound =>
        {
            // Nothing answered across the link: the home site is unreachable, so the command is
            // recorded here and merged by the projections' rule.
            metrics::counter!("coinalarm_api_home_site_fallbacks_total").increment(1);
            tracing::warn!(home = %home, subject = %envelope.subject(Some(home)), "home site unreachable; writing the command to the local origin");
            match bus
                .publish_expecting(envelope, bus.site(), positions.local, trace)
                .await
            {
                Ok(published) => Ok(Outcome::Stored {
                    published,
                    at: bus.site(),
                }),
                Err(bus::Error::WrongLastSequence { .. }) => Ok(Outcome::LostRace),
                Err(error) => Err(publish_failed(&error)),
            }
        }
        Err(error) => Err(publish_failed(&error)),
    }
}

pub fn publish_failed(error: &bus::Error) -> ApiError {
    tracing::warn!(%error, "publishing a command failed");
    ApiError::bus_unavailable()
}

/// After a lost race: waits until the local aggregate holds something past `seen` on `subject` (the
/// winner's event arriving), up to a bound.
pub async fn wait_for_catch_up(bus: &Bus, category: Category, subject: &str, seen: u64) {
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    let Ok(stream) = bus
        .jetstream()
        .get_stream_no_info(category.aggregate_stream())
        .await
    else {
        return;
    };
    while tokio::time::Instant::now() < deadline {
        if let Ok(message) = stream.direct_get_last_for_subject(subject).await
            && message.sequence > seen
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The attempts a command makes before answering 409.
pub const fn max_attempts() -> usize {
    MAX_ATTEMPTS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_events::events::{AlertCreated, AlertPaused, AlertUpdated};

    fn spec(target: &str) -> AlertSpec {
        serde_json::from_value(serde_json::json!({
            "exchange": "upbit",
            "condition": {"kind": "target_price", "market": "KRW-BTC", "target": target,
                          "direction": "up", "side_at_creation": "below"},
            "repeat": {"mode": "once"},
        }))
        .expect("spec")
    }

    fn stored(
        event: Event,
        site: Site,
        time: &str,
        sequence: u64,
        origin: Option<(&str, u64)>,
    ) -> StoredEvent {
        let envelope = Envelope::new(event, site).at(time.parse().expect("time"));
        StoredEvent {
            envelope,
            sequence,
            origin: origin.map(|(stream, sequence)| (stream.to_owned(), sequence)),
        }
    }

    #[test]
    fn source_headers_parse() {
        assert_eq!(
            parse_source("ALERTS_ONPREM:ab12 17 > >"),
            Some(("ALERTS_ONPREM".to_owned(), 17))
        );
        assert_eq!(
            parse_source("ALERTS_CLOUD 3"),
            Some(("ALERTS_CLOUD".to_owned(), 3))
        );
        assert_eq!(parse_source("garbage"), None);
    }

    #[test]
    fn alerts_fold_with_the_merge_rule_and_track_positions() {
        let alert_id = proto_events::domain::AlertId::new();
        let user_id = proto_events::domain::UserId::new();
        let created = AlertCreated {
            alert_id: alert_id.clone(),
            user_id: user_id.clone(),
            home_site: Site::Onprem,
            spec: spec("100"),
        };
        let update = |target: &str| AlertUpdated {
            alert_id: alert_id.clone(),
            user_id: user_id.clone(),
            version: 2,
            spec: spec(target),
        };
        let events = vec![
            stored(
                created.into(),
                Site::Onprem,
                "2026-11-02T00:00:00Z",
                1,
                Some(("ALERTS_ONPREM", 5)),
            ),
            // Both sites wrote version 2 during a partition: the later one wins.
            stored(
                update("300").into(),
                Site::Cloud,
                "2026-11-02T00:00:02Z",
                3,
                Some(("ALERTS_CLOUD", 1)),
            ),
            stored(
                update("200").into(),
                Site::Onprem,
                "2026-11-02T00:00:01Z",
                2,
                Some(("ALERTS_ONPREM", 6)),
            ),
            stored(
                AlertPaused {
                    alert_id: alert_id.clone(),
                    user_id,
                    version: 3,
                }
                .into(),
                Site::Onprem,
                "2026-11-02T00:00:03Z",
                4,
                Some(("ALERTS_ONPREM", 7)),
            ),
        ];
        let state = fold_alert(&events, Site::Cloud).expect("created");
        assert_eq!(state.version, 3);
        assert_eq!(state.status, AlertStatus::Paused);
        assert_eq!(state.spec, spec("300"));
        assert_eq!(
            state.positions,
            Positions {
                home: 7,
                local: 1,
                aggregate: 4
            }
        );
        assert!(
            fold_alert(&events[1..], Site::Cloud).is_none(),
            "no creation, no alert"
        );
    }
}
