//! The event bus every service uses: publishing envelopes to this site's origin streams with their
//! deterministic ids and trace context, and consuming a local aggregate through a durable pull consumer
//! with explicit acks, bounded batches, back-pressure and dead-lettering of poison messages.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use proto_events::domain::NatsName;
use proto_events::envelope::{self, DecodeError, header};
use proto_events::events::EventData;
use proto_events::events::deadletter::{MessageParked, ParkedPayload};
use proto_events::{Envelope, Event, Site};

use crate::Shutdown;
use crate::config::Config;
use crate::trace::TraceContext;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nats(#[from] crate::nats::Error),
    #[error("publishing {message_id} to {subject} failed: {source}")]
    Publish {
        subject: String,
        message_id: String,
        source: async_nats::jetstream::context::PublishError,
    },
    #[error(
        "{subject} moved on: expected last sequence {expected}, the aggregate has changed since"
    )]
    WrongLastSequence { subject: String, expected: u64 },
    #[error("consumer {consumer} on {stream}: {source}")]
    Consumer {
        stream: String,
        consumer: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where a published event was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub stream: String,
    pub sequence: u64,
    /// The id was already in the stream's duplicate window: nothing new was stored.
    pub duplicate: bool,
}

/// A service's connection to its site's NATS, publishing as that site.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    site: Site,
    service: String,
}

impl Bus {
    pub async fn connect(config: &Config, service: &str) -> Result<Bus, Error> {
        let client = crate::nats::connect(&config.nats, config.site, service).await?;
        Ok(Bus::from_client(
            client,
            config.site,
            service,
            config.nats.request_timeout,
        ))
    }

    pub fn from_client(
        client: async_nats::Client,
        site: Site,
        service: &str,
        timeout: Duration,
    ) -> Bus {
        Bus {
            jetstream: crate::nats::jetstream(client.clone(), timeout),
            client,
            site,
            service: service.to_owned(),
        }
    }

    pub fn site(&self) -> Site {
        self.site
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Publishes to this site's origin stream and waits for the acknowledgement.
    pub async fn publish<T: EventData>(
        &self,
        envelope: &Envelope<T>,
        trace: Option<&TraceContext>,
    ) -> Result<Published, Error> {
        let subject = envelope.subject(Some(self.site));
        let pending = self.send(envelope, subject.clone(), trace, None).await?;
        self.acknowledged(pending, &subject, envelope, None).await
    }

    /// Publishes many events with their acknowledgements in flight together (one round trip for the
    /// batch rather than one per event), in order.
    pub async fn publish_all<T: EventData>(
        &self,
        envelopes: &[(Envelope<T>, Option<TraceContext>)],
    ) -> Result<Vec<Published>, Error> {
        let mut pending = FuturesOrdered::new();
        for (envelope, trace) in envelopes {
            let subject = envelope.subject(Some(self.site));
            let ack = self
                .send(envelope, subject.clone(), trace.as_ref(), None)
                .await?;
            pending.push_back(async move { (subject, envelope, ack.await) });
        }
        let mut published = Vec::with_capacity(envelopes.len());
        while let Some((subject, envelope, result)) = pending.next().await {
            published.push(ack_to_published(result, &subject, envelope, None)?);
        }
        Ok(published)
    }

    /// Publishes a command to an aggregate's subject at its home site (possibly across the link) only if
    /// the subject's last sequence is still `expected_last_sequence` (0: the aggregate must be new).
    pub async fn publish_expecting<T: EventData>(
        &self,
        envelope: &Envelope<T>,
        home_site: Site,
        expected_last_sequence: u64,
        trace: Option<&TraceContext>,
    ) -> Result<Published, Error> {
        let subject = envelope.subject(Some(home_site));
        let pending = self
            .send(
                envelope,
                subject.clone(),
                trace,
                Some(expected_last_sequence),
            )
            .await?;
        self.acknowledged(pending, &subject, envelope, Some(expected_last_sequence))
            .await
    }

    async fn send<T: EventData>(
        &self,
        envelope: &Envelope<T>,
        subject: String,
        trace: Option<&TraceContext>,
        expected_last_sequence: Option<u64>,
    ) -> Result<jetstream::context::PublishAckFuture, Error> {
        let mut headers = HeaderMap::new();
        for (name, value) in envelope.headers() {
            headers.insert(name, value.as_str());
        }
        let trace = trace.map_or_else(TraceContext::new_root, TraceContext::child);
        headers.insert(header::TRACEPARENT, trace.to_string().as_str());
        if let Some(expected) = expected_last_sequence {
            headers.insert(
                header::EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string().as_str(),
            );
        }
        let body = envelope::encode(envelope);
        self.jetstream
            .publish_with_headers(subject.clone(), headers, body.into())
            .await
            .map_err(|source| Error::Publish {
                subject,
                message_id: envelope.id.as_str().to_owned(),
                source,
            })
    }

    async fn acknowledged<T: EventData>(
        &self,
        pending: jetstream::context::PublishAckFuture,
        subject: &str,
        envelope: &Envelope<T>,
        expected: Option<u64>,
    ) -> Result<Published, Error> {
        ack_to_published(pending.await, subject, envelope, expected)
    }

    /// Creates (or updates to this definition) a durable pull consumer on a local aggregate.
    pub async fn durable_consumer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<consumer::PullConsumer, Error> {
        let consumer_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Consumer {
            stream: spec.stream.clone(),
            consumer: spec.durable.clone(),
            source,
        };
        let config = consumer::pull::Config {
            durable_name: Some(spec.durable.clone()),
            description: Some(format!("{} at {}", self.service, self.site)),
            filter_subjects: spec.filter_subjects.clone(),
            deliver_policy: spec.deliver_policy,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver,
            max_ack_pending: spec.max_ack_pending,
            ..Default::default()
        };
        self.jetstream
            .create_consumer_on_stream(config, &spec.stream)
            .await
            .map_err(|error| consumer_error(Box::new(error)))
    }
}

fn ack_to_published<T: EventData>(
    result: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    subject: &str,
    envelope: &Envelope<T>,
    expected: Option<u64>,
) -> Result<Published, Error> {
    match result {
        Ok(ack) => Ok(Published {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        }),
        Err(source) => {
            if let Some(expected) = expected
                && source.kind() == jetstream::context::PublishErrorKind::WrongLastSequence
            {
                return Err(Error::WrongLastSequence {
                    subject: subject.to_owned(),
                    expected,
                });
            }
            Err(Error::Publish {
                subject: subject.to_owned(),
                message_id: envelope.id.as_str().to_owned(),
                source,
            })
        }
    }
}

/// A durable pull consumer on a local aggregate stream.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Aggregate stream, e.g. `TRIGGERS`.
    pub stream: String,
    /// Durable name; one per service and purpose, e.g. `notifier`.
    pub durable: String,
    /// Aggregate-form subjects, e.g. `triggers.>`; empty for the whole stream.
    pub filter_subjects: Vec<String>,
    pub deliver_policy: consumer::DeliverPolicy,
    /// How long a delivered message may stay unacknowledged before redelivery.
    pub ack_wait: Duration,
    /// Deliveries before the server gives up; the runner parks a message itself well before that.
    pub max_deliver: i64,
    /// Bound on unacknowledged messages: the back-pressure that keeps memory flat when a downstream is slow.
    pub max_ack_pending: i64,
    /// Largest batch handed to the handler at once.
    pub batch_size: usize,
    /// After this many deliveries a message that still fails is parked in the dead-letter stream.
    pub park_after_deliveries: u64,
}

impl ConsumerSpec {
    pub fn new(stream: &str, durable: &str, filter_subjects: Vec<String>) -> ConsumerSpec {
        ConsumerSpec {
            stream: stream.to_owned(),
            durable: durable.to_owned(),
            filter_subjects,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 10_000,
            batch_size: 500,
            park_after_deliveries: 10,
        }
    }
}

/// One message handed to a handler.
#[derive(Debug)]
pub struct Delivery {
    /// The decoded event, or why it could not be decoded (the runner parks those before handlers see
    /// them, so handlers receive only `Ok`).
    pub envelope: Envelope<Event>,
    pub subject: String,
    pub stream_sequence: u64,
    pub deliveries: u64,
    pub trace: Option<TraceContext>,
    /// When the event was stored in the local aggregate (for latency metrics).
    pub stored_at: jiff::Timestamp,
}

/// What to do with one delivered message after handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done: never deliver again.
    Ack,
    /// Not now: deliver again after the delay (the message counts a delivery each time).
    Retry { after: Duration },
    /// Will never succeed: park it in the dead-letter stream with a reason, then ack it.
    Park { reason_code: String, reason: String },
}

/// A service's logic for a batch of messages: one disposition per delivery, in order. An `Err` means
/// "the whole batch could not be handled now" (a dependency is down) and retries it with backoff.
pub trait BatchHandler: Send {
    fn handle(
        &mut self,
        batch: &[Delivery],
    ) -> impl Future<Output = Result<Vec<Disposition>, crate::shutdown::BoxError>> + Send;
}

/// Consumes `spec` until shutdown: fetch a batch, decode, park what cannot be decoded, hand the rest to
/// `handler`, then ack / nak / park each message. In-flight work is bounded by the batch and by the
/// consumer's `max_ack_pending`; a batch in progress at shutdown is finished, never abandoned half-acked.
pub async fn run_consumer<H: BatchHandler>(
    bus: &Bus,
    spec: &ConsumerSpec,
    handler: &mut H,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let consumer = bus.durable_consumer(spec).await?;
    let labels = [
        ("service", bus.service.clone()),
        ("consumer", spec.durable.clone()),
    ];
    let mut failures_in_a_row: u32 = 0;
    tracing::info!(stream = %spec.stream, consumer = %spec.durable, "consuming");
    while !shutdown.is_triggered() {
        let fetched = tokio::select! {
            fetched = fetch_batch(&consumer, spec.batch_size) => fetched,
            () = shutdown.wait() => break,
        };
        let messages = match fetched {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(stream = %spec.stream, consumer = %spec.durable, %error, "fetch failed; retrying");
                backoff_pause(&mut failures_in_a_row, shutdown).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        metrics::counter!("coinalarm_consumer_messages_total", &labels)
            .increment(messages.len() as u64);
        let mut deliveries = Vec::with_capacity(messages.len());
        let mut kept = Vec::with_capacity(messages.len());
        for message in messages {
            match to_delivery(&message) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    kept.push(message);
                }
                Err(error) => {
                    park(
                        bus,
                        spec,
                        &message,
                        error.kind().as_str(),
                        &error.to_string(),
                    )
                    .await;
                }
            }
        }
        if deliveries.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let dispositions = match handler.handle(&deliveries).await {
            Ok(dispositions) if dispositions.len() == deliveries.len() => {
                failures_in_a_row = 0;
                dispositions
            }
            Ok(dispositions) => {
                tracing::error!(
                    expected = deliveries.len(),
                    got = dispositions.len(),
                    "handler returned the wrong number of dispositions; retrying the batch"
                );
                vec![
                    Disposition::Retry {
                        after: Duration::from_secs(1)
                    };
                    deliveries.len()
                ]
            }
            Err(error) => {
                tracing::warn!(stream = %spec.stream, consumer = %spec.durable, %error, "batch failed; will retry");
                failures_in_a_row = failures_in_a_row.saturating_add(1);
                let delay = backoff_delay(failures_in_a_row);
                vec![Disposition::Retry { after: delay }; deliveries.len()]
            }
        };
        metrics::histogram!("coinalarm_consumer_batch_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        for ((message, delivery), disposition) in kept.iter().zip(&deliveries).zip(dispositions) {
            let disposition = match disposition {
                Disposition::Retry { .. } if delivery.deliveries >= spec.park_after_deliveries => {
                    Disposition::Park {
                        reason_code: "too_many_deliveries".to_owned(),
                        reason: format!("still failing after {} deliveries", delivery.deliveries),
                    }
                }
                other => other,
            };
            settle(bus, spec, message, disposition, &labels).await;
        }
    }
    // Acks are fire-and-forget publishes: flush them before the connection goes away, or the last
    // batch comes back after ack_wait.
    if let Err(error) = bus.client.flush().await {
        tracing::warn!(%error, "flushing the last acks failed; they will be redelivered");
    }
    tracing::info!(stream = %spec.stream, consumer = %spec.durable, "consumer drained");
    Ok(())
}

async fn fetch_batch(
    consumer: &consumer::PullConsumer,
    batch_size: usize,
) -> Result<Vec<jetstream::Message>, Box<dyn std::error::Error + Send + Sync>> {
    let mut batch = consumer
        .fetch()
        .max_messages(batch_size)
        .expires(Duration::from_secs(1))
        .messages()
        .await?;
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        messages.push(message?);
    }
    Ok(messages)
}

fn to_delivery(message: &jetstream::Message) -> Result<Delivery, DecodeError> {
    let envelope = envelope::decode(&message.payload)?;
    let (stream_sequence, deliveries, stored_at) = match message.info() {
        Ok(info) => (
            info.stream_sequence,
            u64::try_from(info.delivered).unwrap_or(1),
            jiff::Timestamp::from_nanosecond(info.published.unix_timestamp_nanos())
                .unwrap_or_else(|_| jiff::Timestamp::now()),
        ),
        Err(_) => (0, 1, jiff::Timestamp::now()),
    };
    let trace = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(header::TRACEPARENT))
        .and_then(|value| TraceContext::parse(value.as_str()));
    Ok(Delivery {
        envelope,
        subject: message.subject.to_string(),
        stream_sequence,
        deliveries,
        trace,
        stored_at,
    })
}

async fn settle(
    bus: &Bus,
    spec: &ConsumerSpec,
    message: &jetstream::Message,
    disposition: Disposition,
    labels: &[(&'static str, String); 2],
) {
    let result = match disposition {
        Disposition::Ack => message.ack().await,
        Disposition::Retry { after } => {
            metrics::counter!("coinalarm_consumer_retries_total", labels).increment(1);
            message.ack_with(jetstream::AckKind::Nak(Some(after))).await
        }
        Disposition::Park {
            reason_code,
            reason,
        } => {
            park(bus, spec, message, &reason_code, &reason).await;
            return;
        }
    };
    if let Err(error) = result {
        // The message will be redelivered after ack_wait; handlers are idempotent by message id.
        tracing::warn!(consumer = %spec.durable, %error, "ack failed; the message will be redelivered");
    }
}

/// Parks a message in the dead-letter stream and acks it, so it never blocks the consumer. If parking
/// itself fails, the message is left unacknowledged and comes back: nothing is dropped.
pub async fn park(
    bus: &Bus,
    spec: &ConsumerSpec,
    message: &jetstream::Message,
    reason_code: &str,
    reason: &str,
) {
    let (stream_sequence, deliveries) = message
        .info()
        .map(|info| {
            (
                info.stream_sequence,
                u64::try_from(info.delivered).unwrap_or(1),
            )
        })
        .unwrap_or((0, 1));
    let (Ok(stream), Ok(consumer)) = (
        NatsName::parse(&spec.stream),
        NatsName::parse(&spec.durable),
    ) else {
        tracing::error!(stream = %spec.stream, consumer = %spec.durable, "cannot name the dead letter; leaving the message for redelivery");
        return;
    };
    let mut headers = BTreeMap::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            headers.insert(
                name.to_string(),
                values.iter().map(|value| value.to_string()).collect(),
            );
        }
    }
    let parked = MessageParked {
        stream,
        consumer,
        stream_sequence,
        subject: message.subject.to_string(),
        headers,
        payload: ParkedPayload::from_bytes(&message.payload),
        reason_code: reason_code.to_owned(),
        reason: reason.to_owned(),
        deliveries,
        parked_at: jiff::Timestamp::now(),
    };
    let envelope = Envelope::new(parked, bus.site);
    match bus.publish(&envelope, None).await {
        Ok(_) => {
            metrics::counter!("coinalarm_dead_letters_total", "service" => bus.service.clone(), "reason" => reason_code.to_owned()).increment(1);
            tracing::warn!(stream = %spec.stream, consumer = %spec.durable, stream_sequence, reason_code, reason, "parked a message in the dead-letter stream");
            if let Err(error) = message.ack_with(jetstream::AckKind::Term).await {
                tracing::warn!(%error, "terminating a parked message failed; it may be parked twice (same id, deduplicated)");
            }
        }
        Err(error) => {
            tracing::error!(%error, stream_sequence, "cannot park a poison message; leaving it for redelivery");
        }
    }
}

fn backoff_delay(failures_in_a_row: u32) -> Duration {
    let exponent = failures_in_a_row.min(6);
    let base = Duration::from_millis(200) * 2u32.pow(exponent);
    // Jitter keeps many consumers from retrying a recovered dependency in lock step.
    let jitter = Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_u128() as u16 % 200));
    base.min(Duration::from_secs(10)) + jitter
}

async fn backoff_pause(failures_in_a_row: &mut u32, shutdown: &Shutdown) {
    *failures_in_a_row = failures_in_a_row.saturating_add(1);
    let delay = backoff_delay(*failures_in_a_row);
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = shutdown.wait() => {}
    }
}
