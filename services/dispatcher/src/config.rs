//! The `[dispatcher]` config section: providers, fallback, breaker, retry policy, rate limits,
//! concurrency and the keys that open sealed SMS bodies.
//!
//! ```toml
//! [dispatcher]
//! primary = "twilio"
//! fallback = "twilio-eu"
//! concurrency = 8
//!
//! [dispatcher.providers.twilio]
//! base_url = "https://api.twilio.com"
//! account_sid = "AC..."
//! auth_token = "..."                 # or api_key_sid + api_key_secret
//! from = "+15005550006"              # or messaging_service_sid
//! status_callback_url = "https://api.coinalarm.example/v1/twilio/status"
//! timeout = 10
//! messages_per_second = 1
//!
//! [dispatcher.breaker]
//! failure_threshold = 5
//! cool_down = 30
//!
//! [dispatcher.retry]
//! max_attempts = 8
//! ```
//!
//! Every key can also come from the environment: `COINALARM_DISPATCHER__PROVIDERS__TWILIO__AUTH_TOKEN`.
//! Provider names are lower-case because environment keys arrive lower-cased.

use std::collections::BTreeMap;
use std::time::Duration;

use coinalarm_runtime::config::seconds;
use coinalarm_runtime::sealing::SealingKeys;
use proto_events::domain::ProviderName;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::breaker::BreakerSettings;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Section(#[from] coinalarm_runtime::config::SectionError),
    #[error("[dispatcher] has no provider {name:?} (configured: {configured:?})")]
    UnknownProvider {
        name: String,
        configured: Vec<String>,
    },
    #[error("[dispatcher.providers.{provider}] {problem}")]
    Provider { provider: String, problem: String },
    #[error("[dispatcher] {0}")]
    Invalid(String),
}

/// The dispatcher's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// Every provider account the dispatcher may use, by name (the name recorded in outcomes).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// The provider used while its breaker is closed.
    pub primary: String,
    /// The provider that takes over while the primary's breaker is open.
    pub fallback: Option<String>,
    pub breaker: BreakerConfig,
    pub retry: RetryConfig,
    /// Provider calls in flight at once for alerts and scheduled reports.
    pub concurrency: usize,
    /// Provider calls in flight at once for sign-in codes (its own budget, so codes never queue behind
    /// a backlog of alerts).
    pub sign_in_concurrency: usize,
    /// Requests fetched per batch and lane; a batch is settled before the next is fetched, so this
    /// with `concurrency` bounds memory and work in flight.
    pub batch_size: usize,
    /// How long a delivered request may stay unacknowledged before NATS redelivers it. Must cover a
    /// batch's provider calls, retries in process and rate-limit waits.
    #[serde(with = "seconds")]
    pub ack_wait: Duration,
    /// Unacknowledged requests per lane the server lets out at once.
    pub max_ack_pending: i64,
    /// A request still being retried after this many deliveries is parked in the dead-letter stream
    /// (a safety net; attempts and expiry normally decide first).
    pub park_after_deliveries: u64,
    /// Added to the provider timeout to make a claim's lease: how long a claimed attempt without an
    /// outcome is presumed still running before it counts as lost.
    #[serde(with = "seconds")]
    pub lease_margin: Duration,
    /// Keys that open sealed SMS bodies (sign-in codes).
    pub sealing_keys: SealingKeys,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            providers: BTreeMap::new(),
            primary: "twilio".to_owned(),
            fallback: None,
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            concurrency: 8,
            sign_in_concurrency: 4,
            batch_size: 8,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 1_000,
            park_after_deliveries: 1_000,
            lease_margin: Duration::from_secs(5),
            sealing_keys: SealingKeys::default(),
        }
    }
}

/// One provider account (Twilio or anything speaking its Messages API).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Scheme and host in front of `/2010-04-01/...`: Twilio's default or regional edge, or the fake.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// Authenticate with an API key instead of the auth token (the token still signs callbacks).
    pub api_key_sid: Option<String>,
    pub api_key_secret: Option<String>,
    /// The sending number or alphanumeric sender id; or set `messaging_service_sid`.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    /// Where the provider posts delivery status; the dispatcher adds which dispatch it is about.
    pub status_callback_url: Option<String>,
    /// Bound on one provider call, connect to last byte.
    #[serde(with = "seconds")]
    pub timeout: Duration,
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    /// Token-bucket rate per sender; 0 means no limit.
    pub messages_per_second: f64,
    /// Messages that may go out back to back after a quiet spell.
    pub burst: u32,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            base_url: crate::twilio::DEFAULT_BASE_URL.to_owned(),
            account_sid: String::new(),
            auth_token: String::new(),
            api_key_sid: None,
            api_key_secret: None,
            from: None,
            messaging_service_sid: None,
            status_callback_url: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            // Twilio's default for a long code is one message segment per second.
            messages_per_second: 1.0,
            burst: 1,
        }
    }
}

// Hand-written so tokens never reach a log line through `{:?}`.
impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ProviderConfig")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("api_key_sid", &self.api_key_sid)
            .field(
                "api_key_secret",
                &self.api_key_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("from", &self.from)
            .field("messaging_service_sid", &self.messaging_service_sid)
            .field("status_callback_url", &self.status_callback_url)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("messages_per_second", &self.messages_per_second)
            .field("burst", &self.burst)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures (5xx, timeouts, connection errors, rejected credentials) that open it.
    pub failure_threshold: u32,
    /// How long it stays open before one probe goes through.
    #[serde(with = "seconds")]
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Provider calls per dispatch before it is dead-lettered.
    pub max_attempts: u32,
    /// Provider calls one delivery of a request may make before handing the wait back to NATS.
    pub attempts_per_delivery: u32,
    /// First backoff delay; it grows by `factor` per attempt, with jitter, up to `max_delay`.
    #[serde(with = "seconds")]
    pub initial_delay: Duration,
    #[serde(with = "seconds")]
    pub max_delay: Duration,
    pub factor: f32,
    pub jitter: bool,
    /// Waits up to this long happen inside the delivery; longer ones become a delayed redelivery, so a
    /// batch is never held up by one slow retry.
    #[serde(with = "seconds")]
    pub max_in_process_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 8,
            attempts_per_delivery: 3,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            factor: 2.0,
            jitter: true,
            max_in_process_delay: Duration::from_secs(2),
        }
    }
}

impl RetryConfig {
    /// The backoff delay after failed attempt `attempt` (1-based), from backon's exponential policy.
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        use backon::BackoffBuilder as _;
        let mut builder = backon::ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .without_max_times();
        if self.jitter {
            builder = builder.with_jitter();
        }
        let steps = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        builder.build().nth(steps.min(64)).unwrap_or(self.max_delay)
    }
}

/// A provider ready to build a client from: validated name, URLs and credentials.
#[derive(Debug, Clone)]
pub struct ResolvedProvider {
    pub name: ProviderName,
    pub client: crate::twilio::ClientConfig,
    pub status_callback_url: Option<Url>,
    pub messages_per_second: f64,
    pub burst: u32,
}

impl DispatcherConfig {
    pub fn from_runtime(config: &coinalarm_runtime::Config) -> Result<DispatcherConfig, Error> {
        Ok(config.section::<DispatcherConfig>(crate::NAME)?)
    }

    /// A pessimistic bound on handling one batch: every request needs every in-process attempt, each
    /// a full provider timeout (`lease` covers one) plus the longest in-process wait, one permit round
    /// after another. Compared with `ack_wait` at start.
    pub fn worst_case_batch(&self, lease: Duration) -> Duration {
        let per_request = (lease + self.retry.max_in_process_delay)
            .saturating_mul(self.retry.attempts_per_delivery);
        let rounds = self.batch_size.div_ceil(self.concurrency.max(1));
        per_request.saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX))
    }

    pub fn breaker_settings(&self, provider_timeout: Duration) -> BreakerSettings {
        BreakerSettings {
            failure_threshold: self.breaker.failure_threshold,
            cool_down: self.breaker.cool_down,
            probe_timeout: provider_timeout + self.lease_margin,
        }
    }

    /// The primary and (if any) fallback provider, checked.
    pub fn resolve(&self) -> Result<(ResolvedProvider, Option<ResolvedProvider>), Error> {
        if self.concurrency == 0 || self.sign_in_concurrency == 0 || self.batch_size == 0 {
            return Err(Error::Invalid(
                "concurrency, sign_in_concurrency and batch_size must be at least 1".to_owned(),
            ));
        }
        if self.retry.max_attempts == 0 || self.retry.attempts_per_delivery == 0 {
            return Err(Error::Invalid(
                "retry.max_attempts and retry.attempts_per_delivery must be at least 1".to_owned(),
            ));
        }
        let primary = self.resolve_provider(&self.primary)?;
        let fallback = match &self.fallback {
            Some(name) if name == &self.primary => {
                return Err(Error::Invalid(format!(
                    "fallback {name:?} is the primary provider itself"
                )));
            }
            Some(name) => Some(self.resolve_provider(name)?),
            None => None,
        };
        Ok((primary, fallback))
    }

    fn resolve_provider(&self, name: &str) -> Result<ResolvedProvider, Error> {
        let config = self
            .providers
            .get(name)
            .ok_or_else(|| Error::UnknownProvider {
                name: name.to_owned(),
                configured: self.providers.keys().cloned().collect(),
            })?;
        let problem = |problem: String| Error::Provider {
            provider: name.to_owned(),
            problem,
        };
        let provider_name =
            ProviderName::parse(name).map_err(|error| problem(error.to_string()))?;
        let base_url = Url::parse(&config.base_url)
            .map_err(|error| problem(format!("base_url {:?}: {error}", config.base_url)))?;
        if config.account_sid.is_empty() {
            return Err(problem("account_sid is required".to_owned()));
        }
        let credentials = match (&config.api_key_sid, &config.api_key_secret) {
            (Some(key_sid), Some(key_secret)) => {
                crate::twilio::Credentials::api_key(&config.account_sid, key_sid, key_secret)
            }
            (None, None) if !config.auth_token.is_empty() => {
                crate::twilio::Credentials::auth_token(&config.account_sid, &config.auth_token)
            }
            (None, None) => {
                return Err(problem(
                    "auth_token (or api_key_sid and api_key_secret) is required".to_owned(),
                ));
            }
            _ => {
                return Err(problem(
                    "api_key_sid and api_key_secret go together".to_owned(),
                ));
            }
        };
        let sender = match (&config.from, &config.messaging_service_sid) {
            (Some(from), None) if !from.is_empty() => crate::twilio::Sender::From(from.clone()),
            (None, Some(sid)) if !sid.is_empty() => {
                crate::twilio::Sender::MessagingService(sid.clone())
            }
            _ => {
                return Err(problem(
                    "exactly one of from and messaging_service_sid is required".to_owned(),
                ));
            }
        };
        let status_callback_url = config
            .status_callback_url
            .as_deref()
            .map(|text| {
                Url::parse(text)
                    .map_err(|error| problem(format!("status_callback_url {text:?}: {error}")))
            })
            .transpose()?;
        if config.timeout.is_zero() {
            return Err(problem("timeout must be above 0".to_owned()));
        }
        Ok(ResolvedProvider {
            name: provider_name,
            client: crate::twilio::ClientConfig {
                base_url,
                credentials,
                sender,
                timeout: config.timeout,
                connect_timeout: config.connect_timeout,
            },
            status_callback_url,
            messages_per_second: config.messages_per_second,
            burst: config.burst,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn section(value: serde_json::Value) -> Result<DispatcherConfig, Error> {
        let config = coinalarm_runtime::Config {
            dispatcher: value.as_object().cloned().unwrap_or_default(),
            ..coinalarm_runtime::Config::default()
        };
        DispatcherConfig::from_runtime(&config)
    }

    #[test]
    fn a_minimal_section_resolves() {
        let config = section(json!({
            "providers": {
                "twilio": {"account_sid": "AC1", "auth_token": "t", "from": "+15005550006"},
                "backup": {"base_url": "http://127.0.0.1:9", "account_sid": "AC2",
                           "api_key_sid": "SK1", "api_key_secret": "s", "messaging_service_sid": "MG1",
                           "timeout": 2.5}
            },
            "fallback": "backup",
            "retry": {"max_attempts": 3}
        }))
        .unwrap();
        let (primary, fallback) = config.resolve().unwrap();
        assert_eq!(primary.name.as_str(), "twilio");
        assert_eq!(primary.client.base_url.as_str(), "https://api.twilio.com/");
        let fallback = fallback.unwrap();
        assert_eq!(fallback.client.timeout, Duration::from_millis(2500));
        assert_eq!(config.retry.max_attempts, 3);
        assert_eq!(config.retry.attempts_per_delivery, 3);
        assert!(!format!("{config:?}").contains("\"t\""));
    }

    #[test]
    fn mistakes_are_reported_at_start() {
        assert!(matches!(
            section(json!({"providrs": {}})),
            Err(Error::Section(_))
        ));
        assert!(matches!(
            section(json!({})).unwrap().resolve(),
            Err(Error::UnknownProvider { .. })
        ));
        let both_senders = section(json!({"providers": {"twilio": {
            "account_sid": "AC1", "auth_token": "t", "from": "+1", "messaging_service_sid": "MG1"}}}))
        .unwrap();
        assert!(matches!(
            both_senders.resolve(),
            Err(Error::Provider { .. })
        ));
        let no_token =
            section(json!({"providers": {"twilio": {"account_sid": "AC1", "from": "+1"}}}))
                .unwrap();
        assert!(matches!(no_token.resolve(), Err(Error::Provider { .. })));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let retry = RetryConfig {
            jitter: false,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryConfig::default()
        };
        // backon computes in f32: equal to the microsecond.
        let close = |actual: Duration, expected_millis: u64| {
            let expected = Duration::from_millis(expected_millis);
            assert!(
                actual.abs_diff(expected) < Duration::from_micros(1),
                "{actual:?} != {expected:?}"
            );
        };
        close(retry.backoff_after(1), 100);
        close(retry.backoff_after(2), 200);
        close(retry.backoff_after(3), 400);
        close(retry.backoff_after(10), 1000);
        let jittered = RetryConfig {
            jitter: true,
            ..retry
        };
        let delay = jittered.backoff_after(2);
        assert!(
            delay >= Duration::from_micros(199_999) && delay <= Duration::from_micros(400_001),
            "{delay:?}"
        );
    }
}
