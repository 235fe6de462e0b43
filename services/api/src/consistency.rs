//! Reads see the user's own writes: a command answers only once the read model shows its result, or
//! after `consistency_wait` at most (the answer says which, in `CoinAlarm-Consistent`). The wait is
//! keyed by the aggregate version the command wrote, which the projection stores next to the row, so
//! it also holds when the command went to the other site's origin and came back through the link.
//!
//! Why wait in the command rather than hand the client a sequence to wait for on reads: the web client
//! then needs no protocol of its own, and every read (list, get, history) is consistent, not just the
//! ones that remember to pass a token. The cost is the projection lag (milliseconds) on commands.

use std::time::Duration;

use proto_events::domain::{AlertId, UserId};
use tokio::time::Instant;

use crate::state::AppState;

/// Response header saying whether the read model already shows the command's result.
pub const HEADER: &str = "coinalarm-consistent";

const POLL: Duration = Duration::from_millis(20);

async fn wait_until(state: &AppState, query: &str, id: &str, version: u64) -> bool {
    let deadline = Instant::now() + state.settings.consistency_wait;
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    let started = Instant::now();
    loop {
        // With the read models down there is nothing to wait for: the command answers at once.
        let Ok(connection) = state.read_connection().await else {
            metrics::counter!("coinalarm_api_consistency_timeouts_total").increment(1);
            return false;
        };
        let found = tokio::time::timeout(
            state.settings.read_timeout,
            connection.query_opt(query, &[&id]),
        )
        .await;
        drop(connection);
        match found {
            Ok(Ok(Some(row))) if row.get::<_, i64>(0) >= version => {
                metrics::histogram!("coinalarm_api_consistency_wait_seconds")
                    .record(started.elapsed().as_secs_f64());
                return true;
            }
            Ok(Ok(_)) => {}
            _ => {
                metrics::counter!("coinalarm_api_consistency_timeouts_total").increment(1);
                return false;
            }
        }
        if Instant::now() + POLL > deadline {
            metrics::counter!("coinalarm_api_consistency_timeouts_total").increment(1);
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the `alerts` row of `alert_id` is at `version` or later.
pub async fn wait_for_alert(state: &AppState, alert_id: &AlertId, version: u64) -> bool {
    wait_until(
        state,
        "SELECT version FROM alerts WHERE alert_id = $1",
        alert_id.as_str(),
        version,
    )
    .await
}

/// Waits until the `users` row of `user_id` is at `version` or later.
pub async fn wait_for_user(state: &AppState, user_id: &UserId, version: u64) -> bool {
    wait_until(
        state,
        "SELECT version FROM users WHERE user_id = $1 AND registered_at IS NOT NULL",
        user_id.as_str(),
        version,
    )
    .await
}
