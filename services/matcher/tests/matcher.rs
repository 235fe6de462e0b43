//! The matcher against two real NATS sites: the exact triggers reach the `TRIGGERS` aggregates (ids,
//! prices, tick references), a restart fires nothing twice, and matchers at both sites produce one
//! trigger per firing in both aggregates.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::config::Credentials;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::{Config, Shutdown};
use coinalarm_test_support::nats::{TwoSites, read_stream};
use coinalarm_test_support::wait;
use futures::StreamExt;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use pretty_assertions::assert_eq;
use proto_events::domain::{
    AlertId, Exchange, MarketCode, Price, ThresholdPercent, TimeZoneName, UserId,
};
use proto_events::events::{
    AlertCondition, AlertCreated, AlertSpec, ChangeBasis, ChangeRateCondition, Direction,
    PriceSide, RepeatPolicy, ScheduledCondition, TargetPriceCondition, TickObserved, TriggerFired,
};
use proto_events::{Category, Envelope, Event, Firing, Site, envelope};
use rust_decimal::Decimal;
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(60);

async fn started() -> TwoSites {
    // The matcher's log, shown for failing tests (and with --nocapture).
    let _ = tracing_subscriber::fmt()
        .with_env_filter("coinalarm_matcher=debug")
        .with_test_writer()
        .try_init();
    let sites = TwoSites::start().await;
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        topology::apply(&topology, &sites.jetstream(site).await, false)
            .await
            .expect("apply topology");
    }
    sites
}

fn matcher_config(sites: &TwoSites, site: Site) -> Config {
    let mut config = Config {
        site,
        ..Config::default()
    };
    config.nats.urls.onprem = sites.url(Site::Onprem);
    config.nats.urls.cloud = sites.url(Site::Cloud);
    // The matcher's own least-privilege user: the test fails if it needs a permission it lacks.
    config.nats.users.insert(
        "matcher".to_owned(),
        Credentials {
            user: "matcher".to_owned(),
            password: sites.password("matcher").to_owned(),
        },
    );
    // Alert events reach the other site's aggregate after the ticks when sourcing is slow to start.
    config
        .matcher
        .insert("replay_window".to_owned(), json!(600));
    config
}

/// A publisher at `site`, as the API and the ingest service would publish.
async fn publisher(sites: &TwoSites, site: Site) -> Bus {
    Bus::from_client(
        sites.client(site, "admin").await,
        site,
        "test",
        Duration::from_secs(5),
    )
}

struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), coinalarm_runtime::shutdown::BoxError>>,
}

impl Running {
    async fn start(sites: &TwoSites, site: Site) -> Running {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(coinalarm_matcher::run(
            matcher_config(sites, site),
            shutdown.clone(),
        ));
        // Serving once its tick consumer exists (it is created after the rebuild).
        let jetstream = sites.jetstream(site).await;
        let ready = wait::until("the matcher's tick consumer", WITHIN, || {
            let jetstream = jetstream.clone();
            let ended = task.is_finished();
            async move {
                if ended {
                    return Ok(false);
                }
                let stream = jetstream
                    .get_stream("TICKS")
                    .await
                    .map_err(|error| error.to_string())?;
                stream
                    .consumer_info("matcher")
                    .await
                    .map(|_| true)
                    .map_err(|error| error.to_string())
            }
        })
        .await
        .unwrap();
        if !ready {
            let ended = task.await.expect("the matcher task does not panic");
            panic!("the matcher ended before serving: {ended:?}");
        }
        Running { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(WITHIN, self.task)
            .await
            .expect("the matcher stops within the deadline")
            .expect("the matcher task does not panic")
            .expect("the matcher stops cleanly");
    }
}

/// Counts every trigger publish seen on the wire at `site`, before any de-duplication.
async fn count_publishes(
    client: async_nats::Client,
    site: Site,
) -> Arc<Mutex<BTreeMap<String, usize>>> {
    let mut subscriber = client
        .subscribe(format!("{site}.triggers.>"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let shared = counts.clone();
    tokio::spawn(async move {
        // Keeps the connection alive as long as the subscription.
        let _client = client;
        while let Some(message) = subscriber.next().await {
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Nats-Msg-Id"))
                .map(|value| value.to_string())
                .unwrap_or_default();
            *shared.lock().unwrap().entry(id).or_insert(0) += 1;
        }
    });
    counts
}

fn user() -> UserId {
    UserId::parse("user-1").unwrap()
}

fn btc() -> MarketCode {
    MarketCode::parse("KRW-BTC").unwrap()
}

fn alert(name: &str, condition: AlertCondition) -> AlertCreated {
    AlertCreated {
        alert_id: AlertId::parse(name).unwrap(),
        user_id: user(),
        home_site: Site::Onprem,
        spec: AlertSpec {
            exchange: Exchange::upbit(),
            condition,
            repeat: RepeatPolicy::Once,
            expires_at: None,
        },
    }
}

fn target_up(name: &str, level: &str) -> AlertCreated {
    alert(
        name,
        AlertCondition::TargetPrice(TargetPriceCondition {
            market: btc(),
            target: Price::parse(level).unwrap(),
            direction: Direction::Up,
            side_at_creation: PriceSide::Below,
            reference_price: None,
        }),
    )
}

fn repeating(mut created: AlertCreated, cooldown_seconds: u32) -> AlertCreated {
    created.spec.repeat = RepeatPolicy::Repeat {
        cooldown_seconds: NonZeroU32::new(cooldown_seconds).unwrap(),
    };
    created
}

fn daily_up(name: &str, threshold: &str) -> AlertCreated {
    alert(
        name,
        AlertCondition::ChangeRate(ChangeRateCondition {
            market: btc(),
            basis: ChangeBasis::Daily,
            direction: Direction::Up,
            threshold: ThresholdPercent::parse(threshold).unwrap(),
        }),
    )
}

/// A scheduled alert with one occurrence: the whole minute at or before `at`, in UTC.
fn scheduled_at(name: &str, at: Timestamp) -> (AlertCreated, Timestamp) {
    let civil = at.to_zoned(TimeZone::UTC);
    let minute = jiff::civil::Time::new(civil.hour(), civil.minute(), 0, 0).unwrap();
    let condition = ScheduledCondition::new(
        vec![btc()],
        Vec::new(),
        vec![civil.date()],
        minute,
        TimeZoneName::parse("UTC").unwrap(),
    )
    .unwrap();
    let occurrence = civil
        .date()
        .to_datetime(minute)
        .to_zoned(TimeZone::UTC)
        .unwrap()
        .timestamp();
    let mut created = alert(name, AlertCondition::Scheduled(condition));
    created.spec.repeat = RepeatPolicy::Repeat {
        cooldown_seconds: NonZeroU32::new(60).unwrap(),
    };
    (created, occurrence)
}

async fn publish_alert(bus: &Bus, created: AlertCreated, at: Timestamp) {
    bus.publish(&Envelope::new(created, Site::Onprem).at(at), None)
        .await
        .expect("publish alert event");
}

fn tick(sequential_id: u64, price: &str, rate: &str, at: Timestamp) -> TickObserved {
    serde_json::from_value(json!({
        "exchange": "upbit",
        "market": "KRW-BTC",
        "trade_price": price,
        "signed_change_rate": rate,
        "signed_change_price": "0",
        "trade_timestamp": at,
        "sequential_id": sequential_id,
        "stream_type": "realtime",
    }))
    .unwrap()
}

async fn publish_tick(bus: &Bus, tick: TickObserved) -> u64 {
    let site = bus.site();
    bus.publish(&Envelope::new(tick, site), None)
        .await
        .expect("publish tick")
        .sequence
}

/// The triggers stored in `site`'s `TRIGGERS` aggregate, by id; fails on a duplicate id.
async fn stored_triggers(sites: &TwoSites, site: Site) -> BTreeMap<String, TriggerFired> {
    let stored = read_stream(
        &sites.jetstream(site).await,
        Category::Triggers.aggregate_stream(),
    )
    .await;
    let mut triggers = BTreeMap::new();
    for message in stored {
        let envelope = envelope::decode(&message.payload).expect("a decodable trigger");
        let Event::TriggerFired(trigger) = envelope.data else {
            panic!("not a trigger: {envelope:?}");
        };
        let previous = triggers.insert(trigger.trigger_id.as_str().to_owned(), trigger);
        assert!(previous.is_none(), "a trigger stored twice in {site}");
    }
    triggers
}

/// How many messages `stream` holds at `site`: a cheap poll, so the stream is only read (through an
/// ephemeral consumer each time) once there is something new to see.
async fn message_count(sites: &TwoSites, site: Site, stream: &str) -> Result<u64, String> {
    let mut handle = sites
        .jetstream(site)
        .await
        .get_stream(stream)
        .await
        .map_err(|error| error.to_string())?;
    let info = handle.info().await.map_err(|error| error.to_string())?;
    Ok(info.state.messages)
}

async fn wait_for_triggers(
    sites: &TwoSites,
    site: Site,
    expected: &BTreeSet<String>,
) -> BTreeMap<String, TriggerFired> {
    // What the last read found, and at which count: read again only when the count moves.
    let last_read = Mutex::new((u64::MAX, String::new()));
    let result = wait::until(&format!("triggers at {site}"), WITHIN, || async {
        let count = message_count(sites, site, "TRIGGERS").await?;
        if count < expected.len() as u64 {
            return Err(format!("{count} stored"));
        }
        if let Ok(last) = last_read.lock()
            && last.0 == count
        {
            return Err(last.1.clone());
        }
        let triggers = stored_triggers(sites, site).await;
        let ids: BTreeSet<String> = triggers.keys().cloned().collect();
        if &ids == expected {
            return Ok(triggers);
        }
        let found = format!("have {ids:?}");
        if let Ok(mut last) = last_read.lock() {
            *last = (count, found.clone());
        }
        Err(found)
    })
    .await;
    match result {
        Ok(triggers) => triggers,
        Err(timeout) => {
            let stored: Vec<String> = stored_triggers(sites, site).await.into_keys().collect();
            panic!("{timeout}; stored: {stored:?}; expected: {expected:?}")
        }
    }
}

/// The TICKS aggregate sequence at `site` of the tick with `sequential_id`, the `count`-th tick stored.
async fn aggregate_sequence(sites: &TwoSites, site: Site, sequential_id: u64, count: u64) -> u64 {
    let wanted = format!("tick:upbit:KRW-BTC:{sequential_id}");
    wait::until("the tick in the aggregate", WITHIN, || async {
        let stored = message_count(sites, site, "TICKS").await?;
        if stored < count {
            return Err(format!("{stored} ticks stored"));
        }
        read_stream(&sites.jetstream(site).await, "TICKS")
            .await
            .into_iter()
            .find(|message| message.message_id.as_deref() == Some(wanted.as_str()))
            .map(|message| message.sequence)
            .ok_or_else(|| wanted.clone())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_the_exact_triggers_and_nothing_twice_across_a_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("coinalarm_matcher=debug")
        .try_init();
    let sites = started().await;
    let publishes = count_publishes(sites.client(Site::Onprem, "admin").await, Site::Onprem).await;
    let onprem = publisher(&sites, Site::Onprem).await;
    let now = Timestamp::now();
    let minute = SignedDuration::from_mins(1);

    publish_alert(&onprem, target_up("t-up", "100"), now - minute).await;
    publish_alert(&onprem, daily_up("c-up", "5"), now - minute).await;
    // Repeating: one in a long cooldown after its firing, one that fires again after the restart.
    publish_alert(
        &onprem,
        repeating(target_up("t-cool", "100"), 3600),
        now - minute,
    )
    .await;
    publish_alert(
        &onprem,
        repeating(target_up("t-again", "100"), 1),
        now - minute,
    )
    .await;
    let (in_grace, in_grace_at) = scheduled_at("s-in", now - 2 * minute);
    publish_alert(&onprem, in_grace, now - SignedDuration::from_hours(24)).await;
    let (too_old, _) = scheduled_at("s-out", now - 30 * minute);
    publish_alert(&onprem, too_old, now - SignedDuration::from_hours(24)).await;
    // Stored before the first start: history for the rebuild (the latest price), not evaluated live.
    let history_sequence = publish_tick(
        &onprem,
        tick(1, "95", "0.01", now - 30 * SignedDuration::from_secs(1)),
    )
    .await;
    // Wait for the aggregates to hold them, or the first start would take the tick for a live one and
    // might fire the scheduled alert after the next tick rather than at start.
    aggregate_sequence(&sites, Site::Onprem, 1, 1).await;
    wait::until("the alert events in the aggregate", WITHIN, || async {
        match message_count(&sites, Site::Onprem, "ALERTS").await? {
            6 => Ok(()),
            other => Err(format!("{other} stored")),
        }
    })
    .await
    .unwrap();

    let matcher = Running::start(&sites, Site::Onprem).await;
    let live_sequence = publish_tick(&onprem, tick(2, "101", "0.06", now)).await;
    let scheduled_id = format!("trg:s-in:o{}", in_grace_at.as_second());
    let expected: BTreeSet<String> = [
        "trg:t-up:g1000000001".to_owned(),
        "trg:c-up:g1000000001".to_owned(),
        "trg:t-cool:g1000000001".to_owned(),
        "trg:t-again:g1000000001".to_owned(),
        scheduled_id.clone(),
    ]
    .into();
    let triggers = wait_for_triggers(&sites, Site::Onprem, &expected).await;

    let up = &triggers["trg:t-up:g1000000001"];
    assert_eq!(up.alert_id.as_str(), "t-up");
    assert_eq!(up.user_id, user());
    assert_eq!(up.home_site, Site::Onprem);
    assert_eq!(
        up.firing,
        Firing::Armed {
            generation: 1_000_000_001
        }
    );
    assert_eq!(up.observed.len(), 1);
    assert_eq!(up.observed[0].price, Price::parse("101").unwrap());
    let tick_ref = up.observed[0].tick.as_ref().unwrap();
    assert_eq!(tick_ref.tick_id.as_str(), "tick:upbit:KRW-BTC:2");
    assert_eq!(tick_ref.stream.as_str(), "TICKS");
    assert_eq!(tick_ref.site, Site::Onprem);
    assert_eq!(
        tick_ref.sequence,
        aggregate_sequence(&sites, Site::Onprem, 2, 2).await
    );
    let change = &triggers["trg:c-up:g1000000001"];
    assert_eq!(
        change.observed[0].change.map(|change| change.value()),
        Some(Decimal::from(6))
    );
    let report = &triggers[&scheduled_id];
    assert_eq!(
        report.firing,
        Firing::Scheduled {
            occurrence: in_grace_at
        }
    );
    assert_eq!(report.observed.len(), 1);
    assert_eq!(
        report.observed[0].price,
        Price::parse("95").unwrap(),
        "the latest price the matcher knew when the occurrence fired"
    );
    assert_eq!(
        report.observed[0].tick.as_ref().unwrap().tick_id.as_str(),
        "tick:upbit:KRW-BTC:1"
    );
    assert!(history_sequence < live_sequence);

    matcher.stop().await;
    // While it is down: a tick back below the targets (re-arming t-again, whose cooldown is over; the
    // once alerts are spent and t-cool is cooling down), and a new alert.
    publish_tick(
        &onprem,
        tick(3, "99", "0.07", now + SignedDuration::from_secs(1)),
    )
    .await;
    publish_alert(
        &onprem,
        target_up("t-after", "110"),
        now + SignedDuration::from_secs(2),
    )
    .await;
    let matcher = Running::start(&sites, Site::Onprem).await;
    publish_tick(
        &onprem,
        tick(4, "111", "0.08", now + SignedDuration::from_secs(3)),
    )
    .await;
    let mut expected_after = expected.clone();
    expected_after.insert("trg:t-after:g1000000001".to_owned());
    // The second firing under version 1: the count was rebuilt from the stored triggers.
    expected_after.insert("trg:t-again:g1000000002".to_owned());
    let triggers = wait_for_triggers(&sites, Site::Onprem, &expected_after).await;
    assert_eq!(
        triggers["trg:t-after:g1000000001"].observed[0].price,
        Price::parse("111").unwrap()
    );
    matcher.stop().await;

    // On the wire, not only in the de-duplicated stream: each trigger was published exactly once.
    let seen = publishes.lock().unwrap().clone();
    let once: BTreeMap<String, usize> = expected_after.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(seen, once);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchers_at_both_sites_produce_one_trigger_each_in_both_aggregates() {
    let sites = started().await;
    let onprem_publishes =
        count_publishes(sites.client(Site::Onprem, "admin").await, Site::Onprem).await;
    let cloud_publishes =
        count_publishes(sites.client(Site::Cloud, "admin").await, Site::Cloud).await;
    let onprem = publisher(&sites, Site::Onprem).await;
    let cloud = publisher(&sites, Site::Cloud).await;
    let now = Timestamp::now();
    publish_alert(
        &onprem,
        target_up("both-up", "100"),
        now - SignedDuration::from_mins(1),
    )
    .await;
    publish_alert(
        &onprem,
        daily_up("both-change", "3"),
        now - SignedDuration::from_mins(1),
    )
    .await;

    let onprem_matcher = Running::start(&sites, Site::Onprem).await;
    let cloud_matcher = Running::start(&sites, Site::Cloud).await;
    // Both sites' ingesters see the same trades.
    for (sequential_id, price, rate, offset) in [
        (10, "90", "0.01", 0),
        (11, "99", "0.02", 1),
        (12, "100", "0.035", 2),
        (13, "105", "0.04", 3),
    ] {
        let at = now + SignedDuration::from_secs(offset);
        publish_tick(&onprem, tick(sequential_id, price, rate, at)).await;
        publish_tick(&cloud, tick(sequential_id, price, rate, at)).await;
    }
    let expected: BTreeSet<String> = [
        "trg:both-up:g1000000001".to_owned(),
        "trg:both-change:g1000000001".to_owned(),
    ]
    .into();
    for site in Site::ALL {
        let triggers = wait_for_triggers(&sites, site, &expected).await;
        let up = &triggers["trg:both-up:g1000000001"];
        assert_eq!(up.observed[0].price, Price::parse("100").unwrap());
        assert_eq!(
            up.observed[0].tick.as_ref().unwrap().tick_id.as_str(),
            "tick:upbit:KRW-BTC:12"
        );
    }
    // Each site computed both triggers itself (same ids), and each aggregate kept one copy.
    published_once(&onprem_publishes, &expected).await;
    published_once(&cloud_publishes, &expected).await;
    onprem_matcher.stop().await;
    cloud_matcher.stop().await;
}

/// Waits until exactly `expected` were published, once each.
async fn published_once(counts: &Arc<Mutex<BTreeMap<String, usize>>>, expected: &BTreeSet<String>) {
    wait::until("the publishes", WITHIN, || async {
        let seen = counts.lock().unwrap().clone();
        let ids: BTreeSet<String> = seen.keys().cloned().collect();
        if &ids == expected && seen.values().all(|count| *count == 1) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await
    .unwrap();
}
