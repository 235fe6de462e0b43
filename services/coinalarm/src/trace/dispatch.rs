//! `coinalarm trace dispatch <id>`: one SMS's whole life at both sites — its request, every claim,
//! provider answer and failure, the delivery callbacks, dead letters — and what each dispatch means
//! in the alert and phone traces (status, sends, latencies).

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use proto_events::events::DispatchPurpose;
use proto_events::ids::DispatchId;
use proto_events::subjects::subject;
use proto_events::{Category, Event};

use super::collect::{self, Gathered};
use super::model::{DispatchTrace, Duplicate, HopLatencies, RequestSummary, Send};
use super::read::{SiteReader, Start, Stop, StoredEvent};
use super::{Error, Sites};

/// The request and every outcome of one dispatch at one site.
pub async fn read_dispatch(
    reader: &SiteReader,
    dispatch_id: &str,
) -> Result<Vec<StoredEvent>, Error> {
    reader
        .scan(
            Category::Dispatch.aggregate_stream(),
            &[
                format!("{}.request.*.{dispatch_id}", Category::Dispatch.token()),
                subject::dispatch_outcome(None, dispatch_id),
            ],
            Start::All,
            Stop::End,
        )
        .await
}

/// What the events of one dispatch say about it.
#[derive(Debug, Clone, Default)]
pub struct DispatchFacts {
    pub request: Option<RequestSummary>,
    pub status: String,
    pub attempts: u32,
    pub sends: Vec<Send>,
    pub failures: Vec<String>,
    pub first_requested_at: Option<Timestamp>,
    pub first_delivered_at: Option<Timestamp>,
    pub text: Option<String>,
}

/// Status, attempts, sends and failures of `dispatch_id` among the gathered events (all sites).
pub fn facts(gathered: &Gathered, dispatch_id: &str) -> DispatchFacts {
    let copies: Vec<&StoredEvent> = gathered
        .copies()
        .filter(|stored| dispatch_of(&stored.envelope.data) == Some(dispatch_id))
        .collect();
    let mut facts = DispatchFacts {
        sends: collect::sends(copies.iter().copied()),
        ..DispatchFacts::default()
    };
    // Statuses from the least to the most advanced, as the read model ranks them.
    let mut rank = 0u8;
    let mut advance = |candidate: u8, facts: &mut DispatchFacts, name: &str| {
        if candidate > rank {
            rank = candidate;
            facts.status = name.to_owned();
        }
    };
    let mut failures: Vec<(Timestamp, String)> = Vec::new();
    for stored in gathered
        .events()
        .filter(|stored| dispatch_of(&stored.envelope.data) == Some(dispatch_id))
    {
        match &stored.envelope.data {
            Event::DispatchRequested(request) => {
                advance(1, &mut facts, "requested");
                if let proto_events::events::MessageBody::Plain { text } = &request.body {
                    facts.text = Some(text.clone());
                }
                facts.request = Some(RequestSummary {
                    owning_site: request.owning_site,
                    priority: serde_json::to_value(request.priority)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    destination_masked: request.destination.masked(),
                    purpose: match &request.purpose {
                        DispatchPurpose::Alert { .. } => "alert".to_owned(),
                        DispatchPurpose::SignIn { .. } => "sign_in".to_owned(),
                    },
                    user_id: match &request.purpose {
                        DispatchPurpose::Alert { user_id, .. } => Some(user_id.to_string()),
                        DispatchPurpose::SignIn { .. } => None,
                    },
                    trigger_ids: match &request.purpose {
                        DispatchPurpose::Alert { trigger_ids, .. } => {
                            trigger_ids.iter().map(ToString::to_string).collect()
                        }
                        DispatchPurpose::SignIn { .. } => Vec::new(),
                    },
                    created_at: request.created_at,
                    expires_at: request.expires_at,
                });
            }
            Event::DispatchClaimed(claimed) => {
                advance(2, &mut facts, "claimed");
                facts.attempts = facts.attempts.max(claimed.attempt);
            }
            Event::DispatchFailed(failed) => {
                advance(3, &mut facts, "failed");
                facts.attempts = facts.attempts.max(failed.attempt);
                failures.push((
                    failed.failed_at,
                    format!(
                        "{} attempt {} via {}: {}{}",
                        failed.site,
                        failed.attempt,
                        failed.provider,
                        failed.error_code,
                        failed
                            .error_message
                            .as_ref()
                            .map(|message| format!(" ({message})"))
                            .unwrap_or_default()
                    ),
                ));
            }
            Event::DispatchSent(sent) => {
                advance(4, &mut facts, "sent");
                facts.attempts = facts.attempts.max(sent.attempt);
            }
            Event::DispatchDeadLettered(_) => advance(5, &mut facts, "dead_lettered"),
            Event::DispatchUndelivered(_) => advance(6, &mut facts, "undelivered"),
            Event::DispatchDelivered(_) => advance(7, &mut facts, "delivered"),
            _ => {}
        }
    }
    if facts.request.is_none() && rank > 0 {
        facts.status = format!("{} (its request is missing)", facts.status);
    }
    if rank == 0 {
        facts.status = "unknown".to_owned();
    }
    failures.sort();
    facts.failures = failures.into_iter().map(|(_, text)| text).collect();
    // Every site's copy counts for the first request and delivery: a takeover words it twice.
    facts.first_requested_at = copies
        .iter()
        .filter_map(|stored| match &stored.envelope.data {
            Event::DispatchRequested(request) => Some(request.created_at),
            _ => None,
        })
        .min();
    facts.first_delivered_at = copies
        .iter()
        .filter_map(|stored| match &stored.envelope.data {
            Event::DispatchDelivered(delivered) => Some(delivered.reported_at),
            _ => None,
        })
        .min();
    facts
}

/// The dispatch an event is about.
pub fn dispatch_of(event: &Event) -> Option<&str> {
    match event {
        Event::DispatchRequested(request) => Some(request.dispatch_id.as_str()),
        Event::DispatchClaimed(claimed) => Some(claimed.dispatch_id.as_str()),
        Event::DispatchSent(sent) => Some(sent.dispatch_id.as_str()),
        Event::DispatchFailed(failed) => Some(failed.dispatch_id.as_str()),
        Event::DispatchDelivered(delivered) => Some(delivered.dispatch_id.as_str()),
        Event::DispatchUndelivered(undelivered) => Some(undelivered.dispatch_id.as_str()),
        Event::DispatchDeadLettered(dead) => Some(dead.dispatch_id.as_str()),
        _ => None,
    }
}

/// A duplicate when more than one provider acceptance exists.
pub fn duplicate(trigger_id: Option<String>, sends: &[Send]) -> Option<Duplicate> {
    if sends.len() < 2 {
        return None;
    }
    let sent_by: BTreeSet<_> = sends.iter().map(|send| send.site).collect();
    Some(Duplicate {
        trigger_id,
        sends: sends.to_vec(),
        sent_by: sent_by.into_iter().collect(),
    })
}

/// Parked messages in `DEADLETTER` since `since` whose subject names any of `tokens`.
pub async fn gather_parked(
    sites: &Sites,
    gathered: &mut Gathered,
    since: Timestamp,
    tokens: &BTreeSet<String>,
) -> Result<(), Error> {
    for reader in &sites.readers {
        let parked = reader
            .scan(
                Category::Deadletter.aggregate_stream(),
                &[Category::Deadletter.aggregate_filter()],
                Start::StoredSince(since),
                Stop::End,
            )
            .await?;
        for stored in parked {
            let Event::MessageParked(message) = &stored.envelope.data else {
                continue;
            };
            if message
                .subject
                .split('.')
                .any(|token| tokens.contains(token))
            {
                gathered.add(stored);
            }
        }
    }
    Ok(())
}

pub fn parked_messages(gathered: &Gathered) -> Vec<super::model::ParkedMessage> {
    gathered
        .entries
        .iter()
        .filter_map(
            |(message_id, gathering)| match &gathering.first().envelope.data {
                Event::MessageParked(parked) => Some(super::model::ParkedMessage {
                    message_id: message_id.clone(),
                    stream: parked.stream.to_string(),
                    consumer: parked.consumer.to_string(),
                    stream_sequence: parked.stream_sequence,
                    subject: parked.subject.clone(),
                    reason_code: parked.reason_code.clone(),
                    reason: parked.reason.clone(),
                    parked_at: parked.parked_at,
                }),
                _ => None,
            },
        )
        .collect()
}

pub async fn trace_dispatch(
    sites: &Sites,
    dispatch_id: &DispatchId,
) -> Result<DispatchTrace, Error> {
    let mut gathered = Gathered::default();
    for reader in &sites.readers {
        for stored in read_dispatch(reader, dispatch_id.as_str()).await? {
            gathered.add(stored);
        }
    }
    if gathered.is_empty() {
        return Err(Error::NotFound {
            what: format!("dispatch {dispatch_id}"),
            sites: sites.read_sites(),
        });
    }
    let facts = facts(&gathered, dispatch_id.as_str());
    // The triggers it covers, so the trace starts at the firing.
    let mut evaluated_at: Option<Timestamp> = None;
    if let Some(request) = &facts.request {
        let trigger_ids: BTreeSet<&String> = request.trigger_ids.iter().collect();
        let alert_ids: BTreeSet<String> = request
            .trigger_ids
            .iter()
            .filter_map(|trigger| proto_events::ids::TriggerId::parse(trigger).ok())
            .map(|trigger| trigger.alert_id().to_string())
            .collect();
        for reader in &sites.readers {
            for alert_id in &alert_ids {
                for stored in reader
                    .subject(
                        Category::Triggers.aggregate_stream(),
                        subject::trigger(None, alert_id),
                    )
                    .await?
                {
                    if let Event::TriggerFired(trigger) = &stored.envelope.data
                        && trigger_ids.contains(&trigger.trigger_id.to_string())
                    {
                        evaluated_at = Some(
                            evaluated_at
                                .map_or(trigger.evaluated_at, |at| at.min(trigger.evaluated_at)),
                        );
                        gathered.add(stored);
                    }
                }
            }
        }
    }
    let since = facts
        .first_requested_at
        .or_else(|| gathered.events().map(collect::event_time).min())
        .unwrap_or_else(Timestamp::now)
        - SignedDuration::from_mins(1);
    gather_parked(
        sites,
        &mut gathered,
        since,
        &[dispatch_id.to_string()].into(),
    )
    .await?;
    let first_sent = facts.sends.first().map(|send| send.sent_at);
    let latency = HopLatencies {
        tick_to_trigger_ms: None,
        trigger_to_request_ms: evaluated_at
            .zip(facts.first_requested_at)
            .map(|(from, to)| collect::millis_between(from, to)),
        request_to_sent_ms: facts
            .first_requested_at
            .zip(first_sent)
            .map(|(from, to)| collect::millis_between(from, to)),
        sent_to_delivered_ms: first_sent
            .zip(facts.first_delivered_at)
            .map(|(from, to)| collect::millis_between(from, to)),
        tick_to_sent_ms: None,
    };
    let read_sites = sites.read_sites();
    Ok(DispatchTrace {
        dispatch_id: dispatch_id.to_string(),
        generated_at: Timestamp::now(),
        sites: sites.reads.clone(),
        request: facts.request.clone(),
        status: facts.status.clone(),
        attempts: facts.attempts,
        sends: facts.sends.clone(),
        failures: facts.failures.clone(),
        duplicate: duplicate(None, &facts.sends),
        latency,
        dead_letters: parked_messages(&gathered),
        disagreements: gathered.disagreements(&read_sites),
        timeline: gathered.timeline(&read_sites),
    })
}
