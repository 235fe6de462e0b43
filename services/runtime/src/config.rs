//! Layered, typed configuration: built-in defaults, then an optional TOML file, then `COINALARM_*`
//! environment variables (nesting with `__`, e.g. `COINALARM_NATS__URLS__CLOUD`).
//!
//! Unknown keys are rejected so a typo in a file or variable fails at start instead of being ignored.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use proto_events::Site;
use serde::{Deserialize, Serialize};

use crate::postgres::PostgresConfig;
use crate::redis::RedisConfig;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct Error(#[from] Box<figment::Error>);

#[derive(Debug, thiserror::Error)]
#[error("invalid [{service}] configuration: {message}")]
pub struct SectionError {
    pub service: String,
    pub message: String,
}

/// Everything a CoinAlarm process needs to know about where it runs and what it talks to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The site this process belongs to: it writes to this site's origin streams.
    pub site: Site,
    pub nats: NatsConfig,
    pub postgres: PostgresConfig,
    pub redis: RedisConfig,
    pub telemetry: TelemetryConfig,
    /// How long a stopping process lets its services drain before it exits anyway.
    #[serde(with = "seconds")]
    pub shutdown_grace: Duration,
    /// Each service's own section (`[dispatcher]`, `COINALARM_DISPATCHER__...`), typed by the service
    /// itself through [`Config::section`], so the runtime need not know every service's settings.
    pub ingest: ServiceSection,
    pub matcher: ServiceSection,
    pub notifier: ServiceSection,
    pub dispatcher: ServiceSection,
    pub projector: ServiceSection,
    pub api: ServiceSection,
    /// Site liveness and takeover (`[sites]`, read by `coinalarm_runtime::sites::SitesConfig`).
    pub sites: ServiceSection,
}

/// A service's raw settings table, checked when the service reads it.
pub type ServiceSection = serde_json::Map<String, serde_json::Value>;

impl Default for Config {
    fn default() -> Self {
        Config {
            site: Site::Onprem,
            nats: NatsConfig::default(),
            postgres: PostgresConfig::default(),
            redis: RedisConfig::default(),
            telemetry: TelemetryConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            ingest: ServiceSection::new(),
            matcher: ServiceSection::new(),
            notifier: ServiceSection::new(),
            dispatcher: ServiceSection::new(),
            projector: ServiceSection::new(),
            api: ServiceSection::new(),
            sites: ServiceSection::new(),
        }
    }
}

impl Config {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, Error> {
        Self::figment(file)
            .extract()
            .map_err(|error| Error(Box::new(error)))
    }

    /// The layered sources, exposed so tests can add their own layer on top.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // Variables the scripts and test harness use for themselves are not configuration keys.
        let environment = Env::prefixed("COINALARM_")
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                !key.starts_with("test_")
                    && !matches!(
                        key.as_str(),
                        "config" | "nats_server" | "postgres_url" | "redis_url" | "keep_test_dirs"
                    )
            })
            .split("__");
        figment.merge(environment)
    }

    /// A service's typed settings from its section: defaults for what is not set, an error for keys the
    /// type does not know (give `T` `#[serde(deny_unknown_fields, default)]`).
    pub fn section<T: serde::de::DeserializeOwned>(
        &self,
        service: &str,
    ) -> Result<T, SectionError> {
        let table = match service {
            "ingest" => &self.ingest,
            "matcher" => &self.matcher,
            "notifier" => &self.notifier,
            "dispatcher" => &self.dispatcher,
            "projector" => &self.projector,
            "api" => &self.api,
            "sites" => &self.sites,
            other => {
                return Err(SectionError {
                    service: other.to_owned(),
                    message: "no such service section".to_owned(),
                });
            }
        };
        serde_json::from_value(serde_json::Value::Object(table.clone())).map_err(|error| {
            SectionError {
                service: service.to_owned(),
                message: error.to_string(),
            }
        })
    }

    /// The NATS URL of this process's own site.
    pub fn local_nats_url(&self) -> &str {
        self.nats.url(self.site)
    }
}

/// How to reach each site's NATS server and as whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub urls: SiteUrls,
    /// Default user; services can be given their own in `users`.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Per-service credentials (`ingest`, `matcher`, ...), so each service connects with least privilege
    /// even when one process hosts several of them.
    pub users: BTreeMap<String, Credentials>,
    /// Bound on every JetStream API call and publish acknowledgement.
    #[serde(with = "seconds")]
    pub request_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: SiteUrls::default(),
            user: None,
            password: None,
            users: BTreeMap::new(),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl NatsConfig {
    pub fn url(&self, site: Site) -> &str {
        match site {
            Site::Onprem => &self.urls.onprem,
            Site::Cloud => &self.urls.cloud,
        }
    }

    /// The credentials a named service connects with: its own if configured, else the default.
    pub fn credentials_for(&self, service: &str) -> Option<Credentials> {
        if let Some(credentials) = self.users.get(service) {
            return Some(credentials.clone());
        }
        let user = self.user.clone()?;
        Some(Credentials {
            user,
            password: self.password.clone().unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteUrls {
    pub onprem: String,
    pub cloud: String,
}

impl Default for SiteUrls {
    fn default() -> Self {
        SiteUrls {
            onprem: "nats://127.0.0.1:4222".to_owned(),
            cloud: "nats://127.0.0.1:4223".to_owned(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

// Hand-written so a password never reaches a log line through `{:?}`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `tracing` filter directives, e.g. `info,coinalarm_matcher=debug`.
    pub log_filter: String,
    /// `json` for machines, `pretty` for people at a terminal.
    pub log_format: LogFormat,
    /// Where `/metrics` is served for Prometheus; `None` disables the listener.
    pub metrics_listen: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_filter: "info".to_owned(),
            log_format: LogFormat::Pretty,
            metrics_listen: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Durations in config are whole or fractional seconds: `shutdown_grace = 2.5`.
pub mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
// figment's Jail fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;

    #[test]
    fn environment_overrides_file_and_defaults() {
        Jail::expect_with(|jail| {
            // A developer's shell may hold a deployment's settings (`source .run/env`).
            jail.clear_env();
            jail.create_file(
                "coinalarm.toml",
                r#"
                site = "cloud"
                shutdown_grace = 2.5
                [nats.urls]
                onprem = "nats://10.0.0.1:4222"
                cloud = "nats://10.0.0.2:4222"
                "#,
            )?;
            jail.set_env("COINALARM_NATS__URLS__CLOUD", "nats://127.0.0.1:9999");
            jail.set_env("COINALARM_NATS__USER", "admin");
            jail.set_env("COINALARM_TEST_POSTGRES_URL", "postgres://ignored");
            jail.set_env("COINALARM_NATS_SERVER", "/ignored/nats-server");
            let config =
                Config::load(Some(Path::new("coinalarm.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.site, Site::Cloud);
            assert_eq!(config.local_nats_url(), "nats://127.0.0.1:9999");
            assert_eq!(config.nats.url(Site::Onprem), "nats://10.0.0.1:4222");
            assert_eq!(config.shutdown_grace, Duration::from_millis(2500));
            assert_eq!(
                config.nats.credentials_for("ingest").map(|c| c.user),
                Some("admin".to_owned())
            );
            Ok(())
        });
    }

    #[test]
    fn service_sections_are_typed_by_their_service() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct Dispatcher {
            rate_per_second: u32,
            base_url: String,
        }
        Jail::expect_with(|jail| {
            jail.set_env("COINALARM_DISPATCHER__RATE_PER_SECOND", "30");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            let section: Dispatcher = config.section("dispatcher").map_err(|e| e.to_string())?;
            assert_eq!(section.rate_per_second, 30);
            assert_eq!(section.base_url, "");
            jail.set_env("COINALARM_DISPATCHER__RATE_PER_SECONDS", "30");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert!(config.section::<Dispatcher>("dispatcher").is_err());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        Jail::expect_with(|jail| {
            jail.set_env("COINALARM_NATS__URL", "nats://typo:4222");
            let error = Config::load(None).expect_err("a misspelt key must not be ignored");
            assert!(error.to_string().contains("url"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn passwords_are_not_printed() {
        let credentials = Credentials {
            user: "api".to_owned(),
            password: "hunter2".to_owned(),
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
