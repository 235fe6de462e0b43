//! Both sites running the whole pipeline, each as one `coinalarm serve` process (so a site can be
//! SIGKILLed: its process and its nats-server), each with its own Postgres database, sharing the fake
//! exchange (both ingest the same trades) and the fake provider (one ledger of everything sent).
//!
//! Also the load (a steady climb of the price across one alert's target per step), the checks that
//! both sites' streams and read models converge, and a lock that runs these heavy tests one at a time
//! even when the test runner starts them in parallel processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use coinalarm_ingest::fake_exchange::FeedMode;
use coinalarm_runtime::Config;
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::nats::status;
use coinalarm_runtime::nats::topology::{SiteTopology, TopologyOptions};
use coinalarm_runtime::sites::{Liveness, SitesConfig};
use coinalarm_test_support::nats::read_stream;
use coinalarm_test_support::postgres::TestDatabase;
use coinalarm_test_support::wait;
use proto_events::domain::{AlertId, MarketCode, PhoneHash, PhoneNumber, Price, UserId};
use proto_events::events::alerts::AlertCreated;
use proto_events::events::users::UserRegistered;
use proto_events::{Category, Envelope, Event, Site};
use rust_decimal::Decimal;
use serde_json::json;

use super::Deployment;

pub const START_PRICE: i64 = 95_000_000;
pub const TARGET_STEP: i64 = 1_000;
pub const MARKET: &str = "KRW-BTC";
const SERVICES: [&str; 5] = ["ingest", "matcher", "notifier", "dispatcher", "projector"];

/// Runs the failover tests one at a time (they start two sites and ten services each, and measure
/// seconds): an exclusive lock on a file, held for the life of the value.
pub struct HeavyTestLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl HeavyTestLock {
    pub async fn acquire() -> HeavyTestLock {
        let path = std::env::temp_dir().join("coinalarm-failover-tests.lock");
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .expect("lock file");
            let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, error)| error)
                .expect("lock the failover tests");
            HeavyTestLock { _lock: lock }
        })
        .await
        .expect("lock task")
    }
}

/// One alert of the load: a user with one target-price alert homed at `home`.
#[derive(Debug, Clone)]
pub struct LoadAlert {
    pub index: usize,
    pub phone: String,
    pub home: Site,
    pub alert_id: AlertId,
}

pub struct TwoSiteDeployment {
    pub deployment: Deployment,
    pub cloud_database: TestDatabase,
    pub directory: tempfile::TempDir,
    processes: BTreeMap<Site, tokio::process::Child>,
    metrics_ports: BTreeMap<Site, u16>,
    /// Message ids of every alert and user event the API bus had acknowledged.
    pub acknowledged: Vec<String>,
    _lock: HeavyTestLock,
}

impl TwoSiteDeployment {
    pub async fn start() -> TwoSiteDeployment {
        let lock = HeavyTestLock::acquire().await;
        let deployment = Deployment::start(FeedMode::Scripted).await;
        let cloud_database = TestDatabase::create().await.expect("cloud database");
        let metrics_ports = Site::ALL
            .into_iter()
            .map(|site| (site, coinalarm_test_support::ports::free_port()))
            .collect();
        TwoSiteDeployment {
            deployment,
            cloud_database,
            directory: tempfile::tempdir().expect("temporary directory"),
            processes: BTreeMap::new(),
            metrics_ports,
            acknowledged: Vec::new(),
            _lock: lock,
        }
    }

    pub fn database(&self, site: Site) -> &TestDatabase {
        match site {
            Site::Onprem => &self.deployment.database,
            Site::Cloud => &self.cloud_database,
        }
    }

    /// `site`'s configuration: its own database and metrics port, JSON logs.
    pub fn config(&self, site: Site) -> Config {
        let mut config = self.deployment.config(site, &[MARKET]);
        config.postgres.url = self.database(site).url().to_owned();
        config.telemetry.log_format = coinalarm_runtime::config::LogFormat::Json;
        config.telemetry.log_filter = "info".to_owned();
        config.telemetry.metrics_listen = Some(format!("127.0.0.1:{}", self.metrics_ports[&site]));
        config.shutdown_grace = Duration::from_secs(5);
        // Requests a killed dispatcher had taken come back within seconds, not a minute.
        config.dispatcher.insert("ack_wait".to_owned(), json!(10.0));
        config
    }

    fn log_path(&self, site: Site) -> PathBuf {
        self.directory.path().join(format!("{site}.log"))
    }

    /// Starts `site`'s services as one `coinalarm serve` process.
    pub fn spawn(&mut self, site: Site) {
        let config_file = self.directory.path().join(format!("{site}.toml"));
        std::fs::write(
            &config_file,
            toml::to_string(&self.config(site)).expect("config as toml"),
        )
        .expect("write config");
        let child = spawn_serve(&config_file, &self.log_path(site));
        self.processes.insert(site, child);
    }

    /// SIGKILLs `site`'s service process.
    pub async fn kill_services(&mut self, site: Site) {
        if let Some(mut child) = self.processes.remove(&site) {
            child.start_kill().expect("SIGKILL");
            let _ = child.wait().await;
        }
    }

    /// The tail of `site`'s service log, for failure messages.
    pub fn log_tail(&self, site: Site, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(site)).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Registers one user per alert and defines its target-price alert at its home site: alert
    /// `index` fires when the climb reaches step `index + 1`.
    pub async fn define_alerts(
        &mut self,
        count: usize,
        home: impl Fn(usize) -> Site,
    ) -> Vec<LoadAlert> {
        let buses: BTreeMap<Site, Bus> = [
            (Site::Onprem, self.deployment.api_bus(Site::Onprem).await),
            (Site::Cloud, self.deployment.api_bus(Site::Cloud).await),
        ]
        .into();
        let mut alerts = Vec::with_capacity(count);
        for index in 0..count {
            let home = home(index);
            let bus = &buses[&home];
            let phone = PhoneNumber::parse(&format!("+82102{index:07}")).expect("phone");
            let user_id = UserId::new();
            let registered = UserRegistered {
                user_id: user_id.clone(),
                phone_hash: PhoneHash::of(b"failover", &phone),
                phone: phone.clone(),
                home_site: home,
            };
            let envelope = Envelope::new(registered, home);
            bus.publish_expecting(&envelope, home, 0, None)
                .await
                .expect("user registered");
            self.acknowledged.push(envelope.id.as_str().to_owned());
            let alert_id = AlertId::new();
            let target = START_PRICE + TARGET_STEP * (index as i64 + 1);
            let alert: AlertCreated = serde_json::from_value(json!({
                "alert_id": alert_id,
                "user_id": user_id,
                "home_site": home,
                "spec": {"exchange": "upbit", "repeat": {"mode": "once"}, "condition": {
                    "kind": "target_price", "market": MARKET, "target": target.to_string(),
                    "direction": "up", "side_at_creation": "below"}},
            }))
            .expect("alert");
            let envelope = Envelope::new(alert, home);
            bus.publish_expecting(&envelope, home, 0, None)
                .await
                .expect("alert created");
            self.acknowledged.push(envelope.id.as_str().to_owned());
            alerts.push(LoadAlert {
                index,
                phone: phone.as_str().to_owned(),
                home,
                alert_id,
            });
        }
        alerts
    }

    /// Waits until both ingesters are subscribed and each site is in sync with the other (as a
    /// watcher at each site judges from the beats).
    pub async fn wait_ready(&self) {
        wait::until_true(
            "both ingesters to subscribe",
            Duration::from_secs(60),
            || async { self.deployment.exchange.subscriber_count() >= 2 },
        )
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"));
        for site in Site::ALL {
            let watcher = self.watcher(site).await;
            wait::until(
                &format!("{site} in sync with its peer"),
                Duration::from_secs(60),
                || async {
                    let view = watcher.liveness.view();
                    if view.phase.name() == "in_sync" && view.peer_service_alive("dispatcher") {
                        Ok(())
                    } else {
                        Err(format!("{view:?}"))
                    }
                },
            )
            .await
            .unwrap_or_else(|timeout| panic!("{timeout}"));
            watcher.stop();
        }
    }

    /// A liveness watcher at `site`, as the services there run one.
    pub async fn watcher(&self, site: Site) -> Watcher {
        let shutdown = coinalarm_runtime::Shutdown::new();
        let bus = Bus::from_client(
            self.deployment.sites.client(site, "admin").await,
            site,
            "admin",
            Duration::from_secs(5),
        );
        let liveness = Liveness::start(&bus, SitesConfig::default(), "test", shutdown.clone());
        Watcher { liveness, shutdown }
    }

    /// Starts the climb: one trade per `period`, step `from` to `to` (exclusive), in the background.
    pub fn climb(&self, from: u64, to: u64, period: Duration) -> Climb {
        let exchange = self.deployment.exchange.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let step = Arc::new(AtomicU64::new(from));
        let task = tokio::spawn({
            let stop = stop.clone();
            let step = step.clone();
            async move {
                let market = MarketCode::parse(MARKET).expect("market");
                let mut ticker = tokio::time::interval(period);
                for current in from..to {
                    ticker.tick().await;
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let price = Decimal::from(START_PRICE + TARGET_STEP * current as i64)
                        + Decimal::from(TARGET_STEP / 2);
                    exchange.push_trade(&market, Price::new(price).expect("price"));
                    step.store(current + 1, Ordering::SeqCst);
                }
            }
        });
        Climb { task, stop, step }
    }

    /// Waits until every phone in `phones` has at least one SMS.
    pub async fn wait_every_phone(&self, phones: &BTreeSet<String>, within: Duration) {
        let twilio = &self.deployment.twilio;
        let result = wait::until("every expected SMS", within, || async {
            let reached: BTreeSet<String> =
                twilio.ledger().into_iter().map(|entry| entry.to).collect();
            let missing: Vec<&String> = phones.difference(&reached).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} phones not reached: {missing:?}",
                    missing.len(),
                    phones.len()
                ))
            }
        })
        .await;
        if let Err(timeout) = result {
            panic!(
                "{timeout}\n--- onprem ---\n{}\n--- cloud ---\n{}",
                self.log_tail(Site::Onprem, 20),
                self.log_tail(Site::Cloud, 20)
            );
        }
    }

    /// SMS per phone in the provider's ledger.
    pub fn ledger_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for entry in self.deployment.twilio.ledger() {
            *counts.entry(entry.to).or_default() += 1;
        }
        counts
    }

    /// Waits until both sites' dispatchers and notifiers have settled everything.
    pub async fn wait_drained(&self, within: Duration) {
        for site in Site::ALL {
            let jetstream = self.deployment.sites.jetstream(site).await;
            wait::until(
                &format!("{site} to settle every message"),
                within,
                || async {
                    let mut open = Vec::new();
                    for (stream, consumer) in [
                        ("DISPATCH", "dispatcher"),
                        ("DISPATCH", "dispatcher-sign-in"),
                        ("TRIGGERS", "notifier"),
                        ("AUTH", "notifier"),
                    ] {
                        let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
                            .get_consumer_from_stream(consumer, stream)
                            .await
                            .map_err(|error| format!("{stream}/{consumer}: {error}"))?;
                        let info = consumer.info().await.map_err(|error| error.to_string())?;
                        let pending = info.num_pending + info.num_ack_pending as u64;
                        if pending > 0 {
                            open.push(format!("{stream}/{}: {pending}", info.name));
                        }
                    }
                    if open.is_empty() {
                        Ok(())
                    } else {
                        Err(open.join(", "))
                    }
                },
            )
            .await
            .unwrap_or_else(|timeout| panic!("{timeout}"));
        }
    }

    /// Waits until every aggregate at both sites has taken in all of both origins, then checks that
    /// both sites hold the same messages (by id) in every aggregate.
    pub async fn assert_streams_converge(&self, within: Duration) {
        let contexts: BTreeMap<Site, async_nats::jetstream::Context> = [
            (
                Site::Onprem,
                self.deployment.sites.jetstream(Site::Onprem).await,
            ),
            (
                Site::Cloud,
                self.deployment.sites.jetstream(Site::Cloud).await,
            ),
        ]
        .into();
        wait::until("every source to catch up", within, || async {
            for site in Site::ALL {
                let topology = SiteTopology::new(site, &TopologyOptions::default());
                let status = status::collect(
                    &topology,
                    &contexts[&site],
                    Some(&contexts[&site.peer()]),
                    None,
                )
                .await;
                let behind: Vec<String> = status
                    .sources
                    .iter()
                    .filter(|source| source.lag != Some(0))
                    .map(|source| {
                        format!(
                            "{} from {}: {:?}",
                            source.aggregate, source.origin, source.lag
                        )
                    })
                    .collect();
                if !behind.is_empty() {
                    return Err(format!("{site}: {}", behind.join(", ")));
                }
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"));
        // Heartbeats keep flowing while we read: compare only beats older than a few seconds (their
        // ids carry the beat's unix milliseconds), which both sites must hold by now.
        let settled_before = jiff::Timestamp::now().as_millisecond() - 3_000;
        let settled = |id: &str| {
            id.strip_prefix("hb:")
                .and_then(|rest| rest.rsplit(':').next())
                .and_then(|millis| millis.parse::<i64>().ok())
                .is_none_or(|millis| millis < settled_before)
        };
        for category in Category::ALL {
            let stream = category.aggregate_stream();
            let mut ids: BTreeMap<Site, Vec<String>> = BTreeMap::new();
            for site in Site::ALL {
                let mut site_ids: Vec<String> = read_stream(&contexts[&site], stream)
                    .await
                    .into_iter()
                    .map(|message| message.message_id.unwrap_or_default())
                    .filter(|id| settled(id))
                    .collect();
                let total = site_ids.len();
                site_ids.sort();
                site_ids.dedup();
                assert_eq!(
                    site_ids.len(),
                    total,
                    "{stream} at {site} holds a message twice"
                );
                ids.insert(site, site_ids);
            }
            assert_eq!(
                ids[&Site::Onprem].len(),
                ids[&Site::Cloud].len(),
                "{stream}: the sites hold different numbers of messages"
            );
            assert!(
                ids[&Site::Onprem] == ids[&Site::Cloud],
                "{stream}: the sites differ"
            );
        }
    }

    /// Every message id of `stream` at `site`.
    pub async fn message_ids(&self, site: Site, stream: &str) -> BTreeSet<String> {
        read_stream(&self.deployment.sites.jetstream(site).await, stream)
            .await
            .into_iter()
            .filter_map(|message| message.message_id)
            .collect()
    }

    /// Every event of `stream` at `site`, decoded.
    pub async fn events(&self, site: Site, stream: &str) -> Vec<Envelope<Event>> {
        read_stream(&self.deployment.sites.jetstream(site).await, stream)
            .await
            .into_iter()
            .filter_map(|message| proto_events::decode(&message.payload).ok())
            .collect()
    }

    /// Waits until both sites' read models hold the same alerts, users, triggers and dispatch
    /// statuses (what can legitimately differ — which site's copy of a request arrived first — is not
    /// compared).
    pub async fn assert_read_models_converge(&self, within: Duration) {
        const QUERIES: [&str; 4] = [
            "SELECT coalesce(string_agg(alert_id || ':' || status || ':' || version, ',' ORDER BY alert_id), '') FROM alerts",
            "SELECT coalesce(string_agg(user_id, ',' ORDER BY user_id), '') FROM users",
            "SELECT coalesce(string_agg(trigger_id, ',' ORDER BY trigger_id), '') FROM triggers",
            "SELECT coalesce(string_agg(dispatch_id || ':' || status || ':' || sent_count, ',' ORDER BY dispatch_id), '') FROM dispatches",
        ];
        let read = |site: Site| async move {
            // A fresh connection per look: the shared test server may restart under a long test.
            let client = self
                .database(site)
                .connect()
                .await
                .map_err(|error| error.to_string())?;
            let mut answers = Vec::new();
            for query in QUERIES {
                let row = client
                    .query_one(query, &[])
                    .await
                    .map_err(|error| error.to_string())?;
                answers.push(row.get::<_, String>(0));
            }
            Ok::<_, String>(answers)
        };
        wait::until("both read models to agree", within, || async {
            let onprem = read(Site::Onprem).await?;
            let cloud = read(Site::Cloud).await?;
            match onprem
                .iter()
                .zip(&cloud)
                .position(|(left, right)| left != right)
            {
                None => Ok(()),
                Some(index) => Err(format!(
                    "{}: onprem {} entries, cloud {}",
                    QUERIES[index],
                    onprem[index].split(',').count(),
                    cloud[index].split(',').count()
                )),
            }
        })
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"));
    }

    /// The duplicate SMS `site`'s read model counts (`dispatches.sent_count` beyond one).
    pub async fn read_model_duplicates(&self, site: Site) -> Result<i64, String> {
        let client = self
            .database(site)
            .connect()
            .await
            .map_err(|error| error.to_string())?;
        let row = client
            .query_one(
                "SELECT coalesce(sum(sent_count - 1), 0)::bigint FROM dispatches WHERE sent_count > 1",
                &[],
            )
            .await
            .map_err(|error| error.to_string())?;
        Ok(row.get(0))
    }

    /// Sum of a counter over every label set, from `site`'s process's `/metrics`.
    pub async fn metric_sum(&self, site: Site, name: &str) -> Result<f64, String> {
        let port = self.metrics_ports[&site];
        let text = http_get(port, "/metrics").await?;
        Ok(text
            .lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

impl Drop for TwoSiteDeployment {
    fn drop(&mut self) {
        for child in self.processes.values_mut() {
            let _ = child.start_kill();
        }
        // A failed test keeps the services' logs.
        if std::thread::panicking()
            && let Ok(empty) = tempfile::tempdir()
        {
            let kept = std::mem::replace(&mut self.directory, empty).keep();
            eprintln!("service logs kept in {}", kept.display());
        }
    }
}

pub struct Watcher {
    pub liveness: Liveness,
    shutdown: coinalarm_runtime::Shutdown,
}

impl Watcher {
    pub fn stop(&self) {
        self.shutdown.trigger();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The price climbing in the background.
pub struct Climb {
    task: tokio::task::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    step: Arc<AtomicU64>,
}

impl Climb {
    /// The next step to be traded.
    pub fn step(&self) -> u64 {
        self.step.load(Ordering::SeqCst)
    }

    pub async fn finish(self) {
        let _ = self.task.await;
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
    }
}

fn spawn_serve(config_file: &Path, log_path: &Path) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("log file");
    let mut arguments = vec!["serve"];
    arguments.extend(SERVICES);
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coinalarm"))
        .args(arguments)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("COINALARM_CONFIG", config_file)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start coinalarm serve")
}

async fn http_get(port: u16, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|error| error.to_string())?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|error| error.to_string())?;
    Ok(response)
}

/// Duplicates in a ledger count: every SMS beyond the first to a phone.
pub fn duplicates(counts: &BTreeMap<String, usize>) -> usize {
    counts.values().map(|count| count.saturating_sub(1)).sum()
}

/// Duplicates visible in the outcome events: per dispatch, every `dispatch.sent` beyond the first.
pub fn outcome_duplicates(dispatch: &[Envelope<Event>]) -> usize {
    let mut sends: BTreeMap<String, BTreeSet<(Site, u32)>> = BTreeMap::new();
    for envelope in dispatch {
        if let Event::DispatchSent(sent) = &envelope.data {
            sends
                .entry(sent.dispatch_id.as_str().to_owned())
                .or_default()
                .insert((sent.site, sent.attempt));
        }
    }
    sends
        .values()
        .map(|sends| sends.len().saturating_sub(1))
        .sum()
}
