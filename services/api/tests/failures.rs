//! The API with a dependency down, the service itself running: Postgres (reads 503, writes still
//! accepted), Redis (sign-in 503, existing sessions keep working), NATS (writes 503, nothing
//! half-done). Stores go down through a proxy the test cuts; NATS is killed for real.

mod common;

use std::time::Duration;

use coinalarm_test_support::nats::read_stream;
use coinalarm_test_support::wait;
use common::{Client, Harness, assert_error};
use proto_events::Site;
use proto_events::domain::UserId;
use reqwest::StatusCode;
use serde_json::json;

const API_AND_PROJECTOR: &[(&str, coinalarm_runtime::host::StartFn)] = &[
    (coinalarm_api::NAME, coinalarm_api::start),
    (coinalarm_projector::NAME, coinalarm_projector::start),
];

fn target_alert(target: &str) -> serde_json::Value {
    json!({"condition": {"kind": "target_price", "market": "KRW-BTC", "target": target, "direction": "up"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_reads_are_503_and_commands_are_still_accepted() {
    let harness = Harness::start().await;
    let running = harness
        .run(
            harness.config(Site::Onprem, json!({"consistency_wait": 1})),
            API_AND_PROJECTOR,
        )
        .await;
    let user = UserId::new();
    let api = Client::new(&harness.api_url(Site::Onprem))
        .with_token(&harness.token(&user, "010-4444-0001"));
    let (status, before, _) = api.post("/v1/alerts", target_alert("96000000")).await;
    assert_eq!(status, StatusCode::CREATED, "{before}");
    let path = format!("/v1/alerts/{}", before["alert_id"].as_str().expect("id"));

    harness.onprem.postgres_proxy.set_up(false);
    for read in [
        "/v1/alerts",
        path.as_str(),
        "/v1/markets",
        "/v1/notifications",
        "/v1/me",
    ] {
        assert_error(
            &api.get(read).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "read_model_unavailable",
        );
    }
    let (status, ready, _) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready["details"]["unavailable"],
        json!(["postgres"]),
        "{ready}"
    );

    // Commands go to NATS: accepted, and said to be not yet readable.
    let (status, created, headers) = api.post("/v1/alerts", target_alert("97000000")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers["coinalarm-consistent"], "false");
    assert_eq!(created["version"], 1);
    let (status, updated, _) = api.put(&path, target_alert("98000000"), Some(1)).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);
    // The version check works without the read model too.
    assert_error(
        &api.put(&path, target_alert("1"), Some(1)).await,
        StatusCode::CONFLICT,
        "version_conflict",
    );
    let jetstream = harness.sites.jetstream(Site::Onprem).await;
    let created_id = created["alert_id"].as_str().expect("id").to_owned();
    assert!(
        read_stream(&jetstream, "ALERTS_ONPREM")
            .await
            .iter()
            .any(|message| message.message_id.as_deref()
                == Some(&format!("alert:{created_id}:1:onprem"))),
        "the alert created during the outage is in the stream"
    );

    // Back up: the projector catches up and reads show everything accepted meanwhile.
    harness.onprem.postgres_proxy.set_up(true);
    wait::until_true("reads to work again", Duration::from_secs(30), || async {
        api.get(&format!("/v1/alerts/{created_id}")).await.0 == StatusCode::OK
    })
    .await
    .expect("reads back");
    wait::until_true(
        "the update made during the outage to show",
        Duration::from_secs(30),
        || async { api.get(&path).await.1["condition"]["target"] == "98000000" },
    )
    .await
    .expect("projected");

    assert!(running.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_sign_in_is_503_and_existing_sessions_keep_working() {
    let harness = Harness::start().await;
    let running = harness
        .run(harness.config(Site::Onprem, json!({})), API_AND_PROJECTOR)
        .await;
    let user = UserId::new();
    let api = Client::new(&harness.api_url(Site::Onprem));
    let signed_in = api.with_token(&harness.token(&user, "010-4444-0002"));

    harness.onprem.redis_proxy.set_up(false);
    assert_error(
        &api.post("/v1/auth/codes", json!({"phone": "010-4444-0002"}))
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "auth_store_unavailable",
    );
    assert_error(
        &api.post(
            "/v1/auth/session",
            json!({"phone": "010-4444-0002", "code": "123456"}),
        )
        .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "auth_store_unavailable",
    );
    let (status, ready, _) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["details"]["unavailable"], json!(["redis"]), "{ready}");
    // The session is a signed token: no Redis needed to use it.
    assert_eq!(signed_in.get("/v1/alerts").await.0, StatusCode::OK);
    let (status, created, _) = signed_in.post("/v1/alerts", target_alert("96000000")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // Nothing of the refused sign-in reached the streams.
    let jetstream = harness.sites.jetstream(Site::Onprem).await;
    assert!(read_stream(&jetstream, "AUTH_ONPREM").await.is_empty());

    harness.onprem.redis_proxy.set_up(true);
    wait::until_true("sign-in to work again", Duration::from_secs(30), || async {
        api.post("/v1/auth/codes", json!({"phone": "010-4444-0002"}))
            .await
            .0
            == StatusCode::ACCEPTED
    })
    .await
    .expect("sign-in back");

    assert!(running.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_commands_are_503_and_nothing_is_half_done() {
    let mut harness = Harness::start().await;
    let running = harness
        .run(harness.config(Site::Onprem, json!({})), API_AND_PROJECTOR)
        .await;
    let user = UserId::new();
    let api = Client::new(&harness.api_url(Site::Onprem));
    let signed_in = api.with_token(&harness.token(&user, "010-4444-0003"));
    let (status, existing, _) = signed_in.post("/v1/alerts", target_alert("96000000")).await;
    assert_eq!(status, StatusCode::CREATED, "{existing}");
    let path = format!("/v1/alerts/{}", existing["alert_id"].as_str().expect("id"));

    harness.sites.kill(Site::Onprem);
    wait::until_true("the api to notice", Duration::from_secs(20), || async {
        api.get("/readyz").await.1["details"]["unavailable"] == json!(["nats"])
    })
    .await
    .expect("nats reported down");
    assert_error(
        &signed_in.post("/v1/alerts", target_alert("97000000")).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "bus_unavailable",
    );
    assert_error(
        &signed_in
            .put(&path, target_alert("98000000"), Some(1))
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "bus_unavailable",
    );
    assert_error(
        &signed_in.post_empty(&format!("{path}/pause"), None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "bus_unavailable",
    );
    assert_error(
        &signed_in.delete(&path, None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "bus_unavailable",
    );
    assert_error(
        &api.post("/v1/auth/codes", json!({"phone": "010-4444-0003"}))
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "bus_unavailable",
    );
    // Reads still work: the read models are there.
    assert_eq!(signed_in.get(&path).await.0, StatusCode::OK);
    // No sign-in code was left behind for an SMS that was never requested.
    let keys = harness.onprem.redis.keys().await.expect("keys");
    assert!(
        !keys.iter().any(|key| key.contains("signin:code")),
        "{keys:?}"
    );

    harness.sites.restart(Site::Onprem).await;
    wait::until_true("the api to reconnect", Duration::from_secs(30), || async {
        api.probe("/readyz").await == Some(StatusCode::OK)
    })
    .await
    .expect("reconnected");
    // Nothing refused during the outage was written later either.
    let jetstream = harness.sites.jetstream(Site::Onprem).await;
    let alerts = read_stream(&jetstream, "ALERTS_ONPREM").await;
    assert_eq!(
        alerts.len(),
        1,
        "only the alert created before the outage: {alerts:?}"
    );
    assert!(read_stream(&jetstream, "AUTH_ONPREM").await.is_empty());
    let (status, alert, _) = signed_in.get(&path).await;
    assert_eq!(
        (status, alert["version"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    // And commands work again.
    assert_eq!(
        signed_in
            .put(&path, target_alert("98000000"), Some(1))
            .await
            .0,
        StatusCode::OK
    );

    assert!(running.stop().await.is_clean());
}
