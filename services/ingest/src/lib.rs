//! Ingest: reads exchange feeds (the Upbit websocket, recorded captures) and writes every trade as a
//! `TickObserved` event to this site's TICKS origin stream, with a deterministic id so that ingesters at
//! both sites reading the same exchange store each trade once.
//!
//! The source (websocket client or recording player) parses frames into a bounded channel; the publisher
//! drains it in small pipelined batches. A slow NATS fills the channel, which stops the reader, which lets
//! TCP slow the exchange: memory stays flat. On shutdown the source stops reading, and what it read is
//! flushed before `run` returns.
//!
//! Also here: [`fake_exchange`], the local Upbit stand-in for tests and the demo.

pub mod client;
pub mod config;
pub mod fake_exchange;
pub mod frame;
pub mod publisher;
pub mod recorded;
pub mod sequence;
pub mod subscription;
pub mod ticks;

use std::time::Duration;

use coinalarm_runtime::bus::{self, Bus};
use coinalarm_runtime::shutdown::{BoxError, ServiceFuture};
use coinalarm_runtime::{Config, Shutdown};
use proto_events::domain::{Exchange, MarketCode};
use proto_events::markets::Catalogue;
use tokio::sync::mpsc;

pub use client::FeedHealth;
pub use config::{IngestConfig, SourceKind};
pub use fake_exchange::{FakeExchange, FakeExchangeConfig};
pub use publisher::PublishReport;

/// The name this service goes by in config (`nats.users.ingest`), logs and metrics.
pub const NAME: &str = "ingest";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Section(#[from] coinalarm_runtime::config::SectionError),
    #[error("invalid [ingest] configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Client(#[from] client::Error),
    #[error(transparent)]
    Recording(#[from] recorded::RecordingError),
    #[error(transparent)]
    Publish(#[from] publisher::Error),
}

/// Runs the service until `shutdown` is triggered.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), BoxError> {
    let settings: IngestConfig = config.section(NAME).map_err(Error::from)?;
    let bus = Bus::connect(&config, NAME).await.map_err(Error::from)?;
    ingest(bus, settings, FeedHealth::new(), shutdown).await?;
    Ok(())
}

/// `run` as a boxed future, the shape the process host takes.
pub fn start(config: Config, shutdown: Shutdown) -> ServiceFuture {
    Box::pin(run(config, shutdown))
}

/// The service on an existing bus connection, watched through `health`: reads the configured source and
/// publishes until shutdown. A recording is played once; the service then idles until shutdown rather
/// than exit (an orchestrator would restart it and play the recording again).
pub async fn ingest(
    bus: Bus,
    settings: IngestConfig,
    health: FeedHealth,
    shutdown: Shutdown,
) -> Result<PublishReport, Error> {
    settings.validate().map_err(Error::Config)?;
    let (sender, receiver) = mpsc::channel(settings.channel_capacity);
    let live = settings.source == SourceKind::Upbit;
    let publisher = publisher::TickPublisher::new(
        bus.clone(),
        ticks::TickProcessor::new(Exchange::upbit()),
        settings.batch_size,
        settings.flush_timeout_seconds,
        live,
    );
    tracing::info!(site = %bus.site(), source = ?settings.source, "ingest starting");
    let source = async {
        match settings.source {
            SourceKind::Upbit => {
                let markets = resolve_markets(&settings).await;
                tracing::info!(markets = markets.len(), url = %settings.url, "watching markets");
                let client_config = settings.client_config(markets);
                client::run(&client_config, sender, health, shutdown.clone()).await?;
            }
            SourceKind::Recorded => {
                let frames = match &settings.recorded_path {
                    Some(path) => recorded::read_recording(path)?,
                    None => recorded::parse_recording(recorded::VENDORED_UPBIT)?,
                };
                let report = recorded::play(&frames, settings.speed, &sender, &shutdown).await;
                // Closing the channel lets the publisher flush what is left and finish.
                drop(sender);
                tracing::info!(
                    frames = report.frames,
                    trades = report.trades,
                    invalid = report.invalid,
                    stopped_early = report.stopped_early,
                    "recording played"
                );
            }
        }
        Ok::<(), Error>(())
    };
    let (source_result, publish_result) = tokio::join!(source, publisher.run(receiver, &shutdown));
    source_result?;
    let report = publish_result?;
    tracing::info!(
        published = report.published,
        already_stored = report.already_stored,
        duplicates = report.duplicates,
        invalid = report.invalid,
        "ingest source finished"
    );
    if settings.source == SourceKind::Recorded && !shutdown.is_triggered() {
        tracing::info!("idling until shutdown");
        shutdown.wait().await;
    }
    Ok(report)
}

/// The configured markets, else every KRW market: from `market_list_url` if set and reachable, else from
/// the catalogue compiled in.
pub async fn resolve_markets(settings: &IngestConfig) -> Vec<MarketCode> {
    if !settings.markets.is_empty() {
        return settings.markets.clone();
    }
    if let Some(url) = &settings.market_list_url {
        match fetch_catalogue(url).await {
            Ok(catalogue) if catalogue.krw_markets().next().is_some() => {
                return catalogue
                    .krw_markets()
                    .map(|market| market.code.clone())
                    .collect();
            }
            Ok(_) => {
                tracing::warn!(%url, "the market list has no KRW markets; using the built-in catalogue")
            }
            Err(error) => {
                tracing::warn!(%url, %error, "cannot fetch the market list; using the built-in catalogue")
            }
        }
    }
    Catalogue::upbit()
        .krw_markets()
        .map(|market| market.code.clone())
        .collect()
}

/// `GET /v1/market/all`.
pub async fn fetch_catalogue(url: &str) -> Result<Catalogue, BoxError> {
    // reqwest is built without a default crypto provider (no aws-lc); install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let body = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(Catalogue::from_market_all_json(&body)?)
}
