//! A deployment for the API's integration tests: both NATS sites with the topology applied, per site a
//! fresh Postgres database and Redis namespace (each behind a TCP proxy the test can cut, to take the
//! store "down" with the service running), a scripted fake exchange and a fake Twilio, and the
//! configuration tying the API and the pipeline services to them. Services run in this process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use coinalarm_api::session::SessionKeyring;
use coinalarm_dispatcher::fake_twilio::{FakeTwilio, FakeTwilioConfig, LedgerEntry};
use coinalarm_ingest::fake_exchange::{FakeExchange, FakeExchangeConfig};
use coinalarm_runtime::config::Credentials;
use coinalarm_runtime::host::StartFn;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::{Config, Shutdown};
use coinalarm_test_support::nats::TwoSites;
use coinalarm_test_support::ports::free_port;
use coinalarm_test_support::postgres::TestDatabase;
use coinalarm_test_support::redis::TestRedis;
use coinalarm_test_support::wait;
use proto_events::Site;
use proto_events::domain::{PhoneNumber, UserId};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const ACCOUNT_SID: &str = "ACapi0000000000000000000000000000";
pub const AUTH_TOKEN: &str = "api-test-auth-token";
pub const FROM: &str = "+15005550006";
/// Test-only keys (32 bytes each, base64).
pub const SEALING_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
pub const SESSION_KEY: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
pub const PHONE_HASH_KEY: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

pub const API: &[(&str, StartFn)] = &[(coinalarm_api::NAME, coinalarm_api::start)];
pub const PROJECTOR: &[(&str, StartFn)] =
    &[(coinalarm_projector::NAME, coinalarm_projector::start)];
/// What a sign-in needs: the API, the notifier and dispatcher (the SMS), the projector (reads).
pub const SIGN_IN: &[(&str, StartFn)] = &[
    (coinalarm_api::NAME, coinalarm_api::start),
    (coinalarm_notifier::NAME, coinalarm_notifier::start),
    (coinalarm_dispatcher::NAME, coinalarm_dispatcher::start),
    (coinalarm_projector::NAME, coinalarm_projector::start),
];
pub const EVERYTHING: &[(&str, StartFn)] = &[
    (coinalarm_api::NAME, coinalarm_api::start),
    (coinalarm_ingest::NAME, coinalarm_ingest::start),
    (coinalarm_matcher::NAME, coinalarm_matcher::start),
    (coinalarm_notifier::NAME, coinalarm_notifier::start),
    (coinalarm_dispatcher::NAME, coinalarm_dispatcher::start),
    (coinalarm_projector::NAME, coinalarm_projector::start),
];

/// One site's stores, each reached through a proxy.
pub struct SiteStores {
    pub database: TestDatabase,
    pub postgres_proxy: Proxy,
    pub redis: TestRedis,
    pub redis_proxy: Proxy,
    pub api_port: u16,
}

pub struct Harness {
    pub sites: TwoSites,
    pub onprem: SiteStores,
    pub cloud: SiteStores,
    pub exchange: FakeExchange,
    pub twilio: FakeTwilio,
    pub markets: Vec<String>,
}

fn host_port(url: &str) -> (String, u16) {
    let parsed = url::Url::parse(url).expect("url");
    (
        parsed.host_str().expect("host").to_owned(),
        parsed.port().expect("port"),
    )
}

fn through(url: &str, proxy: &Proxy) -> String {
    let mut parsed = url::Url::parse(url).expect("url");
    parsed.set_host(Some("127.0.0.1")).expect("host");
    parsed.set_port(Some(proxy.port)).expect("port");
    parsed.to_string()
}

impl SiteStores {
    async fn create() -> SiteStores {
        let database = TestDatabase::create().await.expect("test database");
        let pool = coinalarm_runtime::postgres::connect_pool(
            &coinalarm_runtime::postgres::PostgresConfig {
                url: database.url().to_owned(),
                ..Default::default()
            },
        )
        .await
        .expect("pool");
        coinalarm_runtime::postgres::migrate(&pool)
            .await
            .expect("migrations");
        drop(pool);
        let (host, port) = host_port(database.url());
        let postgres_proxy = Proxy::start(&host, port);
        let redis = TestRedis::new();
        let (host, port) = host_port(redis.url());
        let redis_proxy = Proxy::start(&host, port);
        SiteStores {
            database,
            postgres_proxy,
            redis,
            redis_proxy,
            api_port: free_port(),
        }
    }
}

impl Harness {
    pub async fn start() -> Harness {
        let _ = coinalarm_runtime::telemetry::init(&coinalarm_runtime::config::TelemetryConfig {
            log_filter: std::env::var("COINALARM_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            ..Default::default()
        });
        coinalarm_dispatcher::twilio::install_crypto_provider();
        let sites = TwoSites::start().await;
        for site in Site::ALL {
            let topology = SiteTopology::new(site, &TopologyOptions::default());
            topology::apply(&topology, &sites.jetstream(site).await, false)
                .await
                .expect("apply topology");
        }
        let onprem = SiteStores::create().await;
        let cloud = SiteStores::create().await;
        let exchange = FakeExchange::start(FakeExchangeConfig::scripted())
            .await
            .expect("fake exchange");
        let twilio = FakeTwilio::start(FakeTwilioConfig::with_account(
            "primary",
            ACCOUNT_SID,
            AUTH_TOKEN,
        ))
        .await
        .expect("fake twilio");
        Harness {
            sites,
            onprem,
            cloud,
            exchange,
            twilio,
            markets: vec!["KRW-BTC".to_owned(), "KRW-ETH".to_owned()],
        }
    }

    pub fn stores(&self, site: Site) -> &SiteStores {
        match site {
            Site::Onprem => &self.onprem,
            Site::Cloud => &self.cloud,
        }
    }

    pub fn api_url(&self, site: Site) -> String {
        format!("http://127.0.0.1:{}", self.stores(site).api_port)
    }

    /// `site`'s configuration, with `api` merged over the API section's test defaults.
    pub fn config(&self, site: Site, api: Value) -> Config {
        let stores = self.stores(site);
        let mut config = Config {
            site,
            shutdown_grace: Duration::from_secs(10),
            ..Config::default()
        };
        config.nats.urls.onprem = self.sites.url(Site::Onprem);
        config.nats.urls.cloud = self.sites.url(Site::Cloud);
        config.nats.request_timeout = Duration::from_secs(3);
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
        config.postgres.url = through(stores.database.url(), &stores.postgres_proxy);
        config.postgres.connect_timeout = 1;
        config.redis.url = through(stores.redis.url(), &stores.redis_proxy);
        config.redis.namespace = stores.redis.namespace().to_owned();
        config.redis.command_timeout_ms = 500;
        config.redis.connect_timeout = 1;
        let sealing = json!({"current": "k1", "keys": {"k1": SEALING_KEY}});
        let api_url = self.api_url(site);
        let mut api_section = section(json!({
            "listen": format!("127.0.0.1:{}", stores.api_port),
            "public_base_url": api_url,
            "phone_hash_key": PHONE_HASH_KEY,
            "session_keys": {"current": "s1", "keys": {"s1": SESSION_KEY}},
            "sealing_keys": sealing,
            "twilio_auth_tokens": {"twilio": AUTH_TOKEN},
            "request_timeout": 15,
            "read_timeout": 2,
        }));
        for (key, value) in section(api) {
            api_section.insert(key, value);
        }
        config.api = api_section;
        config.ingest = section(json!({
            "source": "upbit",
            "url": self.exchange.url(),
            "markets": self.markets,
            "silence_seconds": 30,
        }));
        config.notifier = section(json!({
            "sealing_keys": sealing,
            "coalesce_window": 0.2,
        }));
        config.dispatcher = section(json!({
            "sealing_keys": sealing,
            "providers": {"twilio": {
                "base_url": self.twilio.base_url().to_string(),
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "from": FROM,
                "status_callback_url": format!("{api_url}/v1/twilio/status"),
                "messages_per_second": 0.0,
            }},
        }));
        config
    }

    /// Starts `services` for `config` and waits until the API (if among them) answers.
    pub async fn run(
        &self,
        config: Config,
        services: &'static [(&'static str, StartFn)],
    ) -> Running {
        let running = Running::start(config.clone(), services);
        if services
            .iter()
            .any(|(name, _)| *name == coinalarm_api::NAME)
        {
            let client = Client::new(&self.api_url(config.site));
            wait::until_true("the api to be ready", Duration::from_secs(30), || async {
                client.probe("/readyz").await == Some(StatusCode::OK)
            })
            .await
            .expect("api ready");
        }
        running
    }

    /// A session token for `user_id`, minted with the deployment's session key the way the API
    /// signs them (for tests whose subject is not sign-in).
    pub fn token(&self, user_id: &UserId, phone: &str) -> String {
        let key = base64::engine::general_purpose::STANDARD
            .decode(SESSION_KEY)
            .expect("key");
        let keyring =
            SessionKeyring::new("s1".to_owned(), BTreeMap::from([("s1".to_owned(), key)]));
        let phone = PhoneNumber::parse(phone).expect("phone");
        let phone_key = base64::engine::general_purpose::STANDARD
            .decode(PHONE_HASH_KEY)
            .expect("key");
        let now = jiff::Timestamp::now();
        keyring
            .issue(
                user_id.clone(),
                proto_events::domain::PhoneHash::of(&phone_key, &phone),
                Site::Onprem,
                now,
                now + jiff::SignedDuration::from_hours(1),
            )
            .0
    }

    /// Waits until the ledger holds `count` messages, and returns them.
    pub async fn wait_for_ledger(&self, count: usize, within: Duration) -> Vec<LedgerEntry> {
        let twilio = &self.twilio;
        wait::until(&format!("{count} SMS at the provider"), within, || async {
            let ledger = twilio.ledger();
            if ledger.len() >= count {
                Ok(ledger)
            } else {
                Err(format!("{} so far", ledger.len()))
            }
        })
        .await
        .expect("the expected SMS reach the provider")
    }
}

pub fn section(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        other => panic!("a section is a table, not {other}"),
    }
}

/// Services running in this process until stopped.
pub struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<coinalarm_runtime::shutdown::Outcome>,
}

impl Running {
    pub fn start(config: Config, services: &'static [(&'static str, StartFn)]) -> Running {
        let shutdown = Shutdown::new();
        let host_shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            coinalarm_runtime::host::serve(&config, services, host_shutdown).await
        });
        Running { shutdown, task }
    }

    pub async fn stop(self) -> coinalarm_runtime::shutdown::Outcome {
        self.shutdown.trigger();
        self.task.await.expect("host task")
    }
}

/// A small JSON client for the API.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Status, headers and JSON body (Null when empty or not JSON).
pub type Answer = (StatusCode, Value, HeaderMap);

impl Client {
    pub fn new(base: &str) -> Client {
        coinalarm_dispatcher::twilio::install_crypto_provider();
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            base: base.to_owned(),
            token: None,
        }
    }

    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub async fn send(&self, builder: reqwest::RequestBuilder) -> Answer {
        let response = builder.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body, headers)
    }

    /// The status of a GET, `None` when nothing answers.
    pub async fn probe(&self, path: &str) -> Option<StatusCode> {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .ok()
            .map(|response| response.status())
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value, if_match: Option<u64>) -> Answer {
        let mut builder = self.request(reqwest::Method::PUT, path).json(&body);
        if let Some(version) = if_match {
            builder = builder.header("If-Match", format!("\"{version}\""));
        }
        self.send(builder).await
    }

    pub async fn post_empty(&self, path: &str, if_match: Option<u64>) -> Answer {
        let mut builder = self.request(reqwest::Method::POST, path);
        if let Some(version) = if_match {
            builder = builder.header("If-Match", format!("\"{version}\""));
        }
        self.send(builder).await
    }

    pub async fn delete(&self, path: &str, if_match: Option<u64>) -> Answer {
        let mut builder = self.request(reqwest::Method::DELETE, path);
        if let Some(version) = if_match {
            builder = builder.header("If-Match", format!("\"{version}\""));
        }
        self.send(builder).await
    }
}

/// Asserts an error answer: status, `code`, and a human message.
#[track_caller]
pub fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.0, status, "{:?}", answer.1);
    assert_eq!(answer.1["code"], code, "{:?}", answer.1);
    assert!(
        answer.1["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{:?}",
        answer.1
    );
}

/// The 6-digit code in an SMS text.
pub fn code_in(text: &str) -> String {
    let digits: Vec<char> = text.chars().collect();
    for start in 0..digits.len() {
        let end = start + 6;
        if end <= digits.len()
            && digits[start..end].iter().all(char::is_ascii_digit)
            && (start == 0 || !digits[start - 1].is_ascii_digit())
            && (end == digits.len() || !digits[end].is_ascii_digit())
        {
            return digits[start..end].iter().collect();
        }
    }
    panic!("no 6-digit code in {text:?}");
}

/// A TCP proxy to a store, on its own thread; `set_up(false)` drops its connections and refuses new
/// ones, as if the store went down, with the store itself untouched.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    changes: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(host: &str, upstream_port: u16) -> Proxy {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let up = Arc::new(AtomicBool::new(true));
        let (changes, up_watch) = watch::channel(true);
        let (stopped, stop_watch) = watch::channel(false);
        let thread_up = up.clone();
        let upstream: SocketAddr = format!("{host}:{upstream_port}")
            .parse()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port)));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(proxy_loop(
                listener, upstream, thread_up, up_watch, stop_watch,
            ));
        });
        Proxy {
            port,
            up,
            changes,
            stopped,
            thread: Some(thread),
        }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        let _ = self.changes.send(up);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stopped.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn proxy_loop(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    up: Arc<AtomicBool>,
    up_watch: watch::Receiver<bool>,
    mut stop_watch: watch::Receiver<bool>,
) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop_watch.changed() => break,
        };
        let Ok((mut downstream, _)) = accepted else {
            continue;
        };
        if !up.load(Ordering::SeqCst) {
            drop(downstream);
            continue;
        }
        let mut up_watch = up_watch.clone();
        connections.spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => {}
                _ = up_watch.wait_for(|up| !up) => {}
            }
        });
    }
    connections.abort_all();
}
