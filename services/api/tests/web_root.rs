//! The web client served by the API (`api.web_root`): files at `/`, the app's `index.html` for the
//! client's own paths, a year of caching for hashed assets only, and the API's routes and JSON errors
//! untouched by it.

mod common;

use std::path::PathBuf;

use common::{API, Client, Harness, assert_error};
use proto_events::Site;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde_json::json;

const INDEX: &str = "<!doctype html><title>CoinAlarm</title><div id=\"root\"></div>";
const SCRIPT: &str = "console.log('coinalarm');";

/// A built client as Vite lays it out: `index.html` and content-hashed files under `assets/`.
struct BuiltClient {
    directory: PathBuf,
}

impl BuiltClient {
    fn new() -> BuiltClient {
        let directory =
            std::env::temp_dir().join(format!("coinalarm-web-root-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(directory.join("assets")).expect("assets directory");
        std::fs::write(directory.join("index.html"), INDEX).expect("index.html");
        std::fs::write(directory.join("assets/index-3f9a1c2b.js"), SCRIPT).expect("script");
        std::fs::write(directory.join("favicon.svg"), "<svg/>").expect("icon");
        BuiltClient { directory }
    }
}

impl Drop for BuiltClient {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

async fn text(
    client: &Client,
    method: reqwest::Method,
    path: &str,
) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let response = client
        .request(method, path)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    (status, response.text().await.expect("body"), headers)
}

fn header(headers: &reqwest::header::HeaderMap, name: reqwest::header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_the_web_client_beside_its_routes() {
    let built = BuiltClient::new();
    let harness = Harness::start().await;
    let running = harness
        .run(
            harness.config(
                Site::Onprem,
                json!({"web_root": built.directory.to_str().expect("utf-8 path")}),
            ),
            API,
        )
        .await;
    let client = Client::new(&harness.api_url(Site::Onprem));

    // The app at `/` and at any of its own paths (a reload on a deep link), revalidated on each use.
    for path in ["/", "/markets/KRW-BTC", "/alerts/new?market=KRW-ETH"] {
        let (status, body, headers) = text(&client, reqwest::Method::GET, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, INDEX, "{path}");
        assert!(
            header(&headers, CONTENT_TYPE).starts_with("text/html"),
            "{path}"
        );
        assert_eq!(header(&headers, CACHE_CONTROL), "no-cache", "{path}");
    }
    let (status, body, headers) = text(&client, reqwest::Method::GET, "/favicon.svg").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "<svg/>"));
    assert_eq!(header(&headers, CACHE_CONTROL), "no-cache");

    // Hashed assets are immutable; a missing one is a 404, never the HTML page.
    let (status, body, headers) =
        text(&client, reqwest::Method::GET, "/assets/index-3f9a1c2b.js").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, SCRIPT));
    assert!(header(&headers, CONTENT_TYPE).contains("javascript"));
    assert_eq!(
        header(&headers, CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    let (status, body, headers) =
        text(&client, reqwest::Method::GET, "/assets/index-00000000.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.contains("<!doctype"));
    assert_eq!(header(&headers, CACHE_CONTROL), "no-cache");
    let (status, _, _) = text(&client, reqwest::Method::HEAD, "/").await;
    assert_eq!(status, StatusCode::OK);

    // The API is unchanged: its routes answer, unknown API paths and other methods are JSON errors.
    let (status, document, _) = client.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["paths"]["/v1/markets"].is_object());
    assert_eq!(client.probe("/healthz").await, Some(StatusCode::OK));
    for path in ["/v1/nothing-here", "/v1"] {
        assert_error(
            &client.get(path).await,
            StatusCode::NOT_FOUND,
            "route_not_found",
        );
    }
    assert_error(
        &client.post("/markets/KRW-BTC", json!({})).await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    assert_error(
        &client.delete("/v1/markets", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    running.stop().await;
}

#[tokio::test]
async fn a_web_root_without_a_built_client_is_a_configuration_error() {
    let empty = std::env::temp_dir().join(format!("coinalarm-web-root-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&empty).expect("directory");
    let config: coinalarm_api::ApiConfig =
        serde_json::from_value(json!({"web_root": empty.to_str().expect("utf-8 path")}))
            .expect("parses");
    let error = config.web_root().expect_err("no index.html");
    assert!(error.to_string().contains("npm run build"), "{error}");
    std::fs::remove_dir_all(&empty).expect("cleanup");
    let unset = coinalarm_api::ApiConfig::default();
    assert!(unset.web_root().expect("nothing to check").is_none());
}
