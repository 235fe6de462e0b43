//! When scheduled alerts fire: the next occurrence of a set of weekdays and dates at a wall-clock time in
//! the alert's time zone, correct across daylight-saving changes.
//!
//! * A wall time that does not exist that day (clocks spring forward over it, e.g. 02:30 on the day New
//!   York moves from 02:00 EST to 03:00 EDT) fires at the first instant after the gap: 03:00.
//! * A wall time that happens twice (clocks fall back over it, e.g. 01:30 on the day New York moves from
//!   02:00 EDT back to 01:00 EST) fires once, at the first of the two instants.
//! * Occurrences are instants in whole seconds, which is what trigger ids are keyed by, so both sites
//!   compute the same occurrence and the same trigger id.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use proto_events::domain::Weekday;
use proto_events::events::ScheduledCondition;

/// The instant `time` on `date` in `zone` stands for, by the rules above; `None` only outside jiff's range.
pub fn occurrence_on(date: Date, time: Time, zone: &TimeZone) -> Option<Timestamp> {
    let civil = date.to_datetime(time);
    match zone.to_ambiguous_timestamp(civil).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(civil).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(civil).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the offset after the gap, a time inside the gap lands before the transition
            // (02:30 at -04:00 is 01:30 EST); the transition that follows is where the gap ends.
            let before_the_transition = after.to_timestamp(civil).ok()?;
            zone.following(before_the_transition)
                .next()
                .map(|transition| transition.timestamp())
        }
    }
}

/// The first occurrence strictly after `after`, or `None` when the schedule has no weekday and all its
/// dates are past.
pub fn next_occurrence(
    condition: &ScheduledCondition,
    zone: &TimeZone,
    after: Timestamp,
) -> Option<Timestamp> {
    let time = condition.time_of_day();
    // From the day before, because the local date of `after` and of an occurrence can differ by a day
    // around midnight and DST changes.
    let first_day = after.to_zoned(zone.clone()).date().yesterday().ok()?;
    let mut best: Option<Timestamp> = None;
    if !condition.weekdays().is_empty() {
        let mut day = first_day;
        // Nine days cover a whole week from the day before, plus one for a gap pushing past midnight.
        for _ in 0..9 {
            if condition.weekdays().contains(&Weekday::from(day.weekday()))
                && let Some(instant) = occurrence_on(day, time, zone)
                && instant > after
            {
                best = Some(instant);
                break;
            }
            day = day.tomorrow().ok()?;
        }
    }
    let dates = condition.dates();
    let start = dates.partition_point(|date| *date < first_day);
    for date in &dates[start..] {
        if let Some(instant) = occurrence_on(*date, time, zone)
            && instant > after
        {
            // Later dates give later instants: one hour of DST never reorders whole days.
            if best.is_none_or(|weekday_instant| instant < weekday_instant) {
                best = Some(instant);
            }
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use jiff::civil::{date, time};
    use proto_events::domain::{MarketCode, TimeZoneName};

    use super::*;

    fn schedule(weekdays: &[Weekday], dates: &[Date], at: Time, zone: &str) -> ScheduledCondition {
        ScheduledCondition::new(
            vec![MarketCode::parse("KRW-BTC").unwrap()],
            weekdays.to_vec(),
            dates.to_vec(),
            at,
            TimeZoneName::parse(zone).unwrap(),
        )
        .unwrap()
    }

    fn instant(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn weekdays_in_seoul() {
        let condition = schedule(
            &[Weekday::Mon, Weekday::Fri],
            &[],
            time(9, 0, 0, 0),
            "Asia/Seoul",
        );
        let seoul = zone("Asia/Seoul");
        // 2026-11-02 is a Monday; 09:00 KST is 00:00 UTC.
        assert_eq!(
            next_occurrence(&condition, &seoul, instant("2026-11-01T12:00:00Z")),
            Some(instant("2026-11-02T00:00:00Z"))
        );
        assert_eq!(
            next_occurrence(&condition, &seoul, instant("2026-11-02T00:00:00Z")),
            Some(instant("2026-11-06T00:00:00Z")),
            "strictly after: the occurrence itself is not next"
        );
        assert_eq!(
            next_occurrence(&condition, &seoul, instant("2026-11-06T00:00:01Z")),
            Some(instant("2026-11-09T00:00:00Z"))
        );
    }

    #[test]
    fn dates_and_weekdays_together_take_the_earliest_and_dates_run_out() {
        let condition = schedule(
            &[Weekday::Sun],
            &[date(2026, 11, 3), date(2026, 12, 25)],
            time(18, 30, 0, 0),
            "UTC",
        );
        let utc = zone("UTC");
        assert_eq!(
            next_occurrence(&condition, &utc, instant("2026-11-02T00:00:00Z")),
            Some(instant("2026-11-03T18:30:00Z"))
        );
        assert_eq!(
            next_occurrence(&condition, &utc, instant("2026-11-03T18:30:00Z")),
            Some(instant("2026-11-08T18:30:00Z")),
            "the next Sunday"
        );
        let dates_only = schedule(&[], &[date(2026, 11, 3)], time(18, 30, 0, 0), "UTC");
        assert_eq!(
            next_occurrence(&dates_only, &utc, instant("2026-11-03T18:30:00Z")),
            None
        );
    }

    #[test]
    fn a_time_skipped_by_spring_forward_fires_when_the_gap_ends() {
        let new_york = zone("America/New_York");
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
        assert_eq!(
            occurrence_on(date(2026, 3, 8), time(2, 30, 0, 0), &new_york),
            Some(instant("2026-03-08T07:00:00Z")),
            "03:00 EDT"
        );
        let condition = schedule(&[Weekday::Sun], &[], time(2, 30, 0, 0), "America/New_York");
        assert_eq!(
            next_occurrence(&condition, &new_york, instant("2026-03-07T00:00:00Z")),
            Some(instant("2026-03-08T07:00:00Z"))
        );
        assert_eq!(
            next_occurrence(&condition, &new_york, instant("2026-03-08T07:00:00Z")),
            Some(instant("2026-03-15T06:30:00Z")),
            "the week after is a normal 02:30 EDT"
        );
    }

    #[test]
    fn a_time_repeated_by_fall_back_fires_once_at_the_first() {
        let new_york = zone("America/New_York");
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens at 05:30Z and at 06:30Z.
        let condition = schedule(&[Weekday::Sun], &[], time(1, 30, 0, 0), "America/New_York");
        let first = next_occurrence(&condition, &new_york, instant("2026-10-31T12:00:00Z"));
        assert_eq!(first, Some(instant("2026-11-01T05:30:00Z")));
        assert_eq!(
            next_occurrence(&condition, &new_york, first.unwrap()),
            Some(instant("2026-11-08T06:30:00Z")),
            "not again at 06:30Z the same night"
        );
    }

    #[test]
    fn seoul_summer_time_of_1988_is_handled_too() {
        // Korea observed DST in 1987-88: on 1988-05-08 02:00 KST jumped to 03:00 KDT.
        let seoul = zone("Asia/Seoul");
        assert_eq!(
            occurrence_on(date(1988, 5, 8), time(2, 30, 0, 0), &seoul),
            Some(instant("1988-05-07T17:00:00Z")),
            "03:00 KDT (+10)"
        );
    }
}
