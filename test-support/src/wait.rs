//! Waiting on conditions with deadlines: the only synchronisation tests use, never a bare sleep.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is polled. Short, because the condition is usually cheap and tests are faster
/// for noticing early.
const POLL: Duration = Duration::from_millis(25);

#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}{last}")]
pub struct Timeout {
    pub what: String,
    pub waited: Duration,
    /// What the condition last reported, to make the failure readable.
    pub last: String,
}

/// Polls `check` until it returns `Ok(value)` or `within` passes. `Err(reason)` means "not yet", and
/// the last reason is reported on timeout.
pub async fn until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    let deadline = started + within;
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            return Err(Timeout {
                what: what.to_owned(),
                waited: started.elapsed(),
                last: if last.is_empty() {
                    String::new()
                } else {
                    format!(" (last: {last})")
                },
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `until` for a plain boolean condition.
pub async fn until_true<F, Fut>(what: &str, within: Duration, mut check: F) -> Result<(), Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    until(what, within, || {
        let next = check();
        async move {
            if next.await {
                Ok(())
            } else {
                Err(String::new())
            }
        }
    })
    .await
}
