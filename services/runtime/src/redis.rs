//! Redis access for sign-in codes, sessions and rate limits. fred is specified but upstream has been
//! quiet since 2025-02, so keep Redis behind one small module: nothing else names a fred type, and
//! swapping the client means rewriting this file only.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{
    Builder, ClientLike, Config, Expiration, KeysInterface, LuaInterface, Pool, ReconnectPolicy,
};
use serde::{Deserialize, Serialize};

/// INCR, then give the counter its expiry. Checking PTTL instead of `count == 1` also repairs a
/// counter that somehow lost its expiry, which would otherwise rate-limit its key forever. As one
/// script it is atomic: no caller can observe or strand a counter without a TTL.
const INCR_WITH_TTL: &str = r"
local count = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
";

/// DEL only if the key still holds the expected value, so a caller never deletes a value written by
/// someone else since it read the key (e.g. a newer sign-in code replacing the one being consumed).
const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How a service reaches Redis.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key (`<namespace>:<key>`), so several deployments or tests can share a server.
    pub namespace: String,
    /// Number of multiplexed connections.
    pub pool_size: usize,
    /// Seconds allowed to open a connection.
    pub connect_timeout: u64,
    /// Milliseconds a command may take before it fails; 0 waits forever.
    pub command_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            namespace: "coinalarm".to_owned(),
            pool_size: 4,
            connect_timeout: 5,
            command_timeout_ms: 2_000,
        }
    }
}

/// Failures of the Redis module. Messages never contain the URL, which may carry a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid redis configuration: {0}")]
    Config(String),
    #[error("invalid redis url")]
    InvalidUrl(#[source] fred::error::Error),
    #[error("cannot connect to redis")]
    Connect(#[source] fred::error::Error),
    #[error("redis command failed")]
    Command(#[source] fred::error::Error),
    #[error("a redis ttl must be at least one millisecond, got {0:?}")]
    InvalidTtl(Duration),
}

/// Remaining lifetime of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTtl {
    /// The key does not exist.
    Missing,
    /// The key exists and never expires.
    Persistent,
    /// The key expires after this long.
    ExpiresIn(Duration),
}

/// A cheaply cloneable, namespaced handle on a pool of Redis connections. Every key given to its
/// methods is stored as `<namespace>:<key>`.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    prefix: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool.size())
            .finish()
    }
}

impl Redis {
    /// Connects every pooled client, failing if the server cannot be reached now. Later disconnects
    /// are retried with exponential backoff in the background.
    pub async fn connect(config: &RedisConfig) -> Result<Self, Error> {
        if config.namespace.is_empty() {
            return Err(Error::Config("namespace must not be empty".to_owned()));
        }
        if config.pool_size == 0 {
            return Err(Error::Config("pool_size must be at least 1".to_owned()));
        }
        let mut fred_config = Config::from_url(&config.url).map_err(Error::InvalidUrl)?;
        // Report an unreachable server at startup instead of retrying silently.
        fred_config.fail_fast = true;
        let pool = Builder::from_config(fred_config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(config.connect_timeout);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_millis(config.command_timeout_ms);
            })
            // Unlimited attempts, 100 ms doubling up to 5 s: a restarted Redis is picked up again.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_pool(config.pool_size)
            .map_err(|err| Error::Config(err.details().to_owned()))?;
        // The returned task drives the connections until `quit`; it needs no supervision.
        let _connections = pool.init().await.map_err(Error::Connect)?;
        tracing::info!(namespace = %config.namespace, pool_size = config.pool_size, "connected to redis");
        Ok(Self {
            pool,
            prefix: format!("{}:", config.namespace),
        })
    }

    /// The namespace prefix, including the trailing `:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Readiness check: a round trip to the server.
    pub async fn ping(&self) -> Result<(), Error> {
        self.pool.ping::<()>(None).await.map_err(Error::Command)
    }

    /// The value of `key`, if present.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.pool
            .get::<Option<Bytes>, _>(self.key(key))
            .await
            .map_err(Error::Command)
    }

    /// Stores `value` under `key`, expiring after `ttl` (millisecond precision).
    pub async fn set_ex(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<(), Error> {
        let ttl = millis(ttl)?;
        self.pool
            .set::<(), _, _>(
                self.key(key),
                value.into(),
                Some(Expiration::PX(ttl)),
                None,
                false,
            )
            .await
            .map_err(Error::Command)
    }

    /// Increments the counter at `key` and returns the new count. A counter that did not exist gets
    /// `ttl`; later increments leave its expiry alone, so the window is fixed from the first hit.
    pub async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> Result<i64, Error> {
        let ttl = millis(ttl)?;
        self.pool
            .eval::<i64, _, _, _>(INCR_WITH_TTL, self.key(key), ttl)
            .await
            .map_err(Error::Command)
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn del(&self, key: &str) -> Result<bool, Error> {
        self.pool
            .del::<i64, _>(self.key(key))
            .await
            .map(|deleted| deleted > 0)
            .map_err(Error::Command)
    }

    /// Deletes `key` only if it still holds `expected`; returns whether it did. Atomic (one script).
    pub async fn compare_and_delete(
        &self,
        key: &str,
        expected: impl Into<Bytes>,
    ) -> Result<bool, Error> {
        self.pool
            .eval::<i64, _, _, _>(COMPARE_AND_DELETE, self.key(key), expected.into())
            .await
            .map(|deleted| deleted > 0)
            .map_err(Error::Command)
    }

    /// How long `key` has left.
    pub async fn ttl(&self, key: &str) -> Result<KeyTtl, Error> {
        let ms = self
            .pool
            .pttl::<i64, _>(self.key(key))
            .await
            .map_err(Error::Command)?;
        Ok(match ms {
            -2 => KeyTtl::Missing,
            ms if ms < 0 => KeyTtl::Persistent,
            ms => KeyTtl::ExpiresIn(Duration::from_millis(ms.unsigned_abs())),
        })
    }

    /// Closes the connections once pending commands have been written.
    pub async fn quit(&self) -> Result<(), Error> {
        self.pool.quit().await.map_err(Error::Command)
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }
}

/// Redis rejects a zero expiry, and rounding a sub-millisecond one down would do the same later.
fn millis(ttl: Duration) -> Result<i64, Error> {
    match i64::try_from(ttl.as_millis()) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(Error::InvalidTtl(ttl)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_rejects_unknown_fields() {
        let config: RedisConfig =
            serde_json::from_str(r#"{"namespace": "site-a"}"#).expect("parses");
        assert_eq!(config.namespace, "site-a");
        assert_eq!(config.url, RedisConfig::default().url);
        assert!(serde_json::from_str::<RedisConfig>(r#"{"prefix": "x"}"#).is_err());
    }

    #[test]
    fn ttl_must_be_a_positive_number_of_milliseconds() {
        assert_eq!(millis(Duration::from_secs(2)).expect("valid"), 2_000);
        assert!(matches!(
            millis(Duration::from_micros(999)),
            Err(Error::InvalidTtl(_))
        ));
        assert!(matches!(millis(Duration::ZERO), Err(Error::InvalidTtl(_))));
    }
}
