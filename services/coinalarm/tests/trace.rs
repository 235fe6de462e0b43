//! `coinalarm trace` against a history built for it on real NATS (both sites), real services and the
//! fake exchange and provider:
//!
//! * an alert created, edited, fired by a tick crossing its target, its SMS sent and delivered (the
//!   fake provider posts the status callback to the API): `trace alert` reports exactly that, in
//!   order, with the stream sequences both sites really store, the prices before and at the crossing
//!   and non-negative hop latencies; `trace dispatch` and `trace phone` find the same SMS;
//! * a partition: with the link cut both sites send the same alert; `trace alert` says the sites
//!   disagree while the link is down, and that the trigger was sent twice, by which sites, before and
//!   after the link is restored.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use coinalarm::trace::model::{DisagreementKind, TickRole};
use coinalarm::trace::{self, AlertOptions, AlertTrace, PhoneOptions};
use coinalarm_ingest::fake_exchange::FeedMode;
use coinalarm_runtime::Config;
use coinalarm_runtime::host::StartFn;
use coinalarm_test_support::wait;
use common::two_sites::{MARKET, START_PRICE, TARGET_STEP, TwoSiteDeployment};
use common::{AUTH_TOKEN, Deployment, SEALING_KEY, section, start_services};
use proto_events::domain::{AlertId, MarketCode, PhoneHash, PhoneNumber, Price, UserId};
use proto_events::events::{AlertCreated, AlertUpdated, UserRegistered};
use proto_events::{Envelope, Site};
use serde_json::json;

/// Test-only phone-hash key (32 bytes, base64), as `[api] phone_hash_key`.
const PHONE_HASH_KEY: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";
const SESSION_KEY: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

const PIPELINE_AND_API: &[(&str, StartFn)] = &[
    (coinalarm_ingest::NAME, coinalarm_ingest::start),
    (coinalarm_matcher::NAME, coinalarm_matcher::start),
    (coinalarm_notifier::NAME, coinalarm_notifier::start),
    (coinalarm_dispatcher::NAME, coinalarm_dispatcher::start),
    (coinalarm_projector::NAME, coinalarm_projector::start),
    (coinalarm_api::NAME, coinalarm_api::start),
];

fn phone_key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(PHONE_HASH_KEY)
        .expect("key")
}

/// On-prem's configuration with the API (to receive the provider's status callbacks) and the
/// phone-hash key trace matches numbers with.
fn onprem_config(deployment: &Deployment) -> Config {
    let mut config = deployment.config(Site::Onprem, &[MARKET]);
    let api_port = coinalarm_test_support::ports::free_port();
    let api_url = format!("http://127.0.0.1:{api_port}");
    config.api = section(json!({
        "listen": format!("127.0.0.1:{api_port}"),
        "public_base_url": api_url,
        "phone_hash_key": PHONE_HASH_KEY,
        "session_keys": {"current": "s1", "keys": {"s1": SESSION_KEY}},
        "sealing_keys": {"current": "k1", "keys": {"k1": SEALING_KEY}},
        "twilio_auth_tokens": {"twilio": AUTH_TOKEN},
    }));
    if let Some(twilio) = config
        .dispatcher
        .get_mut("providers")
        .and_then(|providers| providers.get_mut("twilio"))
        .and_then(|twilio| twilio.as_object_mut())
    {
        twilio.insert(
            "status_callback_url".to_owned(),
            json!(format!("{api_url}/v1/twilio/status")),
        );
    }
    // The API's rate limits are not under test: nothing listens here, so no shared Redis is touched.
    config.redis.url = "redis://127.0.0.1:9".to_owned();
    config
}

/// Checks with a plain direct get that every location the trace names holds that message.
async fn assert_locations_hold_their_events(deployment: &Deployment, report: &AlertTrace) {
    for site in Site::ALL {
        let jetstream = deployment.sites.jetstream(site).await;
        for entry in &report.timeline {
            let Some(location) = entry.locations.get(&site) else {
                continue;
            };
            let stream = jetstream
                .get_stream(&location.stream)
                .await
                .expect("stream");
            let message = stream
                .get_raw_message(location.sequence)
                .await
                .unwrap_or_else(|error| {
                    panic!("{} {}: {error}", location.stream, location.sequence)
                });
            let id = message
                .headers
                .get(proto_events::envelope::header::MSG_ID)
                .map(|value| value.as_str().to_owned());
            assert_eq!(
                id.as_deref(),
                Some(entry.message_id.as_str()),
                "{site} {}:{} holds another message",
                location.stream,
                location.sequence
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_created_edited_fired_sent_and_delivered_is_traced_step_by_step() {
    let deployment = Deployment::start(FeedMode::Scripted).await;
    let config = onprem_config(&deployment);
    let bus = deployment.api_bus(Site::Onprem).await;
    let phone = PhoneNumber::parse("010-2222-3333").expect("phone");
    let user_id = UserId::new();
    bus.publish_expecting(
        &Envelope::new(
            UserRegistered {
                user_id: user_id.clone(),
                phone_hash: PhoneHash::of(&phone_key(), &phone),
                phone: phone.clone(),
                home_site: Site::Onprem,
            },
            Site::Onprem,
        ),
        Site::Onprem,
        0,
        None,
    )
    .await
    .expect("user registered");

    // Created at 96,000,000, then edited down to 95,500,000.
    let alert_id = AlertId::new();
    let spec = |target: &str| {
        json!({"exchange": "upbit", "repeat": {"mode": "once"}, "condition": {
            "kind": "target_price", "market": MARKET, "target": target, "direction": "up",
            "side_at_creation": "below", "reference_price": "95000000"}})
    };
    let created: AlertCreated = serde_json::from_value(json!({
        "alert_id": alert_id, "user_id": user_id, "home_site": "onprem", "spec": spec("96000000"),
    }))
    .expect("alert");
    let first = bus
        .publish_expecting(&Envelope::new(created, Site::Onprem), Site::Onprem, 0, None)
        .await
        .expect("alert created");
    let updated: AlertUpdated = serde_json::from_value(json!({
        "alert_id": alert_id, "user_id": user_id, "version": 2, "spec": spec("95500000"),
    }))
    .expect("update");
    bus.publish_expecting(
        &Envelope::new(updated, Site::Onprem),
        Site::Onprem,
        first.sequence,
        None,
    )
    .await
    .expect("alert updated");

    let services = start_services(config.clone(), PIPELINE_AND_API);
    wait::until_true("ingest to subscribe", Duration::from_secs(30), || async {
        deployment.exchange.subscriber_count() > 0
    })
    .await
    .expect("ingest subscribes");
    deployment.wait_matcher_ready(Site::Onprem).await;
    let market = MarketCode::parse(MARKET).expect("market");
    deployment
        .exchange
        .push_trade(&market, Price::parse("95000000").expect("price"));
    deployment
        .exchange
        .push_trade(&market, Price::parse("95600000").expect("price"));
    let ledger = deployment.wait_for_ledger(1, Duration::from_secs(30)).await;
    assert_eq!(ledger[0].to, "+821022223333");

    // Until the callback is recorded and the cloud has every event too.
    let report = wait::until(
        "the delivery, replicated to both sites",
        Duration::from_secs(30),
        || async {
            let report = trace::alert(&config, None, &alert_id, &AlertOptions::default())
                .await
                .map_err(|error| error.to_string())?;
            let delivered = report.firings.iter().any(|firing| firing.delivered);
            if delivered && report.disagreements.is_empty() {
                Ok(report)
            } else {
                Err(format!(
                    "delivered: {delivered}, disagreements: {:?}",
                    report.disagreements
                ))
            }
        },
    )
    .await
    .expect("a complete trace");

    // Exactly the history, in causal order.
    let steps: Vec<(&str, Option<TickRole>)> = report
        .timeline
        .iter()
        .map(|entry| (entry.event_type.as_str(), entry.tick_role))
        .collect();
    assert_eq!(
        steps,
        [
            ("alert.created", None),
            ("alert.updated", None),
            ("tick.observed", Some(TickRole::Before)),
            ("tick.observed", Some(TickRole::Crossing)),
            ("trigger.fired", None),
            ("dispatch.requested", None),
            ("dispatch.claimed", None),
            ("dispatch.sent", None),
            ("dispatch.delivered", None),
        ]
    );
    for entry in &report.timeline {
        assert_eq!(
            entry.locations.keys().copied().collect::<Vec<_>>(),
            Site::ALL,
            "{} at both sites",
            entry.event_type
        );
    }
    assert_locations_hold_their_events(&deployment, &report).await;
    // Nothing else was written to the on-prem origin streams but these (and the user): the sequences
    // of the ticks are the first two of TICKS.
    let ticks: Vec<u64> = report
        .timeline
        .iter()
        .filter(|entry| entry.event_type == "tick.observed")
        .map(|entry| entry.locations[&Site::Onprem].sequence)
        .collect();
    assert_eq!(ticks, [1, 2]);

    assert_eq!(report.home_site, Some(Site::Onprem));
    assert_eq!(
        report
            .definition
            .iter()
            .map(|change| (change.version, change.site, change.user_id.clone()))
            .collect::<Vec<_>>(),
        [
            (1, Site::Onprem, user_id.to_string()),
            (2, Site::Onprem, user_id.to_string())
        ]
    );
    assert_eq!(report.firings.len(), 1);
    let firing = &report.firings[0];
    assert_eq!(firing.alert_version, 2);
    let prices = &firing.prices[0];
    assert_eq!(prices.market, MARKET);
    assert_eq!(
        prices.before.as_ref().map(|tick| tick.price.as_str()),
        Some("95000000")
    );
    assert_eq!(
        prices.crossing.as_ref().map(|tick| tick.price.as_str()),
        Some("95600000")
    );
    assert_eq!(prices.observed_price, "95600000");
    assert_eq!(firing.sends.len(), 1);
    assert!(!firing.duplicate && firing.delivered);
    let latency = &firing.latency;
    for (hop, value) in [
        ("tick to trigger", latency.tick_to_trigger_ms),
        ("trigger to request", latency.trigger_to_request_ms),
        ("request to sent", latency.request_to_sent_ms),
        ("sent to delivered", latency.sent_to_delivered_ms),
        ("tick to sent", latency.tick_to_sent_ms),
    ] {
        let value = value.unwrap_or_else(|| panic!("{hop} latency missing"));
        assert!(value >= 0, "{hop}: {value} ms");
    }
    assert!(report.duplicates.is_empty() && report.dead_letters.is_empty());

    // The JSON form parses back with the same steps.
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&report).expect("json")).expect("parses");
    assert_eq!(json["timeline"].as_array().map(Vec::len), Some(9));
    assert_eq!(
        json["firings"][0]["prices"][0]["before"]["price"],
        "95000000"
    );

    // One site alone tells the same story.
    let cloud_only = trace::alert(
        &config,
        Some(Site::Cloud),
        &alert_id,
        &AlertOptions::default(),
    )
    .await
    .expect("trace at the cloud");
    assert_eq!(cloud_only.timeline.len(), 9);
    assert!(cloud_only.disagreements.is_empty());

    // The dispatch and the phone number lead to the same SMS.
    let dispatch_id = firing.dispatch_ids[0].parse().expect("dispatch id");
    let dispatch = trace::dispatch(&config, None, &dispatch_id)
        .await
        .expect("trace dispatch");
    assert_eq!(dispatch.status, "delivered");
    assert_eq!(dispatch.sends, firing.sends);
    assert!(dispatch.duplicate.is_none());
    assert_eq!(
        dispatch
            .timeline
            .iter()
            .map(|entry| entry.event_type.as_str())
            .collect::<Vec<_>>(),
        [
            "trigger.fired",
            "dispatch.requested",
            "dispatch.claimed",
            "dispatch.sent",
            "dispatch.delivered"
        ]
    );
    let options = PhoneOptions {
        limit: 20,
        since: jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1),
    };
    for written in ["+821022223333", "010-2222-3333"] {
        let phone = PhoneNumber::parse(written).expect("phone");
        let found = trace::phone(&config, None, &phone, &options)
            .await
            .expect("trace phone");
        assert_eq!(found.matched, 1, "{written}");
        assert_eq!(found.dispatches[0].dispatch_id, dispatch_id.to_string());
        assert_eq!(found.dispatches[0].status, "delivered");
        assert_eq!(found.dispatches[0].sends.len(), 1);
    }

    // The human rendering names every step and where to check it.
    let text = trace::render_alert(&report);
    for expected in [
        "alert.created",
        "alert.updated",
        "last price before the crossing",
        "crossing price",
        "dispatch.delivered",
        "TICKS:1",
        "TICKS:2",
        "ONPREM STREAM:SEQ",
        "CLOUD STREAM:SEQ",
        "nats stream get",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(
        !text.contains("DUPLICATE") && !text.contains("DISAGREE"),
        "{text}"
    );

    // The command: unknown ids exit 1 with a clear message; a known one prints JSON.
    let directory = tempfile::tempdir().expect("directory");
    let config_file = directory.path().join("coinalarm.toml");
    std::fs::write(&config_file, toml::to_string(&config).expect("toml")).expect("config");
    let command = |arguments: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_coinalarm"))
            .args(arguments)
            .env_clear()
            .env("COINALARM_CONFIG", &config_file)
            .output()
            .expect("run coinalarm")
    };
    let unknown = AlertId::new().to_string();
    let output = command(&["trace", "alert", &unknown]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&unknown) && stderr.contains("unknown at onprem and cloud"),
        "{stderr}"
    );
    let output = command(&["trace", "alert", alert_id.as_str(), "--json"]);
    assert!(output.status.success(), "{output:?}");
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json output");
    assert_eq!(printed["alert_id"], alert_id.as_str());
    let output = command(&["trace", "phone", "010-2222-3333"]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(dispatch_id.as_str()));

    services.stop().await;
}

/// Waits until both sites judge the other dead (their beats no longer cross the cut link).
async fn wait_each_site_judges_the_other_dead(two: &TwoSiteDeployment) {
    for site in Site::ALL {
        let watcher = two.watcher(site).await;
        wait::until_true(
            &format!("{site} to judge its peer dead"),
            Duration::from_secs(20),
            || async { !watcher.liveness.view().peer_alive() },
        )
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"));
        watcher.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_duplicate_is_reported_with_its_senders_and_the_sites_disagree_while_cut() {
    let mut two = TwoSiteDeployment::start().await;
    let alerts = two.define_alerts(1, |_| Site::Onprem).await;
    let alert = &alerts[0];
    two.spawn(Site::Onprem);
    two.spawn(Site::Cloud);
    two.wait_ready().await;
    let config = two.config(Site::Onprem);
    let market = MarketCode::parse(MARKET).expect("market");
    two.deployment
        .exchange
        .push_trade(&market, Price::new(START_PRICE.into()).expect("price"));

    two.deployment.sites.cut_link();
    wait_each_site_judges_the_other_dead(&two).await;
    // Both ingesters see the crossing; both matchers fire; each site sends, the cloud as a takeover.
    let crossing = START_PRICE + TARGET_STEP + TARGET_STEP / 2;
    two.deployment
        .exchange
        .push_trade(&market, Price::new(crossing.into()).expect("price"));
    wait::until_true(
        "both sites to send the SMS",
        Duration::from_secs(30),
        || async { two.ledger_counts().get(&alert.phone).copied() == Some(2) },
    )
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));

    let sent_twice = |report: &AlertTrace| {
        report.duplicates.len() == 1
            && report.duplicates[0].sent_by == Site::ALL
            && report.duplicates[0].sends.len() == 2
    };
    let during = wait::until(
        "both sends in the outcome events of their sites",
        Duration::from_secs(20),
        || async {
            let report = trace::alert(&config, None, &alert.alert_id, &AlertOptions::default())
                .await
                .map_err(|error| error.to_string())?;
            if sent_twice(&report) {
                Ok(report)
            } else {
                Err(format!("{:?}", report.duplicates))
            }
        },
    )
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    assert_eq!(during.firings.len(), 1);
    assert!(during.firings[0].duplicate);
    let missing: BTreeMap<String, Vec<Site>> = during
        .disagreements
        .iter()
        .filter(|found| found.kind == DisagreementKind::MissingAtSite)
        .map(|found| (found.event_type.clone(), found.present_at.clone()))
        .fold(BTreeMap::new(), |mut by_type, (event_type, present_at)| {
            by_type.entry(event_type).or_default().extend(present_at);
            by_type
        });
    assert!(
        missing
            .get("dispatch.sent")
            .is_some_and(|sites| sites.len() == 2),
        "each site's send is missing at the other while the link is cut: {:?}",
        during.disagreements
    );
    let text = trace::render_alert(&during);
    assert!(
        text.contains("DUPLICATE SMS") && text.contains("sent 2 times, by onprem and cloud"),
        "{text}"
    );
    assert!(text.contains("THE SITES DISAGREE"), "{text}");
    // Read at one site, only that site's own send is visible: trace says what it can see there.
    let onprem_only = trace::alert(
        &config,
        Some(Site::Onprem),
        &alert.alert_id,
        &AlertOptions::default(),
    )
    .await
    .expect("trace at on-prem");
    assert_eq!(onprem_only.firings[0].sends.len(), 1);
    assert_eq!(onprem_only.firings[0].sends[0].site, Site::Onprem);

    two.deployment.sites.restore_link();
    two.deployment
        .sites
        .wait_link_up(Duration::from_secs(30))
        .await;
    let after = wait::until(
        "the sites to hold the same events again",
        Duration::from_secs(30),
        || async {
            let report = trace::alert(&config, None, &alert.alert_id, &AlertOptions::default())
                .await
                .map_err(|error| error.to_string())?;
            let missing: Vec<_> = report
                .disagreements
                .iter()
                .filter(|found| found.kind == DisagreementKind::MissingAtSite)
                .collect();
            if missing.is_empty() {
                Ok(report)
            } else {
                Err(format!("{missing:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    assert!(sent_twice(&after), "{:?}", after.duplicates);
    // The request was worded at both sites with one id: each aggregate kept its own copy.
    assert!(
        after
            .disagreements
            .iter()
            .any(|found| found.kind == DisagreementKind::ContentDiffers
                && found.event_type == "dispatch.requested"),
        "{:?}",
        after.disagreements
    );
    let phone = PhoneNumber::parse(&alert.phone).expect("phone");
    let mut config = config;
    config.api = section(json!({"phone_hash_key": PHONE_HASH_KEY}));
    let found = trace::phone(
        &config,
        None,
        &phone,
        &PhoneOptions {
            limit: 5,
            since: jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1),
        },
    )
    .await
    .expect("trace phone");
    assert_eq!(found.dispatches.len(), 1);
    assert!(found.dispatches[0].duplicate);
}
