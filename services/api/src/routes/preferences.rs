//! The signed-in user: who they are (masked phone, home site) and their preferences — locale, time
//! zone, quiet hours, daily SMS cap — changed with optimistic concurrency on the user aggregate.

use std::num::NonZeroU32;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use proto_events::domain::{QuietHours, TimeZoneName};
use proto_events::events::{Preferences, UserPreferencesChanged};
use proto_events::{Category, Envelope, Site};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::aggregates::{self, Outcome, UserState};
use crate::auth::Authenticated;
use crate::consistency;
use crate::error::{ApiError, ApiJson, ErrorBody, ErrorCode};
use crate::routes::RequestTrace;
use crate::routes::sign_in::LocaleDto;
use crate::state::AppState;
use crate::statements;

/// Highest daily SMS cap a user may set.
pub const MAX_DAILY_SMS_CAP: u32 = 1_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me))
        .routes(routes!(put_preferences))
}

/// A daily window in the user's time zone during which alert SMS are held back (`start` after `end`
/// wraps midnight). Sign-in codes are never held.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursDto {
    /// `HH:MM`
    #[schema(example = "22:00")]
    pub start: String,
    /// `HH:MM`
    #[schema(example = "07:00")]
    pub end: String,
}

/// Everything a user can set about how they are notified; a change replaces all of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesDto {
    pub locale: LocaleDto,
    /// IANA time zone name.
    #[schema(example = "Asia/Seoul")]
    pub time_zone: String,
    #[serde(default)]
    pub quiet_hours: Option<QuietHoursDto>,
    /// Most alert SMS per local day (1 to 1000); the deployment's default when absent.
    #[serde(default)]
    pub daily_sms_cap: Option<u32>,
}

impl PreferencesDto {
    fn of(preferences: &Preferences) -> PreferencesDto {
        let minutes = |time: jiff::civil::Time| format!("{:02}:{:02}", time.hour(), time.minute());
        PreferencesDto {
            locale: preferences.locale.into(),
            time_zone: preferences.time_zone.as_str().to_owned(),
            quiet_hours: preferences.quiet_hours.map(|quiet| QuietHoursDto {
                start: minutes(quiet.start),
                end: minutes(quiet.end),
            }),
            daily_sms_cap: preferences.daily_sms_cap.map(NonZeroU32::get),
        }
    }

    fn validate(self) -> Result<Preferences, ApiError> {
        let time_zone = TimeZoneName::parse(&self.time_zone)
            .map_err(|error| ApiError::validation(format!("time_zone: {error}")))?;
        let time = |name: &str, text: &str| {
            text.parse::<jiff::civil::Time>().map_err(|_| {
                ApiError::validation(format!("quiet_hours.{name}: {text:?} is not HH:MM"))
            })
        };
        let quiet_hours = self
            .quiet_hours
            .map(|quiet| -> Result<QuietHours, ApiError> {
                Ok(QuietHours {
                    start: time("start", &quiet.start)?,
                    end: time("end", &quiet.end)?,
                })
            })
            .transpose()?;
        let daily_sms_cap = match self.daily_sms_cap {
            None => None,
            Some(cap) if (1..=MAX_DAILY_SMS_CAP).contains(&cap) => NonZeroU32::new(cap),
            Some(_) => {
                return Err(ApiError::validation(format!(
                    "daily_sms_cap must be between 1 and {MAX_DAILY_SMS_CAP}"
                )));
            }
        };
        Ok(Preferences {
            locale: self.locale.into(),
            time_zone,
            quiet_hours,
            daily_sms_cap,
        })
    }
}

/// The signed-in user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    #[schema(value_type = String)]
    pub user_id: proto_events::domain::UserId,
    /// The phone number with its middle hidden; absent until the read model has it.
    #[schema(example = "+8210****5678")]
    pub phone_masked: Option<String>,
    #[schema(value_type = String, example = "onprem")]
    pub home_site: Site,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub registered_at: Option<Timestamp>,
    pub preferences: PreferencesDto,
    /// Send back as `If-Match` to change the preferences.
    pub version: u64,
}

fn with_etag(me: Me) -> Response {
    let etag = format!("\"{}\"", me.version);
    let mut response = Json(me).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

async fn read_me(
    state: &AppState,
    user_id: &proto_events::domain::UserId,
) -> Result<Option<Me>, ApiError> {
    let connection = state.read_connection().await?;
    let row = state
        .bounded(statements::query_opt(
            &connection,
            "SELECT phone_masked, home_site, registered_at, locale, time_zone, quiet_hours_start, \
                    quiet_hours_end, daily_sms_cap, version \
             FROM users WHERE user_id = $1 AND registered_at IS NOT NULL",
            &[&user_id.as_str()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let bad = |what: &str| ApiError::internal(format!("a stored user has an invalid {what}"));
    let home_site: Site = row
        .get::<_, String>("home_site")
        .parse()
        .map_err(|_| bad("home site"))?;
    let locale =
        proto_events::domain::Locale::parse(row.get("locale")).map_err(|_| bad("locale"))?;
    let time_zone = TimeZoneName::parse(row.get("time_zone")).map_err(|_| bad("time zone"))?;
    let quiet_hours = match (
        row.get::<_, Option<jiff::civil::Time>>("quiet_hours_start"),
        row.get::<_, Option<jiff::civil::Time>>("quiet_hours_end"),
    ) {
        (Some(start), Some(end)) => Some(QuietHours { start, end }),
        _ => None,
    };
    let daily_sms_cap = row
        .get::<_, Option<i32>>("daily_sms_cap")
        .and_then(|cap| u32::try_from(cap).ok())
        .and_then(NonZeroU32::new);
    Ok(Some(Me {
        user_id: user_id.clone(),
        phone_masked: row.get("phone_masked"),
        home_site,
        registered_at: row.get("registered_at"),
        preferences: PreferencesDto::of(&Preferences {
            locale,
            time_zone,
            quiet_hours,
            daily_sms_cap,
        }),
        version: u64::try_from(row.get::<_, i64>("version")).map_err(|_| bad("version"))?,
    }))
}

fn me_of_state(user: &UserState) -> Me {
    Me {
        user_id: user.user_id.clone(),
        phone_masked: None,
        home_site: user.home_site,
        registered_at: None,
        preferences: PreferencesDto::of(&user.preferences),
        version: user.version,
    }
}

/// The signed-in user and their preferences.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "preferences",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user.", body = Me, headers(("ETag" = String))),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 503, description = "`read_model_unavailable`", body = ErrorBody),
    )
)]
pub async fn get_me(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Response, ApiError> {
    if let Some(me) = read_me(&state, &claims.uid).await? {
        return Ok(with_etag(me));
    }
    // Registered a moment ago and not projected yet: the user's own stream knows.
    match aggregates::load_user(&state.bus, &claims.uid).await {
        Ok(Some(user)) => Ok(with_etag(me_of_state(&user))),
        _ => Err(ApiError::read_model_unavailable()),
    }
}

/// Replace the user's preferences.
#[utoipa::path(
    put,
    path = "/v1/me/preferences",
    tag = "preferences",
    security(("bearer" = [])),
    params(("If-Match" = Option<String>, Header, description = "The user version you built on, e.g. \"2\"")),
    request_body = PreferencesDto,
    responses(
        (status = 200, description = "Changed.", body = Me,
            headers(("ETag" = String), ("CoinAlarm-Consistent" = bool))),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 409, description = "`version_conflict`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 503, description = "`bus_unavailable`: nothing was changed.", body = ErrorBody),
    )
)]
pub async fn put_preferences(
    State(state): State<AppState>,
    RequestTrace(trace): RequestTrace,
    Authenticated(claims): Authenticated,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PreferencesDto>,
) -> Result<Response, ApiError> {
    let preferences = request.validate()?;
    let expected = match headers.get(header::IF_MATCH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .unwrap_or_default()
                .trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse::<u64>()
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        "If-Match must be a version such as \"2\"",
                    )
                })?,
        ),
    };
    state.require_bus()?;
    let subject = proto_events::subjects::subject::user(None, claims.uid.as_str());
    for _ in 0..aggregates::max_attempts() {
        let current = aggregates::load_user(&state.bus, &claims.uid)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("no such user"))?;
        if let Some(expected) = expected
            && expected != current.version
        {
            return Err(ApiError::version_conflict(current.version));
        }
        let changed = UserPreferencesChanged {
            user_id: claims.uid.clone(),
            version: current.version + 1,
            preferences: preferences.clone(),
        };
        let envelope = Envelope::new(changed, state.site);
        match aggregates::publish_command(
            &state.bus,
            &envelope,
            current.home_site,
            current.positions,
            Some(&trace),
        )
        .await?
        {
            Outcome::Stored { .. } => {
                metrics::counter!("coinalarm_api_preference_changes_total").increment(1);
                let version = current.version + 1;
                let consistent = consistency::wait_for_user(&state, &claims.uid, version).await;
                let me = if consistent {
                    read_me(&state, &claims.uid).await.ok().flatten()
                } else {
                    None
                };
                let me = me.unwrap_or_else(|| {
                    me_of_state(&UserState {
                        preferences: preferences.clone(),
                        version,
                        ..current
                    })
                });
                let mut response = with_etag(me);
                response.headers_mut().insert(
                    consistency::HEADER,
                    HeaderValue::from_static(if consistent { "true" } else { "false" }),
                );
                return Ok(response);
            }
            Outcome::LostRace => {
                aggregates::wait_for_catch_up(
                    &state.bus,
                    Category::Users,
                    &subject,
                    current.positions.aggregate,
                )
                .await;
            }
        }
    }
    let current = aggregates::load_user(&state.bus, &claims.uid)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("no such user"))?;
    Err(ApiError::version_conflict(current.version))
}
