//! Rebuilding the index at start from the local aggregates, so the matcher holds no state of its own:
//! every alert event of `ALERTS`, the latest trigger per alert from `TRIGGERS` (the last one of each
//! alert's subject, plus the recent tail in full, plus the recent tail of this site's own trigger origin,
//! which the aggregate may not have copied yet), and the ticks of `TICKS`
//! from `tick_history` before the tick consumer's acknowledged position up to that position — the ticks
//! after it are delivered again by the durable consumer and evaluated live.

use foldhash::{HashMap, HashMapExt as _};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::{self, context::ConsumerInfoErrorKind};
use coinalarm_runtime::bus::{Bus, ConsumerSpec};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use proto_events::domain::AlertId;
use proto_events::events::TriggerFired;
use proto_events::{Category, Event, Firing, envelope};

use crate::config::MatcherConfig;
use crate::index::AlertIndex;

/// How long a read of a stream at start may wait for its next message before it is declared stuck.
const READ_STALL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {stream} at start failed: {source}")]
    Read {
        stream: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "reading {stream} at start stalled: nothing for {READ_STALL:?} with {remaining} messages to go"
    )]
    Stalled { stream: String, remaining: u64 },
}

fn read_error<E>(stream: &str) -> impl FnOnce(E) -> Error + '_
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| Error::Read {
        stream: stream.to_owned(),
        source: Box::new(source),
    }
}

/// What a rebuild read, for the log and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RebuildCounts {
    pub alert_events: u64,
    pub triggers: u64,
    pub ticks: u64,
    /// Messages that could not be decoded and were skipped (they are parked by the live consumers).
    pub undecodable: u64,
}

/// Where the tick consumer stands: its definition, and the last tick evaluated by a previous run.
#[derive(Debug, Clone)]
pub struct TickPosition {
    pub spec: ConsumerSpec,
    /// The consumer's acknowledged floor: ticks up to it were evaluated and their triggers published.
    pub evaluated_through: u64,
}

/// Finds the tick consumer, or creates it: a new one starts after the last tick stored now, so a first
/// start neither evaluates a week of old ticks live nor misses one arriving during the rebuild.
///
/// A consumer left with ticks delivered but never acknowledged (a crash, or a pull request still open
/// at the server when the previous run stopped) is recreated from its acknowledged floor. Otherwise
/// those ticks would come back only after `ack_wait`, behind newer ones, and the sequential-id rule
/// would drop them unevaluated. The matcher is one per site, so nothing else reads this consumer.
pub async fn tick_position(bus: &Bus, config: &MatcherConfig) -> Result<TickPosition, Error> {
    let name = Category::Ticks.aggregate_stream();
    let mut stream = bus
        .jetstream()
        .get_stream(name)
        .await
        .map_err(read_error(name))?;
    let last_sequence = stream
        .info()
        .await
        .map_err(read_error(name))?
        .state
        .last_sequence;
    let mut spec = ConsumerSpec::new(name, &config.durable, Vec::new());
    spec.batch_size = config.tick_batch_size;
    spec.max_ack_pending = config.max_ack_pending;
    spec.ack_wait = config.ack_wait;
    let evaluated_through = match stream.consumer_info(&config.durable).await {
        Ok(existing) => {
            let before_start = match existing.config.deliver_policy {
                DeliverPolicy::ByStartSequence { start_sequence } => {
                    start_sequence.saturating_sub(1)
                }
                _ => 0,
            };
            let floor = existing.ack_floor.stream_sequence.max(before_start);
            if existing.num_ack_pending == 0 && existing.delivered.stream_sequence <= floor {
                // A consumer's deliver policy cannot change: keep the one it was created with.
                spec.deliver_policy = existing.config.deliver_policy;
                return Ok(TickPosition {
                    spec,
                    evaluated_through: floor,
                });
            }
            tracing::info!(
                consumer = %config.durable,
                acknowledged_through = floor,
                unacknowledged = existing.num_ack_pending,
                "recreating the tick consumer from its acknowledged floor"
            );
            stream
                .delete_consumer(&config.durable)
                .await
                .map_err(read_error(name))?;
            floor
        }
        Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => last_sequence,
        Err(error) => return Err(read_error(name)(error)),
    };
    spec.deliver_policy = DeliverPolicy::ByStartSequence {
        start_sequence: evaluated_through + 1,
    };
    // Created now, not after the rebuild, so its position is fixed before anything else happens.
    bus.durable_consumer(&spec)
        .await
        .map_err(read_error(name))?;
    Ok(TickPosition {
        spec,
        evaluated_through,
    })
}

/// Rebuilds `index` and returns the live continuation of the `ALERTS` read, positioned right after the
/// last event applied.
pub async fn rebuild(
    bus: &Bus,
    config: &MatcherConfig,
    index: &mut AlertIndex,
    position: &TickPosition,
) -> Result<(Ordered, RebuildCounts), Error> {
    let mut counts = RebuildCounts::default();
    let now = Timestamp::now();
    index.begin_restore();

    let alerts_name = Category::Alerts.aggregate_stream();
    let (mut alerts, pending) = open(bus, alerts_name, DeliverPolicy::All, String::new()).await?;
    let mut ignored = Vec::new();
    drain(
        &mut alerts,
        alerts_name,
        pending,
        None,
        |message| match envelope::decode(&message.payload) {
            Ok(envelope) => {
                counts.alert_events += 1;
                index.apply(
                    &envelope.data,
                    envelope.time,
                    envelope.origin_site,
                    now,
                    &mut ignored,
                );
            }
            Err(_) => counts.undecodable += 1,
        },
    )
    .await?;

    let mut latest: HashMap<AlertId, TriggerFired> = HashMap::new();
    let mut take_trigger =
        |message: &jetstream::Message, counts: &mut RebuildCounts| match envelope::decode(
            &message.payload,
        ) {
            Ok(envelope) => {
                if let Event::TriggerFired(trigger) = envelope.data {
                    counts.triggers += 1;
                    keep_latest(&mut latest, trigger);
                }
            }
            Err(_) => counts.undecodable += 1,
        };
    let triggers_name = Category::Triggers.aggregate_stream();
    let tail_start = now
        .checked_sub(SignedDuration::try_from(config.trigger_tail).unwrap_or_default())
        .unwrap_or(Timestamp::MIN);
    let origin_name = Category::Triggers.origin_stream(bus.site());
    // One subject per alert: the last message of each is its latest firing, without reading months of
    // triggers. The tails catch what that misses: copies stored out of order, and this site's own triggers
    // the aggregate had not copied yet.
    for (stream, deliver_policy, filter) in [
        (
            triggers_name,
            DeliverPolicy::LastPerSubject,
            Category::Triggers.aggregate_filter(),
        ),
        (triggers_name, by_start_time(tail_start)?, String::new()),
        (
            origin_name.as_str(),
            by_start_time(tail_start)?,
            String::new(),
        ),
    ] {
        let (mut triggers, pending) = open(bus, stream, deliver_policy, filter).await?;
        drain(&mut triggers, stream, pending, None, |message| {
            take_trigger(message, &mut counts)
        })
        .await?;
    }

    // The trade time of each latest firing's tick, for cooldowns, found while reading the ticks.
    let mut firing_ticks: HashMap<String, Option<Timestamp>> = latest
        .values()
        .filter(|trigger| matches!(trigger.firing, Firing::Armed { .. }))
        .filter_map(|trigger| trigger.observed.first()?.tick.as_ref())
        .map(|tick| (tick.tick_id.as_str().to_owned(), None))
        .collect();

    if position.evaluated_through > 0 {
        let ticks_name = Category::Ticks.aggregate_stream();
        let history_end = stored_time(bus, ticks_name, position.evaluated_through)
            .await
            .unwrap_or(now);
        let history_start = history_end
            .checked_sub(SignedDuration::try_from(config.tick_history).unwrap_or_default())
            .unwrap_or(Timestamp::MIN);
        let (mut ticks, pending) = open(
            bus,
            ticks_name,
            by_start_time(history_start)?,
            String::new(),
        )
        .await?;
        let mut evaluated = Vec::new();
        drain(
            &mut ticks,
            ticks_name,
            pending,
            Some(position.evaluated_through),
            |message| {
                let Ok(envelope) = envelope::decode(&message.payload) else {
                    counts.undecodable += 1;
                    return;
                };
                let Event::TickObserved(tick) = envelope.data else {
                    return;
                };
                counts.ticks += 1;
                let sequence = message
                    .info()
                    .map(|info| info.stream_sequence)
                    .unwrap_or_default();
                index.on_tick(&tick, sequence, now, &mut evaluated);
                if !firing_ticks.is_empty()
                    && let Some(found) = firing_ticks.get_mut(envelope.id.as_str())
                {
                    *found = Some(tick.trade_timestamp);
                }
            },
        )
        .await?;
    }

    for trigger in latest.values() {
        let fired_at = match trigger.firing {
            Firing::Scheduled { occurrence } => occurrence,
            // Cooldowns run from the firing tick's trade time (the same at both sites); when that tick is
            // older than the history read, the time of the decision is close enough.
            Firing::Armed { .. } => trigger
                .observed
                .first()
                .and_then(|observed| observed.tick.as_ref())
                .and_then(|tick| firing_ticks.get(tick.tick_id.as_str()).copied().flatten())
                .unwrap_or(trigger.evaluated_at),
        };
        index.restore_trigger(trigger, fired_at);
    }
    index.finish_restore();
    Ok((alerts, counts))
}

/// Keeps the latest firing per alert: by alert version, then generation or occurrence.
fn keep_latest(latest: &mut HashMap<AlertId, TriggerFired>, trigger: TriggerFired) {
    let order = |trigger: &TriggerFired| {
        let firing = match trigger.firing {
            Firing::Armed { generation } => i128::from(generation),
            Firing::Scheduled { occurrence } => i128::from(occurrence.as_second()),
        };
        (trigger.alert_version, firing)
    };
    match latest.get(&trigger.alert_id) {
        Some(kept) if order(kept) >= order(&trigger) => {}
        _ => {
            latest.insert(trigger.alert_id.clone(), trigger);
        }
    }
}

fn by_start_time(start: Timestamp) -> Result<DeliverPolicy, Error> {
    let start_time =
        async_nats::datetime::from_nanos(start.as_nanosecond()).map_err(|error| Error::Read {
            stream: "TICKS".to_owned(),
            source: error,
        })?;
    Ok(DeliverPolicy::ByStartTime { start_time })
}

/// When message `sequence` of `stream` was stored; `None` (and a warning) if it cannot be read, e.g.
/// aged out, in which case the history is read back from now.
async fn stored_time(bus: &Bus, stream: &str, sequence: u64) -> Option<Timestamp> {
    let read = async {
        let handle = bus.jetstream().get_stream(stream).await?;
        let message = handle.get_raw_message(sequence).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(message.time.unix_timestamp_nanos())
    };
    match read.await {
        Ok(nanoseconds) => Timestamp::from_nanosecond(nanoseconds).ok(),
        Err(error) => {
            tracing::warn!(stream, sequence, %error, "cannot read when the last evaluated tick was stored; reading tick history back from now");
            None
        }
    }
}

/// An ordered consumer on `stream` (`filter_subject` empty for all of it) and how many messages it has
/// to deliver as of now.
async fn open(
    bus: &Bus,
    stream: &str,
    deliver_policy: DeliverPolicy,
    filter_subject: String,
) -> Result<(Ordered, u64), Error> {
    let handle = bus
        .jetstream()
        .get_stream(stream)
        .await
        .map_err(read_error(stream))?;
    let consumer = handle
        .create_consumer(OrderedConfig {
            deliver_policy,
            filter_subject,
            description: Some(format!("{} rebuild at {}", bus.service(), bus.site())),
            ..Default::default()
        })
        .await
        .map_err(read_error(stream))?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer.messages().await.map_err(read_error(stream))?;
    Ok((messages, pending))
}

/// Hands the next `pending` messages to `each`, stopping early at the first one after `through`.
async fn drain(
    messages: &mut Ordered,
    stream: &str,
    pending: u64,
    through: Option<u64>,
    mut each: impl FnMut(&jetstream::Message),
) -> Result<(), Error> {
    let mut remaining = pending;
    while remaining > 0 {
        let next = tokio::time::timeout(READ_STALL, messages.next()).await;
        let message = match next {
            Err(_) | Ok(None) => {
                return Err(Error::Stalled {
                    stream: stream.to_owned(),
                    remaining,
                });
            }
            Ok(Some(result)) => result.map_err(read_error(stream))?,
        };
        remaining -= 1;
        let sequence = message
            .info()
            .map(|info| info.stream_sequence)
            .unwrap_or_default();
        if through.is_some_and(|last| sequence > last) {
            break;
        }
        each(&message);
        if through.is_some_and(|last| sequence >= last) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use proto_events::domain::{AlertId, Exchange, UserId};
    use proto_events::events::{AlertKind, TriggerFired};
    use proto_events::{Firing, Site, TriggerId};

    use super::*;

    fn trigger(version: u64, firing: Firing) -> TriggerFired {
        let alert_id = AlertId::parse("a1").unwrap();
        TriggerFired {
            trigger_id: TriggerId::new(&alert_id, firing),
            alert_id,
            user_id: UserId::parse("u1").unwrap(),
            alert_version: version,
            home_site: Site::Onprem,
            kind: AlertKind::TargetPrice,
            firing,
            exchange: Exchange::upbit(),
            observed: Vec::new(),
            evaluated_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_latest_firing_is_kept_whatever_the_reading_order() {
        let firings = [
            trigger(
                1,
                Firing::Armed {
                    generation: 1_000_000_002,
                },
            ),
            trigger(
                3,
                Firing::Armed {
                    generation: 3_000_000_001,
                },
            ),
            trigger(
                1,
                Firing::Armed {
                    generation: 1_000_000_001,
                },
            ),
        ];
        for order in [[0, 1, 2], [1, 0, 2], [2, 1, 0]] {
            let mut latest = HashMap::new();
            for position in order {
                keep_latest(&mut latest, firings[position].clone());
            }
            assert_eq!(latest.len(), 1);
            assert_eq!(latest.values().next(), Some(&firings[1]));
        }
    }
}
