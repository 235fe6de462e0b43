//! `coinalarm trace alert <id>`: an alert's whole life from the events of both sites — definition
//! changes, the ticks around each firing, triggers, skips, every dispatch and its outcomes, dead
//! letters — with the latency of each hop and what the sites disagree on.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use proto_events::domain::AlertId;
use proto_events::events::{DispatchPurpose, TickRef, TriggerFired};
use proto_events::subjects::subject;
use proto_events::{Category, Event};

use super::collect::{self, Gathered};
use super::dispatch::{self, read_dispatch};
use super::model::{
    AlertTrace, DefinitionChange, Firing, FiringPrice, HopLatencies, TickPoint, TickRole,
};
use super::read::{SiteReader, Start, Stop, StoredEvent};
use super::{Error, Sites};

/// How far before the crossing tick the previous one is looked for, widened until one is found.
const TICK_LOOKBACKS: [SignedDuration; 4] = [
    SignedDuration::from_mins(1),
    SignedDuration::from_hours(1),
    SignedDuration::from_hours(24),
    SignedDuration::from_hours(7 * 24),
];

/// How long after its decision a tick may have been stored (clock skew, ingest delay) when it is found
/// by time instead of by the sequence its trigger names.
const TICK_STORE_MARGIN: SignedDuration = SignedDuration::from_mins(1);

/// Knobs of the alert trace.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// After a trigger, how long its dispatch requests are searched for. Notifiers skip triggers older
    /// than `stale_after` (60 s; 30 min for scheduled reports), so requests come within that.
    pub dispatch_window: SignedDuration,
}

impl Default for AlertOptions {
    fn default() -> Self {
        AlertOptions {
            dispatch_window: SignedDuration::from_mins(35),
        }
    }
}

pub async fn trace_alert(
    sites: &Sites,
    alert_id: &AlertId,
    options: &AlertOptions,
) -> Result<AlertTrace, Error> {
    let mut gathered = Gathered::default();
    for reader in &sites.readers {
        for stored in reader
            .subject(
                Category::Alerts.aggregate_stream(),
                subject::alert(None, alert_id.as_str()),
            )
            .await?
        {
            gathered.add(stored);
        }
        for stored in reader
            .subject(
                Category::Triggers.aggregate_stream(),
                subject::trigger(None, alert_id.as_str()),
            )
            .await?
        {
            gathered.add(stored);
        }
    }
    if gathered.is_empty() {
        return Err(Error::NotFound {
            what: format!("alert {alert_id}"),
            sites: sites.read_sites(),
        });
    }

    // Every copy of every trigger: both matchers compute it, each naming its own site's tick.
    let mut triggers: BTreeMap<String, Vec<TriggerFired>> = BTreeMap::new();
    for stored in gathered.copies() {
        if let Event::TriggerFired(trigger) = &stored.envelope.data {
            triggers
                .entry(trigger.trigger_id.to_string())
                .or_default()
                .push(trigger.clone());
        }
    }

    // Dispatch requests name the triggers they cover (coalescing can merge several), so they are
    // found by scanning the windows after the triggers, at each site.
    let trigger_ids: BTreeSet<String> = triggers.keys().cloned().collect();
    let mut dispatch_ids: BTreeSet<String> = BTreeSet::new();
    let windows = merged_windows(
        triggers
            .values()
            .flatten()
            .map(|trigger| trigger.evaluated_at),
        options.dispatch_window,
    );
    for reader in &sites.readers {
        for (from, until) in &windows {
            let found = reader
                .scan(
                    Category::Dispatch.aggregate_stream(),
                    &[
                        format!("{}.request.>", Category::Dispatch.token()),
                        format!("{}.skipped.>", Category::Dispatch.token()),
                    ],
                    Start::StoredSince(*from),
                    Stop::StoredAfter(*until),
                )
                .await?;
            for stored in found {
                match &stored.envelope.data {
                    Event::DispatchRequested(request) => {
                        if let DispatchPurpose::Alert {
                            trigger_ids: covered,
                            ..
                        } = &request.purpose
                            && covered
                                .iter()
                                .any(|trigger| trigger_ids.contains(trigger.as_str()))
                        {
                            dispatch_ids.insert(request.dispatch_id.to_string());
                        }
                    }
                    Event::DispatchSkipped(skip)
                        if trigger_ids.contains(skip.trigger_id.as_str()) =>
                    {
                        gathered.add(stored);
                    }
                    _ => {}
                }
            }
        }
    }
    // Each dispatch is read whole at every site, so a request or outcome missing at one shows.
    for reader in &sites.readers {
        for dispatch_id in &dispatch_ids {
            for stored in read_dispatch(reader, dispatch_id).await? {
                gathered.add(stored);
            }
        }
    }

    // The ticks around each firing.
    for (trigger_id, copies) in &triggers {
        let Some(trigger) = copies.first() else {
            continue;
        };
        for observed in &trigger.observed {
            let refs: Vec<TickRef> = copies
                .iter()
                .flat_map(|copy| copy.observed.iter())
                .filter(|candidate| candidate.market == observed.market)
                .filter_map(|candidate| candidate.tick.clone())
                .collect();
            let Some(tick_id) = refs.first().map(|tick| tick.tick_id.clone()) else {
                continue;
            };
            let tick_subject =
                subject::tick(None, trigger.exchange.as_str(), observed.market.as_str());
            for reader in &sites.readers {
                let (before, crossing) = ticks_around(
                    reader,
                    &refs,
                    tick_id.as_str(),
                    &tick_subject,
                    trigger.evaluated_at,
                )
                .await?;
                if let Some(crossing) = crossing {
                    gathered.add_tick(crossing, TickRole::Crossing, trigger_id);
                }
                if let Some(before) = before {
                    gathered.add_tick(before, TickRole::Before, trigger_id);
                }
            }
        }
    }

    // Dead letters naming the alert, its triggers or its dispatches.
    let first_event = gathered
        .events()
        .map(collect::event_time)
        .min()
        .unwrap_or_else(Timestamp::now);
    let mut tokens: BTreeSet<String> = trigger_ids.clone();
    tokens.insert(alert_id.to_string());
    tokens.extend(dispatch_ids.iter().cloned());
    dispatch::gather_parked(
        sites,
        &mut gathered,
        first_event - SignedDuration::from_mins(1),
        &tokens,
    )
    .await?;

    Ok(report(sites, alert_id, &gathered, &triggers, &dispatch_ids))
}

/// Windows `[t - 1 min, t + window]` around each instant, overlapping ones merged.
fn merged_windows(
    instants: impl Iterator<Item = Timestamp>,
    window: SignedDuration,
) -> Vec<(Timestamp, Timestamp)> {
    let mut instants: Vec<Timestamp> = instants.collect();
    instants.sort();
    let mut windows: Vec<(Timestamp, Timestamp)> = Vec::new();
    for instant in instants {
        let (from, until) = (instant - SignedDuration::from_mins(1), instant + window);
        match windows.last_mut() {
            Some((_, last_until)) if from <= *last_until => *last_until = until.max(*last_until),
            _ => windows.push((from, until)),
        }
    }
    windows
}

/// The crossing tick and the market's tick before it, as stored at `reader`'s site. The crossing tick
/// is fetched by the sequence its trigger names when the trigger was computed at this site, else
/// found by its id around the decision time.
async fn ticks_around(
    reader: &SiteReader,
    refs: &[TickRef],
    tick_id: &str,
    tick_subject: &str,
    evaluated_at: Timestamp,
) -> Result<(Option<StoredEvent>, Option<StoredEvent>), Error> {
    let mut crossing: Option<StoredEvent> = None;
    for tick in refs.iter().filter(|tick| tick.site == reader.site) {
        if let Some(stored) = reader
            .by_sequence(tick.stream.as_str(), tick.sequence)
            .await?
            && stored.envelope.id.as_str() == tick_id
        {
            crossing = Some(stored);
            break;
        }
    }
    let stream = Category::Ticks.aggregate_stream();
    for lookback in TICK_LOOKBACKS {
        let stop = match &crossing {
            Some(crossing) => Stop::AfterSequence(crossing.sequence.saturating_sub(1)),
            None => Stop::StoredAfter(evaluated_at + TICK_STORE_MARGIN),
        };
        let ticks = reader
            .scan(
                stream,
                &[tick_subject.to_owned()],
                Start::StoredSince(evaluated_at - lookback),
                stop,
            )
            .await?;
        let position = match &crossing {
            Some(_) => Some(ticks.len()),
            None => ticks
                .iter()
                .position(|stored| stored.envelope.id.as_str() == tick_id),
        };
        let Some(position) = position else {
            // Not stored at this site around its decision: nothing to show here.
            return Ok((None, None));
        };
        let before = position
            .checked_sub(1)
            .and_then(|index| ticks.get(index))
            .cloned();
        if crossing.is_none() {
            crossing = ticks.get(position).cloned();
        }
        if before.is_some() {
            return Ok((before, crossing));
        }
    }
    Ok((None, crossing))
}

fn tick_point(gathered: &Gathered, message_id: &str) -> Option<TickPoint> {
    let gathering = gathered.entries.get(message_id)?;
    let Event::TickObserved(tick) = &gathering.first().envelope.data else {
        return None;
    };
    Some(TickPoint {
        message_id: message_id.to_owned(),
        price: tick.trade_price.to_string(),
        trade_time: tick.trade_timestamp,
        locations: gathering
            .copies
            .iter()
            .map(|(site, copy)| {
                (
                    *site,
                    super::model::Location {
                        stream: copy.stream.clone(),
                        sequence: copy.sequence,
                        stored_at: copy.stored_at,
                    },
                )
            })
            .collect(),
    })
}

fn report(
    sites: &Sites,
    alert_id: &AlertId,
    gathered: &Gathered,
    triggers: &BTreeMap<String, Vec<TriggerFired>>,
    dispatch_ids: &BTreeSet<String>,
) -> AlertTrace {
    let read_sites = sites.read_sites();
    let mut definition = Vec::new();
    let mut home_site = None;
    let mut user_id = None;
    let mut kind = None;
    for stored in gathered.events() {
        let envelope = &stored.envelope;
        let (version, user) = match &envelope.data {
            Event::AlertCreated(created) => {
                home_site = Some(created.home_site);
                user_id = Some(created.user_id.to_string());
                kind = Some(created.spec.condition.kind().as_str().to_owned());
                (created.version(), created.user_id.to_string())
            }
            Event::AlertUpdated(updated) => (updated.version, updated.user_id.to_string()),
            Event::AlertPaused(paused) => (paused.version, paused.user_id.to_string()),
            Event::AlertResumed(resumed) => (resumed.version, resumed.user_id.to_string()),
            Event::AlertDeleted(deleted) => (deleted.version, deleted.user_id.to_string()),
            _ => continue,
        };
        definition.push(DefinitionChange {
            event_type: envelope.data.type_name().to_owned(),
            version,
            at: envelope.time,
            user_id: user,
            site: envelope.origin_site,
            correlation_id: envelope.correlation_id.to_string(),
            summary: collect::summary(stored, None),
        });
    }
    definition.sort_by_key(|change| (change.version, change.at));

    let facts: BTreeMap<&String, dispatch::DispatchFacts> = dispatch_ids
        .iter()
        .map(|dispatch_id| (dispatch_id, dispatch::facts(gathered, dispatch_id)))
        .collect();
    let mut firings = Vec::new();
    let mut duplicates = Vec::new();
    for (trigger_id, copies) in triggers {
        let Some(trigger) = copies.first() else {
            continue;
        };
        let evaluated_at = copies
            .iter()
            .map(|copy| copy.evaluated_at)
            .min()
            .unwrap_or(trigger.evaluated_at);
        let prices: Vec<FiringPrice> = trigger
            .observed
            .iter()
            .map(|observed| {
                let crossing = observed
                    .tick
                    .as_ref()
                    .and_then(|tick| tick_point(gathered, tick.tick_id.as_str()));
                // Each site's aggregate may order the market's ticks differently: the latest wins.
                let before = gathered
                    .entries
                    .iter()
                    .filter(|(_, gathering)| {
                        gathering.tick_role == Some(TickRole::Before)
                            && gathering.tick_trigger.as_deref() == Some(trigger_id.as_str())
                            && matches!(&gathering.first().envelope.data,
                                Event::TickObserved(tick) if tick.market == observed.market)
                    })
                    .filter_map(|(message_id, _)| tick_point(gathered, message_id))
                    .max_by_key(|point| point.trade_time);
                FiringPrice {
                    market: observed.market.to_string(),
                    observed_price: observed.price.to_string(),
                    before,
                    crossing,
                }
            })
            .collect();
        let covering: Vec<&String> = facts
            .iter()
            .filter(|(_, facts)| {
                facts
                    .request
                    .as_ref()
                    .is_some_and(|request| request.trigger_ids.contains(trigger_id))
            })
            .map(|(dispatch_id, _)| *dispatch_id)
            .collect();
        let mut sends: Vec<_> = covering
            .iter()
            .flat_map(|dispatch_id| facts[*dispatch_id].sends.clone())
            .collect();
        sends.sort_by_key(|send| send.sent_at);
        let skips: Vec<String> = gathered
            .events()
            .filter_map(|stored| match &stored.envelope.data {
                Event::DispatchSkipped(skip) if skip.trigger_id.as_str() == trigger_id => {
                    Some(collect::skip_reason(&skip.reason))
                }
                _ => None,
            })
            .collect();
        let first_request = covering
            .iter()
            .filter_map(|dispatch_id| facts[*dispatch_id].first_requested_at)
            .min();
        let first_delivered = covering
            .iter()
            .filter_map(|dispatch_id| facts[*dispatch_id].first_delivered_at)
            .min();
        let first_sent = sends.first().map(|send| send.sent_at);
        let trade_time = prices
            .iter()
            .find_map(|price| price.crossing.as_ref().map(|tick| tick.trade_time));
        let between = |from: Option<Timestamp>, to: Option<Timestamp>| {
            from.zip(to)
                .map(|(from, to)| collect::millis_between(from, to))
        };
        let latency = HopLatencies {
            tick_to_trigger_ms: between(trade_time, Some(evaluated_at)),
            trigger_to_request_ms: between(Some(evaluated_at), first_request),
            request_to_sent_ms: between(first_request, first_sent),
            sent_to_delivered_ms: between(first_sent, first_delivered),
            tick_to_sent_ms: between(trade_time, first_sent),
        };
        let duplicate = dispatch::duplicate(Some(trigger_id.clone()), &sends);
        firings.push(Firing {
            trigger_id: trigger_id.clone(),
            alert_version: trigger.alert_version,
            evaluated_at,
            prices,
            dispatch_ids: covering.iter().map(|id| (*id).clone()).collect(),
            skips,
            delivered: first_delivered.is_some(),
            duplicate: duplicate.is_some(),
            sends,
            latency,
        });
        duplicates.extend(duplicate);
    }
    firings.sort_by_key(|firing| firing.evaluated_at);

    AlertTrace {
        alert_id: alert_id.to_string(),
        generated_at: Timestamp::now(),
        sites: sites.reads.clone(),
        home_site,
        user_id,
        kind,
        definition,
        firings,
        dead_letters: dispatch::parked_messages(gathered),
        duplicates,
        disagreements: gathered.disagreements(&read_sites),
        timeline: gathered.timeline(&read_sites),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_around_close_triggers_merge() {
        let at = |second: i64| Timestamp::from_second(1_800_000_000 + second).unwrap();
        let windows = merged_windows(
            [at(0), at(600), at(10_000)].into_iter(),
            SignedDuration::from_mins(35),
        );
        assert_eq!(
            windows,
            [
                (at(-60), at(600 + 35 * 60)),
                (at(10_000 - 60), at(10_000 + 35 * 60)),
            ]
        );
    }
}
