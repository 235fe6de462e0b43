//! A whole single-deployment pipeline for end-to-end tests: both NATS sites with the topology applied, a
//! fresh Postgres database, a scripted fake exchange and a fake Twilio, and the configuration that ties
//! the services to them. Services run in-process (`start_services`) or as `coinalarm serve` processes.

#![allow(dead_code)]

pub mod two_sites;

use std::collections::BTreeMap;
use std::time::Duration;

use coinalarm_dispatcher::fake_twilio::{FakeTwilio, FakeTwilioConfig, LedgerEntry};
use coinalarm_ingest::fake_exchange::{FakeExchange, FakeExchangeConfig, FeedMode};
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::config::Credentials;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::{Config, Shutdown};
use coinalarm_test_support::nats::TwoSites;
use coinalarm_test_support::postgres::TestDatabase;
use coinalarm_test_support::wait;
use proto_events::Site;
use serde_json::json;

pub const ACCOUNT_SID: &str = "ACe2e0000000000000000000000000000";
pub const AUTH_TOKEN: &str = "e2e-auth-token";
pub const FROM: &str = "+15005550006";
/// Test-only sealing key shared by the notifier and the dispatcher.
pub const SEALING_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

pub struct Deployment {
    pub sites: TwoSites,
    pub database: TestDatabase,
    /// Shared, so a background task can trade while the test kills and restarts things.
    pub exchange: std::sync::Arc<FakeExchange>,
    pub twilio: FakeTwilio,
}

impl Deployment {
    pub async fn start(feed: FeedMode) -> Deployment {
        let _ = coinalarm_runtime::telemetry::init(&coinalarm_runtime::config::TelemetryConfig {
            log_filter: std::env::var("COINALARM_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            ..Default::default()
        });
        let sites = sites_with_topology().await;
        let database = TestDatabase::create().await.expect("test database");
        let exchange = FakeExchange::start(FakeExchangeConfig {
            feed,
            ..FakeExchangeConfig::default()
        })
        .await
        .expect("fake exchange");
        let twilio = FakeTwilio::start(FakeTwilioConfig::with_account(
            "primary",
            ACCOUNT_SID,
            AUTH_TOKEN,
        ))
        .await
        .expect("fake twilio");
        Deployment {
            sites,
            database,
            exchange: std::sync::Arc::new(exchange),
            twilio,
        }
    }

    /// The configuration of `site`'s services: each service connects as its own NATS user.
    pub fn config(&self, site: Site, markets: &[&str]) -> Config {
        let mut config = Config {
            site,
            shutdown_grace: Duration::from_secs(10),
            ..Config::default()
        };
        config.nats.urls.onprem = self.sites.url(Site::Onprem);
        config.nats.urls.cloud = self.sites.url(Site::Cloud);
        config.nats.user = Some("admin".to_owned());
        config.nats.password = Some(self.sites.password("admin").to_owned());
        config.nats.users = [
            "ingest",
            "matcher",
            "notifier",
            "dispatcher",
            "projector",
            "api",
        ]
        .into_iter()
        .map(|user| {
            (
                user.to_owned(),
                Credentials {
                    user: user.to_owned(),
                    password: self.sites.password(user).to_owned(),
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
        config.postgres.url = self.database.url().to_owned();
        let sealing = json!({"current": "k1", "keys": {"k1": SEALING_KEY}});
        config.ingest = section(json!({
            "source": "upbit",
            "url": self.exchange.url().to_string(),
            "markets": markets,
            "silence_seconds": 30,
        }));
        config.notifier = section(json!({
            "sealing_keys": sealing,
            "coalesce_window": 0.5,
        }));
        config.dispatcher = section(json!({
            "sealing_keys": sealing,
            "providers": {"twilio": {
                "base_url": self.twilio.base_url().to_string(),
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "from": FROM,
                // The fake is not a long code limited to 1 message per second.
                "messages_per_second": 1000.0,
                "burst": 100,
            }},
        }));
        config
    }

    /// A bus to publish events as the API would.
    pub async fn api_bus(&self, site: Site) -> Bus {
        Bus::from_client(
            self.sites.client(site, "api").await,
            site,
            "api",
            Duration::from_secs(5),
        )
    }

    /// Waits until `site`'s matcher has created its tick consumer. On a first start the matcher reads
    /// the ticks stored before that as history, not as crossings, so a test that trades before it is
    /// ready (a loaded machine starts it late) would wait for an SMS that never comes.
    pub async fn wait_matcher_ready(&self, site: Site) {
        let jetstream = self.sites.jetstream(site).await;
        wait::until_true(
            &format!("{site}'s matcher tick consumer"),
            Duration::from_secs(60),
            || async {
                jetstream
                    .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                        "matcher", "TICKS",
                    )
                    .await
                    .is_ok()
            },
        )
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"));
    }

    /// Waits until the ledger holds `count` messages, and returns them.
    pub async fn wait_for_ledger(&self, count: usize, within: Duration) -> Vec<LedgerEntry> {
        let twilio = &self.twilio;
        wait::until(&format!("{count} SMS at the provider"), within, || async {
            let ledger = twilio.ledger();
            if ledger.len() >= count {
                Ok(ledger)
            } else {
                Err(format!(
                    "{} so far: {:?}",
                    ledger.len(),
                    ledger.iter().map(|e| &e.body).collect::<Vec<_>>()
                ))
            }
        })
        .await
        .expect("the expected SMS reach the provider")
    }
}

/// Both NATS sites with the topology applied, and nothing else: for tests that drive the streams and one
/// service directly.
pub async fn sites_with_topology() -> TwoSites {
    let sites = TwoSites::start().await;
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        topology::apply(&topology, &sites.jetstream(site).await, false)
            .await
            .expect("apply topology");
    }
    sites
}

/// The configuration of an on-prem projector (and the operator commands, which connect as `admin`)
/// against `database`.
pub fn projector_config(sites: &TwoSites, database: &TestDatabase) -> Config {
    let mut config = Config {
        site: Site::Onprem,
        ..Config::default()
    };
    config.nats.urls.onprem = sites.url(Site::Onprem);
    config.nats.urls.cloud = sites.url(Site::Cloud);
    config.nats.users.insert(
        "projector".to_owned(),
        Credentials {
            user: "projector".to_owned(),
            password: sites.password("projector").to_owned(),
        },
    );
    config.postgres.url = database.url().to_owned();
    config
}

pub fn section(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("a section is a table, not {other}"),
    }
}

/// Runs the pipeline's services for `config` in this process until the returned handle is stopped.
pub struct RunningServices {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<coinalarm_runtime::shutdown::Outcome>,
}

pub fn start_services(
    config: Config,
    services: &'static [(&'static str, coinalarm_runtime::host::StartFn)],
) -> RunningServices {
    let shutdown = Shutdown::new();
    let host_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        coinalarm_runtime::host::serve(&config, services, host_shutdown).await
    });
    RunningServices { shutdown, task }
}

impl RunningServices {
    pub async fn stop(self) -> coinalarm_runtime::shutdown::Outcome {
        self.shutdown.trigger();
        self.task.await.expect("host task")
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

pub const PIPELINE: &[(&str, coinalarm_runtime::host::StartFn)] = &[
    (coinalarm_ingest::NAME, coinalarm_ingest::start),
    (coinalarm_matcher::NAME, coinalarm_matcher::start),
    (coinalarm_notifier::NAME, coinalarm_notifier::start),
    (coinalarm_dispatcher::NAME, coinalarm_dispatcher::start),
    (coinalarm_projector::NAME, coinalarm_projector::start),
];

pub const WITHOUT_MATCHER: &[(&str, coinalarm_runtime::host::StartFn)] = &[
    (coinalarm_ingest::NAME, coinalarm_ingest::start),
    (coinalarm_notifier::NAME, coinalarm_notifier::start),
    (coinalarm_dispatcher::NAME, coinalarm_dispatcher::start),
    (coinalarm_projector::NAME, coinalarm_projector::start),
];

pub const MATCHER: &[(&str, coinalarm_runtime::host::StartFn)] =
    &[(coinalarm_matcher::NAME, coinalarm_matcher::start)];
