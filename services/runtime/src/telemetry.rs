//! Logs and metrics for every process: structured `tracing` output (JSON or human) and a Prometheus
//! `/metrics` listener.

use std::net::SocketAddr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid log filter {filter:?}: {source}")]
    LogFilter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("invalid metrics listen address {address:?}: {source}")]
    MetricsAddress {
        address: String,
        source: std::net::AddrParseError,
    },
    #[error("cannot start the metrics listener: {0}")]
    MetricsListener(#[from] metrics_exporter_prometheus::BuildError),
}

/// The recorder installed by [`init`], so a service with its own HTTP server (the API) can render the
/// same metrics on its own route.
static PROMETHEUS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// The Prometheus recorder [`init`] installed, if `metrics_listen` was set.
pub fn prometheus_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    PROMETHEUS.get().cloned()
}

/// Installs the global log subscriber and, if configured, the Prometheus listener. Call once per process,
/// from inside the tokio runtime (the listener is a task on it).
pub fn init(config: &TelemetryConfig) -> Result<(), Error> {
    let filter = EnvFilter::try_new(&config.log_filter).map_err(|source| Error::LogFilter {
        filter: config.log_filter.clone(),
        source,
    })?;
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests, embedding) keeps the first subscriber; that is not an error worth failing on.
    let _already_set = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_target(true))
            .try_init(),
    };
    if let Some(address) = &config.metrics_listen {
        let listen: SocketAddr = address.parse().map_err(|source| Error::MetricsAddress {
            address: address.clone(),
            source,
        })?;
        let (recorder, exporter) = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(listen)
            .build()?;
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|error| {
            Error::MetricsListener(
                metrics_exporter_prometheus::BuildError::FailedToSetGlobalRecorder(error),
            )
        })?;
        tokio::spawn(exporter);
        let _ = PROMETHEUS.set(handle);
        tracing::info!(%listen, "serving prometheus metrics");
    }
    Ok(())
}
