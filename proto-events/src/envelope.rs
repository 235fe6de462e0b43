//! The envelope every event travels in, its NATS headers, and the encode/decode entry points.
//!
//! On the wire (the message body, readable with `nats stream view`):
//!
//! ```json
//! {
//!   "id": "alert:0190…:1:onprem",
//!   "type": "alert.created",
//!   "schema_version": 2,
//!   "time": "2026-11-02T00:00:00Z",
//!   "origin_site": "onprem",
//!   "correlation_id": "alert:0190…:1:onprem",
//!   "causation_id": "…",            // omitted when there is none
//!   "data": { … the event … }
//! }
//! ```
//!
//! Trace context does not go in the body: it travels in the `traceparent` (and `tracestate`) headers, so
//! the body stays a pure, replayable fact. The type, version, correlation id and origin site are also
//! copied into headers ([`header`]) so a NATS CLI user can filter without parsing JSON.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::events::{Event, EventData, EventPayload, EventType};
use crate::ids::MessageId;
use crate::site::Site;
use crate::version::{self, UpcastError};

/// NATS header names used by CoinAlarm messages.
pub mod header {
    /// JetStream de-duplication key; always the envelope `id`.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// W3C trace context, the only place trace ids travel.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state, when present.
    pub const TRACESTATE: &str = "tracestate";
    /// The envelope `type`, e.g. `alert.created`.
    pub const EVENT_TYPE: &str = "CoinAlarm-Event-Type";
    /// The envelope `schema_version`.
    pub const SCHEMA_VERSION: &str = "CoinAlarm-Schema-Version";
    /// The envelope `correlation_id`.
    pub const CORRELATION_ID: &str = "CoinAlarm-Correlation-Id";
    /// The envelope `origin_site`.
    pub const ORIGIN_SITE: &str = "CoinAlarm-Origin-Site";
    /// Optimistic concurrency on one aggregate subject (set by command publishers, not by [`super::Envelope::headers`]).
    pub const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
}

/// An event with its metadata. `T` is the [`Event`] enum (what consumers decode) or one event struct
/// (what a producer builds).
///
/// The type name and schema version are not stored: they follow from `data`, and a decoded envelope
/// always holds the *current* version of its event, older ones having been upcast.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<T = Event> {
    /// Deterministic message id ([`crate::ids`]); also the `Nats-Msg-Id` header.
    pub id: MessageId,
    /// When the fact happened, by the producer's clock.
    pub time: Timestamp,
    /// The site whose service produced the event.
    pub origin_site: Site,
    /// Shared by every event of one causal chain: the id of the first event, or of the API request that
    /// started it.
    pub correlation_id: MessageId,
    /// The id of the event that directly caused this one.
    pub causation_id: Option<MessageId>,
    pub data: T,
}

impl<T: EventData> Envelope<T> {
    /// A new envelope, starting a new causal chain: the id follows the rules of [`crate::ids`], the
    /// time is now, and the correlation id is the event's own id.
    pub fn new(data: T, origin_site: Site) -> Self {
        let id = data.message_id(origin_site);
        Envelope {
            correlation_id: id.clone(),
            id,
            time: Timestamp::now(),
            origin_site,
            causation_id: None,
            data,
        }
    }

    /// Sets the event time (for replays and tests; `new` uses the current time).
    pub fn at(mut self, time: Timestamp) -> Self {
        self.time = time;
        self
    }

    /// Continues the causal chain of `cause`: same correlation id, caused by its id.
    pub fn caused_by<U>(mut self, cause: &Envelope<U>) -> Self {
        self.correlation_id = cause.correlation_id.clone();
        self.causation_id = Some(cause.id.clone());
        self
    }

    /// Joins an existing chain, e.g. the request id of the API call that issued a command.
    pub fn with_correlation_id(mut self, correlation_id: MessageId) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    pub fn event_type(&self) -> EventType {
        self.data.event_type()
    }

    /// The schema version this envelope is written with: always the current one.
    pub fn schema_version(&self) -> u32 {
        self.event_type().current_version()
    }

    /// The subject to publish to: origin form with `Some(site)` (normally the aggregate's home site for
    /// commands, the local site otherwise), aggregate form with `None`.
    pub fn subject(&self, site: Option<Site>) -> String {
        self.data.subject(site)
    }

    /// Headers to publish with the body: message id, type, version, correlation id, origin site.
    /// `traceparent` is added by the telemetry layer of the publisher.
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            (header::MSG_ID, self.id.as_str().to_owned()),
            (header::EVENT_TYPE, self.event_type().as_str().to_owned()),
            (header::SCHEMA_VERSION, self.schema_version().to_string()),
            (
                header::CORRELATION_ID,
                self.correlation_id.as_str().to_owned(),
            ),
            (header::ORIGIN_SITE, self.origin_site.as_str().to_owned()),
        ]
    }

    /// The same envelope with the payload widened to the [`Event`] enum.
    pub fn into_event(self) -> Envelope<Event>
    where
        T: Into<Event>,
    {
        self.map_data(Into::into)
    }
}

impl<T> Envelope<T> {
    fn map_data<U>(self, convert: impl FnOnce(T) -> U) -> Envelope<U> {
        Envelope {
            id: self.id,
            time: self.time,
            origin_site: self.origin_site,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            data: convert(self.data),
        }
    }
}

/// Field order of the body; borrowed so encoding copies nothing.
#[derive(Serialize)]
struct WireEnvelope<'a, T> {
    id: &'a MessageId,
    #[serde(rename = "type")]
    event_type: &'static str,
    schema_version: u32,
    time: &'a Timestamp,
    origin_site: Site,
    correlation_id: &'a MessageId,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<&'a MessageId>,
    data: &'a T,
}

impl<T: EventData> Serialize for Envelope<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireEnvelope {
            id: &self.id,
            event_type: self.event_type().as_str(),
            schema_version: self.schema_version(),
            time: &self.time,
            origin_site: self.origin_site,
            correlation_id: &self.correlation_id,
            causation_id: self.causation_id.as_ref(),
            data: &self.data,
        }
        .serialize(serializer)
    }
}

/// Deserializing an envelope runs [`decode_value`], upcasters included.
impl<'de> Deserialize<'de> for Envelope<Event> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        decode_value(value).map_err(serde::de::Error::custom)
    }
}

/// Why a message could not be decoded. [`DecodeError::kind`] gives a label for metrics and
/// dead-letter reason codes.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the message body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the message body is not a CoinAlarm envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    #[error("unknown event type {event_type:?}: written by newer code, or not a CoinAlarm event")]
    UnknownEventType { event_type: String },
    #[error(
        "{event_type} schema version {version} is newer than this code understands (up to {current}); \
         deploy the newer consumer"
    )]
    VersionTooNew {
        event_type: EventType,
        version: u32,
        current: u32,
    },
    #[error("{event_type} schema version {version} does not exist: versions start at 1")]
    VersionZero { event_type: EventType, version: u32 },
    #[error("cannot upcast {event_type} from schema version {from_version}: {source}")]
    Upcast {
        event_type: EventType,
        from_version: u32,
        #[source]
        source: UpcastError,
    },
    #[error("invalid {event_type} payload (written as schema version {version}): {source}")]
    Payload {
        event_type: EventType,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("expected a {expected} event, found {found}")]
    UnexpectedEventType {
        expected: EventType,
        found: EventType,
    },
}

/// The kind of a [`DecodeError`], without its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeErrorKind {
    NotJson,
    Envelope,
    UnknownEventType,
    VersionTooNew,
    VersionZero,
    Upcast,
    Payload,
    UnexpectedEventType,
}

impl DecodeErrorKind {
    /// Stable snake_case label for metrics and dead-letter `reason_code`s.
    pub const fn as_str(self) -> &'static str {
        match self {
            DecodeErrorKind::NotJson => "not_json",
            DecodeErrorKind::Envelope => "bad_envelope",
            DecodeErrorKind::UnknownEventType => "unknown_event_type",
            DecodeErrorKind::VersionTooNew => "version_too_new",
            DecodeErrorKind::VersionZero => "version_zero",
            DecodeErrorKind::Upcast => "upcast_failed",
            DecodeErrorKind::Payload => "bad_payload",
            DecodeErrorKind::UnexpectedEventType => "unexpected_event_type",
        }
    }
}

impl DecodeError {
    pub fn kind(&self) -> DecodeErrorKind {
        match self {
            DecodeError::NotJson(_) => DecodeErrorKind::NotJson,
            DecodeError::Envelope(_) => DecodeErrorKind::Envelope,
            DecodeError::UnknownEventType { .. } => DecodeErrorKind::UnknownEventType,
            DecodeError::VersionTooNew { .. } => DecodeErrorKind::VersionTooNew,
            DecodeError::VersionZero { .. } => DecodeErrorKind::VersionZero,
            DecodeError::Upcast { .. } => DecodeErrorKind::Upcast,
            DecodeError::Payload { .. } => DecodeErrorKind::Payload,
            DecodeError::UnexpectedEventType { .. } => DecodeErrorKind::UnexpectedEventType,
        }
    }

    /// True when a newer producer wrote something this code cannot read yet: the message is fine and
    /// should wait for a consumer upgrade rather than be treated as poison.
    pub fn is_from_newer_code(&self) -> bool {
        matches!(
            self.kind(),
            DecodeErrorKind::UnknownEventType | DecodeErrorKind::VersionTooNew
        )
    }
}

/// Serializes an envelope to its JSON body.
pub fn encode<T: EventData>(envelope: &Envelope<T>) -> Vec<u8> {
    // Cannot fail: every map in the contract has string keys and no Serialize impl here returns an error.
    serde_json::to_vec(envelope).expect("CoinAlarm envelopes always serialize to JSON")
}

/// The envelope fields with `data` left as unparsed text: a message at the current version is then
/// decoded straight into its typed payload. Decoding through a `serde_json::Value` first dominated the
/// matcher's cold start (allocation of every map and string twice).
#[derive(Deserialize)]
struct BorrowedEnvelope<'a> {
    id: MessageId,
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    schema_version: u32,
    time: Timestamp,
    origin_site: Site,
    correlation_id: MessageId,
    #[serde(default)]
    causation_id: Option<MessageId>,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

/// Decodes a JSON body into the current version of its event, running upcasters for older versions.
pub fn decode(bytes: &[u8]) -> Result<Envelope<Event>, DecodeError> {
    let raw: BorrowedEnvelope<'_> = serde_json::from_slice(bytes).map_err(|error| {
        if error.is_data() {
            DecodeError::Envelope(error)
        } else {
            DecodeError::NotJson(error)
        }
    })?;
    let event_type =
        EventType::from_name(&raw.event_type).ok_or_else(|| DecodeError::UnknownEventType {
            event_type: raw.event_type.clone().into_owned(),
        })?;
    let data = if raw.schema_version == event_type.current_version() {
        Event::from_current_json(event_type, raw.data.get())
    } else {
        let old: serde_json::Value =
            serde_json::from_str(raw.data.get()).map_err(DecodeError::Envelope)?;
        let data = version::upcast(event_type, raw.schema_version, old)?;
        Event::from_current_data(event_type, data)
    }
    .map_err(|source| DecodeError::Payload {
        event_type,
        version: raw.schema_version,
        source,
    })?;
    Ok(Envelope {
        id: raw.id,
        time: raw.time,
        origin_site: raw.origin_site,
        correlation_id: raw.correlation_id,
        causation_id: raw.causation_id,
        data,
    })
}

/// [`decode`] for a body already parsed as JSON (a JSONB column). Written back to text so that there is
/// one decoding path; the cost is small next to the database read the value came from.
pub fn decode_value(value: serde_json::Value) -> Result<Envelope<Event>, DecodeError> {
    let bytes = serde_json::to_vec(&value).map_err(DecodeError::Envelope)?;
    decode(&bytes)
}

/// Decodes a body that must hold one particular event type (a consumer filtered on one subject).
pub fn decode_as<P: EventPayload>(bytes: &[u8]) -> Result<Envelope<P>, DecodeError> {
    let Envelope {
        id,
        time,
        origin_site,
        correlation_id,
        causation_id,
        data,
    } = decode(bytes)?;
    let data = P::try_from(data).map_err(|mismatch| DecodeError::UnexpectedEventType {
        expected: mismatch.expected,
        found: mismatch.found,
    })?;
    Ok(Envelope {
        id,
        time,
        origin_site,
        correlation_id,
        causation_id,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Exchange, MarketCode, Price, PriceChange, Rate};
    use crate::events::{StreamType, TickObserved};
    use pretty_assertions::assert_eq;
    use serde_json::json;

    fn tick() -> TickObserved {
        TickObserved {
            exchange: Exchange::upbit(),
            market: MarketCode::parse("KRW-BTC").unwrap(),
            trade_price: Price::parse("95000000").unwrap(),
            signed_change_rate: Rate::parse("0.0123").unwrap(),
            signed_change_price: PriceChange::parse("1154000").unwrap(),
            acc_trade_volume_24h: None,
            trade_volume: None,
            trade_timestamp: "2026-11-02T00:00:00.123Z".parse().unwrap(),
            sequential_id: 17_000_000_123,
            stream_type: StreamType::Realtime,
        }
    }

    #[test]
    fn new_envelopes_take_their_id_from_the_rules_and_start_a_chain() {
        let envelope = Envelope::new(tick(), Site::Onprem);
        assert_eq!(envelope.id.as_str(), "tick:upbit:KRW-BTC:17000000123");
        assert_eq!(envelope.correlation_id, envelope.id);
        assert_eq!(
            envelope.subject(Some(Site::Onprem)),
            "onprem.ticks.upbit.KRW-BTC"
        );
        let headers = envelope.headers();
        assert_eq!(
            headers[0],
            ("Nats-Msg-Id", "tick:upbit:KRW-BTC:17000000123".to_owned())
        );
        assert_eq!(
            headers[1],
            ("CoinAlarm-Event-Type", "tick.observed".to_owned())
        );
        assert_eq!(headers[2], ("CoinAlarm-Schema-Version", "1".to_owned()));

        let mut next_tick = tick();
        next_tick.sequential_id += 1;
        let follower = Envelope::new(next_tick, Site::Cloud).caused_by(&envelope);
        assert_eq!(follower.correlation_id, envelope.id);
        assert_eq!(follower.causation_id, Some(envelope.id.clone()));
    }

    #[test]
    fn encode_then_decode_gives_the_same_envelope() {
        let envelope = Envelope::new(tick(), Site::Cloud)
            .at("2026-11-02T00:00:01Z".parse().unwrap())
            .into_event();
        let bytes = encode(&envelope);
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["type"], "tick.observed");
        assert_eq!(value["schema_version"], 1);
        assert_eq!(value["data"]["trade_price"], "95000000");
        assert!(value.get("causation_id").is_none());
        assert_eq!(decode(&bytes).unwrap(), envelope);
        let typed = decode_as::<TickObserved>(&bytes).unwrap();
        assert_eq!(typed.data, tick());
        let wrong = decode_as::<crate::events::AlertPaused>(&bytes).unwrap_err();
        assert_eq!(wrong.kind(), DecodeErrorKind::UnexpectedEventType);
    }

    fn envelope_json(event_type: &str, version: u32, data: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": "x",
            "type": event_type,
            "schema_version": version,
            "time": "2026-11-02T00:00:00Z",
            "origin_site": "onprem",
            "correlation_id": "x",
            "data": data,
        }))
        .unwrap()
    }

    #[test]
    fn decode_errors_have_kinds() {
        let kind = |bytes: &[u8]| decode(bytes).unwrap_err().kind();
        assert_eq!(kind(b"not json"), DecodeErrorKind::NotJson);
        assert_eq!(kind(b"{\"id\": 1}"), DecodeErrorKind::Envelope);
        assert_eq!(
            kind(&envelope_json("alert.exploded", 1, json!({}))),
            DecodeErrorKind::UnknownEventType
        );
        let too_new = decode(&envelope_json("tick.observed", 99, json!({}))).unwrap_err();
        assert_eq!(too_new.kind(), DecodeErrorKind::VersionTooNew);
        assert!(too_new.is_from_newer_code());
        assert_eq!(
            kind(&envelope_json("tick.observed", 0, json!({}))),
            DecodeErrorKind::VersionZero
        );
        assert_eq!(
            kind(&envelope_json("tick.observed", 1, json!({"x": 1}))),
            DecodeErrorKind::Payload
        );
        assert_eq!(
            kind(&envelope_json(
                "alert.created",
                1,
                json!({"direction": "sideways"})
            )),
            DecodeErrorKind::Upcast
        );
    }

    #[test]
    fn prices_written_as_json_numbers_are_refused() {
        let mut data = serde_json::to_value(tick()).unwrap();
        data["trade_price"] = json!(95000000.0);
        let error = decode(&envelope_json("tick.observed", 1, data)).unwrap_err();
        assert_eq!(error.kind(), DecodeErrorKind::Payload);
        assert!(error.to_string().contains("f64"), "{error}");
    }
}
