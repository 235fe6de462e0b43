//! `coinalarm replay` speed: a synthetic stretch of Upbit-like trading (200 markets at a peak-hour
//! 300 ticks/s, random walks, for `COINALARM_BENCH_REPLAY_MINUTES` of trade time, default 30 — an honest
//! fraction of a day, every minute of it at peak rate) and 2,000 alerts (target-price `once` alerts and
//! repeating 5-minute change alerts) are published into a fresh two-site setup, with the triggers the
//! matcher's index computes for them, so a correct replay reports every firing matched and nothing else.
//! Then the `coinalarm` binary (next to this one, or `COINALARM_BIN`) replays the whole stretch from the
//! on-prem aggregates; the figures are its ticks per second and how many times faster than real time
//! (trade time replayed per second of the command, process start included).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use coinalarm_matcher::{AlertIndex, IndexSettings};
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_test_support::nats::TwoSites;
use jiff::{SignedDuration, Timestamp};
use proto_events::events::alerts::AlertCreated;
use proto_events::events::ticks::TickObserved;
use proto_events::{Envelope, Site};
use serde_json::json;

const MARKETS: usize = 200;
const TICKS_PER_SECOND: usize = 300;
const ALERTS: usize = 2_000;
const START_PRICE: i64 = 1_000_000;
const PUBLISH_BATCH: usize = 2_000;

pub struct ReplaySpeed {
    pub minutes: u64,
    pub ticks: usize,
    pub alerts: usize,
    pub triggers: usize,
    pub publish_seconds: f64,
    pub replay_seconds: f64,
    pub ticks_per_second: f64,
    pub times_real_time: f64,
    pub clean: bool,
    pub matched: u64,
    /// Missed, extra, duplicated and late firings (all 0 when the replay agrees with the index).
    pub differences: [usize; 4],
}

fn market(index: usize) -> String {
    format!("KRW-M{index:03}")
}

fn coinalarm_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("COINALARM_BIN") {
        return Ok(PathBuf::from(path));
    }
    let beside = std::env::current_exe()?.with_file_name("coinalarm");
    anyhow::ensure!(
        beside.exists(),
        "no coinalarm binary at {}: build it (cargo build --release -p coinalarm) or set COINALARM_BIN",
        beside.display()
    );
    Ok(beside)
}

fn alert_definitions(rng: &mut fastrand::Rng) -> anyhow::Result<Vec<AlertCreated>> {
    (0..ALERTS)
        .map(|index| {
            let market = market(index % MARKETS);
            let condition = if index % 4 == 3 {
                json!({"kind": "change_rate", "market": market, "basis": "5m", "direction": "either",
                       "threshold": "0.5"})
            } else {
                let offset = rng.i64(1..=30_000);
                let (target, direction, side) = if index % 2 == 0 {
                    (START_PRICE + offset, "up", "below")
                } else {
                    (START_PRICE - offset, "down", "above")
                };
                json!({"kind": "target_price", "market": market, "target": target.to_string(),
                       "direction": direction, "side_at_creation": side})
            };
            let repeat = if index % 4 == 3 {
                json!({"mode": "repeat", "cooldown_seconds": 60})
            } else {
                json!({"mode": "once"})
            };
            Ok(serde_json::from_value(json!({
                "alert_id": format!("01900000-0000-7000-8000-{index:012}"),
                "user_id": format!("01900000-0000-7000-9000-{index:012}"),
                "home_site": "onprem",
                "spec": {"exchange": "upbit", "repeat": repeat, "condition": condition},
            }))?)
        })
        .collect()
}

/// The `index`-th tick: markets in turn, each a random walk of ±0.05 % steps, `TICKS_PER_SECOND` per
/// second of trade time.
fn tick(
    index: usize,
    start: Timestamp,
    prices: &mut [i64],
    rng: &mut fastrand::Rng,
) -> anyhow::Result<TickObserved> {
    let market_index = index % MARKETS;
    prices[market_index] = (prices[market_index] + rng.i64(-500..=500)).max(1_000);
    let nanos = (index as i128 * 1_000_000_000 / TICKS_PER_SECOND as i128) as i64;
    Ok(serde_json::from_value(json!({
        "exchange": "upbit",
        "market": market(market_index),
        "trade_price": prices[market_index].to_string(),
        "signed_change_rate": "0",
        "signed_change_price": "0",
        "trade_timestamp": (start + SignedDuration::from_nanos(nanos)).to_string(),
        "sequential_id": index as u64 + 1,
        "stream_type": "realtime",
    }))?)
}

pub async fn measure() -> anyhow::Result<ReplaySpeed> {
    let minutes: u64 = std::env::var("COINALARM_BENCH_REPLAY_MINUTES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(30);
    let tick_count = minutes as usize * 60 * TICKS_PER_SECOND;
    let binary = coinalarm_binary()?;
    let sites = TwoSites::start().await;
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        topology::apply(&topology, &sites.jetstream(site).await, false).await?;
    }
    let bus = Bus::from_client(
        sites.client(Site::Onprem, "admin").await,
        Site::Onprem,
        "admin",
        Duration::from_secs(30),
    );

    // Trade time ends an hour ago, so the alerts are created before it and nothing is in the future.
    let span = SignedDuration::from_secs(minutes as i64 * 60);
    let start = Timestamp::from_second(Timestamp::now().as_second())?
        - span
        - SignedDuration::from_hours(1);
    let created = start - SignedDuration::from_mins(1);
    let mut rng = fastrand::Rng::with_seed(11);
    let definitions = alert_definitions(&mut rng)?;
    let mut index = AlertIndex::new(IndexSettings::default());
    let mut expected = Vec::new();
    let published = Instant::now();
    let mut alert_batch = Vec::with_capacity(definitions.len());
    for alert in definitions {
        index.insert(alert.clone(), created, &mut expected);
        alert_batch.push((Envelope::new(alert, Site::Onprem).at(created), None));
    }
    for chunk in alert_batch.chunks(PUBLISH_BATCH) {
        bus.publish_all(chunk).await?;
    }

    let mut prices = vec![START_PRICE; MARKETS];
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut fired = Vec::new();
    for position in 0..tick_count {
        let tick = tick(position, start, &mut prices, &mut rng)?;
        index.on_tick(&tick, 0, tick.trade_timestamp, &mut fired);
        expected.append(&mut fired);
        let at = tick.trade_timestamp;
        batch.push((Envelope::new(tick, Site::Onprem).at(at), None));
        if batch.len() == PUBLISH_BATCH {
            bus.publish_all(&batch).await?;
            batch.clear();
        }
    }
    bus.publish_all(&batch).await?;
    let triggers: Vec<_> = expected
        .into_iter()
        .map(|trigger| {
            // Written when the matcher would have: at its tick, so none is late.
            let at = trigger.evaluated_at;
            (Envelope::new(trigger, Site::Onprem).at(at), None)
        })
        .collect();
    for chunk in triggers.chunks(PUBLISH_BATCH) {
        bus.publish_all(chunk).await?;
    }
    // The replay reads the aggregate: wait until it has sourced every tick.
    let jetstream = sites.jetstream(Site::Onprem).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let stored = jetstream
            .get_stream("TICKS")
            .await?
            .info()
            .await?
            .state
            .messages;
        if stored >= tick_count as u64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "TICKS holds {stored} of {tick_count} ticks"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let publish_seconds = published.elapsed().as_secs_f64();

    let to = start + span;
    let started = Instant::now();
    let output = tokio::process::Command::new(&binary)
        .args(["replay", "--json", "--from"])
        .arg(start.to_string())
        .arg("--to")
        .arg(to.to_string())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("COINALARM_SITE", "onprem")
        .env("COINALARM_NATS__URLS__ONPREM", sites.url(Site::Onprem))
        .env("COINALARM_NATS__URLS__CLOUD", sites.url(Site::Cloud))
        .env("COINALARM_NATS__USER", "admin")
        .env("COINALARM_NATS__PASSWORD", sites.password("admin"))
        .output()
        .await?;
    let replay_seconds = started.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|error| {
        anyhow::anyhow!(
            "coinalarm replay printed no report ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let ticks_read = report["ticks_read"].as_u64().unwrap_or_default();
    Ok(ReplaySpeed {
        minutes,
        ticks: tick_count,
        alerts: ALERTS,
        triggers: triggers.len(),
        publish_seconds,
        replay_seconds,
        ticks_per_second: ticks_read as f64 / replay_seconds,
        times_real_time: span.as_secs_f64() / replay_seconds,
        clean: report["clean"].as_bool().unwrap_or(false),
        matched: report["matched"].as_u64().unwrap_or_default(),
        differences: ["missed", "extra", "duplicated", "late"]
            .map(|name| report[name].as_array().map(Vec::len).unwrap_or_default()),
    })
}

pub fn report(result: &ReplaySpeed) -> String {
    format!(
        "### Replay (`coinalarm replay`)\n\n\
         {} min of trade time at {TICKS_PER_SECOND} ticks/s over {MARKETS} markets ({} ticks), {} alerts, \
         {} triggers published in {:.0} s; replayed from the on-prem aggregates by the binary:\n\n\
         | ticks/s | × real time | wall time | diff |\n|---|---|---|---|\n\
         | {:.0} | {:.0}× | {:.1} s | {} ({} matched) |\n\n\
         A day at this peak rate would replay in {:.0} s.\n",
        result.minutes,
        result.ticks,
        result.alerts,
        result.triggers,
        result.publish_seconds,
        result.ticks_per_second,
        result.times_real_time,
        result.replay_seconds,
        if result.clean {
            "clean".to_owned()
        } else {
            format!("missed/extra/duplicated/late {:?}", result.differences)
        },
        result.matched,
        86_400.0 / result.times_real_time,
    )
}
