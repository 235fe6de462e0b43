//! Sign-outs from both sites reach every site: `auth.session_revoked` events travel in the AUTH streams
//! like everything else, and each site's API keeps them in its Redis (shared by its replicas, one
//! durable consumer per site) and in process memory, each until the token would have expired anyway.
//!
//! Limit: the AUTH streams keep an hour. A site that is down longer than that misses the sign-outs made
//! at the other site meanwhile; those tokens stay valid there until they expire (the session lifetime).

use std::time::Duration;

use coinalarm_runtime::Shutdown;
use coinalarm_runtime::bus::{self, BatchHandler, ConsumerSpec, Delivery, Disposition};
use coinalarm_runtime::shutdown::BoxError;
use jiff::Timestamp;
use proto_events::{Category, Event};

use crate::auth::revoked_key;
use crate::state::AppState;

/// Durable name of the per-site consumer.
pub const DURABLE: &str = "api-revocations";

struct Handler {
    state: AppState,
}

impl BatchHandler for Handler {
    async fn handle(&mut self, batch: &[Delivery]) -> Result<Vec<Disposition>, BoxError> {
        let now = Timestamp::now();
        let mut dispositions = Vec::with_capacity(batch.len());
        for delivery in batch {
            let Event::SessionRevoked(revoked) = &delivery.envelope.data else {
                dispositions.push(Disposition::Ack);
                continue;
            };
            self.state
                .revoked
                .insert(revoked.session_id, revoked.expires_at);
            let remaining = revoked.expires_at.duration_since(now);
            if remaining.is_negative() || remaining.is_zero() {
                dispositions.push(Disposition::Ack);
                continue;
            }
            let ttl = Duration::try_from(remaining).unwrap_or(Duration::from_secs(1));
            let Some(redis) = self.state.redis.get() else {
                return Err("redis is not connected yet".into());
            };
            redis
                .set_ex(&revoked_key(&revoked.session_id), "1", ttl)
                .await?;
            metrics::counter!("coinalarm_api_revocations_applied_total").increment(1);
            dispositions.push(Disposition::Ack);
        }
        Ok(dispositions)
    }
}

/// Follows the local AUTH aggregate until shutdown, recreating the consumer after failures.
pub fn start(state: AppState, shutdown: Shutdown) {
    tokio::spawn(async move {
        let spec = ConsumerSpec {
            batch_size: 100,
            max_ack_pending: 1_000,
            ack_wait: Duration::from_secs(30),
            park_after_deliveries: 50,
            ..ConsumerSpec::new(
                Category::Auth.aggregate_stream(),
                DURABLE,
                vec![Category::Auth.aggregate_filter()],
            )
        };
        let bus = state.bus.clone();
        let mut handler = Handler { state };
        while !shutdown.is_triggered() {
            match bus::run_consumer(&bus, &spec, &mut handler, &shutdown).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "revocation consumer stopped; restarting");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                        () = shutdown.wait() => return,
                    }
                }
            }
        }
    });
}
