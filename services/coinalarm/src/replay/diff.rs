//! Expected against actual: the sandbox's firings and the real triggers of the window matched by a key
//! that does not depend on where the replay started, and the SMS each real trigger became.

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};
use proto_events::domain::AlertId;
use proto_events::events::{AlertKind, DispatchPurpose, TriggerFired};
use proto_events::{Event, Firing, Site};
use serde::Serialize;

use super::sandbox::{ExpectedFiring, TickTimes};

/// What identifies one firing whatever the generation counter says: the alert, its version and the tick
/// that crossed (crossing alerts), or the alert and the occurrence (scheduled alerts).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FiringKey {
    Crossing {
        alert_id: String,
        version: u64,
        tick_id: String,
    },
    Scheduled {
        alert_id: String,
        occurrence: Timestamp,
    },
    /// A crossing trigger that names no tick (never produced by the matcher): only its id identifies it.
    Trigger { trigger_id: String },
}

impl FiringKey {
    pub fn of(trigger: &TriggerFired) -> FiringKey {
        match trigger.firing {
            Firing::Scheduled { occurrence } => FiringKey::Scheduled {
                alert_id: trigger.alert_id.as_str().to_owned(),
                occurrence,
            },
            Firing::Armed { .. } => match trigger
                .observed
                .first()
                .and_then(|observed| observed.tick.as_ref())
            {
                Some(tick) => FiringKey::Crossing {
                    alert_id: trigger.alert_id.as_str().to_owned(),
                    version: trigger.alert_version,
                    tick_id: tick.tick_id.as_str().to_owned(),
                },
                None => FiringKey::Trigger {
                    trigger_id: trigger.trigger_id.as_str().to_owned(),
                },
            },
        }
    }
}

/// A real trigger as read from `TRIGGERS`, with when its envelope was written (the matcher's decision).
#[derive(Debug, Clone)]
pub struct ActualTrigger {
    pub trigger: TriggerFired,
    pub written_at: Timestamp,
}

/// One `dispatch.sent`: the provider accepted an SMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Send {
    pub dispatch_id: String,
    pub site: Site,
    pub attempt: u32,
    pub sent_at: Timestamp,
}

/// The alert dispatches read from `DISPATCH`: which triggers each covers, and its sends.
#[derive(Debug, Default)]
pub struct Dispatches {
    covering: HashMap<String, Vec<String>>,
    sends: BTreeMap<String, BTreeMap<(Site, u32), Send>>,
}

impl Dispatches {
    pub fn take(&mut self, event: &Event) {
        match event {
            Event::DispatchRequested(requested) => {
                if let DispatchPurpose::Alert { trigger_ids, .. } = &requested.purpose {
                    for trigger_id in trigger_ids {
                        let covering = self
                            .covering
                            .entry(trigger_id.as_str().to_owned())
                            .or_default();
                        let dispatch_id = requested.dispatch_id.as_str().to_owned();
                        if !covering.contains(&dispatch_id) {
                            covering.push(dispatch_id);
                        }
                    }
                }
            }
            Event::DispatchSent(sent) => {
                self.sends
                    .entry(sent.dispatch_id.as_str().to_owned())
                    .or_default()
                    .entry((sent.site, sent.attempt))
                    .or_insert_with(|| Send {
                        dispatch_id: sent.dispatch_id.as_str().to_owned(),
                        site: sent.site,
                        attempt: sent.attempt,
                        sent_at: sent.sent_at,
                    });
            }
            _ => {}
        }
    }

    /// Every SMS the provider accepted for `trigger_id`, by any dispatch covering it, earliest first.
    fn sends_for(&self, trigger_id: &str) -> Vec<Send> {
        let mut sends: Vec<Send> = self
            .covering
            .get(trigger_id)
            .into_iter()
            .flatten()
            .filter_map(|dispatch_id| self.sends.get(dispatch_id))
            .flat_map(|sends| sends.values().cloned())
            .collect();
        sends.sort_by_key(|send| send.sent_at);
        sends
    }
}

/// A firing in the report.
#[derive(Debug, Clone, Serialize)]
pub struct FiringReport {
    pub trigger_id: String,
    pub alert_id: AlertId,
    pub alert_version: u64,
    pub kind: AlertKind,
    pub market: Option<String>,
    pub price: Option<String>,
    pub tick_id: Option<String>,
    /// The crossing tick's trade time, or the occurrence.
    pub at: Option<Timestamp>,
}

impl FiringReport {
    fn of(trigger: &TriggerFired, at: Option<Timestamp>) -> FiringReport {
        let observed = trigger.observed.first();
        FiringReport {
            trigger_id: trigger.trigger_id.as_str().to_owned(),
            alert_id: trigger.alert_id.clone(),
            alert_version: trigger.alert_version,
            kind: trigger.kind,
            market: observed.map(|observed| observed.market.as_str().to_owned()),
            price: observed.map(|observed| observed.price.value().to_string()),
            tick_id: observed
                .and_then(|observed| observed.tick.as_ref())
                .map(|tick| tick.tick_id.as_str().to_owned()),
            at,
        }
    }
}

/// One firing that reached the user more than once: several triggers for it, or several SMS.
#[derive(Debug, Clone, Serialize)]
pub struct Duplicate {
    pub firing: FiringReport,
    /// Every trigger id computed for this firing (more than one: the sites disagreed on the generation).
    pub trigger_ids: Vec<String>,
    /// Every SMS the provider accepted for it.
    pub sends: Vec<Send>,
}

/// One firing whose trigger or SMS came later than `--late-after` after the crossing tick.
#[derive(Debug, Clone, Serialize)]
pub struct Late {
    pub firing: FiringReport,
    /// From when ingest observed the crossing tick (or the occurrence) to the trigger.
    pub trigger_after_seconds: f64,
    /// To the first SMS the provider accepted, if any.
    pub sms_after_seconds: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Differences {
    pub matched: usize,
    pub missed: Vec<FiringReport>,
    pub extra: Vec<FiringReport>,
    pub duplicated: Vec<Duplicate>,
    pub late: Vec<Late>,
}

impl Differences {
    pub fn is_clean(&self) -> bool {
        self.missed.is_empty()
            && self.extra.is_empty()
            && self.duplicated.is_empty()
            && self.late.is_empty()
    }
}

/// The real triggers of the window, grouped by firing: those of selected alerts whose crossing tick
/// traded (or whose occurrence falls) in `[from, to)`.
pub fn actual_in_window<'a>(
    triggers: &'a [ActualTrigger],
    tick_times: &HashMap<String, TickTimes>,
    from: Timestamp,
    to: Timestamp,
) -> BTreeMap<FiringKey, Vec<&'a ActualTrigger>> {
    let mut by_key: BTreeMap<FiringKey, Vec<&ActualTrigger>> = BTreeMap::new();
    for actual in triggers {
        let Some(at) = firing_time(&actual.trigger, tick_times) else {
            continue;
        };
        if (from..to).contains(&at) {
            by_key
                .entry(FiringKey::of(&actual.trigger))
                .or_default()
                .push(actual);
        }
    }
    for group in by_key.values_mut() {
        group.sort_by_key(|actual| actual.written_at);
    }
    by_key
}

/// When a real trigger's firing happened: the occurrence, or the crossing tick's trade time when the
/// replay read that tick.
fn firing_time(
    trigger: &TriggerFired,
    tick_times: &HashMap<String, TickTimes>,
) -> Option<Timestamp> {
    match trigger.firing {
        Firing::Scheduled { occurrence } => Some(occurrence),
        Firing::Armed { .. } => {
            let tick = trigger.observed.first()?.tick.as_ref()?;
            tick_times
                .get(tick.tick_id.as_str())
                .map(|times| times.traded_at)
        }
    }
}

/// The diff.
pub fn compare(
    expected: &[ExpectedFiring],
    actual: &BTreeMap<FiringKey, Vec<&ActualTrigger>>,
    tick_times: &HashMap<String, TickTimes>,
    dispatches: &Dispatches,
    late_after: SignedDuration,
) -> Differences {
    let mut differences = Differences::default();
    let mut expected_keys: BTreeMap<&FiringKey, &ExpectedFiring> = BTreeMap::new();
    for firing in expected {
        expected_keys.entry(&firing.key).or_insert(firing);
    }
    for (key, firing) in &expected_keys {
        if !actual.contains_key(*key) {
            differences
                .missed
                .push(FiringReport::of(&firing.trigger, firing.at));
        }
    }
    for (key, group) in actual {
        let Some(first) = group.first() else {
            continue;
        };
        let at = firing_time(&first.trigger, tick_times);
        let report = FiringReport::of(&first.trigger, at);
        if expected_keys.contains_key(key) {
            differences.matched += 1;
        } else {
            differences.extra.push(report.clone());
        }
        let mut trigger_ids: Vec<String> = group
            .iter()
            .map(|actual| actual.trigger.trigger_id.as_str().to_owned())
            .collect();
        trigger_ids.dedup();
        let sends: Vec<Send> = trigger_ids
            .iter()
            .flat_map(|trigger_id| dispatches.sends_for(trigger_id))
            .collect();
        if trigger_ids.len() > 1 || sends.len() > 1 {
            differences.duplicated.push(Duplicate {
                firing: report.clone(),
                trigger_ids,
                sends: sends.clone(),
            });
        }
        let reference = match (key, &first.trigger.observed.first()) {
            (FiringKey::Scheduled { occurrence, .. }, _) => Some(*occurrence),
            (_, Some(observed)) => observed
                .tick
                .as_ref()
                .and_then(|tick| tick_times.get(tick.tick_id.as_str()))
                .map(|times| times.observed_at),
            (_, None) => None,
        };
        let Some(reference) = reference else {
            continue;
        };
        let trigger_after = first.written_at.duration_since(reference);
        let sms_after = sends
            .iter()
            .map(|send| send.sent_at)
            .min()
            .map(|sent_at| sent_at.duration_since(reference));
        if trigger_after > late_after || sms_after.is_some_and(|after| after > late_after) {
            differences.late.push(Late {
                firing: report,
                trigger_after_seconds: seconds(trigger_after),
                sms_after_seconds: sms_after.map(seconds),
            });
        }
    }
    differences
}

fn seconds(duration: SignedDuration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}
