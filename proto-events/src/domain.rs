//! Domain value types that cannot hold invalid values: phone numbers, markets, prices, percentages, ids.
//!
//! Every type here is parsed once at the edge (API request, exchange feed, event decoding) and trusted
//! afterwards. Serialization writes the plain string form; deserialization runs the same validating parser,
//! so an event carrying a malformed value fails to decode instead of travelling further.
//!
//! Decimal values are JSON *strings* (`"95000000"`, `"0.0123"`) in both directions. JSON numbers are
//! refused on purpose: serde_json would hand them over as `f64`, and KRW prices (~10^8) next to coins
//! priced ~10^-4 do not survive that.
//!
//! Types with a canonical text form (phone numbers, time zone names) accept friendly spellings in
//! [`FromStr`] / `parse`, but only the canonical form when deserializing: an event written with a
//! non-canonical value was produced by a bug, and two spellings of one phone number must never hash apart.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use hmac::Mac as _;
use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::subjects::is_valid_token;

/// Why a text could not become a domain value. Each variant names the type and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "{input:?} is not a phone number: expected E.164 such as +821012345678 \
         or a Korean number such as 010-1234-5678"
    )]
    PhoneNumber { input: String },
    #[error(
        "{input:?} is not a market code: expected QUOTE-BASE in upper-case letters and digits, such as KRW-BTC"
    )]
    MarketCode { input: String },
    #[error(
        "{input:?} is not an exchange name: expected 1 to 32 lower-case letters, digits, '_' or '-', such as upbit"
    )]
    Exchange { input: String },
    #[error(
        "{input:?} is not a plain decimal number for {what}: expected digits with an optional sign and \
         fraction, such as \"95000000\" or \"-3.5\" (no exponent, no separators, at most 28 digits)"
    )]
    Decimal { what: &'static str, input: String },
    #[error("{value} is out of range for {what}: expected {expected}")]
    OutOfRange {
        what: &'static str,
        value: Decimal,
        expected: &'static str,
    },
    #[error("{input:?} is not a valid {what}: expected 1 to 64 ASCII letters, digits, '_' or '-'")]
    Identifier { what: &'static str, input: String },
    #[error("{input:?} is not a phone hash: expected 64 lower-case hex digits (HMAC-SHA256)")]
    PhoneHash { input: String },
    #[error("{input:?} is not a supported locale: expected \"ko\" or \"en\"")]
    Locale { input: String },
    #[error("{input:?} is not a known IANA time zone name, such as Asia/Seoul")]
    TimeZone { input: String },
    #[error("{what} is not standard padded base64")]
    Base64 { what: &'static str },
    #[error("{input:?} is not a valid {what}: {expected}")]
    Format {
        what: &'static str,
        input: String,
        expected: &'static str,
    },
    #[error("invalid schedule: {problem}")]
    Schedule { problem: &'static str },
    #[error("{input:?} is not the canonical form of a {what}; events carry {canonical:?}")]
    NotCanonical {
        what: &'static str,
        input: String,
        canonical: String,
    },
}

/// Serde and schemars plumbing shared by the string-backed value types: serialize `as_str()`,
/// deserialize through `parse` and insist on the canonical spelling.
macro_rules! impl_text_value {
    ($type:ty, $what:literal, $schema:tt) => {
        impl ::std::fmt::Display for $type {
            fn fmt(&self, formatter: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl ::std::convert::AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl ::std::str::FromStr for $type {
            type Err = $crate::domain::ParseError;

            fn from_str(text: &str) -> ::std::result::Result<Self, Self::Err> {
                <$type>::parse(text)
            }
        }

        impl ::serde::Serialize for $type {
            fn serialize<S: ::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $type {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let text =
                    <::std::string::String as ::serde::Deserialize>::deserialize(deserializer)?;
                let parsed = <$type>::parse(&text).map_err(::serde::de::Error::custom)?;
                if parsed.as_str() != text {
                    return Err(::serde::de::Error::custom(
                        $crate::domain::ParseError::NotCanonical {
                            what: $what,
                            input: text,
                            canonical: parsed.as_str().to_owned(),
                        },
                    ));
                }
                Ok(parsed)
            }
        }

        impl ::schemars::JsonSchema for $type {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($type).into()
            }

            fn json_schema(_generator: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                ::schemars::json_schema!($schema)
            }
        }
    };
}
pub(crate) use impl_text_value;

/// Serde and schemars plumbing for the decimal-backed value types: a JSON string in, a JSON string out.
macro_rules! impl_decimal_value {
    ($type:ident, $what:literal, $pattern:literal, $description:literal) => {
        impl $type {
            /// Parses a plain decimal string (no exponent) and checks the range of this type.
            pub fn parse(text: &str) -> Result<Self, ParseError> {
                Self::new(parse_plain_decimal($what, text)?)
            }

            pub fn value(self) -> Decimal {
                self.0
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, formatter)
            }
        }

        impl FromStr for $type {
            type Err = ParseError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }

        impl TryFrom<Decimal> for $type {
            type Error = ParseError;

            fn try_from(value: Decimal) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$type> for Decimal {
            fn from(value: $type) -> Decimal {
                value.0
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = deserializer.deserialize_str(DecimalStringVisitor { what: $what })?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $type {
            fn schema_name() -> Cow<'static, str> {
                stringify!($type).into()
            }

            fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                })
            }
        }
    };
}

/// Accepts only JSON strings, so that no decimal is ever read through `f64`.
struct DecimalStringVisitor {
    what: &'static str,
}

impl serde::de::Visitor<'_> for DecimalStringVisitor {
    type Value = Decimal;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} as a decimal string such as \"95000000\" (JSON numbers are refused: they would pass through f64)",
            self.what
        )
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Decimal, E> {
        parse_plain_decimal(self.what, text).map_err(E::custom)
    }
}

/// Parses `-?digits(.digits)?` exactly: no exponent, no `_`, no rounding of excess digits.
fn parse_plain_decimal(what: &'static str, text: &str) -> Result<Decimal, ParseError> {
    let malformed = || ParseError::Decimal {
        what,
        input: text.to_owned(),
    };
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (integer_part, fraction_part) = match unsigned.split_once('.') {
        Some((integer_part, fraction_part)) => (integer_part, Some(fraction_part)),
        None => (unsigned, None),
    };
    let all_digits =
        |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !all_digits(integer_part) || !fraction_part.is_none_or(all_digits) {
        return Err(malformed());
    }
    Decimal::from_str_exact(text).map_err(|_| malformed())
}

/// A last trade price or a target price: strictly positive, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Price(Decimal);

impl Price {
    pub fn new(value: Decimal) -> Result<Self, ParseError> {
        if value > Decimal::ZERO {
            Ok(Price(value))
        } else {
            Err(ParseError::OutOfRange {
                what: "price",
                value,
                expected: "a price greater than zero",
            })
        }
    }
}

impl_decimal_value!(
    Price,
    "price",
    r"^[0-9]+(\.[0-9]+)?$",
    "Strictly positive decimal price as a string, e.g. \"95000000\" or \"0.00012\"."
);

/// A signed amount of price change (Upbit `signed_change_price`): any sign, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PriceChange(Decimal);

impl PriceChange {
    pub fn new(value: Decimal) -> Result<Self, ParseError> {
        Ok(PriceChange(value))
    }
}

impl_decimal_value!(
    PriceChange,
    "price change",
    r"^-?[0-9]+(\.[0-9]+)?$",
    "Signed decimal price difference as a string, e.g. \"-1500000\"."
);

/// A traded quantity (e.g. 24 h accumulated volume): zero or more, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Volume(Decimal);

impl Volume {
    pub fn new(value: Decimal) -> Result<Self, ParseError> {
        if value >= Decimal::ZERO {
            Ok(Volume(value))
        } else {
            Err(ParseError::OutOfRange {
                what: "volume",
                value,
                expected: "zero or more",
            })
        }
    }
}

impl_decimal_value!(
    Volume,
    "volume",
    r"^[0-9]+(\.[0-9]+)?$",
    "Non-negative decimal quantity as a string, e.g. \"1234.56789\"."
);

/// A change as a fraction of the reference price, as Upbit reports `signed_change_rate`
/// (`0.0123` is +1.23 %). A price cannot fall more than 100 %, hence the lower bound of -1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rate(Decimal);

impl Rate {
    pub fn new(value: Decimal) -> Result<Self, ParseError> {
        if value >= Decimal::NEGATIVE_ONE && value <= Decimal::ONE_HUNDRED {
            Ok(Rate(value))
        } else {
            Err(ParseError::OutOfRange {
                what: "rate",
                value,
                expected: "a fraction between -1 and 100",
            })
        }
    }

    /// The same change in percent. Exact: the ranges of [`Rate`] and [`Percent`] correspond.
    pub fn to_percent(self) -> Percent {
        Percent(self.0 * Decimal::ONE_HUNDRED)
    }
}

impl_decimal_value!(
    Rate,
    "rate",
    r"^-?[0-9]+(\.[0-9]+)?$",
    "Signed change as a fraction of the reference price (0.0123 = +1.23 %), between -1 and 100."
);

/// A signed change in percent (`"-3.5"` is -3.5 %), between -100 and 10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Percent(Decimal);

impl Percent {
    pub fn new(value: Decimal) -> Result<Self, ParseError> {
        if value >= -Decimal::ONE_HUNDRED && value <= Decimal::ONE_THOUSAND * Decimal::TEN {
            Ok(Percent(value))
        } else {
            Err(ParseError::OutOfRange {
                what: "percent",
                value,
                expected: "a percentage between -100 and 10000",
            })
        }
    }
}

impl_decimal_value!(
    Percent,
    "percent",
    r"^-?[0-9]+(\.[0-9]+)?$",
    "Signed percentage as a decimal string (\"-3.5\" = -3.5 %), between -100 and 10000."
);

/// The size of a change an alert waits for, in percent: greater than zero and at most 10000.
/// The sign lives in the alert's direction, so "down 5 %" is direction `down` with threshold `"5"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThresholdPercent(Decimal);

impl ThresholdPercent {
    pub fn new(value: Decimal) -> Result<Self, ParseError> {
        if value > Decimal::ZERO && value <= Decimal::ONE_THOUSAND * Decimal::TEN {
            Ok(ThresholdPercent(value))
        } else {
            Err(ParseError::OutOfRange {
                what: "change threshold",
                value,
                expected: "a percentage greater than 0 and at most 10000",
            })
        }
    }
}

impl_decimal_value!(
    ThresholdPercent,
    "change threshold",
    r"^[0-9]+(\.[0-9]+)?$",
    "Size of a change in percent, greater than 0 and at most 10000 (\"5\" = 5 %); the sign is the alert's direction."
);

/// A phone number in E.164 form (`+821012345678`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses E.164 and the ways Korean numbers are usually written: `010-1234-5678`, `01012345678`,
    /// `+82 10 1234 5678`, and `+82 010 1234 5678` (the domestic trunk 0 kept after the country code).
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let invalid = || ParseError::PhoneNumber {
            input: input.to_owned(),
        };
        let trimmed = input.trim();
        let (international, rest) = match trimmed.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let mut digits = String::with_capacity(16);
        for character in rest.chars() {
            match character {
                '0'..='9' => digits.push(character),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(invalid()),
            }
        }
        let e164_digits = if international {
            match digits.strip_prefix("820") {
                Some(national) => format!("82{national}"),
                None => digits,
            }
        } else {
            // Without a '+', only the Korean domestic form (trunk prefix 0) is unambiguous.
            // "00..." would be an international call prefix, which varies by carrier.
            match digits.strip_prefix('0') {
                Some(national) if !national.starts_with('0') => format!("82{national}"),
                _ => return Err(invalid()),
            }
        };
        let length_ok = (7..=15).contains(&e164_digits.len());
        let country_code_ok = !e164_digits.starts_with('0');
        let korean_length_ok = e164_digits
            .strip_prefix("82")
            .is_none_or(|national| (8..=10).contains(&national.len()));
        if !(length_ok && country_code_ok && korean_length_ok) {
            return Err(invalid());
        }
        Ok(PhoneNumber(format!("+{e164_digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number with its middle digits hidden (`+8210****5678`), for logs and support screens.
    pub fn masked(&self) -> String {
        let digits = &self.0[1..];
        let shown_head = digits.len().min(4);
        let shown_tail = 4.min(digits.len() - shown_head);
        let hidden = digits.len() - shown_head - shown_tail;
        format!(
            "+{}{}{}",
            &digits[..shown_head],
            "*".repeat(hidden),
            &digits[digits.len() - shown_tail..]
        )
    }
}

impl_text_value!(PhoneNumber, "phone number", {
    "type": "string",
    "pattern": r"^\+[1-9][0-9]{6,14}$",
    "description": "Phone number in E.164 form, e.g. \"+821012345678\".",
});

/// An exchange market as `QUOTE-BASE` (`KRW-BTC`, `BTC-ETH`, `USDT-XRP`); also a subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MarketCode(String);

impl MarketCode {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let part_ok = |part: &str| {
            (1..=16).contains(&part.len())
                && part
                    .bytes()
                    .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
        };
        match input.split_once('-') {
            Some((quote, base)) if part_ok(quote) && part_ok(base) => {
                Ok(MarketCode(input.to_owned()))
            }
            _ => Err(ParseError::MarketCode {
                input: input.to_owned(),
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The currency prices are quoted in (`KRW` of `KRW-BTC`).
    pub fn quote(&self) -> &str {
        self.0.split_once('-').map_or("", |(quote, _)| quote)
    }

    /// The asset being priced (`BTC` of `KRW-BTC`).
    pub fn base(&self) -> &str {
        self.0.split_once('-').map_or("", |(_, base)| base)
    }
}

impl_text_value!(MarketCode, "market code", {
    "type": "string",
    "pattern": "^[A-Z0-9]{1,16}-[A-Z0-9]{1,16}$",
    "description": "Market as QUOTE-BASE, e.g. \"KRW-BTC\".",
});

/// An exchange name (`upbit`); a subject token and part of tick message ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Exchange(String);

impl Exchange {
    pub const UPBIT: &'static str = "upbit";

    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let valid = (1..=32).contains(&input.len())
            && input.starts_with(|character: char| character.is_ascii_lowercase())
            && input.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
            });
        if valid {
            Ok(Exchange(input.to_owned()))
        } else {
            Err(ParseError::Exchange {
                input: input.to_owned(),
            })
        }
    }

    pub fn upbit() -> Self {
        Exchange(Self::UPBIT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl_text_value!(Exchange, "exchange", {
    "type": "string",
    "pattern": "^[a-z][a-z0-9_-]{0,31}$",
    "description": "Exchange name, e.g. \"upbit\".",
});

/// True for `[A-Za-z0-9_-]{1,64}`: safe as a subject token, inside `:`-separated message ids, in URLs
/// and in Postgres text keys.
fn is_identifier(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

macro_rules! identifier_type {
    ($(#[$attribute:meta])* $type:ident, $what:literal, $description:literal) => {
        $(#[$attribute])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $type(String);

        impl $type {
            pub fn parse(input: &str) -> Result<Self, ParseError> {
                if is_identifier(input) {
                    debug_assert!(is_valid_token(input));
                    Ok($type(input.to_owned()))
                } else {
                    Err(ParseError::Identifier {
                        what: $what,
                        input: input.to_owned(),
                    })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl_text_value!($type, $what, {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]{1,64}$",
            "description": $description,
        });
    };
}

identifier_type!(
    /// A user aggregate id; new ones are UUIDv7 text, so they sort by creation time.
    UserId,
    "user id",
    "User id (UUIDv7 text for new users)."
);

identifier_type!(
    /// An alert aggregate id; new ones are UUIDv7 text, so they sort by creation time.
    AlertId,
    "alert id",
    "Alert id (UUIDv7 text for new alerts)."
);

identifier_type!(
    /// The name of a JetStream stream or consumer, as carried in dead-letter records.
    NatsName,
    "stream or consumer name",
    "JetStream stream or consumer name."
);

identifier_type!(
    /// An SMS provider (`twilio`, `fake`), as recorded in dispatch outcomes.
    ProviderName,
    "provider name",
    "SMS provider name, e.g. \"twilio\"."
);

identifier_type!(
    /// Which key sealed a [`SealedSecret`], so keys can rotate while old codes are still in flight.
    KeyId,
    "key id",
    "Id of the key that sealed a secret."
);

identifier_type!(
    /// A service of the pipeline (`ingest`, `matcher`), as listed in site heartbeats.
    ServiceName,
    "service name",
    "Service name, e.g. \"matcher\"."
);

impl UserId {
    pub fn new() -> Self {
        UserId(uuid::Uuid::now_v7().to_string())
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl AlertId {
    pub fn new() -> Self {
        AlertId(uuid::Uuid::now_v7().to_string())
    }
}

impl Default for AlertId {
    fn default() -> Self {
        Self::new()
    }
}

/// Keyed hash of a phone number: the subject token of the sign-in stream and the key of per-phone rate
/// limits, so that phone numbers do not appear in subjects, metrics labels or Redis keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneHash(String);

impl PhoneHash {
    /// Lower-case hex of HMAC-SHA256 over the E.164 text, keyed with a deployment secret so the hash
    /// cannot be reversed by enumerating the (small) space of phone numbers.
    pub fn of(key: &[u8], phone: &PhoneNumber) -> Self {
        // HMAC is defined for keys of every length; `new_from_slice` only fails for fixed-size-key MACs.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(phone.as_str().as_bytes());
        PhoneHash(hex::encode(mac.finalize().into_bytes()))
    }

    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let valid = input.len() == 64
            && input
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        if valid {
            Ok(PhoneHash(input.to_owned()))
        } else {
            Err(ParseError::PhoneHash {
                input: input.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl_text_value!(PhoneHash, "phone hash", {
    "type": "string",
    "pattern": "^[0-9a-f]{64}$",
    "description": "Lower-case hex HMAC-SHA256 of the E.164 phone number under the deployment's phone-hash key.",
});

/// The language of a user's messages.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    #[default]
    Ko,
    En,
}

impl Locale {
    pub const fn as_str(self) -> &'static str {
        match self {
            Locale::Ko => "ko",
            Locale::En => "en",
        }
    }

    /// Accepts `ko`/`en` and BCP 47 tags whose primary language is one of them (`ko-KR`, `en_US`),
    /// as browsers send in `Accept-Language`.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let primary = input
            .split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match primary.as_str() {
            "ko" => Ok(Locale::Ko),
            "en" => Ok(Locale::En),
            _ => Err(ParseError::Locale {
                input: input.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for Locale {
    type Err = ParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Locale::parse(input)
    }
}

/// An IANA time zone name known to the time zone database (`Asia/Seoul`).
///
/// Validation looks the name up in jiff's database, which on Linux is the system's
/// `/usr/share/zoneinfo`: hosts that decode user and alert events need tzdata installed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub const SEOUL: &'static str = "Asia/Seoul";

    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let invalid = || ParseError::TimeZone {
            input: input.to_owned(),
        };
        // Fixed offsets and POSIX strings are not IANA names; only names with a region are accepted,
        // plus the one name people do type.
        if input != "UTC" && !input.contains('/') {
            return Err(invalid());
        }
        let time_zone = jiff::tz::TimeZone::get(input).map_err(|_| invalid())?;
        let canonical = time_zone.iana_name().unwrap_or(input);
        Ok(TimeZoneName(canonical.to_owned()))
    }

    pub fn seoul() -> Self {
        TimeZoneName(Self::SEOUL.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Loads the zone's rules; fails only if the host's database lost the zone since parsing.
    pub fn time_zone(&self) -> Result<jiff::tz::TimeZone, ParseError> {
        jiff::tz::TimeZone::get(&self.0).map_err(|_| ParseError::TimeZone {
            input: self.0.clone(),
        })
    }
}

impl Default for TimeZoneName {
    fn default() -> Self {
        Self::seoul()
    }
}

impl_text_value!(TimeZoneName, "time zone name", {
    "type": "string",
    "description": "IANA time zone name, e.g. \"Asia/Seoul\".",
    "examples": ["Asia/Seoul", "Europe/London", "UTC"],
});

/// Bytes carried as standard padded base64 text, validated on the way in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Base64Text(String);

impl Base64Text {
    pub fn encode(bytes: &[u8]) -> Self {
        Base64Text(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn parse(input: &str) -> Result<Self, ParseError> {
        match base64::engine::general_purpose::STANDARD.decode(input) {
            Ok(bytes) if !bytes.is_empty() => Ok(Base64Text(input.to_owned())),
            _ => Err(ParseError::Base64 { what: "value" }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The decoded bytes; validated at construction, so this cannot fail.
    pub fn to_bytes(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.0)
            .unwrap_or_default()
    }
}

impl_text_value!(Base64Text, "base64 text", {
    "type": "string",
    "contentEncoding": "base64",
    "pattern": "^[A-Za-z0-9+/]+={0,2}$",
    "description": "Non-empty bytes as standard padded base64.",
});

/// A secret encrypted with an AEAD key the readers of the stream do not all hold: how sign-in codes
/// travel, so that no long-lived stream or read model ever holds one in clear text.
///
/// This crate defines the data only; sealing and opening live with the services that hold the keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct SealedSecret {
    /// Which key sealed it.
    pub key_id: KeyId,
    /// The AEAD nonce.
    pub nonce: Base64Text,
    /// Ciphertext with the authentication tag appended.
    pub ciphertext: Base64Text,
}

/// A day of the week, for scheduled alerts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl From<Weekday> for jiff::civil::Weekday {
    fn from(weekday: Weekday) -> Self {
        match weekday {
            Weekday::Mon => jiff::civil::Weekday::Monday,
            Weekday::Tue => jiff::civil::Weekday::Tuesday,
            Weekday::Wed => jiff::civil::Weekday::Wednesday,
            Weekday::Thu => jiff::civil::Weekday::Thursday,
            Weekday::Fri => jiff::civil::Weekday::Friday,
            Weekday::Sat => jiff::civil::Weekday::Saturday,
            Weekday::Sun => jiff::civil::Weekday::Sunday,
        }
    }
}

impl From<jiff::civil::Weekday> for Weekday {
    fn from(weekday: jiff::civil::Weekday) -> Self {
        match weekday {
            jiff::civil::Weekday::Monday => Weekday::Mon,
            jiff::civil::Weekday::Tuesday => Weekday::Tue,
            jiff::civil::Weekday::Wednesday => Weekday::Wed,
            jiff::civil::Weekday::Thursday => Weekday::Thu,
            jiff::civil::Weekday::Friday => Weekday::Fri,
            jiff::civil::Weekday::Saturday => Weekday::Sat,
            jiff::civil::Weekday::Sunday => Weekday::Sun,
        }
    }
}

/// A daily window, in the user's time zone, during which alert SMS are held back.
/// `start > end` wraps midnight (22:00 to 07:00); `start == end` is an empty window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct QuietHours {
    pub start: jiff::civil::Time,
    pub end: jiff::civil::Time,
}

impl QuietHours {
    /// True when `time` (a wall-clock time in the user's zone) falls in the window, end excluded.
    pub fn contains(&self, time: jiff::civil::Time) -> bool {
        if self.start <= self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn korean_phone_forms_normalize_to_e164() {
        for input in [
            "010-1234-5678",
            "01012345678",
            "+82 10 1234 5678",
            "+82-10-1234-5678",
            "+82 010 1234 5678",
            " +821012345678 ",
            "(010) 1234.5678",
        ] {
            assert_eq!(
                PhoneNumber::parse(input).map(|phone| phone.0),
                Ok("+821012345678".to_owned()),
                "{input}"
            );
        }
        assert_eq!(
            PhoneNumber::parse("+1 415 555 2671").map(|phone| phone.0),
            Ok("+14155552671".to_owned())
        );
        assert_eq!(
            PhoneNumber::parse("02-123-4567").map(|phone| phone.0),
            Ok("+8221234567".to_owned())
        );
    }

    #[test]
    fn bad_phone_numbers_are_refused() {
        for input in [
            "",
            "+",
            "12345678",
            "0012345678",
            "010-1234-567a",
            "+0101234",
            "+123",
            "+1234567890123456",
            "010-12",
            "+82 10 1234 5678 9999",
        ] {
            assert!(PhoneNumber::parse(input).is_err(), "{input}");
        }
    }

    #[test]
    fn phone_deserialization_wants_the_canonical_form() {
        let phone: PhoneNumber = serde_json::from_str("\"+821012345678\"").unwrap();
        assert_eq!(serde_json::to_string(&phone).unwrap(), "\"+821012345678\"");
        let error = serde_json::from_str::<PhoneNumber>("\"010-1234-5678\"").unwrap_err();
        assert!(error.to_string().contains("canonical"), "{error}");
        assert!(serde_json::from_str::<PhoneNumber>("\"hello\"").is_err());
    }

    #[test]
    fn phone_masking_hides_the_middle() {
        let phone = PhoneNumber::parse("010-1234-5678").unwrap();
        assert_eq!(phone.masked(), "+8210****5678");
    }

    #[test]
    fn market_codes() {
        let market = MarketCode::parse("KRW-BTC").unwrap();
        assert_eq!((market.quote(), market.base()), ("KRW", "BTC"));
        for valid in ["BTC-ETH", "USDT-XRP", "KRW-1INCH"] {
            let market = MarketCode::parse(valid).unwrap();
            assert!(is_valid_token(market.as_str()));
        }
        for invalid in [
            "krw-btc",
            "KRW",
            "KRW-",
            "-BTC",
            "KRW-BTC-X",
            "KRW.BTC",
            "KRW-B*",
        ] {
            assert!(MarketCode::parse(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn exchanges() {
        assert_eq!(Exchange::parse("upbit"), Ok(Exchange::upbit()));
        for invalid in ["Upbit", "", "1x", "up.bit", "up bit"] {
            assert!(Exchange::parse(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn prices_are_positive_decimal_strings_and_never_numbers() {
        let price: Price = serde_json::from_str("\"95000000\"").unwrap();
        assert_eq!(price.value(), Decimal::from(95_000_000));
        assert_eq!(serde_json::to_string(&price).unwrap(), "\"95000000\"");
        let tiny: Price = serde_json::from_str("\"0.00012345\"").unwrap();
        assert_eq!(serde_json::to_string(&tiny).unwrap(), "\"0.00012345\"");
        assert!(serde_json::from_str::<Price>("95000000").is_err());
        assert!(serde_json::from_str::<Price>("\"0\"").is_err());
        assert!(serde_json::from_str::<Price>("\"-1\"").is_err());
        for malformed in ["1e5", "1_000", "", ".5", "5.", "+5", " 5", "0x10", "1.2.3"] {
            assert!(Price::parse(malformed).is_err(), "{malformed}");
        }
        assert!(Price::parse("123456789012345678901234567890123").is_err());
    }

    #[test]
    fn percent_and_rate_ranges() {
        assert!(Percent::parse("-3.5").is_ok());
        assert!(Percent::parse("-100").is_ok());
        assert!(Percent::parse("-100.01").is_err());
        assert!(Percent::parse("10000").is_ok());
        assert!(Percent::parse("10000.1").is_err());
        assert!(ThresholdPercent::parse("0").is_err());
        assert!(ThresholdPercent::parse("0.5").is_ok());
        assert!(ThresholdPercent::parse("-1").is_err());
        let rate = Rate::parse("0.0123").unwrap();
        assert_eq!(rate.to_percent(), Percent::parse("1.23").unwrap());
        assert!(Rate::parse("-1.5").is_err());
        assert!(Volume::parse("0").is_ok());
        assert!(Volume::parse("-0.1").is_err());
        assert!(PriceChange::parse("-1500000").is_ok());
    }

    #[test]
    fn identifiers() {
        let user = UserId::new();
        assert_eq!(
            uuid::Uuid::parse_str(user.as_str())
                .unwrap()
                .get_version_num(),
            7
        );
        assert!(is_valid_token(AlertId::new().as_str()));
        assert!(AlertId::parse("a:b").is_err());
        assert!(AlertId::parse("").is_err());
        assert!(AlertId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn phone_hash_is_keyed_hmac_sha256() {
        let phone = PhoneNumber::parse("010-1234-5678").unwrap();
        let hash = PhoneHash::of(b"test-key", &phone);
        assert_eq!(hash.as_str().len(), 64);
        assert_eq!(PhoneHash::parse(hash.as_str()), Ok(hash.clone()));
        assert_ne!(PhoneHash::of(b"other-key", &phone), hash);
        assert!(PhoneHash::parse("ABC").is_err());

        // HMAC-SHA256(key = "test-key", data = "+821012345678"), computed with Python's hmac module.
        assert_eq!(
            hash.as_str(),
            "8680e0db48fe9c32f1fc36c257a99e82d37661fa248bfa9768f6ee7bd6ca3658"
        );
    }

    #[test]
    fn locales() {
        assert_eq!(Locale::parse("ko-KR"), Ok(Locale::Ko));
        assert_eq!(Locale::parse("en_US"), Ok(Locale::En));
        assert!(Locale::parse("fr").is_err());
        assert_eq!(serde_json::to_string(&Locale::Ko).unwrap(), "\"ko\"");
        assert!(serde_json::from_str::<Locale>("\"ko-KR\"").is_err());
    }

    #[test]
    fn time_zones() {
        assert_eq!(TimeZoneName::default().as_str(), "Asia/Seoul");
        assert!(TimeZoneName::parse("Asia/Seoul").is_ok());
        assert!(TimeZoneName::parse("UTC").is_ok());
        assert!(TimeZoneName::parse("Mars/Olympus").is_err());
        assert!(TimeZoneName::parse("+09:00").is_err());
        assert!(TimeZoneName::default().time_zone().is_ok());
    }

    #[test]
    fn base64_and_sealed_secrets() {
        let text = Base64Text::encode(b"nonce-bytes");
        assert_eq!(text.to_bytes(), b"nonce-bytes");
        assert!(Base64Text::parse("not base64!").is_err());
        assert!(Base64Text::parse("").is_err());
        let sealed: SealedSecret = serde_json::from_value(serde_json::json!({
            "key_id": "k1", "nonce": "AAAA", "ciphertext": "AAAA"
        }))
        .unwrap();
        assert_eq!(sealed.key_id.as_str(), "k1");
    }

    #[test]
    fn quiet_hours_wrap_midnight() {
        let quiet = QuietHours {
            start: jiff::civil::time(22, 0, 0, 0),
            end: jiff::civil::time(7, 0, 0, 0),
        };
        assert!(quiet.contains(jiff::civil::time(23, 0, 0, 0)));
        assert!(quiet.contains(jiff::civil::time(6, 59, 0, 0)));
        assert!(!quiet.contains(jiff::civil::time(7, 0, 0, 0)));
        assert!(!quiet.contains(jiff::civil::time(12, 0, 0, 0)));
    }
}
