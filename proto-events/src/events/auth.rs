//! Phone sign-in and session events. Subject `auth.<phone_hash>`; the AUTH streams have short retention.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Routed;
use crate::domain::{Locale, PhoneHash, PhoneNumber, SealedSecret, UserId};
use crate::ids::{self, MessageId};
use crate::site::Site;
use crate::subjects::subject;

/// A one-time sign-in code was issued. The code itself is sealed for the notifier: readers of the
/// stream (projector, ops tooling) never see it in clear text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SignInCodeRequested {
    /// Unique per request; part of the message id and of the dispatch id.
    pub request_id: uuid::Uuid,
    /// Where the code is sent.
    pub phone: PhoneNumber,
    pub phone_hash: PhoneHash,
    /// The bare code (e.g. `483920`), sealed with purpose "sign-in code" (`coinalarm_runtime::sealing`):
    /// bound to this phone hash and request id. The notifier words the SMS and seals it again for the
    /// dispatcher. (A sealed value that is not a bare code is taken as the complete SMS text.)
    pub sealed_code: SealedSecret,
    /// Language of the SMS.
    pub locale: Locale,
    /// After this instant the code is refused and an undelivered SMS is not worth sending.
    pub expires_at: Timestamp,
}

impl Routed for SignInCodeRequested {
    fn message_id(&self, _producer: Site) -> MessageId {
        ids::sign_in_requested(&self.phone_hash, &self.request_id)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::auth(site, self.phone_hash.as_str())
    }
}

/// A code was verified and a session issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SignInSucceeded {
    pub request_id: uuid::Uuid,
    pub phone_hash: PhoneHash,
    pub user_id: UserId,
    /// True when this sign-in registered the user (a `user.registered` follows on the USERS stream).
    pub new_user: bool,
}

impl Routed for SignInSucceeded {
    fn message_id(&self, _producer: Site) -> MessageId {
        ids::sign_in_succeeded(&self.phone_hash, &self.request_id)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::auth(site, self.phone_hash.as_str())
    }
}

/// Why a verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignInFailure {
    WrongCode,
    Expired,
    /// The attempt limit of the request was reached; the code is burnt.
    TooManyAttempts,
    UnknownRequest,
}

/// A code verification failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SignInFailed {
    pub request_id: uuid::Uuid,
    pub phone_hash: PhoneHash,
    /// 1-based number of this verification attempt for the request.
    pub attempt: u32,
    pub reason: SignInFailure,
}

impl Routed for SignInFailed {
    fn message_id(&self, _producer: Site) -> MessageId {
        ids::sign_in_failed(&self.phone_hash, &self.request_id, self.attempt)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::auth(site, self.phone_hash.as_str())
    }
}

/// A session was ended (sign-out) before its expiry. Sessions are signed tokens checked without a
/// shared store, so each site's API keeps the revoked session ids (until `expires_at`) from these events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRevoked {
    /// The session's id, as carried in its token.
    pub session_id: uuid::Uuid,
    pub phone_hash: PhoneHash,
    pub user_id: UserId,
    /// When the token would have expired: after it, nothing needs to remember the revocation.
    pub expires_at: Timestamp,
}

impl Routed for SessionRevoked {
    fn message_id(&self, _producer: Site) -> MessageId {
        ids::session_revoked(&self.phone_hash, &self.session_id)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::auth(site, self.phone_hash.as_str())
    }
}
