//! The `[projector]` configuration section: target schema, batch sizes, acknowledgement and retry timing.

use std::time::Duration;

use coinalarm_runtime::config::seconds;
use serde::{Deserialize, Serialize};

use crate::projections::Projection;
use crate::target::Target;

/// `[projector]` in the config file, `COINALARM_PROJECTOR__*` in the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectorConfig {
    /// Postgres schema the read models live in; a rebuild writes to another one.
    pub schema: String,
    /// Run the embedded migrations at start (under the shared advisory lock).
    pub migrate: bool,
    /// Which projections run; all by default.
    pub projections: Vec<Projection>,
    /// Most events applied in one transaction, for every stream but TICKS.
    pub batch_size: usize,
    /// Most ticks applied in one transaction: ticks are many and small, and fold into few rows.
    pub tick_batch_size: usize,
    /// How long a fetch waits for the first message before coming back empty.
    #[serde(with = "seconds")]
    pub fetch_wait: Duration,
    /// How long a delivered batch may stay unacknowledged before the server redelivers it. While a
    /// batch is retried against a slow or absent Postgres its acknowledgement deadline is extended.
    #[serde(with = "seconds")]
    pub ack_wait: Duration,
    /// First delay after a failed batch; doubles up to `retry_max` while failures continue.
    #[serde(with = "seconds")]
    pub retry_min: Duration,
    #[serde(with = "seconds")]
    pub retry_max: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            schema: "public".to_owned(),
            migrate: true,
            projections: Projection::ALL.to_vec(),
            batch_size: 500,
            tick_batch_size: 2_000,
            fetch_wait: Duration::from_secs(1),
            ack_wait: Duration::from_secs(30),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
        }
    }
}

/// Settings that cannot work, found before anything starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("projector.schema: {0}")]
    Schema(#[from] crate::target::InvalidSchema),
    #[error("projector.{field} must be between 1 and {max}")]
    BatchSize { field: &'static str, max: usize },
    #[error("projector.retry_max must not be shorter than projector.retry_min")]
    RetryRange,
    #[error(
        "projector.retry_max must be shorter than projector.ack_wait: a batch held across a retry \
         would be redelivered"
    )]
    RetryBeyondAckWait,
}

/// Upper bound for a batch: one transaction and one pull request hold this many events.
pub const BATCH_SIZE_MAX: usize = 10_000;

impl ProjectorConfig {
    /// Checks the settings and returns the target schema they name.
    pub fn validate(&self) -> Result<Target, ConfigError> {
        let target = Target::new(&self.schema)?;
        for (field, value) in [
            ("batch_size", self.batch_size),
            ("tick_batch_size", self.tick_batch_size),
        ] {
            if value == 0 || value > BATCH_SIZE_MAX {
                return Err(ConfigError::BatchSize {
                    field,
                    max: BATCH_SIZE_MAX,
                });
            }
        }
        if self.retry_max < self.retry_min {
            return Err(ConfigError::RetryRange);
        }
        if self.retry_max >= self.ack_wait {
            return Err(ConfigError::RetryBeyondAckWait);
        }
        Ok(target)
    }

    /// The batch size for one projection.
    pub fn batch_size_for(&self, projection: Projection) -> usize {
        match projection {
            Projection::Ticks => self.tick_batch_size,
            _ => self.batch_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unknown_keys_are_refused() {
        let config: ProjectorConfig =
            serde_json::from_value(serde_json::json!({"batch_size": 100, "ack_wait": 12.5}))
                .expect("parses");
        assert_eq!(config.batch_size, 100);
        assert_eq!(config.ack_wait, Duration::from_millis(12_500));
        assert_eq!(config.projections, Projection::ALL.to_vec());
        assert_eq!(config.validate().expect("valid").as_str(), "public");
        assert!(
            serde_json::from_value::<ProjectorConfig>(serde_json::json!({"batchsize": 1})).is_err()
        );
        let only_ticks: ProjectorConfig =
            serde_json::from_value(serde_json::json!({"projections": ["ticks"]})).expect("parses");
        assert_eq!(only_ticks.projections, vec![Projection::Ticks]);
    }

    #[test]
    fn impossible_settings_are_refused() {
        let zero = ProjectorConfig {
            batch_size: 0,
            ..ProjectorConfig::default()
        };
        assert!(matches!(
            zero.validate(),
            Err(ConfigError::BatchSize {
                field: "batch_size",
                ..
            })
        ));
        let slow_retry = ProjectorConfig {
            retry_max: Duration::from_secs(60),
            ..ProjectorConfig::default()
        };
        assert_eq!(slow_retry.validate(), Err(ConfigError::RetryBeyondAckWait));
        let bad_schema = ProjectorConfig {
            schema: "public; drop".to_owned(),
            ..ProjectorConfig::default()
        };
        assert!(matches!(bad_schema.validate(), Err(ConfigError::Schema(_))));
    }
}
