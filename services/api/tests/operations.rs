//! Operations and the contract of the HTTP surface: the OpenAPI document is served, parses, lists every
//! route with its error shapes; Swagger UI is served; health, readiness and metrics answer; every
//! error — unknown route, wrong method, oversized or non-JSON body — is the JSON error shape.

mod common;

use std::collections::BTreeSet;

use common::{API, Client, Harness, assert_error};
use proto_events::Site;
use proto_events::domain::UserId;
use reqwest::StatusCode;
use serde_json::json;

/// Every route of the API with its methods: the document must describe exactly these.
const ROUTES: &[(&str, &str)] = &[
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/v1/auth/codes", "post"),
    ("/v1/auth/session", "post"),
    ("/v1/auth/session", "delete"),
    ("/v1/alerts", "get"),
    ("/v1/alerts", "post"),
    ("/v1/alerts/{alert_id}", "get"),
    ("/v1/alerts/{alert_id}", "put"),
    ("/v1/alerts/{alert_id}", "delete"),
    ("/v1/alerts/{alert_id}/pause", "post"),
    ("/v1/alerts/{alert_id}/resume", "post"),
    ("/v1/alerts/{alert_id}/history", "get"),
    ("/v1/notifications", "get"),
    ("/v1/markets", "get"),
    ("/v1/markets/movers", "get"),
    ("/v1/markets/{market}", "get"),
    ("/v1/markets/{market}/candles", "get"),
    ("/v1/stream", "get"),
    ("/v1/me", "get"),
    ("/v1/me/preferences", "put"),
    ("/v1/twilio/status", "post"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_parses_and_describes_every_route_and_error() {
    let harness = Harness::start().await;
    let running = harness
        .run(harness.config(Site::Onprem, json!({})), API)
        .await;
    let api = Client::new(&harness.api_url(Site::Onprem));

    let (status, document, _) = api.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        document["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.")
    );
    // It parses as an OpenAPI document.
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(document.clone()).expect("a valid OpenAPI document");
    assert_eq!(parsed.info.title, "CoinAlarm API");

    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|key| ["get", "post", "put", "delete", "patch"].contains(&key.as_str()))
                .map(|method| (path.clone(), method.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(path, method)| ((*path).to_owned(), (*method).to_owned()))
        .collect();
    assert_eq!(documented, expected);

    // Every error response of every operation has the one error shape.
    for (path, method) in &expected {
        let operation = &document["paths"][path][method];
        let responses = operation["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{method} {path}");
        for (status, response) in responses {
            let code: u16 = status.parse().expect("numeric status");
            if code >= 400 {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|text| !text.is_empty())
                );
            }
        }
        let needs_session = operation["security"].is_array();
        let has_401 = responses.contains_key("401");
        assert!(
            !needs_session || has_401,
            "{method} {path} needs a session but documents no 401"
        );
    }
    let schemas = &document["components"]["schemas"];
    let codes: BTreeSet<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("error codes")
        .iter()
        .map(|code| code.as_str().expect("code"))
        .collect();
    let all: BTreeSet<&str> = coinalarm_api::error::ErrorCode::ALL
        .iter()
        .map(|code| code.as_str())
        .collect();
    assert_eq!(codes, all);
    assert_eq!(schemas["ErrorBody"]["required"], json!(["code", "message"]));
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The served document is the one the router is built from.
    let (_, built) = coinalarm_api::api_router();
    assert_eq!(serde_json::to_value(built).expect("json"), document);

    // Swagger UI, vendored.
    let response = reqwest::get(api.url("/docs/")).await.expect("docs");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.expect("html").contains("swagger"));

    assert!(running.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_errors_for_bad_requests() {
    let harness = Harness::start().await;
    let running = harness
        .run(
            harness.config(Site::Onprem, json!({"body_limit_bytes": 1024})),
            API,
        )
        .await;
    let api = Client::new(&harness.api_url(Site::Onprem));
    let signed_in = api.with_token(&harness.token(&UserId::new(), "010-6666-0001"));

    assert_eq!(api.get("/healthz").await.1, json!({"status": "ok"}));
    let (status, ready, _) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ready["dependencies"],
        json!({"nats": true, "postgres": true, "redis": true})
    );

    assert_error(
        &api.get("/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    assert_error(
        &api.send(api.request(reqwest::Method::PATCH, "/v1/alerts"))
            .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let too_big = json!({"condition": {"kind": "scheduled", "markets": ["KRW-BTC"], "weekdays": ["mon"],
                                       "time_of_day": "09:00", "time_zone": "x".repeat(2_000)}});
    assert_error(
        &signed_in.post("/v1/alerts", too_big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_error(
        &signed_in
            .send(
                signed_in
                    .request(reqwest::Method::POST, "/v1/alerts")
                    .body("{}"),
            )
            .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_error(
        &signed_in
            .send(
                signed_in
                    .request(reqwest::Method::POST, "/v1/alerts")
                    .header("content-type", "application/json")
                    .body("{not json"),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    let response = reqwest::get(api.url("/metrics")).await.expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("text");
    assert!(text.contains("coinalarm_api_requests_total"), "{text}");
    assert!(text.contains("coinalarm_api_errors_total"), "{text}");

    assert!(running.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_are_bounded_by_the_request_timeout_and_cors_admits_the_web_client() {
    let harness = Harness::start().await;
    // No projector: a command waits for a read model that never catches up, longer than allowed.
    let config = harness.config(
        Site::Onprem,
        json!({"request_timeout": 0.5, "consistency_wait": 5, "cors_origins": ["https://app.example"]}),
    );
    let running = harness.run(config, API).await;
    let api = Client::new(&harness.api_url(Site::Onprem));
    let signed_in = api.with_token(&harness.token(&UserId::new(), "010-6666-0002"));
    let answer = signed_in
        .post(
            "/v1/alerts",
            json!({"condition": {"kind": "target_price", "market": "KRW-BTC", "target": "1", "direction": "up"}}),
        )
        .await;
    assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "request_timeout");

    let preflight = api
        .send(
            api.request(reqwest::Method::OPTIONS, "/v1/alerts")
                .header("Origin", "https://app.example")
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "authorization,content-type",
                ),
        )
        .await;
    assert_eq!(preflight.0, StatusCode::OK);
    assert_eq!(
        preflight.2["access-control-allow-origin"],
        "https://app.example"
    );
    let foreign = api
        .send(
            api.request(reqwest::Method::GET, "/healthz")
                .header("Origin", "https://evil.example"),
        )
        .await;
    assert!(!foreign.2.contains_key("access-control-allow-origin"));

    assert!(running.stop().await.is_clean());
}
