//! Operations: liveness (`/healthz`), readiness naming each dependency (`/readyz`), Prometheus metrics
//! (`/metrics`), the OpenAPI document (`/openapi.json`) and Swagger UI (`/docs`, vendored).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_route))
}

/// `/openapi.json` and `/docs`, outside the documented routes (they serve the document itself).
pub fn documentation_routes(openapi: Arc<OpenApi>) -> Router<AppState> {
    let document = openapi.clone();
    Router::new()
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .merge(SwaggerUi::new("/docs").url("/docs/openapi.json", openapi.as_ref().clone()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive.", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`
    pub status: &'static str,
    /// Each dependency and whether it answered: `nats`, `postgres`, `redis`.
    pub dependencies: std::collections::BTreeMap<&'static str, bool>,
}

/// Readiness: NATS, Postgres and Redis reachable. A 503 names what is not.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Every dependency answered.", body = Readiness),
        (status = 503, description = "`not_ready`; `details.unavailable` lists the dependencies down.", body = ErrorBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let nats = async {
        state.require_bus().is_ok()
            && tokio::time::timeout(state.settings.read_timeout, state.bus.client().flush())
                .await
                .is_ok_and(|flushed| flushed.is_ok())
    };
    let postgres = async {
        match state.postgres.get() {
            Some(pool) => tokio::time::timeout(
                state.settings.read_timeout,
                coinalarm_runtime::postgres::ping(pool),
            )
            .await
            .is_ok_and(|pinged| pinged.is_ok()),
            None => false,
        }
    };
    let redis = async {
        match state.redis.get() {
            Some(redis) => tokio::time::timeout(state.settings.read_timeout, redis.ping())
                .await
                .is_ok_and(|pinged| pinged.is_ok()),
            None => false,
        }
    };
    let (nats, postgres, redis) = tokio::join!(nats, postgres, redis);
    let dependencies = std::collections::BTreeMap::from([
        ("nats", nats),
        ("postgres", postgres),
        ("redis", redis),
    ]);
    let unavailable: Vec<&str> = dependencies
        .iter()
        .filter(|(_, up)| !**up)
        .map(|(name, _)| *name)
        .collect();
    for (name, up) in &dependencies {
        metrics::gauge!("coinalarm_api_dependency_up", "dependency" => *name).set(if *up {
            1.0
        } else {
            0.0
        });
    }
    if unavailable.is_empty() {
        return Ok(Json(Readiness {
            status: "ready",
            dependencies,
        }));
    }
    Err(ApiError::new(
        ErrorCode::NotReady,
        format!("not ready: {} unreachable", unavailable.join(", ")),
    )
    .with_details(serde_json::json!({ "unavailable": unavailable })))
}

/// Prometheus metrics of this process (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format.", content_type = "text/plain", body = String),
        (status = 404, description = "`route_not_found`: this process records no metrics.", body = ErrorBody),
    )
)]
pub async fn metrics_route(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::new(ErrorCode::RouteNotFound, "this process records no metrics")
            .into_response(),
    }
}
