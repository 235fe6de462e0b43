//! Logs, metrics and traces for every process: structured `tracing` output (JSON or human), a
//! Prometheus `/metrics` listener, and optional OTLP/HTTP export of the spans `crate::trace` makes.
//!
//! Spans are exported per service: one tracer provider (and batch span processor, a task on the tokio
//! runtime) per service name, since `service.name` is a property of the provider's resource and one
//! `coinalarm serve all` process hosts every service. They share one HTTP client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};
use crate::trace::Tracer;

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
    #[error("invalid otlp_endpoint {endpoint:?}: {reason}")]
    OtlpEndpoint { endpoint: String, reason: String },
    #[error("sample_ratio must be between 0 and 1, not {0}")]
    SampleRatio(f64),
    #[error("cannot build the HTTP client of the trace exporter: {0}")]
    ExportClient(reqwest::Error),
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
    if let Some(exporting) = Exporting::from_config(config)? {
        let endpoint = exporting.endpoint.clone();
        // Like the subscriber, the first init's exporter stays.
        if EXPORTING.set(exporting).is_ok() {
            tracing::info!(
                endpoint = endpoint
                    .as_deref()
                    .unwrap_or("from OTEL_EXPORTER_OTLP_* variables"),
                sample_ratio = config.sample_ratio,
                "exporting traces over otlp/http"
            );
        }
    }
    Ok(())
}

/// The span export [`init`] installed, if any: what every service's tracer provider is built from.
static EXPORTING: OnceLock<Exporting> = OnceLock::new();

struct Exporting {
    /// Full `/v1/traces` URL; `None` lets the exporter read the standard `OTEL_EXPORTER_OTLP_*`.
    endpoint: Option<String>,
    service_name_prefix: String,
    sample_ratio: f64,
    timeout: Duration,
    /// The workspace's reqwest (rustls + ring), shared by every service's exporter.
    http: reqwest::Client,
    /// One provider per service name; `None` once [`shutdown_traces`] ran, so later spans are not
    /// exported to a stopped processor.
    providers: Mutex<Option<BTreeMap<String, SdkTracerProvider>>>,
}

const TRACES_PATH: &str = "/v1/traces";
const STANDARD_ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

impl Exporting {
    fn from_config(config: &TelemetryConfig) -> Result<Option<Exporting>, Error> {
        let endpoint = match &config.otlp_endpoint {
            Some(base) => Some(traces_url(base)?),
            None if STANDARD_ENDPOINT_VARIABLES
                .iter()
                .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty())) =>
            {
                None
            }
            None => return Ok(None),
        };
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(Error::SampleRatio(config.sample_ratio));
        }
        // The exporter may also speak https; rustls needs its process-wide crypto provider for that.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.export_timeout)
            .user_agent(concat!("coinalarm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::ExportClient)?;
        Ok(Some(Exporting {
            endpoint,
            service_name_prefix: config.service_name_prefix.clone(),
            sample_ratio: config.sample_ratio,
            timeout: config.export_timeout,
            http,
            providers: Mutex::new(Some(BTreeMap::new())),
        }))
    }

    fn provider(&self, service: &str) -> Result<SdkTracerProvider, String> {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(self.http.clone())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(self.timeout);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let exporter = builder.build().map_err(|error| error.to_string())?;
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(format!("{}{service}", self.service_name_prefix))
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        Ok(SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                self.sample_ratio,
            ))))
            .with_resource(resource)
            .build())
    }
}

/// `<base>/v1/traces`, the OTLP/HTTP convention for a collector's base URL.
fn traces_url(base: &str) -> Result<String, Error> {
    let invalid = |reason: String| Error::OtlpEndpoint {
        endpoint: base.to_owned(),
        reason,
    };
    let url = reqwest::Url::parse(base).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".to_owned()));
    }
    Ok(format!("{}{TRACES_PATH}", base.trim_end_matches('/')))
}

/// The tracer of `service`, exporting when [`init`] installed an exporter. Must run inside the tokio
/// runtime the service runs on: the first call per service spawns its batch export task there.
pub(crate) fn tracer_for(service: &str) -> Tracer {
    let Some(exporting) = EXPORTING.get() else {
        return Tracer::disabled();
    };
    let mut providers = exporting
        .providers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(providers) = providers.as_mut() else {
        return Tracer::disabled();
    };
    if let Some(provider) = providers.get(service) {
        return Tracer::exporting(provider.tracer(service.to_owned()));
    }
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!(
            service,
            "no tokio runtime to export spans from; this service's spans are not exported"
        );
        return Tracer::disabled();
    }
    match exporting.provider(service) {
        Ok(provider) => {
            let tracer = provider.tracer(service.to_owned());
            providers.insert(service.to_owned(), provider);
            Tracer::exporting(tracer)
        }
        Err(error) => {
            tracing::error!(service, %error, "cannot build the span exporter; this service's spans are not exported");
            Tracer::disabled()
        }
    }
}

/// Exports the spans still queued and stops every service's exporter, waiting at most `timeout` (the
/// stop of a process must stay bounded even when the collector is unreachable). Spans started after
/// this are not exported. Does nothing when export is off.
pub async fn shutdown_traces(timeout: Duration) {
    let Some(exporting) = EXPORTING.get() else {
        return;
    };
    let providers = exporting
        .providers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .unwrap_or_default();
    if providers.is_empty() {
        return;
    }
    // The processors' shutdown blocks on their export task, which runs on this runtime: wait for it
    // from a blocking thread, never from a worker.
    let stopping = tokio::task::spawn_blocking(move || {
        for (service, provider) in providers {
            if let Err(error) = provider.shutdown_with_timeout(timeout) {
                tracing::warn!(service, %error, "the last spans may not have been exported");
            }
        }
    });
    if tokio::time::timeout(timeout, stopping).await.is_err() {
        tracing::warn!(
            timeout_ms = timeout.as_millis() as u64,
            "gave up exporting the last spans"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_a_base_url_completed_with_the_traces_path() {
        assert_eq!(
            traces_url("http://collector:4318").expect("valid"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://collector.example/otlp/").expect("valid"),
            "https://collector.example/otlp/v1/traces"
        );
        assert!(traces_url("collector:4318").is_err());
        assert!(traces_url("grpc://collector:4317").is_err());
    }
}
