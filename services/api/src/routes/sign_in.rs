//! Phone sign-in: request a code (sent by SMS through the normal pipeline at sign-in priority), verify it
//! for a session, sign out.
//!
//! Codes live in the site's Redis only as an HMAC bound to their request id, for `code_ttl` (3 min);
//! `max_attempts` (5) wrong tries burn a code. Requests are limited per phone hash and per client
//! address, verifications per client address; every limit answers 429 with `Retry-After`. A request
//! gets the same answer whether or not the number belongs to a user, so nobody can enumerate users.
//! The code travels sealed (`SignInCodeRequested.sealed_code`, opened only by the notifier): it is never
//! in clear text in a stream, a log line, a trace or a read model.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use coinalarm_runtime::bus;
use coinalarm_runtime::redis::KeyTtl;
use coinalarm_runtime::sealing::Purpose;
use coinalarm_runtime::trace::TraceContext;
use hmac::Mac as _;
use jiff::Timestamp;
use proto_events::domain::{Locale, PhoneHash, PhoneNumber};
use proto_events::events::{
    SessionRevoked, SignInCodeRequested, SignInFailed, SignInFailure, SignInSucceeded,
    UserRegistered,
};
use proto_events::{Envelope, EventData};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::aggregates;
use crate::auth::{Authenticated, revoked_key};
use crate::config::RateLimit;
use crate::error::{ApiError, ApiJson, ErrorBody, ErrorCode};
use crate::routes::RequestTrace;
use crate::state::AppState;

/// Digits of a sign-in code.
pub const CODE_LENGTH: usize = 6;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_code))
        .routes(routes!(create_session, delete_session))
}

/// The language of an SMS or of a user's preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LocaleDto {
    Ko,
    En,
}

impl From<LocaleDto> for Locale {
    fn from(locale: LocaleDto) -> Locale {
        match locale {
            LocaleDto::Ko => Locale::Ko,
            LocaleDto::En => Locale::En,
        }
    }
}

impl From<Locale> for LocaleDto {
    fn from(locale: Locale) -> LocaleDto {
        match locale {
            Locale::Ko => LocaleDto::Ko,
            Locale::En => LocaleDto::En,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// E.164 (`+821012345678`) or a Korean number (`010-1234-5678`).
    #[schema(example = "010-1234-5678")]
    pub phone: String,
    /// Language of the SMS; `ko` when absent.
    #[serde(default)]
    pub locale: Option<LocaleDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CodeRequested {
    /// The request this code belongs to (the code is bound to it).
    pub request_id: uuid::Uuid,
    /// The code is refused after this instant.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// Digits of the code.
    pub code_length: usize,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    #[schema(example = "010-1234-5678")]
    pub phone: String,
    /// The 6-digit code from the SMS.
    #[schema(example = "483920")]
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCreated {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    #[schema(value_type = String)]
    pub user_id: proto_events::domain::UserId,
    /// True when this sign-in registered the user.
    pub new_user: bool,
}

/// The client's address: the socket peer, or the first `X-Forwarded-For` hop behind a trusted proxy.
pub fn client_address(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> String {
    if state.settings.trust_forwarded_for
        && let Some(forwarded) = headers
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    {
        return forwarded.to_owned();
    }
    peer.ip().to_string()
}

/// Counts one event against a fixed-window limit; 429 with the window's remaining time when over it.
async fn check_limit(
    state: &AppState,
    key: &str,
    limit: RateLimit,
    what: &str,
) -> Result<(), ApiError> {
    let redis = state.redis()?;
    let count = redis
        .incr_with_ttl(key, limit.window)
        .await
        .map_err(|_| ApiError::auth_store_unavailable())?;
    if count <= i64::from(limit.limit) {
        return Ok(());
    }
    let retry_after = match redis.ttl(key).await {
        Ok(KeyTtl::ExpiresIn(remaining)) => remaining,
        _ => limit.window,
    };
    metrics::counter!("coinalarm_api_rate_limited_total", "limit" => what.to_owned()).increment(1);
    Err(ApiError::rate_limited(what, retry_after))
}

fn code_key(phone_hash: &PhoneHash) -> String {
    format!("signin:code:{phone_hash}")
}

fn attempts_key(phone_hash: &PhoneHash, request_id: &uuid::Uuid) -> String {
    format!("signin:attempts:{phone_hash}:{request_id}")
}

/// What Redis holds for a pending code: never the code, only its keyed hash.
#[derive(Debug, Serialize, Deserialize)]
struct PendingCode {
    request_id: uuid::Uuid,
    mac: String,
    expires_at: Timestamp,
}

fn parse_phone(text: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(text)
        .map_err(|error| ApiError::new(ErrorCode::InvalidPhoneNumber, error.to_string()))
}

/// A uniformly random code from the system's CSPRNG (through UUID v4).
fn new_code() -> String {
    // 4_294_000_000 is the largest multiple of 10^6 below 2^32: rejecting above it keeps every code
    // equally likely.
    loop {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        let value = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if value < 4_294_000_000 {
            return format!("{:06}", value % 1_000_000);
        }
    }
}

/// Publishes an audit event without making the caller wait for it.
fn publish_in_background<T: EventData + Send + Sync + 'static>(
    state: &AppState,
    envelope: Envelope<T>,
    trace: TraceContext,
) {
    let bus = state.bus.clone();
    tokio::spawn(async move {
        if let Err(error) = bus.publish(&envelope, Some(&trace)).await {
            tracing::warn!(%error, event = envelope.event_type().as_str(), "publishing a sign-in audit event failed");
        }
    });
}

/// Request a sign-in code by SMS.
///
/// Always answers the same way for a valid number, known or not. The code expires after 3 minutes;
/// requesting a new one replaces the previous code.
#[utoipa::path(
    post,
    path = "/v1/auth/codes",
    tag = "sign-in",
    request_body = CodeRequest,
    responses(
        (status = 202, description = "The code is on its way by SMS.", body = CodeRequested),
        (status = 400, description = "`invalid_request`: malformed body or unknown field.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_phone_number`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many requests for this number or from this address; see `Retry-After`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until a request is accepted again"))),
        (status = 503, description = "`auth_store_unavailable` (Redis down) or `bus_unavailable` (NATS down): nothing was sent.", body = ErrorBody),
    )
)]
pub async fn request_code(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RequestTrace(trace): RequestTrace,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CodeRequest>,
) -> Result<(StatusCode, Json<CodeRequested>), ApiError> {
    let phone = parse_phone(&request.phone)?;
    let phone_hash = state.keys.phone_hash(&phone);
    let address = client_address(&state, &headers, peer);
    let settings = &state.settings.sign_in;
    // The address first: a sprayer of many numbers spends its own budget before any number's.
    check_limit(
        &state,
        &format!("ratelimit:codes:address:{address}"),
        settings.requests_per_address,
        "code requests from this address",
    )
    .await?;
    check_limit(
        &state,
        &format!("ratelimit:codes:phone:{phone_hash}"),
        settings.requests_per_phone,
        "code requests for this number",
    )
    .await?;
    state.require_bus()?;

    let request_id = uuid::Uuid::new_v4();
    let code = new_code();
    let now = Timestamp::now();
    let expires_at = now.checked_add(settings.code_ttl).unwrap_or(Timestamp::MAX);
    let pending = PendingCode {
        request_id,
        mac: hex::encode(
            state
                .keys
                .code_mac(&request_id, &code)
                .finalize()
                .into_bytes(),
        ),
        expires_at,
    };
    let pending_json =
        serde_json::to_vec(&pending).map_err(|error| ApiError::internal(error.to_string()))?;
    let sealed_code = state
        .sealer
        .seal(
            code.as_bytes(),
            &Purpose::SignInCode {
                phone_hash: &phone_hash,
                request_id: &request_id,
            },
        )
        .map_err(|error| ApiError::internal(format!("cannot seal the code: {error}")))?;
    drop(code);

    let redis = state.redis()?;
    let key = code_key(&phone_hash);
    redis
        .set_ex(&key, pending_json.clone(), settings.code_ttl)
        .await
        .map_err(|_| ApiError::auth_store_unavailable())?;

    let requested = SignInCodeRequested {
        request_id,
        phone,
        phone_hash,
        sealed_code,
        locale: request.locale.map_or(Locale::Ko, Locale::from),
        expires_at,
    };
    if let Err(error) = state
        .bus
        .publish(&Envelope::new(requested, state.site).at(now), Some(&trace))
        .await
    {
        // Nothing half-done: the stored code goes again (unless a newer request replaced it).
        if let Err(cleanup) = redis.compare_and_delete(&key, pending_json).await {
            tracing::warn!(error = %cleanup, "cannot withdraw an unsent sign-in code; it expires by itself");
        }
        return Err(aggregates::publish_failed(&error));
    }
    metrics::counter!("coinalarm_api_sign_in_codes_total", "outcome" => "requested").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(CodeRequested {
            request_id,
            expires_at,
            code_length: CODE_LENGTH,
        }),
    ))
}

/// Verify a sign-in code and get a session.
///
/// Five wrong codes burn the code (`sign_in_code_burnt`): request a new one. The first sign-in of a
/// number registers its user.
#[utoipa::path(
    post,
    path = "/v1/auth/session",
    tag = "sign-in",
    request_body = SessionRequest,
    responses(
        (status = 201, description = "Signed in.", body = SessionCreated),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "`sign_in_code_invalid` (wrong, expired or never requested; `details.attempts_left`) or `sign_in_code_burnt`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_phone_number`, or `validation_failed` for a code that is not 6 digits.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many verifications from this address.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until a request is accepted again"))),
        (status = 503, description = "`auth_store_unavailable` or `bus_unavailable`: the code stays valid, retry.", body = ErrorBody),
    )
)]
pub async fn create_session(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RequestTrace(trace): RequestTrace,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SessionRequest>,
) -> Result<(StatusCode, Json<SessionCreated>), ApiError> {
    let phone = parse_phone(&request.phone)?;
    let code = request.code.trim();
    if code.len() != CODE_LENGTH || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ApiError::validation("a sign-in code is 6 digits"));
    }
    let phone_hash = state.keys.phone_hash(&phone);
    let address = client_address(&state, &headers, peer);
    let settings = state.settings.sign_in.clone();
    check_limit(
        &state,
        &format!("ratelimit:verify:address:{address}"),
        settings.verifications_per_address,
        "sign-in attempts from this address",
    )
    .await?;

    let redis = state.redis()?;
    let key = code_key(&phone_hash);
    let stored = redis
        .get(&key)
        .await
        .map_err(|_| ApiError::auth_store_unavailable())?;
    let invalid = || {
        ApiError::new(
            ErrorCode::SignInCodeInvalid,
            "that code is wrong, expired, or was not requested for this number",
        )
    };
    let Some(stored) = stored else {
        metrics::counter!("coinalarm_api_sign_in_verifications_total", "outcome" => "unknown")
            .increment(1);
        return Err(invalid());
    };
    let pending: PendingCode = serde_json::from_slice(&stored).map_err(|_| invalid())?;
    let attempt = redis
        .incr_with_ttl(
            &attempts_key(&phone_hash, &pending.request_id),
            settings.code_ttl,
        )
        .await
        .map_err(|_| ApiError::auth_store_unavailable())?;
    let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
    let burnt = || {
        ApiError::new(
            ErrorCode::SignInCodeBurnt,
            "too many wrong codes: this code no longer works, request a new one",
        )
    };
    if attempt > settings.max_attempts {
        let _ = redis.compare_and_delete(&key, stored.clone()).await;
        return Err(burnt());
    }
    let expected = hex::decode(&pending.mac).unwrap_or_default();
    // Constant-time comparison of the keyed hashes.
    let matches = state
        .keys
        .code_mac(&pending.request_id, code)
        .verify_slice(&expected)
        .is_ok();
    if !matches {
        let last = attempt >= settings.max_attempts;
        publish_in_background(
            &state,
            Envelope::new(
                SignInFailed {
                    request_id: pending.request_id,
                    phone_hash: phone_hash.clone(),
                    attempt,
                    reason: if last {
                        SignInFailure::TooManyAttempts
                    } else {
                        SignInFailure::WrongCode
                    },
                },
                state.site,
            ),
            trace,
        );
        if last {
            let _ = redis.compare_and_delete(&key, stored.clone()).await;
            metrics::counter!("coinalarm_api_sign_in_verifications_total", "outcome" => "burnt")
                .increment(1);
            return Err(burnt());
        }
        metrics::counter!("coinalarm_api_sign_in_verifications_total", "outcome" => "wrong")
            .increment(1);
        return Err(invalid().with_details(serde_json::json!({
            "attempts_left": settings.max_attempts - attempt,
        })));
    }

    // The user before the code is spent: if the bus is down the code stays valid for a retry.
    state.require_bus()?;
    let user_id = state.keys.user_id(&phone);
    let existing = aggregates::load_user(&state.bus, &user_id).await?;
    let new_user = match existing {
        Some(_) => false,
        None => {
            let registered = UserRegistered {
                user_id: user_id.clone(),
                phone: phone.clone(),
                phone_hash: phone_hash.clone(),
                home_site: state.site,
            };
            match state
                .bus
                .publish_expecting(
                    &Envelope::new(registered, state.site),
                    state.site,
                    0,
                    Some(&trace),
                )
                .await
            {
                Ok(_) => true,
                // Registered a moment ago (a concurrent sign-in, or not yet in the local aggregate).
                Err(bus::Error::WrongLastSequence { .. }) => false,
                Err(error) => return Err(aggregates::publish_failed(&error)),
            }
        }
    };

    let consumed = redis
        .compare_and_delete(&key, stored)
        .await
        .map_err(|_| ApiError::auth_store_unavailable())?;
    if !consumed {
        // Used by a concurrent request, or replaced by a newer one.
        return Err(invalid());
    }
    let now = Timestamp::now();
    let expires_at = now
        .checked_add(settings.session_ttl)
        .unwrap_or(Timestamp::MAX);
    let (token, claims) = state.sessions.issue(
        user_id.clone(),
        phone_hash.clone(),
        state.site,
        now,
        expires_at,
    );
    publish_in_background(
        &state,
        Envelope::new(
            SignInSucceeded {
                request_id: pending.request_id,
                phone_hash,
                user_id: user_id.clone(),
                new_user,
            },
            state.site,
        ),
        trace,
    );
    metrics::counter!("coinalarm_api_sign_in_verifications_total", "outcome" => "signed_in")
        .increment(1);
    tracing::info!(user_id = %user_id, session = %claims.sid, new_user, "signed in");
    if new_user {
        crate::consistency::wait_for_user(&state, &user_id, 1).await;
    }
    Ok((
        StatusCode::CREATED,
        Json(SessionCreated {
            token,
            token_type: "Bearer",
            expires_at,
            user_id,
            new_user,
        }),
    ))
}

/// Sign out: the session's token stops working at both sites.
#[utoipa::path(
    delete,
    path = "/v1/auth/session",
    tag = "sign-in",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out."),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 503, description = "`bus_unavailable`: the session is still valid, retry.", body = ErrorBody),
    )
)]
pub async fn delete_session(
    State(state): State<AppState>,
    RequestTrace(trace): RequestTrace,
    Authenticated(claims): Authenticated,
) -> Result<StatusCode, ApiError> {
    state.require_bus()?;
    let expires_at = claims.expires_at();
    let revoked = SessionRevoked {
        session_id: claims.sid,
        phone_hash: claims.ph.clone(),
        user_id: claims.uid.clone(),
        expires_at,
    };
    // The event first: it is what makes the sign-out reach the other site too.
    state
        .bus
        .publish(&Envelope::new(revoked, state.site), Some(&trace))
        .await
        .map_err(|error| aggregates::publish_failed(&error))?;
    state.revoked.insert(claims.sid, expires_at);
    if let Ok(redis) = state.redis() {
        let remaining = expires_at.duration_since(Timestamp::now());
        let ttl = Duration::try_from(remaining).unwrap_or(Duration::from_secs(1));
        if let Err(error) = redis
            .set_ex(
                &revoked_key(&claims.sid),
                "1",
                ttl.max(Duration::from_secs(1)),
            )
            .await
        {
            // The site's revocation consumer writes it when Redis is back.
            tracing::warn!(%error, "cannot record a sign-out in redis yet");
        }
    }
    metrics::counter!("coinalarm_api_sign_outs_total").increment(1);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..1_000 {
            let code = new_code();
            assert_eq!(code.len(), CODE_LENGTH);
            assert!(code.bytes().all(|byte| byte.is_ascii_digit()));
        }
    }
}
