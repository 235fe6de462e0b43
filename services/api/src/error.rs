//! The one error type of the API: a stable machine code (one enum, each mapped to one HTTP status) and a
//! human message, returned as `{"code": "...", "message": "...", "details": {...}}` on every 4xx/5xx.
//!
//! Also the request extractors whose rejections must use that shape (JSON bodies, query strings, paths),
//! and the fallbacks for unknown routes and methods.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// Every error the API answers with. The snake-case name is the stable `code` of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not JSON of the expected shape (unknown fields included), or a query parameter
    /// or path segment is malformed.
    InvalidRequest,
    /// 413: the body is larger than the configured limit.
    PayloadTooLarge,
    /// 415: a JSON body without `Content-Type: application/json`.
    UnsupportedMediaType,
    /// 422: well-formed but invalid values (a negative price, an unknown time zone, ...).
    ValidationFailed,
    /// 422: the phone number is not E.164 or a Korean number.
    InvalidPhoneNumber,
    /// 422 (commands) / 404 (market routes): no such market on the exchange.
    UnknownMarket,
    /// 422: the user already has the most alerts allowed.
    AlertLimitReached,
    /// 401: no session token, or an invalid, expired or revoked one.
    Unauthenticated,
    /// 401: the sign-in code is wrong, expired, or was never requested for this number.
    SignInCodeInvalid,
    /// 401: too many wrong codes: this code is burnt, request a new one.
    SignInCodeBurnt,
    /// 403: a provider callback whose `X-Twilio-Signature` does not verify.
    InvalidSignature,
    /// 404: no such route.
    RouteNotFound,
    /// 404: no such alert for this user (deleted ones included).
    AlertNotFound,
    /// 404: no such market.
    MarketNotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: the aggregate changed since the version the client built on; `details.current_version`.
    VersionConflict,
    /// 409: an alert with the client-chosen id already exists with another definition.
    AlertExists,
    /// 429: too many requests; retry after the `Retry-After` header.
    RateLimited,
    /// 503: the read models (Postgres) are unreachable; commands still work.
    ReadModelUnavailable,
    /// 503: the event bus (NATS) is unreachable; nothing was written.
    BusUnavailable,
    /// 503: the sign-in store (Redis) is unreachable; existing sessions keep working.
    AuthStoreUnavailable,
    /// 503: the handler did not finish within the request timeout.
    RequestTimeout,
    /// 503: `/readyz` found a dependency down.
    NotReady,
    /// 500: a bug.
    Internal,
}

impl ErrorCode {
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ValidationFailed
            | ErrorCode::InvalidPhoneNumber
            | ErrorCode::UnknownMarket
            | ErrorCode::AlertLimitReached => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unauthenticated
            | ErrorCode::SignInCodeInvalid
            | ErrorCode::SignInCodeBurnt => StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidSignature => StatusCode::FORBIDDEN,
            ErrorCode::RouteNotFound | ErrorCode::AlertNotFound | ErrorCode::MarketNotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::VersionConflict | ErrorCode::AlertExists => StatusCode::CONFLICT,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ReadModelUnavailable
            | ErrorCode::BusUnavailable
            | ErrorCode::AuthStoreUnavailable
            | ErrorCode::RequestTimeout
            | ErrorCode::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::InvalidPhoneNumber => "invalid_phone_number",
            ErrorCode::UnknownMarket => "unknown_market",
            ErrorCode::AlertLimitReached => "alert_limit_reached",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::SignInCodeInvalid => "sign_in_code_invalid",
            ErrorCode::SignInCodeBurnt => "sign_in_code_burnt",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::AlertNotFound => "alert_not_found",
            ErrorCode::MarketNotFound => "market_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::VersionConflict => "version_conflict",
            ErrorCode::AlertExists => "alert_exists",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ReadModelUnavailable => "read_model_unavailable",
            ErrorCode::BusUnavailable => "bus_unavailable",
            ErrorCode::AuthStoreUnavailable => "auth_store_unavailable",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Internal => "internal",
        }
    }

    /// Every code, for the documentation and its test.
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::InvalidRequest,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ValidationFailed,
        ErrorCode::InvalidPhoneNumber,
        ErrorCode::UnknownMarket,
        ErrorCode::AlertLimitReached,
        ErrorCode::Unauthenticated,
        ErrorCode::SignInCodeInvalid,
        ErrorCode::SignInCodeBurnt,
        ErrorCode::InvalidSignature,
        ErrorCode::RouteNotFound,
        ErrorCode::AlertNotFound,
        ErrorCode::MarketNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::VersionConflict,
        ErrorCode::AlertExists,
        ErrorCode::RateLimited,
        ErrorCode::ReadModelUnavailable,
        ErrorCode::BusUnavailable,
        ErrorCode::AuthStoreUnavailable,
        ErrorCode::RequestTimeout,
        ErrorCode::NotReady,
        ErrorCode::Internal,
    ];
}

/// The body of every 4xx/5xx answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// Extra facts for some codes: `current_version` (version_conflict), `attempts_left`
    /// (sign_in_code_invalid), `retry_after_seconds` (rate_limited), `unavailable` (not_ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn with_retry_after(mut self, retry_after: Duration) -> ApiError {
        self.retry_after = Some(retry_after);
        self
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::ValidationFailed, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthenticated, message)
    }

    pub fn read_model_unavailable() -> ApiError {
        ApiError::new(
            ErrorCode::ReadModelUnavailable,
            "the read models are unavailable right now; commands are still accepted",
        )
    }

    pub fn bus_unavailable() -> ApiError {
        ApiError::new(
            ErrorCode::BusUnavailable,
            "the event bus is unavailable right now; nothing was changed",
        )
    }

    pub fn auth_store_unavailable() -> ApiError {
        ApiError::new(
            ErrorCode::AuthStoreUnavailable,
            "sign-in is unavailable right now; existing sessions keep working",
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    pub fn alert_not_found() -> ApiError {
        ApiError::new(ErrorCode::AlertNotFound, "no such alert")
    }

    pub fn rate_limited(what: &str, retry_after: Duration) -> ApiError {
        let seconds = retry_after.as_secs().max(1);
        ApiError::new(
            ErrorCode::RateLimited,
            format!("too many {what}; try again in {seconds} s"),
        )
        .with_details(serde_json::json!({ "retry_after_seconds": seconds }))
        .with_retry_after(Duration::from_secs(seconds))
    }

    pub fn version_conflict(current_version: u64) -> ApiError {
        ApiError::new(
            ErrorCode::VersionConflict,
            format!(
                "the resource changed since the version you built on; it is now at version {current_version}"
            ),
        )
        .with_details(serde_json::json!({ "current_version": current_version }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        metrics::counter!("coinalarm_api_errors_total", "code" => self.code.as_str()).increment(1);
        if status.is_server_error() {
            tracing::warn!(code = self.code.as_str(), message = %self.message, "request failed");
        }
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            details: self.details,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(retry_after) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// A JSON body whose rejections are [`ApiError`]s (unknown fields are refused by the types).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let code = match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        _ => ErrorCode::InvalidRequest,
    };
    ApiError::new(code, rejection.body_text())
}

/// Query parameters whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())
            })
    }
}

/// Path parameters whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection: PathRejection| {
                ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())
            })
    }
}

/// Fallback for unknown routes.
pub async fn route_not_found() -> ApiError {
    ApiError::new(ErrorCode::RouteNotFound, "no such route")
}

/// Fallback for known routes called with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names_and_map_to_error_statuses() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).expect("serializes"),
                serde_json::json!(code.as_str())
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{code:?}"
            );
        }
    }
}
