//! The `[notifier]` config section.

use std::num::NonZeroU32;
use std::time::Duration;

use coinalarm_runtime::config::seconds;
use coinalarm_runtime::sealing::SealingKeys;
use serde::Deserialize;

/// Settings of the notifier (`[notifier]`, `COINALARM_NOTIFIER__...`). Durations are seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifierConfig {
    /// Firings of one user (and one priority) within this window become one SMS.
    #[serde(with = "seconds")]
    pub coalesce_window: Duration,
    /// A price or change-rate alert older than this (from the trigger's `evaluated_at`) is skipped as
    /// stale instead of sent; also the dispatch's expiry.
    #[serde(with = "seconds")]
    pub stale_after: Duration,
    /// The same for scheduled reports, which stay useful longer.
    #[serde(with = "seconds")]
    pub scheduled_stale_after: Duration,
    /// Most price and change-rate SMS per user in any rolling hour; 0 disables the hourly cap.
    pub hourly_cap: u32,
    /// Most price and change-rate SMS per user per local calendar day, for users who have not set their
    /// own `daily_sms_cap`; 0 means no daily cap by default.
    pub default_daily_cap: u32,
    /// Segments one SMS may take; texts are shortened (never dropping a price) to fit.
    pub segment_budget: NonZeroU32,
    /// How long a trigger waits for its user or alert definition to reach this site's read model
    /// before it is skipped (`unknown_user`) or sent with what is known.
    #[serde(with = "seconds")]
    pub definition_wait: Duration,
    /// Triggers fetched at once, and the bound on triggers held for coalescing (JetStream
    /// `max_ack_pending` of the consumer).
    pub batch_size: usize,
    pub max_held_triggers: i64,
    /// Keys that open sign-in codes and seal SMS bodies; the same keys as `api.sealing_keys` and
    /// `dispatcher.sealing_keys` (see `coinalarm_runtime::sealing`). Required.
    pub sealing_keys: SealingKeys,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            coalesce_window: Duration::from_secs(3),
            stale_after: Duration::from_secs(60),
            scheduled_stale_after: Duration::from_secs(30 * 60),
            hourly_cap: 10,
            default_daily_cap: 50,
            segment_budget: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
            definition_wait: Duration::from_secs(30),
            batch_size: 256,
            max_held_triggers: 10_000,
            sealing_keys: SealingKeys::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coinalarm_runtime::Config;

    #[test]
    fn the_section_is_typed_and_strict() {
        let mut config = Config::default();
        let defaults: NotifierConfig = config.section("notifier").unwrap();
        assert_eq!(defaults.coalesce_window, Duration::from_secs(3));
        assert_eq!(defaults.stale_after, Duration::from_secs(60));
        assert_eq!(defaults.segment_budget.get(), 2);
        assert!(!defaults.sealing_keys.is_configured());

        config.notifier = serde_json::json!({
            "coalesce_window": 1.5,
            "hourly_cap": 3,
            "sealing_keys": {"current": "k1", "keys": {"k1": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}},
        })
        .as_object()
        .cloned()
        .unwrap();
        let section: NotifierConfig = config.section("notifier").unwrap();
        assert_eq!(section.coalesce_window, Duration::from_millis(1500));
        assert_eq!(section.hourly_cap, 3);
        assert!(section.sealing_keys.is_configured());
        assert!(!format!("{section:?}").contains("AQEBAQ"));

        config.notifier = serde_json::json!({"coalesce_windows": 1})
            .as_object()
            .cloned()
            .unwrap();
        assert!(config.section::<NotifierConfig>("notifier").is_err());
    }
}
