//! Deterministic message ids: the one place that says which id every event is published with.
//!
//! Anything that can be produced twice — a tick seen by both sites' ingesters, a trigger computed by both
//! matchers, a scheduled occurrence re-evaluated after a restart, a retried publish — must get the *same*
//! `Nats-Msg-Id` both times, so JetStream's duplicate window (origin and aggregate streams) or the
//! consumer drops the copy. Conversely, two *different* facts must never share an id, or one of them is
//! silently lost.
//!
//! | event                      | `Nats-Msg-Id`                                         | same id when …                          |
//! |----------------------------|-------------------------------------------------------|-----------------------------------------|
//! | `tick.observed`            | `tick:<exchange>:<market>:<sequential_id>`            | both ingesters see the same trade       |
//! | `user.*`                   | `user:<user_id>:<version>:<producer site>`            | the same command is retried             |
//! | `alert.*`                  | `alert:<alert_id>:<version>:<producer site>`          | the same command is retried             |
//! | `auth.code_requested`      | `auth:<phone_hash>:<request_id>`                      | the API retries the publish             |
//! | `auth.sign_in_succeeded`   | `auth:<phone_hash>:<request_id>:ok`                   | the API retries the publish             |
//! | `auth.sign_in_failed`      | `auth:<phone_hash>:<request_id>:fail<attempt>`        | the API retries the publish             |
//! | `auth.session_revoked`     | `auth:<phone_hash>:<session_id>:out`                  | the API retries the publish             |
//! | `trigger.fired`            | the trigger id: `trg:<alert_id>:g<generation>`        | both matchers fire the same arming      |
//! |                            | or `trg:<alert_id>:o<occurrence unix seconds>`        | a schedule occurrence is re-evaluated   |
//! | `dispatch.requested`       | `req:<dispatch_id>`                                   | both notifiers handle the same triggers |
//! | `dispatch.skipped`         | `skip:<trigger_id>`                                   | both notifiers skip the same trigger    |
//! | `dispatch.<outcome>`       | `out:<dispatch_id>:<kind>:<site>:<attempt>`           | one site retries its own publish        |
//! | `site.heartbeat_emitted`   | `hb:<site>:<sequence>`                                | never (one per beat)                    |
//! | `deadletter.parked`        | `dlq:<stream>:<stream_sequence>:<consumer>`           | a consumer parks the same message again |
//!
//! Derived ids:
//!
//! * **Trigger id** = the `trigger.fired` message id above. It is computable from the alert and the
//!   arming generation (target price, change rate) or the scheduled occurrence, so both sites compute it.
//! * **Dispatch id** = `dsp-` + the first 128 bits of SHA-256 over the sorted, de-duplicated trigger ids it
//!   covers (or over the sign-in request id). The same triggers coalesced at either site give the same
//!   dispatch id, so the request is de-duplicated and the claim protocol has one key to agree on.
//!
//! Why some ids carry a site and others do not:
//!
//! * Outcomes (`out:`) include the site and the attempt on purpose. If both sites ever send the same
//!   dispatch, the two `dispatch.sent` events must both survive to the aggregate stream so that the
//!   duplicate is *visible* (trace, metrics), not merged away by de-duplication.
//! * Commands (`user:`, `alert:`) include the site that produced them. A command normally goes to the
//!   aggregate's home origin stream under optimistic concurrency, so only one command per version can
//!   exist there. When the home site is unreachable a command is written locally instead; if the other
//!   site accepted a *different* command for the same version, the two must both reach the aggregate
//!   stream as a visible cross-site conflict for the projection's merge rule, rather than one being
//!   dropped as a "duplicate". A retry of the same command from the same site keeps its id.
//!
//! All ids are printable ASCII without spaces, at most 255 bytes (valid `Nats-Msg-Id` values), and the
//! ones used as subject tokens (trigger id, dispatch id) also pass [`crate::subjects::is_valid_token`].
//! Components are validated domain types whose alphabets exclude `:`, so every id splits unambiguously.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::domain::{
    AlertId, Exchange, MarketCode, NatsName, ParseError, PhoneHash, UserId, impl_text_value,
};
use crate::site::Site;

/// Longest message id accepted; far below NATS header limits, and the longest rule above uses ~110.
pub const MESSAGE_ID_MAX_LENGTH: usize = 255;

/// A `Nats-Msg-Id` value; also used for correlation and causation ids in the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    /// Accepts any printable ASCII text without spaces, so correlation ids from outside (an HTTP request
    /// id) fit too. Ids for events are built by the functions of this module, not by hand.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let valid = (1..=MESSAGE_ID_MAX_LENGTH).contains(&input.len())
            && input.bytes().all(|byte| byte.is_ascii_graphic());
        if valid {
            Ok(MessageId(input.to_owned()))
        } else {
            Err(ParseError::Format {
                what: "message id",
                input: input.to_owned(),
                expected: "1 to 255 printable ASCII characters without spaces",
            })
        }
    }

    /// For ids assembled from validated parts, whose alphabet and length are known to be valid.
    fn from_parts(text: String) -> Self {
        debug_assert!(
            MessageId::parse(&text).is_ok(),
            "invalid message id {text:?}"
        );
        MessageId(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl_text_value!(MessageId, "message id", {
    "type": "string",
    "pattern": "^[!-~]{1,255}$",
    "description": "Deterministic message id, also sent as the Nats-Msg-Id header.",
});

impl From<&TriggerId> for MessageId {
    fn from(trigger_id: &TriggerId) -> Self {
        MessageId::from_parts(trigger_id.text.clone())
    }
}

/// How a trigger came about: a crossing while the alert was armed, or a scheduled occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Firing {
    /// An arming of a price or change-rate alert fired. The matcher numbers armings
    /// `alert version × 10⁹ + n` (n counts firings under that version, from 1), so an edit never
    /// reuses an earlier generation. Both matchers derive it from the same stream history.
    Armed { generation: u64 },
    /// The scheduled occurrence at this instant (whole seconds) fired.
    Scheduled { occurrence: Timestamp },
}

/// The id of one firing of one alert; also the `trigger.fired` message id and a subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TriggerId {
    text: String,
    alert_id: AlertId,
    /// `Armed` generation, or the occurrence in unix seconds.
    firing_key: FiringKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum FiringKey {
    Generation(u64),
    OccurrenceSecond(i64),
}

impl TriggerId {
    /// The trigger id of a firing. Scheduled occurrences are keyed by whole seconds: schedules have
    /// minute resolution, and a sub-second difference between the two sites must not split the id.
    pub fn new(alert_id: &AlertId, firing: Firing) -> Self {
        let firing_key = match firing {
            Firing::Armed { generation } => FiringKey::Generation(generation),
            Firing::Scheduled { occurrence } => FiringKey::OccurrenceSecond(occurrence.as_second()),
        };
        Self::from_key(alert_id.clone(), firing_key)
    }

    fn from_key(alert_id: AlertId, firing_key: FiringKey) -> Self {
        let text = match firing_key {
            FiringKey::Generation(generation) => format!("trg:{alert_id}:g{generation}"),
            FiringKey::OccurrenceSecond(second) => format!("trg:{alert_id}:o{second}"),
        };
        TriggerId {
            text,
            alert_id,
            firing_key,
        }
    }

    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let invalid = || ParseError::Format {
            what: "trigger id",
            input: input.to_owned(),
            expected: "trg:<alert_id>:g<generation> or trg:<alert_id>:o<unix seconds>",
        };
        let rest = input.strip_prefix("trg:").ok_or_else(invalid)?;
        let (alert_text, firing_text) = rest.rsplit_once(':').ok_or_else(invalid)?;
        let alert_id = AlertId::parse(alert_text).map_err(|_| invalid())?;
        let firing_key = if let Some(generation) = firing_text.strip_prefix('g') {
            FiringKey::Generation(generation.parse().map_err(|_| invalid())?)
        } else if let Some(second) = firing_text.strip_prefix('o') {
            let second: i64 = second.parse().map_err(|_| invalid())?;
            // Only instants jiff can represent, so that `firing()` is exact.
            Timestamp::from_second(second).map_err(|_| invalid())?;
            FiringKey::OccurrenceSecond(second)
        } else {
            return Err(invalid());
        };
        let parsed = Self::from_key(alert_id, firing_key);
        // Refuses "g007" or "o+5": one firing must have exactly one spelling.
        if parsed.text == input {
            Ok(parsed)
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn alert_id(&self) -> &AlertId {
        &self.alert_id
    }

    /// The firing this id stands for (occurrences at whole-second precision).
    pub fn firing(&self) -> Firing {
        match self.firing_key {
            FiringKey::Generation(generation) => Firing::Armed { generation },
            FiringKey::OccurrenceSecond(second) => Firing::Scheduled {
                // In range: checked by `parse`, or taken from a valid `Timestamp` by `new`.
                occurrence: Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH),
            },
        }
    }

    pub fn message_id(&self) -> MessageId {
        MessageId::from(self)
    }
}

impl_text_value!(TriggerId, "trigger id", {
    "type": "string",
    "pattern": "^trg:[A-Za-z0-9_-]{1,64}:(g[0-9]+|o-?[0-9]+)$",
    "description": "Trigger id: trg:<alert_id>:g<generation> or trg:<alert_id>:o<occurrence unix seconds>.",
});

/// The id of one SMS to send, derived from what it covers so both sites derive the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DispatchId(String);

impl DispatchId {
    /// Separates dispatch-id hashes from any other SHA-256 use of the same strings.
    const HASH_DOMAIN: &'static [u8] = b"coinalarm.dispatch-id.v1\n";

    /// The dispatch that covers these triggers (order and repetitions do not matter).
    /// `None` for an empty list: a dispatch always covers something.
    pub fn for_triggers(trigger_ids: &[TriggerId]) -> Option<Self> {
        let mut texts: Vec<&str> = trigger_ids.iter().map(TriggerId::as_str).collect();
        texts.sort_unstable();
        texts.dedup();
        if texts.is_empty() {
            return None;
        }
        Some(Self::derive(&texts))
    }

    /// The dispatch that carries the code of one sign-in request.
    pub fn for_sign_in(phone_hash: &PhoneHash, request_id: &uuid::Uuid) -> Self {
        Self::derive(&[sign_in_requested(phone_hash, request_id).as_str()])
    }

    fn derive(sources: &[&str]) -> Self {
        let mut hasher = sha2::Sha256::new();
        hasher.update(Self::HASH_DOMAIN);
        for source in sources {
            hasher.update(source.as_bytes());
            hasher.update(b"\n");
        }
        let digest = hasher.finalize();
        DispatchId(format!("dsp-{}", hex::encode(&digest[..16])))
    }

    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let valid = input.strip_prefix("dsp-").is_some_and(|hash| {
            hash.len() == 32
                && hash
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        });
        if valid {
            Ok(DispatchId(input.to_owned()))
        } else {
            Err(ParseError::Format {
                what: "dispatch id",
                input: input.to_owned(),
                expected: "dsp- followed by 32 lower-case hex digits",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl_text_value!(DispatchId, "dispatch id", {
    "type": "string",
    "pattern": "^dsp-[0-9a-f]{32}$",
    "description": "Dispatch id: dsp- and 128 bits of SHA-256 over the sorted trigger ids (or sign-in request) it covers.",
});

/// What happened to a dispatch after it was requested; the `<kind>` part of outcome message ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutcomeKind {
    Claimed,
    Sent,
    Failed,
    Delivered,
    Undelivered,
    DeadLettered,
}

impl OutcomeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Claimed => "claimed",
            OutcomeKind::Sent => "sent",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Delivered => "delivered",
            OutcomeKind::Undelivered => "undelivered",
            OutcomeKind::DeadLettered => "dead",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// `tick:<exchange>:<market>:<sequential_id>`
pub fn tick(exchange: &Exchange, market: &MarketCode, sequential_id: u64) -> MessageId {
    MessageId::from_parts(format!("tick:{exchange}:{market}:{sequential_id}"))
}

/// `user:<user_id>:<version>:<producer site>`
pub fn user_command(user_id: &UserId, version: u64, producer: Site) -> MessageId {
    MessageId::from_parts(format!("user:{user_id}:{version}:{producer}"))
}

/// `alert:<alert_id>:<version>:<producer site>`
pub fn alert_command(alert_id: &AlertId, version: u64, producer: Site) -> MessageId {
    MessageId::from_parts(format!("alert:{alert_id}:{version}:{producer}"))
}

/// `auth:<phone_hash>:<request_id>`
pub fn sign_in_requested(phone_hash: &PhoneHash, request_id: &uuid::Uuid) -> MessageId {
    MessageId::from_parts(format!("auth:{phone_hash}:{request_id}"))
}

/// `auth:<phone_hash>:<request_id>:ok`
pub fn sign_in_succeeded(phone_hash: &PhoneHash, request_id: &uuid::Uuid) -> MessageId {
    MessageId::from_parts(format!("auth:{phone_hash}:{request_id}:ok"))
}

/// `auth:<phone_hash>:<request_id>:fail<attempt>`
pub fn sign_in_failed(phone_hash: &PhoneHash, request_id: &uuid::Uuid, attempt: u32) -> MessageId {
    MessageId::from_parts(format!("auth:{phone_hash}:{request_id}:fail{attempt}"))
}

/// `auth:<phone_hash>:<session_id>:out`
pub fn session_revoked(phone_hash: &PhoneHash, session_id: &uuid::Uuid) -> MessageId {
    MessageId::from_parts(format!("auth:{phone_hash}:{session_id}:out"))
}

/// The trigger id itself.
pub fn trigger(trigger_id: &TriggerId) -> MessageId {
    trigger_id.message_id()
}

/// `req:<dispatch_id>`
pub fn dispatch_requested(dispatch_id: &DispatchId) -> MessageId {
    MessageId::from_parts(format!("req:{dispatch_id}"))
}

/// `skip:<trigger_id>`
pub fn dispatch_skipped(trigger_id: &TriggerId) -> MessageId {
    MessageId::from_parts(format!("skip:{trigger_id}"))
}

/// `out:<dispatch_id>:<kind>:<site>:<attempt>`
pub fn dispatch_outcome(
    dispatch_id: &DispatchId,
    kind: OutcomeKind,
    site: Site,
    attempt: u32,
) -> MessageId {
    MessageId::from_parts(format!("out:{dispatch_id}:{kind}:{site}:{attempt}"))
}

/// `hb:<site>:<sequence>`
pub fn heartbeat(site: Site, sequence: u64) -> MessageId {
    MessageId::from_parts(format!("hb:{site}:{sequence}"))
}

/// `dlq:<stream>:<stream_sequence>:<consumer>`
pub fn dead_letter(stream: &NatsName, stream_sequence: u64, consumer: &NatsName) -> MessageId {
    MessageId::from_parts(format!("dlq:{stream}:{stream_sequence}:{consumer}"))
}

impl FromStr for OutcomeKind {
    type Err = ParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        [
            OutcomeKind::Claimed,
            OutcomeKind::Sent,
            OutcomeKind::Failed,
            OutcomeKind::Delivered,
            OutcomeKind::Undelivered,
            OutcomeKind::DeadLettered,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == input)
        .ok_or_else(|| ParseError::Format {
            what: "outcome kind",
            input: input.to_owned(),
            expected: "claimed, sent, failed, delivered, undelivered or dead",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subjects::is_valid_token;
    use pretty_assertions::assert_eq;

    fn alert_id() -> AlertId {
        AlertId::parse("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b").unwrap()
    }

    fn phone_hash() -> PhoneHash {
        PhoneHash::parse(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn message_ids_follow_the_table() {
        let exchange = Exchange::upbit();
        let market = MarketCode::parse("KRW-BTC").unwrap();
        assert_eq!(
            tick(&exchange, &market, 17_000_000_123).as_str(),
            "tick:upbit:KRW-BTC:17000000123"
        );
        let user = UserId::parse("u1").unwrap();
        assert_eq!(
            user_command(&user, 3, Site::Cloud).as_str(),
            "user:u1:3:cloud"
        );
        assert_eq!(
            alert_command(&alert_id(), 1, Site::Onprem).as_str(),
            "alert:0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b:1:onprem"
        );
        let request = uuid::Uuid::nil();
        assert_eq!(
            sign_in_failed(&phone_hash(), &request, 2).as_str(),
            format!(
                "auth:{}:00000000-0000-0000-0000-000000000000:fail2",
                "ab".repeat(32)
            )
        );
        assert_eq!(heartbeat(Site::Onprem, 42).as_str(), "hb:onprem:42");
        let dispatch = DispatchId::for_sign_in(&phone_hash(), &request);
        assert_eq!(
            dispatch_outcome(&dispatch, OutcomeKind::Sent, Site::Cloud, 2).as_str(),
            format!("out:{dispatch}:sent:cloud:2")
        );
        let stream = NatsName::parse("TRIGGERS").unwrap();
        let consumer = NatsName::parse("notifier").unwrap();
        assert_eq!(
            dead_letter(&stream, 9, &consumer).as_str(),
            "dlq:TRIGGERS:9:notifier"
        );
    }

    #[test]
    fn trigger_ids_round_trip_and_are_subject_tokens() {
        let armed = TriggerId::new(&alert_id(), Firing::Armed { generation: 3 });
        assert_eq!(
            armed.as_str(),
            "trg:0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b:g3"
        );
        assert_eq!(TriggerId::parse(armed.as_str()), Ok(armed.clone()));
        assert!(is_valid_token(armed.as_str()));
        assert_eq!(armed.message_id().as_str(), armed.as_str());

        let occurrence: Timestamp = "2026-11-02T00:00:00.250Z".parse().unwrap();
        let scheduled = TriggerId::new(&alert_id(), Firing::Scheduled { occurrence });
        assert_eq!(
            scheduled.as_str(),
            "trg:0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b:o1793577600"
        );
        assert_eq!(
            scheduled.firing(),
            Firing::Scheduled {
                occurrence: "2026-11-02T00:00:00Z".parse().unwrap()
            }
        );
        assert_eq!(
            TriggerId::parse(scheduled.as_str()).unwrap().alert_id(),
            &alert_id()
        );
        assert!(is_valid_token(scheduled.as_str()));

        for invalid in [
            "trg:a:g007",
            "trg:a:o99999999999999",
            "trg:a:o+5",
            "trg:a:x1",
            "trg::g1",
            "tr:a:g1",
            "trg:a.b:g1",
            "trg:a:g",
        ] {
            assert!(TriggerId::parse(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn dispatch_ids_ignore_order_and_repetition() {
        let first = TriggerId::new(&alert_id(), Firing::Armed { generation: 1 });
        let second = TriggerId::new(&alert_id(), Firing::Armed { generation: 2 });
        let forward = DispatchId::for_triggers(&[first.clone(), second.clone()]).unwrap();
        let backward = DispatchId::for_triggers(&[second.clone(), first.clone(), second]).unwrap();
        assert_eq!(forward, backward);
        assert_ne!(
            forward,
            DispatchId::for_triggers(std::slice::from_ref(&first)).unwrap()
        );
        assert_eq!(DispatchId::for_triggers(&[]), None);
        assert!(is_valid_token(forward.as_str()));
        assert_eq!(DispatchId::parse(forward.as_str()), Ok(forward.clone()));
        assert!(DispatchId::parse("dsp-XYZ").is_err());
        // Pinned (computed independently): changing the derivation would give old and new code different
        // dispatch ids for the same trigger during a rolling deploy, and the SMS would go out twice.
        assert_eq!(
            DispatchId::for_triggers(&[first]).unwrap().as_str(),
            "dsp-7219f0250fb0c412bdbb3add514e79cd"
        );
    }

    #[test]
    fn message_ids_refuse_whitespace_and_overlong_text() {
        assert!(MessageId::parse("a b").is_err());
        assert!(MessageId::parse("").is_err());
        assert!(MessageId::parse(&"x".repeat(256)).is_err());
        assert!(MessageId::parse("req-123:abc").is_ok());
    }

    #[test]
    fn outcome_kinds_parse_back() {
        for kind in [OutcomeKind::Claimed, OutcomeKind::DeadLettered] {
            assert_eq!(kind.as_str().parse::<OutcomeKind>(), Ok(kind));
        }
    }
}
