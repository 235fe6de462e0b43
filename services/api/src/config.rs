//! The `[api]` config section: where to listen, the public URL providers call back on, the secrets the
//! API holds (phone-hash key, session keys, sealing keys, provider auth tokens), limits and timeouts.
//!
//! ```toml
//! [api]
//! listen = "0.0.0.0:8080"
//! public_base_url = "https://api.coinalarm.example"   # as Twilio sees it, behind any proxy
//! cors_origins = ["https://app.coinalarm.example"]
//! phone_hash_key = "base64 of 32 random bytes"          # shared by both sites, by nothing else
//!
//! [api.session_keys]                                   # shared by both sites
//! current = "s1"
//! [api.session_keys.keys]
//! s1 = "base64 of 32 random bytes"
//!
//! [api.sealing_keys]                                   # the notifier's keyring
//! current = "k1"
//! [api.sealing_keys.keys]
//! k1 = "base64 of 32 random bytes"
//!
//! [api.twilio_auth_tokens]                             # provider name (as in [dispatcher.providers]) → token
//! twilio = "..."
//! ```
//!
//! `web_root = "/srv/coinalarm/web"` (optional) also serves the built web client at `/` (see
//! [`crate::web_root`]).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use coinalarm_runtime::config::seconds;
use coinalarm_runtime::sealing::SealingKeys;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::web_root::WebRoot;

/// Why the `[api]` section cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Section(#[from] coinalarm_runtime::config::SectionError),
    #[error("[api] {0}")]
    Invalid(String),
}

/// A fixed-window limit: at most `limit` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub limit: u32,
    #[serde(with = "seconds")]
    pub window: Duration,
}

impl RateLimit {
    pub const fn new(limit: u32, window_seconds: u64) -> RateLimit {
        RateLimit {
            limit,
            window: Duration::from_secs(window_seconds),
        }
    }
}

/// The sign-in rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignInSettings {
    /// How long a code is valid.
    #[serde(with = "seconds")]
    pub code_ttl: Duration,
    /// Wrong tries that burn a code.
    pub max_attempts: u32,
    /// Code requests per phone number (SMS pumping costs money per message).
    pub requests_per_phone: RateLimit,
    /// Code requests per client address.
    pub requests_per_address: RateLimit,
    /// Verification attempts per client address, across phone numbers (spraying guesses).
    pub verifications_per_address: RateLimit,
    /// How long a session lasts.
    #[serde(with = "seconds")]
    pub session_ttl: Duration,
}

impl Default for SignInSettings {
    fn default() -> Self {
        SignInSettings {
            code_ttl: Duration::from_secs(180),
            max_attempts: 5,
            requests_per_phone: RateLimit::new(3, 600),
            requests_per_address: RateLimit::new(10, 3_600),
            verifications_per_address: RateLimit::new(30, 600),
            session_ttl: Duration::from_secs(7 * 24 * 3_600),
        }
    }
}

/// Keys that sign session tokens: `current` signs, every key verifies (rotation). Shared by both sites
/// so a session issued at one is accepted at the other.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionKeys {
    pub current: String,
    /// Key id → standard base64 of at least 32 random bytes.
    pub keys: BTreeMap<String, String>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SessionKeys")
            .field("current", &self.current)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The API's settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address the HTTP server binds.
    pub listen: String,
    /// Scheme, host and any path prefix under which clients and providers reach this API. Twilio signs
    /// the URL it called, so status callbacks are checked against this base plus the request path.
    pub public_base_url: String,
    /// Origins allowed by CORS (the web client); empty allows none.
    pub cors_origins: Vec<String>,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// Bound on every handler; the SSE stream is exempt.
    #[serde(with = "seconds")]
    pub request_timeout: Duration,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// How long a command waits for the read model to show its result before answering (reads see
    /// the user's own writes within this bound).
    #[serde(with = "seconds")]
    pub consistency_wait: Duration,
    /// Bound on one read-model query.
    #[serde(with = "seconds")]
    pub read_timeout: Duration,
    /// Most live (not deleted) alerts a user may have.
    pub max_alerts_per_user: u32,
    /// Exchange of new alerts and market data.
    pub exchange: String,
    /// HMAC key of phone hashes (and, derived from it, of sign-in codes and user ids): base64, shared
    /// by both sites.
    pub phone_hash_key: String,
    pub session_keys: SessionKeys,
    /// Keys that seal sign-in codes for the notifier.
    pub sealing_keys: SealingKeys,
    /// Auth token per provider name, for `X-Twilio-Signature` of status callbacks.
    pub twilio_auth_tokens: BTreeMap<String, String>,
    pub sign_in: SignInSettings,
    /// Directory of the built web client (`web/dist`), served at `/`; none when absent.
    pub web_root: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "0.0.0.0:8080".to_owned(),
            public_base_url: "http://127.0.0.1:8080".to_owned(),
            cors_origins: Vec::new(),
            trust_forwarded_for: false,
            request_timeout: Duration::from_secs(10),
            body_limit_bytes: 16 * 1024,
            consistency_wait: Duration::from_secs(3),
            read_timeout: Duration::from_secs(3),
            max_alerts_per_user: 50,
            exchange: "upbit".to_owned(),
            phone_hash_key: String::new(),
            session_keys: SessionKeys::default(),
            sealing_keys: SealingKeys::default(),
            twilio_auth_tokens: BTreeMap::new(),
            sign_in: SignInSettings::default(),
            web_root: None,
        }
    }
}

// Hand-written so no secret reaches a log line through `{:?}`.
impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("public_base_url", &self.public_base_url)
            .field("cors_origins", &self.cors_origins)
            .field("trust_forwarded_for", &self.trust_forwarded_for)
            .field("request_timeout", &self.request_timeout)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("consistency_wait", &self.consistency_wait)
            .field("read_timeout", &self.read_timeout)
            .field("max_alerts_per_user", &self.max_alerts_per_user)
            .field("exchange", &self.exchange)
            .field("phone_hash_key", &"<redacted>")
            .field("session_keys", &self.session_keys)
            .field("sealing_keys", &self.sealing_keys)
            .field(
                "twilio_auth_tokens",
                &self.twilio_auth_tokens.keys().collect::<Vec<_>>(),
            )
            .field("sign_in", &self.sign_in)
            .field("web_root", &self.web_root)
            .finish()
    }
}

/// Smallest key accepted for HMAC keys, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

impl ApiConfig {
    /// The phone-hash key bytes, checked.
    pub fn phone_hash_key_bytes(&self) -> Result<Vec<u8>, Error> {
        decode_key("phone_hash_key", &self.phone_hash_key)
    }

    /// The external base URL, checked.
    pub fn public_base(&self) -> Result<Url, Error> {
        Url::parse(&self.public_base_url).map_err(|error| {
            Error::Invalid(format!(
                "public_base_url {:?}: {error}",
                self.public_base_url
            ))
        })
    }

    /// The web client's directory, checked; `None` when the API serves no client.
    pub fn web_root(&self) -> Result<Option<WebRoot>, Error> {
        self.web_root
            .as_deref()
            .map(|directory| {
                WebRoot::new(directory).map_err(|error| Error::Invalid(error.to_string()))
            })
            .transpose()
    }

    /// Checks everything that can be checked without connecting anywhere.
    pub fn validate(&self) -> Result<(), Error> {
        self.phone_hash_key_bytes()?;
        self.web_root()?;
        self.public_base()?;
        if self.session_keys.current.is_empty() || self.session_keys.keys.is_empty() {
            return Err(Error::Invalid(
                "session_keys: set `current` and that key under `keys`".to_owned(),
            ));
        }
        if !self
            .session_keys
            .keys
            .contains_key(&self.session_keys.current)
        {
            return Err(Error::Invalid(format!(
                "session_keys: the current key {:?} is not among the keys",
                self.session_keys.current
            )));
        }
        for (key_id, key) in &self.session_keys.keys {
            decode_key(&format!("session_keys.keys.{key_id}"), key)?;
        }
        let sign_in = &self.sign_in;
        if sign_in.max_attempts == 0 {
            return Err(Error::Invalid(
                "sign_in.max_attempts must be at least 1".to_owned(),
            ));
        }
        if sign_in.code_ttl.is_zero() || sign_in.session_ttl.is_zero() {
            return Err(Error::Invalid(
                "sign_in.code_ttl and sign_in.session_ttl must be positive".to_owned(),
            ));
        }
        for (name, limit) in [
            ("requests_per_phone", sign_in.requests_per_phone),
            ("requests_per_address", sign_in.requests_per_address),
            (
                "verifications_per_address",
                sign_in.verifications_per_address,
            ),
        ] {
            if limit.limit == 0 || limit.window < Duration::from_millis(1) {
                return Err(Error::Invalid(format!(
                    "sign_in.{name} needs a positive limit and window"
                )));
            }
        }
        if self.request_timeout.is_zero() || self.read_timeout.is_zero() {
            return Err(Error::Invalid(
                "request_timeout and read_timeout must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

fn decode_key(name: &str, text: &str) -> Result<Vec<u8>, Error> {
    if text.trim().is_empty() {
        return Err(Error::Invalid(format!(
            "{name} is not set: give it standard base64 of {MIN_KEY_BYTES} random bytes \
             (e.g. `openssl rand -base64 32`), the same at both sites"
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| Error::Invalid(format!("{name} is not standard base64")))?;
    if bytes.len() < MIN_KEY_BYTES {
        return Err(Error::Invalid(format!(
            "{name} must be at least {MIN_KEY_BYTES} bytes (base64 of random bytes)"
        )));
    }
    Ok(bytes)
}

/// Session key bytes by id.
pub fn session_key_bytes(keys: &SessionKeys) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    keys.keys
        .iter()
        .map(|(key_id, key)| Ok((key_id.clone(), decode_key(key_id, key)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    }

    #[test]
    fn defaults_need_keys_and_unknown_fields_are_refused() {
        assert!(ApiConfig::default().validate().is_err());
        let config: ApiConfig = serde_json::from_value(serde_json::json!({
            "phone_hash_key": key(),
            "session_keys": {"current": "s1", "keys": {"s1": key()}},
            "sign_in": {"requests_per_phone": {"limit": 2, "window": 60}},
        }))
        .expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.sign_in.requests_per_phone, RateLimit::new(2, 60));
        assert_eq!(config.sign_in.max_attempts, 5);
        assert!(serde_json::from_value::<ApiConfig>(serde_json::json!({"listn": "x"})).is_err());
        let short: ApiConfig = serde_json::from_value(serde_json::json!({
            "phone_hash_key": "c2hvcnQ=",
            "session_keys": {"current": "s1", "keys": {"s1": key()}},
        }))
        .expect("parses");
        assert!(short.validate().is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let mut config = ApiConfig {
            phone_hash_key: "secret-phone-key".to_owned(),
            ..ApiConfig::default()
        };
        config
            .twilio_auth_tokens
            .insert("twilio".to_owned(), "secret-token".to_owned());
        config
            .session_keys
            .keys
            .insert("s1".to_owned(), "secret-session".to_owned());
        let printed = format!("{config:?}");
        assert!(!printed.contains("secret"), "{printed}");
    }
}
