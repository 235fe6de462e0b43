//! Reads see the user's own writes: a command answers only once the read model shows its result, or
//! after `consistency_wait` at most (the answer says which, in `CoinAlarm-Consistent`). The wait is
//! keyed by the aggregate version the command wrote, which the projection stores next to the row, so
//! it also holds when the command went to the other site's origin and came back through the link.
//!
//! Why wait in the command rather than hand the client a sequence to wait for on reads: the web client
//! then needs no protocol of its own, and every read (list, get, history) is consistent, not just the
//! ones that remember to pass a token. The cost is the projection lag (milliseconds) on commands.
//!
//! Why one poller per process rather than each request polling its own row: under load the read
//! model lags, and per-request polling grew with the backlog (requests in flight × polls per second),
//! taking the database CPU the projector needed to catch up — a short lag became seconds. The poller
//! checks every pending id of a table in one query per interval, so the wait costs at most two
//! queries per [`POLL`] whatever the request rate.

use std::collections::HashMap;
use std::time::Duration;

use coinalarm_runtime::Shutdown;
use proto_events::domain::{AlertId, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::state::AppState;
use crate::statements;

/// Response header saying whether the read model already shows the command's result.
pub const HEADER: &str = "coinalarm-consistent";

/// How often the poller looks while anyone waits: the added latency of a wait is at most this.
const POLL: Duration = Duration::from_millis(10);

/// The read models a command can wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Alerts,
    Users,
}

impl Table {
    const ALL: [Table; 2] = [Table::Alerts, Table::Users];

    fn query(self) -> &'static str {
        match self {
            Table::Alerts => "SELECT alert_id, version FROM alerts WHERE alert_id = ANY($1)",
            Table::Users => {
                "SELECT user_id, version FROM users \
                 WHERE user_id = ANY($1) AND registered_at IS NOT NULL"
            }
        }
    }
}

struct Wait {
    table: Table,
    id: String,
    version: i64,
    seen: oneshot::Sender<()>,
}

/// The handle requests wait through; the poller behind it is started by [`ProjectionWaiter::start`].
#[derive(Debug)]
pub struct ProjectionWaiter {
    waits: mpsc::UnboundedSender<Wait>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Wait>>>,
}

impl Default for ProjectionWaiter {
    fn default() -> ProjectionWaiter {
        let (waits, receiver) = mpsc::unbounded_channel();
        ProjectionWaiter {
            waits,
            receiver: std::sync::Mutex::new(Some(receiver)),
        }
    }
}

impl ProjectionWaiter {
    /// Starts the poller (once; later calls do nothing). It ends on shutdown, answering every wait
    /// still pending with "not seen".
    pub fn start(state: &AppState, shutdown: Shutdown) {
        let receiver = state
            .projections
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(receiver) = receiver else {
            return;
        };
        tokio::spawn(poll(state.clone(), receiver, shutdown));
    }
}

/// Ids waited on per table, each with the versions wanted and whom to tell.
type Pending = HashMap<Table, HashMap<String, Vec<(i64, oneshot::Sender<()>)>>>;

async fn poll(state: AppState, mut receiver: mpsc::UnboundedReceiver<Wait>, shutdown: Shutdown) {
    let mut pending = Pending::new();
    loop {
        if pending.values().all(HashMap::is_empty) {
            tokio::select! {
                wait = receiver.recv() => match wait {
                    Some(wait) => add(&mut pending, wait),
                    None => return,
                },
                () = shutdown.wait() => return,
            }
        }
        while let Ok(wait) = receiver.try_recv() {
            add(&mut pending, wait);
        }
        let next_poll = Instant::now() + POLL;
        for table in Table::ALL {
            check(&state, table, &mut pending).await;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_poll) => {}
            () = shutdown.wait() => return,
        }
    }
}

fn add(pending: &mut Pending, wait: Wait) {
    pending
        .entry(wait.table)
        .or_default()
        .entry(wait.id)
        .or_default()
        .push((wait.version, wait.seen));
}

/// One query for every id of `table` still waited on; wakes whoever's version is there. A failed
/// query ends every wait on the table at once, as "not seen": the read model is down, and a command
/// should not hold its answer for it.
async fn check(state: &AppState, table: Table, pending: &mut Pending) {
    let Some(waiting) = pending.get_mut(&table) else {
        return;
    };
    // Requests that gave up (timed out or were dropped) need no answer.
    waiting.retain(|_, waiters| {
        waiters.retain(|(_, seen)| !seen.is_closed());
        !waiters.is_empty()
    });
    if waiting.is_empty() {
        return;
    }
    let ids: Vec<&str> = waiting.keys().map(String::as_str).collect();
    let rows = match state.read_connection().await {
        Ok(connection) => {
            tokio::time::timeout(
                state.settings.read_timeout,
                statements::query(&connection, table.query(), &[&ids]),
            )
            .await
        }
        Err(_) => {
            waiting.clear();
            return;
        }
    };
    let Ok(Ok(rows)) = rows else {
        waiting.clear();
        return;
    };
    for row in rows {
        let id: &str = row.get(0);
        let version: i64 = row.get(1);
        let Some(waiters) = waiting.get_mut(id) else {
            continue;
        };
        let (seen, still_waiting): (Vec<_>, Vec<_>) = std::mem::take(waiters)
            .into_iter()
            .partition(|(wanted, _)| *wanted <= version);
        for (_, sender) in seen {
            let _ = sender.send(());
        }
        if still_waiting.is_empty() {
            waiting.remove(id);
        } else {
            *waiters = still_waiting;
        }
    }
}

async fn wait_until(state: &AppState, table: Table, id: &str, version: u64) -> bool {
    let started = Instant::now();
    // With the read models down there is nothing to wait for: the command answers at once.
    if state.postgres.get().is_none() {
        metrics::counter!("coinalarm_api_consistency_timeouts_total").increment(1);
        return false;
    }
    let (seen, answer) = oneshot::channel();
    let wait = Wait {
        table,
        id: id.to_owned(),
        version: i64::try_from(version).unwrap_or(i64::MAX),
        seen,
    };
    if state.projections.waits.send(wait).is_err() {
        return false;
    }
    match tokio::time::timeout(state.settings.consistency_wait, answer).await {
        Ok(Ok(())) => {
            metrics::histogram!("coinalarm_api_consistency_wait_seconds")
                .record(started.elapsed().as_secs_f64());
            true
        }
        _ => {
            metrics::counter!("coinalarm_api_consistency_timeouts_total").increment(1);
            false
        }
    }
}

/// Waits until the `alerts` row of `alert_id` is at `version` or later.
pub async fn wait_for_alert(state: &AppState, alert_id: &AlertId, version: u64) -> bool {
    wait_until(state, Table::Alerts, alert_id.as_str(), version).await
}

/// Waits until the `users` row of `user_id` is at `version` or later.
pub async fn wait_for_user(state: &AppState, user_id: &UserId, version: u64) -> bool {
    wait_until(state, Table::Users, user_id.as_str(), version).await
}
