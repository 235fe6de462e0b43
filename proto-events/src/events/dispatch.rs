//! SMS dispatch: the request, deliberate skips, and the outcome lifecycle.
//!
//! Subjects: `dispatch.request.<priority>.<dispatch_id>`, `dispatch.skipped.<trigger_id>`,
//! `dispatch.outcome.<dispatch_id>` for everything after the request.
//!
//! Lifecycle of one dispatch: requested → claimed (by one site, before the provider call) → sent or
//! failed (→ claimed again with the next attempt) → delivered / undelivered (provider callback), or
//! dead-lettered. Outcome ids carry site and attempt, so a send by both sites shows as two `sent` events.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Routed;
use crate::domain::{AlertId, PhoneHash, PhoneNumber, ProviderName, SealedSecret, UserId};
use crate::ids::{self, DispatchId, MessageId, OutcomeKind, TriggerId};
use crate::site::Site;
use crate::subjects::{Priority, subject};

/// The SMS text: plain for alerts, sealed for sign-in codes (the dispatcher opens it just before the
/// provider call, so the code never rests in a stream in clear text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MessageBody {
    Plain { text: String },
    Sealed(SealedSecret),
}

/// What a dispatch is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DispatchPurpose {
    /// Alert notification covering one or more triggers of one user (several when coalesced).
    Alert {
        user_id: UserId,
        trigger_ids: Vec<TriggerId>,
    },
    /// A sign-in code.
    SignIn {
        phone_hash: PhoneHash,
        request_id: uuid::Uuid,
    },
}

/// An SMS should be sent. Produced by the notifiers of both sites with the same dispatch id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchRequested {
    pub dispatch_id: DispatchId,
    pub priority: Priority,
    pub destination: PhoneNumber,
    pub body: MessageBody,
    /// The site whose dispatcher sends it; the other site takes over only when it judges the owner dead.
    pub owning_site: Site,
    pub purpose: DispatchPurpose,
    pub created_at: Timestamp,
    /// After this instant the SMS is stale and is dead-lettered instead of sent.
    pub expires_at: Timestamp,
}

impl Routed for DispatchRequested {
    fn message_id(&self, _producer: Site) -> MessageId {
        ids::dispatch_requested(&self.dispatch_id)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::dispatch_request(site, self.priority, self.dispatch_id.as_str())
    }
}

/// Why a trigger did not become an SMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SkipReason {
    /// The trigger fell in the user's quiet hours.
    QuietHours,
    /// The user's daily SMS cap was reached.
    UserCap { cap: u32 },
    /// The trigger was too old when the notifier saw it (e.g. after a long outage).
    Stale { age_seconds: u64 },
    /// Merged into another dispatch covering several triggers.
    Coalesced { into: DispatchId },
    /// The alert was deleted after the trigger was computed.
    AlertDeleted,
    /// The alert was paused after the trigger was computed.
    AlertPaused,
    /// No registered user or phone number for the trigger's user.
    UnknownUser,
}

/// A trigger was deliberately not sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchSkipped {
    pub trigger_id: TriggerId,
    pub alert_id: AlertId,
    pub user_id: UserId,
    pub reason: SkipReason,
}

impl Routed for DispatchSkipped {
    fn message_id(&self, _producer: Site) -> MessageId {
        ids::dispatch_skipped(&self.trigger_id)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::dispatch_skipped(site, self.trigger_id.as_str())
    }
}

/// A site's dispatcher took a dispatch for one attempt, before calling the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchClaimed {
    pub dispatch_id: DispatchId,
    pub site: Site,
    /// 1-based.
    pub attempt: u32,
    pub claimed_at: Timestamp,
    /// Until when the claim holds; after it, the attempt counts as lost and may be taken over.
    pub lease_expires_at: Timestamp,
}

/// The provider accepted the SMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchSent {
    pub dispatch_id: DispatchId,
    pub site: Site,
    pub attempt: u32,
    pub provider: ProviderName,
    /// The provider's id of the message (Twilio `sid`); status callbacks refer to it.
    pub provider_message_id: String,
    pub sent_at: Timestamp,
}

/// A send attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchFailed {
    pub dispatch_id: DispatchId,
    pub site: Site,
    pub attempt: u32,
    pub provider: ProviderName,
    /// Provider error code (Twilio numeric code as text), or a transport code such as `timeout`.
    pub error_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    pub failed_at: Timestamp,
    /// When the next attempt is due, if one is planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
}

/// The provider's status callback reported the SMS delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchDelivered {
    pub dispatch_id: DispatchId,
    /// The site that received the callback.
    pub site: Site,
    /// The attempt whose provider message this is.
    pub attempt: u32,
    pub provider: ProviderName,
    pub provider_message_id: String,
    /// The provider's status word (`delivered`).
    pub provider_status: String,
    pub reported_at: Timestamp,
}

/// The provider's status callback reported the SMS undeliverable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchUndelivered {
    pub dispatch_id: DispatchId,
    /// The site that received the callback.
    pub site: Site,
    pub attempt: u32,
    pub provider: ProviderName,
    pub provider_message_id: String,
    /// The provider's status word (`undelivered`, `failed`).
    pub provider_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    pub reported_at: Timestamp,
}

/// Why the dispatcher gave up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Every allowed attempt failed.
    AttemptsExhausted { attempts: u32 },
    /// The dispatch expired before it could be sent.
    Expired,
    /// The provider refused it in a way retries cannot fix.
    PermanentError {
        provider: ProviderName,
        error_code: String,
    },
    /// The provider rejected the destination number.
    InvalidDestination,
}

/// The dispatcher gave up on a dispatch; it can be inspected and re-driven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DispatchDeadLettered {
    pub dispatch_id: DispatchId,
    pub site: Site,
    /// The last attempt made (0 if none was).
    pub attempt: u32,
    pub reason: DeadLetterReason,
    pub dead_lettered_at: Timestamp,
}

macro_rules! outcome_routing {
    ($($type:ident => $kind:ident),+ $(,)?) => {
        $(
            impl Routed for $type {
                fn message_id(&self, _producer: Site) -> MessageId {
                    ids::dispatch_outcome(&self.dispatch_id, OutcomeKind::$kind, self.site, self.attempt)
                }

                fn subject(&self, site: Option<Site>) -> String {
                    subject::dispatch_outcome(site, self.dispatch_id.as_str())
                }
            }
        )+
    };
}

outcome_routing!(
    DispatchClaimed => Claimed,
    DispatchSent => Sent,
    DispatchFailed => Failed,
    DispatchDelivered => Delivered,
    DispatchUndelivered => Undelivered,
    DispatchDeadLettered => DeadLettered,
);
