//! Schema versions and upcasters: how events written by older code are read by current code.
//!
//! Every event type has a current schema version ([`crate::events::EventType::current_version`]), written
//! in the envelope's `schema_version` and the `CoinAlarm-Schema-Version` header. Streams keep events for
//! a long time and projections are rebuilt from the beginning, so current code must read every version
//! ever written.
//!
//! Decoding reads `type` and `schema_version`, then applies the upcasters of that type one by one
//! (v1→v2, v2→v3, …) to the raw `data` JSON until it reaches the current version, then deserializes the
//! typed event. A version newer than the code is a typed error ([`DecodeError::VersionTooNew`]): the
//! message is not poison, the consumer is old.
//!
//! # Evolution policy
//!
//! * **Additive changes keep the version.** A new *optional* field (`#[serde(default)]`, omitted when
//!   empty) or a new enum variant that old consumers never receive keeps the version: old code ignores
//!   unknown fields, new code reads old events through the default. Consumers never use
//!   `deny_unknown_fields`.
//! * **Renames, removals, type changes and restructures bump the version** and add an upcaster from the
//!   previous version, plus a golden sample of the old shape (`golden/v<N>/<type>.json`) that must keep
//!   decoding.
//! * **Upcasters are never removed**, and golden samples are never edited: they are the record of what
//!   was once written to a stream.
//! * Producers always write the current version. During a rolling deploy, deploy consumers before
//!   producers, so that no consumer sees a version it does not know.
//!
//! # History
//!
//! | type                       | version | change                                                            |
//! |----------------------------|---------|-------------------------------------------------------------------|
//! | `alert.created`            | 1       | target-price alerts only: `market`, `target_price`, `direction` (`up`/`down`) at the top level |
//! | `alert.created`            | 2       | definition moved into `spec` with a `condition` enum (target price, change rate, scheduled) and `side_at_creation` |
//! | `user.preferences_changed` | 1       | flat fields, `locale` as a BCP 47 tag (`"ko-KR"`)                 |
//! | `user.preferences_changed` | 2       | fields nested in `preferences`; `locale` is the language only (`"ko"`) |
//!
//! Every other type is at version 1.

use serde_json::{Map, Value};

use crate::domain::Locale;
use crate::envelope::DecodeError;
use crate::events::EventType;

/// Why an upcaster could not rewrite an old payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    #[error("the payload is not a JSON object")]
    NotAnObject,
    #[error("field {field:?} is missing")]
    MissingField { field: &'static str },
    #[error("field {field:?} has an unexpected value {found}")]
    UnexpectedValue { field: &'static str, found: String },
}

/// Rewrites the `data` of one event type from `from_version` to `from_version + 1`.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    pub event_type: EventType,
    pub from_version: u32,
    /// What changed, for humans reading `UPCASTERS`.
    pub change: &'static str,
    pub upcast: fn(Value) -> Result<Value, UpcastError>,
}

/// Every upcaster ever written. Never remove one: old events stay in streams.
pub static UPCASTERS: &[Upcaster] = &[
    Upcaster {
        event_type: EventType::AlertCreated,
        from_version: 1,
        change: "nest the target-price fields into spec.condition; derive side_at_creation from direction",
        upcast: alert_created_v1_to_v2,
    },
    Upcaster {
        event_type: EventType::UserPreferencesChanged,
        from_version: 1,
        change: "nest the fields into preferences; reduce the BCP 47 locale to its language",
        upcast: user_preferences_changed_v1_to_v2,
    },
];

/// Brings `data` written as `version` of `event_type` up to the current version.
pub fn upcast(event_type: EventType, version: u32, mut data: Value) -> Result<Value, DecodeError> {
    let current = event_type.current_version();
    if version == 0 {
        return Err(DecodeError::VersionZero {
            event_type,
            version,
        });
    }
    if version > current {
        return Err(DecodeError::VersionTooNew {
            event_type,
            version,
            current,
        });
    }
    for from_version in version..current {
        let upcaster = UPCASTERS
            .iter()
            .find(|upcaster| {
                upcaster.event_type == event_type && upcaster.from_version == from_version
            })
            // A gap in the chain is a bug of this crate, caught by `every_old_version_has_an_upcaster`.
            .ok_or(DecodeError::VersionTooNew {
                event_type,
                version,
                current: from_version,
            })?;
        data = (upcaster.upcast)(data).map_err(|source| DecodeError::Upcast {
            event_type,
            from_version,
            source,
        })?;
    }
    Ok(data)
}

fn into_object(data: Value) -> Result<Map<String, Value>, UpcastError> {
    match data {
        Value::Object(object) => Ok(object),
        _ => Err(UpcastError::NotAnObject),
    }
}

fn take(object: &mut Map<String, Value>, field: &'static str) -> Result<Value, UpcastError> {
    object
        .remove(field)
        .ok_or(UpcastError::MissingField { field })
}

/// v1 API only offered "notify me when the price goes up to / down to X" and refused targets already on
/// the wrong side of the current price, so `up` implies the price was below the target at creation.
fn alert_created_v1_to_v2(data: Value) -> Result<Value, UpcastError> {
    let mut object = into_object(data)?;
    let exchange = take(&mut object, "exchange")?;
    let market = take(&mut object, "market")?;
    let target = take(&mut object, "target_price")?;
    let direction = take(&mut object, "direction")?;
    let repeat = take(&mut object, "repeat")?;
    let expires_at = object.remove("expires_at").filter(|value| !value.is_null());
    let side_at_creation = match direction.as_str() {
        Some("up") => "below",
        Some("down") => "above",
        _ => {
            return Err(UpcastError::UnexpectedValue {
                field: "direction",
                found: direction.to_string(),
            });
        }
    };
    let mut condition = Map::new();
    condition.insert("kind".to_owned(), Value::from("target_price"));
    condition.insert("market".to_owned(), market);
    condition.insert("target".to_owned(), target);
    condition.insert("direction".to_owned(), direction);
    condition.insert("side_at_creation".to_owned(), Value::from(side_at_creation));
    let mut spec = Map::new();
    spec.insert("exchange".to_owned(), exchange);
    spec.insert("condition".to_owned(), Value::Object(condition));
    spec.insert("repeat".to_owned(), repeat);
    if let Some(expires_at) = expires_at {
        spec.insert("expires_at".to_owned(), expires_at);
    }
    object.insert("spec".to_owned(), Value::Object(spec));
    Ok(Value::Object(object))
}

fn user_preferences_changed_v1_to_v2(data: Value) -> Result<Value, UpcastError> {
    let mut object = into_object(data)?;
    let locale_tag = take(&mut object, "locale")?;
    let locale = locale_tag
        .as_str()
        .and_then(|tag| Locale::parse(tag).ok())
        .ok_or_else(|| UpcastError::UnexpectedValue {
            field: "locale",
            found: locale_tag.to_string(),
        })?;
    let mut preferences = Map::new();
    preferences.insert("locale".to_owned(), Value::from(locale.as_str()));
    preferences.insert("time_zone".to_owned(), take(&mut object, "time_zone")?);
    for optional in ["quiet_hours", "daily_sms_cap"] {
        if let Some(value) = object.remove(optional).filter(|value| !value.is_null()) {
            preferences.insert(optional.to_owned(), value);
        }
    }
    object.insert("preferences".to_owned(), Value::Object(preferences));
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    #[test]
    fn every_old_version_has_exactly_one_upcaster() {
        for event_type in EventType::ALL {
            for from_version in 1..event_type.current_version() {
                let count = UPCASTERS
                    .iter()
                    .filter(|upcaster| {
                        upcaster.event_type == *event_type && upcaster.from_version == from_version
                    })
                    .count();
                assert_eq!(count, 1, "{event_type} v{from_version}");
            }
        }
        for upcaster in UPCASTERS {
            assert!(
                upcaster.from_version < upcaster.event_type.current_version(),
                "upcaster past the current version of {}",
                upcaster.event_type
            );
        }
    }

    #[test]
    fn alert_created_v1_becomes_a_target_price_condition() {
        let v1 = json!({
            "alert_id": "a1",
            "user_id": "u1",
            "home_site": "onprem",
            "exchange": "upbit",
            "market": "KRW-BTC",
            "target_price": "100000000",
            "direction": "down",
            "repeat": {"mode": "once"},
            "expires_at": null
        });
        let v2 = upcast(EventType::AlertCreated, 1, v1).unwrap();
        assert_eq!(
            v2,
            json!({
                "alert_id": "a1",
                "user_id": "u1",
                "home_site": "onprem",
                "spec": {
                    "exchange": "upbit",
                    "condition": {
                        "kind": "target_price",
                        "market": "KRW-BTC",
                        "target": "100000000",
                        "direction": "down",
                        "side_at_creation": "above"
                    },
                    "repeat": {"mode": "once"}
                }
            })
        );
    }

    #[test]
    fn user_preferences_v1_locale_tags_become_languages() {
        let v1 = json!({
            "user_id": "u1",
            "version": 2,
            "locale": "en-US",
            "time_zone": "Europe/London",
            "daily_sms_cap": 20
        });
        let v2 = upcast(EventType::UserPreferencesChanged, 1, v1).unwrap();
        assert_eq!(
            v2,
            json!({
                "user_id": "u1",
                "version": 2,
                "preferences": {"locale": "en", "time_zone": "Europe/London", "daily_sms_cap": 20}
            })
        );
        let unsupported =
            json!({"user_id": "u1", "version": 2, "locale": "fr-FR", "time_zone": "UTC"});
        assert!(matches!(
            upcast(EventType::UserPreferencesChanged, 1, unsupported),
            Err(DecodeError::Upcast { .. })
        ));
    }

    #[test]
    fn current_versions_pass_through_untouched() {
        let data = json!({"anything": true});
        assert_eq!(
            upcast(EventType::TickObserved, 1, data.clone()).unwrap(),
            data
        );
    }
}
