//! Events gathered from both sites, merged by message id: the timeline, where each site stores each
//! event, what the sites disagree on, and one-line summaries of every event type.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use proto_events::events::{
    AlertCondition, DeadLetterReason, Direction, DispatchPurpose, RepeatPolicy, SkipReason,
};
use proto_events::{Event, Site};

use super::model::{Disagreement, DisagreementKind, Location, Send, TickRole, TimelineEntry};
use super::read::StoredEvent;

/// One event as found at one or more sites.
#[derive(Debug, Clone)]
pub struct Gathering {
    pub copies: BTreeMap<Site, StoredEvent>,
    pub tick_role: Option<TickRole>,
    /// The firing a tick was fetched for.
    pub tick_trigger: Option<String>,
}

impl Gathering {
    /// The copy shown: the first site's, in the order sites are listed.
    pub fn first(&self) -> &StoredEvent {
        self.copies
            .values()
            .next()
            .expect("a gathering holds at least one copy")
    }
}

/// Everything read so far, by message id.
#[derive(Debug, Default)]
pub struct Gathered {
    pub entries: BTreeMap<String, Gathering>,
}

impl Gathered {
    pub fn add(&mut self, event: StoredEvent) {
        self.add_with_role(event, None, None);
    }

    pub fn add_tick(&mut self, event: StoredEvent, role: TickRole, trigger_id: &str) {
        self.add_with_role(event, Some(role), Some(trigger_id.to_owned()));
    }

    fn add_with_role(
        &mut self,
        event: StoredEvent,
        tick_role: Option<TickRole>,
        tick_trigger: Option<String>,
    ) {
        let gathering = self
            .entries
            .entry(event.envelope.id.as_str().to_owned())
            .or_insert_with(|| Gathering {
                copies: BTreeMap::new(),
                tick_role,
                tick_trigger,
            });
        // The same message read twice at one site (two overlapping scans) is one copy.
        gathering.copies.entry(event.site).or_insert(event);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every copy of every event.
    pub fn copies(&self) -> impl Iterator<Item = &StoredEvent> {
        self.entries
            .values()
            .flat_map(|gathering| gathering.copies.values())
    }

    /// The shown copy of every event.
    pub fn events(&self) -> impl Iterator<Item = &StoredEvent> {
        self.entries.values().map(Gathering::first)
    }

    /// Every event in causal order, with where each read site stores it.
    pub fn timeline(&self, read_sites: &[Site]) -> Vec<TimelineEntry> {
        let mut entries: Vec<(u8, TimelineEntry)> = self
            .entries
            .iter()
            .map(|(message_id, gathering)| {
                let shown = gathering.first();
                let (trigger_id, dispatch_id) = ids_of(&shown.envelope.data);
                let entry = TimelineEntry {
                    at: event_time(shown),
                    event_type: shown.envelope.data.type_name().to_owned(),
                    message_id: message_id.clone(),
                    origin_site: shown.envelope.origin_site,
                    tick_role: gathering.tick_role,
                    trigger_id: trigger_id.or_else(|| gathering.tick_trigger.clone()),
                    dispatch_id,
                    summary: summary(shown, gathering.tick_role),
                    locations: gathering
                        .copies
                        .iter()
                        .map(|(site, copy)| {
                            (
                                *site,
                                Location {
                                    stream: copy.stream.clone(),
                                    sequence: copy.sequence,
                                    stored_at: copy.stored_at,
                                },
                            )
                        })
                        .collect(),
                    missing_at: read_sites
                        .iter()
                        .filter(|site| !gathering.copies.contains_key(site))
                        .copied()
                        .collect(),
                    event: serde_json::to_value(&shown.envelope).unwrap_or_default(),
                };
                (
                    causal_rank(&shown.envelope.data, gathering.tick_role),
                    entry,
                )
            })
            .collect();
        entries.sort_by(|(left_rank, left), (right_rank, right)| {
            (left.at, left_rank, &left.message_id).cmp(&(right.at, right_rank, &right.message_id))
        });
        entries.into_iter().map(|(_, entry)| entry).collect()
    }

    /// Events held by only some of the read sites, and events whose copies differ where it matters.
    pub fn disagreements(&self, read_sites: &[Site]) -> Vec<Disagreement> {
        let mut found = Vec::new();
        for (message_id, gathering) in &self.entries {
            let shown = gathering.first();
            let present_at: Vec<Site> = gathering.copies.keys().copied().collect();
            let missing_at: Vec<Site> = read_sites
                .iter()
                .filter(|site| !gathering.copies.contains_key(site))
                .copied()
                .collect();
            let event_type = shown.envelope.data.type_name().to_owned();
            if !missing_at.is_empty() {
                let detail = format!(
                    "stored at {} only: not replicated yet, or the link between the sites is cut",
                    join_sites(&present_at)
                );
                found.push(Disagreement {
                    kind: DisagreementKind::MissingAtSite,
                    message_id: message_id.clone(),
                    event_type: event_type.clone(),
                    present_at: present_at.clone(),
                    missing_at,
                    detail,
                });
            }
            let distinct: BTreeSet<String> = gathering
                .copies
                .values()
                .map(|copy| significant_content(&copy.envelope.data).to_string())
                .collect();
            if distinct.len() > 1 {
                found.push(Disagreement {
                    kind: DisagreementKind::ContentDiffers,
                    message_id: message_id.clone(),
                    event_type,
                    present_at,
                    missing_at: Vec::new(),
                    detail: content_difference(gathering),
                });
            }
        }
        found
    }
}

/// What must be equal in two copies of one message id. Triggers are computed by both matchers and
/// name each site's own tick sequence and decision time: only the alert version and prices count.
fn significant_content(event: &Event) -> serde_json::Value {
    match event {
        Event::TriggerFired(trigger) => serde_json::json!({
            "alert_version": trigger.alert_version,
            "observed": trigger.observed.iter()
                .map(|observed| (observed.market.as_str(), observed.price.to_string()))
                .collect::<Vec<_>>(),
        }),
        Event::DispatchRequested(request) => serde_json::json!({
            "owning_site": request.owning_site,
            "destination": request.destination.as_str(),
            "purpose": serde_json::to_value(&request.purpose).unwrap_or_default(),
        }),
        // A skip is decided by each notifier at its own moment; the reason is what matters.
        Event::DispatchSkipped(skip) => serde_json::to_value(&skip.reason).unwrap_or_default(),
        other => serde_json::to_value(other).unwrap_or_default(),
    }
}

fn content_difference(gathering: &Gathering) -> String {
    let per_site: Vec<String> = gathering
        .copies
        .iter()
        .map(|(site, copy)| match &copy.envelope.data {
            Event::DispatchRequested(request) => {
                format!("owning site {} at {site}", request.owning_site)
            }
            Event::TriggerFired(trigger) => format!(
                "alert v{} at {}: {site}",
                trigger.alert_version,
                prices(&trigger.observed)
            ),
            other => format!("{} at {site}", significant_content(other)),
        })
        .collect();
    let mut detail = format!("each site kept a different copy: {}", per_site.join("; "));
    if gathering
        .copies
        .values()
        .any(|copy| matches!(copy.envelope.data, Event::DispatchRequested(_)))
    {
        detail.push_str(" (worded at both sites: a takeover during a partition or an outage)");
    }
    detail
}

pub fn join_sites(sites: &[Site]) -> String {
    sites
        .iter()
        .map(|site| site.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The trigger and dispatch an event belongs to.
fn ids_of(event: &Event) -> (Option<String>, Option<String>) {
    match event {
        Event::TriggerFired(trigger) => (Some(trigger.trigger_id.to_string()), None),
        Event::DispatchSkipped(skip) => (Some(skip.trigger_id.to_string()), None),
        Event::DispatchRequested(request) => {
            let trigger = match &request.purpose {
                DispatchPurpose::Alert { trigger_ids, .. } if trigger_ids.len() == 1 => {
                    Some(trigger_ids[0].to_string())
                }
                _ => None,
            };
            (trigger, Some(request.dispatch_id.to_string()))
        }
        Event::DispatchClaimed(claimed) => (None, Some(claimed.dispatch_id.to_string())),
        Event::DispatchSent(sent) => (None, Some(sent.dispatch_id.to_string())),
        Event::DispatchFailed(failed) => (None, Some(failed.dispatch_id.to_string())),
        Event::DispatchDelivered(delivered) => (None, Some(delivered.dispatch_id.to_string())),
        Event::DispatchUndelivered(undelivered) => {
            (None, Some(undelivered.dispatch_id.to_string()))
        }
        Event::DispatchDeadLettered(dead) => (None, Some(dead.dispatch_id.to_string())),
        _ => (None, None),
    }
}

/// When the fact happened, by its producer: trade time for ticks, decision times for the rest.
pub fn event_time(stored: &StoredEvent) -> Timestamp {
    match &stored.envelope.data {
        Event::TickObserved(tick) => tick.trade_timestamp,
        Event::TriggerFired(trigger) => trigger.evaluated_at,
        Event::DispatchRequested(request) => request.created_at,
        Event::DispatchClaimed(claimed) => claimed.claimed_at,
        Event::DispatchSent(sent) => sent.sent_at,
        Event::DispatchFailed(failed) => failed.failed_at,
        Event::DispatchDelivered(delivered) => delivered.reported_at,
        Event::DispatchUndelivered(undelivered) => undelivered.reported_at,
        Event::DispatchDeadLettered(dead) => dead.dead_lettered_at,
        Event::MessageParked(parked) => parked.parked_at,
        _ => stored.envelope.time,
    }
}

/// Breaks ties of equal times in the order causes precede effects.
fn causal_rank(event: &Event, tick_role: Option<TickRole>) -> u8 {
    match event {
        Event::AlertCreated(_)
        | Event::AlertUpdated(_)
        | Event::AlertPaused(_)
        | Event::AlertResumed(_)
        | Event::AlertDeleted(_) => 0,
        Event::TickObserved(_) if tick_role == Some(TickRole::Before) => 1,
        Event::TickObserved(_) => 2,
        Event::TriggerFired(_) => 3,
        Event::DispatchSkipped(_) | Event::DispatchRequested(_) => 4,
        Event::DispatchClaimed(_) => 5,
        Event::DispatchFailed(_) => 6,
        Event::DispatchSent(_) => 7,
        Event::DispatchDeadLettered(_) => 8,
        Event::DispatchDelivered(_) | Event::DispatchUndelivered(_) => 9,
        _ => 10,
    }
}

/// How a unit enum is written on the wire (`below`, `5m`).
fn wire_name<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|name| name.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn direction(direction: Direction) -> &'static str {
    match direction {
        Direction::Up => "up",
        Direction::Down => "down",
        Direction::Either => "either way",
    }
}

pub fn condition_summary(condition: &AlertCondition) -> String {
    match condition {
        AlertCondition::TargetPrice(target) => format!(
            "{} {} to {} (price {} it when written)",
            target.market,
            direction(target.direction),
            target.target,
            wire_name(target.side_at_creation)
        ),
        AlertCondition::ChangeRate(change) => format!(
            "{} {} {}% over {}",
            change.market,
            direction(change.direction),
            change.threshold,
            wire_name(change.basis)
        ),
        AlertCondition::Scheduled(schedule) => format!(
            "report of {} at {} {}",
            schedule
                .markets()
                .iter()
                .map(|market| market.as_str())
                .collect::<Vec<_>>()
                .join(","),
            schedule.time_of_day(),
            schedule.time_zone()
        ),
    }
}

fn repeat_summary(repeat: &RepeatPolicy) -> String {
    match repeat {
        RepeatPolicy::Once => "once".to_owned(),
        RepeatPolicy::Repeat { cooldown_seconds } => {
            format!("repeating, cooldown {cooldown_seconds}s")
        }
    }
}

pub fn skip_reason(reason: &SkipReason) -> String {
    match reason {
        SkipReason::QuietHours => "quiet_hours".to_owned(),
        SkipReason::UserCap { cap } => format!("user_cap (daily cap {cap})"),
        SkipReason::Stale { age_seconds } => format!("stale ({age_seconds}s old)"),
        SkipReason::Coalesced { into } => format!("coalesced into {into}"),
        SkipReason::AlertDeleted => "alert_deleted".to_owned(),
        SkipReason::AlertPaused => "alert_paused".to_owned(),
        SkipReason::UnknownUser => "unknown_user".to_owned(),
    }
}

pub fn dead_letter_reason(reason: &DeadLetterReason) -> String {
    match reason {
        DeadLetterReason::AttemptsExhausted { attempts } => {
            format!("attempts_exhausted after {attempts}")
        }
        DeadLetterReason::Expired => "expired".to_owned(),
        DeadLetterReason::PermanentError {
            provider,
            error_code,
        } => format!("permanent_error {error_code} from {provider}"),
        DeadLetterReason::InvalidDestination => "invalid_destination".to_owned(),
    }
}

fn prices(observed: &[proto_events::events::ObservedPrice]) -> String {
    observed
        .iter()
        .map(|observed| match &observed.change {
            Some(change) => format!("{} {} ({change}%)", observed.market, observed.price),
            None => format!("{} {}", observed.market, observed.price),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line about one event, for the human timeline.
pub fn summary(stored: &StoredEvent, tick_role: Option<TickRole>) -> String {
    let site = stored.envelope.origin_site;
    match &stored.envelope.data {
        Event::AlertCreated(created) => format!(
            "v1 created by user {} at {site} (home {}): {}, {}",
            created.user_id,
            created.home_site,
            condition_summary(&created.spec.condition),
            repeat_summary(&created.spec.repeat)
        ),
        Event::AlertUpdated(updated) => format!(
            "v{} edited by user {} at {site}: {}, {}",
            updated.version,
            updated.user_id,
            condition_summary(&updated.spec.condition),
            repeat_summary(&updated.spec.repeat)
        ),
        Event::AlertPaused(paused) => format!(
            "v{} paused by user {} at {site}",
            paused.version, paused.user_id
        ),
        Event::AlertResumed(resumed) => format!(
            "v{} resumed by user {} at {site}",
            resumed.version, resumed.user_id
        ),
        Event::AlertDeleted(deleted) => format!(
            "v{} deleted by user {} at {site}",
            deleted.version, deleted.user_id
        ),
        Event::TickObserved(tick) => {
            let role = match tick_role {
                Some(TickRole::Before) => "last price before the crossing",
                Some(TickRole::Crossing) => "crossing price",
                None => "tick",
            };
            format!(
                "{} {} (trade {}): {role}",
                tick.market, tick.trade_price, tick.sequential_id
            )
        }
        Event::TriggerFired(trigger) => format!(
            "fired on alert v{} by {site}'s matcher: {}",
            trigger.alert_version,
            prices(&trigger.observed)
        ),
        Event::DispatchSkipped(skip) => format!(
            "not sent ({}), decided at {site}",
            skip_reason(&skip.reason)
        ),
        Event::DispatchRequested(request) => {
            let covers = match &request.purpose {
                DispatchPurpose::Alert { trigger_ids, .. } => {
                    format!("{} trigger(s)", trigger_ids.len())
                }
                DispatchPurpose::SignIn { .. } => "a sign-in code".to_owned(),
            };
            format!(
                "requested at {site}, owner {}, to {}, covers {covers}",
                request.owning_site,
                request.destination.masked()
            )
        }
        Event::DispatchClaimed(claimed) => format!(
            "attempt {} claimed by {}, lease until {}",
            claimed.attempt,
            claimed.site,
            claimed.lease_expires_at.strftime("%H:%M:%S%.3f")
        ),
        Event::DispatchSent(sent) => format!(
            "attempt {} SENT by {} via {} (sid {})",
            sent.attempt, sent.site, sent.provider, sent.provider_message_id
        ),
        Event::DispatchFailed(failed) => {
            let mut text = format!(
                "attempt {} failed at {} via {}: error {}",
                failed.attempt, failed.site, failed.provider, failed.error_code
            );
            if let Some(message) = &failed.error_message {
                text.push_str(&format!(" ({message})"));
            }
            text.push_str(if failed.retryable {
                ", retryable"
            } else {
                ", permanent"
            });
            if let Some(retry_at) = failed.retry_at {
                text.push_str(&format!(", retry at {}", retry_at.strftime("%H:%M:%S%.3f")));
            }
            text
        }
        Event::DispatchDelivered(delivered) => format!(
            "delivered ({}) for attempt {}, callback received at {}",
            delivered.provider_status, delivered.attempt, delivered.site
        ),
        Event::DispatchUndelivered(undelivered) => format!(
            "UNDELIVERED ({}{}) for attempt {}, callback received at {}",
            undelivered.provider_status,
            undelivered
                .error_code
                .as_ref()
                .map(|code| format!(", error {code}"))
                .unwrap_or_default(),
            undelivered.attempt,
            undelivered.site
        ),
        Event::DispatchDeadLettered(dead) => format!(
            "DEAD-LETTERED by {} after attempt {}: {}",
            dead.site,
            dead.attempt,
            dead_letter_reason(&dead.reason)
        ),
        Event::MessageParked(parked) => format!(
            "PARKED by consumer {} of {} (seq {}, subject {}): {}: {}",
            parked.consumer,
            parked.stream,
            parked.stream_sequence,
            parked.subject,
            parked.reason_code,
            parked.reason
        ),
        other => other.type_name().to_owned(),
    }
}

/// Provider acceptances among `events`, one per (dispatch, site, attempt), earliest first.
pub fn sends<'a>(events: impl Iterator<Item = &'a StoredEvent>) -> Vec<Send> {
    let mut sends: BTreeMap<(String, Site, u32), Send> = BTreeMap::new();
    for stored in events {
        if let Event::DispatchSent(sent) = &stored.envelope.data {
            sends
                .entry((sent.dispatch_id.to_string(), sent.site, sent.attempt))
                .or_insert_with(|| Send {
                    dispatch_id: sent.dispatch_id.to_string(),
                    site: sent.site,
                    attempt: sent.attempt,
                    provider: sent.provider.to_string(),
                    provider_message_id: sent.provider_message_id.clone(),
                    sent_at: sent.sent_at,
                });
        }
    }
    let mut sends: Vec<Send> = sends.into_values().collect();
    sends.sort_by_key(|send| send.sent_at);
    sends
}

/// Signed milliseconds from `from` to `to`.
pub fn millis_between(from: Timestamp, to: Timestamp) -> i64 {
    i64::try_from(to.duration_since(from).as_millis()).unwrap_or(i64::MAX)
}
