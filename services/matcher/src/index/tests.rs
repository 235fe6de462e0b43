//! The index's semantics, one behaviour per test, then the index held to the one-alert reference model and
//! to its own results under any arrival order of alert events and ticks.

use std::num::NonZeroU32;

use jiff::civil::{Date, Time};
use pretty_assertions::assert_eq;
use proto_events::domain::{Price, ThresholdPercent, TimeZoneName, Weekday};
use proto_events::events::{
    AlertDeleted, AlertPaused, AlertResumed, AlertUpdated, ChangeBasis, ChangeRateCondition,
    Direction, PriceSide, ScheduledCondition, TargetPriceCondition,
};
use rust_decimal::Decimal;
use serde_json::json;

use super::*;
use crate::model::{Phase, SingleAlert, TickValues, Tracked};

const EPOCH: i64 = 1_800_000_000;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(EPOCH + second).unwrap()
}

fn decimal(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn price(text: &str) -> Price {
    Price::parse(text).unwrap()
}

fn btc() -> MarketCode {
    MarketCode::parse("KRW-BTC").unwrap()
}

/// Built from JSON so that fields added to the contract later do not break these tests.
fn tick_with_rate(sequential_id: u64, second: i64, trade_price: &str, rate: &str) -> TickObserved {
    serde_json::from_value(json!({
        "exchange": "upbit",
        "market": "KRW-BTC",
        "trade_price": trade_price,
        "signed_change_rate": rate,
        "signed_change_price": "0",
        "trade_timestamp": at(second),
        "sequential_id": sequential_id,
        "stream_type": "realtime",
    }))
    .unwrap()
}

fn alert_id(name: &str) -> AlertId {
    AlertId::parse(name).unwrap()
}

fn spec(condition: AlertCondition, repeat: RepeatPolicy) -> AlertSpec {
    AlertSpec {
        exchange: Exchange::upbit(),
        condition,
        repeat,
        expires_at: None,
    }
}

fn target(target: &str, direction: Direction, side_at_creation: PriceSide) -> AlertCondition {
    AlertCondition::TargetPrice(TargetPriceCondition {
        market: btc(),
        target: price(target),
        direction,
        side_at_creation,
        reference_price: None,
    })
}

fn change(basis: ChangeBasis, direction: Direction, threshold: &str) -> AlertCondition {
    AlertCondition::ChangeRate(ChangeRateCondition {
        market: btc(),
        basis,
        direction,
        threshold: ThresholdPercent::parse(threshold).unwrap(),
    })
}

fn scheduled(weekdays: &[Weekday], dates: &[Date], time: Time, zone: &str) -> AlertCondition {
    AlertCondition::Scheduled(
        ScheduledCondition::new(
            vec![btc()],
            weekdays.to_vec(),
            dates.to_vec(),
            time,
            TimeZoneName::parse(zone).unwrap(),
        )
        .unwrap(),
    )
}

fn repeat(seconds: u32) -> RepeatPolicy {
    RepeatPolicy::Repeat {
        cooldown_seconds: NonZeroU32::new(seconds).unwrap(),
    }
}

fn created(name: &str, spec: AlertSpec) -> AlertCreated {
    AlertCreated {
        alert_id: alert_id(name),
        user_id: UserId::parse("u1").unwrap(),
        home_site: Site::Onprem,
        spec,
    }
}

/// An index and what it fired, with stream sequences counted like an aggregate would.
struct Harness {
    index: AlertIndex,
    fired: Vec<TriggerFired>,
    stream_sequence: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(IndexSettings::default())
    }

    fn with(settings: IndexSettings) -> Harness {
        Harness {
            index: AlertIndex::new(settings),
            fired: Vec::new(),
            stream_sequence: 0,
        }
    }

    fn create(&mut self, name: &str, spec: AlertSpec, second: i64) -> Vec<String> {
        self.event(Event::AlertCreated(created(name, spec)), second)
    }

    fn event(&mut self, event: Event, second: i64) -> Vec<String> {
        let mut out = Vec::new();
        let applied = self
            .index
            .apply(&event, at(second), Site::Onprem, at(second), &mut out);
        assert_eq!(applied, Applied::Changed, "{event:?}");
        self.keep(out)
    }

    fn tick(&mut self, sequential_id: u64, second: i64, trade_price: &str) -> Vec<String> {
        self.tick_rate(sequential_id, second, trade_price, "0")
    }

    fn tick_rate(
        &mut self,
        sequential_id: u64,
        second: i64,
        trade_price: &str,
        rate: &str,
    ) -> Vec<String> {
        self.stream_sequence += 1;
        let mut out = Vec::new();
        let tick = tick_with_rate(sequential_id, second, trade_price, rate);
        self.index
            .on_tick(&tick, self.stream_sequence, at(second), &mut out);
        self.keep(out)
    }

    fn due(&mut self, now: i64, grace_seconds: i64) -> (Vec<String>, DueOutcome) {
        let mut out = Vec::new();
        let outcome = self.index.fire_due(
            at(now),
            SignedDuration::from_secs(grace_seconds),
            at(now),
            &mut out,
        );
        (self.keep(out), outcome)
    }

    fn keep(&mut self, out: Vec<TriggerFired>) -> Vec<String> {
        let ids = out
            .iter()
            .map(|trigger| trigger.trigger_id.as_str().to_owned())
            .collect();
        self.fired.extend(out);
        ids
    }
}

fn id(name: &str, version: u64, firing: u64) -> String {
    format!("trg:{name}:g{}", generation(version, firing))
}

#[test]
fn an_up_alert_fires_when_the_price_reaches_the_target() {
    let mut harness = Harness::new();
    harness.create(
        "a1",
        spec(
            target("100", Direction::Up, PriceSide::Below),
            RepeatPolicy::Once,
        ),
        0,
    );
    assert!(harness.tick(1, 1, "90").is_empty());
    assert!(harness.tick(2, 2, "99.99").is_empty());
    assert_eq!(
        harness.tick(3, 3, "100"),
        [id("a1", 1, 1)],
        "exactly at target"
    );
    let trigger = &harness.fired[0];
    assert_eq!(trigger.trigger_id.as_str(), "trg:a1:g1000000001");
    assert_eq!(
        trigger.firing,
        Firing::Armed {
            generation: 1_000_000_001
        }
    );
    assert_eq!(trigger.kind, AlertKind::TargetPrice);
    assert_eq!(trigger.alert_version, 1);
    assert_eq!(trigger.observed.len(), 1);
    assert_eq!(trigger.observed[0].price, price("100"));
    assert_eq!(trigger.observed[0].change, None);
    let tick = trigger.observed[0].tick.as_ref().unwrap();
    assert_eq!(tick.tick_id.as_str(), "tick:upbit:KRW-BTC:3");
    assert_eq!(tick.sequence, 3);
    assert_eq!(tick.stream.as_str(), "TICKS");
    assert_eq!(tick.site, Site::Onprem);
    assert!(harness.tick(4, 4, "80").is_empty());
    assert!(harness.tick(5, 5, "120").is_empty(), "once: spent");
    assert_eq!(harness.index.sizes().inactive, 1);
}

#[test]
fn a_down_alert_fires_when_the_price_falls_to_or_through_the_target() {
    let mut harness = Harness::new();
    harness.create(
        "d1",
        spec(
            target("100", Direction::Down, PriceSide::Above),
            RepeatPolicy::Once,
        ),
        0,
    );
    assert!(harness.tick(1, 1, "101").is_empty());
    assert_eq!(harness.tick(2, 2, "99.5"), [id("d1", 1, 1)]);
}

#[test]
fn a_gap_fires_every_target_it_jumps_over_and_no_other() {
    let mut harness = Harness::new();
    for (name, level) in [
        ("t101", "101"),
        ("t105", "105"),
        ("t110", "110"),
        ("t120", "120"),
    ] {
        harness.create(
            name,
            spec(
                target(level, Direction::Up, PriceSide::Below),
                RepeatPolicy::Once,
            ),
            0,
        );
    }
    harness.create(
        "below",
        spec(
            target("90", Direction::Down, PriceSide::Above),
            RepeatPolicy::Once,
        ),
        0,
    );
    harness.tick(1, 1, "100");
    let mut fired = harness.tick(2, 2, "112");
    fired.sort();
    assert_eq!(
        fired,
        [id("t101", 1, 1), id("t105", 1, 1), id("t110", 1, 1)]
    );
    assert_eq!(harness.tick(3, 3, "85"), [id("below", 1, 1)]);
    assert_eq!(harness.index.sizes().target_price, 1, "only t120 is left");
}

#[test]
fn either_fires_crossing_from_whichever_side() {
    let mut harness = Harness::new();
    harness.create(
        "e1",
        spec(
            target("100", Direction::Either, PriceSide::Above),
            repeat(10),
        ),
        0,
    );
    assert_eq!(harness.tick(1, 1, "100"), [id("e1", 1, 1)]);
    assert!(
        harness.tick(2, 20, "100").is_empty(),
        "at the target: waits"
    );
    assert!(harness.tick(3, 21, "97").is_empty(), "left below: armed up");
    assert_eq!(harness.tick(4, 22, "103"), [id("e1", 1, 2)]);
}

#[test]
fn a_target_already_passed_at_creation_waits_for_the_price_to_come_back_and_cross_again() {
    let mut harness = Harness::new();
    // The API saw 105 when the user asked for "up to 100": already passed.
    harness.create(
        "late",
        spec(
            target("100", Direction::Up, PriceSide::Above),
            RepeatPolicy::Once,
        ),
        0,
    );
    // And one created exactly at the target.
    harness.create(
        "at",
        spec(
            target("100", Direction::Up, PriceSide::At),
            RepeatPolicy::Once,
        ),
        0,
    );
    assert!(
        harness.tick(1, 1, "106").is_empty(),
        "stale price above target"
    );
    assert!(harness.tick(2, 2, "100").is_empty(), "still not from below");
    assert!(harness.tick(3, 3, "99").is_empty(), "back below: armed");
    let mut fired = harness.tick(4, 4, "101");
    fired.sort();
    assert_eq!(fired, [id("at", 1, 1), id("late", 1, 1)]);
}

#[test]
fn a_target_created_below_fires_on_the_first_tick_at_or_above_it() {
    // The API saw 95 and the price jumped before the first tick after creation: that is a real crossing.
    let mut harness = Harness::new();
    harness.tick(1, -10, "120");
    harness.create(
        "b1",
        spec(
            target("100", Direction::Up, PriceSide::Below),
            RepeatPolicy::Once,
        ),
        0,
    );
    assert_eq!(harness.tick(2, 1, "121"), [id("b1", 1, 1)]);
}

#[test]
fn ticks_stamped_before_the_alert_event_are_not_evaluated_against_it() {
    let mut harness = Harness::new();
    harness.create(
        "g1",
        spec(
            target("100", Direction::Up, PriceSide::Below),
            RepeatPolicy::Once,
        ),
        100,
    );
    assert!(
        harness.tick(1, 99, "150").is_empty(),
        "traded before the alert existed"
    );
    assert_eq!(harness.tick(2, 100, "151"), [id("g1", 1, 1)]);
}

#[test]
fn repeat_re_arms_after_the_cooldown_from_the_side_of_the_price_then() {
    let mut harness = Harness::new();
    harness.create(
        "r1",
        spec(target("100", Direction::Up, PriceSide::Below), repeat(60)),
        0,
    );
    assert_eq!(harness.tick(1, 10, "101"), [id("r1", 1, 1)]);
    assert!(harness.tick(2, 20, "95").is_empty());
    assert!(
        harness.tick(3, 30, "105").is_empty(),
        "a crossing inside the cooldown does not fire"
    );
    // The cooldown ends at 70; at the first tick after it the alert enters by the price before that
    // tick (105: above, so it waits for the price to go below first).
    assert!(harness.tick(4, 71, "106").is_empty());
    assert!(harness.tick(5, 72, "99").is_empty());
    assert_eq!(harness.tick(6, 73, "100"), [id("r1", 1, 2)]);
    // Re-armed from below at the cooldown's end: fires on that very tick.
    assert!(harness.tick(7, 80, "90").is_empty());
    assert_eq!(harness.tick(8, 133, "100.5"), [id("r1", 1, 3)]);
}

#[test]
fn pause_stops_firing_and_resume_re_arms_from_the_current_side() {
    let mut harness = Harness::new();
    harness.create(
        "p1",
        spec(target("100", Direction::Up, PriceSide::Below), repeat(1)),
        0,
    );
    harness.tick(1, 1, "90");
    harness.event(
        Event::AlertPaused(AlertPaused {
            alert_id: alert_id("p1"),
            user_id: UserId::parse("u1").unwrap(),
            version: 2,
        }),
        2,
    );
    assert!(harness.tick(2, 3, "110").is_empty(), "paused");
    assert_eq!(harness.index.sizes().inactive, 1);
    harness.event(
        Event::AlertResumed(AlertResumed {
            alert_id: alert_id("p1"),
            user_id: UserId::parse("u1").unwrap(),
            version: 3,
        }),
        4,
    );
    assert!(
        harness.tick(3, 5, "111").is_empty(),
        "resumed above the target: waits for the price to come back"
    );
    harness.tick(4, 6, "99");
    assert_eq!(
        harness.tick(5, 7, "100"),
        [id("p1", 3, 1)],
        "generations restart under the resume's version"
    );
}

#[test]
fn an_update_re_enters_with_the_new_definition_and_a_new_generation() {
    let mut harness = Harness::new();
    harness.create(
        "u1",
        spec(
            target("100", Direction::Up, PriceSide::Below),
            RepeatPolicy::Once,
        ),
        0,
    );
    assert_eq!(harness.tick(1, 1, "100"), [id("u1", 1, 1)]);
    harness.event(
        Event::AlertUpdated(AlertUpdated {
            alert_id: alert_id("u1"),
            user_id: UserId::parse("u1").unwrap(),
            version: 2,
            spec: spec(
                target("90", Direction::Down, PriceSide::Above),
                RepeatPolicy::Once,
            ),
        }),
        2,
    );
    assert!(harness.tick(2, 3, "95").is_empty());
    assert_eq!(
        harness.tick(3, 4, "90"),
        [id("u1", 2, 1)],
        "a spent once alert is armed again by an edit"
    );
    assert_eq!(harness.fired[1].alert_version, 2);
}

#[test]
fn stale_and_duplicate_alert_events_are_ignored() {
    let mut harness = Harness::new();
    let definition = spec(
        target("100", Direction::Up, PriceSide::Below),
        RepeatPolicy::Once,
    );
    harness.create("s1", definition.clone(), 0);
    let mut out = Vec::new();
    assert_eq!(
        harness.index.apply(
            &Event::AlertCreated(created("s1", definition)),
            at(0),
            Site::Onprem,
            at(0),
            &mut out
        ),
        Applied::Stale
    );
    let paused = Event::AlertPaused(AlertPaused {
        alert_id: alert_id("nobody"),
        user_id: UserId::parse("u1").unwrap(),
        version: 2,
    });
    assert_eq!(
        harness
            .index
            .apply(&paused, at(1), Site::Onprem, at(1), &mut out),
        Applied::UnknownAlert
    );
}

#[test]
fn deleted_alerts_leave_the_index_for_good() {
    let mut harness = Harness::new();
    harness.create(
        "x1",
        spec(
            target("100", Direction::Up, PriceSide::Below),
            RepeatPolicy::Once,
        ),
        0,
    );
    harness.event(
        Event::AlertDeleted(AlertDeleted {
            alert_id: alert_id("x1"),
            user_id: UserId::parse("u1").unwrap(),
            version: 2,
        }),
        1,
    );
    assert!(harness.tick(1, 2, "150").is_empty());
    assert_eq!(harness.index.len(), 0);
    assert_eq!(harness.index.sizes(), IndexSizes::default());
    let mut out = Vec::new();
    let again = Event::AlertResumed(AlertResumed {
        alert_id: alert_id("x1"),
        user_id: UserId::parse("u1").unwrap(),
        version: 3,
    });
    assert_eq!(
        harness
            .index
            .apply(&again, at(3), Site::Onprem, at(3), &mut out),
        Applied::AlreadyDeleted
    );
    assert!(!harness.index.remove(&alert_id("x1")));
}

#[test]
fn expired_alerts_fire_up_to_their_expiry_instant_and_never_after() {
    let mut harness = Harness::new();
    let mut until_50 = spec(
        target("100", Direction::Up, PriceSide::Below),
        RepeatPolicy::Once,
    );
    until_50.expires_at = Some(at(50));
    harness.create("e50", until_50, 0);
    let mut until_40 = spec(
        target("100", Direction::Up, PriceSide::Below),
        RepeatPolicy::Once,
    );
    until_40.expires_at = Some(at(40));
    harness.create("e40", until_40, 0);
    harness.tick(1, 10, "90");
    assert_eq!(harness.tick(2, 50, "100"), [id("e50", 1, 1)]);
    assert_eq!(harness.index.sizes().inactive, 2);
}

#[test]
fn ticks_not_after_the_last_sequential_id_are_dropped() {
    let mut harness = Harness::new();
    harness.create(
        "q1",
        spec(
            target("100", Direction::Up, PriceSide::Below),
            RepeatPolicy::Once,
        ),
        0,
    );
    harness.tick(10, 1, "90");
    let mut out = Vec::new();
    let outcome = harness
        .index
        .on_tick(&tick_with_rate(9, 2, "150", "0"), 99, at(2), &mut out);
    assert_eq!(outcome, TickOutcome::Stale);
    let outcome = harness
        .index
        .on_tick(&tick_with_rate(10, 2, "150", "0"), 99, at(2), &mut out);
    assert_eq!(outcome, TickOutcome::Stale);
    assert!(out.is_empty());
    assert_eq!(
        harness.index.last_tick(&Exchange::upbit(), &btc()),
        Some((price("90"), 10))
    );
}

#[test]
fn daily_change_fires_on_crossing_the_threshold_not_on_every_tick_past_it() {
    let mut harness = Harness::new();
    harness.create(
        "up5",
        spec(change(ChangeBasis::Daily, Direction::Up, "5"), repeat(1)),
        0,
    );
    harness.create(
        "down3",
        spec(change(ChangeBasis::Daily, Direction::Down, "3"), repeat(1)),
        0,
    );
    harness.create(
        "either4",
        spec(
            change(ChangeBasis::Daily, Direction::Either, "4"),
            repeat(1),
        ),
        0,
    );
    assert!(harness.tick_rate(1, 1, "100", "0.03").is_empty());
    assert_eq!(
        harness.tick_rate(2, 2, "100", "0.049"),
        [id("either4", 1, 1)]
    );
    assert_eq!(harness.tick_rate(3, 3, "100", "0.05"), [id("up5", 1, 1)]);
    let trigger = harness
        .fired
        .iter()
        .find(|trigger| trigger.alert_id.as_str() == "up5")
        .unwrap();
    assert_eq!(
        trigger.observed[0].change.map(|change| change.value()),
        Some(decimal("5"))
    );
    assert!(
        harness.tick_rate(4, 10, "100", "0.06").is_empty(),
        "still above: no new crossing"
    );
    assert!(harness.tick_rate(5, 11, "100", "-0.01").is_empty());
    let mut fired = harness.tick_rate(6, 12, "100", "-0.045");
    fired.sort();
    assert_eq!(fired, [id("down3", 1, 1), id("either4", 1, 2)]);
}

#[test]
fn a_change_alert_created_past_its_threshold_waits_for_a_new_crossing() {
    let mut harness = Harness::new();
    harness.tick_rate(1, -5, "100", "0.07");
    harness.create(
        "c1",
        spec(
            change(ChangeBasis::Daily, Direction::Up, "5"),
            RepeatPolicy::Once,
        ),
        0,
    );
    assert!(harness.tick_rate(2, 1, "100", "0.08").is_empty());
    assert!(harness.tick_rate(3, 2, "100", "0.04").is_empty());
    assert_eq!(harness.tick_rate(4, 3, "100", "0.051"), [id("c1", 1, 1)]);
}

#[test]
fn rolling_change_is_measured_from_the_tick_stream_once_the_window_is_covered() {
    let mut harness = Harness::new();
    harness.create(
        "w5",
        spec(
            change(ChangeBasis::Rolling5Minutes, Direction::Up, "2"),
            RepeatPolicy::Once,
        ),
        0,
    );
    harness.create(
        "w5down",
        spec(
            change(ChangeBasis::Rolling5Minutes, Direction::Down, "2"),
            RepeatPolicy::Once,
        ),
        0,
    );
    assert!(harness.tick(1, 0, "100").is_empty());
    assert!(
        harness.tick(2, 100, "110").is_empty(),
        "+10% but the 5 minutes are not covered yet"
    );
    assert!(harness.tick(3, 299, "110").is_empty());
    // At 300 the window starts at second 0 (100): +1%.
    assert!(harness.tick(4, 300, "101").is_empty());
    // At 301 it still starts at 100 (the last trade at or before second 1): +3%.
    assert_eq!(harness.tick(5, 301, "103"), [id("w5", 1, 1)]);
    let trigger = harness.fired.last().unwrap();
    assert_eq!(
        trigger.observed[0].change.map(|change| change.value()),
        Some(decimal("3"))
    );
    // At 400 the window starts at second 100 (110): 105 is -4.5455%.
    assert_eq!(harness.tick(6, 400, "105"), [id("w5down", 1, 1)]);
    assert_eq!(
        harness.fired.last().unwrap().observed[0]
            .change
            .map(|change| change.value()),
        Some(decimal("-4.5455"))
    );
}

#[test]
fn an_alert_event_arriving_after_its_ticks_is_replayed_against_them() {
    let definition = spec(target("100", Direction::Up, PriceSide::Below), repeat(30));
    // In order: alert, then ticks.
    let mut in_order = Harness::new();
    in_order.tick(1, 0, "90");
    in_order.create("late", definition.clone(), 5);
    for (sequence, second, level) in [(2, 10, "101"), (3, 20, "95"), (4, 50, "102"), (5, 60, "99")]
    {
        in_order.tick(sequence, second, level);
    }
    // Late: the ticks were evaluated before the alert event arrived.
    let mut late = Harness::new();
    for (sequence, second, level) in [
        (1, 0, "90"),
        (2, 10, "101"),
        (3, 20, "95"),
        (4, 50, "102"),
        (5, 60, "99"),
    ] {
        late.tick(sequence, second, level);
    }
    late.create("late", definition, 5);
    // The same triggers, but for when they were decided.
    let without_decision_time = |fired: &[TriggerFired]| {
        fired
            .iter()
            .map(|trigger| TriggerFired {
                evaluated_at: Timestamp::UNIX_EPOCH,
                ..trigger.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_decision_time(&late.fired),
        without_decision_time(&in_order.fired)
    );
    assert_eq!(
        late.fired
            .iter()
            .map(|trigger| trigger.trigger_id.as_str())
            .collect::<Vec<_>>(),
        ["trg:late:g1000000001", "trg:late:g1000000002"]
    );
    // Both continue identically.
    assert_eq!(late.tick(6, 100, "100"), in_order.tick(6, 100, "100"));
    assert_eq!(
        without_decision_time(&late.fired),
        without_decision_time(&in_order.fired)
    );
    assert_eq!(late.fired.len(), 3);
}

#[test]
fn scheduled_alerts_fire_at_each_occurrence_with_the_latest_prices() {
    let mut harness = Harness::new();
    // EPOCH is 2027-01-15T08:00:00Z, a Friday; 17:00 in Seoul is 08:00 UTC.
    assert_eq!(at(0), "2027-01-15T08:00:00Z".parse().unwrap());
    harness.create(
        "daily",
        spec(
            scheduled(
                &[Weekday::Fri, Weekday::Sat],
                &[],
                Time::constant(17, 0, 0, 0),
                "Asia/Seoul",
            ),
            repeat(60),
        ),
        -3_600,
    );
    assert_eq!(harness.index.next_scheduled_at(), Some(at(0)));
    harness.tick(1, -10, "95000000");
    let (fired, outcome) = harness.due(-1, 600);
    assert!(fired.is_empty());
    assert_eq!(outcome, DueOutcome::default());
    let (fired, outcome) = harness.due(0, 600);
    assert_eq!(fired, [format!("trg:daily:o{}", EPOCH)]);
    assert_eq!(outcome.fired, 1);
    let trigger = &harness.fired[0];
    assert_eq!(trigger.kind, AlertKind::Scheduled);
    assert_eq!(trigger.firing, Firing::Scheduled { occurrence: at(0) });
    assert_eq!(trigger.observed[0].price, price("95000000"));
    assert_eq!(
        trigger.observed[0].tick.as_ref().unwrap().tick_id.as_str(),
        "tick:upbit:KRW-BTC:1"
    );
    assert_eq!(harness.index.next_scheduled_at(), Some(at(86_400)));
    assert!(harness.due(10, 600).0.is_empty(), "never twice");
}

#[test]
fn occurrences_missed_beyond_the_grace_period_are_skipped_and_within_it_fired_once() {
    let mut harness = Harness::new();
    harness.create(
        "often",
        spec(
            scheduled(
                &[
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                    Weekday::Sat,
                    Weekday::Sun,
                ],
                &[],
                Time::constant(8, 0, 0, 0),
                "UTC",
            ),
            repeat(1),
        ),
        -10 * 86_400,
    );
    // Ten days of occurrences are due; only the one within the grace period fires.
    let (fired, outcome) = harness.due(300, 600);
    assert_eq!(fired, [format!("trg:often:o{EPOCH}")]);
    assert_eq!(outcome.missed.len(), 1, "skipped in one jump: {outcome:?}");
    assert_eq!(outcome.missed[0].1, at(-10 * 86_400 + 86_400));
    // A day later, the process was stopped past the grace period: missed, not fired.
    let (fired, outcome) = harness.due(86_400 + 601, 600);
    assert!(fired.is_empty());
    assert_eq!(outcome.missed, [(alert_id("often"), at(86_400))]);
    assert_eq!(harness.index.next_scheduled_at(), Some(at(2 * 86_400)));
}

#[test]
fn a_once_scheduled_alert_fires_once_and_an_expired_one_never() {
    let mut harness = Harness::new();
    harness.create(
        "once",
        spec(
            scheduled(&[Weekday::Fri], &[], Time::constant(8, 0, 0, 0), "UTC"),
            RepeatPolicy::Once,
        ),
        -60,
    );
    let mut expiring = spec(
        scheduled(&[Weekday::Fri], &[], Time::constant(8, 0, 0, 0), "UTC"),
        repeat(1),
    );
    expiring.expires_at = Some(at(-1));
    harness.create("expired", expiring, -60);
    let (fired, _) = harness.due(0, 600);
    assert_eq!(fired, [format!("trg:once:o{EPOCH}")]);
    assert_eq!(harness.index.next_scheduled_at(), None);
    assert_eq!(harness.index.sizes().inactive, 2);
}

#[test]
fn a_scheduled_time_skipped_by_daylight_saving_fires_at_the_end_of_the_gap() {
    let mut harness = Harness::new();
    let created_at: Timestamp = "2027-03-13T00:00:00Z".parse().unwrap();
    let mut out = Vec::new();
    harness.index.insert(
        created(
            "dst",
            spec(
                scheduled(
                    &[Weekday::Sun],
                    &[],
                    Time::constant(2, 30, 0, 0),
                    "America/New_York",
                ),
                repeat(1),
            ),
        ),
        created_at,
        &mut out,
    );
    // 2027-03-14: New York springs forward from 02:00 EST to 03:00 EDT.
    assert_eq!(
        harness.index.next_scheduled_at(),
        Some("2027-03-14T07:00:00Z".parse().unwrap())
    );
}

#[test]
fn a_paused_scheduled_alert_skips_what_it_missed_and_resumes_at_the_next_occurrence() {
    let mut harness = Harness::new();
    harness.create(
        "sched",
        spec(
            scheduled(&[Weekday::Fri], &[], Time::constant(8, 0, 0, 0), "UTC"),
            repeat(1),
        ),
        -60,
    );
    harness.event(
        Event::AlertPaused(AlertPaused {
            alert_id: alert_id("sched"),
            user_id: UserId::parse("u1").unwrap(),
            version: 2,
        }),
        -30,
    );
    assert!(harness.due(0, 600).0.is_empty());
    harness.event(
        Event::AlertResumed(AlertResumed {
            alert_id: alert_id("sched"),
            user_id: UserId::parse("u1").unwrap(),
            version: 3,
        }),
        30,
    );
    assert_eq!(harness.index.next_scheduled_at(), Some(at(7 * 86_400)));
}

/// A rebuilt index (events, then the triggers the first one published, then the ticks) continues exactly
/// like the index that ran all along.
#[test]
fn a_rebuilt_index_continues_like_the_one_that_ran() {
    let events: Vec<(Event, i64)> = vec![
        (
            Event::AlertCreated(created(
                "ra",
                spec(target("100", Direction::Up, PriceSide::Below), repeat(100)),
            )),
            0,
        ),
        (
            Event::AlertCreated(created(
                "rb",
                spec(
                    target("100", Direction::Down, PriceSide::Above),
                    RepeatPolicy::Once,
                ),
            )),
            0,
        ),
        (
            Event::AlertCreated(created(
                "rc",
                spec(
                    change(ChangeBasis::Daily, Direction::Either, "2"),
                    repeat(5),
                ),
            )),
            0,
        ),
        (
            Event::AlertCreated(created(
                "rd",
                spec(target("120", Direction::Up, PriceSide::Above), repeat(5)),
            )),
            0,
        ),
    ];
    let history = [
        (1, 1, "95", "0"),
        (2, 2, "101", "0.01"),
        (3, 3, "99", "0.025"),
        (4, 4, "98", "0.01"),
        (5, 50, "97", "-0.03"),
        (6, 60, "130", "0.01"),
    ];
    let future = [
        (7, 90, "99", "0.01"),
        (8, 101, "100", "0.03"),
        (9, 150, "98", "0"),
        (10, 160, "119", "0"),
        (11, 170, "121", "0.05"),
        (12, 300, "101", "0"),
    ];
    let mut running = Harness::new();
    for (event, second) in &events {
        running.event(event.clone(), *second);
    }
    for (sequence, second, level, rate) in history {
        running.tick_rate(sequence, second, level, rate);
    }
    let published = running.fired.clone();
    assert!(published.len() >= 3, "{published:?}");

    let mut rebuilt = Harness::new();
    rebuilt.index.begin_restore();
    for (event, second) in &events {
        rebuilt.event(event.clone(), *second);
    }
    for trigger in &published {
        let fired_at = history
            .iter()
            .find(|(sequence, ..)| trigger.observed[0].tick.as_ref().unwrap().sequence == *sequence)
            .map(|(_, second, ..)| at(*second))
            .unwrap();
        assert!(rebuilt.index.restore_trigger(trigger, fired_at));
    }
    for (sequence, second, level, rate) in history {
        rebuilt.tick_rate(sequence, second, level, rate);
    }
    rebuilt.index.finish_restore();
    assert!(rebuilt.fired.is_empty(), "nothing fires while rebuilding");
    for (sequence, second, level, rate) in future {
        assert_eq!(
            rebuilt.tick_rate(sequence, second, level, rate),
            running.tick_rate(sequence, second, level, rate),
            "tick {sequence}"
        );
    }
    assert!(
        running.fired.len() > published.len(),
        "the future fires too"
    );
}

/// Random alerts over random ticks: the index fires exactly what each alert on its own would, and does
/// so whatever the order in which the alert events and the ticks arrive.
#[test]
fn the_index_agrees_with_the_single_alert_model_in_any_arrival_order() {
    let mut random = fastrand::Rng::with_seed(2026);
    let mut compared = 0;
    for round in 0..60 {
        let tick_count = 120;
        let mut ticks = Vec::new();
        let mut level: i64 = 100;
        let mut rate: i64 = 0;
        for sequence in 1..=tick_count {
            level = (level + random.i64(-6..=6)).clamp(60, 140);
            rate = (rate + random.i64(-2..=2)).clamp(-9, 9);
            ticks.push(tick_with_rate(
                sequence,
                sequence as i64 * 7 + random.i64(0..3),
                &level.to_string(),
                &Decimal::new(rate, 2).to_string(),
            ));
        }
        let mut alerts = Vec::new();
        for number in 0..25 {
            let direction = [Direction::Up, Direction::Down, Direction::Either][random.usize(0..3)];
            let condition = match random.usize(0..4) {
                0 => change(
                    [ChangeBasis::Daily, ChangeBasis::Rolling5Minutes][random.usize(0..2)],
                    direction,
                    &random.i64(1..=6).to_string(),
                ),
                _ => target(
                    &random.i64(80..=120).to_string(),
                    direction,
                    [PriceSide::Below, PriceSide::At, PriceSide::Above][random.usize(0..3)],
                ),
            };
            let policy = if random.bool() {
                RepeatPolicy::Once
            } else {
                repeat(random.u32(1..=40))
            };
            let mut definition = spec(condition, policy);
            if random.usize(0..5) == 0 {
                definition.expires_at = Some(at(random.i64(0..900)));
            }
            let created_second = random.i64(-20..600);
            alerts.push((
                created(&format!("r{round}a{number}"), definition),
                created_second,
            ));
        }

        // The reference: each alert alone over every tick.
        let mut expected = Vec::new();
        let values: Vec<TickValues> = {
            let mut market = MarketState::new(Exchange::upbit(), btc());
            let settings = IndexSettings::default();
            ticks
                .iter()
                .enumerate()
                .map(|(position, tick)| market.record(tick, position as u64 + 1, &settings))
                .collect()
        };
        for (alert, created_second) in &alerts {
            let tracked = Tracked::of(&alert.spec.condition).unwrap();
            let mut single = SingleAlert {
                tracked,
                repeat: alert.spec.repeat,
                expires_at: alert.spec.expires_at,
                phase: Phase::Deferred {
                    due: at(*created_second),
                    entry: entry_for(&alert.spec),
                },
            };
            let mut firing = 0;
            for (position, tick) in values.iter().enumerate() {
                let previous = position.checked_sub(1).map(|before| &values[before]);
                if single.step(previous, tick) {
                    firing += 1;
                    expected.push((
                        alert.alert_id.to_string(),
                        generation(1, firing),
                        tick.sequential_id,
                    ));
                }
            }
        }
        expected.sort();

        // The index, with each alert event arriving at a random point of the tick stream.
        for arrival in 0..3 {
            let mut index = AlertIndex::new(IndexSettings {
                replay_ticks_max: 10_000,
                replay_window: SignedDuration::from_hours(1),
                ..IndexSettings::default()
            });
            let mut arrivals: Vec<(usize, usize)> = alerts
                .iter()
                .enumerate()
                .map(|(number, _)| {
                    let arrives_after = if arrival == 0 {
                        0
                    } else {
                        random.usize(0..=ticks.len())
                    };
                    (arrives_after, number)
                })
                .collect();
            arrivals.sort();
            let mut out = Vec::new();
            let mut next_arrival = 0;
            for position in 0..=ticks.len() {
                while next_arrival < arrivals.len() && arrivals[next_arrival].0 == position {
                    let (alert, created_second) = &alerts[arrivals[next_arrival].1];
                    index.insert(alert.clone(), at(*created_second), &mut out);
                    next_arrival += 1;
                }
                if let Some(tick) = ticks.get(position) {
                    index.on_tick(tick, position as u64 + 1, at(0), &mut out);
                }
            }
            let mut actual: Vec<(String, u64, u64)> = out
                .iter()
                .map(|trigger| {
                    let Firing::Armed { generation } = trigger.firing else {
                        panic!("{trigger:?}")
                    };
                    let tick = trigger.observed[0].tick.as_ref().unwrap();
                    (trigger.alert_id.to_string(), generation, tick.sequence)
                })
                .collect();
            actual.sort();
            assert_eq!(actual, expected, "round {round}, arrival order {arrival}");
        }
        compared += expected.len();
    }
    assert!(compared > 1_000, "only {compared} firings compared");
}

#[test]
fn sizes_count_placed_alerts_by_kind() {
    let mut harness = Harness::new();
    harness.create(
        "k1",
        spec(
            target("100", Direction::Up, PriceSide::Below),
            RepeatPolicy::Once,
        ),
        0,
    );
    harness.create(
        "k2",
        spec(
            change(ChangeBasis::Rolling1Hour, Direction::Up, "1"),
            RepeatPolicy::Once,
        ),
        0,
    );
    harness.create(
        "k3",
        spec(
            scheduled(
                &[Weekday::Mon],
                &[],
                Time::constant(9, 0, 0, 0),
                "Asia/Seoul",
            ),
            RepeatPolicy::Once,
        ),
        0,
    );
    assert_eq!(
        harness.index.sizes(),
        IndexSizes {
            target_price: 1,
            change_rate: 1,
            scheduled: 1,
            inactive: 0
        }
    );
}
