//! The sandbox: the matcher's pure [`AlertIndex`], fed the recorded alert events and ticks in the order
//! the matcher reads them, in this process. It publishes nothing; its firings are only collected.
//!
//! It runs in two phases. **Restore** (ticks traded before `--from`): exactly the matcher's rebuild at
//! start — alert events applied without placing anything, ticks only filling each market's last values and
//! rolling windows, then the latest real trigger of each alert before `--from` taken in for its firing
//! count, cooldown and `once` state, and every alert placed by the current value of its series. **Live**
//! (from the first tick traded at or after `--from`): alert events take effect at their event time,
//! scheduled occurrences fire as the ticks' trade time passes them, and every tick is evaluated; what
//! fires in `[from, to)` is the expected history.

use std::collections::{HashMap, HashSet, VecDeque};

use coinalarm_matcher::{AlertIndex, IndexSettings};
use jiff::{SignedDuration, Timestamp};
use proto_events::domain::AlertId;
use proto_events::events::{TickObserved, TriggerFired};
use proto_events::{Event, Firing, Site};

use super::diff::FiringKey;

/// An alert event as stored: what the index applies, with the time it takes effect and its origin.
#[derive(Debug, Clone)]
pub struct AlertEvent {
    pub time: Timestamp,
    pub origin: Site,
    pub event: Event,
}

/// A tick the replay has read that a real trigger refers to: when it traded and when ingest observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickTimes {
    pub traded_at: Timestamp,
    pub observed_at: Timestamp,
}

/// A firing the sandbox produced inside the window.
#[derive(Debug, Clone)]
pub struct ExpectedFiring {
    pub key: FiringKey,
    pub trigger: TriggerFired,
    /// The trade time of the tick it fired on (scheduled: the occurrence), when the sandbox saw it.
    pub at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Restoring,
    Live,
}

pub struct Sandbox {
    index: AlertIndex,
    from: Timestamp,
    to: Timestamp,
    phase: Phase,
    /// Alert events of `[from, to)`, in event-time order, applied as the ticks' trade time reaches them.
    pending_events: VecDeque<AlertEvent>,
    /// Every real trigger of the selected alerts the replay read; the latest of each alert before `from`
    /// restores the index.
    actual_triggers: Vec<TriggerFired>,
    /// Tick ids real triggers refer to: their times are recorded as the ticks go by.
    referenced_ticks: HashSet<String>,
    tick_times: HashMap<String, TickTimes>,
    expected: Vec<ExpectedFiring>,
    fired: Vec<TriggerFired>,
    ticks_in_window: u64,
}

impl Sandbox {
    /// A sandbox over `[from, to)`: `alert_events` (the selected alerts', in stream order) before `from`
    /// are applied now in restore mode, the later ones wait for their time.
    pub fn new(
        settings: IndexSettings,
        from: Timestamp,
        to: Timestamp,
        alert_events: Vec<AlertEvent>,
        actual_triggers: Vec<TriggerFired>,
    ) -> Sandbox {
        let mut index = AlertIndex::new(settings);
        index.begin_restore();
        let mut ignored = Vec::new();
        let mut pending: Vec<AlertEvent> = Vec::new();
        for event in alert_events {
            if event.time < from {
                index.apply(
                    &event.event,
                    event.time,
                    event.origin,
                    event.time,
                    &mut ignored,
                );
            } else if event.time < to {
                pending.push(event);
            }
        }
        // Stable: events of one instant keep their stream order.
        pending.sort_by_key(|event| event.time);
        let referenced_ticks = actual_triggers
            .iter()
            .filter_map(|trigger| trigger.observed.first()?.tick.as_ref())
            .map(|tick| tick.tick_id.as_str().to_owned())
            .collect();
        Sandbox {
            index,
            from,
            to,
            phase: Phase::Restoring,
            pending_events: pending.into(),
            actual_triggers,
            referenced_ticks,
            tick_times: HashMap::new(),
            expected: Vec::new(),
            fired: Vec::new(),
            ticks_in_window: 0,
        }
    }

    /// Takes one tick read at `stream_sequence` of the tick stream, `tick_id` its message id and
    /// `observed_at` its event time (when ingest observed it).
    pub fn on_tick(
        &mut self,
        tick: &TickObserved,
        tick_id: &str,
        stream_sequence: u64,
        observed_at: Timestamp,
    ) {
        let traded_at = tick.trade_timestamp;
        if !self.referenced_ticks.is_empty() && self.referenced_ticks.contains(tick_id) {
            self.tick_times.insert(
                tick_id.to_owned(),
                TickTimes {
                    traded_at,
                    observed_at,
                },
            );
        }
        if self.phase == Phase::Restoring {
            if traded_at < self.from {
                self.fired.clear();
                self.index
                    .on_tick(tick, stream_sequence, traded_at, &mut self.fired);
                return;
            }
            self.go_live();
        }
        self.advance_to(traded_at);
        self.fired.clear();
        self.index
            .on_tick(tick, stream_sequence, traded_at, &mut self.fired);
        let in_window = (self.from..self.to).contains(&traded_at);
        if in_window {
            self.ticks_in_window += 1;
        }
        let fired = std::mem::take(&mut self.fired);
        if in_window {
            for trigger in &fired {
                self.expect(trigger.clone(), Some(traded_at));
            }
        }
        self.fired = fired;
    }

    /// Ends the run: what is left of the window (alert events, scheduled occurrences) is applied, and the
    /// expected firings are returned with the times of the ticks real triggers refer to.
    pub fn finish(mut self) -> SandboxOutcome {
        if self.phase == Phase::Restoring {
            self.go_live();
        }
        let end = self.to - SignedDuration::from_nanos(1);
        self.advance_to(end);
        SandboxOutcome {
            expected: self.expected,
            tick_times: self.tick_times,
            ticks_in_window: self.ticks_in_window,
        }
    }

    /// Applies the alert events and fires the scheduled occurrences due by `at` (within the window).
    fn advance_to(&mut self, at: Timestamp) {
        while let Some(event) = self.pending_events.front()
            && event.time <= at
        {
            let Some(event) = self.pending_events.pop_front() else {
                break;
            };
            let mut fired = Vec::new();
            self.index.apply(
                &event.event,
                event.time,
                event.origin,
                event.time,
                &mut fired,
            );
            // A late-applied event replays recent ticks; the window filter is on the event time here,
            // which is inside the window by construction.
            for trigger in fired {
                self.expect(trigger, None);
            }
        }
        let due_by = at.min(self.to - SignedDuration::from_nanos(1));
        let mut fired = Vec::new();
        // The matcher fires occurrences on a timer at their instant; here time is the ticks' trade time,
        // so nothing is ever older than the grace period.
        self.index
            .fire_due(due_by, SignedDuration::MAX, due_by, &mut fired);
        for trigger in fired {
            self.expect(trigger, None);
        }
    }

    fn expect(&mut self, trigger: TriggerFired, at: Option<Timestamp>) {
        let at = match trigger.firing {
            Firing::Scheduled { occurrence } => Some(occurrence),
            Firing::Armed { .. } => at,
        };
        if at.is_some_and(|at| !(self.from..self.to).contains(&at)) {
            return;
        }
        self.expected.push(ExpectedFiring {
            key: FiringKey::of(&trigger),
            trigger,
            at,
        });
    }

    /// Restores the firing state from the real triggers before `from`, as the matcher's rebuild does,
    /// then places every alert.
    fn go_live(&mut self) {
        let mut latest: HashMap<AlertId, &TriggerFired> = HashMap::new();
        for trigger in &self.actual_triggers {
            if self.before_window(trigger) {
                keep_latest(&mut latest, trigger);
            }
        }
        for trigger in latest.values() {
            let fired_at = match trigger.firing {
                Firing::Scheduled { occurrence } => occurrence,
                Firing::Armed { .. } => self
                    .tick_of(trigger)
                    .map(|times| times.traded_at)
                    .unwrap_or(trigger.evaluated_at),
            };
            self.index.restore_trigger(trigger, fired_at);
        }
        self.index.finish_restore();
        // Occurrences before the window were the real matcher's business (and are in the triggers just
        // restored when they fired): skip them without firing.
        let mut skipped = Vec::new();
        let before = self.from - SignedDuration::from_nanos(1);
        self.index
            .fire_due(before, SignedDuration::ZERO, before, &mut skipped);
        self.phase = Phase::Live;
    }

    fn tick_of(&self, trigger: &TriggerFired) -> Option<TickTimes> {
        let tick = trigger.observed.first()?.tick.as_ref()?;
        self.tick_times.get(tick.tick_id.as_str()).copied()
    }

    /// Whether a real trigger fired before the window: by its occurrence, by its tick's trade time when
    /// the replay read that tick, otherwise by when the matcher decided.
    fn before_window(&self, trigger: &TriggerFired) -> bool {
        match trigger.firing {
            Firing::Scheduled { occurrence } => occurrence < self.from,
            Firing::Armed { .. } => match self.tick_of(trigger) {
                Some(times) => times.traded_at < self.from,
                None => trigger.evaluated_at < self.from,
            },
        }
    }
}

/// What the sandbox produced.
#[derive(Debug)]
pub struct SandboxOutcome {
    pub expected: Vec<ExpectedFiring>,
    pub tick_times: HashMap<String, TickTimes>,
    pub ticks_in_window: u64,
}

/// Keeps the latest firing per alert: by alert version, then generation or occurrence (the matcher's
/// rebuild rule).
fn keep_latest<'a>(latest: &mut HashMap<AlertId, &'a TriggerFired>, trigger: &'a TriggerFired) {
    let order = |trigger: &TriggerFired| {
        let firing = match trigger.firing {
            Firing::Armed { generation } => i128::from(generation),
            Firing::Scheduled { occurrence } => i128::from(occurrence.as_second()),
        };
        (trigger.alert_version, firing)
    };
    match latest.get(&trigger.alert_id) {
        Some(kept) if order(kept) >= order(trigger) => {}
        _ => {
            latest.insert(trigger.alert_id.clone(), trigger);
        }
    }
}
