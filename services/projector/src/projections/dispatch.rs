//! DISPATCH → `dispatches`, `dispatch_triggers`, `dispatch_timeline` and `dispatch_skips`.
//!
//! Every lifecycle event becomes a timeline entry (keyed by its message id, so a copy is written once);
//! a dispatch's current status is then recomputed from its whole timeline as the highest-ranked entry.
//! That makes the status independent of arrival order, which differs between sites and can put a
//! provider callback received at one site ahead of the request sourced from the other.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;
use jiff::Timestamp;
use proto_events::Event;
use proto_events::events::{
    DeadLetterReason, DispatchPurpose, DispatchRequested, DispatchSkipped, MessageBody, SkipReason,
};
use proto_events::subjects::Priority;

use super::{Applied, Params, execute_each, param, sequence};
use crate::event::StreamEvent;

/// Rank of the final words of a dispatch, above every attempt's.
const FINAL_RANK: i64 = 1_000_000_000_000;

/// Where a status sits in a dispatch's life; higher is further along.
fn rank(status: &str, attempt: u32) -> i64 {
    let within_attempt = |step: i64| i64::from(attempt) * 10 + step;
    match status {
        "claimed" => within_attempt(1),
        "failed" => within_attempt(2),
        "sent" => within_attempt(3),
        "dead_lettered" => FINAL_RANK + 1,
        "undelivered" => FINAL_RANK + 2,
        "delivered" => FINAL_RANK + 3,
        // "requested"
        _ => 0,
    }
}

/// A stub so that outcomes which overtake their request still have a row to show.
const ENSURE_DISPATCH: &str = "INSERT INTO dispatches (dispatch_id, status, status_at, status_site) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (dispatch_id) DO NOTHING";

const UPSERT_REQUEST: &str = "INSERT INTO dispatches \
    (dispatch_id, purpose, user_id, phone_hash, phone_masked, priority, owning_site, body_text, \
     requested_at, expires_at, correlation_id, status, status_at, status_site) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'requested', $9, $7) \
    ON CONFLICT (dispatch_id) DO UPDATE SET \
        purpose = EXCLUDED.purpose, user_id = EXCLUDED.user_id, phone_hash = EXCLUDED.phone_hash, \
        phone_masked = EXCLUDED.phone_masked, priority = EXCLUDED.priority, \
        owning_site = EXCLUDED.owning_site, body_text = EXCLUDED.body_text, \
        requested_at = EXCLUDED.requested_at, expires_at = EXCLUDED.expires_at, \
        correlation_id = EXCLUDED.correlation_id";

const INSERT_DISPATCH_TRIGGER: &str = "INSERT INTO dispatch_triggers (dispatch_id, trigger_id) \
    VALUES ($1, $2) ON CONFLICT DO NOTHING";

const INSERT_TIMELINE: &str = "INSERT INTO dispatch_timeline \
    (message_id, dispatch_id, status, rank, attempt, site, at, provider, provider_message_id, \
     error_code, error_message, retryable, detail, correlation_id, stream_sequence) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
    ON CONFLICT (message_id) DO NOTHING";

const INSERT_SKIP: &str = "INSERT INTO dispatch_skips \
    (trigger_id, alert_id, user_id, reason_code, reason, coalesced_into, skipped_at, origin_site, \
     correlation_id, stream_sequence) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
    ON CONFLICT (trigger_id) DO NOTHING";

/// Status, attempts, duplicates, provider and last error of each touched dispatch, from its timeline.
const REFRESH_STATUS: &str = "WITH entries AS ( \
        SELECT * FROM dispatch_timeline WHERE dispatch_id = ANY($1)), \
    counts AS ( \
        SELECT dispatch_id, COALESCE(max(attempt), 0) AS attempts, \
               count(*) FILTER (WHERE status = 'sent') AS sent_count \
        FROM entries GROUP BY dispatch_id), \
    top AS ( \
        SELECT DISTINCT ON (dispatch_id) dispatch_id, status, at, site FROM entries \
        ORDER BY dispatch_id, rank DESC, at DESC, site DESC), \
    provider AS ( \
        SELECT DISTINCT ON (dispatch_id) dispatch_id, provider, provider_message_id FROM entries \
        WHERE provider IS NOT NULL ORDER BY dispatch_id, rank DESC, at DESC, site DESC), \
    error AS ( \
        SELECT DISTINCT ON (dispatch_id) dispatch_id, error_code, error_message FROM entries \
        WHERE error_code IS NOT NULL ORDER BY dispatch_id, at DESC, rank DESC, site DESC) \
    UPDATE dispatches d SET \
        status = top.status, status_at = top.at, status_site = top.site, \
        attempts = counts.attempts, sent_count = counts.sent_count, \
        provider = provider.provider, provider_message_id = provider.provider_message_id, \
        last_error_code = error.error_code, last_error_message = error.error_message, \
        updated_at = now() \
    FROM counts JOIN top ON top.dispatch_id = counts.dispatch_id \
    LEFT JOIN provider ON provider.dispatch_id = counts.dispatch_id \
    LEFT JOIN error ON error.dispatch_id = counts.dispatch_id \
    WHERE d.dispatch_id = counts.dispatch_id";

/// One timeline entry before it becomes parameters.
struct Entry<'a> {
    dispatch_id: &'a str,
    status: &'static str,
    attempt: Option<u32>,
    site: &'static str,
    at: Timestamp,
    provider: Option<&'a str>,
    provider_message_id: Option<&'a str>,
    error_code: Option<&'a str>,
    error_message: Option<&'a str>,
    retryable: Option<bool>,
    detail: Option<serde_json::Value>,
}

impl Entry<'_> {
    fn params(&self, event: &StreamEvent) -> Params {
        vec![
            param(event.envelope.id.as_str().to_owned()),
            param(self.dispatch_id.to_owned()),
            param(self.status),
            param(rank(self.status, self.attempt.unwrap_or(0))),
            param(
                self.attempt
                    .map(|attempt| i32::try_from(attempt).unwrap_or(i32::MAX)),
            ),
            param(self.site),
            param(self.at),
            param(self.provider.map(str::to_owned)),
            param(self.provider_message_id.map(str::to_owned)),
            param(self.error_code.map(str::to_owned)),
            param(self.error_message.map(str::to_owned)),
            param(self.retryable),
            param(self.detail.clone()),
            param(event.envelope.correlation_id.as_str().to_owned()),
            sequence(event.sequence),
        ]
    }

    fn stub(&self) -> Params {
        vec![
            param(self.dispatch_id.to_owned()),
            param(self.status),
            param(self.at),
            param(self.site),
        ]
    }
}

pub(super) async fn apply(
    transaction: &Transaction<'_>,
    events: &[&StreamEvent],
) -> Result<Applied, tokio_postgres::Error> {
    let mut applied = Applied::default();
    let mut requests = Vec::new();
    let mut stubs = Vec::new();
    let mut links = Vec::new();
    let mut timeline = Vec::new();
    let mut skips = Vec::new();
    let mut touched = BTreeSet::new();
    for event in events {
        let entry = match &event.envelope.data {
            Event::DispatchRequested(requested) => {
                requests.push(request_params(event, requested));
                if let DispatchPurpose::Alert { trigger_ids, .. } = &requested.purpose {
                    for trigger_id in trigger_ids {
                        links.push(vec![
                            param(requested.dispatch_id.as_str().to_owned()),
                            param(trigger_id.as_str().to_owned()),
                        ]);
                    }
                }
                Entry {
                    dispatch_id: requested.dispatch_id.as_str(),
                    status: "requested",
                    attempt: None,
                    site: event.envelope.origin_site.as_str(),
                    at: requested.created_at,
                    provider: None,
                    provider_message_id: None,
                    error_code: None,
                    error_message: None,
                    retryable: None,
                    detail: Some(serde_json::json!({
                        "owning_site": requested.owning_site,
                        "expires_at": requested.expires_at,
                    })),
                }
            }
            Event::DispatchSkipped(skipped) => {
                skips.push(skip_params(event, skipped));
                applied.projected += 1;
                continue;
            }
            Event::DispatchClaimed(claimed) => Entry {
                dispatch_id: claimed.dispatch_id.as_str(),
                status: "claimed",
                attempt: Some(claimed.attempt),
                site: claimed.site.as_str(),
                at: claimed.claimed_at,
                provider: None,
                provider_message_id: None,
                error_code: None,
                error_message: None,
                retryable: None,
                detail: Some(serde_json::json!({"lease_expires_at": claimed.lease_expires_at})),
            },
            Event::DispatchSent(sent) => Entry {
                dispatch_id: sent.dispatch_id.as_str(),
                status: "sent",
                attempt: Some(sent.attempt),
                site: sent.site.as_str(),
                at: sent.sent_at,
                provider: Some(sent.provider.as_str()),
                provider_message_id: Some(&sent.provider_message_id),
                error_code: None,
                error_message: None,
                retryable: None,
                detail: None,
            },
            Event::DispatchFailed(failed) => Entry {
                dispatch_id: failed.dispatch_id.as_str(),
                status: "failed",
                attempt: Some(failed.attempt),
                site: failed.site.as_str(),
                at: failed.failed_at,
                provider: Some(failed.provider.as_str()),
                provider_message_id: None,
                error_code: Some(&failed.error_code),
                error_message: failed.error_message.as_deref(),
                retryable: Some(failed.retryable),
                detail: failed
                    .retry_at
                    .map(|retry_at| serde_json::json!({"retry_at": retry_at})),
            },
            Event::DispatchDelivered(delivered) => Entry {
                dispatch_id: delivered.dispatch_id.as_str(),
                status: "delivered",
                attempt: Some(delivered.attempt),
                site: delivered.site.as_str(),
                at: delivered.reported_at,
                provider: Some(delivered.provider.as_str()),
                provider_message_id: Some(&delivered.provider_message_id),
                error_code: None,
                error_message: None,
                retryable: None,
                detail: Some(serde_json::json!({"provider_status": delivered.provider_status})),
            },
            Event::DispatchUndelivered(undelivered) => Entry {
                dispatch_id: undelivered.dispatch_id.as_str(),
                status: "undelivered",
                attempt: Some(undelivered.attempt),
                site: undelivered.site.as_str(),
                at: undelivered.reported_at,
                provider: Some(undelivered.provider.as_str()),
                provider_message_id: Some(&undelivered.provider_message_id),
                error_code: undelivered.error_code.as_deref(),
                error_message: None,
                retryable: None,
                detail: Some(serde_json::json!({"provider_status": undelivered.provider_status})),
            },
            Event::DispatchDeadLettered(dead) => Entry {
                dispatch_id: dead.dispatch_id.as_str(),
                status: "dead_lettered",
                attempt: Some(dead.attempt),
                site: dead.site.as_str(),
                at: dead.dead_lettered_at,
                provider: match &dead.reason {
                    DeadLetterReason::PermanentError { provider, .. } => Some(provider.as_str()),
                    _ => None,
                },
                provider_message_id: None,
                error_code: dead_letter_code(&dead.reason),
                error_message: None,
                retryable: Some(false),
                detail: serde_json::to_value(&dead.reason).ok(),
            },
            _ => {
                applied.ignored += 1;
                continue;
            }
        };
        stubs.push(entry.stub());
        timeline.push(entry.params(event));
        touched.insert(entry.dispatch_id.to_owned());
        applied.projected += 1;
    }
    execute_each(transaction, UPSERT_REQUEST, &requests).await?;
    execute_each(transaction, ENSURE_DISPATCH, &stubs).await?;
    execute_each(transaction, INSERT_DISPATCH_TRIGGER, &links).await?;
    execute_each(transaction, INSERT_TIMELINE, &timeline).await?;
    execute_each(transaction, INSERT_SKIP, &skips).await?;
    if !touched.is_empty() {
        let touched: Vec<String> = touched.into_iter().collect();
        let statement = transaction.prepare_cached(REFRESH_STATUS).await?;
        transaction.execute(&statement, &[&touched]).await?;
    }
    Ok(applied)
}

fn request_params(event: &StreamEvent, requested: &DispatchRequested) -> Params {
    let (purpose, user_id, phone_hash) = match &requested.purpose {
        DispatchPurpose::Alert { user_id, .. } => {
            ("alert", Some(user_id.as_str().to_owned()), None)
        }
        DispatchPurpose::SignIn { phone_hash, .. } => {
            ("sign_in", None, Some(phone_hash.as_str().to_owned()))
        }
    };
    // Only plain alert texts are kept; a sealed body is a sign-in code and never lands here.
    let body_text = match &requested.body {
        MessageBody::Plain { text } => Some(text.clone()),
        MessageBody::Sealed(_) => None,
    };
    vec![
        param(requested.dispatch_id.as_str().to_owned()),
        param(purpose),
        param(user_id),
        param(phone_hash),
        param(requested.destination.masked()),
        param(priority_name(requested.priority)),
        param(requested.owning_site.as_str()),
        param(body_text),
        param(requested.created_at),
        param(requested.expires_at),
        param(event.envelope.correlation_id.as_str().to_owned()),
    ]
}

fn skip_params(event: &StreamEvent, skipped: &DispatchSkipped) -> Params {
    let coalesced_into = match &skipped.reason {
        SkipReason::Coalesced { into } => Some(into.as_str().to_owned()),
        _ => None,
    };
    vec![
        param(skipped.trigger_id.as_str().to_owned()),
        param(skipped.alert_id.as_str().to_owned()),
        param(skipped.user_id.as_str().to_owned()),
        param(skip_code(&skipped.reason)),
        param(serde_json::to_value(&skipped.reason).unwrap_or(serde_json::Value::Null)),
        param(coalesced_into),
        param(event.envelope.time),
        param(event.envelope.origin_site.as_str()),
        param(event.envelope.correlation_id.as_str().to_owned()),
        sequence(event.sequence),
    ]
}

/// The `code` tag the reason carries on the wire.
const fn skip_code(reason: &SkipReason) -> &'static str {
    match reason {
        SkipReason::QuietHours => "quiet_hours",
        SkipReason::UserCap { .. } => "user_cap",
        SkipReason::Stale { .. } => "stale",
        SkipReason::Coalesced { .. } => "coalesced",
        SkipReason::AlertDeleted => "alert_deleted",
        SkipReason::AlertPaused => "alert_paused",
        SkipReason::UnknownUser => "unknown_user",
    }
}

fn dead_letter_code(reason: &DeadLetterReason) -> Option<&str> {
    match reason {
        DeadLetterReason::AttemptsExhausted { .. } => Some("attempts_exhausted"),
        DeadLetterReason::Expired => Some("expired"),
        DeadLetterReason::PermanentError { error_code, .. } => Some(error_code),
        DeadLetterReason::InvalidDestination => Some("invalid_destination"),
    }
}

const fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::SignIn => "sign_in",
        Priority::Alert => "alert",
        Priority::Scheduled => "scheduled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_attempts_and_final_words_rank_higher() {
        assert!(rank("requested", 0) < rank("claimed", 1));
        assert!(rank("claimed", 1) < rank("failed", 1));
        assert!(rank("failed", 1) < rank("claimed", 2));
        assert!(rank("claimed", 2) < rank("sent", 2));
        assert!(rank("sent", u32::MAX) < rank("dead_lettered", 1));
        assert!(rank("dead_lettered", 3) < rank("undelivered", 1));
        assert!(rank("undelivered", 1) < rank("delivered", 1));
    }

    #[test]
    fn codes_match_the_wire_tags() {
        for reason in [
            SkipReason::QuietHours,
            SkipReason::UserCap { cap: 3 },
            SkipReason::Stale { age_seconds: 9 },
            SkipReason::AlertDeleted,
            SkipReason::AlertPaused,
            SkipReason::UnknownUser,
        ] {
            let json = serde_json::to_value(&reason).expect("serializes");
            assert_eq!(json["code"], serde_json::json!(skip_code(&reason)));
        }
        for priority in Priority::ALL {
            assert_eq!(
                serde_json::to_value(priority).expect("serializes"),
                serde_json::json!(priority_name(priority))
            );
        }
    }
}
