//! The session extractor: `Authorization: Bearer <token>` (or `?access_token=` for the SSE stream,
//! which browsers open without headers), verified by signature and expiry without any store, then
//! checked against revocations: this process's memory first, then the site's Redis. When Redis is
//! down the check passes on memory alone (counted), so existing sessions keep working through a Redis
//! outage; a sign-out made at the other site during that outage is honoured once Redis is back.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jiff::Timestamp;

use crate::error::ApiError;
use crate::session::Claims;
use crate::state::AppState;

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

/// A signed-in user if a token was given (the stream works without one, with prices only).
#[derive(Debug, Clone)]
pub struct MaybeAuthenticated(pub Option<Claims>);

/// Redis key of a revoked session.
pub fn revoked_key(session_id: &uuid::Uuid) -> String {
    format!("session:revoked:{session_id}")
}

fn bearer(parts: &Parts) -> Option<String> {
    let header_token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(|token| token.trim().to_owned());
    header_token.or_else(|| {
        let query = parts.uri.query()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "access_token")
            .map(|(_, value)| value.into_owned())
    })
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Option<Claims>, ApiError> {
    let Some(token) = bearer(parts) else {
        return Ok(None);
    };
    let claims = state
        .sessions
        .verify(&token, Timestamp::now())
        .map_err(|error| ApiError::unauthenticated(error.to_string()))?;
    if state.revoked.contains(&claims.sid) {
        return Err(ApiError::unauthenticated("the session was signed out"));
    }
    match state.redis.get() {
        Some(redis) => match redis.get(&revoked_key(&claims.sid)).await {
            Ok(Some(_)) => return Err(ApiError::unauthenticated("the session was signed out")),
            Ok(None) => {}
            Err(error) => {
                metrics::counter!("coinalarm_api_revocation_checks_skipped_total").increment(1);
                tracing::debug!(%error, "revocation check skipped: redis unavailable");
            }
        },
        None => {
            metrics::counter!("coinalarm_api_revocation_checks_skipped_total").increment(1);
        }
    }
    Ok(Some(claims))
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state).await? {
            Some(claims) => Ok(Authenticated(claims)),
            None => Err(ApiError::unauthenticated(
                "sign in first: send `Authorization: Bearer <token>`",
            )),
        }
    }
}

impl FromRequestParts<AppState> for MaybeAuthenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(MaybeAuthenticated)
    }
}
