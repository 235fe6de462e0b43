//! DEADLETTER → `dead_letters`, the list `coinalarm dlq list` shows.

use deadpool_postgres::Transaction;
use proto_events::Event;
use proto_events::envelope::header;
use proto_events::events::{MessageParked, ParkedPayload};

use super::{Applied, Params, execute_each, param, sequence};
use crate::event::StreamEvent;

const INSERT: &str = "INSERT INTO dead_letters \
    (message_id, stream, consumer, stream_sequence, subject, original_message_id, event_type, \
     reason_code, reason, deliveries, parked_at, origin_site, headers, payload_encoding, payload, \
     deadletter_sequence) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
    ON CONFLICT (message_id) DO NOTHING";

pub(super) async fn apply(
    transaction: &Transaction<'_>,
    events: &[&StreamEvent],
) -> Result<Applied, tokio_postgres::Error> {
    let mut applied = Applied::default();
    let mut rows = Vec::new();
    for event in events {
        let Event::MessageParked(parked) = &event.envelope.data else {
            applied.ignored += 1;
            continue;
        };
        rows.push(params(event, parked));
        applied.projected += 1;
    }
    execute_each(transaction, INSERT, &rows).await?;
    Ok(applied)
}

fn params(event: &StreamEvent, parked: &MessageParked) -> Params {
    let first_header = |name: &str| {
        parked
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, values)| values.first().cloned())
    };
    let (encoding, payload) = match &parked.payload {
        ParkedPayload::Utf8 { text } => ("utf8", text.clone()),
        ParkedPayload::Base64 { data } => ("base64", data.as_str().to_owned()),
    };
    vec![
        param(event.envelope.id.as_str().to_owned()),
        param(parked.stream.as_str().to_owned()),
        param(parked.consumer.as_str().to_owned()),
        sequence(parked.stream_sequence),
        param(parked.subject.clone()),
        param(first_header(header::MSG_ID)),
        param(first_header(header::EVENT_TYPE)),
        param(parked.reason_code.clone()),
        param(parked.reason.clone()),
        sequence(parked.deliveries),
        param(parked.parked_at),
        param(event.envelope.origin_site.as_str()),
        param(serde_json::to_value(&parked.headers).unwrap_or(serde_json::Value::Null)),
        param(encoding),
        param(payload),
        sequence(event.sequence),
    ]
}
