//! What has happened to a dispatch so far, read from the streams, and what to do about it next.
//!
//! Every outcome of a dispatch (claimed, sent, failed, delivered, undelivered, dead-lettered) is stored
//! on one subject, `dispatch.outcome.<dispatch_id>`. The dispatcher reads the last message on it with
//! a JetStream direct get from two places and takes the more advanced answer:
//!
//! * the local `DISPATCH` aggregate, which also holds the other site's outcomes and the API's
//!   delivery reports;
//! * this site's own origin stream (`DISPATCH_<SITE>`, subject `<site>.dispatch.outcome.<id>`), where
//!   this dispatcher's own writes are visible the moment they are acknowledged, even if the aggregate's
//!   sourcing lags behind.
//!
//! On a request's first delivery only the aggregate is read ([`OutcomeReader::latest_in_aggregate`]):
//! no dispatcher of this site has held it, so there is nothing of ours to find in the origin.

use async_nats::jetstream;
use async_nats::jetstream::stream::{DirectGetError, DirectGetErrorKind};
use jiff::Timestamp;
use proto_events::events::{
    DispatchClaimed, DispatchDeadLettered, DispatchDelivered, DispatchFailed, DispatchSent,
    DispatchUndelivered,
};
use proto_events::subjects::subject;
use proto_events::{Category, DispatchId, Event, Site};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("reading the last outcome of {dispatch_id} from {stream} failed: {source}")]
    Read {
        dispatch_id: String,
        stream: String,
        source: DirectGetError,
    },
    #[error("the last outcome of {dispatch_id} in {stream} does not decode: {source}")]
    Decode {
        dispatch_id: String,
        stream: String,
        source: proto_events::DecodeError,
    },
}

/// One outcome event of a dispatch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Claimed(DispatchClaimed),
    Sent(DispatchSent),
    Failed(DispatchFailed),
    Delivered(DispatchDelivered),
    Undelivered(DispatchUndelivered),
    DeadLettered(DispatchDeadLettered),
}

impl Outcome {
    pub fn from_event(event: Event) -> Option<Outcome> {
        Some(match event {
            Event::DispatchClaimed(event) => Outcome::Claimed(event),
            Event::DispatchSent(event) => Outcome::Sent(event),
            Event::DispatchFailed(event) => Outcome::Failed(event),
            Event::DispatchDelivered(event) => Outcome::Delivered(event),
            Event::DispatchUndelivered(event) => Outcome::Undelivered(event),
            Event::DispatchDeadLettered(event) => Outcome::DeadLettered(event),
            _ => return None,
        })
    }

    pub fn attempt(&self) -> u32 {
        match self {
            Outcome::Claimed(event) => event.attempt,
            Outcome::Sent(event) => event.attempt,
            Outcome::Failed(event) => event.attempt,
            Outcome::Delivered(event) => event.attempt,
            Outcome::Undelivered(event) => event.attempt,
            Outcome::DeadLettered(event) => event.attempt,
        }
    }

    /// Nothing will be sent for this dispatch any more.
    pub fn is_final(&self) -> bool {
        match self {
            Outcome::Claimed(_) => false,
            Outcome::Failed(failed) => !failed.retryable,
            Outcome::Sent(_)
            | Outcome::Delivered(_)
            | Outcome::Undelivered(_)
            | Outcome::DeadLettered(_) => true,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Claimed(_) => "claimed",
            Outcome::Sent(_) => "sent",
            Outcome::Failed(_) => "failed",
            Outcome::Delivered(_) => "delivered",
            Outcome::Undelivered(_) => "undelivered",
            Outcome::DeadLettered(_) => "dead_lettered",
        }
    }

    /// Orders two views of one dispatch: final beats open, then the later attempt, then the later
    /// step within an attempt (an outcome after its claim).
    fn progress(&self) -> (bool, u32, u8) {
        let step = match self {
            Outcome::Claimed(_) => 0,
            _ => 1,
        };
        (self.is_final(), self.attempt(), step)
    }
}

/// The more advanced of two views of the same dispatch.
pub fn most_advanced(first: Option<Outcome>, second: Option<Outcome>) -> Option<Outcome> {
    match (first, second) {
        (Some(first), Some(second)) => {
            if second.progress() > first.progress() {
                Some(second)
            } else {
                Some(first)
            }
        }
        (first, second) => first.or(second),
    }
}

/// What to do with a dispatch request now.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// It was sent, or given up on: nothing to do.
    Finished { outcome: &'static str },
    /// An attempt is claimed and its lease still runs, or a retry is scheduled: look again then.
    WaitUntil {
        until: Timestamp,
        reason: WaitReason,
    },
    /// Make attempt `number`. `lost_claim` is set when the previous attempt was claimed (by that site)
    /// but never reported an outcome: it may or may not have reached the provider.
    Attempt {
        number: u32,
        lost_claim: Option<Site>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    ClaimLeased,
    RetryScheduled,
}

/// Retries scheduled this close to now are taken now: a redelivery timed by the same delay arrives a
/// hair early or late, and waiting again for milliseconds would only cost a round trip.
const SCHEDULE_TOLERANCE: jiff::SignedDuration = jiff::SignedDuration::from_millis(100);

/// The next step after `latest`, at `now`.
pub fn decide(latest: Option<&Outcome>, now: Timestamp) -> Next {
    let Some(latest) = latest else {
        return Next::Attempt {
            number: 1,
            lost_claim: None,
        };
    };
    if latest.is_final() {
        return Next::Finished {
            outcome: latest.kind(),
        };
    }
    match latest {
        Outcome::Claimed(claim) if claim.lease_expires_at > now => Next::WaitUntil {
            until: claim.lease_expires_at,
            reason: WaitReason::ClaimLeased,
        },
        Outcome::Claimed(claim) => Next::Attempt {
            number: claim.attempt.saturating_add(1),
            lost_claim: Some(claim.site),
        },
        Outcome::Failed(failed) => match failed.retry_at {
            Some(retry_at) if retry_at > now + SCHEDULE_TOLERANCE => Next::WaitUntil {
                until: retry_at,
                reason: WaitReason::RetryScheduled,
            },
            _ => Next::Attempt {
                number: failed.attempt.saturating_add(1),
                lost_claim: None,
            },
        },
        // Final outcomes returned above.
        other => Next::Finished {
            outcome: other.kind(),
        },
    }
}

/// Reads the last outcome of a dispatch from the local aggregate and this site's origin stream.
#[derive(Debug, Clone)]
pub struct OutcomeReader {
    aggregate: NamedStream,
    origin: NamedStream,
    site: Site,
}

#[derive(Debug, Clone)]
struct NamedStream {
    name: String,
    stream: jetstream::stream::Stream<()>,
}

impl OutcomeReader {
    pub async fn new(jetstream: &jetstream::Context, site: Site) -> Result<OutcomeReader, Error> {
        let open = |name: String| async move {
            match jetstream.get_stream_no_info(&name).await {
                Ok(stream) => Ok(NamedStream { name, stream }),
                Err(error) => Err(Error::Stream {
                    stream: name,
                    message: error.to_string(),
                }),
            }
        };
        Ok(OutcomeReader {
            aggregate: open(Category::Dispatch.aggregate_stream().to_owned()).await?,
            origin: open(Category::Dispatch.origin_stream(site)).await?,
            site,
        })
    }

    /// The most advanced outcome recorded for `dispatch_id`, `None` if there is none yet.
    pub async fn latest(&self, dispatch_id: &DispatchId) -> Result<Option<Outcome>, Error> {
        let aggregate_subject = subject::dispatch_outcome(None, dispatch_id.as_str());
        let origin_subject = subject::dispatch_outcome(Some(self.site), dispatch_id.as_str());
        let (from_aggregate, from_origin) = futures::future::join(
            read_last(&self.aggregate, aggregate_subject, dispatch_id),
            read_last(&self.origin, origin_subject, dispatch_id),
        )
        .await;
        Ok(most_advanced(from_aggregate?, from_origin?))
    }

    /// The last outcome of `dispatch_id` in the local aggregate only. Enough on a request's first
    /// delivery to this site's dispatcher: no dispatcher here has held the request yet, so this site's
    /// origin holds no outcome of it (the origin read is for this site's own writes that the aggregate
    /// has not copied yet), while the aggregate brings the other site's outcomes. Saves a direct get
    /// per request on the hot path.
    pub async fn latest_in_aggregate(
        &self,
        dispatch_id: &DispatchId,
    ) -> Result<Option<Outcome>, Error> {
        let aggregate_subject = subject::dispatch_outcome(None, dispatch_id.as_str());
        read_last(&self.aggregate, aggregate_subject, dispatch_id).await
    }
}

async fn read_last(
    stream: &NamedStream,
    subject: String,
    dispatch_id: &DispatchId,
) -> Result<Option<Outcome>, Error> {
    let stream_name = stream.name.clone();
    let message = match stream.stream.direct_get_last_for_subject(subject).await {
        Ok(message) => message,
        Err(error) if error.kind() == DirectGetErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                dispatch_id: dispatch_id.as_str().to_owned(),
                stream: stream_name,
                source,
            });
        }
    };
    let envelope = proto_events::decode(&message.payload).map_err(|source| Error::Decode {
        dispatch_id: dispatch_id.as_str().to_owned(),
        stream: stream_name,
        source,
    })?;
    Ok(Outcome::from_event(envelope.data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_events::domain::ProviderName;
    use proto_events::events::DeadLetterReason;

    fn dispatch_id() -> DispatchId {
        DispatchId::parse("dsp-0123456789abcdef0123456789abcdef").unwrap()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn claimed(attempt: u32, lease_until: i64) -> Outcome {
        Outcome::Claimed(DispatchClaimed {
            dispatch_id: dispatch_id(),
            site: Site::Onprem,
            attempt,
            claimed_at: at(0),
            lease_expires_at: at(lease_until),
        })
    }

    fn failed(attempt: u32, retryable: bool, retry_at: Option<i64>) -> Outcome {
        Outcome::Failed(DispatchFailed {
            dispatch_id: dispatch_id(),
            site: Site::Onprem,
            attempt,
            provider: ProviderName::parse("twilio").unwrap(),
            error_code: "20500".to_owned(),
            error_message: None,
            retryable,
            failed_at: at(0),
            retry_at: retry_at.map(at),
        })
    }

    fn sent(attempt: u32) -> Outcome {
        Outcome::Sent(DispatchSent {
            dispatch_id: dispatch_id(),
            site: Site::Onprem,
            attempt,
            provider: ProviderName::parse("twilio").unwrap(),
            provider_message_id: "SM1".to_owned(),
            sent_at: at(0),
        })
    }

    #[test]
    fn a_new_dispatch_starts_with_attempt_one() {
        assert_eq!(
            decide(None, at(0)),
            Next::Attempt {
                number: 1,
                lost_claim: None
            }
        );
    }

    #[test]
    fn final_outcomes_end_the_dispatch() {
        assert_eq!(
            decide(Some(&sent(1)), at(0)),
            Next::Finished { outcome: "sent" }
        );
        assert_eq!(
            decide(Some(&failed(2, false, None)), at(0)),
            Next::Finished { outcome: "failed" }
        );
        let dead = Outcome::DeadLettered(DispatchDeadLettered {
            dispatch_id: dispatch_id(),
            site: Site::Cloud,
            attempt: 0,
            reason: DeadLetterReason::Expired,
            dead_lettered_at: at(0),
        });
        assert_eq!(
            decide(Some(&dead), at(0)),
            Next::Finished {
                outcome: "dead_lettered"
            }
        );
    }

    #[test]
    fn a_live_claim_is_waited_for_and_an_expired_one_is_taken_over() {
        assert_eq!(
            decide(Some(&claimed(1, 30)), at(10)),
            Next::WaitUntil {
                until: at(30),
                reason: WaitReason::ClaimLeased
            }
        );
        assert_eq!(
            decide(Some(&claimed(1, 30)), at(30)),
            Next::Attempt {
                number: 2,
                lost_claim: Some(Site::Onprem)
            }
        );
    }

    #[test]
    fn a_retryable_failure_is_retried_when_due() {
        assert_eq!(
            decide(Some(&failed(1, true, Some(20))), at(10)),
            Next::WaitUntil {
                until: at(20),
                reason: WaitReason::RetryScheduled
            }
        );
        assert_eq!(
            decide(Some(&failed(1, true, Some(20))), at(20)),
            Next::Attempt {
                number: 2,
                lost_claim: None
            }
        );
        assert_eq!(
            decide(Some(&failed(3, true, None)), at(0)),
            Next::Attempt {
                number: 4,
                lost_claim: None
            }
        );
    }

    #[test]
    fn the_more_advanced_view_wins() {
        // The aggregate still shows the claim while the origin already has the send.
        assert_eq!(
            most_advanced(Some(claimed(1, 30)), Some(sent(1))),
            Some(sent(1))
        );
        assert_eq!(
            most_advanced(Some(sent(1)), Some(claimed(2, 30))),
            Some(sent(1))
        );
        assert_eq!(
            most_advanced(Some(failed(1, true, None)), Some(claimed(2, 30))),
            Some(claimed(2, 30))
        );
        assert_eq!(
            most_advanced(Some(claimed(2, 30)), Some(failed(2, true, None))),
            Some(failed(2, true, None))
        );
        assert_eq!(most_advanced(None, Some(sent(1))), Some(sent(1)));
        assert_eq!(most_advanced(None, None), None);
    }
}
