//! Alert aggregate events and the alert definition. Subject `alerts.<alert_id>`, one per alert, written
//! with optimistic concurrency on the alert's home site.

use std::num::NonZeroU32;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Routed;
use crate::domain::{
    AlertId, Exchange, MarketCode, ParseError, Price, ThresholdPercent, TimeZoneName, UserId,
    Weekday,
};
use crate::ids::{self, MessageId};
use crate::site::Site;
use crate::subjects::subject;

/// The aggregate version of an alert right after creation.
pub const ALERT_CREATED_VERSION: u64 = 1;

/// Most markets one scheduled alert may report; keeps the SMS within a few segments.
pub const SCHEDULED_MARKETS_MAX: usize = 10;

/// Which way a price or change must move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
    Either,
}

/// Where the price was relative to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PriceSide {
    Below,
    At,
    Above,
}

impl PriceSide {
    pub fn of(price: Price, target: Price) -> PriceSide {
        match price.cmp(&target) {
            std::cmp::Ordering::Less => PriceSide::Below,
            std::cmp::Ordering::Equal => PriceSide::At,
            std::cmp::Ordering::Greater => PriceSide::Above,
        }
    }
}

/// Fire when the last trade price *crosses* the target.
///
/// Crossing semantics: the alert is armed only while the price is on the side it must cross from —
/// `below` for `up`, `above` for `down`, either strict side for `either`. `side_at_creation` records
/// where the price was when the alert was written (from the last tick the API saw). If the target was
/// already reached or passed at creation (`up` with the price `at`/`above` the target), the alert waits
/// until the price is back on the arming side before it can fire, so stale data never fires it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetPriceCondition {
    pub market: MarketCode,
    pub target: Price,
    pub direction: Direction,
    pub side_at_creation: PriceSide,
    /// The last price the API knew when the alert was written, if it knew one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_price: Option<Price>,
}

/// What a change rate is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ChangeBasis {
    /// Change since the exchange's daily reference price (Upbit `signed_change_rate`, reset 00:00 KST).
    #[serde(rename = "daily")]
    Daily,
    /// Change over the last 5 minutes of trades.
    #[serde(rename = "5m")]
    Rolling5Minutes,
    /// Change over the last hour of trades.
    #[serde(rename = "1h")]
    Rolling1Hour,
    /// Change over the last 24 hours of trades.
    #[serde(rename = "24h")]
    Rolling24Hours,
}

impl ChangeBasis {
    /// The rolling window length, `None` for the exchange's daily basis.
    pub fn window(self) -> Option<jiff::SignedDuration> {
        match self {
            ChangeBasis::Daily => None,
            ChangeBasis::Rolling5Minutes => Some(jiff::SignedDuration::from_mins(5)),
            ChangeBasis::Rolling1Hour => Some(jiff::SignedDuration::from_hours(1)),
            ChangeBasis::Rolling24Hours => Some(jiff::SignedDuration::from_hours(24)),
        }
    }
}

/// Fire when the change reaches the threshold: `up` when change >= threshold, `down` when
/// change <= -threshold, `either` when |change| >= threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeRateCondition {
    pub market: MarketCode,
    pub basis: ChangeBasis,
    pub direction: Direction,
    pub threshold: ThresholdPercent,
}

/// Fire at a time of day on given weekdays and/or dates, in a time zone, reporting current prices.
///
/// Always valid once constructed: at least one weekday or date, 1 to [`SCHEDULED_MARKETS_MAX`] distinct
/// markets, a time of day in whole minutes. Lists are kept sorted and de-duplicated so that equal
/// schedules serialize identically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "ScheduledConditionFields")]
pub struct ScheduledCondition {
    markets: Vec<MarketCode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    weekdays: Vec<Weekday>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dates: Vec<Date>,
    time_of_day: Time,
    time_zone: TimeZoneName,
}

/// The unvalidated wire form of [`ScheduledCondition`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ScheduledConditionFields {
    /// Markets whose current prices the SMS carries.
    #[schemars(length(min = 1, max = 10))]
    pub markets: Vec<MarketCode>,
    /// Weekdays on which it fires.
    #[serde(default)]
    pub weekdays: Vec<Weekday>,
    /// Calendar dates on which it fires.
    #[serde(default)]
    pub dates: Vec<Date>,
    /// Wall-clock time of day in `time_zone`, whole minutes.
    pub time_of_day: Time,
    /// Defaults to Asia/Seoul.
    #[serde(default)]
    pub time_zone: TimeZoneName,
}

impl TryFrom<ScheduledConditionFields> for ScheduledCondition {
    type Error = ParseError;

    fn try_from(fields: ScheduledConditionFields) -> Result<Self, Self::Error> {
        ScheduledCondition::new(
            fields.markets,
            fields.weekdays,
            fields.dates,
            fields.time_of_day,
            fields.time_zone,
        )
    }
}

impl ScheduledCondition {
    pub fn new(
        mut markets: Vec<MarketCode>,
        mut weekdays: Vec<Weekday>,
        mut dates: Vec<Date>,
        time_of_day: Time,
        time_zone: TimeZoneName,
    ) -> Result<Self, ParseError> {
        markets.sort();
        markets.dedup();
        weekdays.sort();
        weekdays.dedup();
        dates.sort();
        dates.dedup();
        if markets.is_empty() {
            return Err(ParseError::Schedule {
                problem: "at least one market is required",
            });
        }
        if markets.len() > SCHEDULED_MARKETS_MAX {
            return Err(ParseError::Schedule {
                problem: "at most 10 markets per scheduled alert",
            });
        }
        if weekdays.is_empty() && dates.is_empty() {
            return Err(ParseError::Schedule {
                problem: "at least one weekday or date is required",
            });
        }
        if time_of_day.second() != 0 || time_of_day.subsec_nanosecond() != 0 {
            return Err(ParseError::Schedule {
                problem: "the time of day must be whole minutes",
            });
        }
        Ok(ScheduledCondition {
            markets,
            weekdays,
            dates,
            time_of_day,
            time_zone,
        })
    }

    pub fn markets(&self) -> &[MarketCode] {
        &self.markets
    }

    pub fn weekdays(&self) -> &[Weekday] {
        &self.weekdays
    }

    pub fn dates(&self) -> &[Date] {
        &self.dates
    }

    pub fn time_of_day(&self) -> Time {
        self.time_of_day
    }

    pub fn time_zone(&self) -> &TimeZoneName {
        &self.time_zone
    }
}

/// What an alert waits for; one variant per alert kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AlertCondition {
    TargetPrice(TargetPriceCondition),
    ChangeRate(ChangeRateCondition),
    Scheduled(ScheduledCondition),
}

/// The kind of an alert, without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    TargetPrice,
    ChangeRate,
    Scheduled,
}

impl AlertKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::TargetPrice => "target_price",
            AlertKind::ChangeRate => "change_rate",
            AlertKind::Scheduled => "scheduled",
        }
    }
}

impl AlertCondition {
    pub fn kind(&self) -> AlertKind {
        match self {
            AlertCondition::TargetPrice(_) => AlertKind::TargetPrice,
            AlertCondition::ChangeRate(_) => AlertKind::ChangeRate,
            AlertCondition::Scheduled(_) => AlertKind::Scheduled,
        }
    }

    /// The markets the alert reads prices of.
    pub fn markets(&self) -> &[MarketCode] {
        match self {
            AlertCondition::TargetPrice(condition) => std::slice::from_ref(&condition.market),
            AlertCondition::ChangeRate(condition) => std::slice::from_ref(&condition.market),
            AlertCondition::Scheduled(condition) => condition.markets(),
        }
    }
}

/// Whether an alert fires once or re-arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RepeatPolicy {
    /// Fires once, then stays spent until edited.
    Once,
    /// Re-arms `cooldown_seconds` after each firing (price alerts also need the price back on the arming
    /// side; scheduled alerts fire at every occurrence and use the cooldown only to drop bursts).
    Repeat { cooldown_seconds: NonZeroU32 },
}

/// The full user-editable definition of an alert; `alert.updated` replaces it as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AlertSpec {
    pub exchange: Exchange,
    pub condition: AlertCondition,
    pub repeat: RepeatPolicy,
    /// After this instant the alert no longer fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// An alert was created (aggregate version 1).
///
/// History: v1 only knew target-price alerts and carried `market`, `target_price` and `direction`
/// (`up`/`down`) at the top level next to `exchange`, `repeat` and `expires_at`; v2 moved the
/// definition into `spec` with a `condition` enum so that change-rate and scheduled alerts could exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AlertCreated {
    pub alert_id: AlertId,
    pub user_id: UserId,
    /// Where the alert aggregate lives: its commands go to this site's origin stream.
    pub home_site: Site,
    pub spec: AlertSpec,
}

impl AlertCreated {
    pub const fn version(&self) -> u64 {
        ALERT_CREATED_VERSION
    }
}

impl Routed for AlertCreated {
    fn message_id(&self, producer: Site) -> MessageId {
        ids::alert_command(&self.alert_id, ALERT_CREATED_VERSION, producer)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::alert(site, self.alert_id.as_str())
    }
}

/// An alert's definition was replaced. A spent `once` alert is armed again by an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AlertUpdated {
    pub alert_id: AlertId,
    pub user_id: UserId,
    /// Aggregate version after this change (2 or more).
    pub version: u64,
    pub spec: AlertSpec,
}

impl Routed for AlertUpdated {
    fn message_id(&self, producer: Site) -> MessageId {
        ids::alert_command(&self.alert_id, self.version, producer)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::alert(site, self.alert_id.as_str())
    }
}

macro_rules! alert_state_event {
    ($(#[$attribute:meta])* $type:ident) => {
        $(#[$attribute])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub struct $type {
            pub alert_id: AlertId,
            pub user_id: UserId,
            /// Aggregate version after this change (2 or more).
            pub version: u64,
        }

        impl Routed for $type {
            fn message_id(&self, producer: Site) -> MessageId {
                ids::alert_command(&self.alert_id, self.version, producer)
            }

            fn subject(&self, site: Option<Site>) -> String {
                subject::alert(site, self.alert_id.as_str())
            }
        }
    };
}

alert_state_event!(
    /// The owner paused an alert: it does not fire until resumed.
    AlertPaused
);
alert_state_event!(
    /// The owner resumed a paused alert; price alerts re-arm from the current side of the price.
    AlertResumed
);
alert_state_event!(
    /// The owner deleted an alert. Terminal: no later command is accepted for it.
    AlertDeleted
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scheduled_conditions_are_validated_and_normalized() {
        let condition: ScheduledCondition = serde_json::from_value(json!({
            "markets": ["KRW-ETH", "KRW-BTC", "KRW-ETH"],
            "weekdays": ["fri", "mon"],
            "time_of_day": "09:00:00"
        }))
        .unwrap();
        assert_eq!(condition.markets().len(), 2);
        assert_eq!(condition.weekdays(), [Weekday::Mon, Weekday::Fri]);
        assert_eq!(condition.time_zone().as_str(), "Asia/Seoul");

        for invalid in [
            json!({"markets": [], "weekdays": ["mon"], "time_of_day": "09:00:00"}),
            json!({"markets": ["KRW-BTC"], "time_of_day": "09:00:00"}),
            json!({"markets": ["KRW-BTC"], "weekdays": ["mon"], "time_of_day": "09:00:30"}),
            json!({"markets": ["KRW-BTC"], "weekdays": ["mon"], "time_of_day": "09:00:00", "time_zone": "Nowhere/City"}),
        ] {
            assert!(
                serde_json::from_value::<ScheduledCondition>(invalid.clone()).is_err(),
                "{invalid}"
            );
        }
    }

    #[test]
    fn conditions_are_tagged_by_kind() {
        let condition: AlertCondition = serde_json::from_value(json!({
            "kind": "change_rate",
            "market": "KRW-BTC",
            "basis": "5m",
            "direction": "down",
            "threshold": "3.5"
        }))
        .unwrap();
        assert_eq!(condition.kind(), AlertKind::ChangeRate);
        assert_eq!(condition.markets()[0].as_str(), "KRW-BTC");
        let scheduled: AlertCondition = serde_json::from_value(json!({
            "kind": "scheduled",
            "markets": ["KRW-BTC"],
            "dates": ["2026-12-24"],
            "time_of_day": "18:30:00",
            "time_zone": "Asia/Seoul"
        }))
        .unwrap();
        assert_eq!(scheduled.kind(), AlertKind::Scheduled);
        assert!(
            serde_json::from_value::<AlertCondition>(json!({
                "kind": "change_rate", "market": "KRW-BTC", "basis": "5m", "direction": "down", "threshold": 3.5
            }))
            .is_err(),
            "numbers must not be accepted for decimals"
        );
    }

    #[test]
    fn price_side() {
        let target = Price::parse("100").unwrap();
        assert_eq!(
            PriceSide::of(Price::parse("99.9").unwrap(), target),
            PriceSide::Below
        );
        assert_eq!(
            PriceSide::of(Price::parse("100.0").unwrap(), target),
            PriceSide::At
        );
        assert_eq!(
            PriceSide::of(Price::parse("101").unwrap(), target),
            PriceSide::Above
        );
    }
}
