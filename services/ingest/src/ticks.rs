//! Turning frames into `TickObserved` events: trades are the ticks (their sequential id is the
//! de-duplication key), ticker frames only refresh each market's 24 h volume, duplicates are dropped and
//! late trades counted.

use std::collections::HashMap;

use proto_events::domain::{Exchange, MarketCode, Volume};
use proto_events::events::ticks::TickObserved;

use crate::frame::{Frame, Trade};
use crate::sequence::{SequenceTracker, Verdict};

/// How many recent sequential ids each market remembers for duplicate detection.
const RECENT_IDS_PER_MARKET: usize = 4096;

#[derive(Debug, Default)]
struct MarketState {
    sequence: Option<SequenceTracker>,
    acc_trade_volume_24h: Option<Volume>,
}

/// What became of one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new trade: publish it.
    Tick(Box<TickObserved>),
    /// A trade seen before, dropped.
    Duplicate,
    /// A ticker frame: the market's state was refreshed, nothing to publish.
    Refreshed,
    /// Not market data (another type, a status reply): nothing to do.
    Ignored,
    /// A trade whose values are out of range for the event (e.g. a change rate beyond +10000 %).
    Invalid { reason: &'static str },
}

/// Per-feed state: one per source, owned by the publishing task (no locks).
#[derive(Debug)]
pub struct TickProcessor {
    exchange: Exchange,
    markets: HashMap<MarketCode, MarketState>,
}

impl TickProcessor {
    pub fn new(exchange: Exchange) -> TickProcessor {
        TickProcessor {
            exchange,
            markets: HashMap::new(),
        }
    }

    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    pub fn accept(&mut self, frame: Frame) -> Outcome {
        match frame {
            Frame::Trade(trade) => self.accept_trade(trade),
            Frame::Ticker(ticker) => {
                let state = self.markets.entry(ticker.market).or_default();
                if ticker.acc_trade_volume_24h.is_some() {
                    state.acc_trade_volume_24h = ticker.acc_trade_volume_24h;
                }
                Outcome::Refreshed
            }
            Frame::Other { .. } | Frame::Status { .. } | Frame::Error { .. } => Outcome::Ignored,
        }
    }

    fn accept_trade(&mut self, trade: Trade) -> Outcome {
        let state = self.markets.entry(trade.market.clone()).or_default();
        let verdict = state
            .sequence
            .get_or_insert_with(|| SequenceTracker::new(RECENT_IDS_PER_MARKET))
            .observe(trade.sequential_id);
        match verdict {
            Verdict::Duplicate => {
                metrics::counter!("coinalarm_ingest_duplicates_total", "market" => trade.market.to_string())
                    .increment(1);
                return Outcome::Duplicate;
            }
            Verdict::OutOfOrder => {
                metrics::counter!("coinalarm_ingest_out_of_order_total", "market" => trade.market.to_string())
                    .increment(1);
                tracing::debug!(market = %trade.market, sequential_id = trade.sequential_id, "trade arrived out of order");
            }
            Verdict::New => {}
        }
        let (signed_change_rate, signed_change_price) = match (
            trade.signed_change_rate(),
            trade.signed_change_price(),
        ) {
            (Ok(rate), Ok(price)) => (rate, price),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(market = %trade.market, sequential_id = trade.sequential_id, %error, "trade dropped: not representable as a tick");
                return Outcome::Invalid {
                    reason: error.reason(),
                };
            }
        };
        Outcome::Tick(Box::new(TickObserved {
            exchange: self.exchange.clone(),
            market: trade.market,
            trade_price: trade.trade_price,
            signed_change_rate,
            signed_change_price,
            acc_trade_volume_24h: state.acc_trade_volume_24h,
            trade_volume: trade.trade_volume,
            trade_timestamp: trade.trade_timestamp,
            sequential_id: trade.sequential_id,
            stream_type: trade.stream_type,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parse_frame;
    use pretty_assertions::assert_eq;
    use proto_events::events::ticks::StreamType;

    fn frame(text: &str) -> Frame {
        parse_frame(text.as_bytes()).unwrap()
    }

    fn tick(outcome: Outcome) -> TickObserved {
        match outcome {
            Outcome::Tick(tick) => *tick,
            other => panic!("expected a tick, got {other:?}"),
        }
    }

    #[test]
    fn trades_become_ticks_with_the_derived_change() {
        let mut processor = TickProcessor::new(Exchange::upbit());
        let tick = tick(processor.accept(frame(
            r#"{"ty":"trade","cd":"KRW-BTC","ttms":1793581199871,"tp":95000000,"tv":0.00421,"pcp":94000000,"sid":1793581199871000,"st":"SNAPSHOT"}"#,
        )));
        assert_eq!(tick.exchange, Exchange::upbit());
        assert_eq!(tick.market.as_str(), "KRW-BTC");
        assert_eq!(tick.trade_price.to_string(), "95000000");
        assert_eq!(tick.signed_change_price.to_string(), "1000000");
        assert_eq!(
            tick.signed_change_rate.value(),
            rust_decimal::Decimal::from(1) / rust_decimal::Decimal::from(94)
        );
        assert_eq!(tick.trade_volume.unwrap().to_string(), "0.00421");
        assert_eq!(tick.acc_trade_volume_24h, None);
        assert_eq!(tick.sequential_id, 1_793_581_199_871_000);
        assert_eq!(tick.stream_type, StreamType::Snapshot);
    }

    #[test]
    fn ticker_frames_refresh_the_24h_volume_of_later_ticks() {
        let mut processor = TickProcessor::new(Exchange::upbit());
        assert_eq!(
            processor.accept(frame(
                r#"{"ty":"ticker","cd":"KRW-BTC","tp":95000000,"scr":0.01,"scp":940000,"atv24h":2345.5,"ttms":1}"#
            )),
            Outcome::Refreshed
        );
        let tick = tick(processor.accept(frame(
            r#"{"ty":"trade","cd":"KRW-BTC","ttms":2,"tp":95000000,"pcp":94000000,"sid":2}"#,
        )));
        assert_eq!(tick.acc_trade_volume_24h.unwrap().to_string(), "2345.5");
        let other_market = tick_of(&mut processor, "KRW-ETH", 2);
        assert_eq!(other_market.acc_trade_volume_24h, None);
    }

    fn tick_of(processor: &mut TickProcessor, market: &str, sid: u64) -> TickObserved {
        tick(processor.accept(frame(&format!(
            r#"{{"ty":"trade","cd":"{market}","ttms":2,"tp":100,"pcp":100,"sid":{sid}}}"#
        ))))
    }

    #[test]
    fn duplicates_are_dropped_per_market_and_late_trades_kept() {
        let mut processor = TickProcessor::new(Exchange::upbit());
        tick_of(&mut processor, "KRW-BTC", 10);
        let again = frame(r#"{"ty":"trade","cd":"KRW-BTC","ttms":2,"tp":100,"pcp":100,"sid":10}"#);
        assert_eq!(processor.accept(again), Outcome::Duplicate);
        // The same id in another market is another trade.
        tick_of(&mut processor, "KRW-ETH", 10);
        tick_of(&mut processor, "KRW-BTC", 12);
        assert_eq!(tick_of(&mut processor, "KRW-BTC", 11).sequential_id, 11);
    }

    #[test]
    fn unusable_frames_are_ignored_or_invalid() {
        let mut processor = TickProcessor::new(Exchange::upbit());
        assert_eq!(
            processor.accept(frame(r#"{"ty":"orderbook","cd":"KRW-BTC"}"#)),
            Outcome::Ignored
        );
        // +20000 %: beyond what a Rate holds.
        assert_eq!(
            processor.accept(frame(
                r#"{"ty":"trade","cd":"KRW-BTC","ttms":2,"tp":201,"pcp":1,"sid":1}"#
            )),
            Outcome::Invalid {
                reason: "out_of_range"
            }
        );
    }
}
