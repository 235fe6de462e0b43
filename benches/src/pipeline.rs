//! The pipeline end to end, in one process at the on-prem site (ingest → matcher → notifier →
//! dispatcher; the fake exchange and the fake Twilio on loopback; the cloud site's NATS server up and
//! replicating every stream). `n` users each hold one target-price alert on `KRW-BTC`, the targets a
//! ladder 100 KRW apart; trades then climb the ladder at a controlled rate, each crossing `per_tick`
//! alerts, so the offered load is `ticks/s × per_tick` notifications/s. Two measurements:
//!
//! * sustained throughput: the load offered faster than the pipeline drains it, for long enough that
//!   the start-up transient is a small part; the rate is read from the provider's ledger between its
//!   10th and 90th percentile SMS, with the CPU time of this process and both NATS servers per SMS;
//! * latency: 1,000 notifications/s offered (below capacity), each SMS's time from its trade being
//!   pushed by the exchange to the provider's receipt of the request.
//!
//! The notifier's coalescing window (3 s by default: a user's firings in that window become one SMS)
//! is set to zero here, because it is a deliberate hold and not pipeline cost; caps are lifted, as is
//! the provider's rate limit.

use std::time::{Duration, Instant};

use coinalarm_dispatcher::fake_twilio::{FakeTwilio, FakeTwilioConfig};
use coinalarm_ingest::fake_exchange::{FakeExchange, FakeExchangeConfig, FeedMode};
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::config::Credentials;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::{Config, Shutdown};
use coinalarm_test_support::nats::TwoSites;
use jiff::Timestamp;
use proto_events::domain::{AlertId, MarketCode, PhoneHash, PhoneNumber, Price, UserId};
use proto_events::events::alerts::AlertCreated;
use proto_events::events::users::UserRegistered;
use proto_events::{Envelope, Event, Site};
use serde_json::json;

use crate::cpu::CpuClock;

const ACCOUNT: &str = "ACbench000000000000000000000000000";
const TOKEN: &str = "bench-token";
const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const BASE_PRICE: i64 = 95_000_000;
const STEP: i64 = 100;
/// Origin writes per notification on the hot path: trigger, dispatch request, claim, sent (the tick is
/// shared by every alert it crosses).
const WRITES_PER_NOTIFICATION: f64 = 4.0;

fn section(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// Alert `index`'s target: the ladder starts one step above the base price.
fn target(index: usize) -> i64 {
    BASE_PRICE + STEP * (index as i64 + 1)
}

fn phone(index: usize) -> String {
    format!("+8210{index:08}")
}

/// The alert index an SMS was sent for, from its destination.
fn index_of(destination: &str) -> Option<usize> {
    destination.strip_prefix("+8210")?.parse().ok()
}

/// Both sites, the fakes, `alerts` users with one alert each, and the services running at on-prem.
struct Rig {
    sites: TwoSites,
    exchange: FakeExchange,
    twilio: FakeTwilio,
    shutdown: Shutdown,
    host: tokio::task::JoinHandle<()>,
    market: MarketCode,
}

impl Rig {
    async fn start(alerts: usize) -> anyhow::Result<Rig> {
        let sites = TwoSites::start().await;
        for site in Site::ALL {
            let topology = SiteTopology::new(site, &TopologyOptions::default());
            topology::apply(&topology, &sites.jetstream(site).await, false).await?;
        }
        let exchange = FakeExchange::start(FakeExchangeConfig {
            feed: FeedMode::Scripted,
            ..FakeExchangeConfig::default()
        })
        .await?;
        let twilio =
            FakeTwilio::start(FakeTwilioConfig::with_account("bench", ACCOUNT, TOKEN)).await?;
        let bus = Bus::from_client(
            sites.client(Site::Onprem, "api").await,
            Site::Onprem,
            "api",
            Duration::from_secs(30),
        );
        let indexes: Vec<usize> = (0..alerts).collect();
        for chunk in indexes.chunks(1_000) {
            let mut events = Vec::with_capacity(chunk.len() * 2);
            for &index in chunk {
                let user_id = UserId::new();
                let phone = PhoneNumber::parse(&phone(index))?;
                let registered = UserRegistered {
                    user_id: user_id.clone(),
                    phone_hash: PhoneHash::of(b"bench", &phone),
                    phone,
                    home_site: Site::Onprem,
                };
                let alert: AlertCreated = serde_json::from_value(json!({
                    "alert_id": AlertId::new(), "user_id": user_id, "home_site": "onprem",
                    "spec": {"exchange": "upbit", "repeat": {"mode": "once"}, "condition": {
                        "kind": "target_price", "market": "KRW-BTC", "target": target(index).to_string(),
                        "direction": "up", "side_at_creation": "below"}},
                }))?;
                events.push((Envelope::new(registered, Site::Onprem).into_event(), None));
                events.push((Envelope::new(alert, Site::Onprem).into_event(), None));
            }
            let _: Vec<_> = bus.publish_all::<Event>(&events).await?;
        }

        let mut config = services_config(&sites);
        let sealing = json!({"current": "k1", "keys": {"k1": KEY}});
        config.ingest = section(json!({"url": exchange.url().to_string(), "markets": ["KRW-BTC"]}));
        config.notifier = section(
            json!({"sealing_keys": sealing, "coalesce_window": 0.0, "hourly_cap": 0, "default_daily_cap": 0}),
        );
        // The dispatcher as deployed, but with the provider's per-sender rate limit lifted and 64 calls
        // in flight (what a Twilio account with a short code or a messaging service allows), fetched
        // 64 at a time: a batch is settled before the next is fetched, so a batch smaller than the
        // concurrency leaves the rest of it idle.
        config.dispatcher = section(
            json!({"sealing_keys": sealing, "concurrency": 64, "batch_size": 64,
            "providers": {"twilio": {
            "base_url": twilio.base_url().to_string(), "account_sid": ACCOUNT, "auth_token": TOKEN,
            "from": "+15005550006", "messages_per_second": 1_000_000.0, "burst": 100_000}}}),
        );
        config.sites = section(json!({"takeover": "never"}));

        let shutdown = Shutdown::new();
        let services: &[(&str, coinalarm_runtime::host::StartFn)] = &[
            (coinalarm_ingest::NAME, coinalarm_ingest::start),
            (coinalarm_matcher::NAME, coinalarm_matcher::start),
            (coinalarm_notifier::NAME, coinalarm_notifier::start),
            (coinalarm_dispatcher::NAME, coinalarm_dispatcher::start),
        ];
        let host_shutdown = shutdown.clone();
        let host = tokio::spawn(async move {
            // The services' own errors are in their logs; the bench notices them as missing SMS.
            let _ = coinalarm_runtime::host::serve(&config, services, host_shutdown).await;
        });
        coinalarm_test_support::wait::until_true(
            "ingest to subscribe",
            Duration::from_secs(60),
            || async { exchange.subscriber_count() > 0 },
        )
        .await?;
        let market = MarketCode::parse("KRW-BTC")?;
        exchange.push_trade(&market, Price::parse(&BASE_PRICE.to_string())?);
        Ok(Rig {
            sites,
            exchange,
            twilio,
            shutdown,
            host,
            market,
        })
    }

    /// Crosses alert 0 alone and waits for its SMS: the whole chain is live (the matcher has its
    /// index, the sites' rejoin hold has passed) before anything is timed.
    async fn probe(&self) -> anyhow::Result<()> {
        // The matcher arms the alerts on the base price first; a crossing before that would not fire.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut price = target(0);
        while self.twilio.ledger_len() == 0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the probe alert never reached the provider"
            );
            self.exchange.push_trade(
                &self.market,
                Price::parse(&(BASE_PRICE + STEP / 2).to_string())?,
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.exchange
                .push_trade(&self.market, Price::parse(&price.to_string())?);
            price += 1;
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        Ok(())
    }

    /// Climbs the ladder: `ticks` trades at `ticks_per_second`, each crossing the next `per_tick`
    /// alerts (after the probe's alert 0). Returns when each trade was pushed.
    async fn climb(
        &self,
        ticks: usize,
        ticks_per_second: f64,
        per_tick: usize,
    ) -> anyhow::Result<Vec<Timestamp>> {
        let started = tokio::time::Instant::now();
        let mut pushed = Vec::with_capacity(ticks);
        for tick in 1..=ticks {
            let due = started + Duration::from_secs_f64((tick - 1) as f64 / ticks_per_second);
            tokio::time::sleep_until(due).await;
            let price = target(tick * per_tick);
            pushed.push(Timestamp::now());
            self.exchange
                .push_trade(&self.market, Price::parse(&price.to_string())?);
        }
        Ok(pushed)
    }

    async fn wait_for_ledger(&self, count: usize, within: Duration) -> anyhow::Result<()> {
        coinalarm_test_support::wait::until_true("every SMS", within, || async {
            self.twilio.ledger_len() >= count
        })
        .await?;
        Ok(())
    }

    async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.host.await;
        drop(self.sites);
    }
}

/// A config for services at on-prem connecting to `sites` as their own NATS users; sections empty.
pub fn services_config(sites: &TwoSites) -> Config {
    let mut config = Config {
        site: Site::Onprem,
        ..Config::default()
    };
    config.nats.urls.onprem = sites.url(Site::Onprem);
    config.nats.urls.cloud = sites.url(Site::Cloud);
    config.nats.user = Some("admin".to_owned());
    config.nats.password = Some(sites.password("admin").to_owned());
    for user in ["ingest", "matcher", "notifier", "dispatcher"] {
        config.nats.users.insert(
            user.to_owned(),
            Credentials {
                user: user.to_owned(),
                password: sites.password(user).to_owned(),
            },
        );
    }
    config
}

/// The tick each alert (after the probe) is crossed by.
fn tick_of(index: usize, per_tick: usize) -> usize {
    index.div_ceil(per_tick)
}

pub struct Throughput {
    pub notifications: usize,
    pub offered_per_second: f64,
    pub sustained_per_second: f64,
    pub first_to_last_seconds: f64,
    pub cpu_seconds_process: f64,
    pub cpu_seconds_nats: f64,
}

/// Offers `notifications` at `offered_per_second` (100 trades/s) and measures what the pipeline drains.
pub async fn throughput(
    notifications: usize,
    offered_per_second: f64,
) -> anyhow::Result<Throughput> {
    const TICKS_PER_SECOND: f64 = 100.0;
    let per_tick = ((offered_per_second / TICKS_PER_SECOND).round() as usize).max(1);
    let ticks = notifications.div_ceil(per_tick);
    let total = 1 + ticks * per_tick;
    let rig = Rig::start(total).await?;
    rig.probe().await?;
    let cpu = CpuClock::start();
    let started = Instant::now();
    let pushed = rig.climb(ticks, TICKS_PER_SECOND, per_tick).await?;
    let waited = rig.wait_for_ledger(total, Duration::from_secs(900)).await;
    let first_to_last_seconds = started.elapsed().as_secs_f64();
    let (cpu_seconds_process, cpu_seconds_nats) = cpu.elapsed();
    let ledger = rig.twilio.ledger();
    rig.stop().await;
    waited?;
    let mut received: Vec<Timestamp> = ledger
        .iter()
        .filter(|entry| index_of(&entry.to).is_some_and(|index| index > 0))
        .map(|entry| entry.created_at)
        .collect();
    received.sort();
    let measured = received.len();
    anyhow::ensure!(measured >= 10, "too few SMS to measure");
    let low = received[measured / 10];
    let high = received[measured * 9 / 10];
    let window = high.duration_since(low).as_secs_f64().max(1e-6);
    let offered_seconds = pushed
        .last()
        .zip(pushed.first())
        .map_or(0.0, |(last, first)| {
            last.duration_since(*first).as_secs_f64()
        })
        + 1.0 / TICKS_PER_SECOND;
    Ok(Throughput {
        notifications: measured,
        offered_per_second: (ticks * per_tick) as f64 / offered_seconds,
        sustained_per_second: (measured * 8 / 10) as f64 / window,
        first_to_last_seconds,
        cpu_seconds_process,
        cpu_seconds_nats,
    })
}

pub struct Latency {
    pub notifications: usize,
    pub offered_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

/// Offers `seconds` of `per_second` notifications (100 trades/s) and measures each SMS's latency.
pub async fn latency(per_second: usize, seconds: usize) -> anyhow::Result<Latency> {
    const TICKS_PER_SECOND: usize = 100;
    let per_tick = (per_second / TICKS_PER_SECOND).max(1);
    let ticks = TICKS_PER_SECOND * seconds;
    let total = 1 + ticks * per_tick;
    let rig = Rig::start(total).await?;
    rig.probe().await?;
    let pushed = rig.climb(ticks, TICKS_PER_SECOND as f64, per_tick).await?;
    let waited = rig.wait_for_ledger(total, Duration::from_secs(300)).await;
    let ledger = rig.twilio.ledger();
    rig.stop().await;
    waited?;
    let mut latencies: Vec<Duration> = ledger
        .iter()
        .filter_map(|entry| {
            let index = index_of(&entry.to).filter(|index| *index > 0)?;
            let pushed_at = pushed.get(tick_of(index, per_tick) - 1)?;
            Duration::try_from(entry.created_at.duration_since(*pushed_at)).ok()
        })
        .collect();
    latencies.sort();
    anyhow::ensure!(!latencies.is_empty(), "no SMS to measure");
    let at = |quantile: f64| {
        let rank = ((latencies.len() as f64 * quantile).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    Ok(Latency {
        notifications: latencies.len(),
        offered_per_second: (per_tick * TICKS_PER_SECOND) as f64,
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: latencies[latencies.len() - 1],
    })
}

pub fn throughput_report(result: &Throughput, raw_publish_per_second: f64) -> String {
    let writes_ratio =
        100.0 * result.sustained_per_second * WRITES_PER_NOTIFICATION / raw_publish_per_second;
    let plain_ratio = 100.0 * result.sustained_per_second / raw_publish_per_second;
    let cpu_total = result.cpu_seconds_process + result.cpu_seconds_nats;
    let per_notification = |seconds: f64| 1e6 * seconds / result.notifications as f64;
    format!(
        "| offered notifications/s | notifications | sustained notifications/s (10th–90th percentile SMS) | ÷ raw publish | ×4 writes ÷ raw publish | first trade → last SMS (s) | CPU µs per notification: services + fakes / NATS (both sites) / total |\n\
         |---|---|---|---|---|---|---|\n\
         | {:.0} | {} | {:.0} | {plain_ratio:.1} % | {writes_ratio:.1} % | {:.2} | {:.0} / {:.0} / {:.0} |\n",
        result.offered_per_second,
        result.notifications,
        result.sustained_per_second,
        result.first_to_last_seconds,
        per_notification(result.cpu_seconds_process),
        per_notification(result.cpu_seconds_nats),
        per_notification(cpu_total),
    )
}

pub fn latency_report(result: &Latency) -> String {
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    format!(
        "| offered notifications/s | SMS measured | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) |\n\
         |---|---|---|---|---|---|\n\
         | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
        result.offered_per_second,
        result.notifications,
        ms(result.p50),
        ms(result.p99),
        ms(result.p999),
        ms(result.max),
    )
}
