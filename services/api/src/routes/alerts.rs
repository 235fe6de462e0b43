//! Alerts: create, list, get, update, pause, resume, delete. Commands are validated, then written as
//! events to the alert's own subject with optimistic concurrency (see [`crate::aggregates`]); reads
//! come from the `alerts_current` read model; commands wait for it (see [`crate::consistency`]).

use std::num::NonZeroU32;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use proto_events::domain::{
    AlertId, MarketCode, Price, ThresholdPercent, TimeZoneName, UserId, Weekday,
};
use proto_events::events::{
    AlertCondition, AlertCreated, AlertDeleted, AlertPaused, AlertResumed, AlertSpec, AlertUpdated,
    ChangeBasis, ChangeRateCondition, Direction, PriceSide, RepeatPolicy, ScheduledCondition,
    TargetPriceCondition,
};
use proto_events::{Category, Envelope, Event, Site};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::aggregates::{self, AlertState, AlertStatus, Outcome};
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, ErrorCode};
use crate::routes::{Cursor, RequestTrace, decimal_text};
use crate::state::AppState;
use crate::statements;
use crate::{consistency, market_data};

/// Shortest cooldown of a repeating alert: one SMS a minute is already a lot.
pub const MIN_COOLDOWN_SECONDS: u32 = 60;
/// Longest cooldown: 30 days.
pub const MAX_COOLDOWN_SECONDS: u32 = 30 * 24 * 3_600;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_alert, list_alerts))
        .routes(routes!(get_alert, update_alert, delete_alert))
        .routes(routes!(pause_alert))
        .routes(routes!(resume_alert))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DirectionDto {
    Up,
    Down,
    Either,
}

impl From<DirectionDto> for Direction {
    fn from(direction: DirectionDto) -> Direction {
        match direction {
            DirectionDto::Up => Direction::Up,
            DirectionDto::Down => Direction::Down,
            DirectionDto::Either => Direction::Either,
        }
    }
}

/// What a change rate is measured against: the exchange's daily reference (`daily`, Upbit's
/// `signed_change_rate`, reset 00:00 KST) or a rolling window of trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum BasisDto {
    #[serde(rename = "daily")]
    Daily,
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    OneHour,
    #[serde(rename = "24h")]
    TwentyFourHours,
}

impl From<BasisDto> for ChangeBasis {
    fn from(basis: BasisDto) -> ChangeBasis {
        match basis {
            BasisDto::Daily => ChangeBasis::Daily,
            BasisDto::FiveMinutes => ChangeBasis::Rolling5Minutes,
            BasisDto::OneHour => ChangeBasis::Rolling1Hour,
            BasisDto::TwentyFourHours => ChangeBasis::Rolling24Hours,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WeekdayDto {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl From<WeekdayDto> for Weekday {
    fn from(weekday: WeekdayDto) -> Weekday {
        match weekday {
            WeekdayDto::Mon => Weekday::Mon,
            WeekdayDto::Tue => Weekday::Tue,
            WeekdayDto::Wed => Weekday::Wed,
            WeekdayDto::Thu => Weekday::Thu,
            WeekdayDto::Fri => Weekday::Fri,
            WeekdayDto::Sat => Weekday::Sat,
            WeekdayDto::Sun => Weekday::Sun,
        }
    }
}

/// What the alert waits for. Decimals are JSON strings (`"95000000"`), never numbers.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConditionInput {
    /// Fires when the last trade price *crosses* `target` (`up`: from below, `down`: from above,
    /// `either`). The API records which side the latest price was on at creation: if the target is
    /// already reached or passed then (e.g. `up` with the price at or above it), or no price is known
    /// yet, the alert does **not** fire on that stale price; it waits until the price is back on the
    /// arming side and fires when it reaches the target again.
    TargetPrice {
        #[schema(example = "KRW-BTC")]
        market: String,
        /// Positive decimal as a string.
        #[schema(example = "96000000")]
        target: String,
        direction: DirectionDto,
    },
    /// Fires when the change over `basis` reaches `threshold` percent (`up`: +threshold or more,
    /// `down`: -threshold or less, `either`: either size), on crossing; created with the threshold
    /// already passed, it waits for the change to come back and cross again.
    ChangeRate {
        #[schema(example = "KRW-ETH")]
        market: String,
        basis: BasisDto,
        direction: DirectionDto,
        /// Percent as a decimal string, greater than 0 (at most 100 for `down`/`either`).
        #[schema(example = "5")]
        threshold: String,
    },
    /// Fires at `time_of_day` in `time_zone` on each of `weekdays` and `dates`, with the current
    /// prices of `markets` (1 to 10).
    Scheduled {
        #[schema(example = json!(["KRW-BTC", "KRW-ETH"]))]
        markets: Vec<String>,
        #[serde(default)]
        weekdays: Vec<WeekdayDto>,
        /// Calendar dates, `YYYY-MM-DD`.
        #[serde(default)]
        #[schema(example = json!(["2026-12-24"]))]
        dates: Vec<String>,
        /// `HH:MM` (whole minutes).
        #[schema(example = "09:00")]
        time_of_day: String,
        /// IANA name; the user's time zone preference (default `Asia/Seoul`) when absent.
        #[serde(default)]
        #[schema(example = "Asia/Seoul")]
        time_zone: Option<String>,
    },
}

/// Fire once (then spent until edited) or re-arm after a cooldown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum RepeatDto {
    Once,
    /// Re-arms `cooldown_seconds` (60 to 2592000) after each firing.
    Repeat {
        cooldown_seconds: u32,
    },
}

/// A new alert.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAlert {
    /// Optional client-chosen id (a UUID): retrying a create with the same id and definition returns
    /// the alert instead of creating a second one.
    #[serde(default)]
    pub alert_id: Option<uuid::Uuid>,
    /// Only `upbit` for now; the default.
    #[serde(default)]
    pub exchange: Option<String>,
    pub condition: ConditionInput,
    /// `{"mode": "once"}` when absent.
    #[serde(default)]
    pub repeat: Option<RepeatDto>,
    /// After this instant the alert never fires.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

/// A replacement definition. An edit re-arms a spent `once` alert.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertDefinition {
    #[serde(default)]
    pub exchange: Option<String>,
    pub condition: ConditionInput,
    #[serde(default)]
    pub repeat: Option<RepeatDto>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

/// Where the price was relative to the target when the alert was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PriceSideDto {
    Below,
    At,
    Above,
}

/// The alert's condition as stored (same shape as the input, plus what the API recorded).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConditionView {
    TargetPrice {
        market: String,
        target: String,
        direction: DirectionDto,
        /// Side of the latest known price at creation; `at` also when no price was known.
        side_at_creation: PriceSideDto,
        /// The latest price known at creation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference_price: Option<String>,
    },
    ChangeRate {
        market: String,
        basis: BasisDto,
        direction: DirectionDto,
        threshold: String,
    },
    Scheduled {
        markets: Vec<String>,
        #[serde(default)]
        weekdays: Vec<WeekdayDto>,
        #[serde(default)]
        dates: Vec<String>,
        /// `HH:MM:SS`.
        time_of_day: String,
        time_zone: String,
    },
}

impl ConditionView {
    fn of(condition: &AlertCondition) -> Result<ConditionView, ApiError> {
        let value = serde_json::to_value(condition)
            .map_err(|error| ApiError::internal(error.to_string()))?;
        Self::from_json(value)
    }

    fn from_json(value: serde_json::Value) -> Result<ConditionView, ApiError> {
        serde_json::from_value(value).map_err(|error| {
            ApiError::internal(format!(
                "a stored condition has an unexpected shape: {error}"
            ))
        })
    }
}

/// How often and when the alert fired (from the read model).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FiringSummary {
    pub count: i64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_fired_at: Option<Timestamp>,
    pub last_price: Option<String>,
}

/// An alert.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertView {
    #[schema(value_type = String)]
    pub alert_id: AlertId,
    /// `active`, `paused` or `expired`.
    #[schema(example = "active")]
    pub status: String,
    #[schema(example = "upbit")]
    pub exchange: String,
    pub condition: ConditionView,
    pub repeat: RepeatDto,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// The aggregate version: send it back as `If-Match` to change the alert.
    pub version: u64,
    /// Site whose stream the alert's commands go to.
    #[schema(value_type = String, example = "onprem")]
    pub home_site: Site,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// Present on reads; absent in a command's answer when the read model had not caught up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firings: Option<FiringSummary>,
}

fn repeat_dto(repeat: RepeatPolicy) -> RepeatDto {
    match repeat {
        RepeatPolicy::Once => RepeatDto::Once,
        RepeatPolicy::Repeat { cooldown_seconds } => RepeatDto::Repeat {
            cooldown_seconds: cooldown_seconds.get(),
        },
    }
}

fn effective_status(status: AlertStatus, expires_at: Option<Timestamp>) -> String {
    match (status, expires_at) {
        (AlertStatus::Active, Some(expiry)) if expiry <= Timestamp::now() => "expired".to_owned(),
        (status, _) => status.as_str().to_owned(),
    }
}

impl AlertView {
    fn of_state(state: &AlertState) -> Result<AlertView, ApiError> {
        Ok(AlertView {
            alert_id: state.alert_id.clone(),
            status: effective_status(state.status, state.spec.expires_at),
            exchange: state.spec.exchange.as_str().to_owned(),
            condition: ConditionView::of(&state.spec.condition)?,
            repeat: repeat_dto(state.spec.repeat),
            expires_at: state.spec.expires_at,
            version: state.version,
            home_site: state.home_site,
            created_at: state.created_at,
            updated_at: state.updated_at,
            firings: None,
        })
    }

    fn of_row(row: &tokio_postgres::Row) -> Result<AlertView, ApiError> {
        let bad = |what: &str| ApiError::internal(format!("a stored alert has an invalid {what}"));
        let alert_id = AlertId::parse(row.get("alert_id")).map_err(|_| bad("id"))?;
        let home_site: Site = row
            .get::<_, String>("home_site")
            .parse()
            .map_err(|_| bad("home site"))?;
        let repeat = match (
            row.get::<_, String>("repeat_mode").as_str(),
            row.get::<_, Option<i32>>("cooldown_seconds"),
        ) {
            ("repeat", Some(seconds)) => RepeatDto::Repeat {
                cooldown_seconds: u32::try_from(seconds).map_err(|_| bad("cooldown"))?,
            },
            _ => RepeatDto::Once,
        };
        let last_price: Option<Decimal> = row.get("last_price");
        Ok(AlertView {
            alert_id,
            status: row.get("effective_status"),
            exchange: row.get("exchange"),
            condition: ConditionView::from_json(row.get("condition"))?,
            repeat,
            expires_at: row.get("expires_at"),
            version: u64::try_from(row.get::<_, i64>("version")).map_err(|_| bad("version"))?,
            home_site,
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            firings: Some(FiringSummary {
                count: row.get("trigger_count"),
                last_fired_at: row.get("last_triggered_at"),
                last_price: last_price.map(decimal_text),
            }),
        })
    }
}

const ALERT_COLUMNS: &str = "alert_id, home_site, repeat_mode, cooldown_seconds, last_price, \
    effective_status, exchange, condition, expires_at, version, created_at, updated_at, \
    trigger_count, last_triggered_at";

/// The alert as the read model shows it; `None` when absent, deleted, or another user's.
async fn read_alert(
    state: &AppState,
    user_id: &UserId,
    alert_id: &AlertId,
) -> Result<Option<AlertView>, ApiError> {
    let connection = state.read_connection().await?;
    let row = state
        .bounded(statements::query_opt(
            &connection,
            &format!(
                "SELECT {ALERT_COLUMNS} FROM alerts_current \
                 WHERE alert_id = $1 AND user_id = $2 AND status <> 'deleted'"
            ),
            &[&alert_id.as_str(), &user_id.as_str()],
        ))
        .await?;
    row.as_ref().map(AlertView::of_row).transpose()
}

/// A command's answer: the alert, its version as `ETag`, and whether reads already show it.
fn command_response(status: StatusCode, view: AlertView, consistent: bool) -> Response {
    let etag = format!("\"{}\"", view.version);
    let location = format!("/v1/alerts/{}", view.alert_id);
    let mut response = (status, Json(view)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if status == StatusCode::CREATED
        && let Ok(value) = HeaderValue::from_str(&location)
    {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(
        consistency::HEADER,
        HeaderValue::from_static(if consistent { "true" } else { "false" }),
    );
    response
}

/// The version in `If-Match` (`"3"`, `3` or `W/"3"`), if sent.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let unquoted = text.trim_start_matches("W/").trim_matches('"');
    unquoted.parse().map(Some).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "If-Match must be the alert's version as an ETag, e.g. \"3\"",
        )
    })
}

fn parse_market(state: &AppState, text: &str) -> Result<MarketCode, ApiError> {
    let market = MarketCode::parse(text)
        .map_err(|error| ApiError::new(ErrorCode::UnknownMarket, error.to_string()))?;
    if !state.catalogue.contains(&market) {
        return Err(ApiError::new(
            ErrorCode::UnknownMarket,
            format!("{market} is not a market of {}", state.exchange),
        ));
    }
    Ok(market)
}

/// Validates a definition into the event's spec. `time_zone` is the default of scheduled alerts.
async fn build_spec(
    state: &AppState,
    exchange: Option<&str>,
    condition: ConditionInput,
    repeat: Option<RepeatDto>,
    expires_at: Option<Timestamp>,
    default_time_zone: TimeZoneName,
) -> Result<AlertSpec, ApiError> {
    if let Some(exchange) = exchange
        && exchange != state.exchange.as_str()
    {
        return Err(ApiError::validation(format!(
            "exchange {exchange:?} is not supported; use {:?}",
            state.exchange.as_str()
        )));
    }
    let now = Timestamp::now();
    if let Some(expiry) = expires_at
        && expiry <= now
    {
        return Err(ApiError::validation("expires_at must be in the future"));
    }
    let repeat = match repeat.unwrap_or(RepeatDto::Once) {
        RepeatDto::Once => RepeatPolicy::Once,
        RepeatDto::Repeat { cooldown_seconds } => {
            if !(MIN_COOLDOWN_SECONDS..=MAX_COOLDOWN_SECONDS).contains(&cooldown_seconds) {
                return Err(ApiError::validation(format!(
                    "cooldown_seconds must be between {MIN_COOLDOWN_SECONDS} and {MAX_COOLDOWN_SECONDS}"
                )));
            }
            RepeatPolicy::Repeat {
                // In range, checked just above.
                cooldown_seconds: NonZeroU32::new(cooldown_seconds).unwrap_or(NonZeroU32::MIN),
            }
        }
    };
    let condition = match condition {
        ConditionInput::TargetPrice {
            market,
            target,
            direction,
        } => {
            let market = parse_market(state, &market)?;
            let target = Price::parse(&target)
                .map_err(|error| ApiError::validation(format!("target: {error}")))?;
            let reference_price = market_data::latest_price(state, &market).await;
            // No known price counts as "already there": the alert then never fires on a first,
            // possibly stale, price (see the condition's documentation).
            let side_at_creation =
                reference_price.map_or(PriceSide::At, |price| PriceSide::of(price, target));
            AlertCondition::TargetPrice(TargetPriceCondition {
                market,
                target,
                direction: direction.into(),
                side_at_creation,
                reference_price,
            })
        }
        ConditionInput::ChangeRate {
            market,
            basis,
            direction,
            threshold,
        } => {
            let market = parse_market(state, &market)?;
            let threshold = ThresholdPercent::parse(&threshold)
                .map_err(|error| ApiError::validation(format!("threshold: {error}")))?;
            if direction != DirectionDto::Up && threshold.value() > Decimal::ONE_HUNDRED {
                return Err(ApiError::validation(
                    "threshold: a price cannot fall more than 100 %",
                ));
            }
            AlertCondition::ChangeRate(ChangeRateCondition {
                market,
                basis: basis.into(),
                direction: direction.into(),
                threshold,
            })
        }
        ConditionInput::Scheduled {
            markets,
            weekdays,
            dates,
            time_of_day,
            time_zone,
        } => {
            let markets = markets
                .iter()
                .map(|market| parse_market(state, market))
                .collect::<Result<Vec<_>, _>>()?;
            let dates = dates
                .iter()
                .map(|date| {
                    date.parse::<jiff::civil::Date>().map_err(|_| {
                        ApiError::validation(format!("dates: {date:?} is not YYYY-MM-DD"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let time_of_day = time_of_day.parse::<jiff::civil::Time>().map_err(|_| {
                ApiError::validation(format!("time_of_day: {time_of_day:?} is not HH:MM"))
            })?;
            let time_zone = match time_zone {
                Some(name) => TimeZoneName::parse(&name)
                    .map_err(|error| ApiError::validation(format!("time_zone: {error}")))?,
                None => default_time_zone,
            };
            if weekdays.is_empty() && !dates.is_empty() {
                let zone = time_zone
                    .time_zone()
                    .map_err(|error| ApiError::validation(error.to_string()))?;
                let today = now.to_zoned(zone).date();
                if dates.iter().all(|date| *date < today) {
                    return Err(ApiError::validation(
                        "dates: every date is in the past, so the alert would never fire",
                    ));
                }
            }
            let condition = ScheduledCondition::new(
                markets,
                weekdays.into_iter().map(Weekday::from).collect(),
                dates,
                time_of_day,
                time_zone,
            )
            .map_err(|error| ApiError::validation(error.to_string()))?;
            AlertCondition::Scheduled(condition)
        }
    };
    Ok(AlertSpec {
        exchange: state.exchange.clone(),
        condition,
        repeat,
        expires_at,
    })
}

/// The user's time zone preference from their aggregate, Asia/Seoul when unknown.
async fn user_time_zone(state: &AppState, user_id: &UserId) -> TimeZoneName {
    match aggregates::load_user(&state.bus, user_id).await {
        Ok(Some(user)) => user.preferences.time_zone,
        _ => TimeZoneName::default(),
    }
}

/// Counts the user's live alerts, up to the cap (enough to decide, and what keeps the check's cost
/// bounded by the cap rather than by the user's history: a count over every row of a user with
/// thousands of alerts took 17 ms of database CPU per create); `None` when the read model cannot say
/// (the cap is then not enforced for this create, and that is counted).
async fn live_alert_count(state: &AppState, user_id: &UserId) -> Option<i64> {
    let connection = state.read_connection().await.ok()?;
    let row = state
        .bounded(statements::query_one(
            &connection,
            "SELECT count(*) FROM (SELECT 1 FROM alerts \
             WHERE user_id = $1 AND status <> 'deleted' LIMIT $2) AS live",
            &[
                &user_id.as_str(),
                &i64::from(state.settings.max_alerts_per_user),
            ],
        ))
        .await
        .ok()?;
    Some(row.get(0))
}

/// Create an alert.
///
/// Answers once the alert is readable (`CoinAlarm-Consistent: true`), or after a few seconds at most
/// (`false`) when the read models lag or are down: the alert is stored either way.
#[utoipa::path(
    post,
    path = "/v1/alerts",
    tag = "alerts",
    security(("bearer" = [])),
    request_body = CreateAlert,
    responses(
        (status = 201, description = "Created.", body = AlertView,
            headers(("ETag" = String, description = "The version"), ("Location" = String),
                    ("CoinAlarm-Consistent" = bool, description = "Whether reads already show it"))),
        (status = 400, description = "`invalid_request`: malformed body, unknown field, JSON number for a decimal.", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 409, description = "`alert_exists`: the client-chosen id is taken by another definition.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`validation_failed`, `unknown_market` or `alert_limit_reached`.", body = ErrorBody),
        (status = 503, description = "`bus_unavailable`: nothing was stored.", body = ErrorBody),
    )
)]
pub async fn create_alert(
    State(state): State<AppState>,
    RequestTrace(trace): RequestTrace,
    Authenticated(claims): Authenticated,
    ApiJson(request): ApiJson<CreateAlert>,
) -> Result<Response, ApiError> {
    state.require_bus()?;
    let user_id = claims.uid;
    let default_zone = match &request.condition {
        ConditionInput::Scheduled {
            time_zone: None, ..
        } => user_time_zone(&state, &user_id).await,
        _ => TimeZoneName::default(),
    };
    let spec = build_spec(
        &state,
        request.exchange.as_deref(),
        request.condition,
        request.repeat,
        request.expires_at,
        default_zone,
    )
    .await?;
    let alert_id = match request.alert_id {
        Some(uuid) => AlertId::parse(&uuid.to_string())
            .map_err(|error| ApiError::validation(error.to_string()))?,
        None => AlertId::new(),
    };
    if request.alert_id.is_some()
        && let Some(existing) = aggregates::load_alert(&state.bus, &alert_id).await?
    {
        // A retried create: answered before the cap, which the first attempt already counted.
        return replay_create(&state, existing, &user_id, &spec).await;
    }
    match live_alert_count(&state, &user_id).await {
        Some(count) if count >= i64::from(state.settings.max_alerts_per_user) => {
            return Err(ApiError::new(
                ErrorCode::AlertLimitReached,
                format!("you already have {count} alerts, the most allowed; delete one first"),
            ));
        }
        Some(_) => {}
        None => {
            metrics::counter!("coinalarm_api_alert_cap_unchecked_total").increment(1);
            tracing::warn!(user_id = %user_id, "alert cap not checked: read models unavailable");
        }
    }
    let created = AlertCreated {
        alert_id: alert_id.clone(),
        user_id: user_id.clone(),
        home_site: state.site,
        spec: spec.clone(),
    };
    let envelope = Envelope::new(created, state.site);
    match state
        .bus
        .publish_expecting(&envelope, state.site, 0, Some(&trace))
        .await
    {
        Ok(_) => {}
        Err(coinalarm_runtime::bus::Error::WrongLastSequence { .. }) => {
            // The id exists: the same create retried is answered with the alert; anything else is a
            // conflict. The local aggregate may lag its origin by a moment.
            let subject = proto_events::subjects::subject::alert(None, alert_id.as_str());
            aggregates::wait_for_catch_up(&state.bus, Category::Alerts, &subject, 0).await;
            return match aggregates::load_alert(&state.bus, &alert_id).await? {
                Some(existing) => replay_create(&state, existing, &user_id, &spec).await,
                None => Err(ApiError::new(
                    ErrorCode::AlertExists,
                    "an alert with this id already exists",
                )),
            };
        }
        Err(error) => return Err(aggregates::publish_failed(&error)),
    }
    metrics::counter!("coinalarm_api_alert_commands_total", "command" => "create").increment(1);
    let consistent = consistency::wait_for_alert(&state, &alert_id, 1).await;
    let view = if consistent {
        read_alert(&state, &user_id, &alert_id).await.ok().flatten()
    } else {
        None
    };
    let view = match view {
        Some(view) => view,
        None => AlertView::of_state(&AlertState {
            alert_id,
            user_id,
            home_site: state.site,
            spec,
            status: AlertStatus::Active,
            version: 1,
            created_at: envelope.time,
            updated_at: envelope.time,
            positions: aggregates::Positions::default(),
        })?,
    };
    Ok(command_response(StatusCode::CREATED, view, consistent))
}

/// The answer to a create whose id exists: the alert if it is this create retried, else 409.
async fn replay_create(
    state: &AppState,
    existing: AlertState,
    user_id: &UserId,
    spec: &AlertSpec,
) -> Result<Response, ApiError> {
    let retried = existing.user_id == *user_id
        && existing.version == 1
        && same_definition(&existing.spec, spec);
    if !retried {
        return Err(ApiError::new(
            ErrorCode::AlertExists,
            "an alert with this id already exists",
        ));
    }
    let consistent = consistency::wait_for_alert(state, &existing.alert_id, 1).await;
    Ok(command_response(
        StatusCode::CREATED,
        AlertView::of_state(&existing)?,
        consistent,
    ))
}

/// Two specs define the same alert, ignoring what the API derived from the market at the time.
fn same_definition(stored: &AlertSpec, requested: &AlertSpec) -> bool {
    let strip = |spec: &AlertSpec| {
        let mut spec = spec.clone();
        if let AlertCondition::TargetPrice(condition) = &mut spec.condition {
            condition.side_at_creation = PriceSide::At;
            condition.reference_price = None;
        }
        spec
    };
    strip(stored) == strip(requested)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `active`, `paused` or `expired`; all live alerts when absent.
    pub status: Option<String>,
    /// 1 to 100, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertPage {
    pub alerts: Vec<AlertView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// List the user's alerts, newest first.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "alerts",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of alerts.", body = AlertPage),
        (status = 400, description = "`invalid_request`: bad query parameter or cursor.", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 503, description = "`read_model_unavailable`", body = ErrorBody),
    )
)]
pub async fn list_alerts(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<AlertPage>, ApiError> {
    let limit = crate::routes::page_limit(query.limit, 50, 100)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(status @ ("active" | "paused" | "expired")) => Some(status.to_owned()),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("status {other:?}: expected active, paused or expired"),
            ));
        }
    };
    let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let (cursor_time, cursor_id) = match &cursor {
        Some(cursor) => (Some(cursor.at), Some(cursor.id.clone())),
        None => (None, None),
    };
    let connection = state.read_connection().await?;
    let rows = state
        .bounded(statements::query(
            &connection,
            &format!(
                "SELECT {ALERT_COLUMNS} FROM alerts_current \
                 WHERE user_id = $1 AND status <> 'deleted' \
                   AND ($2::text IS NULL OR effective_status = $2) \
                   AND ($3::timestamptz IS NULL OR (created_at, alert_id) < ($3, $4)) \
                 ORDER BY created_at DESC, alert_id DESC LIMIT $5"
            ),
            &[
                &claims.uid.as_str(),
                &status,
                &cursor_time,
                &cursor_id,
                &(limit + 1),
            ],
        ))
        .await?;
    let mut alerts = rows
        .iter()
        .map(AlertView::of_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if alerts.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        alerts.pop();
        alerts.last().map(|last| {
            Cursor {
                at: last.created_at,
                id: last.alert_id.as_str().to_owned(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(AlertPage {
        alerts,
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AlertPath {
    /// The alert's id.
    pub alert_id: String,
}

pub fn parse_alert_id(text: &str) -> Result<AlertId, ApiError> {
    AlertId::parse(text).map_err(|_| ApiError::alert_not_found())
}

/// Get one alert.
#[utoipa::path(
    get,
    path = "/v1/alerts/{alert_id}",
    tag = "alerts",
    security(("bearer" = [])),
    params(AlertPath),
    responses(
        (status = 200, description = "The alert.", body = AlertView,
            headers(("ETag" = String, description = "The version"))),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`alert_not_found` (also for deleted alerts and other users' alerts)", body = ErrorBody),
        (status = 503, description = "`read_model_unavailable`", body = ErrorBody),
    )
)]
pub async fn get_alert(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    ApiPath(path): ApiPath<AlertPath>,
) -> Result<Response, ApiError> {
    let alert_id = parse_alert_id(&path.alert_id)?;
    let view = read_alert(&state, &claims.uid, &alert_id)
        .await?
        .ok_or_else(ApiError::alert_not_found)?;
    let etag = format!("\"{}\"", view.version);
    let mut response = Json(view).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// The next command of an alert given its current state; `None` when it would change nothing.
type MakeEvent<'a> = dyn Fn(&AlertState) -> Result<Option<Event>, ApiError> + Send + Sync + 'a;

/// Loads, checks ownership and version, builds the event, publishes it with optimistic concurrency,
/// and retries lost races while the client's version is still the current one.
async fn run_command(
    state: &AppState,
    user_id: &UserId,
    alert_id: &AlertId,
    expected_version: Option<u64>,
    command: &'static str,
    trace: &coinalarm_runtime::trace::TraceContext,
    make_event: &MakeEvent<'_>,
) -> Result<(AlertState, bool), ApiError> {
    state.require_bus()?;
    let subject = proto_events::subjects::subject::alert(None, alert_id.as_str());
    for _ in 0..aggregates::max_attempts() {
        let current = aggregates::load_alert(&state.bus, alert_id)
            .await?
            .filter(|alert| alert.user_id == *user_id && alert.status != AlertStatus::Deleted)
            .ok_or_else(ApiError::alert_not_found)?;
        if let Some(expected) = expected_version
            && expected != current.version
        {
            return Err(ApiError::version_conflict(current.version));
        }
        let Some(event) = make_event(&current)? else {
            return Ok((current, false));
        };
        let envelope = Envelope::new(event, state.site);
        match aggregates::publish_command(
            &state.bus,
            &envelope,
            current.home_site,
            current.positions,
            Some(trace),
        )
        .await?
        {
            Outcome::Stored { .. } => {
                metrics::counter!("coinalarm_api_alert_commands_total", "command" => command)
                    .increment(1);
                let mut next = current;
                apply(&mut next, &envelope);
                return Ok((next, true));
            }
            Outcome::LostRace => {
                metrics::counter!("coinalarm_api_lost_races_total", "command" => command)
                    .increment(1);
                aggregates::wait_for_catch_up(
                    &state.bus,
                    Category::Alerts,
                    &subject,
                    current.positions.aggregate,
                )
                .await;
            }
        }
    }
    // Still losing: someone else keeps changing it.
    let current = aggregates::load_alert(&state.bus, alert_id)
        .await?
        .ok_or_else(ApiError::alert_not_found)?;
    Err(ApiError::version_conflict(current.version))
}

/// The state after a command this API just stored.
fn apply(state: &mut AlertState, envelope: &Envelope<Event>) {
    match &envelope.data {
        Event::AlertUpdated(updated) => {
            state.spec = updated.spec.clone();
            state.version = updated.version;
        }
        Event::AlertPaused(paused) => {
            state.status = AlertStatus::Paused;
            state.version = paused.version;
        }
        Event::AlertResumed(resumed) => {
            state.status = AlertStatus::Active;
            state.version = resumed.version;
        }
        Event::AlertDeleted(deleted) => {
            state.status = AlertStatus::Deleted;
            state.version = deleted.version;
        }
        _ => {}
    }
    state.updated_at = envelope.time;
}

/// The command's answer, from the read model once it shows the new version.
async fn after_command(state: &AppState, next: AlertState) -> Result<Response, ApiError> {
    let consistent = consistency::wait_for_alert(state, &next.alert_id, next.version).await;
    let view = if consistent {
        read_alert(state, &next.user_id, &next.alert_id)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let view = match view {
        Some(view) => view,
        None => AlertView::of_state(&next)?,
    };
    Ok(command_response(StatusCode::OK, view, consistent))
}

/// Replace an alert's definition.
///
/// Send the version you built on as `If-Match` (the `ETag` of a read): if the alert changed since,
/// the answer is 409 `version_conflict` with `details.current_version`. Without `If-Match` the
/// change applies to the current version.
#[utoipa::path(
    put,
    path = "/v1/alerts/{alert_id}",
    tag = "alerts",
    security(("bearer" = [])),
    params(AlertPath, ("If-Match" = Option<String>, Header, description = "The version you built on, e.g. \"3\"")),
    request_body = AlertDefinition,
    responses(
        (status = 200, description = "Updated.", body = AlertView,
            headers(("ETag" = String), ("CoinAlarm-Consistent" = bool))),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`alert_not_found`", body = ErrorBody),
        (status = 409, description = "`version_conflict`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`validation_failed` or `unknown_market`", body = ErrorBody),
        (status = 503, description = "`bus_unavailable`: nothing was changed.", body = ErrorBody),
    )
)]
pub async fn update_alert(
    State(state): State<AppState>,
    RequestTrace(trace): RequestTrace,
    Authenticated(claims): Authenticated,
    ApiPath(path): ApiPath<AlertPath>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<AlertDefinition>,
) -> Result<Response, ApiError> {
    let alert_id = parse_alert_id(&path.alert_id)?;
    let expected = if_match(&headers)?;
    state.require_bus()?;
    let default_zone = match &request.condition {
        ConditionInput::Scheduled {
            time_zone: None, ..
        } => user_time_zone(&state, &claims.uid).await,
        _ => TimeZoneName::default(),
    };
    let spec = build_spec(
        &state,
        request.exchange.as_deref(),
        request.condition,
        request.repeat,
        request.expires_at,
        default_zone,
    )
    .await?;
    let user_id = claims.uid.clone();
    let make = |current: &AlertState| {
        Ok(Some(Event::AlertUpdated(AlertUpdated {
            alert_id: current.alert_id.clone(),
            user_id: user_id.clone(),
            version: current.version + 1,
            spec: spec.clone(),
        })))
    };
    let (next, _) = run_command(
        &state,
        &claims.uid,
        &alert_id,
        expected,
        "update",
        &trace,
        &make,
    )
    .await?;
    after_command(&state, next).await
}

/// Pause an alert: it does not fire until resumed. Pausing a paused alert changes nothing.
#[utoipa::path(
    post,
    path = "/v1/alerts/{alert_id}/pause",
    tag = "alerts",
    security(("bearer" = [])),
    params(AlertPath, ("If-Match" = Option<String>, Header, description = "The version you built on")),
    responses(
        (status = 200, description = "Paused.", body = AlertView,
            headers(("ETag" = String), ("CoinAlarm-Consistent" = bool))),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`alert_not_found`", body = ErrorBody),
        (status = 409, description = "`version_conflict`", body = ErrorBody),
        (status = 503, description = "`bus_unavailable`", body = ErrorBody),
    )
)]
pub async fn pause_alert(
    State(state): State<AppState>,
    RequestTrace(trace): RequestTrace,
    Authenticated(claims): Authenticated,
    ApiPath(path): ApiPath<AlertPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let change = StatusChange {
        command: "pause",
        applies_to: AlertStatus::Active,
        event: |alert_id, user_id, version| {
            Event::AlertPaused(AlertPaused {
                alert_id,
                user_id,
                version,
            })
        },
    };
    change_status(&state, &trace, &claims.uid, &path, &headers, change).await
}

/// Resume a paused alert; price alerts re-arm from the current side of the price. Resuming an
/// active alert changes nothing.
#[utoipa::path(
    post,
    path = "/v1/alerts/{alert_id}/resume",
    tag = "alerts",
    security(("bearer" = [])),
    params(AlertPath, ("If-Match" = Option<String>, Header, description = "The version you built on")),
    responses(
        (status = 200, description = "Resumed.", body = AlertView,
            headers(("ETag" = String), ("CoinAlarm-Consistent" = bool))),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`alert_not_found`", body = ErrorBody),
        (status = 409, description = "`version_conflict`", body = ErrorBody),
        (status = 503, description = "`bus_unavailable`", body = ErrorBody),
    )
)]
pub async fn resume_alert(
    State(state): State<AppState>,
    RequestTrace(trace): RequestTrace,
    Authenticated(claims): Authenticated,
    ApiPath(path): ApiPath<AlertPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let change = StatusChange {
        command: "resume",
        applies_to: AlertStatus::Paused,
        event: |alert_id, user_id, version| {
            Event::AlertResumed(AlertResumed {
                alert_id,
                user_id,
                version,
            })
        },
    };
    change_status(&state, &trace, &claims.uid, &path, &headers, change).await
}

/// Pause and resume: an event when the alert is in `applies_to`, nothing (the same answer) otherwise.
struct StatusChange {
    command: &'static str,
    applies_to: AlertStatus,
    event: fn(AlertId, UserId, u64) -> Event,
}

async fn change_status(
    state: &AppState,
    trace: &coinalarm_runtime::trace::TraceContext,
    user: &UserId,
    path: &AlertPath,
    headers: &HeaderMap,
    change: StatusChange,
) -> Result<Response, ApiError> {
    let alert_id = parse_alert_id(&path.alert_id)?;
    let expected = if_match(headers)?;
    let make = |current: &AlertState| {
        Ok((current.status == change.applies_to).then(|| {
            (change.event)(
                current.alert_id.clone(),
                current.user_id.clone(),
                current.version + 1,
            )
        }))
    };
    let (next, _) = run_command(
        state,
        user,
        &alert_id,
        expected,
        change.command,
        trace,
        &make,
    )
    .await?;
    after_command(state, next).await
}

/// Delete an alert. Final: it never fires again and is no longer listed; its history stays in the
/// notification history.
#[utoipa::path(
    delete,
    path = "/v1/alerts/{alert_id}",
    tag = "alerts",
    security(("bearer" = [])),
    params(AlertPath, ("If-Match" = Option<String>, Header, description = "The version you built on")),
    responses(
        (status = 204, description = "Deleted.", headers(("CoinAlarm-Consistent" = bool))),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`alert_not_found`", body = ErrorBody),
        (status = 409, description = "`version_conflict`", body = ErrorBody),
        (status = 503, description = "`bus_unavailable`", body = ErrorBody),
    )
)]
pub async fn delete_alert(
    State(state): State<AppState>,
    RequestTrace(trace): RequestTrace,
    Authenticated(claims): Authenticated,
    ApiPath(path): ApiPath<AlertPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let alert_id = parse_alert_id(&path.alert_id)?;
    let expected = if_match(&headers)?;
    let make = |current: &AlertState| {
        Ok(Some(Event::AlertDeleted(AlertDeleted {
            alert_id: current.alert_id.clone(),
            user_id: current.user_id.clone(),
            version: current.version + 1,
        })))
    };
    let (next, _) = run_command(
        &state,
        &claims.uid,
        &alert_id,
        expected,
        "delete",
        &trace,
        &make,
    )
    .await?;
    let consistent = consistency::wait_for_alert(&state, &alert_id, next.version).await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        consistency::HEADER,
        HeaderValue::from_static(if consistent { "true" } else { "false" }),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_etag_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(if_match(&headers).expect("absent"), None);
        for value in ["\"3\"", "3", "W/\"3\""] {
            headers.insert(header::IF_MATCH, HeaderValue::from_static(value));
            assert_eq!(if_match(&headers).expect(value), Some(3));
        }
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"x\""));
        assert!(if_match(&headers).is_err());
    }

    #[test]
    fn stored_conditions_map_onto_the_documented_view() {
        for condition in [
            serde_json::json!({"kind": "target_price", "market": "KRW-BTC", "target": "96000000",
                               "direction": "up", "side_at_creation": "below", "reference_price": "95000000"}),
            serde_json::json!({"kind": "change_rate", "market": "KRW-ETH", "basis": "5m",
                               "direction": "down", "threshold": "3.5"}),
            // The view always lists weekdays and dates, empty or not.
            serde_json::json!({"kind": "scheduled", "markets": ["KRW-BTC"], "weekdays": ["mon"],
                               "dates": [], "time_of_day": "09:00:00", "time_zone": "Asia/Seoul"}),
        ] {
            let parsed: AlertCondition =
                serde_json::from_value(condition.clone()).expect("contract");
            let view = ConditionView::of(&parsed).expect("view");
            assert_eq!(serde_json::to_value(view).expect("json"), condition);
        }
    }
}
