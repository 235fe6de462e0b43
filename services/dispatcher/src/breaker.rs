//! A circuit breaker per provider: closed → open after N consecutive failures that say the provider is
//! unwell → one half-open probe after a cool-down → closed again on success, open again on failure.
//!
//! While a provider's breaker is open no request is sent to it, so a dead provider costs nothing but
//! the probe, and the fallback provider (if configured) takes the traffic.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The breaker's state, also exported as a gauge (`0` closed, `1` half-open, `2` open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub const fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one probe is let through.
    pub cool_down: Duration,
    /// A probe that has not reported back after this long is presumed lost (its task was cancelled)
    /// and another one is allowed.
    pub probe_timeout: Duration,
}

/// Whether a call may go to the provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; `probe` when this call decides whether the breaker closes again.
    Allowed { probe: bool },
    /// Not now; try again after this long (or use another provider).
    Refused { retry_in: Duration },
}

/// How a call went, as far as the provider's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallHealth {
    /// The provider answered sensibly (accepted, refused the message, or asked us to slow down).
    Healthy,
    /// The provider failed (5xx, timeout, connection refused, credentials rejected).
    Unhealthy,
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_started: Instant },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> CircuitBreaker {
        CircuitBreaker {
            settings: BreakerSettings {
                failure_threshold: settings.failure_threshold.max(1),
                ..settings
            },
            inner: Mutex::new(Inner::Closed {
                consecutive_failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is a plain value updated in one assignment; a panic elsewhere cannot leave it torn.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn state(&self) -> BreakerState {
        state_of(&self.lock())
    }

    /// Asks to make one call at `now`. An open breaker whose cool-down has passed lets exactly one
    /// probe through and refuses everything else until the probe reports.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => Admission::Allowed { probe: false },
            Inner::Open { until } if now >= until => {
                *inner = Inner::HalfOpen { probe_started: now };
                Admission::Allowed { probe: true }
            }
            Inner::Open { until } => Admission::Refused {
                retry_in: until - now,
            },
            Inner::HalfOpen { probe_started }
                if now.duration_since(probe_started) >= self.settings.probe_timeout =>
            {
                *inner = Inner::HalfOpen { probe_started: now };
                Admission::Allowed { probe: true }
            }
            Inner::HalfOpen { probe_started } => Admission::Refused {
                retry_in: (probe_started + self.settings.probe_timeout) - now,
            },
        }
    }

    /// How long this breaker will refuse calls from `now`, without changing anything: `None` when a
    /// call (or the probe) would be let through.
    pub fn refusing_for(&self, now: Instant) -> Option<Duration> {
        match *self.lock() {
            Inner::Closed { .. } => None,
            Inner::Open { until } => (now < until).then(|| until - now),
            Inner::HalfOpen { probe_started } => {
                let probe_deadline = probe_started + self.settings.probe_timeout;
                (now < probe_deadline).then(|| probe_deadline - now)
            }
        }
    }

    /// Reports how a call went; returns the state before and after when it changed.
    pub fn record(&self, health: CallHealth, now: Instant) -> Option<(BreakerState, BreakerState)> {
        let mut inner = self.lock();
        let before = state_of(&inner);
        *inner = match (health, *inner) {
            (CallHealth::Healthy, _) => Inner::Closed {
                consecutive_failures: 0,
            },
            (
                CallHealth::Unhealthy,
                Inner::Closed {
                    consecutive_failures,
                },
            ) => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.settings.failure_threshold {
                    Inner::Open {
                        until: now + self.settings.cool_down,
                    }
                } else {
                    Inner::Closed {
                        consecutive_failures: failures,
                    }
                }
            }
            (CallHealth::Unhealthy, Inner::HalfOpen { .. }) => Inner::Open {
                until: now + self.settings.cool_down,
            },
            // A call admitted before the breaker opened failed too: nothing new to learn.
            (CallHealth::Unhealthy, open @ Inner::Open { .. }) => open,
        };
        let after = state_of(&inner);
        (before != after).then_some((before, after))
    }
}

fn state_of(inner: &Inner) -> BreakerState {
    match inner {
        Inner::Closed { .. } => BreakerState::Closed,
        Inner::Open { .. } => BreakerState::Open,
        Inner::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings {
            failure_threshold: 3,
            cool_down: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(5),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let breaker = breaker();
        let now = Instant::now();
        breaker.record(CallHealth::Unhealthy, now);
        breaker.record(CallHealth::Unhealthy, now);
        breaker.record(CallHealth::Healthy, now);
        breaker.record(CallHealth::Unhealthy, now);
        breaker.record(CallHealth::Unhealthy, now);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(
            breaker.record(CallHealth::Unhealthy, now),
            Some((BreakerState::Closed, BreakerState::Open))
        );
        assert_eq!(
            breaker.refusing_for(now + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            breaker.admit(now + Duration::from_secs(4)),
            Admission::Refused {
                retry_in: Duration::from_secs(6)
            }
        );
        assert_eq!(breaker.refusing_for(now + Duration::from_secs(10)), None);
    }

    #[test]
    fn lets_one_probe_through_after_the_cool_down_and_closes_on_success() {
        let breaker = breaker();
        let start = Instant::now();
        for _ in 0..3 {
            breaker.record(CallHealth::Unhealthy, start);
        }
        let later = start + Duration::from_secs(10);
        assert_eq!(breaker.admit(later), Admission::Allowed { probe: true });
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(matches!(breaker.admit(later), Admission::Refused { .. }));
        assert_eq!(
            breaker.record(CallHealth::Healthy, later),
            Some((BreakerState::HalfOpen, BreakerState::Closed))
        );
        assert_eq!(breaker.admit(later), Admission::Allowed { probe: false });
    }

    #[test]
    fn a_failed_probe_reopens_for_another_cool_down() {
        let breaker = breaker();
        let start = Instant::now();
        for _ in 0..3 {
            breaker.record(CallHealth::Unhealthy, start);
        }
        let probe_time = start + Duration::from_secs(11);
        assert_eq!(
            breaker.admit(probe_time),
            Admission::Allowed { probe: true }
        );
        breaker.record(CallHealth::Unhealthy, probe_time);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(
            breaker.admit(probe_time + Duration::from_secs(1)),
            Admission::Refused {
                retry_in: Duration::from_secs(9)
            }
        );
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_probe_timeout() {
        let breaker = breaker();
        let start = Instant::now();
        for _ in 0..3 {
            breaker.record(CallHealth::Unhealthy, start);
        }
        let probe_time = start + Duration::from_secs(10);
        assert_eq!(
            breaker.admit(probe_time),
            Admission::Allowed { probe: true }
        );
        assert!(matches!(
            breaker.admit(probe_time + Duration::from_secs(4)),
            Admission::Refused { .. }
        ));
        assert_eq!(
            breaker.admit(probe_time + Duration::from_secs(5)),
            Admission::Allowed { probe: true }
        );
    }
}
