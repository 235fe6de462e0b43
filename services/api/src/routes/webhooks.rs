//! Twilio status callbacks. The dispatcher gives each SMS a `StatusCallback` URL naming the dispatch,
//! attempt and provider; Twilio signs the URL it called plus the posted form (`X-Twilio-Signature`).
//! The signature is checked in constant time against the URL as Twilio saw it: `public_base_url` (so a
//! proxy in front does not break it) plus the request's path and query. Accepted final statuses become
//! `dispatch.delivered` / `dispatch.undelivered` events; invalid callbacks are 403 and counted.

use axum::extract::{OriginalUri, RawForm, State};
use axum::http::{HeaderMap, StatusCode};
use coinalarm_dispatcher::callback::CallbackTarget;
use coinalarm_dispatcher::twilio::{StatusCallback, verify_signature};
use jiff::Timestamp;
use proto_events::Envelope;
use proto_events::events::{DispatchDelivered, DispatchUndelivered};
use url::Url;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::aggregates;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::routes::RequestTrace;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(twilio_status))
}

fn count(outcome: &'static str) {
    metrics::counter!("coinalarm_api_twilio_callbacks_total", "outcome" => outcome).increment(1);
}

fn rejected(outcome: &'static str, message: &str) -> ApiError {
    count(outcome);
    ApiError::new(ErrorCode::InvalidSignature, message)
}

/// The URL Twilio called: the public base plus this request's path and query.
fn external_url(base: &Url, uri: &axum::http::Uri) -> String {
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |value| value.as_str().to_owned());
    format!("{}{}", base.as_str().trim_end_matches('/'), path_and_query)
}

/// Twilio message status callback (form-encoded, signed with `X-Twilio-Signature`).
#[utoipa::path(
    post,
    path = "/v1/twilio/status",
    tag = "webhooks",
    params(
        ("dispatch_id" = String, Query, description = "Set by the dispatcher in the callback URL"),
        ("attempt" = u32, Query, description = "Set by the dispatcher"),
        ("provider" = String, Query, description = "Set by the dispatcher"),
        ("X-Twilio-Signature" = String, Header, description = "Twilio's signature of the URL and form"),
    ),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's status form: MessageSid, MessageStatus, ErrorCode, ..."),
    responses(
        (status = 204, description = "Accepted (final statuses are recorded; intermediate ones are acknowledged and ignored)."),
        (status = 403, description = "`invalid_signature`: missing or wrong signature, unknown provider, or a URL not from the dispatcher.", body = ErrorBody),
        (status = 400, description = "`invalid_request`: the form lacks MessageSid or MessageStatus.", body = ErrorBody),
        (status = 503, description = "`bus_unavailable`: not recorded; Twilio may retry.", body = ErrorBody),
    )
)]
pub async fn twilio_status(
    State(state): State<AppState>,
    RequestTrace(trace): RequestTrace,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawForm(form): RawForm,
) -> Result<StatusCode, ApiError> {
    let url = external_url(&state.public_base, &uri);
    let parsed_url =
        Url::parse(&url).map_err(|_| rejected("bad_url", "unexpected callback URL"))?;
    let target = CallbackTarget::from_url(&parsed_url)
        .map_err(|_| rejected("bad_url", "not a callback URL this deployment gave out"))?;
    let Some(auth_token) = state
        .settings
        .twilio_auth_tokens
        .get(target.provider.as_str())
    else {
        return Err(rejected("unknown_provider", "unknown provider"));
    };
    let Some(signature) = headers
        .get("x-twilio-signature")
        .and_then(|value| value.to_str().ok())
    else {
        return Err(rejected("missing_signature", "missing X-Twilio-Signature"));
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&form)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    if !verify_signature(auth_token, &url, &params, signature) {
        tracing::warn!(dispatch_id = %target.dispatch_id, "status callback with an invalid signature");
        return Err(rejected(
            "invalid_signature",
            "the signature does not verify",
        ));
    }
    let callback = StatusCallback::from_params(&params)
        .map_err(|error| ApiError::new(ErrorCode::InvalidRequest, error.to_string()))?;
    let now = Timestamp::now();
    let published = match callback.message_status.as_str() {
        "delivered" | "read" => {
            state.require_bus()?;
            let event = DispatchDelivered {
                dispatch_id: target.dispatch_id.clone(),
                site: state.site,
                attempt: target.attempt,
                provider: target.provider.clone(),
                provider_message_id: callback.message_sid.clone(),
                provider_status: callback.message_status.clone(),
                reported_at: now,
            };
            state
                .bus
                .publish(&Envelope::new(event, state.site), Some(&trace))
                .await
        }
        "undelivered" | "failed" => {
            state.require_bus()?;
            let event = DispatchUndelivered {
                dispatch_id: target.dispatch_id.clone(),
                site: state.site,
                attempt: target.attempt,
                provider: target.provider.clone(),
                provider_message_id: callback.message_sid.clone(),
                provider_status: callback.message_status.clone(),
                error_code: callback.error_code.clone(),
                reported_at: now,
            };
            state
                .bus
                .publish(&Envelope::new(event, state.site), Some(&trace))
                .await
        }
        _ => {
            // queued / sending / sent: the dispatcher already recorded the provider's acceptance.
            count("ignored");
            return Ok(StatusCode::NO_CONTENT);
        }
    };
    published.map_err(|error| aggregates::publish_failed(&error))?;
    count("recorded");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_external_url_is_the_public_base_plus_path_and_query() {
        let base = Url::parse("https://api.example.com/prefix/").expect("url");
        let uri: axum::http::Uri = "/v1/twilio/status?dispatch_id=d&attempt=1"
            .parse()
            .expect("uri");
        assert_eq!(
            external_url(&base, &uri),
            "https://api.example.com/prefix/v1/twilio/status?dispatch_id=d&attempt=1"
        );
    }
}
