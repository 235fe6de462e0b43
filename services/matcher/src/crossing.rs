//! The ordered structures of one value series (a market's last price, or one change basis of a market): the
//! alerts waiting for the series to cross their targets, kept so a new value finds exactly the alerts it
//! fires or arms with range pops at the ends of ordered sets — O(log n + k), never a scan.
//!
//! An alert is *armed* while the value is on the side it must cross from, and *waiting* while the value is
//! at or past its target (it was just fired and re-armed there, or it was created with the target already
//! passed). A value that reaches an armed alert's target fires it; a value back on the arming side arms a
//! waiting one. [`SetKind::on_value`] states that rule for one alert; [`Crossings::advance`] applies it to
//! all of them at once, and the tests hold the two to the same answers.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use foldhash::HashMap;

use proto_events::events::{Direction, PriceSide};
use rust_decimal::Decimal;

/// Where an alert of one series sits, relative to the series' latest value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SetKind {
    /// The value is below the target: fires when the value rises to the target or above.
    UpArmed,
    /// The value is above the target: fires when the value falls to the target or below.
    DownArmed,
    /// An `up` alert with the value at or above its target: arms once the value is below it again.
    UpWaiting,
    /// A `down` alert with the value at or below its target: arms once the value is above it again.
    DownWaiting,
    /// An `either` alert with the value exactly at its target: arms on whichever side the value leaves to.
    EitherWaiting,
}

/// What one new value does to one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Stay,
    Fire,
    Move(SetKind),
}

/// Where `value` is relative to `target`.
pub(crate) fn side_of(value: Decimal, target: Decimal) -> PriceSide {
    match value.cmp(&target) {
        Ordering::Less => PriceSide::Below,
        Ordering::Equal => PriceSide::At,
        Ordering::Greater => PriceSide::Above,
    }
}

impl SetKind {
    /// The set of an alert moving `direction` when the value is on `side` of its target.
    pub(crate) fn for_side(direction: Direction, side: PriceSide) -> SetKind {
        match (direction, side) {
            (Direction::Up | Direction::Either, PriceSide::Below) => SetKind::UpArmed,
            (Direction::Down | Direction::Either, PriceSide::Above) => SetKind::DownArmed,
            (Direction::Up, PriceSide::At | PriceSide::Above) => SetKind::UpWaiting,
            (Direction::Down, PriceSide::At | PriceSide::Below) => SetKind::DownWaiting,
            (Direction::Either, PriceSide::At) => SetKind::EitherWaiting,
        }
    }

    /// The rule for one alert: what `value` does to an alert with `target` in this set.
    pub(crate) fn on_value(self, target: Decimal, value: Decimal) -> Step {
        match self {
            SetKind::UpArmed if value >= target => Step::Fire,
            SetKind::DownArmed if value <= target => Step::Fire,
            SetKind::UpWaiting if value < target => Step::Move(SetKind::UpArmed),
            SetKind::DownWaiting if value > target => Step::Move(SetKind::DownArmed),
            SetKind::EitherWaiting if value < target => Step::Move(SetKind::UpArmed),
            SetKind::EitherWaiting if value > target => Step::Move(SetKind::DownArmed),
            _ => Step::Stay,
        }
    }
}

/// The alerts of one series. Entries are `(target, slot)` so equal targets stay distinct and ordered.
#[derive(Debug, Default)]
pub(crate) struct Crossings {
    up_armed: BTreeSet<(Decimal, u32)>,
    down_armed: BTreeSet<(Decimal, u32)>,
    up_waiting: BTreeSet<(Decimal, u32)>,
    down_waiting: BTreeSet<(Decimal, u32)>,
    either_waiting: BTreeSet<(Decimal, u32)>,
    /// Alerts due while the series had no value yet (a rolling window not yet covered by ticks); they are
    /// placed, without firing, at the first value.
    unplaced: HashMap<u32, (Decimal, Direction)>,
}

impl Crossings {
    pub(crate) fn len(&self) -> usize {
        self.up_armed.len()
            + self.down_armed.len()
            + self.up_waiting.len()
            + self.down_waiting.len()
            + self.either_waiting.len()
            + self.unplaced.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn set_mut(&mut self, kind: SetKind) -> &mut BTreeSet<(Decimal, u32)> {
        match kind {
            SetKind::UpArmed => &mut self.up_armed,
            SetKind::DownArmed => &mut self.down_armed,
            SetKind::UpWaiting => &mut self.up_waiting,
            SetKind::DownWaiting => &mut self.down_waiting,
            SetKind::EitherWaiting => &mut self.either_waiting,
        }
    }

    pub(crate) fn insert(&mut self, kind: SetKind, target: Decimal, slot: u32) {
        self.set_mut(kind).insert((target, slot));
    }

    pub(crate) fn insert_unplaced(&mut self, target: Decimal, direction: Direction, slot: u32) {
        self.unplaced.insert(slot, (target, direction));
    }

    /// Removes an alert wherever it is. Five lookups rather than a stored set kind, because `advance`
    /// moves alerts between sets without telling anyone, and removal (pause, edit, delete, expiry) is rare.
    pub(crate) fn remove(&mut self, target: Decimal, slot: u32) -> bool {
        let entry = (target, slot);
        self.up_armed.remove(&entry)
            || self.down_armed.remove(&entry)
            || self.up_waiting.remove(&entry)
            || self.down_waiting.remove(&entry)
            || self.either_waiting.remove(&entry)
            || self.unplaced.remove(&slot).is_some()
    }

    /// The series moved to `value`: fires every armed alert whose target it reached (pushing their slots to
    /// `fired`, in target order, and removing them), arms every waiting alert it is back on the arming side
    /// of, and places the unplaced. Alerts armed by this value cannot fire on it: their target is strictly
    /// beyond it.
    pub(crate) fn advance(&mut self, value: Decimal, fired: &mut Vec<u32>) {
        while let Some(&(target, slot)) = self.up_armed.first() {
            if target > value {
                break;
            }
            self.up_armed.pop_first();
            fired.push(slot);
        }
        while let Some(&(target, slot)) = self.down_armed.last() {
            if target < value {
                break;
            }
            self.down_armed.pop_last();
            fired.push(slot);
        }
        while let Some(&entry) = self.up_waiting.last() {
            if entry.0 <= value {
                break;
            }
            self.up_waiting.pop_last();
            self.up_armed.insert(entry);
        }
        while let Some(&entry) = self.down_waiting.first() {
            if entry.0 >= value {
                break;
            }
            self.down_waiting.pop_first();
            self.down_armed.insert(entry);
        }
        while let Some(&entry) = self.either_waiting.first() {
            if entry.0 >= value {
                break;
            }
            self.either_waiting.pop_first();
            self.down_armed.insert(entry);
        }
        while let Some(&entry) = self.either_waiting.last() {
            if entry.0 <= value {
                break;
            }
            self.either_waiting.pop_last();
            self.up_armed.insert(entry);
        }
        if !self.unplaced.is_empty() {
            for (slot, (target, direction)) in std::mem::take(&mut self.unplaced) {
                let kind = SetKind::for_side(direction, side_of(value, target));
                self.insert(kind, target, slot);
            }
        }
    }

    /// The set an alert is in, if placed (tests only: the index never needs to ask).
    #[cfg(test)]
    pub(crate) fn kind_of(&self, target: Decimal, slot: u32) -> Option<SetKind> {
        let entry = (target, slot);
        [
            SetKind::UpArmed,
            SetKind::DownArmed,
            SetKind::UpWaiting,
            SetKind::DownWaiting,
            SetKind::EitherWaiting,
        ]
        .into_iter()
        .find(|kind| match kind {
            SetKind::UpArmed => self.up_armed.contains(&entry),
            SetKind::DownArmed => self.down_armed.contains(&entry),
            SetKind::UpWaiting => self.up_waiting.contains(&entry),
            SetKind::DownWaiting => self.down_waiting.contains(&entry),
            SetKind::EitherWaiting => self.either_waiting.contains(&entry),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(value: i64) -> Decimal {
        Decimal::from(value)
    }

    #[test]
    fn placement_follows_the_side_of_the_value() {
        use Direction::{Down, Either, Up};
        use PriceSide::{Above, At, Below};
        assert_eq!(SetKind::for_side(Up, Below), SetKind::UpArmed);
        assert_eq!(SetKind::for_side(Up, At), SetKind::UpWaiting);
        assert_eq!(SetKind::for_side(Up, Above), SetKind::UpWaiting);
        assert_eq!(SetKind::for_side(Down, Above), SetKind::DownArmed);
        assert_eq!(SetKind::for_side(Down, At), SetKind::DownWaiting);
        assert_eq!(SetKind::for_side(Down, Below), SetKind::DownWaiting);
        assert_eq!(SetKind::for_side(Either, Below), SetKind::UpArmed);
        assert_eq!(SetKind::for_side(Either, Above), SetKind::DownArmed);
        assert_eq!(SetKind::for_side(Either, At), SetKind::EitherWaiting);
    }

    #[test]
    fn a_jump_fires_every_target_it_passes_and_nothing_beyond() {
        let mut crossings = Crossings::default();
        for (slot, target) in [(1, 101), (2, 105), (3, 110), (4, 120)] {
            crossings.insert(SetKind::UpArmed, decimal(target), slot);
        }
        crossings.insert(SetKind::DownArmed, decimal(90), 5);
        let mut fired = Vec::new();
        crossings.advance(decimal(110), &mut fired);
        assert_eq!(fired, [1, 2, 3], "exactly at 110 fires the 110 target");
        fired.clear();
        crossings.advance(decimal(111), &mut fired);
        assert!(fired.is_empty(), "already fired targets are gone");
        crossings.advance(decimal(80), &mut fired);
        assert_eq!(fired, [5]);
        assert_eq!(crossings.len(), 1);
    }

    #[test]
    fn waiting_alerts_arm_only_strictly_on_their_side() {
        let mut crossings = Crossings::default();
        crossings.insert(SetKind::UpWaiting, decimal(100), 1);
        crossings.insert(SetKind::DownWaiting, decimal(100), 2);
        crossings.insert(SetKind::EitherWaiting, decimal(100), 3);
        let mut fired = Vec::new();
        crossings.advance(decimal(100), &mut fired);
        assert_eq!(crossings.kind_of(decimal(100), 1), Some(SetKind::UpWaiting));
        assert_eq!(
            crossings.kind_of(decimal(100), 2),
            Some(SetKind::DownWaiting)
        );
        assert_eq!(
            crossings.kind_of(decimal(100), 3),
            Some(SetKind::EitherWaiting)
        );
        crossings.advance(decimal(99), &mut fired);
        assert!(fired.is_empty(), "arming never fires on the same value");
        assert_eq!(crossings.kind_of(decimal(100), 1), Some(SetKind::UpArmed));
        assert_eq!(
            crossings.kind_of(decimal(100), 2),
            Some(SetKind::DownWaiting)
        );
        assert_eq!(crossings.kind_of(decimal(100), 3), Some(SetKind::UpArmed));
        crossings.advance(decimal(100), &mut fired);
        fired.sort_unstable();
        assert_eq!(fired, [1, 3]);
    }

    #[test]
    fn unplaced_alerts_are_placed_without_firing() {
        let mut crossings = Crossings::default();
        crossings.insert_unplaced(decimal(5), Direction::Up, 1);
        crossings.insert_unplaced(decimal(5), Direction::Up, 2);
        let mut fired = Vec::new();
        crossings.advance(decimal(7), &mut fired);
        assert!(fired.is_empty());
        assert_eq!(crossings.kind_of(decimal(5), 1), Some(SetKind::UpWaiting));
        assert!(crossings.remove(decimal(5), 2));
        assert!(!crossings.remove(decimal(5), 2));
        assert_eq!(crossings.len(), 1);
    }

    /// The ordered passes of `advance` agree with the one-alert rule for random targets and values.
    #[test]
    fn advance_agrees_with_the_single_alert_rule() {
        let mut random = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut crossings = Crossings::default();
            let mut model: Vec<(u32, Decimal, Option<SetKind>)> = Vec::new();
            let start = decimal(random.i64(0..20));
            for slot in 0..30u32 {
                let target = decimal(random.i64(0..20));
                let direction =
                    [Direction::Up, Direction::Down, Direction::Either][random.usize(0..3)];
                let kind = SetKind::for_side(direction, side_of(start, target));
                crossings.insert(kind, target, slot);
                model.push((slot, target, Some(kind)));
            }
            for _ in 0..20 {
                let value = decimal(random.i64(0..20));
                let mut fired = Vec::new();
                crossings.advance(value, &mut fired);
                let mut expected = Vec::new();
                for (slot, target, kind) in &mut model {
                    let Some(current) = *kind else { continue };
                    match current.on_value(*target, value) {
                        Step::Stay => {}
                        Step::Fire => {
                            expected.push(*slot);
                            *kind = None;
                        }
                        Step::Move(next) => *kind = Some(next),
                    }
                }
                fired.sort_unstable();
                assert_eq!(fired, expected);
                for (slot, target, kind) in &model {
                    assert_eq!(crossings.kind_of(*target, *slot), *kind);
                }
            }
        }
    }
}
