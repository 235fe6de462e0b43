//! The alert index: every alert's current definition and state, and per market the ordered structures that
//! let a tick find exactly the alerts it fires in O(log n + k). Pure: no I/O and no clock — every instant
//! it uses comes from the events and ticks it is given, which is what lets two sites compute the same
//! triggers.
//!
//! Per market it keeps the last tick's values, the rolling windows, the crossing structures of each value
//! series (price; signed and absolute change per basis), a queue of alerts that become due at a later
//! instant (new, resumed and edited alerts wait for the first tick at or after their event time;
//! repeating alerts wait out their cooldown there), a queue of expiry instants, and a short buffer of
//! recent ticks for alert events that arrive after ticks they should have seen. Scheduled alerts sit in
//! one queue ordered by their next occurrence.

use std::collections::{BTreeSet, VecDeque};

// The id maps are hashed on every event of a rebuild; SipHash was 8 % of a cold start. Ids are minted
// by the service, and foldhash is seeded per process, so flooding them is not a concern.
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use proto_events::domain::{AlertId, Exchange, MarketCode, NatsName, UserId};
use proto_events::events::alerts::ALERT_CREATED_VERSION;
use proto_events::events::{
    AlertCondition, AlertCreated, AlertKind, AlertSpec, ObservedPrice, RepeatPolicy, TickObserved,
    TickRef, TriggerFired,
};
use proto_events::ids::{self, Firing, TriggerId};
use proto_events::{Event, Site};

use crate::crossing::Crossings;
use crate::model::{
    Entry, Phase, SERIES_COUNT, Series, SingleAlert, TickValues, Tracked, add_seconds,
    after_firing, place,
};
use crate::schedule::next_occurrence;
use crate::window::{ROLLING_BASES, RollingWindow};

/// Arm generations are `version × GENERATION_BASE + n`, `n` counting the firings (from 1) under that
/// alert version: `g3000012` is the 12th firing of version 3. Versions only grow, so generations never
/// repeat across edits, pauses and resumes, and they depend only on the alert's events and the tick
/// sequence, which both sites share.
pub const GENERATION_BASE: u64 = 1_000_000_000;

/// The arm generation of the `firing`-th firing (from 1) under alert `version`.
pub fn generation(version: u64, firing: u64) -> u64 {
    version
        .saturating_mul(GENERATION_BASE)
        .saturating_add(firing.min(GENERATION_BASE - 1))
}

/// What the index needs to know about where it runs.
#[derive(Debug, Clone)]
pub struct IndexSettings {
    /// The site whose tick stream the index reads; trigger tick references name its sequences.
    pub site: Site,
    /// The stream ticks are read from (the local aggregate `TICKS`).
    pub tick_stream: NatsName,
    /// How long recent ticks are kept per market for alert events that arrive after them.
    pub replay_window: SignedDuration,
    /// At most this many recent ticks per market (0 turns replay off).
    pub replay_ticks_max: usize,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            site: Site::Onprem,
            tick_stream: default_tick_stream(),
            replay_window: SignedDuration::from_secs(60),
            replay_ticks_max: 2_048,
        }
    }
}

fn default_tick_stream() -> NatsName {
    // A valid constant name: the parse cannot fail.
    NatsName::parse(proto_events::Category::Ticks.aggregate_stream())
        .unwrap_or_else(|_| unreachable!("TICKS is a valid stream name"))
}

/// What an alert event did to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// Already applied, or older than what was applied (a cross-site conflict's loser).
    Stale,
    /// A change to an alert this index never saw created.
    UnknownAlert,
    /// A change to a deleted alert.
    AlreadyDeleted,
    /// Not an alert event.
    NotAnAlertEvent,
}

/// What a tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    Evaluated {
        fired: usize,
    },
    /// Its sequential id is not after the last one processed for its market: dropped.
    Stale,
}

/// What a pass over due scheduled occurrences did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueOutcome {
    pub fired: usize,
    /// Occurrences older than the grace period, not fired: `(alert, occurrence)`.
    pub missed: Vec<(AlertId, Timestamp)>,
    /// Occurrences dropped because they fell within a repeating alert's cooldown.
    pub in_cooldown: usize,
}

/// Alerts by kind that can fire (placed in the index), and those that cannot right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexSizes {
    pub target_price: usize,
    pub change_rate: usize,
    pub scheduled: usize,
    /// Paused, spent, expired, or scheduled with no occurrence left.
    pub inactive: usize,
}

/// Orders an alert's events: version, then time, then site — the projection's merge rule, so a
/// cross-site conflict (two events of one version) resolves the same way wherever it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EventKey {
    version: u64,
    at: Timestamp,
    origin: Site,
}

/// The latest event that made the alert evaluate again, and how it enters.
#[derive(Debug, Clone, Copy)]
struct Activation {
    at: Timestamp,
    entry: Entry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Idle,
    Deferred {
        due: Timestamp,
        entry: Entry,
    },
    /// In one of the sets of its series (which one, only the series knows).
    Set,
    Unplaced,
    Scheduled {
        at: Timestamp,
    },
}

impl Placement {
    fn is_in_market(self) -> bool {
        matches!(
            self,
            Placement::Deferred { .. } | Placement::Set | Placement::Unplaced
        )
    }
}

#[derive(Debug)]
struct AlertSlot {
    alert_id: AlertId,
    user_id: UserId,
    home_site: Site,
    spec: AlertSpec,
    applied: EventKey,
    /// Version of the latest event that set the definition (created or updated).
    spec_version: u64,
    paused: bool,
    activation: Activation,
    /// Firings under `applied.version`.
    firings_in_version: u64,
    /// Under the current definition: the trade time of the last firing (crossing alerts) or the last
    /// occurrence fired (scheduled).
    last_fired: Option<Timestamp>,
    spent: bool,
    expired: bool,
    tracked: Option<Tracked>,
    market: Option<u32>,
    zone: Option<TimeZone>,
    placement: Placement,
}

impl AlertSlot {
    fn version(&self) -> u64 {
        self.applied.version
    }

    /// When a crossing alert next evaluates ticks, and how it enters then.
    fn due(&self) -> (Timestamp, Entry) {
        if let (Some(fired_at), RepeatPolicy::Repeat { cooldown_seconds }) =
            (self.last_fired, self.spec.repeat)
        {
            let rearm = add_seconds(fired_at, i64::from(cooldown_seconds.get()));
            if rearm > self.activation.at {
                return (rearm, Entry::PreviousValue);
            }
        }
        (self.activation.at, self.activation.entry)
    }
}

#[derive(Debug)]
struct MarketState {
    exchange: Exchange,
    market: MarketCode,
    last: Option<TickValues>,
    windows: [RollingWindow; 3],
    series: [Crossings; SERIES_COUNT],
    deferred: BTreeSet<(Timestamp, u32)>,
    expiry: BTreeSet<(Timestamp, u32)>,
    recent: VecDeque<TickValues>,
}

impl MarketState {
    fn new(exchange: Exchange, market: MarketCode) -> MarketState {
        MarketState {
            exchange,
            market,
            last: None,
            windows: ROLLING_BASES.map(RollingWindow::for_basis),
            series: std::array::from_fn(|_| Crossings::default()),
            deferred: BTreeSet::new(),
            expiry: BTreeSet::new(),
            recent: VecDeque::new(),
        }
    }

    /// Takes a tick into the windows, the last values and the recent buffer.
    fn record(
        &mut self,
        tick: &TickObserved,
        stream_sequence: u64,
        settings: &IndexSettings,
    ) -> TickValues {
        let at = tick.trade_timestamp;
        let price = tick.trade_price.value();
        let mut window_starts = [None; 3];
        for (start, window) in window_starts.iter_mut().zip(&mut self.windows) {
            *start = window.record(at, price);
        }
        let values = TickValues {
            sequential_id: tick.sequential_id,
            at,
            price: tick.trade_price,
            daily_rate: tick.signed_change_rate,
            window_starts,
            stream_sequence,
        };
        self.last = Some(values);
        if settings.replay_ticks_max > 0 {
            if self.recent.len() >= settings.replay_ticks_max {
                self.recent.pop_front();
            }
            self.recent.push_back(values);
            let horizon = at
                .checked_sub(settings.replay_window)
                .unwrap_or(Timestamp::MIN);
            while self.recent.len() > 1 && self.recent.front().is_some_and(|old| old.at < horizon) {
                self.recent.pop_front();
            }
        }
        values
    }
}

/// The alert index. See the crate documentation for the semantics it implements.
#[derive(Debug)]
pub struct AlertIndex {
    settings: IndexSettings,
    slots: Vec<Option<AlertSlot>>,
    free_slots: Vec<u32>,
    by_id: HashMap<AlertId, u32>,
    deleted: HashSet<AlertId>,
    markets: Vec<MarketState>,
    market_positions: HashMap<MarketCode, Vec<(Exchange, u32)>>,
    scheduled: BTreeSet<(Timestamp, u32)>,
    /// While rebuilding, events and triggers set the alerts' records but nothing is placed.
    restoring: bool,
    fired_scratch: Vec<u32>,
}

impl AlertIndex {
    pub fn new(settings: IndexSettings) -> AlertIndex {
        AlertIndex {
            settings,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::new(),
            deleted: HashSet::new(),
            markets: Vec::new(),
            market_positions: HashMap::new(),
            scheduled: BTreeSet::new(),
            restoring: false,
            fired_scratch: Vec::new(),
        }
    }

    pub fn settings(&self) -> &IndexSettings {
        &self.settings
    }

    /// Alerts known and not deleted, placed or not.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Markets seen in ticks or alerts.
    pub fn market_count(&self) -> usize {
        self.markets.len()
    }

    /// Counts alerts by kind and state. Walks every alert: for metrics every few seconds, not per tick.
    pub fn sizes(&self) -> IndexSizes {
        let mut sizes = IndexSizes::default();
        for slot in self.slots.iter().flatten() {
            match (slot.placement, slot.spec.condition.kind()) {
                (Placement::Idle, _) => sizes.inactive += 1,
                (_, AlertKind::TargetPrice) => sizes.target_price += 1,
                (_, AlertKind::ChangeRate) => sizes.change_rate += 1,
                (_, AlertKind::Scheduled) => sizes.scheduled += 1,
            }
        }
        sizes
    }

    /// The last tick processed for a market: its price and sequential id.
    pub fn last_tick(
        &self,
        exchange: &Exchange,
        market: &MarketCode,
    ) -> Option<(proto_events::domain::Price, u64)> {
        let position = self.find_market(exchange, market)?;
        let last = self.markets.get(position as usize)?.last?;
        Some((last.price, last.sequential_id))
    }

    /// The instant of the earliest scheduled occurrence waiting to fire.
    pub fn next_scheduled_at(&self) -> Option<Timestamp> {
        self.scheduled.first().map(|(at, _)| *at)
    }

    /// Adds an alert as its `alert.created` event at `at` would (the shape benchmarks and tests use).
    pub fn insert(
        &mut self,
        alert: AlertCreated,
        at: Timestamp,
        out: &mut Vec<TriggerFired>,
    ) -> Applied {
        let origin = alert.home_site;
        self.apply(&Event::AlertCreated(alert), at, origin, at, out)
    }

    /// Removes an alert for good, as its `alert.deleted` event would.
    pub fn remove(&mut self, alert_id: &AlertId) -> bool {
        let Some(slot) = self.by_id.get(alert_id).copied() else {
            return false;
        };
        self.detach(slot);
        self.free(slot);
        self.deleted.insert(alert_id.clone());
        true
    }

    /// Applies one alert event stored at `at` by `origin`. An alert event that arrives after ticks at or
    /// after `at` were already evaluated is replayed against the recent ticks of its market, so the
    /// firings (pushed to `out`, stamped `evaluated_at`) do not depend on which arrived first.
    pub fn apply(
        &mut self,
        event: &Event,
        at: Timestamp,
        origin: Site,
        evaluated_at: Timestamp,
        out: &mut Vec<TriggerFired>,
    ) -> Applied {
        let (alert_id, version) = match event {
            Event::AlertCreated(created) => (&created.alert_id, ALERT_CREATED_VERSION),
            Event::AlertUpdated(updated) => (&updated.alert_id, updated.version),
            Event::AlertPaused(paused) => (&paused.alert_id, paused.version),
            Event::AlertResumed(resumed) => (&resumed.alert_id, resumed.version),
            Event::AlertDeleted(deleted) => (&deleted.alert_id, deleted.version),
            _ => return Applied::NotAnAlertEvent,
        };
        if self.deleted.contains(alert_id) {
            return Applied::AlreadyDeleted;
        }
        let key = EventKey {
            version,
            at,
            origin,
        };
        let existing = self.by_id.get(alert_id).copied();
        if let Event::AlertDeleted(_) = event {
            // Deletion is terminal whatever its version: no later command is accepted for the alert.
            if let Some(slot) = existing {
                self.detach(slot);
                self.free(slot);
            }
            self.deleted.insert(alert_id.clone());
            return Applied::Changed;
        }
        if let Some(slot) = existing
            && self.slot(slot).is_none_or(|current| key <= current.applied)
        {
            return Applied::Stale;
        }
        match (event, existing) {
            (Event::AlertCreated(created), None) => {
                let slot = self.new_slot(created, key);
                self.activate(slot, evaluated_at, out);
            }
            // A second creation of a known id can only be a cross-site conflict: it redefines the alert.
            (Event::AlertCreated(AlertCreated { spec, .. }), Some(slot))
            | (Event::AlertUpdated(proto_events::events::AlertUpdated { spec, .. }), Some(slot)) => {
                self.redefine(slot, spec, key, evaluated_at, out);
            }
            (Event::AlertPaused(_), Some(slot)) => {
                self.detach(slot);
                if let Some(alert) = self.slot_mut(slot) {
                    alert.applied = key;
                    alert.firings_in_version = 0;
                    alert.paused = true;
                }
            }
            (Event::AlertResumed(_), Some(slot)) => {
                let was_paused = self.slot(slot).is_some_and(|alert| alert.paused);
                if let Some(alert) = self.slot_mut(slot) {
                    alert.applied = key;
                    alert.firings_in_version = 0;
                    if was_paused {
                        alert.paused = false;
                        alert.activation = Activation {
                            at,
                            entry: Entry::PreviousValue,
                        };
                    }
                }
                if was_paused {
                    self.activate(slot, evaluated_at, out);
                }
            }
            _ => return Applied::UnknownAlert,
        }
        Applied::Changed
    }

    /// Evaluates one tick read at `stream_sequence` of the tick stream: fires what it crosses (pushed to
    /// `out`, stamped `evaluated_at`). Ticks must come in exchange sequential-id order per market; a tick
    /// not after the last one of its market is dropped.
    pub fn on_tick(
        &mut self,
        tick: &TickObserved,
        stream_sequence: u64,
        evaluated_at: Timestamp,
        out: &mut Vec<TriggerFired>,
    ) -> TickOutcome {
        let market = self.market_position(&tick.exchange, &tick.market);
        let position = market as usize;
        if self.markets[position]
            .last
            .is_some_and(|last| tick.sequential_id <= last.sequential_id)
        {
            return TickOutcome::Stale;
        }
        let at = tick.trade_timestamp;
        // An alert may fire at its expiry instant, never after.
        while let Some(&(expires_at, slot)) = self.markets[position].expiry.first() {
            if expires_at >= at {
                break;
            }
            self.markets[position].expiry.pop_first();
            self.expire(slot, market);
        }
        // Alerts due by this tick enter by the values before it, so this tick can fire them.
        while let Some(&(due, slot)) = self.markets[position].deferred.first() {
            if due > at {
                break;
            }
            self.markets[position].deferred.pop_first();
            self.place_due(slot, market);
        }
        let values = self.markets[position].record(tick, stream_sequence, &self.settings);
        let mut fired = std::mem::take(&mut self.fired_scratch);
        let mut fired_total = 0;
        for series_position in 0..SERIES_COUNT {
            if self.markets[position].series[series_position].is_empty() {
                continue;
            }
            let Some(value) = values.series_value(Series::at_position(series_position)) else {
                continue;
            };
            fired.clear();
            self.markets[position].series[series_position].advance(value, &mut fired);
            for &slot in &fired {
                self.fire_crossing(slot, market, &values, evaluated_at, out);
            }
            fired_total += fired.len();
        }
        self.fired_scratch = fired;
        TickOutcome::Evaluated { fired: fired_total }
    }

    /// Fires every scheduled occurrence due by `now` (pushing triggers to `out`). An occurrence older than
    /// `grace` is not fired (reported as missed): the schedule moves on to its next occurrence.
    pub fn fire_due(
        &mut self,
        now: Timestamp,
        grace: SignedDuration,
        evaluated_at: Timestamp,
        out: &mut Vec<TriggerFired>,
    ) -> DueOutcome {
        let mut outcome = DueOutcome::default();
        let oldest_fired = now.checked_sub(grace).unwrap_or(Timestamp::MIN);
        while let Some(&(at, slot)) = self.scheduled.first() {
            if at > now {
                break;
            }
            self.scheduled.pop_first();
            let Some(alert) = self.slot_mut(slot) else {
                continue;
            };
            alert.placement = Placement::Idle;
            let mut next_after = at;
            if at < oldest_fired {
                outcome.missed.push((alert.alert_id.clone(), at));
                // Skip straight to the first occurrence inside the grace period.
                next_after = oldest_fired
                    .checked_sub(SignedDuration::from_nanos(1))
                    .unwrap_or(oldest_fired)
                    .max(at);
            } else if alert
                .spec
                .expires_at
                .is_some_and(|expires_at| at > expires_at)
            {
                alert.expired = true;
                continue;
            } else if let (Some(last), RepeatPolicy::Repeat { cooldown_seconds }) =
                (alert.last_fired, alert.spec.repeat)
                && at < add_seconds(last, i64::from(cooldown_seconds.get()))
            {
                outcome.in_cooldown += 1;
            } else {
                alert.last_fired = Some(at);
                let once = alert.spec.repeat == RepeatPolicy::Once;
                if once {
                    alert.spent = true;
                }
                if let Some(trigger) = self.scheduled_trigger(slot, at, evaluated_at) {
                    out.push(trigger);
                    outcome.fired += 1;
                }
                if once {
                    continue;
                }
            }
            self.schedule_after(slot, next_after);
        }
        outcome
    }

    /// Starts a rebuild: until [`AlertIndex::finish_restore`], applied events only set the alerts'
    /// records and place nothing, and ticks only build the markets' state, so nothing fires.
    pub fn begin_restore(&mut self) {
        self.restoring = true;
    }

    /// Takes a trigger from the stream into its alert's record: the firing count of its version, the
    /// last firing for cooldowns and `once` alerts (`fired_at` is the firing tick's trade time, or the
    /// occurrence). Returns whether it concerned a known alert's current definition.
    pub fn restore_trigger(&mut self, trigger: &TriggerFired, fired_at: Timestamp) -> bool {
        let Some(slot) = self.by_id.get(&trigger.alert_id).copied() else {
            return false;
        };
        let Some(alert) = self.slot_mut(slot) else {
            return false;
        };
        if trigger.alert_version < alert.spec_version {
            return false;
        }
        let fired_at = match trigger.firing {
            Firing::Armed { generation } => {
                if trigger.alert_version == alert.version()
                    && let Some(firing) = generation
                        .checked_sub(alert.version().saturating_mul(GENERATION_BASE))
                        .filter(|firing| *firing < GENERATION_BASE)
                {
                    alert.firings_in_version = alert.firings_in_version.max(firing);
                }
                fired_at
            }
            Firing::Scheduled { occurrence } => occurrence,
        };
        alert.last_fired = alert.last_fired.max(Some(fired_at));
        if alert.spec.repeat == RepeatPolicy::Once {
            alert.spent = true;
        }
        true
    }

    /// Ends a rebuild: places every alert by the state the markets and triggers left. A crossing alert
    /// whose due time has passed is placed by the current value of its series (the state after any tick
    /// is a function of that value, given the firings); a scheduled alert waits for its first occurrence
    /// after its activation and last firing, so [`AlertIndex::fire_due`] then fires those missed within
    /// the grace period.
    pub fn finish_restore(&mut self) {
        self.restoring = false;
        let mut unused = Vec::new();
        for slot in 0..self.slots.len() as u32 {
            self.place_now(slot, false, Timestamp::UNIX_EPOCH, &mut unused);
        }
    }

    fn activate(&mut self, slot: u32, evaluated_at: Timestamp, out: &mut Vec<TriggerFired>) {
        if !self.restoring {
            self.place_now(slot, true, evaluated_at, out);
        }
    }

    /// Places an idle alert that can fire; `replay` re-evaluates recent ticks it missed.
    fn place_now(
        &mut self,
        slot: u32,
        replay: bool,
        evaluated_at: Timestamp,
        out: &mut Vec<TriggerFired>,
    ) {
        let Some(alert) = self.slot(slot) else {
            return;
        };
        if alert.placement != Placement::Idle || alert.paused || alert.spent || alert.expired {
            return;
        }
        match (alert.tracked, alert.market) {
            (Some(tracked), Some(market)) => {
                self.place_crossing(slot, tracked, market, replay, evaluated_at, out);
            }
            _ => {
                let after = alert
                    .activation
                    .at
                    .max(alert.last_fired.unwrap_or(Timestamp::MIN));
                self.schedule_after(slot, after);
            }
        }
    }

    fn place_crossing(
        &mut self,
        slot: u32,
        tracked: Tracked,
        market: u32,
        replay: bool,
        evaluated_at: Timestamp,
        out: &mut Vec<TriggerFired>,
    ) {
        let Some(alert) = self.slot(slot) else {
            return;
        };
        let (due, entry) = alert.due();
        let mut single = SingleAlert {
            tracked,
            repeat: alert.spec.repeat,
            expires_at: alert.spec.expires_at,
            phase: Phase::Deferred { due, entry },
        };
        let Some(market_state) = self.markets.get(market as usize) else {
            return;
        };
        let Some(last) = market_state.last.filter(|last| last.at >= due) else {
            self.set_phase(slot, market, single.phase);
            return;
        };
        // Ticks at or after `due` were evaluated before this alert was known here.
        let mut fired_on: Vec<TickValues> = Vec::new();
        let mut stepped = false;
        if replay {
            let mut previous: Option<&TickValues> = None;
            for values in &market_state.recent {
                if single.step(previous, values) {
                    fired_on.push(*values);
                }
                stepped |= values.at >= due;
                previous = Some(values);
            }
        }
        if !stepped {
            single.phase = if single
                .expires_at
                .is_some_and(|expires_at| expires_at < last.at)
            {
                Phase::Expired
            } else {
                place(
                    &tracked,
                    Entry::PreviousValue,
                    last.series_value(tracked.series),
                )
            };
        }
        for values in &fired_on {
            if let Some(alert) = self.slot_mut(slot) {
                alert.firings_in_version += 1;
                alert.last_fired = Some(values.at);
            }
            if let Some(trigger) = self.crossing_trigger(slot, market, values, evaluated_at) {
                out.push(trigger);
            }
        }
        self.set_phase(slot, market, single.phase);
    }

    /// Moves an alert to `phase` in its market. Expects it idle or just taken out of a structure by the
    /// caller (its `placement` then still names where it was, which decides its expiry membership).
    fn set_phase(&mut self, slot: u32, market: u32, phase: Phase) {
        let Some(alert) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(market_state) = self.markets.get_mut(market as usize) else {
            return;
        };
        let was_in_market = alert.placement.is_in_market();
        alert.placement = match phase {
            Phase::Deferred { due, entry } => {
                market_state.deferred.insert((due, slot));
                Placement::Deferred { due, entry }
            }
            Phase::In(kind) => match alert.tracked {
                Some(tracked) => {
                    market_state.series[tracked.series.position()].insert(
                        kind,
                        tracked.target,
                        slot,
                    );
                    Placement::Set
                }
                None => Placement::Idle,
            },
            Phase::Unplaced => match alert.tracked {
                Some(tracked) => {
                    market_state.series[tracked.series.position()].insert_unplaced(
                        tracked.target,
                        tracked.direction,
                        slot,
                    );
                    Placement::Unplaced
                }
                None => Placement::Idle,
            },
            Phase::Spent => {
                alert.spent = true;
                Placement::Idle
            }
            Phase::Expired => {
                alert.expired = true;
                Placement::Idle
            }
        };
        if let Some(expires_at) = alert.spec.expires_at {
            match (was_in_market, alert.placement.is_in_market()) {
                (false, true) => {
                    market_state.expiry.insert((expires_at, slot));
                }
                (true, false) => {
                    market_state.expiry.remove(&(expires_at, slot));
                }
                _ => {}
            }
        }
    }

    /// An alert due at this tick (already taken out of the deferred queue) enters its series.
    fn place_due(&mut self, slot: u32, market: u32) {
        let Some(alert) = self.slot(slot) else {
            return;
        };
        let (Placement::Deferred { entry, .. }, Some(tracked)) = (alert.placement, alert.tracked)
        else {
            return;
        };
        let previous_value = self
            .markets
            .get(market as usize)
            .and_then(|market_state| market_state.last)
            .and_then(|last| last.series_value(tracked.series));
        self.set_phase(slot, market, place(&tracked, entry, previous_value));
    }

    /// A crossing alert (already taken out of its set) fired on `values`.
    fn fire_crossing(
        &mut self,
        slot: u32,
        market: u32,
        values: &TickValues,
        evaluated_at: Timestamp,
        out: &mut Vec<TriggerFired>,
    ) {
        let Some(alert) = self.slot_mut(slot) else {
            return;
        };
        alert.firings_in_version += 1;
        alert.last_fired = Some(values.at);
        let phase = after_firing(alert.spec.repeat, values.at);
        if let Some(trigger) = self.crossing_trigger(slot, market, values, evaluated_at) {
            out.push(trigger);
        }
        self.set_phase(slot, market, phase);
    }

    /// An alert past its expiry (already taken out of the expiry queue) leaves the index.
    fn expire(&mut self, slot: u32, market: u32) {
        let Some(alert) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let placement = std::mem::replace(&mut alert.placement, Placement::Idle);
        alert.expired = true;
        let Some(market_state) = self.markets.get_mut(market as usize) else {
            return;
        };
        match (placement, alert.tracked) {
            (Placement::Deferred { due, .. }, _) => {
                market_state.deferred.remove(&(due, slot));
            }
            (Placement::Set | Placement::Unplaced, Some(tracked)) => {
                market_state.series[tracked.series.position()].remove(tracked.target, slot);
            }
            _ => {}
        }
    }

    /// Takes an alert out of wherever it is placed; it becomes idle.
    fn detach(&mut self, slot: u32) {
        let Some(alert) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let placement = std::mem::replace(&mut alert.placement, Placement::Idle);
        if let Placement::Scheduled { at } = placement {
            self.scheduled.remove(&(at, slot));
            return;
        }
        let Some(market_state) = alert
            .market
            .and_then(|market| self.markets.get_mut(market as usize))
        else {
            return;
        };
        match (placement, alert.tracked) {
            (Placement::Deferred { due, .. }, _) => {
                market_state.deferred.remove(&(due, slot));
            }
            (Placement::Set | Placement::Unplaced, Some(tracked)) => {
                market_state.series[tracked.series.position()].remove(tracked.target, slot);
            }
            _ => {}
        }
        if placement.is_in_market()
            && let Some(expires_at) = alert.spec.expires_at
        {
            market_state.expiry.remove(&(expires_at, slot));
        }
    }

    /// Queues a scheduled alert for its first occurrence strictly after `after`, unless it has none left
    /// before its expiry.
    fn schedule_after(&mut self, slot: u32, after: Timestamp) {
        let Some(alert) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let (AlertCondition::Scheduled(condition), Some(zone)) =
            (&alert.spec.condition, &alert.zone)
        else {
            return;
        };
        let Some(next) = next_occurrence(condition, zone, after) else {
            return;
        };
        if alert
            .spec
            .expires_at
            .is_some_and(|expires_at| next > expires_at)
        {
            alert.expired = true;
            return;
        }
        alert.placement = Placement::Scheduled { at: next };
        self.scheduled.insert((next, slot));
    }

    /// The definition changed (`alert.updated`, or a conflicting creation): a fresh alert under the new
    /// version — not spent, no cooldown — unless paused.
    fn redefine(
        &mut self,
        slot: u32,
        spec: &AlertSpec,
        key: EventKey,
        evaluated_at: Timestamp,
        out: &mut Vec<TriggerFired>,
    ) {
        self.detach(slot);
        let (tracked, market, zone) = self.compile(spec);
        let Some(alert) = self.slot_mut(slot) else {
            return;
        };
        alert.spec = spec.clone();
        alert.applied = key;
        alert.spec_version = key.version;
        alert.activation = Activation {
            at: key.at,
            entry: entry_for(spec),
        };
        alert.firings_in_version = 0;
        alert.last_fired = None;
        alert.spent = false;
        alert.expired = false;
        alert.tracked = tracked;
        alert.market = market;
        alert.zone = zone;
        if !alert.paused {
            self.activate(slot, evaluated_at, out);
        }
    }

    fn new_slot(&mut self, created: &AlertCreated, key: EventKey) -> u32 {
        let (tracked, market, zone) = self.compile(&created.spec);
        let alert = AlertSlot {
            alert_id: created.alert_id.clone(),
            user_id: created.user_id.clone(),
            home_site: created.home_site,
            spec: created.spec.clone(),
            applied: key,
            spec_version: key.version,
            paused: false,
            activation: Activation {
                at: key.at,
                entry: entry_for(&created.spec),
            },
            firings_in_version: 0,
            last_fired: None,
            spent: false,
            expired: false,
            tracked,
            market,
            zone,
            placement: Placement::Idle,
        };
        let slot = match self.free_slots.pop() {
            Some(free) => {
                self.slots[free as usize] = Some(alert);
                free
            }
            None => {
                self.slots.push(Some(alert));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_id.insert(created.alert_id.clone(), slot);
        slot
    }

    fn free(&mut self, slot: u32) {
        if let Some(alert) = self.slots.get_mut(slot as usize).and_then(Option::take) {
            self.by_id.remove(&alert.alert_id);
            self.free_slots.push(slot);
        }
    }

    /// The series target, market and time zone of a definition.
    fn compile(&mut self, spec: &AlertSpec) -> (Option<Tracked>, Option<u32>, Option<TimeZone>) {
        match &spec.condition {
            AlertCondition::Scheduled(condition) => {
                let zone = match condition.time_zone().time_zone() {
                    Ok(zone) => Some(zone),
                    Err(error) => {
                        tracing::error!(%error, "time zone of a scheduled alert is not in this host's database; it cannot fire here");
                        None
                    }
                };
                (None, None, zone)
            }
            AlertCondition::TargetPrice(condition) => (
                Tracked::of(&spec.condition),
                Some(self.market_position(&spec.exchange, &condition.market)),
                None,
            ),
            AlertCondition::ChangeRate(condition) => (
                Tracked::of(&spec.condition),
                Some(self.market_position(&spec.exchange, &condition.market)),
                None,
            ),
        }
    }

    fn find_market(&self, exchange: &Exchange, market: &MarketCode) -> Option<u32> {
        self.market_positions
            .get(market)?
            .iter()
            .find(|(known, _)| known == exchange)
            .map(|(_, position)| *position)
    }

    fn market_position(&mut self, exchange: &Exchange, market: &MarketCode) -> u32 {
        if let Some(position) = self.find_market(exchange, market) {
            return position;
        }
        let position = self.markets.len() as u32;
        self.markets
            .push(MarketState::new(exchange.clone(), market.clone()));
        self.market_positions
            .entry(market.clone())
            .or_default()
            .push((exchange.clone(), position));
        position
    }

    fn slot(&self, slot: u32) -> Option<&AlertSlot> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut AlertSlot> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    fn tick_ref(&self, market: &MarketState, values: &TickValues) -> TickRef {
        TickRef {
            tick_id: ids::tick(&market.exchange, &market.market, values.sequential_id),
            stream: self.settings.tick_stream.clone(),
            sequence: values.stream_sequence,
            site: self.settings.site,
        }
    }

    fn crossing_trigger(
        &self,
        slot: u32,
        market: u32,
        values: &TickValues,
        evaluated_at: Timestamp,
    ) -> Option<TriggerFired> {
        let alert = self.slot(slot)?;
        let market_state = self.markets.get(market as usize)?;
        let change = match &alert.spec.condition {
            AlertCondition::ChangeRate(condition) => values.change_percent(condition.basis),
            _ => None,
        };
        let observed = ObservedPrice {
            market: market_state.market.clone(),
            price: values.price,
            change,
            tick: Some(self.tick_ref(market_state, values)),
        };
        let firing = Firing::Armed {
            generation: generation(alert.version(), alert.firings_in_version),
        };
        Some(self.trigger(alert, firing, vec![observed], evaluated_at))
    }

    fn scheduled_trigger(
        &self,
        slot: u32,
        occurrence: Timestamp,
        evaluated_at: Timestamp,
    ) -> Option<TriggerFired> {
        let alert = self.slot(slot)?;
        let AlertCondition::Scheduled(condition) = &alert.spec.condition else {
            return None;
        };
        let observed = condition
            .markets()
            .iter()
            .filter_map(|market| {
                let position = self.find_market(&alert.spec.exchange, market)?;
                let market_state = self.markets.get(position as usize)?;
                let last = market_state.last?;
                Some(ObservedPrice {
                    market: market.clone(),
                    price: last.price,
                    change: None,
                    tick: Some(self.tick_ref(market_state, &last)),
                })
            })
            .collect();
        Some(self.trigger(
            alert,
            Firing::Scheduled { occurrence },
            observed,
            evaluated_at,
        ))
    }

    fn trigger(
        &self,
        alert: &AlertSlot,
        firing: Firing,
        observed: Vec<ObservedPrice>,
        evaluated_at: Timestamp,
    ) -> TriggerFired {
        TriggerFired {
            trigger_id: TriggerId::new(&alert.alert_id, firing),
            alert_id: alert.alert_id.clone(),
            user_id: alert.user_id.clone(),
            alert_version: alert.version(),
            home_site: alert.home_site,
            kind: alert.spec.condition.kind(),
            firing,
            exchange: alert.spec.exchange.clone(),
            observed,
            evaluated_at,
        }
    }
}

/// How a new or edited definition enters: target price alerts from the side the API saw the price on,
/// change alerts from the change before their first tick.
fn entry_for(spec: &AlertSpec) -> Entry {
    match &spec.condition {
        AlertCondition::TargetPrice(condition) => Entry::Given(condition.side_at_creation),
        AlertCondition::ChangeRate(_) | AlertCondition::Scheduled(_) => Entry::PreviousValue,
    }
}

#[cfg(test)]
mod tests;
