//! The `[matcher]` configuration section (`COINALARM_MATCHER__…` in the environment).

use std::time::Duration;

use coinalarm_runtime::config::seconds;
use serde::{Deserialize, Serialize};

/// Settings of the matcher service. Durations are seconds (`schedule_grace = 600`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatcherConfig {
    /// Durable consumer of the local `TICKS` aggregate.
    pub durable: String,
    /// Most ticks evaluated together; their triggers are published together and the ticks acknowledged
    /// after.
    pub tick_batch_size: usize,
    /// Bound on delivered but unacknowledged ticks: back-pressure when publishing triggers is slow.
    pub max_ack_pending: i64,
    /// How long a delivered tick may stay unacknowledged before the server delivers it again.
    #[serde(with = "seconds")]
    pub ack_wait: Duration,
    /// A scheduled occurrence missed by up to this long (a restart, a failover) is still fired, once; an
    /// older one is skipped and counted.
    #[serde(with = "seconds")]
    pub schedule_grace: Duration,
    /// How far back from its position in `TICKS` a starting matcher reads ticks: at least the longest
    /// rolling window (24 h), or changes over it are unknown until that much has been seen again.
    #[serde(with = "seconds")]
    pub tick_history: Duration,
    /// At start, older triggers are read only as the last one per alert; triggers this recent are read in
    /// full, from the aggregate (two sites' copies can be stored out of order) and from this site's own
    /// origin (the aggregate may not have copied the last ones yet).
    #[serde(with = "seconds")]
    pub trigger_tail: Duration,
    /// How long recent ticks are kept per market to replay an alert event that arrives after ticks
    /// stamped later than it (see the crate documentation).
    #[serde(with = "seconds")]
    pub replay_window: Duration,
    /// At most this many recent ticks kept per market for that replay; 0 turns it off.
    pub replay_ticks_max: usize,
    /// How often the index sizes are reported as metrics.
    #[serde(with = "seconds")]
    pub metrics_interval: Duration,
    /// Longest pause between attempts to publish a batch of triggers while NATS refuses them.
    #[serde(with = "seconds")]
    pub publish_retry_max: Duration,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        MatcherConfig {
            durable: "matcher".to_owned(),
            tick_batch_size: 500,
            max_ack_pending: 10_000,
            ack_wait: Duration::from_secs(30),
            schedule_grace: Duration::from_secs(600),
            tick_history: Duration::from_secs(24 * 3600 + 300),
            trigger_tail: Duration::from_secs(3600),
            replay_window: Duration::from_secs(60),
            replay_ticks_max: 2_048,
            metrics_interval: Duration::from_secs(10),
            publish_retry_max: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_unknown_keys_are_refused() {
        let mut config = coinalarm_runtime::Config::default();
        let defaults: MatcherConfig = config.section("matcher").unwrap();
        assert_eq!(defaults, MatcherConfig::default());
        config
            .matcher
            .insert("schedule_grace".to_owned(), serde_json::json!(120));
        let custom: MatcherConfig = config.section("matcher").unwrap();
        assert_eq!(custom.schedule_grace, Duration::from_secs(120));
        config
            .matcher
            .insert("grace".to_owned(), serde_json::json!(120));
        assert!(config.section::<MatcherConfig>("matcher").is_err());
    }
}
