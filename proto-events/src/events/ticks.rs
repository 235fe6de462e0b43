//! Exchange trade ticks. Subject `ticks.<exchange>.<market>`, one per market.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Routed;
use crate::domain::{Exchange, MarketCode, Price, PriceChange, Rate, Volume};
use crate::ids::{self, MessageId};
use crate::site::Site;
use crate::subjects::subject;

/// Whether the exchange sent the tick as the initial snapshot of a subscription or as a live update.
/// A snapshot repeats the last trade, which keeps its sequential id and so is de-duplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamType {
    Snapshot,
    Realtime,
}

/// A trade observed on an exchange (Upbit `ticker`), with the fields alerts need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TickObserved {
    pub exchange: Exchange,
    pub market: MarketCode,
    /// Last trade price.
    pub trade_price: Price,
    /// Change since the exchange's daily reference price, as a fraction (`0.0123` = +1.23 %).
    pub signed_change_rate: Rate,
    /// Change since the daily reference price, in the quote currency.
    pub signed_change_price: PriceChange,
    /// Volume traded over the last 24 h, when the exchange reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acc_trade_volume_24h: Option<Volume>,
    /// Quantity of this trade (Upbit `trade_volume`), when the exchange reports it; candle volumes are
    /// its sums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_volume: Option<Volume>,
    /// When the trade happened, by the exchange's clock.
    pub trade_timestamp: Timestamp,
    /// The exchange's unique id of the trade within the market; the de-duplication key.
    pub sequential_id: u64,
    pub stream_type: StreamType,
}

impl Routed for TickObserved {
    fn message_id(&self, _producer: Site) -> MessageId {
        ids::tick(&self.exchange, &self.market, self.sequential_id)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::tick(site, self.exchange.as_str(), self.market.as_str())
    }
}
