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
        "| alerts | build (s) | index memory (RSS growth) | ticks/s | triggers fired |\n|---|---|---|---|---|\n",
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

pub struct ColdStart {
    pub alerts: usize,
    pub publish_seconds: f64,
    pub ready_seconds: f64,
    pub resident_delta: u64,
}

/// The matcher's cold start: `count` alert events stored in the on-prem `ALERTS` aggregate (published
/// to the origin and sourced, as in production), then the matcher service started in this process and
/// timed until its first trigger, for probe ticks published every 10 ms from the start that cross one
/// alert's target back and forth: the index rebuilt from the streams and the live loop running. Memory is this process's
/// resident growth over that start (the matcher is the only thing it starts).
pub async fn cold_start(count: usize) -> anyhow::Result<ColdStart> {
    use coinalarm_runtime::bus::Bus;
    use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
    use proto_events::events::alerts::AlertCreated;
    use proto_events::{Category, Envelope, Event, Site};
    use std::time::Duration;

    let sites = coinalarm_test_support::nats::TwoSites::start().await;
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        topology::apply(&topology, &sites.jetstream(site).await, false).await?;
    }
    let api = Bus::from_client(
        sites.client(Site::Onprem, "api").await,
        Site::Onprem,
        "api",
        Duration::from_secs(30),
    );
    let mut rng = fastrand::Rng::with_seed(7);
    let created = Timestamp::now();
    let started = Instant::now();
    let mut definitions = alerts(count, created, &mut rng)?;
    // Alert 0 is the probe: a target above every other alert's, on market 0, crossed by the probe tick.
    let probe_target = START_PRICE * 2;
    definitions[0] = serde_json::from_value::<AlertCreated>(json!({
        "alert_id": "01900000-0000-7000-8000-999999999999",
        "user_id": "01900000-0000-7000-9000-999999999999",
        "home_site": "onprem",
        "spec": {"exchange": "upbit", "repeat": {"mode": "once"}, "condition": {
            "kind": "target_price", "market": market(0), "target": probe_target.to_string(),
            "direction": "up", "side_at_creation": "below"}},
    }))?;
    for chunk in definitions.chunks(4_096) {
        let events: Vec<_> = chunk
            .iter()
            .map(|alert| {
                (
                    Envelope::new(alert.clone(), Site::Onprem).into_event(),
                    None,
                )
            })
            .collect();
        let _: Vec<_> = api.publish_all::<Event>(&events).await?;
    }
    drop(definitions);
    let aggregate = sites
        .jetstream(Site::Onprem)
        .await
        .get_stream(Category::Alerts.aggregate_stream())
        .await?;
    coinalarm_test_support::wait::until_true(
        "the alerts aggregate to source every alert",
        Duration::from_secs(600),
        || {
            let mut aggregate = aggregate.clone();
            async move {
                aggregate
                    .info()
                    .await
                    .is_ok_and(|info| info.state.messages >= count as u64)
            }
        },
    )
    .await?;
    let publish_seconds = started.elapsed().as_secs_f64();

    let config = crate::pipeline::services_config(&sites);
    let ingest = Bus::from_client(
        sites.client(Site::Onprem, "ingest").await,
        Site::Onprem,
        "ingest",
        Duration::from_secs(5),
    );
    let triggers = sites
        .jetstream(Site::Onprem)
        .await
        .get_stream(Category::Triggers.origin_stream(Site::Onprem))
        .await?;
    let shutdown = coinalarm_runtime::Shutdown::new();
    let resident_before = crate::machine::resident_bytes();
    let started = Instant::now();
    let matcher = tokio::spawn(coinalarm_matcher::run(config, shutdown.clone()));
    let mut sequential_id = 0_u64;
    let ready = loop {
        sequential_id += 1;
        // The probe price alternates just below and at the target, so every other tick is a crossing
        // whatever the matcher saw before it was ready. A constant price at the target would fire only
        // if the matcher's tick consumer existed before the first probe tick: on a first start the ticks
        // already stored are history (they set the market's price, and the probe alert is then placed
        // on the side it has already crossed to), and nothing after them crosses again.
        let probe_price = if sequential_id.is_multiple_of(2) {
            probe_target
        } else {
            probe_target - 1
        };
        let tick: TickObserved = serde_json::from_value(json!({
            "exchange": "upbit", "market": market(0), "trade_price": probe_price.to_string(),
            "signed_change_rate": "0", "signed_change_price": "0",
            "trade_timestamp": Timestamp::now().to_string(),
            "sequential_id": sequential_id, "stream_type": "realtime",
        }))?;
        ingest
            .publish(&Envelope::new(tick, Site::Onprem), None)
            .await?;
        let mut triggers = triggers.clone();
        if triggers.info().await?.state.messages > 0 {
            break started.elapsed().as_secs_f64();
        }
        anyhow::ensure!(
            !matcher.is_finished(),
            "the matcher stopped during its cold start"
        );
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the matcher did not fire within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let resident_delta = crate::machine::resident_bytes().saturating_sub(resident_before);
    shutdown.trigger();
    let _ = matcher.await;
    Ok(ColdStart {
        alerts: count,
        publish_seconds,
        ready_seconds: ready,
        resident_delta,
    })
}

/// The alert counts of the cold start: 1k, 100k and `max_alerts` (each once, ascending).
pub fn cold_start_counts(max_alerts: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = [1_000, 100_000, max_alerts]
        .into_iter()
        .filter(|count| *count <= max_alerts)
        .collect();
    counts.dedup();
    counts
}

pub fn cold_start_report(results: &[ColdStart]) -> String {
    let mut report = String::from(
        "| alerts in the stream | storing them (publish + sourcing, s) | matcher start → first trigger (s) | resident memory growth |\n\
         |---|---|---|---|\n",
    );
    for result in results {
        report.push_str(&format!(
            "| {} | {:.1} | {:.2} | {:.0} MiB |\n",
            result.alerts,
            result.publish_seconds,
            result.ready_seconds,
            result.resident_delta as f64 / 1_048_576.0
        ));
    }
    report
}
