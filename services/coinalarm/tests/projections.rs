//! `coinalarm projections rebuild|status` as an operator runs them, against both real NATS sites, a
//! fresh Postgres database and a live projector that keeps projecting while ticks keep arriving: the
//! swapped tables equal the live ones, nothing is lost or applied twice afterwards, `--only` swaps only
//! what it names, and a corrupted live row is found and stops the swap.

mod common;

use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::{Config, Shutdown};
use coinalarm_test_support::nats::TwoSites;
use coinalarm_test_support::postgres::TestDatabase;
use coinalarm_test_support::wait;
use proto_events::domain::{Exchange, MarketCode, NatsName, Price, PriceChange, Rate, Volume};
use proto_events::events::{MessageParked, ParkedPayload, StreamType, TickObserved};
use proto_events::{Envelope, Site};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(40);
const MARKETS: [&str; 3] = ["KRW-BTC", "KRW-ETH", "KRW-XRP"];

struct Setup {
    sites: TwoSites,
    database: TestDatabase,
    config: Config,
    publisher: Bus,
}

async fn setup() -> Setup {
    let sites = common::sites_with_topology().await;
    let database = TestDatabase::create().await.expect("database");
    let mut config = common::projector_config(&sites, &database);
    config.postgres.pool_size = 4;
    let settings = serde_json::json!({
        "batch_size": 20, "tick_batch_size": 20, "fetch_wait": 0.2, "ack_wait": 5.0,
        "retry_min": 0.05, "retry_max": 0.5,
    });
    if let Value::Object(map) = settings {
        config.projector = map;
    }
    let publisher = Bus::from_client(
        sites.client(Site::Onprem, "admin").await,
        Site::Onprem,
        "test",
        Duration::from_secs(5),
    );
    Setup {
        sites,
        database,
        config,
        publisher,
    }
}

impl Setup {
    async fn coinalarm(&self, arguments: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_coinalarm"))
            .args(arguments)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("COINALARM_SITE", "onprem")
            .env("COINALARM_POSTGRES__URL", self.database.url())
            .env("COINALARM_NATS__URLS__ONPREM", self.sites.url(Site::Onprem))
            .env("COINALARM_NATS__URLS__CLOUD", self.sites.url(Site::Cloud))
            .env("COINALARM_NATS__USER", "admin")
            .env("COINALARM_NATS__PASSWORD", self.sites.password("admin"))
            .env("COINALARM_NATS__REQUEST_TIMEOUT", "5")
            .output()
            .await
            .expect("run coinalarm")
    }

    /// Runs a `--json` command; its exit code and report.
    async fn json(&self, arguments: &[&str]) -> (Option<i32>, Value) {
        let output = self.coinalarm(arguments).await;
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{arguments:?}: {error}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code(), report)
    }

    fn start_projector(&self) -> (Shutdown, tokio::task::JoinHandle<()>) {
        let shutdown = Shutdown::new();
        let task = tokio::spawn({
            let config = self.config.clone();
            let shutdown = shutdown.clone();
            async move {
                coinalarm_projector::run(config, shutdown)
                    .await
                    .expect("projector");
            }
        });
        (shutdown, task)
    }

    async fn publish_ticks(&self, first: u64, count: u64) {
        for number in first..first + count {
            self.publisher
                .publish(&tick(number), None)
                .await
                .expect("publish tick");
        }
    }

    async fn last_sequence(&self, stream: &str) -> u64 {
        self.sites
            .jetstream(Site::Onprem)
            .await
            .get_stream(stream)
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .state
            .last_sequence
    }

    /// Waits until the live projection of `stream` has applied its last position.
    async fn wait_projected(&self, projection: &str, stream: &str) {
        let last = self.last_sequence(stream).await;
        let client = self.database.client();
        wait::until(
            &format!("{projection} projected up to {last}"),
            PATIENCE,
            || async move {
                let at: i64 = client
                    .query_opt(
                        "SELECT last_sequence FROM public.projection_checkpoints WHERE projection = $1",
                        &[&projection],
                    )
                    .await
                    .map_err(|error| error.to_string())?
                    .map_or(0, |row| row.get(0));
                if u64::try_from(at).unwrap_or(0) >= last {
                    Ok(())
                } else {
                    Err(format!("at {at}"))
                }
            },
        )
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"));
    }

    async fn scalar(&self, sql: &str) -> i64 {
        self.database
            .client()
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
            .get(0)
    }

    async fn table_oid(&self, table: &str) -> u32 {
        self.database
            .client()
            .query_one(
                "SELECT $1::text::regclass::oid",
                &[&format!("public.{table}")],
            )
            .await
            .expect("oid")
            .get(0)
    }
}

/// Trade `number` of a small rotation of markets, one second apart, with a volume of exactly 1.
fn tick(number: u64) -> Envelope<TickObserved> {
    let market = MARKETS[(number % MARKETS.len() as u64) as usize];
    let at = jiff::Timestamp::from_second(1_793_577_600 + i64::try_from(number).unwrap_or(0))
        .expect("time");
    Envelope::new(
        TickObserved {
            exchange: Exchange::upbit(),
            market: MarketCode::parse(market).expect("market"),
            trade_price: Price::parse(&format!("{}", 1_000 + number % 97)).expect("price"),
            signed_change_rate: Rate::parse("0.0123").expect("rate"),
            signed_change_price: PriceChange::parse("12").expect("change"),
            acc_trade_volume_24h: Some(Volume::parse("2345.5").expect("volume")),
            trade_volume: Some(Volume::parse("1").expect("volume")),
            trade_timestamp: at,
            sequential_id: number,
            stream_type: StreamType::Realtime,
        },
        Site::Onprem,
    )
    .at(at)
}

fn parked(sequence: u64) -> Envelope<MessageParked> {
    Envelope::new(
        MessageParked {
            stream: NatsName::parse("TRIGGERS").expect("name"),
            consumer: NatsName::parse("notifier").expect("name"),
            stream_sequence: sequence,
            subject: "triggers.a-1".to_owned(),
            headers: Default::default(),
            payload: ParkedPayload::from_bytes(b"{\"broken\":true}"),
            reason_code: "test".to_owned(),
            reason: "a test dead letter".to_owned(),
            deliveries: 1,
            parked_at: jiff::Timestamp::now(),
        },
        Site::Onprem,
    )
}

fn projections_of(report: &Value) -> Vec<String> {
    report["projections"]
        .as_array()
        .expect("projections")
        .iter()
        .map(|name| name.as_str().expect("name").to_owned())
        .collect()
}

fn differing_tables(report: &Value) -> Vec<(String, i64, i64)> {
    report["swap"]["verification"]["tables"]
        .as_array()
        .expect("verification")
        .iter()
        .filter(|table| table["only_live"] != 0 || table["only_rebuilt"] != 0)
        .map(|table| {
            (
                table["table"].as_str().expect("name").to_owned(),
                table["only_live"].as_i64().expect("count"),
                table["only_rebuilt"].as_i64().expect("count"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_ticks_flow_swaps_in_equal_tables_and_loses_nothing() {
    let setup = setup().await;
    setup.publish_ticks(0, 300).await;
    for sequence in 1..=2 {
        setup
            .publisher
            .publish(&parked(sequence), None)
            .await
            .expect("publish dead letter");
    }
    let (shutdown, projector) = setup.start_projector();
    setup.wait_projected("ticks", "TICKS").await;

    // Ticks keep arriving, and the live projector keeps projecting them, during the whole rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(300));
    let flow = tokio::spawn({
        let (stop, published) = (stop.clone(), published.clone());
        let publisher = setup.publisher.clone();
        async move {
            while !stop.load(Ordering::SeqCst) {
                let number = published.load(Ordering::SeqCst);
                publisher
                    .publish(&tick(number), None)
                    .await
                    .expect("publish tick");
                published.store(number + 1, Ordering::SeqCst);
            }
        }
    });
    let before = published.load(Ordering::SeqCst);
    let (code, report) = setup.json(&["projections", "rebuild", "--json"]).await;
    let during = published.load(Ordering::SeqCst) - before;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["swap"]["swapped"], true, "{report:#}");
    assert!(during > 0, "ticks arrived during the rebuild");
    assert_eq!(differing_tables(&report), vec![], "{report:#}");
    assert_eq!(projections_of(&report).len(), 6);
    let mut views: Vec<String> = report["swap"]["views"]
        .as_array()
        .expect("views")
        .iter()
        .map(|view| view.as_str().expect("view").to_owned())
        .collect();
    views.sort();
    assert_eq!(
        views,
        [
            "public.aggregate_conflicts",
            "public.alert_history",
            "public.alerts_current",
            "public.notification_history"
        ]
    );
    let archive = report["swap"]["archive"]
        .as_str()
        .expect("archive")
        .to_owned();
    let rebuild_schema = report["rebuild_schema"]
        .as_str()
        .expect("schema")
        .to_owned();

    // The views read the swapped-in tables, the old ones wait in the archive, the rebuild schema is
    // gone.
    let view_sources = setup
        .scalar(
            "SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
             JOIN pg_class t ON t.oid = d.refobjid \
             WHERE r.ev_class = 'public.alerts_current'::regclass \
               AND t.relnamespace <> 'public'::regnamespace AND t.relkind = 'r'",
        )
        .await;
    assert_eq!(view_sources, 0, "alerts_current reads only public tables");
    assert_eq!(
        setup
            .scalar(&format!(
                "SELECT count(*) FROM pg_tables WHERE schemaname = '{archive}'"
            ))
            .await,
        14,
        "the 13 read-model tables and their checkpoints are archived"
    );
    assert_eq!(
        setup
            .scalar(&format!(
                "SELECT count(*) FROM pg_namespace WHERE nspname = '{rebuild_schema}'"
            ))
            .await,
        0
    );
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM public.dead_letters")
            .await,
        2
    );

    // After the swap the live projector goes on from where the swap left it: once the flow stops and
    // it has caught up, every tick is counted exactly once, and a fresh rebuild equals it row by row.
    stop.store(true, Ordering::SeqCst);
    flow.await.expect("flow");
    let total = published.load(Ordering::SeqCst);
    setup.wait_projected("ticks", "TICKS").await;
    assert_eq!(
        setup
            .scalar("SELECT sum(ticks)::bigint FROM public.candles_1m")
            .await,
        i64::try_from(total).expect("count"),
        "every tick projected once"
    );
    assert_eq!(
        setup
            .scalar("SELECT sum(volume)::bigint FROM public.candles_1m")
            .await,
        i64::try_from(total).expect("count")
    );
    let (code, again) = setup
        .json(&["projections", "rebuild", "--only", "ticks", "--json"])
        .await;
    assert_eq!(code, Some(0), "{again:#}");
    assert_eq!(differing_tables(&again), vec![], "{again:#}");

    let (code, status) = setup.json(&["projections", "status", "--json"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        status["archives"].as_array().map(Vec::len),
        Some(2),
        "{status:#}"
    );
    shutdown.trigger();
    projector.await.expect("projector task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_swaps_what_it_names_and_a_corrupted_row_stops_the_swap() {
    let setup = setup().await;
    setup.publish_ticks(0, 120).await;
    setup
        .publisher
        .publish(&parked(1), None)
        .await
        .expect("publish dead letter");
    let (shutdown, projector) = setup.start_projector();
    setup.wait_projected("ticks", "TICKS").await;
    setup.wait_projected("dead_letters", "DEADLETTER").await;

    // A live row that no projection of the events gives.
    setup
        .database
        .client()
        .execute(
            "UPDATE public.candles_1m SET volume = volume + 1 \
             WHERE (market, minute) = (SELECT market, minute FROM public.candles_1m \
                                       ORDER BY market, minute LIMIT 1)",
            &[],
        )
        .await
        .expect("corrupt a row");
    let candles = setup.table_oid("candles_1m").await;
    let dead_letters = setup.table_oid("dead_letters").await;

    let (code, refused) = setup
        .json(&["projections", "rebuild", "--only", "ticks", "--json"])
        .await;
    assert_eq!(code, Some(3), "{refused:#}");
    assert_eq!(refused["swap"]["swapped"], false);
    assert_eq!(projections_of(&refused), ["ticks"]);
    assert_eq!(
        differing_tables(&refused),
        [("candles_1m".to_owned(), 1, 1)],
        "{refused:#}"
    );
    let sample = refused["swap"]["verification"]["tables"]
        .as_array()
        .and_then(|tables| tables.iter().find(|table| table["table"] == "candles_1m"))
        .map(|table| table["live_sample"].clone())
        .expect("sample");
    assert!(
        sample.to_string().contains("KRW-BTC"),
        "the differing row is shown: {sample}"
    );
    assert_eq!(
        setup.table_oid("candles_1m").await,
        candles,
        "nothing swapped"
    );
    let kept = refused["rebuild_schema"].as_str().expect("schema");
    assert_eq!(
        setup
            .scalar(&format!(
                "SELECT count(*) FROM pg_namespace WHERE nspname = '{kept}'"
            ))
            .await,
        1,
        "the refused rebuild is kept for inspection"
    );
    // The live projector was only paused: it keeps projecting.
    setup.publish_ticks(120, 30).await;
    setup.wait_projected("ticks", "TICKS").await;

    // --only swaps only its own tables.
    let (code, only) = setup
        .json(&["projections", "rebuild", "--only", "dead_letters", "--json"])
        .await;
    assert_eq!(code, Some(0), "{only:#}");
    assert_eq!(projections_of(&only), ["dead_letters"]);
    assert_eq!(only["swap"]["tables"], serde_json::json!(["dead_letters"]));
    assert_ne!(setup.table_oid("dead_letters").await, dead_letters);
    assert_eq!(setup.table_oid("candles_1m").await, candles);

    // Forced, the corrupted table is replaced by the projection of the events.
    let (code, forced) = setup
        .json(&[
            "projections",
            "rebuild",
            "--only",
            "ticks",
            "--force",
            "--json",
        ])
        .await;
    assert_eq!(code, Some(0), "{forced:#}");
    assert_eq!(forced["swap"]["swapped"], true);
    assert_eq!(differing_tables(&forced).len(), 1, "{forced:#}");
    assert_ne!(setup.table_oid("candles_1m").await, candles);
    assert_eq!(
        setup
            .scalar("SELECT sum(volume)::bigint FROM public.candles_1m")
            .await,
        150
    );
    shutdown.trigger();
    projector.await.expect("projector task");
}
