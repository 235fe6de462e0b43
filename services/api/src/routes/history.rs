//! History: per alert, each firing with its price and what happened to its SMS; per user, the
//! notification history (every alert SMS, and firings deliberately not sent), newest first, paginated.

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::routes::alerts::{AlertPath, parse_alert_id};
use crate::routes::{Cursor, decimal_text, page_limit};
use crate::state::AppState;
use crate::statements;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(alert_history))
        .routes(routes!(notifications))
}

/// What happened to an SMS, simplified for people: `queued` (waiting or being retried), `sent`
/// (accepted by the provider), `delivered` (the handset got it), `failed` (given up or undeliverable:
/// see `error_code`), `skipped` (deliberately not sent: see `skip_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmsStatus {
    Queued,
    Sent,
    Delivered,
    Failed,
    Skipped,
}

impl SmsStatus {
    /// From the pipeline's dispatch status (`dispatches.status`).
    fn of_pipeline(status: &str) -> SmsStatus {
        match status {
            "sent" => SmsStatus::Sent,
            "delivered" => SmsStatus::Delivered,
            "undelivered" | "dead_lettered" => SmsStatus::Failed,
            "skipped" => SmsStatus::Skipped,
            // requested, claimed, and a failed attempt that will be retried
            _ => SmsStatus::Queued,
        }
    }
}

/// The SMS of a firing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SmsOutcome {
    pub status: SmsStatus,
    /// The pipeline's own status word (`requested`, `claimed`, `sent`, `failed`, `delivered`,
    /// `undelivered`, `dead_lettered`, `skipped`).
    pub pipeline_status: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub status_at: Option<Timestamp>,
    pub dispatch_id: Option<String>,
    /// Provider or transport error code of the last failure.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Why no SMS was sent (`quiet_hours`, `user_cap`, `stale`, `alert_paused`, ...).
    pub skip_reason: Option<String>,
    /// Times the provider accepted it (more than 1 means it went out twice).
    pub sent_count: i32,
}

/// A market's price at firing time.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FiredPrice {
    pub market: String,
    pub price: String,
    /// The change that met the threshold (change-rate alerts), in percent.
    pub change_percent: Option<String>,
}

/// One firing of an alert.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Firing {
    pub trigger_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub fired_at: Timestamp,
    /// The alert version whose definition fired.
    pub alert_version: i64,
    /// Every market's price (one for price and change-rate alerts).
    pub prices: Vec<FiredPrice>,
    /// Absent while the notifier has not decided yet.
    pub sms: Option<SmsOutcome>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FiringPage {
    pub firings: Vec<Firing>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn text(value: Option<Decimal>) -> Option<String> {
    value.map(decimal_text)
}

/// When an alert fired, at what price, and what happened to the SMS; newest first.
#[utoipa::path(
    get,
    path = "/v1/alerts/{alert_id}/history",
    tag = "history",
    security(("bearer" = [])),
    params(AlertPath, PageQuery),
    responses(
        (status = 200, description = "A page of firings.", body = FiringPage),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`alert_not_found`", body = ErrorBody),
        (status = 503, description = "`read_model_unavailable`", body = ErrorBody),
    )
)]
pub async fn alert_history(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    ApiPath(path): ApiPath<AlertPath>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<FiringPage>, ApiError> {
    let alert_id = parse_alert_id(&path.alert_id)?;
    let limit = page_limit(query.limit, 20, 100)?;
    let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let (cursor_at, cursor_id) = match cursor {
        Some(cursor) => (Some(cursor.at), Some(cursor.id)),
        None => (None, None),
    };
    let connection = state.read_connection().await?;
    // Deleted alerts keep their history: ownership is checked on the alert row of any status.
    let owned = state
        .bounded(statements::query_opt(
            &connection,
            "SELECT 1 FROM alerts WHERE alert_id = $1 AND user_id = $2",
            &[&alert_id.as_str(), &claims.uid.as_str()],
        ))
        .await?;
    if owned.is_none() {
        return Err(ApiError::alert_not_found());
    }
    let rows = state
        .bounded(statements::query(&connection,
            "SELECT t.trigger_id, t.fired_at, t.alert_version, t.market, t.price, t.change_percent, \
                    (SELECT COALESCE(json_agg(json_build_object( \
                                'market', p.market, 'price', p.price::text, \
                                'change_percent', p.change_percent::text) ORDER BY p.position), '[]'::json) \
                     FROM trigger_prices p WHERE p.trigger_id = t.trigger_id) AS prices, \
                    d.dispatch_id, d.status, d.status_at, d.last_error_code, d.last_error_message, \
                    d.sent_count, s.reason_code \
             FROM triggers t \
             LEFT JOIN dispatch_triggers dt ON dt.trigger_id = t.trigger_id \
             LEFT JOIN dispatches d ON d.dispatch_id = dt.dispatch_id \
             LEFT JOIN dispatch_skips s ON s.trigger_id = t.trigger_id \
             WHERE t.alert_id = $1 AND t.user_id = $2 \
               AND ($3::timestamptz IS NULL OR (t.fired_at, t.trigger_id) < ($3, $4)) \
             ORDER BY t.fired_at DESC, t.trigger_id DESC LIMIT $5",
            &[
                &alert_id.as_str(),
                &claims.uid.as_str(),
                &cursor_at,
                &cursor_id,
                &(limit + 1),
            ],
        ))
        .await?;
    let mut firings = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut prices: Vec<FiredPrice> =
            serde_json::from_value(row.get::<_, serde_json::Value>("prices")).unwrap_or_default();
        for price in &mut prices {
            price.price = normalize(&price.price);
            price.change_percent = price.change_percent.as_deref().map(normalize);
        }
        if prices.is_empty()
            && let (Some(market), Some(price)) = (
                row.get::<_, Option<String>>("market"),
                row.get::<_, Option<Decimal>>("price"),
            )
        {
            prices.push(FiredPrice {
                market,
                price: decimal_text(price),
                change_percent: text(row.get("change_percent")),
            });
        }
        let dispatch_status: Option<String> = row.get("status");
        let skip_reason: Option<String> = row.get("reason_code");
        let sms = match (dispatch_status, skip_reason) {
            (Some(status), skip_reason) => Some(SmsOutcome {
                status: SmsStatus::of_pipeline(&status),
                pipeline_status: status,
                status_at: row.get("status_at"),
                dispatch_id: row.get("dispatch_id"),
                error_code: row.get("last_error_code"),
                error_message: row.get("last_error_message"),
                skip_reason,
                sent_count: row.get::<_, Option<i32>>("sent_count").unwrap_or(0),
            }),
            (None, Some(reason)) => Some(SmsOutcome {
                status: SmsStatus::Skipped,
                pipeline_status: "skipped".to_owned(),
                status_at: None,
                dispatch_id: None,
                error_code: None,
                error_message: None,
                skip_reason: Some(reason),
                sent_count: 0,
            }),
            (None, None) => None,
        };
        firings.push(Firing {
            trigger_id: row.get("trigger_id"),
            fired_at: row.get("fired_at"),
            alert_version: row.get("alert_version"),
            prices,
            sms,
        });
    }
    let next_cursor = page_end(&mut firings, limit, |firing| Cursor {
        at: firing.fired_at,
        id: firing.trigger_id.clone(),
    });
    Ok(Json(FiringPage {
        firings,
        next_cursor,
    }))
}

/// Decimal text from Postgres (`"96500000.00"`) in the API's plain form.
fn normalize(text: &str) -> String {
    text.parse::<Decimal>()
        .map(decimal_text)
        .unwrap_or_else(|_| text.to_owned())
}

/// Drops the look-ahead item and returns the cursor of the page's last item, if there is more.
fn page_end<T>(items: &mut Vec<T>, limit: i64, cursor: impl Fn(&T) -> Cursor) -> Option<String> {
    if items.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        items.pop();
        items.last().map(|last| cursor(last).encode())
    } else {
        None
    }
}

/// One entry of the notification history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Notification {
    /// `sms` (an SMS was requested) or `skipped` (a firing deliberately not sent).
    pub entry: String,
    /// Dispatch id (`sms`) or trigger id (`skipped`).
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub status: SmsStatus,
    pub pipeline_status: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub status_at: Option<Timestamp>,
    /// The SMS text.
    pub text: Option<String>,
    /// The destination, masked (`+8210****5678`).
    pub phone_masked: Option<String>,
    pub error_code: Option<String>,
    pub skip_reason: Option<String>,
    pub sent_count: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationPage {
    pub notifications: Vec<Notification>,
    pub next_cursor: Option<String>,
}

/// The user's notification history, newest first.
#[utoipa::path(
    get,
    path = "/v1/notifications",
    tag = "history",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of notifications.", body = NotificationPage),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 503, description = "`read_model_unavailable`", body = ErrorBody),
    )
)]
pub async fn notifications(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<NotificationPage>, ApiError> {
    let limit = page_limit(query.limit, 20, 100)?;
    let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let (cursor_at, cursor_id) = match cursor {
        Some(cursor) => (Some(cursor.at), Some(cursor.id)),
        None => (None, None),
    };
    let connection = state.read_connection().await?;
    let rows = state
        .bounded(statements::query(
            &connection,
            "SELECT entry, id, at, status, status_at, body_text, phone_masked, error_code, \
                    skip_reason, sent_count \
             FROM notification_history \
             WHERE user_id = $1 AND at IS NOT NULL \
               AND ($2::timestamptz IS NULL OR (at, id) < ($2, $3)) \
             ORDER BY at DESC, id DESC LIMIT $4",
            &[&claims.uid.as_str(), &cursor_at, &cursor_id, &(limit + 1)],
        ))
        .await?;
    let mut notifications: Vec<Notification> = rows
        .iter()
        .map(|row| {
            let status: String = row.get("status");
            Notification {
                entry: row.get("entry"),
                id: row.get("id"),
                at: row.get("at"),
                status: SmsStatus::of_pipeline(&status),
                pipeline_status: status,
                status_at: row.get("status_at"),
                text: row.get("body_text"),
                phone_masked: row.get("phone_masked"),
                error_code: row.get("error_code"),
                skip_reason: row.get("skip_reason"),
                sent_count: row.get("sent_count"),
            }
        })
        .collect();
    let next_cursor = page_end(&mut notifications, limit, |entry| Cursor {
        at: entry.at,
        id: entry.id.clone(),
    });
    Ok(Json(NotificationPage {
        notifications,
        next_cursor,
    }))
}
