//! User aggregate events: registration and preferences. Subject `users.<user_id>`, one per user.

use std::num::NonZeroU32;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Routed;
use crate::domain::{Locale, PhoneHash, PhoneNumber, QuietHours, TimeZoneName, UserId};
use crate::ids::{self, MessageId};
use crate::site::Site;
use crate::subjects::subject;

/// The aggregate version of a user right after registration.
pub const USER_REGISTERED_VERSION: u64 = 1;

/// A person signed in for the first time. Version 1 of the user aggregate; the user starts with
/// [`Preferences::default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserRegistered {
    pub user_id: UserId,
    /// Where the user is sent SMS. Clear text on purpose: the notifier must reach it, and the USERS
    /// stream is internal; logs and metrics use the phone hash.
    pub phone: PhoneNumber,
    pub phone_hash: PhoneHash,
    /// Where the user aggregate lives: its commands go to this site's origin stream.
    pub home_site: Site,
}

impl UserRegistered {
    pub const fn version(&self) -> u64 {
        USER_REGISTERED_VERSION
    }
}

impl Routed for UserRegistered {
    fn message_id(&self, producer: Site) -> MessageId {
        ids::user_command(&self.user_id, USER_REGISTERED_VERSION, producer)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::user(site, self.user_id.as_str())
    }
}

/// Everything a user can set about how they are notified. Changes replace the whole value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Preferences {
    /// Language of the SMS texts.
    pub locale: Locale,
    /// Time zone of scheduled alerts' defaults and of quiet hours.
    pub time_zone: TimeZoneName,
    /// When alert SMS are held back; sign-in codes are never held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Most alert SMS per local calendar day; `None` means the deployment's default cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_sms_cap: Option<NonZeroU32>,
}

/// A user's preferences were replaced.
///
/// History: v1 had the preference fields at the top level and the locale as a BCP 47 tag (`"ko-KR"`);
/// v2 nests them in `preferences` and keeps only the language (`"ko"`), the only part templates use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserPreferencesChanged {
    pub user_id: UserId,
    /// Aggregate version after this change (2 or more).
    pub version: u64,
    pub preferences: Preferences,
}

impl Routed for UserPreferencesChanged {
    fn message_id(&self, producer: Site) -> MessageId {
        ids::user_command(&self.user_id, self.version, producer)
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::user(site, self.user_id.as_str())
    }
}
