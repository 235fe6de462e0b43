//! The Upbit market catalogue: market codes with their Korean and English names, as
//! `GET /v1/market/all` returns them. The vendored capture (`data/upbit/cryptofeed-UPBIT.market-all.txt`)
//! is compiled in, so names are available to every service and test without reaching the exchange.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::domain::{Locale, MarketCode};

/// The recorded `GET https://api.upbit.com/v1/market/all` response, with its `<url> -> <time>: ` prefix.
const VENDORED_MARKET_ALL: &str = include_str!("../../data/upbit/cryptofeed-UPBIT.market-all.txt");

/// Why a market list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("no `/v1/market/all` response line in the recorded file")]
    NoResponseLine,
    #[error("the market list is not the JSON array `/v1/market/all` returns: {0}")]
    Json(#[source] serde_json::Error),
    #[error("market {code} is listed twice")]
    DuplicateMarket { code: MarketCode },
}

/// One market with its display names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketInfo {
    /// Upbit calls the code `market`.
    #[serde(rename = "market")]
    pub code: MarketCode,
    pub korean_name: String,
    pub english_name: String,
}

impl MarketInfo {
    /// The name for `locale`, or the code if the exchange gave no name in that language.
    pub fn name(&self, locale: Locale) -> &str {
        let name = match locale {
            Locale::Ko => &self.korean_name,
            Locale::En => &self.english_name,
        };
        if name.trim().is_empty() {
            self.code.as_str()
        } else {
            name
        }
    }
}

/// A list of markets, in the exchange's order, with lookup by code.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    markets: Vec<MarketInfo>,
    positions: HashMap<MarketCode, usize>,
}

static UPBIT: LazyLock<Catalogue> = LazyLock::new(|| {
    // The vendored file is fixed at compile time and `tests::vendored_catalogue_parses` reads it, so a
    // failure here is a broken build, not a runtime condition.
    Catalogue::parse_recorded(VENDORED_MARKET_ALL).expect("the vendored Upbit market list parses")
});

impl Catalogue {
    /// The Upbit markets of the vendored capture.
    pub fn upbit() -> &'static Catalogue {
        &UPBIT
    }

    /// Builds a catalogue from markets in order; a code listed twice is an error.
    pub fn from_markets(markets: Vec<MarketInfo>) -> Result<Catalogue, CatalogueError> {
        let mut positions = HashMap::with_capacity(markets.len());
        for (position, market) in markets.iter().enumerate() {
            if positions.insert(market.code.clone(), position).is_some() {
                return Err(CatalogueError::DuplicateMarket {
                    code: market.code.clone(),
                });
            }
        }
        Ok(Catalogue { markets, positions })
    }

    /// Parses the body of `GET /v1/market/all` (fields the catalogue does not use are ignored).
    pub fn from_market_all_json(json: &str) -> Result<Catalogue, CatalogueError> {
        let markets: Vec<MarketInfo> = serde_json::from_str(json).map_err(CatalogueError::Json)?;
        Catalogue::from_markets(markets)
    }

    /// Parses a recorded file in cryptofeed's format: the line `<url>/v1/market/all -> <time>: <json>`
    /// holds the response; other lines (the recorder's configuration) are skipped.
    pub fn parse_recorded(text: &str) -> Result<Catalogue, CatalogueError> {
        let body = text
            .lines()
            .filter(|line| line.contains("/v1/market/all -> "))
            .find_map(|line| line.split_once(": ").map(|(_, body)| body))
            .ok_or(CatalogueError::NoResponseLine)?;
        Catalogue::from_market_all_json(body)
    }

    pub fn get(&self, code: &MarketCode) -> Option<&MarketInfo> {
        self.positions
            .get(code)
            .and_then(|&position| self.markets.get(position))
    }

    pub fn contains(&self, code: &MarketCode) -> bool {
        self.positions.contains_key(code)
    }

    /// The market's name in `locale`, or its code when the market is unknown, so a message can always
    /// name the market.
    pub fn name<'a>(&'a self, code: &'a MarketCode, locale: Locale) -> &'a str {
        match self.get(code) {
            Some(market) => market.name(locale),
            None => code.as_str(),
        }
    }

    /// Every market, in the exchange's order.
    pub fn iter(&self) -> impl Iterator<Item = &MarketInfo> {
        self.markets.iter()
    }

    /// Markets quoted in `quote` (`KRW`, `BTC`, `USDT`), in the exchange's order.
    pub fn quoted_in<'a>(&'a self, quote: &'a str) -> impl Iterator<Item = &'a MarketInfo> + 'a {
        self.markets
            .iter()
            .filter(move |market| market.code.quote() == quote)
    }

    /// Markets quoted in Korean won: what CoinAlarm watches when no market list is configured.
    pub fn krw_markets(&self) -> impl Iterator<Item = &MarketInfo> {
        self.quoted_in("KRW")
    }

    pub fn len(&self) -> usize {
        self.markets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.markets.is_empty()
    }

    /// The catalogue as `GET /v1/market/all` returns it (what a fake exchange serves).
    pub fn to_market_all_json(&self) -> String {
        serde_json::to_string(&self.markets).unwrap_or_else(|_| String::from("[]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn market(code: &str) -> MarketCode {
        MarketCode::parse(code).unwrap()
    }

    #[test]
    fn vendored_catalogue_parses() {
        let catalogue = Catalogue::parse_recorded(VENDORED_MARKET_ALL).unwrap();
        assert_eq!(catalogue.len(), 294);
        assert_eq!(Catalogue::upbit().len(), 294);
        assert_eq!(Catalogue::upbit().krw_markets().count(), 117);
        assert!(
            Catalogue::upbit()
                .krw_markets()
                .all(|market| market.code.quote() == "KRW")
        );
        assert_eq!(
            Catalogue::upbit()
                .iter()
                .next()
                .map(|market| market.code.as_str()),
            Some("KRW-BTC")
        );
    }

    #[test]
    fn looks_up_names_by_locale() {
        let catalogue = Catalogue::upbit();
        let bitcoin = catalogue.get(&market("KRW-BTC")).unwrap();
        assert_eq!(bitcoin.korean_name, "비트코인");
        assert_eq!(bitcoin.english_name, "Bitcoin");
        assert_eq!(catalogue.name(&market("KRW-LAMB"), Locale::Ko), "람다");
        assert_eq!(catalogue.name(&market("KRW-LAMB"), Locale::En), "Lambda");
        assert_eq!(
            catalogue.name(&market("BTC-PAX"), Locale::En),
            "Paxos Standard"
        );
    }

    #[test]
    fn unknown_markets_fall_back_to_the_code() {
        let catalogue = Catalogue::upbit();
        let unknown = market("KRW-NOPE");
        assert!(catalogue.get(&unknown).is_none());
        assert!(!catalogue.contains(&unknown));
        assert_eq!(catalogue.name(&unknown, Locale::Ko), "KRW-NOPE");
        assert_eq!(catalogue.name(&unknown, Locale::En), "KRW-NOPE");
    }

    #[test]
    fn blank_names_fall_back_to_the_code() {
        let catalogue = Catalogue::from_market_all_json(
            r#"[{"market":"KRW-NEW","korean_name":"새코인","english_name":" "}]"#,
        )
        .unwrap();
        assert_eq!(catalogue.name(&market("KRW-NEW"), Locale::En), "KRW-NEW");
        assert_eq!(catalogue.name(&market("KRW-NEW"), Locale::Ko), "새코인");
    }

    #[test]
    fn the_live_response_shape_parses_and_extra_fields_are_ignored() {
        let json = r#"[
            {"market":"KRW-BTC","korean_name":"비트코인","english_name":"Bitcoin","market_warning":"NONE"},
            {"market":"BTC-ETH","korean_name":"이더리움","english_name":"Ethereum","market_event":{"warning":false}}
        ]"#;
        let catalogue = Catalogue::from_market_all_json(json).unwrap();
        assert_eq!(catalogue.len(), 2);
        assert_eq!(catalogue.quoted_in("BTC").count(), 1);
        assert_eq!(catalogue.krw_markets().count(), 1);
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(matches!(
            Catalogue::from_market_all_json(
                r#"[{"market":"krw-btc","korean_name":"x","english_name":"x"}]"#
            ),
            Err(CatalogueError::Json(_))
        ));
        assert!(matches!(
            Catalogue::from_market_all_json(
                r#"[{"market":"KRW-BTC","korean_name":"a","english_name":"a"},
                    {"market":"KRW-BTC","korean_name":"b","english_name":"b"}]"#
            ),
            Err(CatalogueError::DuplicateMarket { .. })
        ));
        assert!(matches!(
            Catalogue::parse_recorded("configuration: {}"),
            Err(CatalogueError::NoResponseLine)
        ));
    }

    #[test]
    fn round_trips_through_the_market_all_json() {
        let catalogue = Catalogue::upbit();
        let again = Catalogue::from_market_all_json(&catalogue.to_market_all_json()).unwrap();
        assert_eq!(
            again.iter().collect::<Vec<_>>(),
            catalogue.iter().collect::<Vec<_>>()
        );
    }
}
