//! What one tick means to one alert: the values a tick gives each series, how a crossing alert is compiled
//! onto a series, and the single-alert state machine. The index does the same for all alerts at once with
//! ordered sets; this one-alert form replays the recent ticks of a market for an alert event that arrived
//! after ticks it should have seen, and is the reference the index is tested against.

use jiff::{SignedDuration, Timestamp};
use proto_events::domain::{Percent, Price, Rate};
use proto_events::events::{AlertCondition, ChangeBasis, Direction, PriceSide, RepeatPolicy};
use rust_decimal::Decimal;

use crate::crossing::{SetKind, Step, side_of};
use crate::window::rolling_position;

/// Decimal places of computed rolling changes, in percent (0.0001 %). Rounded once, where computed, so
/// the value compared with the threshold is the value reported in the trigger.
pub const CHANGE_DECIMALS: u32 = 4;

/// The value series an alert watches in its market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Series {
    /// The last trade price.
    Price,
    /// The signed change in percent over a basis (`up` and `down` change alerts).
    Change(ChangeBasis),
    /// The size of the change in percent over a basis (`either` change alerts).
    AbsoluteChange(ChangeBasis),
}

/// How many series one market has: the price, then signed and absolute change for each of four bases.
pub(crate) const SERIES_COUNT: usize = 9;

const BASES: [ChangeBasis; 4] = [
    ChangeBasis::Daily,
    ChangeBasis::Rolling5Minutes,
    ChangeBasis::Rolling1Hour,
    ChangeBasis::Rolling24Hours,
];

impl Series {
    pub(crate) fn position(self) -> usize {
        let basis_position = |basis: ChangeBasis| {
            BASES
                .iter()
                .position(|known| *known == basis)
                .unwrap_or_default()
        };
        match self {
            Series::Price => 0,
            Series::Change(basis) => 1 + basis_position(basis),
            Series::AbsoluteChange(basis) => 5 + basis_position(basis),
        }
    }

    pub(crate) fn at_position(position: usize) -> Series {
        match position {
            0 => Series::Price,
            1..=4 => Series::Change(BASES[position - 1]),
            _ => Series::AbsoluteChange(BASES[(position - 5).min(3)]),
        }
    }
}

/// A crossing alert compiled onto its series: fire when the series reaches `target` moving `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracked {
    pub series: Series,
    pub target: Decimal,
    pub direction: Direction,
}

impl Tracked {
    /// Target price alerts watch the price; change alerts watch the signed change (`up` at +threshold,
    /// `down` at -threshold) or, for `either`, its size at the threshold. `None` for scheduled alerts.
    pub(crate) fn of(condition: &AlertCondition) -> Option<Tracked> {
        match condition {
            AlertCondition::TargetPrice(target) => Some(Tracked {
                series: Series::Price,
                target: target.target.value(),
                direction: target.direction,
            }),
            AlertCondition::ChangeRate(change) => {
                let threshold = change.threshold.value();
                Some(match change.direction {
                    Direction::Up => Tracked {
                        series: Series::Change(change.basis),
                        target: threshold,
                        direction: Direction::Up,
                    },
                    Direction::Down => Tracked {
                        series: Series::Change(change.basis),
                        target: -threshold,
                        direction: Direction::Down,
                    },
                    Direction::Either => Tracked {
                        series: Series::AbsoluteChange(change.basis),
                        target: threshold,
                        direction: Direction::Up,
                    },
                })
            }
            AlertCondition::Scheduled(_) => None,
        }
    }
}

/// How an alert that becomes due is placed at the first tick at or after its due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// As if the previous value had been on this side: a target price alert just created or edited, with
    /// the side the API saw the price on.
    Given(PriceSide),
    /// By the series' value before that tick: change alerts, resumed alerts, re-arms after a cooldown.
    PreviousValue,
}

/// One processed tick, reduced to what the series need. Kept per market for a short while so late alert
/// events can be replayed against the ticks they missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TickValues {
    pub sequential_id: u64,
    pub at: Timestamp,
    pub price: Price,
    pub daily_rate: Rate,
    /// The price at the start of each rolling window (`ROLLING_BASES` order), when history covers it.
    pub window_starts: [Option<Decimal>; 3],
    /// The tick's sequence in the stream it was read from.
    pub stream_sequence: u64,
}

impl TickValues {
    /// The change in percent over `basis` at this tick; `None` for a rolling window not yet covered.
    pub(crate) fn change(&self, basis: ChangeBasis) -> Option<Decimal> {
        match rolling_position(basis) {
            None => Some(self.daily_rate.to_percent().value()),
            Some(position) => {
                let start = self.window_starts[position]?;
                let price = self.price.value();
                let change = price
                    .checked_sub(start)?
                    .checked_mul(Decimal::ONE_HUNDRED)?
                    .checked_div(start)?;
                Some(change.round_dp(CHANGE_DECIMALS))
            }
        }
    }

    pub(crate) fn series_value(&self, series: Series) -> Option<Decimal> {
        match series {
            Series::Price => Some(self.price.value()),
            Series::Change(basis) => self.change(basis),
            Series::AbsoluteChange(basis) => self.change(basis).map(|change| change.abs()),
        }
    }

    /// The change as carried in a trigger: within [`Percent`]'s range (a rise beyond 10000 % is reported
    /// as 10000 %; a fall cannot pass -100 %).
    pub(crate) fn change_percent(&self, basis: ChangeBasis) -> Option<Percent> {
        let change = self.change(basis)?;
        Percent::new(change.min(Decimal::from(10_000))).ok()
    }
}

/// Where one alert stands, in the index's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not evaluated until the first tick at or after `due`.
    Deferred { due: Timestamp, entry: Entry },
    /// In one set of its series.
    In(SetKind),
    /// Due, but its series had no value yet.
    Unplaced,
    /// A `once` alert that fired.
    Spent,
    /// Past `expires_at`.
    Expired,
}

/// Where a fired alert goes: spent, or back after its cooldown, placed by the value then.
pub(crate) fn after_firing(repeat: RepeatPolicy, fired_at: Timestamp) -> Phase {
    match repeat {
        RepeatPolicy::Once => Phase::Spent,
        RepeatPolicy::Repeat { cooldown_seconds } => Phase::Deferred {
            due: add_seconds(fired_at, i64::from(cooldown_seconds.get())),
            entry: Entry::PreviousValue,
        },
    }
}

/// `at + seconds`, saturating at the end of time.
pub(crate) fn add_seconds(at: Timestamp, seconds: i64) -> Timestamp {
    at.checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::MAX)
}

/// Places a due alert: by its given side, or by the series' value before the tick.
pub(crate) fn place(tracked: &Tracked, entry: Entry, previous_value: Option<Decimal>) -> Phase {
    match entry {
        Entry::Given(side) => Phase::In(SetKind::for_side(tracked.direction, side)),
        Entry::PreviousValue => match previous_value {
            Some(value) => Phase::In(SetKind::for_side(
                tracked.direction,
                side_of(value, tracked.target),
            )),
            None => Phase::Unplaced,
        },
    }
}

/// One crossing alert on its own, stepping through ticks of its market.
#[derive(Debug, Clone)]
pub(crate) struct SingleAlert {
    pub tracked: Tracked,
    pub repeat: RepeatPolicy,
    pub expires_at: Option<Timestamp>,
    pub phase: Phase,
}

impl SingleAlert {
    /// Steps through one tick (`previous` is the market's tick before it, if known); true if it fired.
    /// Same order as the index: expiry, then a due alert is placed, then the new value fires or arms.
    pub(crate) fn step(&mut self, previous: Option<&TickValues>, tick: &TickValues) -> bool {
        if matches!(self.phase, Phase::Spent | Phase::Expired) {
            return false;
        }
        if self
            .expires_at
            .is_some_and(|expires_at| expires_at < tick.at)
        {
            self.phase = Phase::Expired;
            return false;
        }
        if let Phase::Deferred { due, entry } = self.phase
            && due <= tick.at
        {
            let previous_value =
                previous.and_then(|values| values.series_value(self.tracked.series));
            self.phase = place(&self.tracked, entry, previous_value);
        }
        let Some(value) = tick.series_value(self.tracked.series) else {
            return false;
        };
        match self.phase {
            Phase::In(kind) => match kind.on_value(self.tracked.target, value) {
                Step::Stay => false,
                Step::Move(next) => {
                    self.phase = Phase::In(next);
                    false
                }
                Step::Fire => {
                    self.phase = after_firing(self.repeat, tick.at);
                    true
                }
            },
            Phase::Unplaced => {
                self.phase = Phase::In(SetKind::for_side(
                    self.tracked.direction,
                    side_of(value, self.tracked.target),
                ));
                false
            }
            Phase::Deferred { .. } | Phase::Spent | Phase::Expired => false,
        }
    }
}

/// Every basis a change alert can use.
#[cfg(test)]
pub(crate) fn all_bases() -> [ChangeBasis; 4] {
    BASES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_positions_round_trip() {
        for position in 0..SERIES_COUNT {
            assert_eq!(Series::at_position(position).position(), position);
        }
        for basis in all_bases() {
            assert_ne!(
                Series::Change(basis).position(),
                Series::AbsoluteChange(basis).position()
            );
        }
    }

    #[test]
    fn rolling_change_is_relative_to_the_window_start_and_rounded() {
        let values = TickValues {
            sequential_id: 1,
            at: Timestamp::UNIX_EPOCH,
            price: Price::new(Decimal::from(103)).unwrap(),
            daily_rate: Rate::new(Decimal::new(-125, 4)).unwrap(),
            window_starts: [Some(Decimal::from(100)), Some(Decimal::from(300)), None],
            stream_sequence: 1,
        };
        assert_eq!(
            values.change(ChangeBasis::Daily),
            Some(Decimal::new(-125, 2))
        );
        assert_eq!(
            values.change(ChangeBasis::Rolling5Minutes),
            Some(Decimal::from(3))
        );
        assert_eq!(
            values.change(ChangeBasis::Rolling1Hour),
            Some(Decimal::new(-656667, 4)),
            "-65.666…% rounded to 4 places"
        );
        assert_eq!(values.change(ChangeBasis::Rolling24Hours), None);
        assert_eq!(
            values.series_value(Series::AbsoluteChange(ChangeBasis::Daily)),
            Some(Decimal::new(125, 2))
        );
    }
}
