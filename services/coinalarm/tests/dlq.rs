//! `coinalarm dlq list|show|redrive` as an operator runs them, against both real NATS sites, a fresh
//! Postgres database with the live dead-letter projection, and a consumer that parks a message while
//! it is "broken": the dead letter is listed and shown with its reason, a re-drive after the fix
//! delivers it to that consumer exactly once, and re-driving again is a no-op.

mod common;

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coinalarm_runtime::Shutdown;
use coinalarm_runtime::bus::{self, BatchHandler, Bus, ConsumerSpec, Delivery, Disposition};
use coinalarm_test_support::nats::TwoSites;
use coinalarm_test_support::postgres::TestDatabase;
use coinalarm_test_support::wait;
use proto_events::domain::{AlertId, UserId};
use proto_events::events::alerts::AlertPaused;
use proto_events::{Envelope, Event, Site};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);

/// Records every alert it is handed; parks `poison` while `broken`.
struct Handler {
    poison: AlertId,
    broken: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<AlertId>>>,
}

impl BatchHandler for Handler {
    async fn handle(
        &mut self,
        batch: &[Delivery],
    ) -> Result<Vec<Disposition>, coinalarm_runtime::shutdown::BoxError> {
        Ok(batch
            .iter()
            .map(|delivery| {
                let Event::AlertPaused(paused) = &delivery.envelope.data else {
                    return Disposition::Ack;
                };
                if paused.alert_id == self.poison && self.broken.load(Ordering::SeqCst) {
                    return Disposition::Park {
                        reason_code: "test_broken".to_owned(),
                        reason: "the handler cannot take this alert yet".to_owned(),
                    };
                }
                self.seen
                    .lock()
                    .expect("seen")
                    .push(paused.alert_id.clone());
                Disposition::Ack
            })
            .collect())
    }
}

fn paused(alert_id: &AlertId) -> Envelope<AlertPaused> {
    Envelope::new(
        AlertPaused {
            alert_id: alert_id.clone(),
            user_id: UserId::new(),
            version: 2,
        },
        Site::Onprem,
    )
}

async fn coinalarm(sites: &TwoSites, database: &TestDatabase, arguments: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coinalarm"))
        .args(arguments)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("COINALARM_SITE", "onprem")
        .env("COINALARM_POSTGRES__URL", database.url())
        .env("COINALARM_NATS__URLS__ONPREM", sites.url(Site::Onprem))
        .env("COINALARM_NATS__URLS__CLOUD", sites.url(Site::Cloud))
        .env("COINALARM_NATS__USER", "admin")
        .env("COINALARM_NATS__PASSWORD", sites.password("admin"))
        .env("COINALARM_NATS__REQUEST_TIMEOUT", "5")
        .output()
        .await
        .expect("run coinalarm")
}

async fn json(
    sites: &TwoSites,
    database: &TestDatabase,
    arguments: &[&str],
) -> (Option<i32>, Value) {
    let output = coinalarm(sites, database, arguments).await;
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{arguments:?}: {error}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_message_is_listed_shown_and_redriven_once_after_the_fix() {
    let sites = common::sites_with_topology().await;
    let database = TestDatabase::create().await.expect("database");

    // The live dead-letter projection fills `dead_letters`.
    let mut config = common::projector_config(&sites, &database);
    config.postgres.pool_size = 2;
    let pool = coinalarm_runtime::postgres::connect_pool(&config.postgres)
        .await
        .expect("pool");
    coinalarm_runtime::postgres::migrate(&pool)
        .await
        .expect("migrate");
    if let Value::Object(map) = serde_json::json!({
        "projections": ["dead_letters"], "fetch_wait": 0.2, "retry_min": 0.05, "retry_max": 0.5,
    }) {
        config.projector = map;
    }
    let shutdown = Shutdown::new();
    let projector = tokio::spawn(coinalarm_projector::run(config.clone(), shutdown.clone()));

    // A consumer of ALERTS that is broken for one alert.
    let (poison, healthy) = (AlertId::new(), AlertId::new());
    let broken = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer_bus = Bus::from_client(
        sites.client(Site::Onprem, "projector").await,
        Site::Onprem,
        "dlq-test",
        Duration::from_secs(5),
    );
    let consumer = tokio::spawn({
        let mut handler = Handler {
            poison: poison.clone(),
            broken: broken.clone(),
            seen: seen.clone(),
        };
        let shutdown = shutdown.clone();
        async move {
            let spec = ConsumerSpec::new("ALERTS", "dlq-test", vec!["alerts.>".to_owned()]);
            bus::run_consumer(&consumer_bus, &spec, &mut handler, &shutdown)
                .await
                .expect("consumer");
        }
    });
    let producer = Bus::from_client(
        sites.client(Site::Onprem, "api").await,
        Site::Onprem,
        "api",
        Duration::from_secs(5),
    );
    for alert_id in [&poison, &healthy] {
        producer
            .publish(&paused(alert_id), None)
            .await
            .expect("publish");
    }

    // Listed, with its reason.
    let listed = wait::until("the dead letter to be listed", PATIENCE, || async {
        let (code, listed) = json(&sites, &database, &["dlq", "list", "--json"]).await;
        match listed.as_array() {
            Some(letters) if code == Some(0) && letters.len() == 1 => Ok(listed),
            _ => Err(format!("{code:?} {listed}")),
        }
    })
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    let letter = &listed[0];
    let id = letter["id"].as_str().expect("id").to_owned();
    assert!(
        id.starts_with("dlq:ALERTS:") && id.ends_with(":dlq-test"),
        "{id}"
    );
    assert_eq!(letter["reason_code"], "test_broken");
    assert_eq!(letter["reason"], "the handler cannot take this alert yet");
    assert_eq!(letter["consumer"], "dlq-test");
    assert_eq!(letter["event_type"], "alert.paused");
    assert_eq!(letter["site"], "onprem");
    assert_eq!(letter["redrive"], Value::Null);
    let (_, other) = json(
        &sites,
        &database,
        &["dlq", "list", "--consumer", "notifier", "--json"],
    )
    .await;
    assert_eq!(other, serde_json::json!([]));
    let (_, recent) = json(
        &sites,
        &database,
        &[
            "dlq", "list", "--stream", "ALERTS", "--since", "1h", "--json",
        ],
    )
    .await;
    assert_eq!(recent.as_array().map(Vec::len), Some(1));

    // Shown, with the payload decoded and pretty-printed.
    let shown = coinalarm(&sites, &database, &["dlq", "show", &id]).await;
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    assert!(
        text.contains("test_broken: the handler cannot take this alert yet"),
        "{text}"
    );
    assert!(text.contains("payload (decodes with this build)"), "{text}");
    assert!(text.contains(poison.as_str()), "{text}");
    assert!(text.contains("Nats-Msg-Id"), "{text}");
    let (_, shown) = json(&sites, &database, &["dlq", "show", &id, "--json"]).await;
    assert_eq!(shown["decoded"]["decodes"], true);

    // After the fix, the re-drive reaches the consumer that parked it, once.
    assert_eq!(
        seen.lock().expect("seen").clone(),
        vec![healthy.clone()],
        "only the healthy alert was handled"
    );
    broken.store(false, Ordering::SeqCst);
    let (code, redriven) = json(&sites, &database, &["dlq", "redrive", &id, "--json"]).await;
    assert_eq!(code, Some(0), "{redriven:#}");
    assert_eq!(redriven[0]["outcome"], "redriven", "{redriven:#}");
    assert_eq!(redriven[0]["published_stream"], "ALERTS_ONPREM");
    wait::until("the re-driven alert to be handled", PATIENCE, || async {
        let handled = seen.lock().expect("seen").clone();
        if handled.contains(&poison) {
            Ok(())
        } else {
            Err(format!("{handled:?}"))
        }
    })
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));

    // Again, one by one or all at once: nothing more is published.
    let (code, again) = json(&sites, &database, &["dlq", "redrive", &id, "--json"]).await;
    assert_eq!(code, Some(0), "{again:#}");
    assert_eq!(again[0]["outcome"], "already_redriven", "{again:#}");
    assert_eq!(
        again[0]["published_sequence"],
        redriven[0]["published_sequence"]
    );
    let (code, all) = json(&sites, &database, &["dlq", "redrive", "--all", "--json"]).await;
    assert_eq!(code, Some(0), "{all:#}");
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all:#}");
    assert_eq!(all[0]["outcome"], "already_redriven", "{all:#}");

    // A marker published after the second re-drive arrives after anything that re-drive published:
    // once it is seen, the poison alert is known to have been delivered exactly once.
    let marker = AlertId::new();
    producer
        .publish(&paused(&marker), None)
        .await
        .expect("publish");
    wait::until("the marker to be handled", PATIENCE, || async {
        let handled = seen.lock().expect("seen").clone();
        if handled.contains(&marker) {
            Ok(())
        } else {
            Err(format!("{handled:?}"))
        }
    })
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    assert_eq!(
        seen.lock().expect("seen").clone(),
        vec![healthy, poison, marker],
        "the re-driven alert was delivered exactly once"
    );

    // `list` says what was re-driven and when.
    let (_, listed) = json(&sites, &database, &["dlq", "list", "--json"]).await;
    assert_eq!(listed[0]["redrive"]["dead_letter_id"], id);
    assert_eq!(
        listed[0]["redrive"]["published_sequence"],
        redriven[0]["published_sequence"]
    );
    assert!(listed[0]["redrive"]["published_at"].is_string());
    let table = coinalarm(&sites, &database, &["dlq", "list"]).await;
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("as ALERTS_ONPREM #"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );

    shutdown.trigger();
    consumer.await.expect("consumer task");
    projector
        .await
        .expect("projector task")
        .expect("projector ended cleanly");
}
