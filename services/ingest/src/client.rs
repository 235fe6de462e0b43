//! The Upbit websocket client: connects, subscribes to `ticker` and `trade`, reads binary (or text) frames
//! into a bounded channel, pings to keep the connection alive, treats a feed that goes quiet for too long
//! as dead, and reconnects with exponential backoff and jitter, resubscribing each time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use coinalarm_runtime::Shutdown;
use futures::{SinkExt, StreamExt};
use proto_events::domain::MarketCode;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::frame::{Frame, WireFormat, parse_frame};
use crate::subscription::Subscription;

/// Upbit's public quotation endpoint.
pub const UPBIT_WEBSOCKET_URL: &str = "wss://api.upbit.com/websocket/v1";

/// Frames are a few hundred bytes; anything near this is not Upbit talking.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How the client connects and when it gives up on a connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub url: String,
    pub markets: Vec<MarketCode>,
    pub format: WireFormat,
    /// No market data for this long: the feed is silent; alarm and reconnect.
    pub silence: Duration,
    /// A websocket ping is sent this often; no pong by the next ping means a dead connection.
    pub ping_interval: Duration,
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles (with jitter) up to `reconnect_max` while connecting keeps failing.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>, markets: Vec<MarketCode>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            markets,
            format: WireFormat::Simple,
            silence: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url:?} is not a websocket url: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("no markets to subscribe to")]
    NoMarkets,
}

/// Counters and flags describing the feed, shared with whoever wants to watch it (tests, status pages);
/// the same facts go to metrics.
#[derive(Debug, Clone, Default)]
pub struct FeedHealth(Arc<HealthInner>);

#[derive(Debug, Default)]
struct HealthInner {
    connections: AtomicU64,
    subscriptions: AtomicU64,
    disconnects: AtomicU64,
    silences: AtomicU64,
    frames: AtomicU64,
    pongs: AtomicU64,
    silent: AtomicBool,
}

impl FeedHealth {
    pub fn new() -> FeedHealth {
        FeedHealth::default()
    }

    /// Websocket connections opened so far.
    pub fn connections(&self) -> u64 {
        self.0.connections.load(Ordering::Relaxed)
    }

    /// Subscription requests sent so far (one per connection).
    pub fn subscriptions(&self) -> u64 {
        self.0.subscriptions.load(Ordering::Relaxed)
    }

    /// Connections that ended, for whatever reason other than shutdown.
    pub fn disconnects(&self) -> u64 {
        self.0.disconnects.load(Ordering::Relaxed)
    }

    /// Times the feed went silent.
    pub fn silences(&self) -> u64 {
        self.0.silences.load(Ordering::Relaxed)
    }

    /// Frames received (market data, status and errors alike).
    pub fn frames(&self) -> u64 {
        self.0.frames.load(Ordering::Relaxed)
    }

    /// Pongs received in answer to the client's pings.
    pub fn pongs(&self) -> u64 {
        self.0.pongs.load(Ordering::Relaxed)
    }

    /// True from a silence until the next market data frame.
    pub fn is_silent(&self) -> bool {
        self.0.silent.load(Ordering::Relaxed)
    }

    fn set_silent(&self, silent: bool) {
        self.0.silent.store(silent, Ordering::Relaxed);
        metrics::gauge!("coinalarm_ingest_feed_silent").set(if silent { 1.0 } else { 0.0 });
    }
}

/// Why one connection ended.
#[derive(Debug)]
enum SessionEnd {
    Shutdown,
    /// The channel's receiver is gone: nobody wants frames any more.
    ReceiverGone,
    Silent,
    Failed(String),
}

/// Runs the feed until shutdown (or until the receiver is dropped), reconnecting as needed.
/// Returns an error only for a configuration that can never work.
pub async fn run(
    config: &ClientConfig,
    sink: mpsc::Sender<Frame>,
    health: FeedHealth,
    shutdown: Shutdown,
) -> Result<(), Error> {
    validate(config)?;
    // reqwest and tungstenite are built without a default crypto provider (no aws-lc); install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backoff_builder = backon::ExponentialBuilder::default()
        .with_min_delay(config.reconnect_min)
        .with_max_delay(config.reconnect_max)
        .with_jitter()
        .with_jitter_seed(fastrand::u64(..))
        .without_max_times();
    let mut backoff = backoff_builder.build();
    metrics::gauge!("coinalarm_ingest_feed_silent").set(0.0);
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        let (end, delivered) = session(config, &sink, &health, &shutdown).await;
        match end {
            SessionEnd::Shutdown | SessionEnd::ReceiverGone => return Ok(()),
            SessionEnd::Silent => {}
            SessionEnd::Failed(reason) => {
                tracing::warn!(url = %config.url, %reason, "exchange connection lost");
            }
        }
        health.0.disconnects.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("coinalarm_ingest_reconnects_total").increment(1);
        if delivered {
            // A connection that carried data was healthy: the next failure starts from the short delay.
            backoff = backoff_builder.build();
        }
        let delay = backoff.next().unwrap_or(config.reconnect_max);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting to the exchange"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.wait() => return Ok(()),
        }
    }
}

fn validate(config: &ClientConfig) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: config.url.clone(),
        reason,
    };
    if !(config.url.starts_with("ws://") || config.url.starts_with("wss://")) {
        return Err(invalid("the scheme must be ws or wss".to_owned()));
    }
    config
        .url
        .as_str()
        .into_client_request()
        .map_err(|error| invalid(error.to_string()))?;
    if config.markets.is_empty() {
        return Err(Error::NoMarkets);
    }
    Ok(())
}

/// One connection, from connect to its end. The flag says whether it delivered any market data.
async fn session(
    config: &ClientConfig,
    sink: &mpsc::Sender<Frame>,
    health: &FeedHealth,
    shutdown: &Shutdown,
) -> (SessionEnd, bool) {
    let websocket_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        config.url.as_str(),
        Some(websocket_config),
        true,
        None,
    );
    let connected = tokio::select! {
        connected = tokio::time::timeout(config.connect_timeout, connect) => connected,
        () = shutdown.wait() => return (SessionEnd::Shutdown, false),
    };
    let mut socket = match connected {
        Ok(Ok((socket, _response))) => socket,
        Ok(Err(error)) => return (SessionEnd::Failed(format!("connect: {error}")), false),
        Err(_) => {
            return (
                SessionEnd::Failed(format!(
                    "connect: no answer within {:?}",
                    config.connect_timeout
                )),
                false,
            );
        }
    };
    health.0.connections.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("coinalarm_ingest_connections_total").increment(1);

    let subscription = Subscription::ticker_and_trade(&config.markets, config.format);
    if let Err(error) = socket.send(Message::text(subscription.to_json())).await {
        return (SessionEnd::Failed(format!("subscribe: {error}")), false);
    }
    health.0.subscriptions.fetch_add(1, Ordering::Relaxed);
    tracing::info!(url = %config.url, markets = config.markets.len(), format = %config.format, "subscribed to the exchange feed");

    let mut delivered = false;
    let silence = tokio::time::sleep(config.silence);
    tokio::pin!(silence);
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    let mut rate = tokio::time::interval_at(
        Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut frames_this_second: u64 = 0;
    let mut rate_window_started = Instant::now();

    let end = loop {
        tokio::select! {
            () = shutdown.wait() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                break SessionEnd::Shutdown;
            }
            message = socket.next() => {
                let bytes = match message {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Text(text))) => text.into(),
                    Some(Ok(Message::Pong(_))) => {
                        health.0.pongs.fetch_add(1, Ordering::Relaxed);
                        awaiting_pong = false;
                        continue;
                    }
                    // tungstenite answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(frame))) => {
                        break SessionEnd::Failed(format!("closed by the exchange: {frame:?}"));
                    }
                    Some(Err(error)) => break SessionEnd::Failed(read_error(&error)),
                    None => break SessionEnd::Failed("the connection ended".to_owned()),
                };
                health.0.frames.fetch_add(1, Ordering::Relaxed);
                frames_this_second += 1;
                let frame = match parse_frame(&bytes) {
                    Ok(frame) => frame,
                    Err(error) => {
                        metrics::counter!("coinalarm_ingest_invalid_frames_total", "reason" => error.reason()).increment(1);
                        tracing::warn!(%error, "frame skipped");
                        continue;
                    }
                };
                metrics::counter!("coinalarm_ingest_frames_total", "source" => "upbit", "type" => frame.kind_label()).increment(1);
                match &frame {
                    Frame::Error { name, message } => {
                        tracing::error!(%name, %message, "the exchange refused the subscription");
                        break SessionEnd::Failed(format!("exchange error {name}: {message}"));
                    }
                    Frame::Status { .. } => continue,
                    Frame::Trade(_) | Frame::Ticker(_) | Frame::Other { .. } => {}
                }
                if health.is_silent() {
                    tracing::info!("exchange feed resumed");
                    health.set_silent(false);
                }
                delivered = true;
                // Back-pressure: a full channel stops reading here, and TCP slows the exchange down.
                if sink.send(frame).await.is_err() {
                    break SessionEnd::ReceiverGone;
                }
                silence.as_mut().reset(Instant::now() + config.silence);
            }
            () = &mut silence => {
                health.0.silences.fetch_add(1, Ordering::Relaxed);
                health.set_silent(true);
                tracing::warn!(url = %config.url, silence_seconds = config.silence.as_secs_f64(), "exchange feed silent; reconnecting");
                break SessionEnd::Silent;
            }
            _ = ping.tick() => {
                if awaiting_pong {
                    break SessionEnd::Failed(format!("no pong within {:?}", config.ping_interval));
                }
                if let Err(error) = socket.send(Message::Ping(Default::default())).await {
                    break SessionEnd::Failed(format!("ping: {error}"));
                }
                awaiting_pong = true;
            }
            _ = rate.tick() => {
                let elapsed = rate_window_started.elapsed().as_secs_f64();
                if elapsed > 0.0 {
                    metrics::gauge!("coinalarm_ingest_frames_per_second").set(frames_this_second as f64 / elapsed);
                }
                frames_this_second = 0;
                rate_window_started = Instant::now();
            }
        }
    };
    metrics::gauge!("coinalarm_ingest_frames_per_second").set(0.0);
    (end, delivered)
}

fn read_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "the connection closed".to_owned()
        }
        tungstenite::Error::Protocol(problem) => format!("protocol error: {problem}"),
        tungstenite::Error::Capacity(problem) => format!("frame too large: {problem}"),
        other => format!("read: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, markets: &[&str]) -> ClientConfig {
        ClientConfig::new(
            url,
            markets
                .iter()
                .map(|code| MarketCode::parse(code).unwrap())
                .collect(),
        )
    }

    #[test]
    fn configuration_that_can_never_work_is_refused() {
        assert!(validate(&config(UPBIT_WEBSOCKET_URL, &["KRW-BTC"])).is_ok());
        assert!(validate(&config("ws://127.0.0.1:1/websocket/v1", &["KRW-BTC"])).is_ok());
        assert!(matches!(
            validate(&config("https://api.upbit.com", &["KRW-BTC"])),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            validate(&config("ws://bad host/", &["KRW-BTC"])),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            validate(&config(UPBIT_WEBSOCKET_URL, &[])),
            Err(Error::NoMarkets)
        ));
    }
}
