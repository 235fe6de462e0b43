//! The pipeline in one process at one site (ingest → matcher → notifier → dispatcher, the fake exchange
//! and the fake Twilio on loopback, the other site up and replicating): `alerts` users each with one
//! target-price alert on one market, then a single trade that crosses every target. Measures the time
//! from that trade to the last SMS accepted by the provider.

use std::time::{Duration, Instant};

use coinalarm_dispatcher::fake_twilio::{FakeTwilio, FakeTwilioConfig};
use coinalarm_ingest::fake_exchange::{FakeExchange, FakeExchangeConfig, FeedMode};
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::config::Credentials;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::{Config, Shutdown};
use proto_events::domain::{AlertId, MarketCode, PhoneHash, PhoneNumber, Price, UserId};
use proto_events::events::alerts::AlertCreated;
use proto_events::events::users::UserRegistered;
use proto_events::{Envelope, Site};
use serde_json::json;

const ACCOUNT: &str = "ACbench000000000000000000000000000";
const TOKEN: &str = "bench-token";
const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fn section(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    value.as_object().cloned().unwrap_or_default()
}

pub async fn run(alerts: usize, raw_publish_per_second: Option<f64>) -> anyhow::Result<String> {
    let sites = coinalarm_test_support::nats::TwoSites::start().await;
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        topology::apply(&topology, &sites.jetstream(site).await, false).await?;
    }
    let exchange = FakeExchange::start(FakeExchangeConfig {
        feed: FeedMode::Scripted,
        ..FakeExchangeConfig::default()
    })
    .await?;
    let twilio = FakeTwilio::start(FakeTwilioConfig::with_account("bench", ACCOUNT, TOKEN)).await?;

    let bus = Bus::from_client(
        sites.client(Site::Onprem, "api").await,
        Site::Onprem,
        "api",
        Duration::from_secs(5),
    );
    for index in 0..alerts {
        let user_id = UserId::new();
        let phone = PhoneNumber::parse(&format!("+8210{:08}", index))?;
        let registered = UserRegistered {
            user_id: user_id.clone(),
            phone_hash: PhoneHash::of(b"bench", &phone),
            phone,
            home_site: Site::Onprem,
        };
        bus.publish(&Envelope::new(registered, Site::Onprem), None)
            .await?;
        let alert: AlertCreated = serde_json::from_value(json!({
            "alert_id": AlertId::new(), "user_id": user_id, "home_site": "onprem",
            "spec": {"exchange": "upbit", "repeat": {"mode": "once"}, "condition": {
                "kind": "target_price", "market": "KRW-BTC",
                "target": (95_000_000 + 100 * (index as i64 + 1)).to_string(),
                "direction": "up", "side_at_creation": "below"}},
        }))?;
        bus.publish(&Envelope::new(alert, Site::Onprem), None)
            .await?;
    }

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
    let sealing = json!({"current": "k1", "keys": {"k1": KEY}});
    config.ingest = section(json!({"url": exchange.url().to_string(), "markets": ["KRW-BTC"]}));
    config.notifier = section(
        json!({"sealing_keys": sealing, "coalesce_window": 0.05, "hourly_cap": 0, "default_daily_cap": 0}),
    );
    config.dispatcher = section(
        json!({"sealing_keys": sealing, "concurrency": 64, "providers": {"twilio": {
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
    let host_config = config.clone();
    let host = tokio::spawn(async move {
        coinalarm_runtime::host::serve(&host_config, services, host_shutdown).await
    });

    coinalarm_test_support::wait::until_true(
        "ingest to subscribe",
        Duration::from_secs(60),
        || async { exchange.subscriber_count() > 0 },
    )
    .await?;
    let market = MarketCode::parse("KRW-BTC")?;
    exchange.push_trade(&market, Price::parse("95000000")?);
    // Let the matcher and notifier settle on the first price (and the sites' rejoin hold pass).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let started = Instant::now();
    exchange.push_trade(
        &market,
        Price::parse(&(95_000_000 + 100 * (alerts as i64 + 1)).to_string())?,
    );
    let result =
        coinalarm_test_support::wait::until_true("every SMS", Duration::from_secs(600), || async {
            twilio.ledger().len() >= alerts
        })
        .await;
    let seconds = started.elapsed().as_secs_f64();
    shutdown.trigger();
    let _ = host.await;
    result?;
    let per_second = alerts as f64 / seconds;
    // Origin writes per notification on the hot path: trigger, dispatch request, claim, sent.
    let writes = 4.0;
    let ratio = raw_publish_per_second
        .map(|raw| format!("{:.1} %", 100.0 * per_second * writes / raw))
        .unwrap_or_else(|| "—".to_owned());
    Ok(format!(
        "## Pipeline burst (one trade crossing {alerts} alerts of {alerts} users)\n\n\
         | notifications | seconds to the last SMS | notifications/s | efficiency (×4 writes ÷ raw publish) |\n\
         |---|---|---|---|\n| {alerts} | {seconds:.2} | {per_second:.0} | {ratio} |\n"
    ))
}
