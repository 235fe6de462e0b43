//! Upbit's subscription request: the JSON array a client sends after connecting, naming a ticket, the
//! data types with their market codes, and the format. The client writes it; the fake exchange reads it.

use proto_events::domain::MarketCode;
use serde_json::{Map, Value, json};

use crate::frame::WireFormat;

/// The data types ingest subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    Ticker,
    Trade,
}

impl DataType {
    pub const fn as_str(self) -> &'static str {
        match self {
            DataType::Ticker => "ticker",
            DataType::Trade => "trade",
        }
    }
}

/// One `{"type": ..., "codes": [...]}` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRequest {
    pub data_type: DataType,
    pub codes: Vec<MarketCode>,
    /// `isOnlyRealtime`: no snapshot of the current state on subscribe.
    pub only_realtime: bool,
}

/// A whole subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Identifies the client to the exchange; a fresh UUID per connection.
    pub ticket: String,
    pub types: Vec<TypeRequest>,
    pub format: WireFormat,
}

/// Why a subscription request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("the request is not a JSON array of objects: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the request is not a JSON array of objects")]
    NotAnArray,
    #[error("the request has no ticket")]
    NoTicket,
    #[error("the request asks for no data type")]
    NoTypes,
    #[error("{0}")]
    Invalid(String),
}

impl Subscription {
    /// Ticker and trade for `markets` in `format`, with a fresh ticket. Snapshots are requested on
    /// purpose: after a reconnect the snapshot repeats the last trade (dropped as a duplicate by its
    /// sequential id) or reveals one that was missed.
    pub fn ticker_and_trade(markets: &[MarketCode], format: WireFormat) -> Subscription {
        let entry = |data_type| TypeRequest {
            data_type,
            codes: markets.to_vec(),
            only_realtime: false,
        };
        Subscription {
            ticket: uuid::Uuid::new_v4().to_string(),
            types: vec![entry(DataType::Ticker), entry(DataType::Trade)],
            format,
        }
    }

    /// The JSON text to send.
    pub fn to_json(&self) -> String {
        let mut request = vec![json!({ "ticket": self.ticket })];
        for entry in &self.types {
            let mut object = Map::new();
            object.insert("type".to_owned(), json!(entry.data_type.as_str()));
            object.insert(
                "codes".to_owned(),
                json!(
                    entry
                        .codes
                        .iter()
                        .map(MarketCode::as_str)
                        .collect::<Vec<_>>()
                ),
            );
            if entry.only_realtime {
                object.insert("isOnlyRealtime".to_owned(), json!(true));
            }
            request.push(Value::Object(object));
        }
        request.push(json!({ "format": self.format.as_str() }));
        Value::Array(request).to_string()
    }

    /// Reads a request as Upbit does. Types other than `ticker` and `trade` (e.g. `orderbook`) are
    /// accepted and ignored; the format defaults to DEFAULT.
    pub fn parse(text: &str) -> Result<Subscription, SubscriptionError> {
        let value: Value = serde_json::from_str(text).map_err(SubscriptionError::Json)?;
        let Value::Array(entries) = value else {
            return Err(SubscriptionError::NotAnArray);
        };
        let mut ticket = None;
        let mut types = Vec::new();
        let mut format = WireFormat::Default;
        for entry in entries {
            let Value::Object(object) = entry else {
                return Err(SubscriptionError::NotAnArray);
            };
            if let Some(value) = object.get("ticket") {
                let text = value.as_str().ok_or_else(|| {
                    SubscriptionError::Invalid("ticket must be a string".to_owned())
                })?;
                ticket = Some(text.to_owned());
            }
            if let Some(value) = object.get("format") {
                let text = value.as_str().ok_or_else(|| {
                    SubscriptionError::Invalid("format must be a string".to_owned())
                })?;
                format = text.parse().map_err(|error: crate::frame::FrameError| {
                    SubscriptionError::Invalid(error.to_string())
                })?;
            }
            if let Some(value) = object.get("type") {
                let kind = value.as_str().ok_or_else(|| {
                    SubscriptionError::Invalid("type must be a string".to_owned())
                })?;
                let data_type = match kind {
                    "ticker" => DataType::Ticker,
                    "trade" => DataType::Trade,
                    _ => continue,
                };
                let codes = object
                    .get("codes")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        SubscriptionError::Invalid(format!("{kind} needs a codes array"))
                    })?
                    .iter()
                    .map(|code| {
                        code.as_str()
                            .and_then(|code| MarketCode::parse(code).ok())
                            .ok_or_else(|| {
                                SubscriptionError::Invalid(format!("invalid code {code}"))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let only_realtime = object
                    .get("isOnlyRealtime")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                types.push(TypeRequest {
                    data_type,
                    codes,
                    only_realtime,
                });
            }
        }
        let ticket = ticket.ok_or(SubscriptionError::NoTicket)?;
        if types.is_empty() {
            return Err(SubscriptionError::NoTypes);
        }
        Ok(Subscription {
            ticket,
            types,
            format,
        })
    }

    /// The request for `data_type`, if any.
    pub fn request_for(&self, data_type: DataType) -> Option<&TypeRequest> {
        self.types.iter().find(|entry| entry.data_type == data_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn markets(codes: &[&str]) -> Vec<MarketCode> {
        codes
            .iter()
            .map(|code| MarketCode::parse(code).unwrap())
            .collect()
    }

    #[test]
    fn the_request_has_upbits_shape() {
        let subscription =
            Subscription::ticker_and_trade(&markets(&["KRW-BTC", "KRW-ETH"]), WireFormat::Simple);
        let value: Value = serde_json::from_str(&subscription.to_json()).unwrap();
        assert_eq!(
            value,
            json!([
                {"ticket": subscription.ticket},
                {"type": "ticker", "codes": ["KRW-BTC", "KRW-ETH"]},
                {"type": "trade", "codes": ["KRW-BTC", "KRW-ETH"]},
                {"format": "SIMPLE"}
            ])
        );
        assert_eq!(
            Subscription::parse(&subscription.to_json()).unwrap(),
            subscription
        );
    }

    #[test]
    fn reads_the_recorded_request() {
        // Line 2 of the vendored capture: trade and orderbook, SIMPLE, realtime only.
        let text = r#"[{"ticket":"bd10766d-e3bb-4df9-bb18-9d97b6968d25"},{"format":"SIMPLE"},{"type":"trade","codes":["BTC-ARK","KRW-WAVES"],"isOnlyRealtime":true},{"type":"orderbook","codes":["BTC-ARK"],"isOnlyRealtime":true}]"#;
        let subscription = Subscription::parse(text).unwrap();
        assert_eq!(subscription.format, WireFormat::Simple);
        assert_eq!(subscription.types.len(), 1);
        let trade = subscription.request_for(DataType::Trade).unwrap();
        assert_eq!(trade.codes, markets(&["BTC-ARK", "KRW-WAVES"]));
        assert!(trade.only_realtime);
        assert!(subscription.request_for(DataType::Ticker).is_none());
    }

    #[test]
    fn refuses_malformed_requests() {
        for text in [
            "nope",
            "{}",
            r#"[{"type":"trade","codes":["KRW-BTC"]}]"#,
            r#"[{"ticket":"t"}]"#,
            r#"[{"ticket":"t"},{"type":"trade"}]"#,
            r#"[{"ticket":"t"},{"type":"trade","codes":["krw-btc"]}]"#,
            r#"[{"ticket":"t"},{"type":"trade","codes":["KRW-BTC"]},{"format":"BINARY"}]"#,
        ] {
            assert!(Subscription::parse(text).is_err(), "{text}");
        }
    }
}
