//! Rolling-window reference prices computed from the tick stream itself: per market and window, the closing
//! price of fixed time buckets, so "the price one window ago" costs O(1) amortised per tick and memory
//! stays bounded by the window length over its resolution.
//!
//! The price at the start of a window ending at `t` is the last trade price of the bucket that contains
//! `t − window` (or of the latest earlier bucket with a trade): exact to one resolution step, which is
//! 1 s for the 5-minute window, 10 s for the hour and 60 s for the day. Buckets are keyed by the exchange's
//! trade time, so both sites compute the same value from the same ticks.

use std::collections::VecDeque;

use jiff::Timestamp;
use proto_events::events::ChangeBasis;
use rust_decimal::Decimal;

/// The rolling bases, in the order of [`crate::index`]'s per-market windows.
pub const ROLLING_BASES: [ChangeBasis; 3] = [
    ChangeBasis::Rolling5Minutes,
    ChangeBasis::Rolling1Hour,
    ChangeBasis::Rolling24Hours,
];

/// The position of a rolling basis in [`ROLLING_BASES`]; `None` for the exchange's daily basis.
pub(crate) fn rolling_position(basis: ChangeBasis) -> Option<usize> {
    ROLLING_BASES.iter().position(|rolling| *rolling == basis)
}

/// One window of one market.
#[derive(Debug, Clone)]
pub(crate) struct RollingWindow {
    length_seconds: i64,
    resolution_seconds: i64,
    /// `(bucket number, last price in it)`, oldest first; one bucket older than the window is kept as the
    /// window's start.
    buckets: VecDeque<(i64, Decimal)>,
}

impl RollingWindow {
    pub(crate) fn for_basis(basis: ChangeBasis) -> RollingWindow {
        let (length_seconds, resolution_seconds) = match basis {
            ChangeBasis::Rolling5Minutes => (300, 1),
            ChangeBasis::Rolling1Hour => (3_600, 10),
            // The daily basis has no window; a day of minutes keeps the type total.
            ChangeBasis::Rolling24Hours | ChangeBasis::Daily => (86_400, 60),
        };
        RollingWindow {
            length_seconds,
            resolution_seconds,
            buckets: VecDeque::new(),
        }
    }

    /// Records a trade at `at` and returns the price at the start of the window ending then, or `None`
    /// while the recorded history is shorter than the window.
    pub(crate) fn record(&mut self, at: Timestamp, price: Decimal) -> Option<Decimal> {
        let second = at.as_second();
        let bucket = second.div_euclid(self.resolution_seconds);
        match self.buckets.back_mut() {
            // A trade stamped earlier than the latest bucket (exchange clocks are not strictly monotonic
            // across trades) is still the latest price: it closes the latest bucket.
            Some((last, close)) if *last >= bucket => *close = price,
            _ => self.buckets.push_back((bucket, price)),
        }
        let start_bucket = (second - self.length_seconds).div_euclid(self.resolution_seconds);
        while self
            .buckets
            .get(1)
            .is_some_and(|(next, _)| *next <= start_bucket)
        {
            self.buckets.pop_front();
        }
        match self.buckets.front() {
            Some((first, close)) if *first <= start_bucket => Some(*close),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    #[test]
    fn the_start_price_is_the_close_one_window_ago() {
        let mut window = RollingWindow::for_basis(ChangeBasis::Rolling5Minutes);
        assert_eq!(window.record(at(0), Decimal::from(100)), None);
        assert_eq!(window.record(at(0), Decimal::from(101)), None);
        assert_eq!(window.record(at(120), Decimal::from(110)), None);
        assert_eq!(
            window.record(at(300), Decimal::from(120)),
            Some(Decimal::from(101)),
            "the close of second 0"
        );
        assert_eq!(
            window.record(at(419), Decimal::from(125)),
            Some(Decimal::from(101)),
            "no trade between 0 and 119: the price carried forward"
        );
        assert_eq!(
            window.record(at(420), Decimal::from(130)),
            Some(Decimal::from(110))
        );
    }

    #[test]
    fn memory_stays_bounded_by_the_window() {
        let mut window = RollingWindow::for_basis(ChangeBasis::Rolling5Minutes);
        for second in 0..10_000 {
            window.record(at(second), Decimal::from(second));
        }
        assert!(window.bucket_count() <= 302, "{}", window.bucket_count());
        let mut day = RollingWindow::for_basis(ChangeBasis::Rolling24Hours);
        for minute in 0..5_000 {
            day.record(at(minute * 60), Decimal::ONE);
        }
        assert!(day.bucket_count() <= 1_442, "{}", day.bucket_count());
    }

    #[test]
    fn an_earlier_stamped_trade_updates_the_latest_close() {
        let mut window = RollingWindow::for_basis(ChangeBasis::Rolling5Minutes);
        window.record(at(0), Decimal::from(1));
        window.record(at(10), Decimal::from(2));
        window.record(at(9), Decimal::from(3));
        assert_eq!(
            window.record(at(310), Decimal::from(4)),
            Some(Decimal::from(3))
        );
    }
}
