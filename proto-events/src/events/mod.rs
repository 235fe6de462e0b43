//! Every event of the product, one struct each, and the [`Event`] enum a consumer decodes any of them into.
//!
//! Events are facts in the past tense. Each has a type name (`alert.created`), a current schema version,
//! a category (which stream family it lives in), a deterministic message id ([`crate::ids`]) and a
//! subject ([`crate::subjects`]). The catalogue below is the single list of all of them; adding an event
//! means adding a struct and one line to it.

pub mod alerts;
pub mod auth;
pub mod deadletter;
pub mod dispatch;
pub mod sites;
pub mod ticks;
pub mod triggers;
pub mod users;

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ids::MessageId;
use crate::site::Site;
use crate::subjects::Category;

pub use alerts::{
    AlertCondition, AlertCreated, AlertDeleted, AlertKind, AlertPaused, AlertResumed, AlertSpec,
    AlertUpdated, ChangeBasis, ChangeRateCondition, Direction, PriceSide, RepeatPolicy,
    ScheduledCondition, TargetPriceCondition,
};
pub use auth::{SessionRevoked, SignInCodeRequested, SignInFailed, SignInFailure, SignInSucceeded};
pub use deadletter::{MessageParked, ParkedPayload};
pub use dispatch::{
    DeadLetterReason, DispatchClaimed, DispatchDeadLettered, DispatchDelivered, DispatchFailed,
    DispatchPurpose, DispatchRequested, DispatchSent, DispatchSkipped, DispatchUndelivered,
    MessageBody, SkipReason,
};
pub use sites::SiteHeartbeatEmitted;
pub use ticks::{StreamType, TickObserved};
pub use triggers::{ObservedPrice, TickRef, TriggerFired};
pub use users::{Preferences, UserPreferencesChanged, UserRegistered};

/// Where an event is published and under which `Nats-Msg-Id`; implemented by every event struct.
pub trait Routed {
    /// The deterministic message id ([`crate::ids`]). `producer` is the site publishing the event; only
    /// the rules that deliberately keep cross-site copies apart use it.
    fn message_id(&self, producer: Site) -> MessageId;

    /// The subject: origin form (`onprem.alerts.<id>`) with `Some(site)`, aggregate form
    /// (`alerts.<id>`) with `None`.
    fn subject(&self, site: Option<Site>) -> String;
}

/// An event struct: its type name and schema version are fixed by the catalogue.
pub trait EventPayload:
    Routed
    + Serialize
    + DeserializeOwned
    + JsonSchema
    + Clone
    + Into<Event>
    + TryFrom<Event, Error = UnexpectedEventType>
{
    const EVENT_TYPE: EventType;
}

/// Anything that can be the `data` of an envelope: an event struct or the [`Event`] enum.
pub trait EventData: Routed + Serialize {
    fn event_type(&self) -> EventType;
}

impl<T: EventPayload> EventData for T {
    fn event_type(&self) -> EventType {
        T::EVENT_TYPE
    }
}

/// Error of `TryFrom<Event>` for an event struct: the event was of another type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expected a {expected} event, found {found}")]
pub struct UnexpectedEventType {
    pub expected: EventType,
    pub found: EventType,
    pub event: Box<Event>,
}

macro_rules! event_catalog {
    ($(
        $(#[$attribute:meta])*
        $variant:ident => $name:literal, version: $version:literal, category: $category:ident;
    )+) => {
        /// The type of an event: its name on the wire and in the `CoinAlarm-Event-Type` header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $($(#[$attribute])* $variant,)+
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)+];

            /// The wire name, `<aggregate>.<past-tense verb>`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)+
                }
            }

            /// The schema version this code writes and every older version is upcast to.
            pub const fn current_version(self) -> u32 {
                match self {
                    $(EventType::$variant => $version,)+
                }
            }

            /// The stream family the event is stored in.
            pub const fn category(self) -> Category {
                match self {
                    $(EventType::$variant => Category::$category,)+
                }
            }

            pub fn from_name(name: &str) -> Option<EventType> {
                match name {
                    $($name => Some(EventType::$variant),)+
                    _ => None,
                }
            }

            /// JSON schema of a full message of this type (envelope and payload).
            pub(crate) fn message_schema(self) -> schemars::Schema {
                match self {
                    $(EventType::$variant => crate::schema::message_schema_for::<$variant>(),)+
                }
            }
        }

        /// Any event; what a consumer of a whole stream decodes into.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event {
            $($(#[$attribute])* $variant($variant),)+
        }

        impl Event {
            /// Deserializes a payload that is already at the current version of `event_type`.
            pub(crate) fn from_current_data(
                event_type: EventType,
                data: serde_json::Value,
            ) -> Result<Event, serde_json::Error> {
                match event_type {
                    $(EventType::$variant => serde_json::from_value::<$variant>(data).map(Event::$variant),)+
                }
            }
        }

        impl Event {
            /// [`Event::from_current_data`] straight from the payload's JSON text, with no
            /// intermediate `Value`: the path of every message already at the current version.
            pub(crate) fn from_current_json(
                event_type: EventType,
                data: &str,
            ) -> Result<Event, serde_json::Error> {
                match event_type {
                    $(EventType::$variant => serde_json::from_str::<$variant>(data).map(Event::$variant),)+
                }
            }
        }

        impl EventData for Event {
            fn event_type(&self) -> EventType {
                match self {
                    $(Event::$variant(_) => EventType::$variant,)+
                }
            }
        }

        impl Routed for Event {
            fn message_id(&self, producer: Site) -> MessageId {
                match self {
                    $(Event::$variant(payload) => payload.message_id(producer),)+
                }
            }

            fn subject(&self, site: Option<Site>) -> String {
                match self {
                    $(Event::$variant(payload) => payload.subject(site),)+
                }
            }
        }

        /// The payload alone: the envelope writes the type and version next to it.
        impl Serialize for Event {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Event::$variant(payload) => payload.serialize(serializer),)+
                }
            }
        }

        $(
            impl EventPayload for $variant {
                const EVENT_TYPE: EventType = EventType::$variant;
            }

            impl From<$variant> for Event {
                fn from(payload: $variant) -> Event {
                    Event::$variant(payload)
                }
            }

            impl TryFrom<Event> for $variant {
                type Error = UnexpectedEventType;

                fn try_from(event: Event) -> Result<Self, Self::Error> {
                    match event {
                        Event::$variant(payload) => Ok(payload),
                        other => Err(UnexpectedEventType {
                            expected: EventType::$variant,
                            found: other.event_type(),
                            event: Box::new(other),
                        }),
                    }
                }
            }
        )+
    };
}

event_catalog! {
    /// A person signed in for the first time with a phone number.
    UserRegistered => "user.registered", version: 1, category: Users;
    /// A user's locale, time zone, quiet hours or SMS cap changed. v2: nested `preferences`, `ko`/`en`.
    UserPreferencesChanged => "user.preferences_changed", version: 2, category: Users;
    /// A sign-in code was issued for a phone number (sealed, never in clear text).
    SignInCodeRequested => "auth.code_requested", version: 1, category: Auth;
    /// A sign-in code was verified.
    SignInSucceeded => "auth.sign_in_succeeded", version: 1, category: Auth;
    /// A sign-in code verification failed.
    SignInFailed => "auth.sign_in_failed", version: 1, category: Auth;
    /// A session was signed out before its expiry.
    SessionRevoked => "auth.session_revoked", version: 1, category: Auth;
    /// An alert was created. v2: the condition became an enum of alert kinds.
    AlertCreated => "alert.created", version: 2, category: Alerts;
    /// An alert's definition was replaced.
    AlertUpdated => "alert.updated", version: 1, category: Alerts;
    /// An alert was paused by its owner.
    AlertPaused => "alert.paused", version: 1, category: Alerts;
    /// A paused alert was resumed.
    AlertResumed => "alert.resumed", version: 1, category: Alerts;
    /// An alert was deleted.
    AlertDeleted => "alert.deleted", version: 1, category: Alerts;
    /// A trade was observed on an exchange.
    TickObserved => "tick.observed", version: 1, category: Ticks;
    /// An alert fired.
    TriggerFired => "trigger.fired", version: 1, category: Triggers;
    /// An SMS was requested.
    DispatchRequested => "dispatch.requested", version: 1, category: Dispatch;
    /// A trigger was deliberately not turned into an SMS.
    DispatchSkipped => "dispatch.skipped", version: 1, category: Dispatch;
    /// A site's dispatcher claimed a dispatch before calling the provider.
    DispatchClaimed => "dispatch.claimed", version: 1, category: Dispatch;
    /// The provider accepted the SMS.
    DispatchSent => "dispatch.sent", version: 1, category: Dispatch;
    /// A send attempt failed.
    DispatchFailed => "dispatch.failed", version: 1, category: Dispatch;
    /// The provider reported the SMS delivered to the handset.
    DispatchDelivered => "dispatch.delivered", version: 1, category: Dispatch;
    /// The provider reported the SMS could not be delivered.
    DispatchUndelivered => "dispatch.undelivered", version: 1, category: Dispatch;
    /// The dispatcher gave up on a dispatch.
    DispatchDeadLettered => "dispatch.dead_lettered", version: 1, category: Dispatch;
    /// A site reported itself alive.
    SiteHeartbeatEmitted => "site.heartbeat_emitted", version: 1, category: Sites;
    /// A consumer parked a message it could not process.
    MessageParked => "deadletter.parked", version: 1, category: Deadletter;
}

impl Event {
    pub fn category(&self) -> Category {
        self.event_type().category()
    }

    pub fn type_name(&self) -> &'static str {
        self.event_type().as_str()
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Error of parsing an event type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        EventType::from_name(name).ok_or_else(|| UnknownEventType(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed_by_their_aggregate() {
        let mut names: Vec<&str> = EventType::ALL
            .iter()
            .map(|event_type| event_type.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventType::ALL.len());
        for event_type in EventType::ALL {
            assert_eq!(EventType::from_name(event_type.as_str()), Some(*event_type));
            assert!(event_type.current_version() >= 1);
            let prefix = event_type.as_str().split('.').next().unwrap_or_default();
            let expected_prefix = match event_type.category() {
                Category::Ticks => "tick",
                Category::Users => "user",
                Category::Alerts => "alert",
                Category::Auth => "auth",
                Category::Triggers => "trigger",
                Category::Dispatch => "dispatch",
                Category::Sites => "site",
                Category::Deadletter => "deadletter",
            };
            assert_eq!(prefix, expected_prefix, "{event_type}");
        }
    }
}
