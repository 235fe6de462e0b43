//! Messages of an aggregate stream as the projections see them: decoded events with their stream
//! position and origin, or positions that hold something that cannot be projected.

use async_nats::HeaderMap;
use bytes::Bytes;
use proto_events::envelope::{self, DecodeError, header};
use proto_events::{Envelope, Event};

/// Header JetStream adds to every message a stream copied from one of its sources:
/// `<source stream>[:<hash of the external API prefix>] <sequence in the source> <filter> <transform>`.
pub const STREAM_SOURCE_HEADER: &str = "Nats-Stream-Source";

/// Where an aggregate's message was first stored: its origin stream and its sequence there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub stream: String,
    pub sequence: u64,
}

impl SourceRef {
    /// Parses the `Nats-Stream-Source` header value; `None` when absent or in an unknown shape (the
    /// origin position is a convenience for optimistic concurrency, never a reason to fail).
    pub fn parse(value: &str) -> Option<SourceRef> {
        let mut tokens = value.split_whitespace();
        let stream_token = tokens.next()?;
        let stream = stream_token
            .split_once(':')
            .map_or(stream_token, |(name, _hash)| name);
        let sequence = tokens.next()?.parse().ok()?;
        if stream.is_empty() {
            return None;
        }
        Some(SourceRef {
            stream: stream.to_owned(),
            sequence,
        })
    }

    pub fn from_headers(headers: Option<&HeaderMap>) -> Option<SourceRef> {
        headers
            .and_then(|headers| headers.get(STREAM_SOURCE_HEADER))
            .and_then(|value| SourceRef::parse(value.as_str()))
    }
}

/// One decoded event at its position in the aggregate stream.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// Sequence in this site's aggregate stream.
    pub sequence: u64,
    pub subject: String,
    pub envelope: Envelope<Event>,
    /// The message body as published (the alerts projection keeps it to re-decode on recompute).
    pub body: Bytes,
    pub source: Option<SourceRef>,
}

/// What one stream position holds.
#[derive(Debug, Clone)]
pub enum Slot {
    Event(Box<StreamEvent>),
    /// Will never decode: parked in the dead-letter stream, and the projection moves past it.
    Poison {
        sequence: u64,
        reason_code: &'static str,
        reason: String,
    },
    /// Written by newer code (unknown type, newer schema version): the projection waits for an upgrade
    /// rather than lose it.
    FromNewerCode {
        sequence: u64,
        reason: String,
    },
}

impl Slot {
    /// Decodes one stored message.
    pub fn decode(sequence: u64, subject: &str, headers: Option<&HeaderMap>, body: Bytes) -> Slot {
        match envelope::decode(&body) {
            Ok(envelope) => Slot::Event(Box::new(StreamEvent {
                sequence,
                subject: subject.to_owned(),
                envelope,
                source: SourceRef::from_headers(headers),
                body,
            })),
            Err(error) => Slot::undecodable(sequence, &error),
        }
    }

    fn undecodable(sequence: u64, error: &DecodeError) -> Slot {
        if error.is_from_newer_code() {
            Slot::FromNewerCode {
                sequence,
                reason: error.to_string(),
            }
        } else {
            Slot::Poison {
                sequence,
                reason_code: error.kind().as_str(),
                reason: error.to_string(),
            }
        }
    }

    pub fn sequence(&self) -> u64 {
        match self {
            Slot::Event(event) => event.sequence,
            Slot::Poison { sequence, .. } | Slot::FromNewerCode { sequence, .. } => *sequence,
        }
    }
}

/// The `Nats-Msg-Id` of a stored message, if it has one.
pub fn message_id(headers: Option<&HeaderMap>) -> Option<String> {
    headers
        .and_then(|headers| headers.get(header::MSG_ID))
        .map(|value| value.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_headers_name_the_origin_stream_and_sequence() {
        assert_eq!(
            SourceRef::parse("ALERTS_ONPREM 12 onprem.alerts.> alerts.>"),
            Some(SourceRef {
                stream: "ALERTS_ONPREM".to_owned(),
                sequence: 12
            })
        );
        assert_eq!(
            SourceRef::parse("ALERTS_CLOUD:a1b2c3d4 7 cloud.alerts.> alerts.>"),
            Some(SourceRef {
                stream: "ALERTS_CLOUD".to_owned(),
                sequence: 7
            })
        );
        assert_eq!(SourceRef::parse("ALERTS_CLOUD"), None);
        assert_eq!(SourceRef::parse("ALERTS_CLOUD x"), None);
        assert_eq!(SourceRef::parse(""), None);
    }

    #[test]
    fn undecodable_messages_are_sorted_by_whose_fault_it_is() {
        let poison = Slot::decode(3, "alerts.a", None, Bytes::from_static(b"not json"));
        assert!(
            matches!(
                poison,
                Slot::Poison {
                    sequence: 3,
                    reason_code: "not_json",
                    ..
                }
            ),
            "{poison:?}"
        );
        let newer = Slot::decode(
            4,
            "alerts.a",
            None,
            Bytes::from_static(
                br#"{"id":"x","type":"alert.teleported","schema_version":1,"time":"2026-11-02T00:00:00Z","origin_site":"onprem","correlation_id":"x","data":{}}"#,
            ),
        );
        assert!(
            matches!(newer, Slot::FromNewerCode { sequence: 4, .. }),
            "{newer:?}"
        );
    }
}
