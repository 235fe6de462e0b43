//! Reading events out of one site's aggregate streams: every message on a subject, a time window of a
//! stream, or one message by sequence. Trace works from these and never from the Postgres read models.

use std::io::IsTerminal as _;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt as _;
use jiff::Timestamp;
use proto_events::{Envelope, Event, Site};

use super::Error;

/// How long one message may take to arrive before a read is given up.
const NEXT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Scans with more matching messages than this show a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: u64 = 5_000;

/// One decoded event as stored in one site's stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub site: Site,
    pub stream: String,
    pub sequence: u64,
    /// When the stream stored it (the server's clock at that site).
    pub stored_at: Timestamp,
    pub envelope: Envelope<Event>,
}

/// Where a scan starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    All,
    StoredSince(Timestamp),
}

/// Where a scan stops (the first message past the bound is not kept).
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// The stream's end at the time of the read.
    End,
    StoredAfter(Timestamp),
    AfterSequence(u64),
}

/// The aggregates of one site, read as the `admin` user.
#[derive(Clone)]
pub struct SiteReader {
    pub site: Site,
    jetstream: jetstream::Context,
}

impl SiteReader {
    pub fn new(site: Site, jetstream: jetstream::Context) -> SiteReader {
        SiteReader { site, jetstream }
    }

    fn failed<E: std::fmt::Display>(&self, stream: &str, error: E) -> Error {
        Error::Read {
            site: self.site,
            stream: stream.to_owned(),
            detail: error.to_string(),
        }
    }

    /// Every decodable event of `stream` matching any of `filters`, between `start` and `stop`, in stream
    /// order, read with an ordered consumer (no state left on the server).
    pub async fn scan(
        &self,
        stream: &str,
        filters: &[String],
        start: Start,
        stop: Stop,
    ) -> Result<Vec<StoredEvent>, Error> {
        let handle = self
            .jetstream
            .get_stream_no_info(stream)
            .await
            .map_err(|error| self.failed(stream, error))?;
        let deliver_policy = match start {
            Start::All => DeliverPolicy::All,
            Start::StoredSince(since) => DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::from_nanos(since.as_nanosecond())
                    .map_err(|error| self.failed(stream, error))?,
            },
        };
        let mut config = jetstream::consumer::pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        };
        match filters {
            [single] => config.filter_subject = single.clone(),
            many => config.filter_subjects = many.to_vec(),
        }
        let consumer = handle
            .create_consumer(config)
            .await
            .map_err(|error| self.failed(stream, error))?;
        let pending = consumer.cached_info().num_pending;
        let mut events = Vec::new();
        if pending == 0 {
            return Ok(events);
        }
        let progress = progress_bar(pending, &format!("reading {stream} at {}", self.site));
        let mut messages = consumer
            .messages()
            .await
            .map_err(|error| self.failed(stream, error))?;
        loop {
            let next = tokio::time::timeout(NEXT_MESSAGE_TIMEOUT, messages.next()).await;
            let message = match next {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => return Err(self.failed(stream, error)),
                Ok(None) | Err(_) => {
                    return Err(self.failed(stream, "the read stopped before the stream's end"));
                }
            };
            let info = message.info().map_err(|error| self.failed(stream, error))?;
            let sequence = info.stream_sequence;
            let stored_at = Timestamp::from_nanosecond(info.published.unix_timestamp_nanos())
                .unwrap_or(Timestamp::UNIX_EPOCH);
            let remaining = info.pending;
            if let Some(progress) = &progress {
                progress.inc(1);
            }
            let past_bound = match stop {
                Stop::End => false,
                Stop::StoredAfter(bound) => stored_at > bound,
                Stop::AfterSequence(bound) => sequence > bound,
            };
            if past_bound {
                break;
            }
            // Undecodable messages are the dead-letter tooling's business; trace shows events.
            if let Ok(envelope) = proto_events::decode(&message.payload) {
                events.push(StoredEvent {
                    site: self.site,
                    stream: stream.to_owned(),
                    sequence,
                    stored_at,
                    envelope,
                });
            }
            if remaining == 0 {
                break;
            }
        }
        if let Some(progress) = progress {
            progress.finish_and_clear();
        }
        Ok(events)
    }

    /// Every event on one subject (or subject filter) of `stream`.
    pub async fn subject(&self, stream: &str, filter: String) -> Result<Vec<StoredEvent>, Error> {
        self.scan(stream, &[filter], Start::All, Stop::End).await
    }

    /// One message by sequence (a direct get), `None` when the stream has no such message.
    pub async fn by_sequence(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<Option<StoredEvent>, Error> {
        let handle = self
            .jetstream
            .get_stream_no_info(stream)
            .await
            .map_err(|error| self.failed(stream, error))?;
        let message = match handle.direct_get(sequence).await {
            Ok(message) => message,
            Err(error) if error.kind() == jetstream::stream::DirectGetErrorKind::NotFound => {
                return Ok(None);
            }
            Err(error) => return Err(self.failed(stream, error)),
        };
        let stored_at = Timestamp::from_nanosecond(message.time.unix_timestamp_nanos())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        Ok(proto_events::decode(&message.payload)
            .ok()
            .map(|envelope| StoredEvent {
                site: self.site,
                stream: stream.to_owned(),
                sequence: message.sequence,
                stored_at,
                envelope,
            }))
    }
}

fn progress_bar(length: u64, label: &str) -> Option<indicatif::ProgressBar> {
    if length < PROGRESS_THRESHOLD || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(length),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} (eta {eta})")
    {
        bar.set_style(style);
    }
    bar.set_message(label.to_owned());
    Some(bar)
}
