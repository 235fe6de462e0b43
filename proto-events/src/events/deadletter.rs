//! Poison messages parked by consumers. Subject `deadletter.<stream>.<consumer>`.
//!
//! A consumer that cannot process a message (it does not decode, or handling failed permanently) parks
//! a copy here with the reason and acknowledges the original, so one bad message never blocks a stream.
//! The copy keeps subject, headers and payload so the ops CLI can inspect and re-drive it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Routed;
use crate::domain::{Base64Text, NatsName};
use crate::ids::{self, MessageId};
use crate::site::Site;
use crate::subjects::subject;

/// The original payload: as text when it was UTF-8 (readable with `nats stream view`), else base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "encoding", rename_all = "snake_case")]
pub enum ParkedPayload {
    Utf8 { text: String },
    Base64 { data: Base64Text },
}

impl ParkedPayload {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => ParkedPayload::Utf8 {
                text: text.to_owned(),
            },
            Err(_) => ParkedPayload::Base64 {
                data: Base64Text::encode(bytes),
            },
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ParkedPayload::Utf8 { text } => text.as_bytes().to_vec(),
            ParkedPayload::Base64 { data } => data.to_bytes(),
        }
    }
}

/// A consumer parked a message it could not process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MessageParked {
    /// Stream the message was read from.
    pub stream: NatsName,
    /// Durable consumer that failed on it.
    pub consumer: NatsName,
    pub stream_sequence: u64,
    pub subject: String,
    /// Original headers (multi-valued), including `Nats-Msg-Id` and `traceparent`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    pub payload: ParkedPayload,
    /// Machine-readable reason, e.g. a [`crate::envelope::DecodeErrorKind`] name or a handler code.
    pub reason_code: String,
    /// Human-readable detail.
    pub reason: String,
    /// How many times the message had been delivered when it was parked.
    pub deliveries: u64,
    pub parked_at: Timestamp,
}

impl Routed for MessageParked {
    fn message_id(&self, _producer: Site) -> MessageId {
        ids::dead_letter(&self.stream, self.stream_sequence, &self.consumer)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::deadletter(site, self.stream.as_str(), self.consumer.as_str())
    }
}
