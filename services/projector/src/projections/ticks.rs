//! TICKS → `markets` (latest trade per market) and `candles_1m`.
//!
//! Ticks are the high-volume stream, so a batch is first folded in memory — one latest trade per
//! market, one partial candle per market and minute — and then written with two multi-row upserts
//! (UNNEST arrays), whatever the batch size. The upserts merge by trade time, never by arrival: open and
//! close are the earliest and latest trades by (trade time, exchange sequence), so ticks projected
//! out of order, or a batch split differently, give the same candles.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use jiff::Timestamp;
use proto_events::Event;
use proto_events::domain::MarketCode;
use proto_events::events::TickObserved;
use proto_events::markets::Catalogue;
use rust_decimal::Decimal;

use super::Applied;
use crate::event::StreamEvent;
use crate::target::to_bigint;

const UPSERT_MARKETS: &str = "INSERT INTO markets AS m \
    (exchange, market, korean_name, english_name, trade_price, change_rate, change_price, \
     acc_trade_volume_24h, trade_at, sequential_id, tick_id, stream_sequence) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], \
        $6::numeric[], $7::numeric[], $8::numeric[], $9::timestamptz[], $10::bigint[], $11::text[], \
        $12::bigint[]) \
    ON CONFLICT (exchange, market) DO UPDATE SET \
        korean_name = COALESCE(EXCLUDED.korean_name, m.korean_name), \
        english_name = COALESCE(EXCLUDED.english_name, m.english_name), \
        trade_price = EXCLUDED.trade_price, change_rate = EXCLUDED.change_rate, \
        change_price = EXCLUDED.change_price, acc_trade_volume_24h = EXCLUDED.acc_trade_volume_24h, \
        trade_at = EXCLUDED.trade_at, sequential_id = EXCLUDED.sequential_id, \
        tick_id = EXCLUDED.tick_id, stream_sequence = EXCLUDED.stream_sequence, updated_at = now() \
    WHERE (EXCLUDED.trade_at, EXCLUDED.sequential_id) > (m.trade_at, m.sequential_id)";

const UPSERT_CANDLES: &str = "INSERT INTO candles_1m AS c \
    (exchange, market, minute, open, high, low, close, volume, ticks, open_at, open_sequential_id, \
     close_at, close_sequential_id) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::numeric[], $5::numeric[], \
        $6::numeric[], $7::numeric[], $8::numeric[], $9::bigint[], $10::timestamptz[], $11::bigint[], \
        $12::timestamptz[], $13::bigint[]) \
    ON CONFLICT (exchange, market, minute) DO UPDATE SET \
        open = CASE WHEN (EXCLUDED.open_at, EXCLUDED.open_sequential_id) < (c.open_at, c.open_sequential_id) \
                    THEN EXCLUDED.open ELSE c.open END, \
        open_at = CASE WHEN (EXCLUDED.open_at, EXCLUDED.open_sequential_id) < (c.open_at, c.open_sequential_id) \
                       THEN EXCLUDED.open_at ELSE c.open_at END, \
        open_sequential_id = CASE WHEN (EXCLUDED.open_at, EXCLUDED.open_sequential_id) \
                                       < (c.open_at, c.open_sequential_id) \
                                  THEN EXCLUDED.open_sequential_id ELSE c.open_sequential_id END, \
        close = CASE WHEN (EXCLUDED.close_at, EXCLUDED.close_sequential_id) > (c.close_at, c.close_sequential_id) \
                     THEN EXCLUDED.close ELSE c.close END, \
        close_at = CASE WHEN (EXCLUDED.close_at, EXCLUDED.close_sequential_id) > (c.close_at, c.close_sequential_id) \
                        THEN EXCLUDED.close_at ELSE c.close_at END, \
        close_sequential_id = CASE WHEN (EXCLUDED.close_at, EXCLUDED.close_sequential_id) \
                                        > (c.close_at, c.close_sequential_id) \
                                   THEN EXCLUDED.close_sequential_id ELSE c.close_sequential_id END, \
        high = GREATEST(c.high, EXCLUDED.high), \
        low = LEAST(c.low, EXCLUDED.low), \
        volume = c.volume + EXCLUDED.volume, \
        ticks = c.ticks + EXCLUDED.ticks, \
        updated_at = now()";

/// Orders trades of one market: by the exchange's trade time, then its sequence.
type TradeOrder = (Timestamp, u64);

fn order_of(tick: &TickObserved) -> TradeOrder {
    (tick.trade_timestamp, tick.sequential_id)
}

/// The latest trade of one market in the batch.
struct Latest<'a> {
    tick: &'a TickObserved,
    tick_id: &'a str,
    stream_sequence: u64,
}

/// One market-minute of the batch.
struct Candle {
    open: (TradeOrder, Decimal),
    close: (TradeOrder, Decimal),
    high: Decimal,
    low: Decimal,
    volume: Decimal,
    ticks: i64,
}

impl Candle {
    fn new(tick: &TickObserved) -> Candle {
        let price = tick.trade_price.value();
        Candle {
            open: (order_of(tick), price),
            close: (order_of(tick), price),
            high: price,
            low: price,
            volume: Decimal::ZERO,
            ticks: 0,
        }
    }

    fn add(&mut self, tick: &TickObserved) {
        let order = order_of(tick);
        let price = tick.trade_price.value();
        if order < self.open.0 {
            self.open = (order, price);
        }
        if order > self.close.0 {
            self.close = (order, price);
        }
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        if let Some(volume) = tick.trade_volume {
            self.volume += volume.value();
        }
        self.ticks += 1;
    }
}

/// The start of the UTC minute a trade happened in.
pub(crate) fn minute_of(time: Timestamp) -> Timestamp {
    let second = time.as_second().div_euclid(60) * 60;
    // In range: rounding down to a minute stays within the representable span of any valid time
    // except its very first minute, which no exchange trade falls in.
    Timestamp::from_second(second).unwrap_or(time)
}

pub(super) async fn apply(
    transaction: &Transaction<'_>,
    events: &[&StreamEvent],
) -> Result<Applied, tokio_postgres::Error> {
    let mut applied = Applied::default();
    let mut latest: BTreeMap<(&str, &str), Latest<'_>> = BTreeMap::new();
    let mut candles: BTreeMap<(&str, &str, Timestamp), Candle> = BTreeMap::new();
    for event in events {
        let Event::TickObserved(tick) = &event.envelope.data else {
            applied.ignored += 1;
            continue;
        };
        let key = (tick.exchange.as_str(), tick.market.as_str());
        let newer = latest
            .get(&key)
            .is_none_or(|current| order_of(tick) > order_of(current.tick));
        if newer {
            latest.insert(
                key,
                Latest {
                    tick,
                    tick_id: event.envelope.id.as_str(),
                    stream_sequence: event.sequence,
                },
            );
        }
        candles
            .entry((key.0, key.1, minute_of(tick.trade_timestamp)))
            .or_insert_with(|| Candle::new(tick))
            .add(tick);
        applied.projected += 1;
    }
    if latest.is_empty() {
        return Ok(applied);
    }
    upsert_markets(transaction, &latest).await?;
    upsert_candles(transaction, &candles).await?;
    Ok(applied)
}

async fn upsert_markets(
    transaction: &Transaction<'_>,
    latest: &BTreeMap<(&str, &str), Latest<'_>>,
) -> Result<(), tokio_postgres::Error> {
    let count = latest.len();
    let mut exchanges = Vec::with_capacity(count);
    let mut markets = Vec::with_capacity(count);
    let mut korean_names = Vec::with_capacity(count);
    let mut english_names = Vec::with_capacity(count);
    let mut prices = Vec::with_capacity(count);
    let mut rates = Vec::with_capacity(count);
    let mut changes = Vec::with_capacity(count);
    let mut volumes = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    let mut sequential_ids = Vec::with_capacity(count);
    let mut tick_ids = Vec::with_capacity(count);
    let mut stream_sequences = Vec::with_capacity(count);
    for ((exchange, market), entry) in latest {
        let tick = entry.tick;
        let (korean_name, english_name) = names(exchange, &tick.market);
        exchanges.push(*exchange);
        markets.push(*market);
        korean_names.push(korean_name);
        english_names.push(english_name);
        prices.push(tick.trade_price.value());
        rates.push(tick.signed_change_rate.value());
        changes.push(tick.signed_change_price.value());
        volumes.push(tick.acc_trade_volume_24h.map(|volume| volume.value()));
        times.push(tick.trade_timestamp);
        sequential_ids.push(to_bigint(tick.sequential_id));
        tick_ids.push(entry.tick_id);
        stream_sequences.push(to_bigint(entry.stream_sequence));
    }
    let statement = transaction.prepare_cached(UPSERT_MARKETS).await?;
    transaction
        .execute(
            &statement,
            &[
                &exchanges,
                &markets,
                &korean_names,
                &english_names,
                &prices,
                &rates,
                &changes,
                &volumes,
                &times,
                &sequential_ids,
                &tick_ids,
                &stream_sequences,
            ],
        )
        .await?;
    Ok(())
}

async fn upsert_candles(
    transaction: &Transaction<'_>,
    candles: &BTreeMap<(&str, &str, Timestamp), Candle>,
) -> Result<(), tokio_postgres::Error> {
    let count = candles.len();
    let mut exchanges = Vec::with_capacity(count);
    let mut markets = Vec::with_capacity(count);
    let mut minutes = Vec::with_capacity(count);
    let mut opens = Vec::with_capacity(count);
    let mut highs = Vec::with_capacity(count);
    let mut lows = Vec::with_capacity(count);
    let mut closes = Vec::with_capacity(count);
    let mut volumes = Vec::with_capacity(count);
    let mut ticks = Vec::with_capacity(count);
    let mut open_times = Vec::with_capacity(count);
    let mut open_sequential_ids = Vec::with_capacity(count);
    let mut close_times = Vec::with_capacity(count);
    let mut close_sequential_ids = Vec::with_capacity(count);
    for ((exchange, market, minute), candle) in candles {
        exchanges.push(*exchange);
        markets.push(*market);
        minutes.push(*minute);
        opens.push(candle.open.1);
        highs.push(candle.high);
        lows.push(candle.low);
        closes.push(candle.close.1);
        volumes.push(candle.volume);
        ticks.push(candle.ticks);
        open_times.push(candle.open.0.0);
        open_sequential_ids.push(to_bigint(candle.open.0.1));
        close_times.push(candle.close.0.0);
        close_sequential_ids.push(to_bigint(candle.close.0.1));
    }
    let statement = transaction.prepare_cached(UPSERT_CANDLES).await?;
    transaction
        .execute(
            &statement,
            &[
                &exchanges,
                &markets,
                &minutes,
                &opens,
                &highs,
                &lows,
                &closes,
                &volumes,
                &ticks,
                &open_times,
                &open_sequential_ids,
                &close_times,
                &close_sequential_ids,
            ],
        )
        .await?;
    Ok(())
}

/// Display names from the exchange's market list, when this build knows the market.
fn names(exchange: &str, market: &MarketCode) -> (Option<String>, Option<String>) {
    if exchange != "upbit" {
        return (None, None);
    }
    Catalogue::upbit().get(market).map_or((None, None), |info| {
        (
            Some(info.korean_name.clone()),
            Some(info.english_name.clone()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_start_on_the_minute() {
        let time: Timestamp = "2026-11-02T00:59:59.871Z".parse().expect("time");
        assert_eq!(
            minute_of(time),
            "2026-11-02T00:59:00Z".parse::<Timestamp>().expect("time")
        );
        let before_epoch: Timestamp = "1969-12-31T23:59:30Z".parse().expect("time");
        assert_eq!(
            minute_of(before_epoch),
            "1969-12-31T23:59:00Z".parse::<Timestamp>().expect("time")
        );
    }
}
