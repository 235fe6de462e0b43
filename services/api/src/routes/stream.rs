//! The live stream (Server-Sent Events): `price` events for the chosen markets, and — for a signed-in
//! client — `firing` events when one of the user's own alerts fires. Browsers' `EventSource` cannot
//! send headers, so the token may come as `?access_token=` (keep such URLs out of access logs).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use proto_events::domain::MarketCode;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::MaybeAuthenticated;
use crate::error::{ApiError, ApiQuery, ErrorBody, ErrorCode};
use crate::routes::decimal_text;
use crate::state::AppState;

/// The route, exempt from the request timeout.
pub const PATH: &str = "/v1/stream";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live_stream))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Comma-separated markets (`KRW-BTC,KRW-ETH`), at most 50; none: no `price` events.
    pub markets: Option<String>,
    /// The session token, for clients that cannot send `Authorization` (EventSource).
    pub access_token: Option<String>,
}

/// `event: price`
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LivePrice {
    pub market: String,
    pub price: String,
    /// Change since the exchange's daily reference, in percent.
    pub change_percent: String,
    #[schema(value_type = String, format = DateTime)]
    pub traded_at: jiff::Timestamp,
}

/// `event: firing` (the signed-in user's alerts only)
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LiveFiring {
    pub alert_id: String,
    pub trigger_id: String,
    /// `target_price`, `change_rate` or `scheduled`
    pub kind: String,
    pub prices: Vec<crate::routes::history::FiredPrice>,
    #[schema(value_type = String, format = DateTime)]
    pub fired_at: jiff::Timestamp,
}

const MAX_MARKETS: usize = 50;

/// Live prices and the user's own alert firings, as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/v1/stream",
    tag = "markets",
    params(StreamQuery),
    responses(
        (status = 200, description = "`text/event-stream` of `price` events (`LivePrice`) and, when signed in, `firing` events (`LiveFiring`).",
            content_type = "text/event-stream", body = LivePrice),
        (status = 400, description = "`invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`: a token was given and is invalid.", body = ErrorBody),
        (status = 422, description = "`unknown_market`", body = ErrorBody),
    )
)]
pub async fn live_stream(
    State(state): State<AppState>,
    MaybeAuthenticated(claims): MaybeAuthenticated,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let mut markets = BTreeSet::new();
    for text in query
        .markets
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|text| !text.is_empty())
    {
        let market = MarketCode::parse(text)
            .ok()
            .filter(|market| state.catalogue.contains(market))
            .ok_or_else(|| {
                ApiError::new(ErrorCode::UnknownMarket, format!("no market {text:?}"))
            })?;
        markets.insert(market);
    }
    if markets.len() > MAX_MARKETS {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("at most {MAX_MARKETS} markets per stream"),
        ));
    }
    let user_id = claims.map(|claims| claims.uid);
    let (mut ticks, mut triggers) = state.live.subscribe();
    metrics::gauge!("coinalarm_api_stream_clients").increment(1.0);
    let shutdown = state.shutdown.clone();
    let stream = async_stream(move |sender| async move {
        let _guard = ClientGuard;
        loop {
            let event = tokio::select! {
                () = sender.closed() => return,
                () = shutdown.wait() => return,
                tick = ticks.recv() => match tick {
                    Ok(tick) if markets.contains(&tick.market) => {
                        let live = LivePrice {
                            market: tick.market.as_str().to_owned(),
                            price: decimal_text(tick.trade_price.value()),
                            change_percent: decimal_text(tick.signed_change_rate.to_percent().value()),
                            traded_at: tick.trade_timestamp,
                        };
                        SseEvent::default().event("price").json_data(live).ok()
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => return,
                },
                fired = triggers.recv() => match fired {
                    Ok(fired) if user_id.as_ref() == Some(&fired.user_id) => {
                        let live = LiveFiring {
                            alert_id: fired.alert_id.as_str().to_owned(),
                            trigger_id: fired.trigger_id.as_str().to_owned(),
                            kind: fired.kind.as_str().to_owned(),
                            prices: fired.observed.iter().map(|observed| crate::routes::history::FiredPrice {
                                market: observed.market.as_str().to_owned(),
                                price: decimal_text(observed.price.value()),
                                change_percent: observed.change.map(|change| decimal_text(change.value())),
                            }).collect(),
                            fired_at: fired.evaluated_at,
                        };
                        SseEvent::default().event("firing").json_data(live).ok()
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => return,
                },
            };
            if let Some(event) = event
                && sender.send(Ok(event)).await.is_err()
            {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Counts a connected client down when its stream is dropped.
struct ClientGuard;

impl Drop for ClientGuard {
    fn drop(&mut self) {
        metrics::gauge!("coinalarm_api_stream_clients").decrement(1.0);
    }
}

/// A stream fed by a task through a small channel; the task ends when the client goes away.
fn async_stream<F, Fut>(produce: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<SseEvent, Infallible>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(sender));
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}
