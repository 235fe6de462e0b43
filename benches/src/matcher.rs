//! The matcher's alert index on its own: cold build time and memory for 1k / 100k / 1M target-price
//! alerts across 200 markets, then ticks per second through `on_tick` while the prices random-walk.

use std::time::Instant;

use coinalarm_matcher::{AlertIndex, IndexSettings};
use jiff::{SignedDuration, Timestamp};
use proto_events::events::alerts::AlertCreated;
use proto_events::events::ticks::TickObserved;
use serde_json::json;

const MARKETS: usize = 200;
const START_PRICE: i64 = 1_000_000;
const TICKS_PER_RUN: usize = 2_000_000;

struct Row {
    alerts: usize,
    build_seconds: f64,
    resident_delta: u64,
    ticks_per_second: f64,
    triggers: usize,
}

fn market(index: usize) -> String {
    format!("KRW-M{index:03}")
}

fn alerts(
    count: usize,
    created: Timestamp,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<Vec<AlertCreated>> {
    (0..count)
        .map(|index| {
            // Targets within ±10 % of the start price; the side follows from where the price starts.
            let offset = rng.i64(-100_000..=100_000);
            let target = START_PRICE + if offset == 0 { 1 } else { offset };
            let (direction, side) = if target > START_PRICE { ("up", "below") } else { ("down", "above") };
            let alert: AlertCreated = serde_json::from_value(json!({
                "alert_id": format!("01900000-0000-7000-8000-{index:012}"),
                "user_id": format!("01900000-0000-7000-9000-{index:012}"),
                "home_site": "onprem",
                "spec": {"exchange": "upbit", "repeat": {"mode": "once"}, "condition": {
                    "kind": "target_price", "market": market(index % MARKETS), "target": target.to_string(),
                    "direction": direction, "side_at_creation": side}},
            }))?;
            let _ = created;
            Ok(alert)
        })
        .collect()
}

/// A random walk of small steps (±0.05 %) per market; a tick's trade time moves forward 1 ms a tick.
fn ticks(
    count: usize,
    start: Timestamp,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<Vec<TickObserved>> {
    let mut prices = vec![START_PRICE; MARKETS];
    (0..count)
        .map(|index| {
            let market_index = index % MARKETS;
            prices[market_index] += rng.i64(-500..=500);
            let price = prices[market_index];
            let tick: TickObserved = serde_json::from_value(json!({
                "exchange": "upbit",
                "market": market(market_index),
                "trade_price": price.to_string(),
                "signed_change_rate": "0",
                "signed_change_price": "0",
                "trade_timestamp": (start + SignedDuration::from_millis(index as i64)).to_string(),
                "sequential_id": index as u64 + 1,
                "stream_type": "realtime",
            }))?;
            Ok(tick)
        })
        .collect()
}

fn measure(count: usize, ticks_template: &[TickObserved]) -> anyhow::Result<Row> {
    let mut rng = fastrand::Rng::with_seed(7);
    let created = Timestamp::from_second(1_800_000_000)?;
    let definitions = alerts(count, created, &mut rng)?;
    let mut index = AlertIndex::new(IndexSettings::default());
    let mut out = Vec::new();
    let before = crate::machine::resident_bytes();
    let started = Instant::now();
    for alert in definitions {
        index.insert(alert, created, &mut out);
    }
    let build_seconds = started.elapsed().as_secs_f64();
    let resident_delta = crate::machine::resident_bytes().saturating_sub(before);
    out.clear();

    let mut triggers = 0;
    let evaluated_at = Timestamp::now();
    let started = Instant::now();
    for tick in ticks_template {
        index.on_tick(tick, tick.sequential_id, evaluated_at, &mut out);
        triggers += out.len();
        out.clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Row {
        alerts: count,
        build_seconds,
        resident_delta,
        ticks_per_second: ticks_template.len() as f64 / seconds,
        triggers,
    })
}

pub fn run(max_alerts: usize) -> anyhow::Result<String> {
    let mut rng = fastrand::Rng::with_seed(11);
    let start = Timestamp::from_second(1_800_000_100)?;
    let ticks = ticks(TICKS_PER_RUN, start, &mut rng)?;
    let mut report = String::from(
        "## Matcher index (target-price alerts over 200 markets, 2,000,000 random-walk ticks)\n\n\
         | alerts | build (s) | index memory (RSS growth) | ticks/s | triggers fired |\n|---|---|---|---|---|\n",
    );
    for count in [1_000, 100_000, max_alerts] {
        let row = measure(count, &ticks)?;
        report.push_str(&format!(
            "| {} | {:.3} | {:.0} MiB | {:.0} | {} |\n",
            row.alerts,
            row.build_seconds,
            row.resident_delta as f64 / 1_048_576.0,
            row.ticks_per_second,
            row.triggers
        ));
    }
    Ok(report)
}
