//! Upbit websocket frames (`ticker`, `trade`) in both wire formats, DEFAULT (long field names) and SIMPLE
//! (abbreviations), parsed into typed values. Numbers are read as their JSON text and parsed straight into
//! `rust_decimal`: a KRW price of 95000000 next to a coin at 0.00001234 never passes through `f64`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use proto_events::domain::{MarketCode, ParseError, Price, PriceChange, Rate, Volume};
use proto_events::events::ticks::StreamType;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The two formats Upbit can be asked for in the subscription's `format` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum WireFormat {
    /// Long field names (`trade_price`, `sequential_id`, ...).
    #[default]
    #[serde(rename = "DEFAULT", alias = "default")]
    Default,
    /// Abbreviated field names (`tp`, `sid`, ...): about half the bytes per frame.
    #[serde(rename = "SIMPLE", alias = "simple")]
    Simple,
}

impl WireFormat {
    pub const fn as_str(self) -> &'static str {
        match self {
            WireFormat::Default => "DEFAULT",
            WireFormat::Simple => "SIMPLE",
        }
    }
}

impl fmt::Display for WireFormat {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for WireFormat {
    type Err = FrameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_uppercase().as_str() {
            "DEFAULT" => Ok(WireFormat::Default),
            "SIMPLE" => Ok(WireFormat::Simple),
            _ => Err(FrameError::UnknownFormat {
                format: text.to_owned(),
            }),
        }
    }
}

/// Whether the trade was the taker's buy (`BID`) or sell (`ASK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AskBid {
    Ask,
    Bid,
}

impl AskBid {
    pub const fn as_str(self) -> &'static str {
        match self {
            AskBid::Ask => "ASK",
            AskBid::Bid => "BID",
        }
    }
}

/// One executed trade (`type: trade`). Trades carry the exchange's `sequential_id`, so they are the
/// tick source; they carry no change rate, which is derived from `prev_closing_price`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    pub market: MarketCode,
    pub trade_price: Price,
    pub trade_volume: Option<Volume>,
    pub ask_bid: Option<AskBid>,
    /// The daily reference price (the previous day's close, 00:00 KST) the change rate is measured from.
    pub prev_closing_price: Price,
    /// When the trade happened, by the exchange's clock.
    pub trade_timestamp: Timestamp,
    /// When the exchange sent the frame.
    pub timestamp: Option<Timestamp>,
    pub sequential_id: u64,
    pub stream_type: StreamType,
}

impl Trade {
    /// `trade_price - prev_closing_price`, exact.
    pub fn signed_change_price(&self) -> Result<PriceChange, FrameError> {
        PriceChange::new(self.trade_price.value() - self.prev_closing_price.value()).map_err(
            |source| FrameError::Invalid {
                field: "signed_change_price",
                source,
            },
        )
    }

    /// `(trade_price - prev_closing_price) / prev_closing_price` as a fraction, computed in decimal.
    pub fn signed_change_rate(&self) -> Result<Rate, FrameError> {
        let reference = self.prev_closing_price.value();
        let change = self.trade_price.value() - reference;
        let rate = change
            .checked_div(reference)
            .ok_or(FrameError::Overflow {
                field: "signed_change_rate",
            })?
            .normalize();
        Rate::new(rate).map_err(|source| FrameError::Invalid {
            field: "signed_change_rate",
            source,
        })
    }
}

/// The market summary (`type: ticker`) Upbit sends after each trade: the exchange's own daily change
/// and 24 h volume. It has no sequential id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticker {
    pub market: MarketCode,
    pub trade_price: Price,
    pub signed_change_rate: Rate,
    pub signed_change_price: PriceChange,
    pub prev_closing_price: Option<Price>,
    pub acc_trade_volume_24h: Option<Volume>,
    pub trade_timestamp: Timestamp,
    pub timestamp: Option<Timestamp>,
    pub stream_type: StreamType,
}

/// A parsed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Trade(Trade),
    Ticker(Ticker),
    /// A frame of a type ingest does not use (`orderbook`, `myTrade`, ...).
    Other {
        kind: String,
    },
    /// The answer to a text `PING`: `{"status":"UP"}`.
    Status {
        status: String,
    },
    /// The exchange refused the request: `{"error":{"name":...,"message":...}}`.
    Error {
        name: String,
        message: String,
    },
}

impl Frame {
    /// A label for metrics: `trade`, `ticker`, `other`, `status`, `error`.
    pub fn kind_label(&self) -> &'static str {
        match self {
            Frame::Trade(_) => "trade",
            Frame::Ticker(_) => "ticker",
            Frame::Other { .. } => "other",
            Frame::Status { .. } => "status",
            Frame::Error { .. } => "error",
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the frame is not UTF-8")]
    NotUtf8,
    #[error("the frame is not a JSON object: {0}")]
    Json(#[source] serde_json::Error),
    #[error("{kind} frame without {field}")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{field} is not a decimal number: {text}")]
    Number { field: &'static str, text: String },
    #[error("{field} is out of range: {source}")]
    Invalid {
        field: &'static str,
        #[source]
        source: ParseError,
    },
    #[error("{field} does not fit a decimal")]
    Overflow { field: &'static str },
    #[error("{field} is not a valid unix time in milliseconds: {value}")]
    Timestamp { field: &'static str, value: i64 },
    #[error("{field} has an unknown value {value:?}")]
    UnknownValue { field: &'static str, value: String },
    #[error("unknown format {format:?}: expected DEFAULT or SIMPLE")]
    UnknownFormat { format: String },
}

impl FrameError {
    /// A stable label for the `reason` of `coinalarm_ingest_invalid_frames_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::NotUtf8 => "not_utf8",
            FrameError::Json(_) => "not_json",
            FrameError::Missing { .. } => "missing_field",
            FrameError::Number { .. } => "bad_number",
            FrameError::Invalid { .. } => "out_of_range",
            FrameError::Overflow { .. } => "overflow",
            FrameError::Timestamp { .. } => "bad_timestamp",
            FrameError::UnknownValue { .. } => "unknown_value",
            FrameError::UnknownFormat { .. } => "unknown_format",
        }
    }
}

/// Every field ingest reads, under its DEFAULT name with the SIMPLE abbreviation as an alias. Numbers
/// stay raw JSON text until [`decimal`] parses them.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", alias = "ty", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "code", alias = "cd", borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(alias = "tp", borrow)]
    trade_price: Option<&'a RawValue>,
    #[serde(alias = "tv", borrow)]
    trade_volume: Option<&'a RawValue>,
    #[serde(alias = "pcp", borrow)]
    prev_closing_price: Option<&'a RawValue>,
    #[serde(alias = "scr", borrow)]
    signed_change_rate: Option<&'a RawValue>,
    #[serde(alias = "scp", borrow)]
    signed_change_price: Option<&'a RawValue>,
    #[serde(alias = "atv24h", borrow)]
    acc_trade_volume_24h: Option<&'a RawValue>,
    #[serde(alias = "ab", borrow)]
    ask_bid: Option<Cow<'a, str>>,
    #[serde(alias = "ttms")]
    trade_timestamp: Option<i64>,
    #[serde(alias = "tms")]
    timestamp: Option<i64>,
    #[serde(alias = "sid")]
    sequential_id: Option<u64>,
    #[serde(alias = "st", borrow)]
    stream_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    error: Option<RawError>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    name: String,
    #[serde(default)]
    message: String,
}

/// Parses one frame body (the payload of a binary or text websocket message).
pub fn parse_frame(bytes: &[u8]) -> Result<Frame, FrameError> {
    let text = std::str::from_utf8(bytes).map_err(|_| FrameError::NotUtf8)?;
    parse_frame_text(text)
}

/// [`parse_frame`] for a frame already known to be text.
pub fn parse_frame_text(text: &str) -> Result<Frame, FrameError> {
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(FrameError::Json)?;
    if let Some(error) = raw.error {
        return Ok(Frame::Error {
            name: error.name,
            message: error.message,
        });
    }
    let Some(kind) = raw.kind.as_deref() else {
        if let Some(status) = raw.status {
            return Ok(Frame::Status {
                status: status.into_owned(),
            });
        }
        return Err(FrameError::Missing {
            kind: "untyped",
            field: "type",
        });
    };
    match kind {
        "trade" => parse_trade(&raw).map(Frame::Trade),
        "ticker" => parse_ticker(&raw).map(Frame::Ticker),
        other => Ok(Frame::Other {
            kind: other.to_owned(),
        }),
    }
}

fn parse_trade(raw: &RawFrame<'_>) -> Result<Trade, FrameError> {
    const KIND: &str = "trade";
    Ok(Trade {
        market: market(raw, KIND)?,
        trade_price: price(
            "trade_price",
            required(raw.trade_price, KIND, "trade_price")?,
        )?,
        trade_volume: raw
            .trade_volume
            .map(|raw| volume("trade_volume", raw))
            .transpose()?,
        ask_bid: raw.ask_bid.as_deref().map(ask_bid).transpose()?,
        prev_closing_price: price(
            "prev_closing_price",
            required(raw.prev_closing_price, KIND, "prev_closing_price")?,
        )?,
        trade_timestamp: timestamp(
            "trade_timestamp",
            required(raw.trade_timestamp, KIND, "trade_timestamp")?,
        )?,
        timestamp: raw
            .timestamp
            .map(|value| timestamp("timestamp", value))
            .transpose()?,
        sequential_id: required(raw.sequential_id, KIND, "sequential_id")?,
        stream_type: stream_type(raw.stream_type.as_deref())?,
    })
}

fn parse_ticker(raw: &RawFrame<'_>) -> Result<Ticker, FrameError> {
    const KIND: &str = "ticker";
    let signed_change_rate = decimal(
        "signed_change_rate",
        required(raw.signed_change_rate, KIND, "signed_change_rate")?,
    )?;
    let signed_change_price = decimal(
        "signed_change_price",
        required(raw.signed_change_price, KIND, "signed_change_price")?,
    )?;
    Ok(Ticker {
        market: market(raw, KIND)?,
        trade_price: price(
            "trade_price",
            required(raw.trade_price, KIND, "trade_price")?,
        )?,
        signed_change_rate: Rate::new(signed_change_rate).map_err(|source| {
            FrameError::Invalid {
                field: "signed_change_rate",
                source,
            }
        })?,
        signed_change_price: PriceChange::new(signed_change_price).map_err(|source| {
            FrameError::Invalid {
                field: "signed_change_price",
                source,
            }
        })?,
        prev_closing_price: raw
            .prev_closing_price
            .map(|raw| price("prev_closing_price", raw))
            .transpose()?,
        acc_trade_volume_24h: raw
            .acc_trade_volume_24h
            .map(|raw| volume("acc_trade_volume_24h", raw))
            .transpose()?,
        trade_timestamp: timestamp(
            "trade_timestamp",
            required(raw.trade_timestamp, KIND, "trade_timestamp")?,
        )?,
        timestamp: raw
            .timestamp
            .map(|value| timestamp("timestamp", value))
            .transpose()?,
        stream_type: stream_type(raw.stream_type.as_deref())?,
    })
}

fn required<T>(value: Option<T>, kind: &'static str, field: &'static str) -> Result<T, FrameError> {
    value.ok_or(FrameError::Missing { kind, field })
}

fn market(raw: &RawFrame<'_>, kind: &'static str) -> Result<MarketCode, FrameError> {
    let code = raw.code.as_deref().ok_or(FrameError::Missing {
        kind,
        field: "code",
    })?;
    MarketCode::parse(code).map_err(|source| FrameError::Invalid {
        field: "code",
        source,
    })
}

/// Parses a JSON number (or a numeric string) from its text, exactly: plain (`127.0`, `0.00001234`) or
/// with an exponent (`6E-8`, which Upbit writes for very small values).
pub fn decimal(field: &'static str, raw: &RawValue) -> Result<Decimal, FrameError> {
    let text = raw.get().trim();
    let text = text
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(text);
    let malformed = || FrameError::Number {
        field,
        text: text.to_owned(),
    };
    let looks_numeric = !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || matches!(byte, b'-' | b'+' | b'.' | b'e' | b'E'));
    if !looks_numeric {
        return Err(malformed());
    }
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    };
    parsed
        .map(|value| value.normalize())
        .map_err(|_| malformed())
}

fn price(field: &'static str, raw: &RawValue) -> Result<Price, FrameError> {
    Price::new(decimal(field, raw)?).map_err(|source| FrameError::Invalid { field, source })
}

fn volume(field: &'static str, raw: &RawValue) -> Result<Volume, FrameError> {
    Volume::new(decimal(field, raw)?).map_err(|source| FrameError::Invalid { field, source })
}

fn timestamp(field: &'static str, milliseconds: i64) -> Result<Timestamp, FrameError> {
    Timestamp::from_millisecond(milliseconds).map_err(|_| FrameError::Timestamp {
        field,
        value: milliseconds,
    })
}

fn stream_type(value: Option<&str>) -> Result<StreamType, FrameError> {
    match value {
        None | Some("REALTIME") => Ok(StreamType::Realtime),
        Some("SNAPSHOT") => Ok(StreamType::Snapshot),
        Some(other) => Err(FrameError::UnknownValue {
            field: "stream_type",
            value: other.to_owned(),
        }),
    }
}

fn ask_bid(value: &str) -> Result<AskBid, FrameError> {
    match value {
        "ASK" => Ok(AskBid::Ask),
        "BID" => Ok(AskBid::Bid),
        other => Err(FrameError::UnknownValue {
            field: "ask_bid",
            value: other.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str_exact(text).unwrap()
    }

    fn trade(frame: Frame) -> Trade {
        match frame {
            Frame::Trade(trade) => trade,
            other => panic!("expected a trade, got {other:?}"),
        }
    }

    fn ticker(frame: Frame) -> Ticker {
        match frame {
            Frame::Ticker(ticker) => ticker,
            other => panic!("expected a ticker, got {other:?}"),
        }
    }

    /// A trade frame as recorded from Upbit in SIMPLE format.
    const SIMPLE_TRADE: &str = r#"{"ty":"trade","cd":"KRW-LAMB","tms":1618678262712,"td":"2021-04-17","ttm":"16:51:02","ttms":1618678262000,"tp":127.0,"tv":46.48838371,"ab":"BID","pcp":123.00000000,"c":"RISE","cp":4.00000000,"sid":1618678262000003,"st":"REALTIME"}"#;

    /// The shape of Upbit's DEFAULT trade frame (from the API reference).
    const DEFAULT_TRADE: &str = r#"{"type":"trade","code":"KRW-BTC","timestamp":1676965262177,"trade_date":"2023-02-21","trade_time":"07:41:02","trade_timestamp":1676965262139,"trade_price":31287000.0,"trade_volume":0.00014518,"ask_bid":"BID","prev_closing_price":31220000.0,"change":"RISE","change_price":67000.0,"sequential_id":1676965262139000,"stream_type":"SNAPSHOT"}"#;

    #[test]
    fn simple_trade() {
        let trade = trade(parse_frame(SIMPLE_TRADE.as_bytes()).unwrap());
        assert_eq!(trade.market.as_str(), "KRW-LAMB");
        assert_eq!(trade.trade_price.value(), dec("127"));
        assert_eq!(trade.trade_price.to_string(), "127");
        assert_eq!(trade.prev_closing_price.to_string(), "123");
        assert_eq!(trade.trade_volume.unwrap().to_string(), "46.48838371");
        assert_eq!(trade.ask_bid, Some(AskBid::Bid));
        assert_eq!(trade.sequential_id, 1_618_678_262_000_003);
        assert_eq!(trade.stream_type, StreamType::Realtime);
        assert_eq!(
            trade.trade_timestamp,
            Timestamp::from_millisecond(1_618_678_262_000).unwrap()
        );
        assert_eq!(
            trade.timestamp,
            Some(Timestamp::from_millisecond(1_618_678_262_712).unwrap())
        );
        assert_eq!(trade.signed_change_price().unwrap().value(), dec("4"));
        // 4 / 123, exact to the 28 digits a decimal holds; never an f64 approximation.
        assert_eq!(
            trade.signed_change_rate().unwrap().value(),
            dec("4") / dec("123")
        );
        assert_eq!(
            trade.signed_change_rate().unwrap().to_string(),
            "0.0325203252032520325203252033"
        );
    }

    #[test]
    fn default_trade() {
        let trade = trade(parse_frame(DEFAULT_TRADE.as_bytes()).unwrap());
        assert_eq!(trade.market.as_str(), "KRW-BTC");
        assert_eq!(trade.trade_price.value(), dec("31287000"));
        assert_eq!(trade.prev_closing_price.value(), dec("31220000"));
        assert_eq!(trade.trade_volume.unwrap().value(), dec("0.00014518"));
        assert_eq!(trade.sequential_id, 1_676_965_262_139_000);
        assert_eq!(trade.stream_type, StreamType::Snapshot);
        assert_eq!(trade.signed_change_price().unwrap().value(), dec("67000"));
    }

    #[test]
    fn falling_trade_has_a_negative_rate() {
        let frame = r#"{"ty":"trade","cd":"BTC-ITAM","tms":1618678272375,"ttms":1618678272000,"tp":0.00000113,"tv":3416.89061628,"ab":"ASK","pcp":0.00000119,"c":"FALL","cp":6E-8,"sid":16186782720000000,"st":"REALTIME"}"#;
        let trade = trade(parse_frame(frame.as_bytes()).unwrap());
        assert_eq!(trade.trade_price.to_string(), "0.00000113");
        assert_eq!(
            trade.signed_change_price().unwrap().to_string(),
            "-0.00000006"
        );
        assert_eq!(
            trade.signed_change_rate().unwrap().value(),
            dec("-0.00000006") / dec("0.00000119")
        );
        assert!(trade.signed_change_rate().unwrap().value() < Decimal::ZERO);
    }

    #[test]
    fn prices_are_exact_at_both_ends_of_the_scale() {
        for (text, expected) in [
            ("0.00001234", "0.00001234"),
            ("95000000", "95000000"),
            ("95000000.0", "95000000"),
            ("1.234E-5", "0.00001234"),
            ("9.5E7", "95000000"),
            ("123456789.123456789", "123456789.123456789"),
        ] {
            let frame = format!(
                r#"{{"ty":"trade","cd":"KRW-BTC","ttms":1,"tp":{text},"pcp":{text},"sid":1}}"#
            );
            let trade = trade(parse_frame(frame.as_bytes()).unwrap());
            assert_eq!(trade.trade_price.to_string(), expected, "{text}");
            assert_eq!(trade.trade_price.value(), dec(expected), "{text}");
        }
        // f64 would turn 0.1 + 0.2 style values into near misses; the decimal keeps the digits written.
        let raw = RawValue::from_string("0.30000000000000004441".to_owned()).unwrap();
        assert_eq!(
            decimal("x", &raw).unwrap().to_string(),
            "0.30000000000000004441"
        );
    }

    #[test]
    fn simple_ticker() {
        let frame = r#"{"ty":"ticker","cd":"KRW-BTC","op":94000000,"hp":96000000,"lp":93500000,"tp":95000000,"pcp":93846000,"c":"RISE","cp":1154000,"scp":1154000,"cr":0.0122966562,"scr":0.0122966562,"tv":0.00421,"atv":1234.5,"atv24h":2345.67891234,"atp":1.1E11,"atp24h":2.2E11,"tdt":"20261102","ttm":"005959","ttms":1793581199871,"ab":"BID","aav":1,"abv":2,"h52wp":100000000,"h52wdt":"2026-03-01","l52wp":50000000,"l52wdt":"2025-12-01","ms":"ACTIVE","its":false,"dd":null,"mw":"NONE","tms":1793581199902,"st":"REALTIME"}"#;
        let ticker = ticker(parse_frame(frame.as_bytes()).unwrap());
        assert_eq!(ticker.market.as_str(), "KRW-BTC");
        assert_eq!(ticker.trade_price.value(), dec("95000000"));
        assert_eq!(ticker.signed_change_rate.value(), dec("0.0122966562"));
        assert_eq!(ticker.signed_change_price.value(), dec("1154000"));
        assert_eq!(
            ticker.acc_trade_volume_24h.unwrap().value(),
            dec("2345.67891234")
        );
        assert_eq!(ticker.prev_closing_price.unwrap().value(), dec("93846000"));
    }

    #[test]
    fn default_ticker() {
        let frame = r#"{"type":"ticker","code":"KRW-ETH","opening_price":4000000.0,"high_price":4100000.0,"low_price":3900000.0,"trade_price":3950000.0,"prev_closing_price":4000000.0,"acc_trade_price":1.5E10,"change":"FALL","change_price":50000.0,"signed_change_price":-50000.0,"change_rate":0.0125,"signed_change_rate":-0.0125,"ask_bid":"ASK","trade_volume":0.1,"acc_trade_volume":3750.5,"trade_date":"20261102","trade_time":"010203","trade_timestamp":1793581323000,"acc_ask_volume":1,"acc_bid_volume":2,"highest_52_week_price":5000000.0,"highest_52_week_date":"2026-01-01","lowest_52_week_price":2000000.0,"lowest_52_week_date":"2026-06-01","market_state":"ACTIVE","is_trading_suspended":false,"delisting_date":null,"market_warning":"NONE","timestamp":1793581323100,"acc_trade_price_24h":3.0E10,"acc_trade_volume_24h":7500.25,"stream_type":"SNAPSHOT"}"#;
        let ticker = ticker(parse_frame(frame.as_bytes()).unwrap());
        assert_eq!(ticker.market.as_str(), "KRW-ETH");
        assert_eq!(ticker.signed_change_rate.value(), dec("-0.0125"));
        assert_eq!(ticker.signed_change_price.value(), dec("-50000"));
        assert_eq!(ticker.acc_trade_volume_24h.unwrap().value(), dec("7500.25"));
        assert_eq!(ticker.stream_type, StreamType::Snapshot);
    }

    #[test]
    fn other_frames_status_and_errors() {
        assert_eq!(
            parse_frame(br#"{"ty":"orderbook","cd":"KRW-LAMB","obu":[{"ap":127.0,"bp":126.0}]}"#)
                .unwrap(),
            Frame::Other {
                kind: "orderbook".to_owned()
            }
        );
        assert_eq!(
            parse_frame(br#"{"status":"UP"}"#).unwrap(),
            Frame::Status {
                status: "UP".to_owned()
            }
        );
        assert_eq!(
            parse_frame(br#"{"error":{"name":"INVALID_AUTH","message":"bad"}}"#).unwrap(),
            Frame::Error {
                name: "INVALID_AUTH".to_owned(),
                message: "bad".to_owned()
            }
        );
    }

    #[test]
    fn bad_frames_say_why() {
        let cases: [(&[u8], &str); 9] = [
            (b"\xff\xfe", "not_utf8"),
            (b"[1,2]", "not_json"),
            (b"{}", "missing_field"),
            (
                br#"{"ty":"trade","cd":"KRW-BTC","ttms":1,"pcp":1,"sid":1}"#,
                "missing_field",
            ),
            (
                br#"{"ty":"trade","cd":"KRW-BTC","ttms":1,"tp":"abc","pcp":1,"sid":1}"#,
                "bad_number",
            ),
            (
                br#"{"ty":"trade","cd":"KRW-BTC","ttms":1,"tp":0,"pcp":1,"sid":1}"#,
                "out_of_range",
            ),
            (
                br#"{"ty":"trade","cd":"krw-btc","ttms":1,"tp":1,"pcp":1,"sid":1}"#,
                "out_of_range",
            ),
            (
                br#"{"ty":"trade","cd":"KRW-BTC","ttms":1,"tp":1,"pcp":1,"sid":1,"st":"LIVE"}"#,
                "unknown_value",
            ),
            (
                br#"{"ty":"trade","cd":"KRW-BTC","ttms":1,"tp":1,"pcp":1,"sid":-1}"#,
                "not_json",
            ),
        ];
        for (frame, reason) in cases {
            let error = parse_frame(frame).unwrap_err();
            assert_eq!(error.reason(), reason, "{error}");
        }
    }

    #[test]
    fn formats_parse_both_spellings() {
        assert_eq!("simple".parse::<WireFormat>().unwrap(), WireFormat::Simple);
        assert_eq!(
            "DEFAULT".parse::<WireFormat>().unwrap(),
            WireFormat::Default
        );
        assert!("JSON_LIST".parse::<WireFormat>().is_err());
        assert_eq!(
            serde_json::from_str::<WireFormat>("\"simple\"").unwrap(),
            WireFormat::Simple
        );
        assert_eq!(
            serde_json::to_string(&WireFormat::Simple).unwrap(),
            "\"SIMPLE\""
        );
    }
}
