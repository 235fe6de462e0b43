//! What every handler shares: settings, keys, the bus, and the two stores that may come and go
//! (Postgres for reads, Redis for sign-in), each connected in the background so the API starts and
//! answers — with a clear 503 for what is missing — whatever is down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::redis::Redis;
use coinalarm_runtime::sealing::Sealer;
use coinalarm_runtime::{Config, Shutdown};
use deadpool_postgres::Pool;
use hmac::{Hmac, Mac as _};
use jiff::Timestamp;
use proto_events::Site;
use proto_events::domain::{Exchange, PhoneHash, PhoneNumber, UserId};
use proto_events::markets::Catalogue;
use sha2::Sha256;
use url::Url;

use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::live::LiveHub;
use crate::session::SessionKeyring;

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AppState")
            .field("site", &self.inner.site)
            .finish_non_exhaustive()
    }
}

pub struct Inner {
    pub settings: ApiConfig,
    pub site: Site,
    pub exchange: Exchange,
    pub bus: Bus,
    pub postgres: OnceLock<Pool>,
    pub redis: OnceLock<Redis>,
    pub keys: Keys,
    pub sessions: SessionKeyring,
    pub sealer: Sealer,
    pub public_base: Url,
    pub catalogue: &'static Catalogue,
    pub revoked: RevokedSessions,
    pub live: LiveHub,
    /// Read-your-writes waits, answered by one poller for the whole process.
    pub projections: crate::consistency::ProjectionWaiter,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The service's shutdown: long-lived responses (the live stream) end on it.
    pub shutdown: Shutdown,
}

/// HMAC keys derived from the phone-hash key, each for one purpose.
pub struct Keys {
    phone_hash: Vec<u8>,
    code: Vec<u8>,
    user_id: Vec<u8>,
}

impl Keys {
    pub fn new(phone_hash_key: Vec<u8>) -> Keys {
        Keys {
            code: derive(&phone_hash_key, b"coinalarm.sign-in-code.v1"),
            user_id: derive(&phone_hash_key, b"coinalarm.user-id.v1"),
            phone_hash: phone_hash_key,
        }
    }

    pub fn phone_hash(&self, phone: &PhoneNumber) -> PhoneHash {
        PhoneHash::of(&self.phone_hash, phone)
    }

    /// The user id of a phone number: the same at both sites, so a person signing in at either site
    /// (even during a partition) is one user aggregate, found without a read model.
    pub fn user_id(&self, phone: &PhoneNumber) -> UserId {
        let digest = mac(&self.user_id, phone.as_str().as_bytes());
        // 32 hex digits: inside the id alphabet and length.
        UserId::parse(&format!("u-{}", hex::encode(&digest[..16])))
            .unwrap_or_else(|_| UserId::new())
    }

    /// The keyed hash a sign-in code is stored as, bound to its request.
    pub fn code_mac(&self, request_id: &uuid::Uuid, code: &str) -> Hmac<Sha256> {
        let mut mac = new_mac(&self.code);
        mac.update(request_id.as_bytes());
        mac.update(code.as_bytes());
        mac
    }
}

fn new_mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = new_mac(key);
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn derive(key: &[u8], label: &[u8]) -> Vec<u8> {
    mac(key, label)
}

/// Session ids signed out, known in this process: what keeps revocations effective while Redis is
/// down. Entries leave after the token's expiry.
#[derive(Debug, Default)]
pub struct RevokedSessions {
    entries: Mutex<HashMap<uuid::Uuid, Timestamp>>,
}

impl RevokedSessions {
    pub fn insert(&self, session_id: uuid::Uuid, expires_at: Timestamp) {
        let now = Timestamp::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, expiry| *expiry > now);
        entries.insert(session_id, expires_at);
    }

    pub fn contains(&self, session_id: &uuid::Uuid) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(session_id)
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    pub fn new(inner: Inner) -> AppState {
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// A pooled read-model connection, or 503.
    pub async fn read_connection(&self) -> Result<deadpool_postgres::Object, ApiError> {
        let Some(pool) = self.postgres.get() else {
            return Err(ApiError::read_model_unavailable());
        };
        match tokio::time::timeout(self.settings.read_timeout, pool.get()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => {
                tracing::debug!(%error, "no read-model connection");
                Err(ApiError::read_model_unavailable())
            }
            Err(_) => Err(ApiError::read_model_unavailable()),
        }
    }

    /// Bounds one read-model query by the read timeout; every failure is a 503 except SQL errors.
    pub async fn bounded<T>(
        &self,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.settings.read_timeout, query).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(query_error(&error)),
            Err(_) => Err(ApiError::read_model_unavailable()),
        }
    }

    /// The sign-in store, or 503.
    pub fn redis(&self) -> Result<&Redis, ApiError> {
        self.redis
            .get()
            .ok_or_else(ApiError::auth_store_unavailable)
    }

    /// 503 at once when the bus connection is down, rather than after a publish timeout (and rather
    /// than leaving a publish buffered in the client to go out after the caller heard "failed").
    pub fn require_bus(&self) -> Result<(), ApiError> {
        if self.bus.client().connection_state() == async_nats::connection::State::Connected {
            Ok(())
        } else {
            Err(ApiError::bus_unavailable())
        }
    }
}

/// A failed query: an outage (503) unless the server refused the SQL itself, which is a bug.
pub fn query_error(error: &tokio_postgres::Error) -> ApiError {
    // Connection exceptions (08), operator intervention such as a shutdown (57) and exhausted
    // resources (53) are outages; any other SQLSTATE means the query itself is wrong.
    let outage = error.code().is_none_or(|code| {
        ["08", "57", "53"]
            .iter()
            .any(|class| code.code().starts_with(class))
    });
    if outage {
        tracing::debug!(%error, "read-model query failed");
        ApiError::read_model_unavailable()
    } else {
        tracing::error!(%error, "read-model query refused");
        ApiError::internal("a read-model query failed")
    }
}

/// Connects the read-model pool in the background, retrying until it works or shutdown.
pub fn connect_postgres_in_background(state: AppState, config: Config, shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            match coinalarm_runtime::postgres::connect_pool(&config.postgres).await {
                Ok(pool) => {
                    let _ = state.postgres.set(pool);
                    tracing::info!("read models reachable");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "postgres not reachable yet; reads answer 503 until it is");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.wait() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

/// Connects Redis in the background, retrying until it works or shutdown. Once connected, the client
/// reconnects by itself.
pub fn connect_redis_in_background(state: AppState, config: Config, shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            match Redis::connect(&config.redis).await {
                Ok(redis) => {
                    let _ = state.redis.set(redis);
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "redis not reachable yet; sign-in answers 503 until it is");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.wait() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_keyed() {
        let keys = Keys::new(vec![3u8; 32]);
        let phone = PhoneNumber::parse("010-1234-5678").expect("phone");
        assert_eq!(keys.user_id(&phone), keys.user_id(&phone));
        assert!(keys.user_id(&phone).as_str().starts_with("u-"));
        let other = Keys::new(vec![4u8; 32]);
        assert_ne!(keys.user_id(&phone), other.user_id(&phone));
        assert_ne!(keys.phone_hash(&phone), other.phone_hash(&phone));
    }

    #[test]
    fn revocations_expire() {
        let revoked = RevokedSessions::default();
        let session = uuid::Uuid::new_v4();
        revoked.insert(
            session,
            Timestamp::now() + jiff::SignedDuration::from_hours(1),
        );
        assert!(revoked.contains(&session));
        let old = uuid::Uuid::new_v4();
        revoked.insert(old, Timestamp::now() - jiff::SignedDuration::from_hours(1));
        revoked.insert(uuid::Uuid::new_v4(), Timestamp::now());
        assert!(!revoked.contains(&old));
    }
}
