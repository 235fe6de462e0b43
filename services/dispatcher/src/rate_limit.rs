//! A token bucket per sender: providers limit how many messages per second one sender (number or
//! Messaging Service) may submit, and going over earns 429s or queueing fees.
//!
//! Callers *reserve* a slot: when the bucket is empty the token count goes negative and each caller
//! sleeps until its own slot, so waiters are served in arrival order without polling.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// Most tokens the bucket holds: how many messages may go out back to back after a quiet spell.
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// May be negative: slots already promised to waiting callers.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// `None` when `per_second` is not positive (no limit).
    pub fn new(per_second: f64, burst: u32, now: Instant) -> Option<TokenBucket> {
        if !per_second.is_finite() || per_second <= 0.0 {
            return None;
        }
        let burst = f64::from(burst.max(1));
        Some(TokenBucket {
            rate: per_second,
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                updated: now,
            }),
        })
    }

    /// Takes one token at `now`; returns how long the caller must wait before using it.
    pub fn reserve(&self, now: Instant) -> Duration {
        // A plain value updated in place; a panic elsewhere cannot leave it half-written.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.rate).min(self.burst);
        state.updated = now;
        state.tokens -= 1.0;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_when_the_rate_is_not_positive() {
        assert!(TokenBucket::new(0.0, 1, Instant::now()).is_none());
        assert!(TokenBucket::new(f64::NAN, 1, Instant::now()).is_none());
    }

    #[test]
    fn spends_the_burst_then_spaces_callers_by_the_rate() {
        let start = Instant::now();
        let bucket = TokenBucket::new(10.0, 2, start).unwrap();
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        let third = bucket.reserve(start);
        let fourth = bucket.reserve(start);
        assert!((third.as_secs_f64() - 0.1).abs() < 1e-9, "{third:?}");
        assert!((fourth.as_secs_f64() - 0.2).abs() < 1e-9, "{fourth:?}");
        // After a quiet second the bucket is full again, never fuller than the burst.
        let later = start + Duration::from_secs(5);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert!(bucket.reserve(later) > Duration::ZERO);
    }
}
