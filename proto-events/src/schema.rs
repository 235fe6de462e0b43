//! JSON Schema (draft 2020-12) of the envelope and of every event type, for people and tools outside
//! Rust (the React client's fixtures, ops scripts, reviewers of a contract change).
//!
//! The rendered files are checked in under `proto-events/schema/`: `envelope.json` for any message and
//! `events/<type>.json` for a full message of one type at its current version. A test fails when the
//! code and the files drift; `UPDATE_SCHEMAS=1 cargo test -p proto-events --test contract_files`
//! rewrites them, and the diff is the contract change to review.

use jiff::Timestamp;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::events::{EventPayload, EventType};
use crate::ids::MessageId;
use crate::site::Site;

/// Directory of the checked-in schema files, relative to the crate root.
pub const SCHEMA_DIRECTORY: &str = "schema";

/// One schema file: its path relative to [`SCHEMA_DIRECTORY`] and its exact contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFile {
    pub relative_path: String,
    pub contents: String,
}

/// The shape of a message body; exists only to derive its schema.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "only the derived schema is used")]
struct MessageShape<T> {
    /// Deterministic message id, equal to the Nats-Msg-Id header.
    id: MessageId,
    /// Event type name.
    #[serde(rename = "type")]
    event_type: String,
    /// Schema version of `data`.
    schema_version: u32,
    /// When the fact happened (RFC 3339).
    time: Timestamp,
    /// Site whose service produced the event.
    origin_site: Site,
    /// Id shared by every event of one causal chain.
    correlation_id: MessageId,
    /// Id of the event that directly caused this one.
    #[serde(default)]
    causation_id: Option<MessageId>,
    /// The event.
    data: T,
}

fn generator() -> schemars::SchemaGenerator {
    SchemaSettings::draft2020_12().into_generator()
}

fn set_property(schema: &mut Schema, property: &str, property_schema: Value) {
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert(property.to_owned(), property_schema);
    }
}

/// Schema of a full message carrying `P` at its current version.
pub(crate) fn message_schema_for<P: EventPayload>() -> Schema {
    let event_type = P::EVENT_TYPE;
    let mut schema = generator().into_root_schema_for::<MessageShape<P>>();
    schema.insert("title".to_owned(), Value::from(event_type.as_str()));
    schema.insert(
        "description".to_owned(),
        Value::from(format!(
            "A CoinAlarm `{}` event, schema version {}, in its envelope.",
            event_type.as_str(),
            event_type.current_version()
        )),
    );
    set_property(&mut schema, "type", json!({"const": event_type.as_str()}));
    set_property(
        &mut schema,
        "schema_version",
        json!({"const": event_type.current_version()}),
    );
    schema
}

/// Schema of any message: the envelope with an opaque `data` object.
pub fn envelope_schema() -> Schema {
    let mut schema = generator().into_root_schema_for::<MessageShape<Map<String, Value>>>();
    schema.insert("title".to_owned(), Value::from("envelope"));
    schema.insert(
        "description".to_owned(),
        Value::from(
            "The envelope of every CoinAlarm event; `data` is described per type in events/<type>.json.",
        ),
    );
    let names: Vec<&str> = EventType::ALL
        .iter()
        .map(|event_type| event_type.as_str())
        .collect();
    set_property(
        &mut schema,
        "type",
        json!({"type": "string", "enum": names}),
    );
    set_property(
        &mut schema,
        "schema_version",
        json!({"type": "integer", "minimum": 1}),
    );
    schema
}

/// Schema of a full message of one event type at its current version.
pub fn event_schema(event_type: EventType) -> Schema {
    event_type.message_schema()
}

/// Every schema file, rendered exactly as checked in.
pub fn render_all() -> Vec<SchemaFile> {
    let mut files = vec![SchemaFile {
        relative_path: "envelope.json".to_owned(),
        contents: render(envelope_schema()),
    }];
    files.extend(EventType::ALL.iter().map(|event_type| SchemaFile {
        relative_path: format!("events/{}.json", event_type.as_str()),
        contents: render(event_schema(*event_type)),
    }));
    files
}

/// Pretty JSON with object keys sorted, so the output does not depend on whether some other crate in
/// the build turned on serde_json's `preserve_order`.
fn render(schema: Schema) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(schema.to_value())).unwrap_or_default();
    text.push('\n');
    text
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(String, Value)> = object.into_iter().collect();
            entries.sort_by(|(left, _), (right, _)| left.cmp(right));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_schemas_pin_type_and_version() {
        let schema = event_schema(EventType::AlertCreated).to_value();
        assert_eq!(schema["properties"]["type"]["const"], "alert.created");
        assert_eq!(schema["properties"]["schema_version"]["const"], 2);
        assert_eq!(schema["$defs"]["Price"]["type"], "string");
        let required = schema["required"].as_array().unwrap();
        assert!(required.contains(&Value::from("data")));
        assert!(!required.contains(&Value::from("causation_id")));
    }

    #[test]
    fn one_file_per_event_type_plus_the_envelope() {
        assert_eq!(render_all().len(), EventType::ALL.len() + 1);
    }
}
