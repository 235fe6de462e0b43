//! The HTTP surface: every route, registered with its OpenAPI description (utoipa-axum), and the
//! layers around them (timeouts, body limit, CORS, request metrics, JSON errors for everything).

pub mod alerts;
pub mod history;
pub mod markets;
pub mod ops;
pub mod preferences;
pub mod sign_in;
pub mod stream;
pub mod webhooks;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coinalarm_runtime::trace::TraceContext;
use jiff::Timestamp;
use rust_decimal::Decimal;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;

use crate::error::{self, ApiError, ErrorCode};
use crate::state::AppState;

/// The document's root: info, tags, the bearer scheme and the shared error schema.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "CoinAlarm API",
        description = "Real-time crypto price alerts by SMS. Commands become events on NATS JetStream \
(replicated between two sites); reads come from Postgres read models.\n\n\
Every 4xx/5xx answer is `{\"code\": \"<stable_code>\", \"message\": \"...\"}` (`ErrorBody`), with \
`details` for some codes. Decimal values (prices, percentages) are JSON strings, never numbers.\n\n\
Sign in with `POST /v1/auth/codes` then `POST /v1/auth/session`, and send the token as \
`Authorization: Bearer <token>`.",
    ),
    tags(
        (name = "sign-in", description = "Phone sign-in and sessions"),
        (name = "alerts", description = "Alert lifecycle"),
        (name = "history", description = "Firings and SMS outcomes"),
        (name = "markets", description = "Market data and the live stream"),
        (name = "preferences", description = "The signed-in user"),
        (name = "webhooks", description = "SMS provider callbacks"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::ErrorCode,
        crate::routes::stream::LiveFiring
    )),
    modifiers(&BearerScheme),
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every documented route and the document itself.
pub fn api_router() -> (Router<AppState>, OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(sign_in::router())
        .merge(alerts::router())
        .merge(history::router())
        .merge(markets::router())
        .merge(preferences::router())
        .merge(webhooks::router())
        .merge(stream::router())
        .merge(ops::router())
        .split_for_parts()
}

/// The whole application: routes, documentation UI, and the layers.
pub fn app(state: AppState) -> Router {
    let (router, openapi) = api_router();
    let openapi = std::sync::Arc::new(openapi);
    let cors = cors_layer(&state.settings.cors_origins);
    let body_limit = state.settings.body_limit_bytes;
    router
        .merge(ops::documentation_routes(openapi))
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), bounded))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors)
        .with_state(state)
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static(crate::consistency::HEADER),
            HeaderName::from_static(TRACEPARENT),
        ])
}

/// Bounds every handler by the request timeout (the live stream excepted: it is meant to stay open)
/// and records request metrics by route.
async fn bounded(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    // The request's trace: the client's `traceparent` if it sent one, else a new root. Commands publish
    // their events as its children, so one trace runs from the click to the SMS provider call.
    let trace = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::new_root);
    let mut request = request;
    request.extensions_mut().insert(RequestTrace(trace));
    let response = if route == stream::PATH {
        next.run(request).await
    } else {
        match tokio::time::timeout(state.settings.request_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                ErrorCode::RequestTimeout,
                "the request took too long and was abandoned; a command may or may not have been applied, read it back before retrying",
            )
            .into_response(),
        }
    };
    let mut response = response;
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!("coinalarm_api_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("coinalarm_api_request_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

const TRACEPARENT: &str = "traceparent";

/// The trace of the request being handled (see [`bounded`]).
#[derive(Debug, Clone, Copy)]
pub struct RequestTrace(pub TraceContext);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestTrace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestTrace>()
            .copied()
            .unwrap_or_else(|| RequestTrace(TraceContext::new_root())))
    }
}

/// A page position: the last item's time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: Timestamp,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", self.at, self.id))
    }

    pub fn decode(text: &str) -> Result<Cursor, ApiError> {
        let invalid = || {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "the cursor is not one this API gave",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (at, id) = text.split_once('|').ok_or_else(invalid)?;
        Ok(Cursor {
            at: at.parse().map_err(|_| invalid())?,
            id: id.to_owned(),
        })
    }
}

/// A page size from a query parameter.
pub fn page_limit(requested: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match requested {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit must be between 1 and {max}"),
        )),
    }
}

/// A decimal as the API writes them: a JSON string without trailing zeros (`"95000000"`, `"0.0123"`).
pub fn decimal_text(value: Decimal) -> String {
    value.normalize().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            at: "2026-11-02T00:00:00Z".parse().expect("time"),
            id: "0192f1c5-1b2c-7d3e-8f40-a1b2c3d4e5f6".to_owned(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).expect("decodes"), cursor);
        assert!(Cursor::decode("%%%").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("no separator")).is_err());
    }

    #[test]
    fn decimals_are_written_plainly() {
        assert_eq!(decimal_text(Decimal::new(9_500_000_000, 2)), "95000000");
        assert_eq!(decimal_text(Decimal::new(123, 4)), "0.0123");
    }
}
