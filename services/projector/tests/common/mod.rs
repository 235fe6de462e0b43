//! Shared setup of the projector tests: both NATS sites with the topology applied, a fresh database,
//! a config that connects as the `projector` user, event builders, a Postgres proxy that can be cut,
//! and waits on checkpoints.

#![allow(dead_code, reason = "each test binary uses part of the helpers")]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use coinalarm_projector::Projection;
use coinalarm_runtime::bus::{Bus, Published};
use coinalarm_runtime::config::Credentials;
use coinalarm_runtime::nats::topology::{SiteTopology, TopologyOptions, apply};
use coinalarm_runtime::{Config, Shutdown};
use coinalarm_test_support::nats::TwoSites;
use coinalarm_test_support::postgres::TestDatabase;
use coinalarm_test_support::wait;
use jiff::Timestamp;
use proto_events::domain::*;
use proto_events::events::*;
use proto_events::{DispatchId, Envelope, Firing, MessageId, Priority, Site, TriggerId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Generous: two real sites, replication and a database on a shared 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub const PHONE_KEY: &[u8] = b"projector-test-key";

pub fn time(text: &str) -> Timestamp {
    text.parse().expect("test time")
}

pub fn market(code: &str) -> MarketCode {
    MarketCode::parse(code).expect("market")
}

pub fn price(text: &str) -> Price {
    Price::parse(text).expect("price")
}

/// Logs of the code under test, shown for failing tests (filter with `RUST_LOG`, e.g.
/// `RUST_LOG=coinalarm_projector=debug`).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Both sites up, topology applied at both.
pub async fn started_sites() -> TwoSites {
    init_logs();
    let sites = TwoSites::start().await;
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        apply(&topology, &sites.jetstream(site).await, false)
            .await
            .unwrap_or_else(|error| panic!("topology at {site}: {error}"));
    }
    sites
}

/// A config for `site` that reaches NATS as the least-privileged `projector` user and Postgres at
/// `postgres_url`, with small batches and quick retries so tests cross batch boundaries and recover fast.
pub fn config(
    sites: &TwoSites,
    site: Site,
    postgres_url: &str,
    projector: serde_json::Value,
) -> Config {
    let mut config = Config {
        site,
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
    config.postgres.url = postgres_url.to_owned();
    config.postgres.pool_size = 4;
    config.postgres.connect_timeout = 2;
    let mut settings = serde_json::json!({
        "batch_size": 50,
        "tick_batch_size": 50,
        "fetch_wait": 0.2,
        "ack_wait": 5.0,
        "retry_min": 0.05,
        "retry_max": 0.5,
    });
    if let (Some(base), serde_json::Value::Object(overrides)) =
        (settings.as_object_mut(), projector)
    {
        base.extend(overrides);
    }
    if let serde_json::Value::Object(map) = settings {
        config.projector = map;
    }
    config
}

/// A running projector task.
pub struct RunningProjector {
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), coinalarm_runtime::shutdown::BoxError>>,
}

impl RunningProjector {
    pub fn start(config: &Config) -> RunningProjector {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(coinalarm_projector::run(config.clone(), shutdown.clone()));
        RunningProjector { shutdown, task }
    }

    /// Graceful stop: in-flight batches finish or are given back.
    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the projector stops within the grace period")
            .expect("the projector task did not panic")
            .expect("the projector ended cleanly");
    }

    /// A crash: the task is dropped wherever it is, with no acknowledgement, nak or rollback sent
    /// (Postgres rolls back the open transaction when the connection goes).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Publishes events as `site`'s producers would (to `site`'s origin streams), as `admin`.
pub struct Publisher {
    bus: Bus,
}

impl Publisher {
    pub async fn new(sites: &TwoSites, site: Site) -> Publisher {
        let client = sites.client(site, "admin").await;
        Publisher {
            bus: Bus::from_client(client, site, "test", Duration::from_secs(5)),
        }
    }

    pub async fn publish<T: EventData>(&self, envelope: &Envelope<T>) -> Published {
        self.bus
            .publish(envelope, None)
            .await
            .unwrap_or_else(|error| panic!("publish {}: {error}", envelope.id.as_str()))
    }

    /// Publishes raw bytes that are not an event.
    pub async fn publish_raw(&self, subject: &str, message_id: &str, body: &'static [u8]) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id);
        self.bus
            .jetstream()
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await
            .expect("publish raw")
            .await
            .expect("raw message acknowledged");
    }
}

/// The last position of a stream at `site`.
pub async fn last_sequence(jetstream: &jetstream::Context, stream: &str) -> u64 {
    jetstream
        .get_stream(stream)
        .await
        .unwrap_or_else(|error| panic!("stream {stream}: {error}"))
        .info()
        .await
        .unwrap_or_else(|error| panic!("stream {stream} info: {error}"))
        .state
        .last_sequence
}

/// Waits until `stream` holds `count` messages (the sourcing from both origins has caught up).
pub async fn wait_stream_holds(jetstream: &jetstream::Context, stream: &str, count: u64) {
    wait::until(
        &format!("{stream} to hold {count} messages"),
        PATIENCE,
        || async {
            let mut handle = jetstream
                .get_stream(stream)
                .await
                .map_err(|e| e.to_string())?;
            let messages = handle
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .messages;
            if messages >= count {
                Ok(())
            } else {
                Err(format!("{messages} so far"))
            }
        },
    )
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
}

pub async fn checkpoint(db: &tokio_postgres::Client, schema: &str, projection: Projection) -> u64 {
    let row = db
        .query_opt(
            &format!(
                "SELECT last_sequence FROM {schema}.projection_checkpoints WHERE projection = $1"
            ),
            &[&projection.name()],
        )
        .await
        .ok()
        .flatten();
    row.map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Waits until every listed projection's checkpoint reached its stream's last position.
pub async fn wait_projected(
    db: &tokio_postgres::Client,
    jetstream: &jetstream::Context,
    projections: &[Projection],
) {
    for projection in projections {
        let last = last_sequence(jetstream, projection.stream()).await;
        wait::until(
            &format!("the {projection} projection to reach position {last}"),
            PATIENCE,
            || async move {
                let at = checkpoint(db, "public", *projection).await;
                if at >= last {
                    Ok(())
                } else {
                    Err(format!("at {at}"))
                }
            },
        )
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"));
    }
}

/// Every row of a query, each rendered as text columns joined by `|`, for whole-table comparisons.
pub async fn rows(db: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let wrapped = format!(
        "SELECT array_to_string(ARRAY(SELECT COALESCE(value, '∅') FROM json_each_text(row_to_json(r))), '|') \
         FROM ({sql}) r"
    );
    db.query(&wrapped, &[])
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Event builders.

pub fn user_id(name: &str) -> UserId {
    UserId::parse(name).expect("user id")
}

pub fn alert_id(name: &str) -> AlertId {
    AlertId::parse(name).expect("alert id")
}

pub fn phone() -> PhoneNumber {
    PhoneNumber::parse("010-1234-5678").expect("phone")
}

pub fn registered(user: &str, home: Site, at: &str) -> Envelope<UserRegistered> {
    Envelope::new(
        UserRegistered {
            user_id: user_id(user),
            phone: phone(),
            phone_hash: PhoneHash::of(PHONE_KEY, &phone()),
            home_site: home,
        },
        home,
    )
    .at(time(at))
}

pub fn preferences_changed(
    user: &str,
    version: u64,
    locale: Locale,
    producer: Site,
    at: &str,
) -> Envelope<UserPreferencesChanged> {
    Envelope::new(
        UserPreferencesChanged {
            user_id: user_id(user),
            version,
            preferences: Preferences {
                locale,
                time_zone: TimeZoneName::parse("Europe/London").expect("zone"),
                quiet_hours: Some(QuietHours {
                    start: jiff::civil::time(22, 0, 0, 0),
                    end: jiff::civil::time(7, 0, 0, 0),
                }),
                daily_sms_cap: NonZeroU32::new(20),
            },
        },
        producer,
    )
    .at(time(at))
}

pub fn target_price_spec(target: &str) -> AlertSpec {
    AlertSpec {
        exchange: Exchange::upbit(),
        condition: AlertCondition::TargetPrice(TargetPriceCondition {
            market: market("KRW-BTC"),
            target: price(target),
            direction: Direction::Up,
            side_at_creation: PriceSide::Below,
            reference_price: Some(price("95000000")),
        }),
        repeat: RepeatPolicy::Repeat {
            cooldown_seconds: NonZeroU32::new(3600).expect("non-zero"),
        },
        expires_at: Some(time("2027-01-01T00:00:00Z")),
    }
}

pub fn change_rate_spec() -> AlertSpec {
    AlertSpec {
        exchange: Exchange::upbit(),
        condition: AlertCondition::ChangeRate(ChangeRateCondition {
            market: market("KRW-ETH"),
            basis: ChangeBasis::Rolling5Minutes,
            direction: Direction::Either,
            threshold: ThresholdPercent::parse("3.5").expect("threshold"),
        }),
        repeat: RepeatPolicy::Once,
        expires_at: None,
    }
}

pub fn scheduled_spec() -> AlertSpec {
    AlertSpec {
        exchange: Exchange::upbit(),
        condition: AlertCondition::Scheduled(
            ScheduledCondition::new(
                vec![market("KRW-BTC"), market("KRW-ETH")],
                vec![Weekday::Mon, Weekday::Fri],
                vec![],
                jiff::civil::time(9, 0, 0, 0),
                TimeZoneName::seoul(),
            )
            .expect("schedule"),
        ),
        repeat: RepeatPolicy::Once,
        expires_at: None,
    }
}

pub fn created(
    alert: &str,
    user: &str,
    home: Site,
    spec: AlertSpec,
    at: &str,
) -> Envelope<AlertCreated> {
    Envelope::new(
        AlertCreated {
            alert_id: alert_id(alert),
            user_id: user_id(user),
            home_site: home,
            spec,
        },
        home,
    )
    .at(time(at))
}

pub fn updated(
    alert: &str,
    user: &str,
    version: u64,
    spec: AlertSpec,
    producer: Site,
    at: &str,
) -> Envelope<AlertUpdated> {
    Envelope::new(
        AlertUpdated {
            alert_id: alert_id(alert),
            user_id: user_id(user),
            version,
            spec,
        },
        producer,
    )
    .at(time(at))
}

pub fn paused(
    alert: &str,
    user: &str,
    version: u64,
    producer: Site,
    at: &str,
) -> Envelope<AlertPaused> {
    Envelope::new(
        AlertPaused {
            alert_id: alert_id(alert),
            user_id: user_id(user),
            version,
        },
        producer,
    )
    .at(time(at))
}

pub fn resumed(
    alert: &str,
    user: &str,
    version: u64,
    producer: Site,
    at: &str,
) -> Envelope<AlertResumed> {
    Envelope::new(
        AlertResumed {
            alert_id: alert_id(alert),
            user_id: user_id(user),
            version,
        },
        producer,
    )
    .at(time(at))
}

pub fn deleted(
    alert: &str,
    user: &str,
    version: u64,
    producer: Site,
    at: &str,
) -> Envelope<AlertDeleted> {
    Envelope::new(
        AlertDeleted {
            alert_id: alert_id(alert),
            user_id: user_id(user),
            version,
        },
        producer,
    )
    .at(time(at))
}

pub fn tick_ref(sequence: u64) -> TickRef {
    TickRef {
        tick_id: MessageId::parse(&format!("tick:upbit:KRW-BTC:{sequence}")).expect("id"),
        stream: NatsName::parse("TICKS").expect("name"),
        sequence,
        site: Site::Onprem,
    }
}

pub fn fired_armed(
    alert: &str,
    user: &str,
    generation: u64,
    observed: Vec<ObservedPrice>,
    at: &str,
) -> Envelope<TriggerFired> {
    let alert_id = alert_id(alert);
    let firing = Firing::Armed { generation };
    Envelope::new(
        TriggerFired {
            trigger_id: TriggerId::new(&alert_id, firing),
            alert_id,
            user_id: user_id(user),
            alert_version: 2,
            home_site: Site::Onprem,
            kind: AlertKind::TargetPrice,
            firing,
            exchange: Exchange::upbit(),
            observed,
            evaluated_at: time(at),
        },
        Site::Onprem,
    )
    .at(time(at))
}

pub fn fired_scheduled(
    alert: &str,
    user: &str,
    occurrence: &str,
    at: &str,
) -> Envelope<TriggerFired> {
    let alert_id = alert_id(alert);
    let firing = Firing::Scheduled {
        occurrence: time(occurrence),
    };
    Envelope::new(
        TriggerFired {
            trigger_id: TriggerId::new(&alert_id, firing),
            alert_id,
            user_id: user_id(user),
            alert_version: 1,
            home_site: Site::Onprem,
            kind: AlertKind::Scheduled,
            firing,
            exchange: Exchange::upbit(),
            observed: vec![
                ObservedPrice {
                    market: market("KRW-BTC"),
                    price: price("99000000"),
                    change: None,
                    tick: Some(tick_ref(5)),
                },
                ObservedPrice {
                    market: market("KRW-ETH"),
                    price: price("4500000"),
                    change: None,
                    tick: None,
                },
            ],
            evaluated_at: time(at),
        },
        Site::Cloud,
    )
    .at(time(at))
}

pub fn provider() -> ProviderName {
    ProviderName::parse("twilio").expect("provider")
}

pub fn requested_alert(
    trigger: &TriggerId,
    user: &str,
    text: &str,
    at: &str,
) -> Envelope<DispatchRequested> {
    Envelope::new(
        DispatchRequested {
            dispatch_id: DispatchId::for_triggers(std::slice::from_ref(trigger))
                .expect("dispatch id"),
            priority: Priority::Alert,
            destination: phone(),
            body: MessageBody::Plain {
                text: text.to_owned(),
            },
            owning_site: Site::Onprem,
            purpose: DispatchPurpose::Alert {
                user_id: user_id(user),
                trigger_ids: vec![trigger.clone()],
            },
            created_at: time(at),
            expires_at: time("2026-11-02T02:00:00Z"),
        },
        Site::Onprem,
    )
    .at(time(at))
}

pub fn requested_sign_in(request: uuid::Uuid, at: &str) -> Envelope<DispatchRequested> {
    let phone_hash = PhoneHash::of(PHONE_KEY, &phone());
    Envelope::new(
        DispatchRequested {
            dispatch_id: DispatchId::for_sign_in(&phone_hash, &request),
            priority: Priority::SignIn,
            destination: phone(),
            body: MessageBody::Sealed(SealedSecret {
                key_id: KeyId::parse("signin-1").expect("key id"),
                nonce: Base64Text::encode(b"nonce-bytes-12"),
                ciphertext: Base64Text::encode(b"sealed code text"),
            }),
            owning_site: Site::Onprem,
            purpose: DispatchPurpose::SignIn {
                phone_hash,
                request_id: request,
            },
            created_at: time(at),
            expires_at: time("2026-11-02T02:03:00Z"),
        },
        Site::Onprem,
    )
    .at(time(at))
}

pub fn claimed(
    dispatch: &DispatchId,
    attempt: u32,
    site: Site,
    at: &str,
) -> Envelope<DispatchClaimed> {
    Envelope::new(
        DispatchClaimed {
            dispatch_id: dispatch.clone(),
            site,
            attempt,
            claimed_at: time(at),
            lease_expires_at: time(at) + jiff::SignedDuration::from_secs(30),
        },
        site,
    )
    .at(time(at))
}

pub fn failed(dispatch: &DispatchId, attempt: u32, at: &str) -> Envelope<DispatchFailed> {
    Envelope::new(
        DispatchFailed {
            dispatch_id: dispatch.clone(),
            site: Site::Onprem,
            attempt,
            provider: provider(),
            error_code: "20429".to_owned(),
            error_message: Some("Too Many Requests".to_owned()),
            retryable: true,
            failed_at: time(at),
            retry_at: Some(time(at) + jiff::SignedDuration::from_secs(1)),
        },
        Site::Onprem,
    )
    .at(time(at))
}

pub fn sent(
    dispatch: &DispatchId,
    attempt: u32,
    site: Site,
    sid: &str,
    at: &str,
) -> Envelope<DispatchSent> {
    Envelope::new(
        DispatchSent {
            dispatch_id: dispatch.clone(),
            site,
            attempt,
            provider: provider(),
            provider_message_id: sid.to_owned(),
            sent_at: time(at),
        },
        site,
    )
    .at(time(at))
}

pub fn delivered(
    dispatch: &DispatchId,
    attempt: u32,
    sid: &str,
    at: &str,
) -> Envelope<DispatchDelivered> {
    Envelope::new(
        DispatchDelivered {
            dispatch_id: dispatch.clone(),
            site: Site::Cloud,
            attempt,
            provider: provider(),
            provider_message_id: sid.to_owned(),
            provider_status: "delivered".to_owned(),
            reported_at: time(at),
        },
        Site::Cloud,
    )
    .at(time(at))
}

pub fn skipped(
    trigger: &TriggerId,
    user: &str,
    reason: SkipReason,
    at: &str,
) -> Envelope<DispatchSkipped> {
    Envelope::new(
        DispatchSkipped {
            trigger_id: trigger.clone(),
            alert_id: trigger.alert_id().clone(),
            user_id: user_id(user),
            reason,
        },
        Site::Onprem,
    )
    .at(time(at))
}

/// A KRW-BTC (or other) trade; `volume` is the trade's own quantity.
pub fn tick(
    market_code: &str,
    sequential_id: u64,
    trade_price: &str,
    volume: Option<&str>,
    at: &str,
) -> Envelope<TickObserved> {
    Envelope::new(
        TickObserved {
            exchange: Exchange::upbit(),
            market: market(market_code),
            trade_price: price(trade_price),
            signed_change_rate: Rate::parse("0.0123").expect("rate"),
            signed_change_price: PriceChange::parse("1200000").expect("change"),
            acc_trade_volume_24h: Some(Volume::parse("2345.5").expect("volume")),
            trade_volume: volume.map(|volume| Volume::parse(volume).expect("volume")),
            trade_timestamp: time(at),
            sequential_id,
            stream_type: StreamType::Realtime,
        },
        Site::Onprem,
    )
    .at(time(at))
}

pub fn parked(sequence: u64, at: &str) -> Envelope<MessageParked> {
    let mut headers = BTreeMap::new();
    headers.insert(
        "Nats-Msg-Id".to_owned(),
        vec!["req:dsp-0123456789abcdef0123456789abcdef".to_owned()],
    );
    headers.insert(
        "CoinAlarm-Event-Type".to_owned(),
        vec!["dispatch.requested".to_owned()],
    );
    Envelope::new(
        MessageParked {
            stream: NatsName::parse("DISPATCH").expect("name"),
            consumer: NatsName::parse("dispatcher").expect("name"),
            stream_sequence: sequence,
            subject: "dispatch.request.p1.dsp-0123456789abcdef0123456789abcdef".to_owned(),
            headers,
            payload: ParkedPayload::from_bytes(b"{\"broken\":true}"),
            reason_code: "too_many_deliveries".to_owned(),
            reason: "still failing after 10 deliveries".to_owned(),
            deliveries: 10,
            parked_at: time(at),
        },
        Site::Onprem,
    )
    .at(time(at))
}

// ---------------------------------------------------------------------------------------------------
// A Postgres outage on demand.

/// A TCP proxy in front of the Postgres server: `cut` drops every connection and refuses new ones,
/// like a database host going away; `restore` lets connections through again.
pub struct PostgresProxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    open_changes: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PostgresProxy {
    /// Proxies to the server of `url` and returns itself with `url` rewritten to go through it.
    pub async fn start(url: &str) -> (PostgresProxy, String) {
        let config = tokio_postgres::Config::from_str(url).expect("postgres url");
        let upstream_port = config.get_ports().first().copied().unwrap_or(5432);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let open = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicU64::new(0));
        let (open_changes, open_watch) = watch::channel(true);
        let task = tokio::spawn(proxy_loop(
            listener,
            upstream_port,
            open.clone(),
            refused.clone(),
            open_watch,
        ));
        let proxied = url.replacen(&format!(":{upstream_port}/"), &format!(":{port}/"), 1);
        assert_ne!(proxied, url, "the test server url names its port: {url}");
        (
            PostgresProxy {
                port,
                open,
                refused,
                open_changes,
                task,
            },
            proxied,
        )
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        let _ = self.open_changes.send(false);
    }

    /// Connections refused while cut: each one is a reconnection attempt of the code under test.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
        let _ = self.open_changes.send(true);
    }
}

impl Drop for PostgresProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_loop(
    listener: TcpListener,
    upstream_port: u16,
    open: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    open_watch: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((downstream, _)) = listener.accept().await else {
            continue;
        };
        if !open.load(Ordering::SeqCst) {
            refused.fetch_add(1, Ordering::SeqCst);
            drop(downstream);
            continue;
        }
        let mut open_watch = open_watch.clone();
        connections.spawn(async move {
            let Ok(mut upstream) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream_port)).await
            else {
                return;
            };
            let mut downstream = downstream;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => {}
                _ = open_watch.wait_for(|open| !open) => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

/// A fresh database with its own URL.
pub async fn database() -> TestDatabase {
    TestDatabase::create().await.expect("test database")
}

// ---------------------------------------------------------------------------------------------------
// A larger workload with known expected read models.

/// Ticks over several markets and minutes (prices from a fixed pseudo-random walk, published in an
/// order that is not trade-time order within a minute), plus triggers with their dispatch lifecycles.
pub struct Workload {
    pub ticks: Vec<Envelope<TickObserved>>,
    pub triggers: Vec<Envelope<TriggerFired>>,
    pub dispatch: Vec<Envelope<proto_events::Event>>,
}

impl Workload {
    pub fn new(ticks_per_market: u64, triggers: u64) -> Workload {
        let mut state: u64 = 0x5eed;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 33
        };
        let start = time("2026-11-02T00:00:00Z");
        let mut ticks = Vec::new();
        for (index, code) in ["KRW-BTC", "KRW-ETH", "KRW-XRP"].iter().enumerate() {
            let mut cents: u64 = 100_000 * (index as u64 + 1);
            for sequence in 0..ticks_per_market {
                cents = (cents + next() % 201).saturating_sub(100).max(1);
                // Every third trade is published late: its trade time is 7 s earlier.
                let offset = sequence as i64 * 3 - if sequence % 3 == 2 { 7 } else { 0 };
                let at = start + jiff::SignedDuration::from_secs(offset.max(0));
                let volume = format!("{}.{:03}", next() % 5, next() % 1000);
                let price = format!("{}.{:02}", cents / 100, cents % 100);
                let mut envelope = tick(
                    code,
                    1_000 + sequence,
                    &price,
                    Some(&volume),
                    "2026-11-02T00:00:00Z",
                );
                envelope.data.trade_timestamp = at;
                envelope.time = at;
                ticks.push(envelope);
            }
        }
        let mut trigger_events = Vec::new();
        let mut dispatch = Vec::new();
        for number in 0..triggers {
            let alert = format!("alert-{number}");
            let fired = fired_armed(
                &alert,
                "u-load",
                1,
                vec![ObservedPrice {
                    market: market("KRW-BTC"),
                    price: price("100000000"),
                    change: None,
                    tick: Some(tick_ref(number + 1)),
                }],
                "2026-11-02T01:00:00Z",
            );
            let request = requested_alert(
                &fired.data.trigger_id,
                "u-load",
                "alert text",
                "2026-11-02T01:00:01Z",
            );
            let dispatch_id = request.data.dispatch_id.clone();
            dispatch.push(request.into_event());
            dispatch
                .push(claimed(&dispatch_id, 1, Site::Onprem, "2026-11-02T01:00:02Z").into_event());
            dispatch.push(
                sent(
                    &dispatch_id,
                    1,
                    Site::Onprem,
                    &format!("SM{number}"),
                    "2026-11-02T01:00:03Z",
                )
                .into_event(),
            );
            trigger_events.push(fired);
        }
        Workload {
            ticks,
            triggers: trigger_events,
            dispatch,
        }
    }

    /// Publishes everything at `site`, pipelined.
    pub async fn publish(&self, publisher: &Publisher) {
        for chunk in self.ticks.chunks(500) {
            publisher.publish_many(chunk).await;
        }
        publisher.publish_many(&self.triggers).await;
        for chunk in self.dispatch.chunks(500) {
            publisher.publish_many(chunk).await;
        }
    }

    /// The candles these ticks must give, rendered like [`rows`] renders
    /// `SELECT market, minute, open, high, low, close, volume, ticks FROM candles_1m ORDER BY market, minute`.
    pub fn expected_candles(&self) -> Vec<String> {
        use rust_decimal::Decimal;
        struct Candle {
            open: ((Timestamp, u64), Decimal),
            close: ((Timestamp, u64), Decimal),
            high: Decimal,
            low: Decimal,
            volume: Decimal,
            ticks: u64,
        }
        let mut candles: BTreeMap<(String, i64), Candle> = BTreeMap::new();
        for envelope in &self.ticks {
            let tick = &envelope.data;
            let order = (tick.trade_timestamp, tick.sequential_id);
            let price = tick.trade_price.value();
            let volume = tick
                .trade_volume
                .map(|volume| volume.value())
                .unwrap_or_default();
            let minute = tick.trade_timestamp.as_second().div_euclid(60) * 60;
            let candle = candles
                .entry((tick.market.as_str().to_owned(), minute))
                .or_insert(Candle {
                    open: (order, price),
                    close: (order, price),
                    high: price,
                    low: price,
                    volume: Decimal::ZERO,
                    ticks: 0,
                });
            if order < candle.open.0 {
                candle.open = (order, price);
            }
            if order > candle.close.0 {
                candle.close = (order, price);
            }
            candle.high = candle.high.max(price);
            candle.low = candle.low.min(price);
            candle.volume += volume;
            candle.ticks += 1;
        }
        candles
            .into_iter()
            .map(|((market, minute), candle)| {
                let minute = Timestamp::from_second(minute).expect("minute");
                format!(
                    "{market}|{}|{}|{}|{}|{}|{}|{}",
                    minute.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                    candle.open.1.normalize(),
                    candle.high.normalize(),
                    candle.low.normalize(),
                    candle.close.1.normalize(),
                    candle.volume.normalize(),
                    candle.ticks
                )
            })
            .collect()
    }
}

/// The candles as [`Workload::expected_candles`] renders them (trailing zeros dropped on both sides).
pub const CANDLES: &str = "SELECT market, minute, trim_scale(open) AS open, trim_scale(high) AS high, \
    trim_scale(low) AS low, trim_scale(close) AS close, trim_scale(volume) AS volume, ticks \
    FROM candles_1m ORDER BY market, minute";

impl Publisher {
    pub async fn publish_many<T: EventData + Clone>(&self, envelopes: &[Envelope<T>]) {
        let pairs: Vec<(Envelope<T>, Option<coinalarm_runtime::trace::TraceContext>)> = envelopes
            .iter()
            .map(|envelope| (envelope.clone(), None))
            .collect();
        self.bus
            .publish_all(&pairs)
            .await
            .unwrap_or_else(|error| panic!("publish a batch: {error}"));
    }
}
