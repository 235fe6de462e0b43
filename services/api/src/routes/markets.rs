//! Market data for the client: the market list with Korean and English names and latest prices, one
//! market, one-minute candles for a chart, and the top risers and fallers of the day — all from the
//! `markets` and `candles_1m` read models projected from the ticks.

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use proto_events::domain::MarketCode;
use proto_events::markets::MarketInfo;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody, ErrorCode};
use crate::routes::{decimal_text, page_limit};
use crate::state::AppState;
use crate::statements;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_markets))
        .routes(routes!(movers))
        .routes(routes!(get_market))
        .routes(routes!(candles))
}

/// The latest trade of a market.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Quote {
    /// Last trade price, decimal string.
    #[schema(example = "95500000")]
    pub price: String,
    /// Change since the exchange's daily reference, in percent (`"1.23"` = +1.23 %).
    #[schema(example = "1.23")]
    pub change_percent: String,
    /// Change since the daily reference, in the quote currency.
    pub change_price: String,
    /// 24 h traded volume, when the exchange reports it.
    pub volume_24h: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub traded_at: Timestamp,
}

/// A market with its names and, when one was seen, its latest trade.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MarketView {
    #[schema(example = "KRW-BTC")]
    pub market: String,
    #[schema(example = "비트코인")]
    pub korean_name: String,
    #[schema(example = "Bitcoin")]
    pub english_name: String,
    pub quote: Option<Quote>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarketList {
    pub markets: Vec<MarketView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only markets quoted in this currency (`KRW`, `BTC`, `USDT`).
    pub quote: Option<String>,
}

fn quote_of(row: &tokio_postgres::Row) -> Quote {
    let rate: Decimal = row.get("change_rate");
    Quote {
        price: decimal_text(row.get("trade_price")),
        change_percent: decimal_text(rate * Decimal::ONE_HUNDRED),
        change_price: decimal_text(row.get("change_price")),
        volume_24h: row
            .get::<_, Option<Decimal>>("acc_trade_volume_24h")
            .map(decimal_text),
        traded_at: row.get("trade_at"),
    }
}

fn view(info: &MarketInfo, quote: Option<Quote>) -> MarketView {
    MarketView {
        market: info.code.as_str().to_owned(),
        korean_name: info.korean_name.clone(),
        english_name: info.english_name.clone(),
        quote,
    }
}

const QUOTE_COLUMNS: &str =
    "market, trade_price, change_rate, change_price, acc_trade_volume_24h, trade_at";

/// List markets with their names and latest prices.
#[utoipa::path(
    get,
    path = "/v1/markets",
    tag = "markets",
    params(ListQuery),
    responses(
        (status = 200, description = "Every market of the exchange.", body = MarketList),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 503, description = "`read_model_unavailable`", body = ErrorBody),
    )
)]
pub async fn list_markets(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<MarketList>, ApiError> {
    let connection = state.read_connection().await?;
    let rows = state
        .bounded(statements::query(
            &connection,
            &format!("SELECT {QUOTE_COLUMNS} FROM markets WHERE exchange = $1"),
            &[&state.exchange.as_str()],
        ))
        .await?;
    let mut quotes: std::collections::HashMap<String, Quote> = rows
        .iter()
        .map(|row| (row.get::<_, String>("market"), quote_of(row)))
        .collect();
    let quote_filter = query.quote.map(|quote| quote.to_ascii_uppercase());
    let markets = state
        .catalogue
        .iter()
        .filter(|info| {
            quote_filter
                .as_deref()
                .is_none_or(|quote| info.code.quote() == quote)
        })
        .map(|info| view(info, quotes.remove(info.code.as_str())))
        .collect();
    Ok(Json(MarketList { markets }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MarketPath {
    /// `QUOTE-BASE`, e.g. `KRW-BTC`.
    pub market: String,
}

fn known_market<'a>(state: &'a AppState, text: &str) -> Result<&'a MarketInfo, ApiError> {
    MarketCode::parse(text)
        .ok()
        .and_then(|code| state.catalogue.get(&code))
        .ok_or_else(|| ApiError::new(ErrorCode::MarketNotFound, format!("no market {text:?}")))
}

/// One market with its latest price.
#[utoipa::path(
    get,
    path = "/v1/markets/{market}",
    tag = "markets",
    params(MarketPath),
    responses(
        (status = 200, description = "The market.", body = MarketView),
        (status = 404, description = "`market_not_found`", body = ErrorBody),
        (status = 503, description = "`read_model_unavailable`", body = ErrorBody),
    )
)]
pub async fn get_market(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<MarketPath>,
) -> Result<Json<MarketView>, ApiError> {
    let info = known_market(&state, &path.market)?;
    let connection = state.read_connection().await?;
    let row = state
        .bounded(statements::query_opt(
            &connection,
            &format!("SELECT {QUOTE_COLUMNS} FROM markets WHERE exchange = $1 AND market = $2"),
            &[&state.exchange.as_str(), &info.code.as_str()],
        ))
        .await?;
    Ok(Json(view(info, row.as_ref().map(quote_of))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CandleQuery {
    /// Start (inclusive), RFC 3339; default: `limit` minutes before `to`.
    pub from: Option<String>,
    /// End (exclusive), RFC 3339; default: now.
    pub to: Option<String>,
    /// 1 to 1440 candles, default 120.
    pub limit: Option<i64>,
}

/// One minute of trades.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Candle {
    /// Start of the minute, UTC.
    #[schema(value_type = String, format = DateTime)]
    pub minute: Timestamp,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: String,
    pub trades: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CandleSeries {
    pub market: String,
    /// Oldest first; minutes without trades are absent.
    pub candles: Vec<Candle>,
}

fn parse_time(name: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|text| {
        text.parse::<Timestamp>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{name} must be an RFC 3339 time such as 2026-11-02T09:00:00Z"),
            )
        })
    })
    .transpose()
}

/// One-minute candles for a chart.
#[utoipa::path(
    get,
    path = "/v1/markets/{market}/candles",
    tag = "markets",
    params(MarketPath, CandleQuery),
    responses(
        (status = 200, description = "Candles, oldest first.", body = CandleSeries),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 404, description = "`market_not_found`", body = ErrorBody),
        (status = 503, description = "`read_model_unavailable`", body = ErrorBody),
    )
)]
pub async fn candles(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<MarketPath>,
    ApiQuery(query): ApiQuery<CandleQuery>,
) -> Result<Json<CandleSeries>, ApiError> {
    let info = known_market(&state, &path.market)?;
    let limit = page_limit(query.limit, 120, 1_440)?;
    let to = parse_time("to", query.to.as_deref())?.unwrap_or_else(Timestamp::now);
    let from = match parse_time("from", query.from.as_deref())? {
        Some(from) => from,
        None => to - jiff::SignedDuration::from_mins(limit),
    };
    if from >= to {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "from must be before to",
        ));
    }
    let connection = state.read_connection().await?;
    // The newest `limit` minutes of the range, returned oldest first.
    let rows = state
        .bounded(statements::query(
            &connection,
            "SELECT minute, open, high, low, close, volume, ticks FROM ( \
                 SELECT * FROM candles_1m \
                 WHERE exchange = $1 AND market = $2 AND minute >= $3 AND minute < $4 \
                 ORDER BY minute DESC LIMIT $5) newest \
             ORDER BY minute",
            &[
                &state.exchange.as_str(),
                &info.code.as_str(),
                &from,
                &to,
                &limit,
            ],
        ))
        .await?;
    let candles = rows
        .iter()
        .map(|row| Candle {
            minute: row.get("minute"),
            open: decimal_text(row.get("open")),
            high: decimal_text(row.get("high")),
            low: decimal_text(row.get("low")),
            close: decimal_text(row.get("close")),
            volume: decimal_text(row.get("volume")),
            trades: row.get("ticks"),
        })
        .collect();
    Ok(Json(CandleSeries {
        market: info.code.as_str().to_owned(),
        candles,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MoversQuery {
    /// Markets per list, 1 to 50, default 10.
    pub limit: Option<i64>,
    /// Quote currency, default `KRW`.
    pub quote: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Movers {
    /// Largest daily rise first.
    pub risers: Vec<MarketView>,
    /// Largest daily fall first.
    pub fallers: Vec<MarketView>,
}

/// Top risers and fallers since the exchange's daily reference.
#[utoipa::path(
    get,
    path = "/v1/markets/movers",
    tag = "markets",
    params(MoversQuery),
    responses(
        (status = 200, description = "The movers.", body = Movers),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 503, description = "`read_model_unavailable`", body = ErrorBody),
    )
)]
pub async fn movers(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<MoversQuery>,
) -> Result<Json<Movers>, ApiError> {
    let limit = page_limit(query.limit, 10, 50)?;
    let quote = query
        .quote
        .unwrap_or_else(|| "KRW".to_owned())
        .to_ascii_uppercase();
    let pattern = format!("{quote}-%");
    let connection = state.read_connection().await?;
    let mut lists = Vec::with_capacity(2);
    for order in ["DESC", "ASC"] {
        let rows = state
            .bounded(statements::query(
                &connection,
                &format!(
                    "SELECT {QUOTE_COLUMNS} FROM markets WHERE exchange = $1 AND market LIKE $2 \
                     ORDER BY change_rate {order}, market LIMIT $3"
                ),
                &[&state.exchange.as_str(), &pattern, &limit],
            ))
            .await?;
        let views: Vec<MarketView> = rows
            .iter()
            .filter_map(|row| {
                let code = MarketCode::parse(row.get("market")).ok()?;
                let info = state.catalogue.get(&code)?;
                Some(view(info, Some(quote_of(row))))
            })
            .collect();
        lists.push(views);
    }
    let fallers = lists.pop().unwrap_or_default();
    let risers = lists.pop().unwrap_or_default();
    Ok(Json(Movers { risers, fallers }))
}
