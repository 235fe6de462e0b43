//! The alert lifecycle through the API, against real NATS (both sites), Postgres and Redis with the
//! projector running: every command becomes an event on the alert's subject, reads see the user's own
//! writes, stale versions and lost races are 409s, and commands for an alert homed at the other site
//! cross the link (or fall back to the local origin when the link is cut).

mod common;

use std::time::Duration;

use coinalarm_runtime::bus::Bus;
use coinalarm_test_support::nats::read_stream;
use coinalarm_test_support::wait;
use common::{Client, Harness, assert_error};
use proto_events::domain::UserId;
use proto_events::events::TickObserved;
use proto_events::{Envelope, Site};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PHONE: &str = "010-3333-0001";

/// API and projector at one site.
const API_AND_PROJECTOR: &[(&str, coinalarm_runtime::host::StartFn)] = &[
    (coinalarm_api::NAME, coinalarm_api::start),
    (coinalarm_projector::NAME, coinalarm_projector::start),
];

async fn publish_tick(harness: &Harness, market: &str, price: &str, sequential_id: u64) {
    let bus = Bus::from_client(
        harness.sites.client(Site::Onprem, "ingest").await,
        Site::Onprem,
        "ingest",
        Duration::from_secs(5),
    );
    let tick: TickObserved = serde_json::from_value(json!({
        "exchange": "upbit", "market": market, "trade_price": price,
        "signed_change_rate": "0.01", "signed_change_price": "1000",
        "trade_timestamp": jiff::Timestamp::now(), "sequential_id": sequential_id,
        "stream_type": "realtime",
    }))
    .expect("tick");
    bus.publish(&Envelope::new(tick, Site::Onprem), None)
        .await
        .expect("tick published");
}

fn target_alert(target: &str) -> Value {
    json!({"condition": {"kind": "target_price", "market": "KRW-BTC", "target": target, "direction": "up"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_of_every_kind_go_through_their_lifecycle_and_reads_see_each_write() {
    let harness = Harness::start().await;
    let running = harness
        .run(
            harness.config(Site::Onprem, json!({"max_alerts_per_user": 5})),
            API_AND_PROJECTOR,
        )
        .await;
    publish_tick(&harness, "KRW-BTC", "95000000", 1).await;
    let user = UserId::new();
    let api = Client::new(&harness.api_url(Site::Onprem)).with_token(&harness.token(&user, PHONE));

    // Target price below the market: armed from below.
    let (status, below, headers) = api.post("/v1/alerts", target_alert("96000000")).await;
    assert_eq!(status, StatusCode::CREATED, "{below}");
    let id = below["alert_id"].as_str().expect("id").to_owned();
    assert_eq!(headers["location"], format!("/v1/alerts/{id}"));
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(headers["coinalarm-consistent"], "true");
    assert_eq!(below["status"], "active");
    assert_eq!(below["version"], 1);
    assert_eq!(below["home_site"], "onprem");
    assert_eq!(below["condition"]["side_at_creation"], "below");
    assert_eq!(below["condition"]["reference_price"], "95000000");
    assert_eq!(below["repeat"], json!({"mode": "once"}));
    // The next read sees it, with its (empty) firing summary.
    let (status, read, _) = api.get(&format!("/v1/alerts/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["condition"], below["condition"]);
    assert_eq!(read["firings"]["count"], 0);

    // Target already passed at creation: recorded as such, so it waits to be re-armed.
    let (status, passed, _) = api.post("/v1/alerts", target_alert("90000000")).await;
    assert_eq!(status, StatusCode::CREATED, "{passed}");
    assert_eq!(passed["condition"]["side_at_creation"], "above");

    let (status, change, _) = api
        .post(
            "/v1/alerts",
            json!({"condition": {"kind": "change_rate", "market": "KRW-ETH", "basis": "1h",
                                 "direction": "down", "threshold": "3.5"},
                   "repeat": {"mode": "repeat", "cooldown_seconds": 600}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{change}");
    assert_eq!(
        change["repeat"],
        json!({"mode": "repeat", "cooldown_seconds": 600})
    );
    let expires = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48)).to_string();
    let (status, scheduled, _) = api
        .post(
            "/v1/alerts",
            json!({"condition": {"kind": "scheduled", "markets": ["KRW-ETH", "KRW-BTC"],
                                 "weekdays": ["fri", "mon"], "time_of_day": "09:00"},
                   "expires_at": expires}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{scheduled}");
    assert_eq!(
        scheduled["condition"]["time_zone"], "Asia/Seoul",
        "the default zone"
    );
    assert_eq!(
        scheduled["condition"]["markets"],
        json!(["KRW-BTC", "KRW-ETH"])
    );
    assert_eq!(scheduled["condition"]["weekdays"], json!(["mon", "fri"]));
    assert_eq!(scheduled["condition"]["time_of_day"], "09:00:00");

    // Newest first, paginated.
    let (status, page, _) = api.get("/v1/alerts?limit=3").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<&str> = page["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|alert| alert["alert_id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [
            scheduled["alert_id"].as_str().unwrap(),
            change["alert_id"].as_str().unwrap(),
            passed["alert_id"].as_str().unwrap()
        ]
    );
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let (_, rest, _) = api
        .get(&format!("/v1/alerts?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(rest["alerts"][0]["alert_id"], id);
    assert_eq!(rest["next_cursor"], Value::Null);

    // Update, pause (twice: the second changes nothing), resume, each visible at once.
    let (status, updated, headers) = api
        .put(
            &format!("/v1/alerts/{id}"),
            target_alert("97000000"),
            Some(1),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);
    assert_eq!(headers["etag"], "\"2\"");
    assert_eq!(
        api.get(&format!("/v1/alerts/{id}")).await.1["condition"]["target"],
        "97000000"
    );
    let (status, paused, _) = api
        .post_empty(&format!("/v1/alerts/{id}/pause"), Some(2))
        .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(
        (paused["status"].as_str(), paused["version"].as_u64()),
        (Some("paused"), Some(3))
    );
    assert_eq!(
        api.get("/v1/alerts?status=paused").await.1["alerts"][0]["alert_id"],
        id
    );
    let (_, again, _) = api
        .post_empty(&format!("/v1/alerts/{id}/pause"), None)
        .await;
    assert_eq!(again["version"], 3);
    let (_, resumed, _) = api
        .post_empty(&format!("/v1/alerts/{id}/resume"), Some(3))
        .await;
    assert_eq!(
        (resumed["status"].as_str(), resumed["version"].as_u64()),
        (Some("active"), Some(4))
    );

    // Another user sees none of it.
    let stranger = Client::new(&harness.api_url(Site::Onprem))
        .with_token(&harness.token(&UserId::new(), "010-3333-0002"));
    assert_error(
        &stranger.get(&format!("/v1/alerts/{id}")).await,
        StatusCode::NOT_FOUND,
        "alert_not_found",
    );
    assert_error(
        &stranger
            .post_empty(&format!("/v1/alerts/{id}/pause"), None)
            .await,
        StatusCode::NOT_FOUND,
        "alert_not_found",
    );
    assert_eq!(stranger.get("/v1/alerts").await.1["alerts"], json!([]));

    // Delete: gone from reads, and no command is accepted after it.
    let (status, _, headers) = api.delete(&format!("/v1/alerts/{id}"), Some(4)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["coinalarm-consistent"], "true");
    assert_error(
        &api.get(&format!("/v1/alerts/{id}")).await,
        StatusCode::NOT_FOUND,
        "alert_not_found",
    );
    assert_error(
        &api.post_empty(&format!("/v1/alerts/{id}/resume"), None)
            .await,
        StatusCode::NOT_FOUND,
        "alert_not_found",
    );
    assert_eq!(
        api.get("/v1/alerts").await.1["alerts"]
            .as_array()
            .expect("alerts")
            .len(),
        3
    );

    // Every command is one event on the alert's subject, in order, with its version.
    let jetstream = harness.sites.jetstream(Site::Onprem).await;
    let subjects: Vec<String> = read_stream(&jetstream, "ALERTS_ONPREM")
        .await
        .into_iter()
        .filter(|message| message.subject.ends_with(&id))
        .map(|message| message.message_id.unwrap_or_default())
        .collect();
    assert_eq!(
        subjects,
        (1..=5)
            .map(|version| format!("alert:{id}:{version}:onprem"))
            .collect::<Vec<_>>()
    );

    // Validation, each with its code.
    let cases = [
        (
            json!({"condition": {"kind": "target_price", "market": "KRW-NOPE", "target": "1", "direction": "up"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_market",
        ),
        (
            json!({"condition": {"kind": "target_price", "market": "krw-btc", "target": "1", "direction": "up"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_market",
        ),
        (
            target_alert("-5"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            target_alert("0"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"condition": {"kind": "target_price", "market": "KRW-BTC", "target": 96000000, "direction": "up"}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"condition": {"kind": "target_price", "market": "KRW-BTC", "target": "1", "direction": "up", "extra": true}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"condition": {"kind": "target_price", "market": "KRW-BTC", "target": "1", "direction": "sideways"}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"condition": {"kind": "change_rate", "market": "KRW-BTC", "basis": "1h", "direction": "down", "threshold": "150"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"condition": {"kind": "change_rate", "market": "KRW-BTC", "basis": "1h", "direction": "up", "threshold": "0"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"condition": {"kind": "scheduled", "markets": ["KRW-BTC"], "time_of_day": "09:00"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"condition": {"kind": "scheduled", "markets": ["KRW-BTC"], "weekdays": ["mon"], "time_of_day": "25:00"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"condition": {"kind": "scheduled", "markets": ["KRW-BTC"], "weekdays": ["mon"], "time_of_day": "09:00", "time_zone": "Mars/Olympus"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"condition": {"kind": "scheduled", "markets": ["KRW-BTC"], "dates": ["2020-01-01"], "time_of_day": "09:00"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"condition": {"kind": "scheduled", "markets": [], "weekdays": ["mon"], "time_of_day": "09:00"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"condition": target_alert("1")["condition"], "repeat": {"mode": "repeat", "cooldown_seconds": 10}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"condition": target_alert("1")["condition"], "expires_at": "2020-01-01T00:00:00Z"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"condition": target_alert("1")["condition"], "exchange": "binance"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ];
    for (body, status, code) in cases {
        let answer = api.post("/v1/alerts", body.clone()).await;
        assert_eq!(answer.0, status, "{body} → {}", answer.1);
        assert_eq!(answer.1["code"], code, "{body} → {}", answer.1);
    }
    assert_error(
        &api.get("/v1/alerts?status=bogus").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_error(
        &api.get("/v1/alerts?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_error(
        &api.get("/v1/alerts?cursor=garbage").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let anonymous = Client::new(&harness.api_url(Site::Onprem));
    assert_error(
        &anonymous.get("/v1/alerts").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_error(
        &anonymous.post("/v1/alerts", target_alert("1")).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );

    // The per-user cap (5 here; 3 live so far).
    for target in ["1000", "2000"] {
        assert_eq!(
            api.post("/v1/alerts", target_alert(target)).await.0,
            StatusCode::CREATED
        );
    }
    assert_error(
        &api.post("/v1/alerts", target_alert("3000")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "alert_limit_reached",
    );

    // A create retried with its client-chosen id is answered with the same alert, not a second one.
    let chosen = uuid::Uuid::new_v4();
    let deleted = api
        .delete(
            &format!("/v1/alerts/{}", change["alert_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(deleted.0, StatusCode::NO_CONTENT, "{}", deleted.1);
    let body = json!({"alert_id": chosen, "condition": target_alert("5000")["condition"]});
    let first = api.post("/v1/alerts", body.clone()).await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    let retried = api.post("/v1/alerts", body).await;
    assert_eq!(retried.0, StatusCode::CREATED, "{}", retried.1);
    assert_eq!(retried.1["alert_id"], chosen.to_string());
    let other = api
        .post(
            "/v1/alerts",
            json!({"alert_id": chosen, "condition": target_alert("6000")["condition"]}),
        )
        .await;
    assert_eq!(other.0, StatusCode::CONFLICT, "{}", other.1);

    assert!(running.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_version_is_a_409_and_of_two_racing_updates_exactly_one_wins() {
    let harness = Harness::start().await;
    let running = harness
        .run(harness.config(Site::Onprem, json!({})), API_AND_PROJECTOR)
        .await;
    let user = UserId::new();
    let api = Client::new(&harness.api_url(Site::Onprem)).with_token(&harness.token(&user, PHONE));
    let (status, created, _) = api.post("/v1/alerts", target_alert("96000000")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/v1/alerts/{}", created["alert_id"].as_str().expect("id"));

    let mut version = 1;
    for round in 0..5 {
        let (first, second) = tokio::join!(
            api.put(
                &path,
                target_alert(&format!("{}", 97_000_000 + round)),
                Some(version)
            ),
            api.put(
                &path,
                target_alert(&format!("{}", 98_000_000 + round)),
                Some(version)
            ),
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "{} / {}",
            first.1,
            second.1
        );
        let (winner, loser) = if first.0 == StatusCode::OK {
            (first, second)
        } else {
            (second, first)
        };
        version += 1;
        assert_eq!(winner.1["version"], version);
        assert_eq!(loser.1["code"], "version_conflict");
        assert_eq!(loser.1["details"]["current_version"], version);
        // The winner's definition is the one stored.
        assert_eq!(
            api.get(&path).await.1["condition"]["target"],
            winner.1["condition"]["target"]
        );
    }

    // A stale version, however old, is refused with the current one.
    let stale = api.put(&path, target_alert("1"), Some(2)).await;
    assert_error(&stale, StatusCode::CONFLICT, "version_conflict");
    assert_eq!(stale.1["details"]["current_version"], version);
    assert_error(
        &api.post_empty(&format!("{path}/pause"), Some(1)).await,
        StatusCode::CONFLICT,
        "version_conflict",
    );
    assert_error(
        &api.delete(&path, Some(1)).await,
        StatusCode::CONFLICT,
        "version_conflict",
    );

    // Without If-Match, concurrent commands are applied one after the other: none is lost.
    let (first, second) = tokio::join!(
        api.put(&path, target_alert("11"), None),
        api.put(&path, target_alert("12"), None),
    );
    assert_eq!(
        (first.0, second.0),
        (StatusCode::OK, StatusCode::OK),
        "{} / {}",
        first.1,
        second.1
    );
    let (_, last, _) = api.get(&path).await;
    assert_eq!(
        last["version"],
        version + 2,
        "both commands were applied: {last}"
    );

    assert!(running.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_for_an_alert_homed_at_the_other_site_cross_the_link_or_fall_back_when_it_is_cut()
{
    let harness = Harness::start().await;
    let onprem = harness
        .run(harness.config(Site::Onprem, json!({})), API_AND_PROJECTOR)
        .await;
    let cloud = harness
        .run(harness.config(Site::Cloud, json!({})), API_AND_PROJECTOR)
        .await;
    let user = UserId::new();
    let token = harness.token(&user, PHONE);
    let at_onprem = Client::new(&harness.api_url(Site::Onprem)).with_token(&token);
    let at_cloud = Client::new(&harness.api_url(Site::Cloud)).with_token(&token);

    let (status, created, _) = at_onprem.post("/v1/alerts", target_alert("96000000")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["alert_id"].as_str().expect("id").to_owned();
    let path = format!("/v1/alerts/{id}");
    wait::until_true(
        "the alert to reach the cloud read model",
        Duration::from_secs(20),
        || async { at_cloud.probe(&path).await == Some(StatusCode::OK) },
    )
    .await
    .expect("replicated");

    // Served by the cloud site, written to the on-prem origin (the alert's home) across the link.
    let (status, updated, _) = at_cloud.put(&path, target_alert("97000000"), Some(1)).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);
    let onprem_js = harness.sites.jetstream(Site::Onprem).await;
    let in_home_origin = read_stream(&onprem_js, "ALERTS_ONPREM").await;
    assert!(
        in_home_origin
            .iter()
            .any(|message| message.message_id.as_deref() == Some(&format!("alert:{id}:2:cloud"))),
        "{in_home_origin:?}"
    );
    wait::until_true(
        "on-prem to show version 2",
        Duration::from_secs(20),
        || async { at_onprem.get(&path).await.1["version"] == 2 },
    )
    .await
    .expect("both sites agree");

    // Link cut: the home site is unreachable from the cloud, so the command is kept there.
    harness.sites.cut_link();
    let (status, paused, _) = at_cloud.post_empty(&format!("{path}/pause"), Some(2)).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["status"], "paused");
    let cloud_js = harness.sites.jetstream(Site::Cloud).await;
    let in_cloud_origin = read_stream(&cloud_js, "ALERTS_CLOUD").await;
    assert!(
        in_cloud_origin
            .iter()
            .any(|message| message.subject == format!("cloud.alerts.{id}")),
        "{in_cloud_origin:?}"
    );

    // Link back: on-prem receives the command and both read models converge.
    harness.sites.restore_link();
    wait::until_true(
        "on-prem to show the pause made during the cut",
        Duration::from_secs(30),
        || async {
            let alert = at_onprem.get(&path).await.1;
            alert["status"] == "paused" && alert["version"] == 3
        },
    )
    .await
    .expect("converged");

    assert!(cloud.stop().await.is_clean());
    assert!(onprem.stop().await.is_clean());
}

/// Many commands in flight at once share the process's one read-model poller: each still answers
/// only once its own row is readable, and the next read shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_each_answer_once_their_own_write_is_readable() {
    let harness = Harness::start().await;
    let running = harness
        .run(harness.config(Site::Onprem, json!({})), API_AND_PROJECTOR)
        .await;
    publish_tick(&harness, "KRW-BTC", "95000000", 1).await;
    let base = Client::new(&harness.api_url(Site::Onprem));
    let mut users = Vec::new();
    for number in 0..8 {
        let user = UserId::new();
        let phone = format!("010-3333-{:04}", 100 + number);
        users.push((user.clone(), base.with_token(&harness.token(&user, &phone))));
    }

    let mut commands = tokio::task::JoinSet::new();
    for (_, api) in &users {
        for step in 0..5 {
            let api = api.clone();
            commands.spawn(async move {
                let target = format!("{}", 96_000_000 + step * 1_000);
                let (status, created, headers) =
                    api.post("/v1/alerts", target_alert(&target)).await;
                assert_eq!(status, StatusCode::CREATED, "{created}");
                assert_eq!(headers["coinalarm-consistent"], "true", "{created}");
                let path = format!("/v1/alerts/{}", created["alert_id"].as_str().expect("id"));
                let (status, read, _) = api.get(&path).await;
                assert_eq!(status, StatusCode::OK, "{read}");
                assert_eq!(read["condition"]["target"], target.as_str());

                let moved = format!("{}", 97_000_000 + step * 1_000);
                let (status, updated, headers) =
                    api.put(&path, target_alert(&moved), Some(1)).await;
                assert_eq!(status, StatusCode::OK, "{updated}");
                assert_eq!(headers["coinalarm-consistent"], "true", "{updated}");
                assert_eq!(updated["version"], 2);
                let (_, read, _) = api.get(&path).await;
                assert_eq!(read["condition"]["target"], moved.as_str(), "{read}");
                assert_eq!(read["version"], 2);
            });
        }
    }
    while let Some(done) = commands.join_next().await {
        done.expect("command task");
    }
    for (user, api) in &users {
        let (status, listed, _) = api.get("/v1/alerts").await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        let alerts = listed["alerts"].as_array().expect("alerts");
        assert_eq!(alerts.len(), 5, "every alert of {user} listed: {listed}");
    }

    assert!(running.stop().await.is_clean());
}

/// With nothing projecting, a command is accepted and says so after `consistency_wait`, rather than
/// waiting forever or failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_projector_a_command_answers_not_yet_readable_after_the_wait() {
    let harness = Harness::start().await;
    let api_only: &[(&str, coinalarm_runtime::host::StartFn)] =
        &[(coinalarm_api::NAME, coinalarm_api::start)];
    let running = harness
        .run(
            harness.config(Site::Onprem, json!({"consistency_wait": 0.5})),
            api_only,
        )
        .await;
    let user = UserId::new();
    let api = Client::new(&harness.api_url(Site::Onprem)).with_token(&harness.token(&user, PHONE));
    let started = std::time::Instant::now();
    let (status, created, headers) = api.post("/v1/alerts", target_alert("96000000")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers["coinalarm-consistent"], "false");
    assert_eq!(created["version"], 1);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the command waited for the read model: {:?}",
        started.elapsed()
    );

    assert!(running.stop().await.is_clean());
}
