//! The providers the dispatcher sends through, each a Messages API client with its own circuit
//! breaker and its sender's token bucket: the primary while its breaker lets calls through, the
//! fallback while it does not.

use std::sync::Arc;
use std::time::Duration;

use coinalarm_runtime::Shutdown;
use proto_events::domain::ProviderName;
use tokio::time::Instant;
use url::Url;

use crate::breaker::{Admission, BreakerSettings, BreakerState, CallHealth, CircuitBreaker};
use crate::callback::CallbackTarget;
use crate::config::ResolvedProvider;
use crate::rate_limit::TokenBucket;
use crate::twilio::{self, ErrorClass, MessageResource, NewMessage};

/// Called on every breaker transition (tests watch the breaker through it; metrics and logs are
/// recorded regardless).
pub type BreakerObserver = Arc<dyn Fn(&ProviderName, BreakerState) + Send + Sync>;

/// One provider account.
pub struct Provider {
    name: ProviderName,
    client: twilio::Client,
    breaker: CircuitBreaker,
    limiter: Option<TokenBucket>,
    status_callback_url: Option<Url>,
    observer: Option<BreakerObserver>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Provider")
            .field("name", &self.name)
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub fn new(
        resolved: ResolvedProvider,
        breaker: BreakerSettings,
        observer: Option<BreakerObserver>,
    ) -> Result<Provider, twilio::Error> {
        let client = twilio::Client::new(resolved.client)?;
        metrics::gauge!("coinalarm_dispatcher_breaker_state", "provider" => resolved.name.as_str().to_owned())
            .set(BreakerState::Closed.gauge_value());
        Ok(Provider {
            limiter: TokenBucket::new(resolved.messages_per_second, resolved.burst, Instant::now()),
            name: resolved.name,
            client,
            breaker: CircuitBreaker::new(breaker),
            status_callback_url: resolved.status_callback_url,
            observer,
        })
    }

    pub fn name(&self) -> &ProviderName {
        &self.name
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    fn admit(&self) -> Admission {
        let before = self.breaker.state();
        let admission = self.breaker.admit(Instant::now());
        let after = self.breaker.state();
        if before != after {
            self.transition(before, after);
        }
        admission
    }

    fn transition(&self, before: BreakerState, after: BreakerState) {
        metrics::gauge!("coinalarm_dispatcher_breaker_state", "provider" => self.name.as_str().to_owned())
            .set(after.gauge_value());
        match after {
            BreakerState::Open => {
                tracing::warn!(provider = %self.name, from = before.as_str(), "circuit breaker opened");
            }
            BreakerState::HalfOpen => {
                tracing::info!(provider = %self.name, "circuit breaker half-open; probing");
            }
            BreakerState::Closed => {
                tracing::info!(provider = %self.name, from = before.as_str(), "circuit breaker closed");
            }
        }
        if let Some(observer) = &self.observer {
            observer(&self.name, after);
        }
    }

    /// Waits for this sender's next rate-limit slot; `false` if shutdown came first.
    pub async fn wait_for_rate_slot(&self, shutdown: &Shutdown) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let wait = limiter.reserve(Instant::now());
        if wait.is_zero() {
            return true;
        }
        let sender = self.client.sender().label().to_owned();
        metrics::counter!("coinalarm_dispatcher_rate_limit_waits_total", "provider" => self.name.as_str().to_owned(), "sender" => sender.clone())
            .increment(1);
        metrics::histogram!("coinalarm_dispatcher_rate_limit_wait_seconds", "provider" => self.name.as_str().to_owned(), "sender" => sender)
            .record(wait.as_secs_f64());
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = shutdown.wait() => false,
        }
    }

    /// The `StatusCallback` for one attempt, if callbacks are configured.
    pub fn status_callback(&self, target: &CallbackTarget) -> Option<Url> {
        self.status_callback_url
            .as_ref()
            .map(|base| target.url(base))
    }

    /// One provider call, measured and reported to the breaker.
    pub async fn send(&self, message: &NewMessage<'_>) -> Result<MessageResource, twilio::Error> {
        let started = Instant::now();
        let result = self.client.send(message).await;
        let provider = self.name.as_str().to_owned();
        metrics::histogram!("coinalarm_dispatcher_provider_seconds", "provider" => provider.clone())
            .record(started.elapsed().as_secs_f64());
        let (result_label, health) = match &result {
            Ok(_) => ("accepted", CallHealth::Healthy),
            Err(error) if error.counts_against_provider() => ("failed", CallHealth::Unhealthy),
            Err(error) if error.class() == ErrorClass::Transient => {
                ("throttled", CallHealth::Healthy)
            }
            Err(_) => ("rejected", CallHealth::Healthy),
        };
        metrics::counter!("coinalarm_dispatcher_sends_total", "provider" => provider, "result" => result_label)
            .increment(1);
        if let Some((before, after)) = self.breaker.record(health, Instant::now()) {
            self.transition(before, after);
        }
        result
    }
}

/// What [`Providers::choose`] found.
#[derive(Debug, Clone)]
pub enum Choice {
    Use(Arc<Provider>),
    /// Every breaker is open: nothing to call before this long.
    AllOpen {
        retry_in: Duration,
    },
}

/// The primary provider and an optional fallback.
#[derive(Debug)]
pub struct Providers {
    primary: Arc<Provider>,
    fallback: Option<Arc<Provider>>,
}

impl Providers {
    pub fn new(primary: Provider, fallback: Option<Provider>) -> Providers {
        Providers {
            primary: Arc::new(primary),
            fallback: fallback.map(Arc::new),
        }
    }

    pub fn primary(&self) -> &Arc<Provider> {
        &self.primary
    }

    pub fn fallback(&self) -> Option<&Arc<Provider>> {
        self.fallback.as_ref()
    }

    /// How long every provider will refuse calls, when they all do; `None` when one would take a call
    /// (or a probe). Changes no breaker.
    pub fn all_refusing_for(&self) -> Option<Duration> {
        let now = Instant::now();
        let primary = self.primary.breaker.refusing_for(now)?;
        match &self.fallback {
            None => Some(primary),
            Some(fallback) => fallback
                .breaker
                .refusing_for(now)
                .map(|fallback| fallback.min(primary)),
        }
    }

    /// The primary if its breaker admits a call, else the fallback if its breaker does.
    pub fn choose(&self) -> Choice {
        let primary_wait = match self.primary.admit() {
            Admission::Allowed { .. } => return Choice::Use(Arc::clone(&self.primary)),
            Admission::Refused { retry_in } => retry_in,
        };
        let Some(fallback) = &self.fallback else {
            return Choice::AllOpen {
                retry_in: primary_wait,
            };
        };
        match fallback.admit() {
            Admission::Allowed { .. } => {
                metrics::counter!("coinalarm_dispatcher_fallback_used_total", "provider" => fallback.name.as_str().to_owned())
                    .increment(1);
                Choice::Use(Arc::clone(fallback))
            }
            Admission::Refused { retry_in } => Choice::AllOpen {
                retry_in: primary_wait.min(retry_in),
            },
        }
    }
}
