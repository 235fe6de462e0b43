//! Numbers as people read them in an SMS: prices in their quote currency, changes as signed percents,
//! times of day in the reader's zone. Decimal all the way; nothing passes through `f64`.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use proto_events::domain::{Locale, MarketCode, Percent, Price, ThresholdPercent};
use rust_decimal::{Decimal, RoundingStrategy};

/// KRW prices at or above this are shown without decimals (Upbit quotes them in whole won or coarser).
const KRW_WHOLE_WON_FROM: Decimal = Decimal::ONE_THOUSAND;

/// Change percentages are shown to this many decimals (`+1.23%`): enough to tell moves apart, short to read.
const PERCENT_DECIMALS: u32 = 2;

/// A price in the market's quote currency: `95,000,000원` / `95,000,000 KRW`, `0.5원`, `0.00012345 BTC`,
/// `95,123.45 USDT`.
///
/// KRW prices of 1,000 won or more are rounded to whole won (half away from zero); smaller KRW prices and
/// prices in every other currency keep all their significant decimals, trailing zeros dropped.
pub fn price(price: Price, market: &MarketCode, locale: Locale) -> String {
    let quote = market.quote();
    let value = price.value();
    if quote == "KRW" {
        let shown = if value.abs() >= KRW_WHOLE_WON_FROM {
            value.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        } else {
            value
        };
        let amount = group_thousands(shown);
        return match locale {
            Locale::Ko => format!("{amount}원"),
            Locale::En => format!("{amount} KRW"),
        };
    }
    format!("{} {quote}", group_thousands(value))
}

/// A signed change: `+1.23%`, `-3.5%`, `0%` (rounded to two decimals, half away from zero).
pub fn signed_percent(change: Percent) -> String {
    let rounded = change
        .value()
        .round_dp_with_strategy(PERCENT_DECIMALS, RoundingStrategy::MidpointAwayFromZero)
        .normalize();
    if rounded.is_zero() {
        return "0%".to_owned();
    }
    let sign = if rounded.is_sign_positive() { "+" } else { "" };
    format!("{sign}{}%", group_thousands(rounded))
}

/// A threshold as the user set it, without a sign: `3%`, `2.5%`.
pub fn threshold(threshold: ThresholdPercent) -> String {
    format!("{}%", group_thousands(threshold.value()))
}

/// The wall-clock time of `at` in `zone`, `14:03`.
pub fn clock_time(at: Timestamp, zone: &TimeZone) -> String {
    at.to_zoned(zone.clone()).strftime("%H:%M").to_string()
}

/// Plain digits with `,` every three integer digits and the fraction's trailing zeros dropped:
/// `95000000` → `95,000,000`, `1234.500` → `1,234.5`, `-0.0001` → `-0.0001`.
pub fn group_thousands(value: Decimal) -> String {
    // `Display` of a normalized decimal is plain digits with an optional sign and fraction, never an exponent.
    let text = value.normalize().to_string();
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (integer, fraction) = match unsigned.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (unsigned, None),
    };
    let mut grouped = String::with_capacity(text.len() + integer.len() / 3);
    grouped.push_str(sign);
    for (index, digit) in integer.chars().enumerate() {
        if index > 0 && (integer.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if let Some(fraction) = fraction {
        grouped.push('.');
        grouped.push_str(fraction);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn market(code: &str) -> MarketCode {
        MarketCode::parse(code).unwrap()
    }

    fn krw(text: &str, locale: Locale) -> String {
        price(Price::parse(text).unwrap(), &market("KRW-BTC"), locale)
    }

    #[test]
    fn krw_prices() {
        assert_eq!(krw("95000000", Locale::Ko), "95,000,000원");
        assert_eq!(krw("95000000", Locale::En), "95,000,000 KRW");
        assert_eq!(krw("95000000.00", Locale::Ko), "95,000,000원");
        assert_eq!(krw("1234.5", Locale::Ko), "1,235원");
        assert_eq!(krw("1000", Locale::Ko), "1,000원");
        assert_eq!(krw("999.5", Locale::Ko), "999.5원");
        assert_eq!(krw("127.5", Locale::Ko), "127.5원");
        assert_eq!(krw("0.5", Locale::Ko), "0.5원");
        assert_eq!(krw("0.00123400", Locale::En), "0.001234 KRW");
        assert_eq!(krw("100", Locale::Ko), "100원");
    }

    #[test]
    fn other_quote_currencies_keep_their_significant_decimals() {
        let btc = |text: &str| price(Price::parse(text).unwrap(), &market("BTC-ETH"), Locale::Ko);
        assert_eq!(btc("0.03512000"), "0.03512 BTC");
        assert_eq!(btc("0.00000123"), "0.00000123 BTC");
        let usdt = |text: &str| price(Price::parse(text).unwrap(), &market("USDT-BTC"), Locale::En);
        assert_eq!(usdt("95123.45"), "95,123.45 USDT");
        assert_eq!(usdt("0.1000"), "0.1 USDT");
        assert_eq!(usdt("1000000"), "1,000,000 USDT");
    }

    #[test]
    fn percents() {
        let signed = |text: &str| signed_percent(Percent::parse(text).unwrap());
        assert_eq!(signed("1.23"), "+1.23%");
        assert_eq!(signed("1.2345"), "+1.23%");
        assert_eq!(signed("1.235"), "+1.24%");
        assert_eq!(signed("-3.5"), "-3.5%");
        assert_eq!(signed("-3.505"), "-3.51%");
        assert_eq!(signed("0"), "0%");
        assert_eq!(signed("0.004"), "0%");
        assert_eq!(signed("-0.004"), "0%");
        assert_eq!(signed("1500"), "+1,500%");
        assert_eq!(threshold(ThresholdPercent::parse("3").unwrap()), "3%");
        assert_eq!(threshold(ThresholdPercent::parse("2.50").unwrap()), "2.5%");
    }

    #[test]
    fn grouping() {
        assert_eq!(group_thousands(Decimal::new(123, 0)), "123");
        assert_eq!(group_thousands(Decimal::new(1234, 0)), "1,234");
        assert_eq!(group_thousands(Decimal::new(123456, 0)), "123,456");
        assert_eq!(group_thousands(Decimal::new(-1234567, 1)), "-123,456.7");
        assert_eq!(group_thousands(Decimal::new(-1, 4)), "-0.0001");
        assert_eq!(group_thousands(Decimal::ZERO), "0");
    }

    #[test]
    fn clock_times_are_in_the_given_zone() {
        let at: Timestamp = "2026-11-02T05:03:59Z".parse().unwrap();
        let seoul = TimeZone::get("Asia/Seoul").unwrap();
        assert_eq!(clock_time(at, &seoul), "14:03");
        assert_eq!(clock_time(at, &TimeZone::UTC), "05:03");
    }
}
