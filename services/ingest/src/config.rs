//! The `[ingest]` configuration section (`COINALARM_INGEST__...` in the environment).

use std::path::PathBuf;
use std::time::Duration;

use coinalarm_runtime::config::seconds;
use proto_events::domain::MarketCode;
use serde::{Deserialize, Deserializer, Serialize};

use crate::client::{ClientConfig, UPBIT_WEBSOCKET_URL};
use crate::frame::WireFormat;
use crate::recorded::Speed;

/// Where ticks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The Upbit websocket (or anything speaking its protocol, such as the fake exchange).
    #[default]
    Upbit,
    /// A recorded capture, played once.
    Recorded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub source: SourceKind,
    /// Websocket endpoint of the `upbit` source.
    pub url: String,
    /// Markets to subscribe to, as a list or a comma-separated string; empty means every KRW market.
    #[serde(deserialize_with = "market_list")]
    pub markets: Vec<MarketCode>,
    /// Where "every KRW market" is looked up (`https://api.upbit.com/v1/market/all`); unset uses the
    /// catalogue compiled into the binary, which lags new listings.
    pub market_list_url: Option<String>,
    /// DEFAULT or SIMPLE; SIMPLE halves the bytes on the wire.
    pub format: WireFormat,
    /// No market data for this long raises the silence alarm and reconnects.
    #[serde(with = "seconds")]
    pub silence_seconds: Duration,
    #[serde(with = "seconds")]
    pub ping_interval_seconds: Duration,
    #[serde(with = "seconds")]
    pub connect_timeout_seconds: Duration,
    #[serde(with = "seconds")]
    pub reconnect_min_seconds: Duration,
    #[serde(with = "seconds")]
    pub reconnect_max_seconds: Duration,
    /// Capture played by the `recorded` source; unset plays the vendored Upbit capture.
    pub recorded_path: Option<PathBuf>,
    /// Playback speed of the `recorded` source: `"original"`, a factor such as `10`, or `"max"`.
    pub speed: Speed,
    /// Most ticks published with their acknowledgements in flight together.
    pub batch_size: usize,
    /// Frames buffered between the socket reader and the publisher; when full, reading stops.
    pub channel_capacity: usize,
    /// After shutdown, how long a failing publish of the last batch is retried before giving up.
    #[serde(with = "seconds")]
    pub flush_timeout_seconds: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            source: SourceKind::Upbit,
            url: UPBIT_WEBSOCKET_URL.to_owned(),
            markets: Vec::new(),
            market_list_url: None,
            format: WireFormat::Simple,
            silence_seconds: Duration::from_secs(30),
            ping_interval_seconds: Duration::from_secs(30),
            connect_timeout_seconds: Duration::from_secs(10),
            reconnect_min_seconds: Duration::from_millis(500),
            reconnect_max_seconds: Duration::from_secs(30),
            recorded_path: None,
            speed: Speed::Original,
            batch_size: 256,
            channel_capacity: 4096,
            flush_timeout_seconds: Duration::from_secs(5),
        }
    }
}

impl IngestConfig {
    /// Checks what serde cannot: positive sizes and durations, a sane backoff range.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".to_owned());
        }
        if self.channel_capacity == 0 {
            return Err("channel_capacity must be at least 1".to_owned());
        }
        for (name, value) in [
            ("silence_seconds", self.silence_seconds),
            ("ping_interval_seconds", self.ping_interval_seconds),
            ("connect_timeout_seconds", self.connect_timeout_seconds),
            ("reconnect_min_seconds", self.reconnect_min_seconds),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        if self.reconnect_max_seconds < self.reconnect_min_seconds {
            return Err("reconnect_max_seconds must be at least reconnect_min_seconds".to_owned());
        }
        Ok(())
    }

    /// The websocket client's settings for `markets`.
    pub fn client_config(&self, markets: Vec<MarketCode>) -> ClientConfig {
        ClientConfig {
            url: self.url.clone(),
            markets,
            format: self.format,
            silence: self.silence_seconds,
            ping_interval: self.ping_interval_seconds,
            connect_timeout: self.connect_timeout_seconds,
            reconnect_min: self.reconnect_min_seconds,
            reconnect_max: self.reconnect_max_seconds,
        }
    }
}

/// A list of market codes, or one string of codes separated by commas (handy in environment variables).
fn market_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<MarketCode>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Spelling {
        List(Vec<String>),
        Text(String),
    }
    let codes: Vec<String> = match Spelling::deserialize(deserializer)? {
        Spelling::List(codes) => codes,
        Spelling::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|code| !code.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    codes
        .iter()
        .map(|code| MarketCode::parse(code.trim()).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<IngestConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn defaults_are_valid_and_point_at_upbit() {
        let config = parse(json!({})).unwrap();
        assert_eq!(config.source, SourceKind::Upbit);
        assert_eq!(config.url, "wss://api.upbit.com/websocket/v1");
        assert!(config.markets.is_empty());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn a_typical_section() {
        let config = parse(json!({
            "source": "recorded",
            "markets": ["KRW-BTC", "KRW-ETH"],
            "format": "DEFAULT",
            "silence_seconds": 2.5,
            "speed": "max",
            "batch_size": 10
        }))
        .unwrap();
        assert_eq!(config.source, SourceKind::Recorded);
        assert_eq!(config.markets.len(), 2);
        assert_eq!(config.format, WireFormat::Default);
        assert_eq!(config.silence_seconds, Duration::from_millis(2500));
        assert_eq!(config.speed, Speed::Fastest);
        assert_eq!(config.batch_size, 10);
        let client = config.client_config(config.markets.clone());
        assert_eq!(client.silence, Duration::from_millis(2500));
    }

    #[test]
    fn markets_from_a_comma_separated_string() {
        let config = parse(json!({ "markets": "KRW-BTC, KRW-ETH," })).unwrap();
        assert_eq!(
            config
                .markets
                .iter()
                .map(MarketCode::as_str)
                .collect::<Vec<_>>(),
            ["KRW-BTC", "KRW-ETH"]
        );
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(parse(json!({ "markts": ["KRW-BTC"] })).is_err());
        assert!(parse(json!({ "markets": ["krw-btc"] })).is_err());
        assert!(parse(json!({ "source": "binance" })).is_err());
        assert!(parse(json!({ "speed": 0 })).is_err());
        assert!(
            parse(json!({ "batch_size": 0 }))
                .unwrap()
                .validate()
                .is_err()
        );
        assert!(
            parse(json!({ "reconnect_min_seconds": 10, "reconnect_max_seconds": 1 }))
                .unwrap()
                .validate()
                .is_err()
        );
    }
}
