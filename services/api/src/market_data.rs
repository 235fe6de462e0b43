//! The latest price of a market for commands: from the local `TICKS` aggregate (the last tick stored
//! for the market's subject), so a new target-price alert records the side the price is on even when
//! the read models are down; the `markets` read model when the bus cannot say.

use proto_events::Event;
use proto_events::domain::{MarketCode, Price};
use proto_events::subjects::subject;
use proto_events::{Category, decode};
use rust_decimal::Decimal;

use crate::state::AppState;
use crate::statements;

pub async fn latest_price(state: &AppState, market: &MarketCode) -> Option<Price> {
    if let Some(price) = from_ticks(state, market).await {
        return Some(price);
    }
    from_read_model(state, market).await
}

async fn from_ticks(state: &AppState, market: &MarketCode) -> Option<Price> {
    let stream = state
        .bus
        .jetstream()
        .get_stream_no_info(Category::Ticks.aggregate_stream())
        .await
        .ok()?;
    let message = stream
        .direct_get_last_for_subject(subject::tick(
            None,
            state.exchange.as_str(),
            market.as_str(),
        ))
        .await
        .ok()?;
    match decode(&message.payload).ok()?.data {
        Event::TickObserved(tick) => Some(tick.trade_price),
        _ => None,
    }
}

async fn from_read_model(state: &AppState, market: &MarketCode) -> Option<Price> {
    let connection = state.read_connection().await.ok()?;
    let row = state
        .bounded(statements::query_opt(
            &connection,
            "SELECT trade_price FROM markets WHERE exchange = $1 AND market = $2",
            &[&state.exchange.as_str(), &market.as_str()],
        ))
        .await
        .ok()??;
    Price::new(row.get::<_, Decimal>(0)).ok()
}
