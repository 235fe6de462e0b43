//! `coinalarm replay` against histories built on purpose with the real pipeline, the command run as its
//! binary (`--json`) against the streams afterwards:
//!
//! * **clean** — an alert fires before the window (so the replay must restore it as spent, not fire it
//!   again), another inside it: one match, no difference, exit 0;
//! * **missed** — the matcher is stopped (it is the only one: only on-prem runs services) and the price
//!   crosses a second alert's target; the matcher is not restarted within the window, as after an outage
//!   whose ticks were skipped: that firing is reported missed, exactly, and the first one matched, exit 3;
//! * **duplicate** — both sites run the whole pipeline; the link is cut, the price crosses an on-prem
//!   alert, both sites send its SMS (the cloud after judging on-prem dead), the link is restored: the
//!   replay reports exactly that firing as duplicated, with both sends.

mod common;

use std::time::Duration;

use coinalarm_ingest::fake_exchange::FeedMode;
use coinalarm_test_support::wait;
use common::two_sites::{MARKET, START_PRICE, TARGET_STEP, TwoSiteDeployment};
use common::{Deployment, MATCHER, RunningServices, WITHOUT_MATCHER, start_services};
use jiff::Timestamp;
use proto_events::domain::{AlertId, MarketCode, PhoneHash, PhoneNumber, Price, UserId};
use proto_events::events::alerts::AlertCreated;
use proto_events::events::users::UserRegistered;
use proto_events::{Envelope, Site};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

async fn register(deployment: &Deployment, phone: &str) -> UserId {
    let bus = deployment.api_bus(Site::Onprem).await;
    let phone = PhoneNumber::parse(phone).expect("phone");
    let user_id = UserId::new();
    let registered = UserRegistered {
        user_id: user_id.clone(),
        phone_hash: PhoneHash::of(b"replay", &phone),
        phone,
        home_site: Site::Onprem,
    };
    bus.publish_expecting(
        &Envelope::new(registered, Site::Onprem),
        Site::Onprem,
        0,
        None,
    )
    .await
    .expect("user registered");
    user_id
}

/// A `once` alert on KRW-BTC reaching `target` from below.
async fn target_alert(deployment: &Deployment, user_id: &UserId, target: i64) -> AlertId {
    let bus = deployment.api_bus(Site::Onprem).await;
    let alert_id = AlertId::new();
    let alert: AlertCreated = serde_json::from_value(json!({
        "alert_id": alert_id,
        "user_id": user_id,
        "home_site": "onprem",
        "spec": {"exchange": "upbit", "repeat": {"mode": "once"}, "condition": {
            "kind": "target_price", "market": "KRW-BTC", "target": target.to_string(),
            "direction": "up", "side_at_creation": "below"}},
    }))
    .expect("alert");
    bus.publish_expecting(&Envelope::new(alert, Site::Onprem), Site::Onprem, 0, None)
        .await
        .expect("alert created");
    alert_id
}

/// Now, to the millisecond: trade times are exchange milliseconds, so a window opened at a finer instant
/// could start after the trade pushed right after it.
fn now_in_milliseconds() -> Timestamp {
    Timestamp::from_millisecond(Timestamp::now().as_millisecond()).expect("now")
}

/// Pushes a trade and waits until `site`'s `TICKS` aggregate holds it (`ticks` ticks in all).
async fn trade(deployment: &Deployment, price: i64, ticks: u64) {
    let market = MarketCode::parse("KRW-BTC").expect("market");
    deployment
        .exchange
        .push_trade(&market, Price::new(price.into()).expect("price"));
    let jetstream = deployment.sites.jetstream(Site::Onprem).await;
    wait::until(&format!("{ticks} ticks stored"), WAIT, || async {
        let mut stream = jetstream
            .get_stream("TICKS")
            .await
            .map_err(|error| error.to_string())?;
        let stored = stream
            .info()
            .await
            .map_err(|error| error.to_string())?
            .state
            .messages;
        if stored >= ticks {
            Ok(())
        } else {
            Err(format!("{stored} stored"))
        }
    })
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
}

/// Runs `coinalarm replay --json` with `config`; returns its exit code and report.
async fn replay(
    config: &coinalarm_runtime::Config,
    from: Timestamp,
    to: Timestamp,
    extra: &[&str],
) -> (i32, Value) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let config_file = directory.path().join("replay.toml");
    std::fs::write(
        &config_file,
        toml::to_string(config).expect("config as toml"),
    )
    .expect("config");
    let mut arguments = vec![
        "replay".to_owned(),
        "--from".to_owned(),
        from.to_string(),
        "--to".to_owned(),
        to.to_string(),
        "--json".to_owned(),
    ];
    arguments.extend(extra.iter().map(|argument| (*argument).to_owned()));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_coinalarm"))
        .args(&arguments)
        // Only the file: `COINALARM_*` variables of the developer's shell would override it.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("COINALARM_CONFIG", &config_file)
        .output()
        .await
        .expect("run coinalarm replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "replay printed no report ({error}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), report)
}

fn alert_ids(firings: &Value) -> Vec<String> {
    firings
        .as_array()
        .expect("a list")
        .iter()
        .map(|firing| {
            firing["alert_id"]
                .as_str()
                .or_else(|| firing["firing"]["alert_id"].as_str())
                .expect("an alert id")
                .to_owned()
        })
        .collect()
}

/// Every service but the matcher, and the matcher on its own (so a test can stop it), once ingest is
/// subscribed and the matcher ready.
async fn start_pipeline(
    deployment: &Deployment,
    config: &coinalarm_runtime::Config,
) -> (RunningServices, RunningServices) {
    let services = start_services(config.clone(), WITHOUT_MATCHER);
    let matcher = start_services(config.clone(), MATCHER);
    wait::until_true("ingest to subscribe", WAIT, || async {
        deployment.exchange.subscriber_count() > 0
    })
    .await
    .expect("ingest subscribes");
    deployment.wait_matcher_ready(Site::Onprem).await;
    (services, matcher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_history_replays_to_no_difference_and_exit_0() {
    let deployment = Deployment::start(FeedMode::Scripted).await;
    let user = register(&deployment, "010-1000-0001").await;
    let before_window = target_alert(&deployment, &user, 96_000_000).await;
    let in_window = target_alert(&deployment, &user, 97_000_000).await;
    let config = deployment.config(Site::Onprem, &["KRW-BTC"]);
    let (services, matcher) = start_pipeline(&deployment, &config).await;
    trade(&deployment, 95_500_000, 1).await;
    trade(&deployment, 96_100_000, 2).await;
    deployment.wait_for_ledger(1, WAIT).await;

    // The window: back under the first target and over the second. Were the first alert not restored
    // as spent, the sandbox would fire it again here.
    let from = now_in_milliseconds();
    trade(&deployment, 95_900_000, 3).await;
    trade(&deployment, 97_100_000, 4).await;
    deployment.wait_for_ledger(2, WAIT).await;
    let to = Timestamp::now();
    matcher.stop().await;
    services.stop().await;

    let (code, report) = replay(&config, from, to, &[]).await;
    assert_eq!(report["matched"], 1, "{report:#}");
    for difference in ["missed", "extra", "duplicated", "late"] {
        assert_eq!(report[difference], json!([]), "{difference}: {report:#}");
    }
    assert_eq!(report["clean"], true);
    assert_eq!(code, 0, "a clean replay exits 0");
    assert_eq!(report["ticks_in_window"], 2);

    // The same history over a window holding both firings: two matches, the first before it is not.
    let (code, report) = replay(
        &config,
        from - jiff::SignedDuration::from_mins(5),
        to,
        &[
            "--alert",
            before_window.as_str(),
            "--alert",
            in_window.as_str(),
        ],
    )
    .await;
    assert_eq!(report["matched"], 2, "{report:#}");
    assert_eq!(code, 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_missed_while_the_matcher_was_stopped_is_reported_missed_exactly() {
    let deployment = Deployment::start(FeedMode::Scripted).await;
    let user = register(&deployment, "010-1000-0002").await;
    let fired = target_alert(&deployment, &user, 96_000_000).await;
    let missed = target_alert(&deployment, &user, 97_000_000).await;
    let config = deployment.config(Site::Onprem, &["KRW-BTC"]);
    let (services, matcher) = start_pipeline(&deployment, &config).await;
    trade(&deployment, 95_500_000, 1).await;

    let from = now_in_milliseconds();
    trade(&deployment, 96_100_000, 2).await;
    deployment.wait_for_ledger(1, WAIT).await;
    // The only matcher stops; the price crosses the second target while nothing evaluates it.
    matcher.stop().await;
    trade(&deployment, 97_100_000, 3).await;
    let to = Timestamp::now();
    services.stop().await;

    let (code, report) = replay(&config, from, to, &[]).await;
    assert_eq!(
        alert_ids(&report["missed"]),
        vec![missed.as_str().to_owned()],
        "{report:#}"
    );
    assert_eq!(report["missed"][0]["price"], "97100000");
    assert_eq!(report["missed"][0]["alert_version"], 1);
    assert_eq!(report["matched"], 1, "the first alert's firing: {report:#}");
    for difference in ["extra", "duplicated", "late"] {
        assert_eq!(report[difference], json!([]), "{difference}: {report:#}");
    }
    assert_eq!(code, 3, "differences exit 3");

    // Narrowed to the alert that fired, the replay is clean.
    let (code, report) = replay(&config, from, to, &["--alert", fired.as_str()]).await;
    assert_eq!(report["matched"], 1, "{report:#}");
    assert_eq!(code, 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_duplicate_is_reported_as_exactly_that_duplicate() {
    let mut two = TwoSiteDeployment::start().await;
    let alerts = two.define_alerts(2, |_| Site::Onprem).await;
    two.spawn(Site::Onprem);
    two.spawn(Site::Cloud);
    two.wait_ready().await;
    let market = MarketCode::parse(MARKET).expect("market");
    let price = |step: i64| {
        Price::new((START_PRICE + TARGET_STEP * step + TARGET_STEP / 2).into()).expect("price")
    };
    two.deployment.exchange.push_trade(&market, price(0));

    let from = now_in_milliseconds();
    two.deployment.sites.cut_link();
    // Crosses the first alert only: both sites fire it, on-prem sends, the cloud takes over and sends.
    two.deployment.exchange.push_trade(&market, price(1));
    two.deployment
        .wait_for_ledger(2, Duration::from_secs(60))
        .await;
    two.deployment.sites.restore_link();
    two.wait_drained(Duration::from_secs(60)).await;
    two.assert_streams_converge(Duration::from_secs(60)).await;
    let to = Timestamp::now();

    let config = two.config(Site::Onprem);
    let (code, report) = replay(&config, from, to, &[]).await;
    assert_eq!(
        alert_ids(&report["duplicated"]),
        vec![alerts[0].alert_id.as_str().to_owned()],
        "{report:#}"
    );
    let sends = report["duplicated"][0]["sends"].as_array().expect("sends");
    let mut senders: Vec<&str> = sends
        .iter()
        .map(|send| send["site"].as_str().expect("site"))
        .collect();
    senders.sort();
    assert_eq!(senders, ["cloud", "onprem"], "{report:#}");
    assert_eq!(
        report["duplicated"][0]["trigger_ids"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(report["matched"], 1, "{report:#}");
    for difference in ["missed", "extra"] {
        assert_eq!(report[difference], json!([]), "{difference}: {report:#}");
    }
    assert_eq!(code, 3);
    // Read at the cloud, the same history gives the same answer.
    let (_, at_cloud) = replay(&config, from, to, &["--site", "cloud"]).await;
    assert_eq!(
        alert_ids(&at_cloud["duplicated"]),
        vec![alerts[0].alert_id.as_str().to_owned()],
        "{at_cloud:#}"
    );
}
