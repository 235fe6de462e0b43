//! Each service runs as its own `coinalarm serve <service>` process under a steady stream of crossings;
//! one after another is SIGKILLed and restarted. Afterwards the provider's ledger holds every expected
//! SMS exactly once — apart from the dispatcher's documented crash window (a kill after the provider
//! accepted a message but before its outcome was stored), whose duplicates are measured and bounded.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use coinalarm_ingest::fake_exchange::FeedMode;
use coinalarm_runtime::Config;
use coinalarm_test_support::wait;
use common::Deployment;
use proto_events::domain::{AlertId, MarketCode, PhoneHash, PhoneNumber, Price, UserId};
use proto_events::events::alerts::AlertCreated;
use proto_events::events::users::UserRegistered;
use proto_events::{Envelope, Site};
use rust_decimal::Decimal;
use serde_json::json;

const SERVICES: [&str; 5] = ["ingest", "matcher", "notifier", "dispatcher", "projector"];
const ALERTS: usize = 150;
const START_PRICE: i64 = 95_000_000;
const TARGET_STEP: i64 = 1_000;

struct ServiceProcess {
    name: &'static str,
    child: tokio::process::Child,
}

fn spawn(name: &'static str, config_file: &Path, log_dir: &Path) -> ServiceProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(format!("{name}.log")))
        .expect("log file");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coinalarm"))
        .args(["serve", name])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("COINALARM_CONFIG", config_file)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start coinalarm serve");
    ServiceProcess { name, child }
}

fn phone(index: usize) -> PhoneNumber {
    PhoneNumber::parse(&format!("+82101000{index:04}")).expect("phone")
}

async fn define_alerts(deployment: &Deployment) {
    let bus = deployment.api_bus(Site::Onprem).await;
    for index in 0..ALERTS {
        let user_id = UserId::new();
        let registered = UserRegistered {
            user_id: user_id.clone(),
            phone_hash: PhoneHash::of(b"kill-test", &phone(index)),
            phone: phone(index),
            home_site: Site::Onprem,
        };
        bus.publish_expecting(
            &Envelope::new(registered, Site::Onprem),
            Site::Onprem,
            0,
            None,
        )
        .await
        .expect("user");
        let target = START_PRICE + TARGET_STEP * (index as i64 + 1);
        let alert: AlertCreated = serde_json::from_value(json!({
            "alert_id": AlertId::new(),
            "user_id": user_id,
            "home_site": "onprem",
            "spec": {"exchange": "upbit", "repeat": {"mode": "once"}, "condition": {
                "kind": "target_price", "market": "KRW-BTC", "target": target.to_string(),
                "direction": "up", "side_at_creation": "below"}},
        }))
        .expect("alert");
        bus.publish_expecting(&Envelope::new(alert, Site::Onprem), Site::Onprem, 0, None)
            .await
            .expect("alert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilling_each_service_in_turn_loses_no_sms_and_duplicates_only_in_the_crash_window() {
    let deployment = Deployment::start(FeedMode::Scripted).await;
    define_alerts(&deployment).await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut config: Config = deployment.config(Site::Onprem, &["KRW-BTC"]);
    config.telemetry.log_format = coinalarm_runtime::config::LogFormat::Json;
    let config_file = directory.path().join("coinalarm.toml");
    std::fs::write(
        &config_file,
        toml::to_string(&config).expect("config as toml"),
    )
    .expect("write config");

    let mut processes: BTreeMap<&str, ServiceProcess> = SERVICES
        .into_iter()
        .map(|name| (name, spawn(name, &config_file, directory.path())))
        .collect();
    wait::until_true("ingest to subscribe", Duration::from_secs(60), || async {
        deployment.exchange.subscriber_count() > 0
    })
    .await
    .expect("ingest subscribes");

    // A steady climb: every step crosses the next alert's target. Every few steps one service is
    // SIGKILLed, and started again a few steps later.
    let btc = MarketCode::parse("KRW-BTC").expect("market");
    let steps = ALERTS as i64 + 20;
    let mut kills = 0;
    let mut dispatcher_kills = 0;
    let mut killed: Option<&'static str> = None;
    for step in 0..steps {
        let price = Decimal::from(START_PRICE + TARGET_STEP * step + TARGET_STEP / 2);
        // A restarted ingest must resubscribe before the next trade, or the exchange has no one to
        // send it to (the real exchange has no replay either; the crossing semantics then cover the gap).
        deployment
            .exchange
            .push_trade(&btc, Price::new(price).expect("price"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        if step % 25 == 10 && killed.is_none() {
            let name = SERVICES[(step as usize / 25) % SERVICES.len()];
            let process = processes.get_mut(name).expect("process");
            process.child.start_kill().expect("SIGKILL");
            let _ = process.child.wait().await;
            killed = Some(name);
            kills += 1;
            if name == "dispatcher" {
                dispatcher_kills += 1;
            }
        } else if step % 25 == 18
            && let Some(name) = killed.take()
        {
            processes.insert(name, spawn(name, &config_file, directory.path()));
            if name == "ingest" {
                let before = deployment.exchange.connections_accepted();
                wait::until_true("ingest to resubscribe", Duration::from_secs(30), || async {
                    deployment.exchange.connections_accepted() > before
                        && deployment.exchange.subscriber_count() > 0
                })
                .await
                .expect("ingest resubscribes");
            }
        }
    }
    if let Some(name) = killed.take() {
        processes.insert(name, spawn(name, &config_file, directory.path()));
    }
    assert!(
        kills >= SERVICES.len(),
        "every service was killed at least once"
    );

    let twilio = &deployment.twilio;
    let result = wait::until("every alert's SMS", Duration::from_secs(120), || async {
        let ledger = twilio.ledger();
        let distinct: std::collections::BTreeSet<String> =
            ledger.iter().map(|entry| entry.to.clone()).collect();
        if distinct.len() == ALERTS {
            Ok(())
        } else {
            Err(format!("{} of {ALERTS} phones reached", distinct.len()))
        }
    })
    .await;
    if let Err(timeout) = result {
        for service in SERVICES {
            let log = std::fs::read_to_string(directory.path().join(format!("{service}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!(
                "--- {service} ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let kept = directory.keep();
        panic!("{timeout} (service logs kept in {})", kept.display());
    }

    // Let in-flight work settle (every dispatch has an outcome), then count.
    let jetstream = deployment.sites.jetstream(Site::Onprem).await;
    wait::until(
        "the dispatcher to drain",
        Duration::from_secs(60),
        || async {
            let mut stream = jetstream
                .get_stream("DISPATCH")
                .await
                .map_err(|e| e.to_string())?;
            let mut pending = 0;
            for name in ["dispatcher", "dispatcher-sign-in"] {
                let mut consumer = stream
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>(name)
                    .await
                    .map_err(|e| e.to_string())?;
                let info = consumer.info().await.map_err(|e| e.to_string())?;
                pending += info.num_pending + info.num_ack_pending as u64;
            }
            let _ = stream.info().await;
            if pending == 0 {
                Ok(())
            } else {
                Err(format!("{pending} pending"))
            }
        },
    )
    .await
    .expect("dispatcher drains");

    let ledger = twilio.ledger();
    let mut per_phone: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &ledger {
        *per_phone.entry(entry.to.clone()).or_default() += 1;
    }
    let duplicates: usize = per_phone.values().map(|count| count - 1).sum();
    eprintln!(
        "kill test: {} SMS for {ALERTS} alerts, {duplicates} duplicate(s) after {kills} SIGKILLs",
        ledger.len()
    );
    assert_eq!(per_phone.len(), ALERTS, "no alert lost");
    // Only the dispatcher's crash window can duplicate, once per dispatcher kill at most.
    assert!(
        duplicates <= dispatcher_kills,
        "{duplicates} duplicates: {per_phone:?}"
    );
    for (_, mut process) in processes {
        let _ = process.child.start_kill();
        let _ = process.child.wait().await;
        let _ = process.name;
    }
}
