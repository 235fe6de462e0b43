//! A local stand-in for Upbit's quotation websocket, for tests and the demo: a real websocket server that
//! reads Upbit's subscription request and streams `trade` and `ticker` frames (binary, DEFAULT or SIMPLE,
//! as requested) for the requested codes. The production client is what connects to it.
//!
//! Trades come from one of three feeds: a replay of recorded frames (looping, with fresh sequential ids
//! and timestamps per loop), a seeded random walk with occasional jumps, or nothing but what a test
//! pushes with [`FakeExchange::push_trade`]. Pushed trades work in every mode. Every trade is generated
//! once and broadcast, so all subscribers see the same sequential ids — as two ingesters at two sites
//! reading one exchange do. Replay and random walk start when the first client subscribes, so nothing is
//! generated into the void. `GET /v1/market/all` is served on a second port from the vendored catalogue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use coinalarm_runtime::Shutdown;
use futures::{SinkExt, StreamExt};
use jiff::Timestamp;
use proto_events::domain::{MarketCode, Price, Volume};
use proto_events::events::ticks::StreamType;
use proto_events::markets::Catalogue;
use rust_decimal::Decimal;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::frame::{AskBid, Frame, WireFormat, parse_frame};
use crate::recorded::{RecordedFrame, Speed, vendored_upbit};
use crate::subscription::{DataType, Subscription};

/// Trades a slow subscriber may fall behind by before it misses some (it is told in the log).
const BROADCAST_CAPACITY: usize = 16_384;
/// How long a new connection has to send its subscription request.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid fake exchange configuration: {0}")]
    Config(String),
}

/// Where the fake listens and what it streams.
#[derive(Debug, Clone)]
pub struct FakeExchangeConfig {
    /// The websocket listener; port 0 picks a free port (see [`FakeExchange::local_addr`]).
    pub bind: SocketAddr,
    /// `GET /v1/market/all` listener, if wanted.
    pub http_bind: Option<SocketAddr>,
    pub feed: FeedMode,
}

impl Default for FakeExchangeConfig {
    fn default() -> Self {
        FakeExchangeConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_bind: None,
            feed: FeedMode::RandomWalk(RandomWalkConfig::default()),
        }
    }
}

impl FakeExchangeConfig {
    /// Only pushed trades, on free local ports: what tests drive.
    pub fn scripted() -> FakeExchangeConfig {
        FakeExchangeConfig {
            feed: FeedMode::Scripted,
            ..FakeExchangeConfig::default()
        }
    }
}

/// Where trades come from (pushed trades are always accepted on top).
#[derive(Debug, Clone)]
pub enum FeedMode {
    Scripted,
    Replay(ReplayConfig),
    RandomWalk(RandomWalkConfig),
}

/// Replays the trades of a recording; other frame types in it are skipped.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub frames: Vec<RecordedFrame>,
    pub speed: Speed,
    /// `None` loops forever.
    pub loops: Option<u32>,
}

impl Default for ReplayConfig {
    /// The vendored Upbit capture at original speed, looping.
    fn default() -> Self {
        ReplayConfig {
            frames: vendored_upbit(),
            speed: Speed::Original,
            loops: None,
        }
    }
}

/// A seeded random walk per market: each tick moves the price by up to `volatility` (relative), and with
/// `jump_probability` by `jump_size` more, up or down; prices are rounded to the market's price unit.
#[derive(Debug, Clone)]
pub struct RandomWalkConfig {
    pub seed: u64,
    pub markets: Vec<WalkMarket>,
    /// Trades per second per market.
    pub ticks_per_second: f64,
    /// Largest relative move of an ordinary tick (`0.001` = 0.1 %).
    pub volatility: Decimal,
    /// Chance per tick of a jump.
    pub jump_probability: f64,
    /// Relative size of a jump (`0.03` = 3 %).
    pub jump_size: Decimal,
}

/// A market of the random walk and where its price starts (also its previous close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkMarket {
    pub market: MarketCode,
    pub start_price: Price,
}

impl WalkMarket {
    pub fn new(market: MarketCode, start_price: Price) -> WalkMarket {
        WalkMarket {
            market,
            start_price,
        }
    }
}

impl std::str::FromStr for WalkMarket {
    type Err = String;

    /// `KRW-BTC=95000000`: a market and its start price, as a command line takes them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (code, price) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected MARKET=PRICE, such as KRW-BTC=95000000"))?;
        let market = MarketCode::parse(code.trim()).map_err(|error| error.to_string())?;
        let start_price = Price::parse(price.trim()).map_err(|error| error.to_string())?;
        Ok(WalkMarket::new(market, start_price))
    }
}

impl Default for RandomWalkConfig {
    fn default() -> Self {
        let market = |code: &str, price: i64| -> Option<WalkMarket> {
            Some(WalkMarket::new(
                MarketCode::parse(code).ok()?,
                Price::new(Decimal::from(price)).ok()?,
            ))
        };
        RandomWalkConfig {
            seed: 42,
            markets: [
                market("KRW-BTC", 95_000_000),
                market("KRW-ETH", 4_500_000),
                market("KRW-XRP", 800),
                market("KRW-DOGE", 200),
            ]
            .into_iter()
            .flatten()
            .collect(),
            ticks_per_second: 2.0,
            volatility: Decimal::new(5, 4),
            jump_probability: 0.01,
            jump_size: Decimal::new(3, 2),
        }
    }
}

/// A trade to generate. Unset fields take the market's current state (previous close) or defaults.
#[derive(Debug, Clone)]
pub struct TradeSpec {
    pub market: MarketCode,
    pub price: Price,
    pub volume: Option<Volume>,
    pub ask_bid: Option<AskBid>,
    /// Also becomes the market's previous close for later trades.
    pub prev_closing_price: Option<Price>,
    /// Defaults to now.
    pub trade_timestamp: Option<Timestamp>,
}

impl TradeSpec {
    pub fn new(market: MarketCode, price: Price) -> TradeSpec {
        TradeSpec {
            market,
            price,
            volume: None,
            ask_bid: None,
            prev_closing_price: None,
            trade_timestamp: None,
        }
    }
}

/// One generated trade with the market's running figures at that moment (what a ticker frame shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedTrade {
    pub market: MarketCode,
    pub trade_price: Price,
    pub trade_volume: Volume,
    pub ask_bid: AskBid,
    pub prev_closing_price: Price,
    pub trade_timestamp: Timestamp,
    pub timestamp: Timestamp,
    pub sequential_id: u64,
    pub opening_price: Price,
    pub high_price: Price,
    pub low_price: Price,
    pub acc_trade_volume: Decimal,
    pub acc_trade_price: Decimal,
}

#[derive(Debug, Default)]
struct MarketBook {
    prev_closing_price: Option<Price>,
    opening_price: Option<Price>,
    high_price: Option<Price>,
    low_price: Option<Price>,
    acc_trade_volume: Decimal,
    acc_trade_price: Decimal,
    last: Option<Arc<GeneratedTrade>>,
    /// Trades per trade-timestamp millisecond, for Upbit-shaped ids (`ms * 1000 + n`).
    counters: BTreeMap<i64, u64>,
}

impl MarketBook {
    /// `trade_ms * 1000 + n`, unique per market: n counts trades within the millisecond; a millisecond
    /// that is full moves to the next one.
    fn next_sequential_id(&mut self, mut trade_ms: i64) -> (i64, u64) {
        loop {
            let counter = self.counters.entry(trade_ms).or_insert(0);
            if *counter < 1000 {
                let sequential_id = u64::try_from(trade_ms).unwrap_or(0) * 1000 + *counter;
                *counter += 1;
                self.forget_before(trade_ms - 600_000);
                return (trade_ms, sequential_id);
            }
            trade_ms += 1;
        }
    }

    /// Only recent milliseconds can be hit again (a replayed trade is at most seconds out of order), so
    /// counters older than ten minutes go: memory stays bounded by the trade rate.
    fn forget_before(&mut self, horizon: i64) {
        while let Some(oldest) = self.counters.first_entry() {
            if *oldest.key() >= horizon {
                break;
            }
            oldest.remove();
        }
    }
}

/// State shared by the generators, the connections and the handle.
#[derive(Debug)]
struct Shared {
    book: Mutex<HashMap<MarketCode, MarketBook>>,
    trades: broadcast::Sender<Arc<GeneratedTrade>>,
    kick: watch::Sender<u64>,
    subscribers: watch::Sender<usize>,
    connections_accepted: AtomicU64,
    trades_generated: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            book: Mutex::new(HashMap::new()),
            trades: broadcast::channel(BROADCAST_CAPACITY).0,
            kick: watch::channel(0).0,
            subscribers: watch::channel(0).0,
            connections_accepted: AtomicU64::new(0),
            trades_generated: AtomicU64::new(0),
        }
    }

    fn book(&self) -> MutexGuard<'_, HashMap<MarketCode, MarketBook>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Generates one trade and sends it to every subscriber, under the book lock so ids and delivery
    /// order agree for everyone.
    fn generate(&self, spec: TradeSpec) -> Arc<GeneratedTrade> {
        let now = Timestamp::now();
        let mut books = self.book();
        let book = books.entry(spec.market.clone()).or_default();
        if let Some(reference) = spec.prev_closing_price {
            book.prev_closing_price = Some(reference);
        }
        let prev_closing_price = *book.prev_closing_price.get_or_insert(spec.price);
        let trade_timestamp = spec.trade_timestamp.unwrap_or(now);
        let (trade_ms, sequential_id) = book.next_sequential_id(trade_timestamp.as_millisecond());
        let trade_timestamp = Timestamp::from_millisecond(trade_ms).unwrap_or(trade_timestamp);
        let trade_volume = spec.volume.unwrap_or_else(default_volume);
        let price = spec.price;
        let opening_price = *book.opening_price.get_or_insert(prev_closing_price);
        let high_price = *book
            .high_price
            .insert(book.high_price.map_or(price, |high| high.max(price)));
        let low_price = *book
            .low_price
            .insert(book.low_price.map_or(price, |low| low.min(price)));
        book.acc_trade_volume += trade_volume.value();
        book.acc_trade_price += trade_volume.value() * price.value();
        let ask_bid = spec.ask_bid.unwrap_or_else(|| match book.last.as_deref() {
            Some(last) if price < last.trade_price => AskBid::Ask,
            _ => AskBid::Bid,
        });
        let trade = Arc::new(GeneratedTrade {
            market: spec.market,
            trade_price: price,
            trade_volume,
            ask_bid,
            prev_closing_price,
            trade_timestamp,
            timestamp: now,
            sequential_id,
            opening_price,
            high_price,
            low_price,
            acc_trade_volume: book.acc_trade_volume,
            acc_trade_price: book.acc_trade_price,
        });
        book.last = Some(trade.clone());
        self.trades_generated.fetch_add(1, Ordering::Relaxed);
        // No receiver just means nobody is subscribed yet.
        let _ = self.trades.send(trade.clone());
        trade
    }
}

fn default_volume() -> Volume {
    // 0.001 is a positive constant: a valid volume by construction.
    Volume::new(Decimal::new(1, 3)).expect("0.001 is a valid volume")
}

/// A running fake exchange. Dropping it stops it.
#[derive(Debug)]
pub struct FakeExchange {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    tasks: JoinSet<()>,
}

impl FakeExchange {
    /// Binds the listeners and starts serving. Must run inside a tokio runtime.
    pub async fn start(config: FakeExchangeConfig) -> Result<FakeExchange, Error> {
        validate(&config.feed)?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                address: config.bind,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            address: config.bind,
            source,
        })?;
        let shared = Arc::new(Shared::new());
        let shutdown = Shutdown::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, shared.clone(), shutdown.clone()));
        let http_addr = match config.http_bind {
            Some(address) => {
                let http = TcpListener::bind(address)
                    .await
                    .map_err(|source| Error::Bind { address, source })?;
                let bound = http
                    .local_addr()
                    .map_err(|source| Error::Bind { address, source })?;
                tasks.spawn(serve_market_list(http, shutdown.clone()));
                Some(bound)
            }
            None => None,
        };
        match config.feed {
            FeedMode::Scripted => {}
            FeedMode::Replay(replay) => {
                tasks.spawn(run_replay(replay, shared.clone(), shutdown.clone()));
            }
            FeedMode::RandomWalk(walk) => {
                tasks.spawn(run_random_walk(walk, shared.clone(), shutdown.clone()));
            }
        }
        tracing::info!(%local_addr, ?http_addr, "fake exchange listening");
        Ok(FakeExchange {
            shared,
            local_addr,
            http_addr,
            shutdown,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The websocket url clients connect to, Upbit's path included.
    pub fn url(&self) -> String {
        format!("ws://{}/websocket/v1", self.local_addr)
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// `http://.../v1/market/all`, when the HTTP listener was asked for.
    pub fn market_list_url(&self) -> Option<String> {
        self.http_addr
            .map(|address| format!("http://{address}/v1/market/all"))
    }

    /// Sends exactly this trade (at the market's previous close, now) to every subscriber of the market
    /// and returns its sequential id.
    pub fn push_trade(&self, market: &MarketCode, price: Price) -> u64 {
        self.push(TradeSpec::new(market.clone(), price))
            .sequential_id
    }

    /// Sends a trade described in full.
    pub fn push(&self, spec: TradeSpec) -> Arc<GeneratedTrade> {
        self.shared.generate(spec)
    }

    /// Sets the daily reference price change rates are measured from (by default the market's first
    /// traded price).
    pub fn set_prev_closing_price(&self, market: &MarketCode, price: Price) {
        self.shared
            .book()
            .entry(market.clone())
            .or_default()
            .prev_closing_price = Some(price);
    }

    /// The last trade generated for `market`.
    pub fn last_trade(&self, market: &MarketCode) -> Option<Arc<GeneratedTrade>> {
        self.shared
            .book()
            .get(market)
            .and_then(|book| book.last.clone())
    }

    /// Connections that have subscribed and are still open.
    pub fn subscriber_count(&self) -> usize {
        *self.shared.subscribers.borrow()
    }

    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections_accepted.load(Ordering::Relaxed)
    }

    pub fn trades_generated(&self) -> u64 {
        self.shared.trades_generated.load(Ordering::Relaxed)
    }

    /// Drops every open connection without a close frame, as a network failure would.
    pub fn drop_connections(&self) {
        self.shared.kick.send_modify(|generation| *generation += 1);
    }

    /// Stops serving and waits (briefly) for the tasks to end.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
        }
    }
}

impl Drop for FakeExchange {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Runs a fake exchange until `shutdown` (the `coinalarm fake-exchange` command).
pub async fn serve(config: FakeExchangeConfig, shutdown: Shutdown) -> Result<(), Error> {
    let exchange = FakeExchange::start(config).await?;
    tracing::info!(url = %exchange.url(), market_list = ?exchange.market_list_url(), "fake exchange ready");
    shutdown.wait().await;
    exchange.stop().await;
    Ok(())
}

fn validate(feed: &FeedMode) -> Result<(), Error> {
    match feed {
        FeedMode::Scripted => Ok(()),
        FeedMode::Replay(replay) => {
            let trades = replay
                .frames
                .iter()
                .filter(|frame| matches!(parse_frame(frame.body.as_bytes()), Ok(Frame::Trade(_))))
                .count();
            if trades == 0 {
                return Err(Error::Config("the replay holds no trade frames".to_owned()));
            }
            Ok(())
        }
        FeedMode::RandomWalk(walk) => {
            if walk.markets.is_empty() {
                return Err(Error::Config("the random walk needs markets".to_owned()));
            }
            if !(walk.ticks_per_second.is_finite() && walk.ticks_per_second > 0.0) {
                return Err(Error::Config(
                    "ticks_per_second must be a positive number".to_owned(),
                ));
            }
            if !(0.0..=1.0).contains(&walk.jump_probability) {
                return Err(Error::Config(
                    "jump_probability must be between 0 and 1".to_owned(),
                ));
            }
            if walk.volatility < Decimal::ZERO
                || walk.jump_size < Decimal::ZERO
                || walk.volatility + walk.jump_size >= Decimal::ONE
            {
                return Err(Error::Config(
                    "volatility and jump_size must be non-negative and sum to less than 1"
                        .to_owned(),
                ));
            }
            Ok(())
        }
    }
}

async fn wait_for_first_subscriber(shared: &Shared, shutdown: &Shutdown) -> bool {
    let mut subscribers = shared.subscribers.subscribe();
    tokio::select! {
        result = subscribers.wait_for(|count| *count > 0) => result.is_ok(),
        () = shutdown.wait() => false,
    }
}

async fn run_replay(replay: ReplayConfig, shared: Arc<Shared>, shutdown: Shutdown) {
    let trades: Vec<(Timestamp, crate::frame::Trade)> = replay
        .frames
        .iter()
        .filter_map(|recorded| match parse_frame(recorded.body.as_bytes()) {
            Ok(Frame::Trade(trade)) => Some((recorded.received_at, trade)),
            _ => None,
        })
        .collect();
    let Some(&(first_received, _)) = trades.first() else {
        return;
    };
    if !wait_for_first_subscriber(&shared, &shutdown).await {
        return;
    }
    let mut loops_done: u32 = 0;
    while replay.loops.is_none_or(|loops| loops_done < loops) {
        let started = tokio::time::Instant::now();
        // Every loop is shifted to now: fresh timestamps, and so fresh sequential ids.
        let shift = Timestamp::now().duration_since(trades[0].1.trade_timestamp);
        for (received_at, trade) in &trades {
            if shutdown.is_triggered() {
                return;
            }
            if replay.speed == Speed::Fastest {
                tokio::task::yield_now().await;
            } else {
                let due = started + replay.speed.offset(first_received, *received_at);
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = shutdown.wait() => return,
                }
            }
            let trade_timestamp = trade.trade_timestamp.checked_add(shift).ok();
            shared.generate(TradeSpec {
                market: trade.market.clone(),
                price: trade.trade_price,
                volume: trade.trade_volume,
                ask_bid: trade.ask_bid,
                prev_closing_price: Some(trade.prev_closing_price),
                trade_timestamp,
            });
        }
        loops_done += 1;
    }
    tracing::info!(loops = loops_done, "fake exchange replay finished");
}

async fn run_random_walk(walk: RandomWalkConfig, shared: Arc<Shared>, shutdown: Shutdown) {
    let mut rng = fastrand::Rng::with_seed(walk.seed);
    let mut prices: Vec<Price> = walk
        .markets
        .iter()
        .map(|market| market.start_price)
        .collect();
    {
        let mut books = shared.book();
        for market in &walk.markets {
            books
                .entry(market.market.clone())
                .or_default()
                .prev_closing_price
                .get_or_insert(market.start_price);
        }
    }
    if !wait_for_first_subscriber(&shared, &shutdown).await {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / (walk.ticks_per_second * walk.markets.len() as f64));
    let mut ticks = tokio::time::interval(period.max(Duration::from_micros(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.wait() => return,
        }
        let index = rng.usize(..walk.markets.len());
        let market = &walk.markets[index].market;
        let next = next_price(&mut rng, &walk, market, prices[index]);
        prices[index] = next;
        let volume = Volume::new(Decimal::new(rng.i64(1..=100_000_000), 8)).ok();
        shared.generate(TradeSpec {
            volume,
            ..TradeSpec::new(market.clone(), next)
        });
    }
}

/// One step of the walk, in decimal: a uniform move within ±volatility, sometimes a jump, rounded to the
/// market's price unit and kept above zero.
fn next_price(
    rng: &mut fastrand::Rng,
    walk: &RandomWalkConfig,
    market: &MarketCode,
    price: Price,
) -> Price {
    let unit_interval = Decimal::from(rng.i64(-1_000_000..=1_000_000)) / Decimal::from(1_000_000);
    let mut relative = walk.volatility * unit_interval;
    if rng.f64() < walk.jump_probability {
        relative += if rng.bool() {
            walk.jump_size
        } else {
            -walk.jump_size
        };
    }
    let moved = price.value() * (Decimal::ONE + relative);
    let unit = price_unit(market, moved);
    let rounded = ((moved / unit).round() * unit).max(unit).normalize();
    Price::new(rounded).unwrap_or(price)
}

/// The price grid of a market, approximately Upbit's KRW price units; other quotes use 8 decimals.
pub fn price_unit(market: &MarketCode, price: Decimal) -> Decimal {
    if market.quote() != "KRW" {
        return Decimal::new(1, 8);
    }
    // (lowest price of the band, unit), both as (mantissa, scale).
    const BANDS: [((i64, u32), (i64, u32)); 13] = [
        ((2_000_000, 0), (1000, 0)),
        ((1_000_000, 0), (500, 0)),
        ((500_000, 0), (100, 0)),
        ((100_000, 0), (50, 0)),
        ((10_000, 0), (10, 0)),
        ((1_000, 0), (1, 0)),
        ((100, 0), (1, 1)),
        ((10, 0), (1, 2)),
        ((1, 0), (1, 3)),
        ((1, 1), (1, 4)),
        ((1, 2), (1, 5)),
        ((1, 3), (1, 6)),
        ((1, 4), (1, 7)),
    ];
    BANDS
        .iter()
        .find(|((low, low_scale), _)| price >= Decimal::new(*low, *low_scale))
        .map_or(Decimal::new(1, 8), |(_, (unit, unit_scale))| {
            Decimal::new(*unit, *unit_scale)
        })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait() => break,
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                shared.connections_accepted.fetch_add(1, Ordering::Relaxed);
                connections.spawn(serve_connection(
                    stream,
                    peer,
                    shared.clone(),
                    shutdown.clone(),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "fake exchange accept failed");
            }
        }
    }
    let drained = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

/// Counts a subscribed connection for as long as it lives.
struct SubscriberGuard(Arc<Shared>);

impl SubscriberGuard {
    fn new(shared: Arc<Shared>) -> SubscriberGuard {
        shared.subscribers.send_modify(|count| *count += 1);
        SubscriberGuard(shared)
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0
            .subscribers
            .send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// What one connection asked for.
struct Wanted {
    format: WireFormat,
    trade: HashSet<MarketCode>,
    ticker: HashSet<MarketCode>,
}

impl Wanted {
    fn from(subscription: &Subscription) -> Wanted {
        let codes = |data_type| -> HashSet<MarketCode> {
            subscription
                .request_for(data_type)
                .map(|request| request.codes.iter().cloned().collect())
                .unwrap_or_default()
        };
        Wanted {
            format: subscription.format,
            trade: codes(DataType::Trade),
            ticker: codes(DataType::Ticker),
        }
    }

    fn frames(&self, trade: &GeneratedTrade, stream_type: StreamType) -> Vec<Message> {
        let mut frames = Vec::with_capacity(2);
        // Upbit sends the ticker update, then the trade.
        if self.ticker.contains(&trade.market) {
            frames.push(Message::binary(ticker_frame(
                trade,
                self.format,
                stream_type,
            )));
        }
        if self.trade.contains(&trade.market) {
            frames.push(Message::binary(trade_frame(
                trade,
                self.format,
                stream_type,
            )));
        }
        frames
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    let config = WebSocketConfig::default().max_message_size(Some(1 << 20));
    let _ = stream.set_nodelay(true);
    let mut socket = match tokio_tungstenite::accept_async_with_config(stream, Some(config)).await {
        Ok(socket) => socket,
        Err(error) => {
            tracing::debug!(%peer, %error, "fake exchange handshake failed");
            return;
        }
    };
    let mut kick = shared.kick.subscribe();
    let Some(subscription) = read_subscription(&mut socket, &shutdown).await else {
        return;
    };
    let mut wanted = Wanted::from(&subscription);
    let (mut trades, snapshot) = subscribe(&shared, &subscription);
    let _guard = SubscriberGuard::new(shared.clone());
    tracing::debug!(%peer, format = %wanted.format, "fake exchange subscriber");
    for trade in snapshot {
        for frame in wanted.frames(&trade, StreamType::Snapshot) {
            if socket.send(frame).await.is_err() {
                return;
            }
        }
    }
    loop {
        tokio::select! {
            () = shutdown.wait() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                return;
            }
            _ = kick.changed() => {
                // Dropped without a close frame: to the client this is a dead connection.
                return;
            }
            received = trades.recv() => match received {
                Ok(trade) => {
                    for frame in wanted.frames(&trade, StreamType::Realtime) {
                        if socket.send(frame).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(%peer, missed, "fake exchange subscriber too slow; trades skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) if text.as_str().trim() == "PING" => {
                    if socket.send(Message::text(r#"{"status":"UP"}"#)).await.is_err() {
                        return;
                    }
                }
                // A new request on the same connection replaces the subscription, as on Upbit.
                Some(Ok(Message::Text(text))) => match Subscription::parse(text.as_str()) {
                    Ok(subscription) => {
                        wanted = Wanted::from(&subscription);
                        let (receiver, _) = subscribe(&shared, &subscription);
                        trades = receiver;
                    }
                    Err(error) => {
                        let _ = socket.send(error_frame("WRONG_FORMAT", &error.to_string())).await;
                    }
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn read_subscription(
    socket: &mut WebSocketStream<TcpStream>,
    shutdown: &Shutdown,
) -> Option<Subscription> {
    let first = tokio::select! {
        first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, socket.next()) => first,
        () = shutdown.wait() => return None,
    };
    let text = match first {
        Ok(Some(Ok(Message::Text(text)))) => text.as_str().to_owned(),
        Ok(Some(Ok(Message::Binary(bytes)))) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => return None,
    };
    match Subscription::parse(&text) {
        Ok(subscription) => Some(subscription),
        Err(error) => {
            let _ = socket
                .send(error_frame("WRONG_FORMAT", &error.to_string()))
                .await;
            let _ = socket.close(None).await;
            None
        }
    }
}

/// Joins the broadcast and reads the snapshot in one critical section, so no trade falls between them.
fn subscribe(
    shared: &Shared,
    subscription: &Subscription,
) -> (
    broadcast::Receiver<Arc<GeneratedTrade>>,
    Vec<Arc<GeneratedTrade>>,
) {
    let books = shared.book();
    let receiver = shared.trades.subscribe();
    let mut snapshot_markets: Vec<&MarketCode> = subscription
        .types
        .iter()
        .filter(|request| !request.only_realtime)
        .flat_map(|request| request.codes.iter())
        .collect();
    snapshot_markets.sort();
    snapshot_markets.dedup();
    let snapshot = snapshot_markets
        .into_iter()
        .filter_map(|market| books.get(market).and_then(|book| book.last.clone()))
        .collect();
    (receiver, snapshot)
}

fn error_frame(name: &str, message: &str) -> Message {
    Message::text(serde_json::json!({ "error": { "name": name, "message": message } }).to_string())
}

/// A frame field's value; numbers are written from their decimal text, never through `f64`.
enum Field {
    Text(String),
    Static(&'static str),
    Number(Decimal),
    Integer(i64),
    Unsigned(u64),
    Bool(bool),
}

impl Serialize for Field {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Text(text) => serializer.serialize_str(text),
            Field::Static(text) => serializer.serialize_str(text),
            Field::Number(value) => RawValue::from_string(value.normalize().to_string())
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
            Field::Integer(value) => serializer.serialize_i64(*value),
            Field::Unsigned(value) => serializer.serialize_u64(*value),
            Field::Bool(value) => serializer.serialize_bool(*value),
        }
    }
}

/// `(DEFAULT name, SIMPLE name, value)` in Upbit's order, written in one format.
struct Fields(WireFormat, Vec<(&'static str, &'static str, Field)>);

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.1.len()))?;
        for (default_name, simple_name, value) in &self.1 {
            let name = match self.0 {
                WireFormat::Default => default_name,
                WireFormat::Simple => simple_name,
            };
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

fn change(trade: &GeneratedTrade) -> (&'static str, Decimal) {
    let difference = trade.trade_price.value() - trade.prev_closing_price.value();
    let word = match difference.cmp(&Decimal::ZERO) {
        std::cmp::Ordering::Greater => "RISE",
        std::cmp::Ordering::Less => "FALL",
        std::cmp::Ordering::Equal => "EVEN",
    };
    (word, difference)
}

fn stream_type_text(stream_type: StreamType) -> &'static str {
    match stream_type {
        StreamType::Snapshot => "SNAPSHOT",
        StreamType::Realtime => "REALTIME",
    }
}

/// A `trade` frame as Upbit writes it.
pub fn trade_frame(trade: &GeneratedTrade, format: WireFormat, stream_type: StreamType) -> Vec<u8> {
    let (word, difference) = change(trade);
    let fields = Fields(
        format,
        vec![
            ("type", "ty", Field::Static("trade")),
            ("code", "cd", Field::Text(trade.market.to_string())),
            (
                "timestamp",
                "tms",
                Field::Integer(trade.timestamp.as_millisecond()),
            ),
            (
                "trade_date",
                "td",
                Field::Text(trade.trade_timestamp.strftime("%Y-%m-%d").to_string()),
            ),
            (
                "trade_time",
                "ttm",
                Field::Text(trade.trade_timestamp.strftime("%H:%M:%S").to_string()),
            ),
            (
                "trade_timestamp",
                "ttms",
                Field::Integer(trade.trade_timestamp.as_millisecond()),
            ),
            (
                "trade_price",
                "tp",
                Field::Number(trade.trade_price.value()),
            ),
            (
                "trade_volume",
                "tv",
                Field::Number(trade.trade_volume.value()),
            ),
            ("ask_bid", "ab", Field::Static(trade.ask_bid.as_str())),
            (
                "prev_closing_price",
                "pcp",
                Field::Number(trade.prev_closing_price.value()),
            ),
            ("change", "c", Field::Static(word)),
            ("change_price", "cp", Field::Number(difference.abs())),
            ("sequential_id", "sid", Field::Unsigned(trade.sequential_id)),
            (
                "stream_type",
                "st",
                Field::Static(stream_type_text(stream_type)),
            ),
        ],
    );
    serde_json::to_vec(&fields).unwrap_or_default()
}

/// A `ticker` frame as Upbit writes it after a trade.
pub fn ticker_frame(
    trade: &GeneratedTrade,
    format: WireFormat,
    stream_type: StreamType,
) -> Vec<u8> {
    let (word, difference) = change(trade);
    let reference = trade.prev_closing_price.value();
    // Upbit reports rates rounded; the ingester derives its own from the trade's prices.
    let rate = (difference / reference).round_dp(10);
    let fields = Fields(
        format,
        vec![
            ("type", "ty", Field::Static("ticker")),
            ("code", "cd", Field::Text(trade.market.to_string())),
            (
                "opening_price",
                "op",
                Field::Number(trade.opening_price.value()),
            ),
            ("high_price", "hp", Field::Number(trade.high_price.value())),
            ("low_price", "lp", Field::Number(trade.low_price.value())),
            (
                "trade_price",
                "tp",
                Field::Number(trade.trade_price.value()),
            ),
            ("prev_closing_price", "pcp", Field::Number(reference)),
            ("change", "c", Field::Static(word)),
            ("change_price", "cp", Field::Number(difference.abs())),
            ("signed_change_price", "scp", Field::Number(difference)),
            ("change_rate", "cr", Field::Number(rate.abs())),
            ("signed_change_rate", "scr", Field::Number(rate)),
            (
                "trade_volume",
                "tv",
                Field::Number(trade.trade_volume.value()),
            ),
            (
                "acc_trade_volume",
                "atv",
                Field::Number(trade.acc_trade_volume),
            ),
            (
                "acc_trade_volume_24h",
                "atv24h",
                Field::Number(trade.acc_trade_volume),
            ),
            (
                "acc_trade_price",
                "atp",
                Field::Number(trade.acc_trade_price.round_dp(8)),
            ),
            (
                "acc_trade_price_24h",
                "atp24h",
                Field::Number(trade.acc_trade_price.round_dp(8)),
            ),
            (
                "trade_date",
                "tdt",
                Field::Text(trade.trade_timestamp.strftime("%Y%m%d").to_string()),
            ),
            (
                "trade_time",
                "ttm",
                Field::Text(trade.trade_timestamp.strftime("%H%M%S").to_string()),
            ),
            (
                "trade_timestamp",
                "ttms",
                Field::Integer(trade.trade_timestamp.as_millisecond()),
            ),
            ("ask_bid", "ab", Field::Static(trade.ask_bid.as_str())),
            ("market_state", "ms", Field::Static("ACTIVE")),
            ("is_trading_suspended", "its", Field::Bool(false)),
            ("market_warning", "mw", Field::Static("NONE")),
            (
                "timestamp",
                "tms",
                Field::Integer(trade.timestamp.as_millisecond()),
            ),
            (
                "stream_type",
                "st",
                Field::Static(stream_type_text(stream_type)),
            ),
        ],
    );
    serde_json::to_vec(&fields).unwrap_or_default()
}

async fn serve_market_list(listener: TcpListener, shutdown: Shutdown) {
    use axum::routing::get;
    let router = axum::Router::new().route(
        "/v1/market/all",
        get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                Catalogue::upbit().to_market_all_json(),
            )
        }),
    );
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await;
    if let Err(error) = served {
        tracing::warn!(%error, "fake exchange market list server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parse_frame;
    use pretty_assertions::assert_eq;

    fn market(code: &str) -> MarketCode {
        MarketCode::parse(code).unwrap()
    }

    fn price(text: &str) -> Price {
        Price::parse(text).unwrap()
    }

    fn generated(market_code: &str, trade: &str, reference: &str) -> GeneratedTrade {
        let shared = Shared::new();
        let spec = TradeSpec {
            prev_closing_price: Some(price(reference)),
            volume: Some(Volume::parse("0.00012345").unwrap()),
            trade_timestamp: Some(Timestamp::from_millisecond(1_793_581_199_871).unwrap()),
            ..TradeSpec::new(market(market_code), price(trade))
        };
        (*shared.generate(spec)).clone()
    }

    #[test]
    fn generated_frames_read_back_in_both_formats() {
        let trade = generated("KRW-BTC", "95000000", "94000000");
        assert_eq!(trade.sequential_id, 1_793_581_199_871_000);
        for format in [WireFormat::Default, WireFormat::Simple] {
            let bytes = trade_frame(&trade, format, StreamType::Realtime);
            let Frame::Trade(parsed) = parse_frame(&bytes).unwrap() else {
                panic!("not a trade: {}", String::from_utf8_lossy(&bytes));
            };
            assert_eq!(parsed.market, trade.market);
            assert_eq!(parsed.trade_price, trade.trade_price);
            assert_eq!(parsed.prev_closing_price, trade.prev_closing_price);
            assert_eq!(parsed.trade_volume, Some(trade.trade_volume));
            assert_eq!(parsed.sequential_id, trade.sequential_id);
            assert_eq!(parsed.trade_timestamp, trade.trade_timestamp);
            assert_eq!(parsed.ask_bid, Some(AskBid::Bid));

            let bytes = ticker_frame(&trade, format, StreamType::Snapshot);
            let Frame::Ticker(ticker) = parse_frame(&bytes).unwrap() else {
                panic!("not a ticker: {}", String::from_utf8_lossy(&bytes));
            };
            assert_eq!(ticker.trade_price, trade.trade_price);
            assert_eq!(ticker.signed_change_price.to_string(), "1000000");
            assert_eq!(ticker.signed_change_rate.to_string(), "0.0106382979");
            assert_eq!(ticker.stream_type, StreamType::Snapshot);
            assert_eq!(
                ticker.acc_trade_volume_24h.unwrap().to_string(),
                "0.00012345"
            );
        }
        let simple = String::from_utf8(trade_frame(
            &trade,
            WireFormat::Simple,
            StreamType::Realtime,
        ))
        .unwrap();
        assert!(
            simple.starts_with(r#"{"ty":"trade","cd":"KRW-BTC","tms":"#),
            "{simple}"
        );
        assert!(simple.contains(r#""td":"2026-11-02","ttm":"00:59:59","ttms":1793581199871,"tp":95000000,"tv":0.00012345"#), "{simple}");
    }

    #[test]
    fn tiny_prices_are_written_exactly() {
        let trade = generated("BTC-ITAM", "0.00000113", "0.00000119");
        let text = String::from_utf8(trade_frame(
            &trade,
            WireFormat::Default,
            StreamType::Realtime,
        ))
        .unwrap();
        assert!(text.contains(r#""trade_price":0.00000113"#), "{text}");
        assert!(
            text.contains(r#""change":"FALL","change_price":0.00000006"#),
            "{text}"
        );
    }

    #[test]
    fn sequential_ids_are_unique_per_market_and_millisecond() {
        let shared = Shared::new();
        let at = Timestamp::from_millisecond(1_000).unwrap();
        let spec = |code: &str| TradeSpec {
            trade_timestamp: Some(at),
            ..TradeSpec::new(market(code), price("100"))
        };
        let first = shared.generate(spec("KRW-BTC")).sequential_id;
        let second = shared.generate(spec("KRW-BTC")).sequential_id;
        let other_market = shared.generate(spec("KRW-ETH")).sequential_id;
        assert_eq!(
            (first, second, other_market),
            (1_000_000, 1_000_001, 1_000_000)
        );
        // A full millisecond spills into the next one rather than collide with it.
        let mut ids = HashSet::new();
        for _ in 0..2500 {
            assert!(ids.insert(shared.generate(spec("KRW-XRP")).sequential_id));
        }
    }

    #[test]
    fn the_walk_is_seeded_rounded_and_positive() {
        let walk = RandomWalkConfig {
            jump_probability: 0.2,
            jump_size: Decimal::new(5, 2),
            ..RandomWalkConfig::default()
        };
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            let btc = market("KRW-BTC");
            let mut current = price("95000000");
            let mut path = Vec::new();
            for _ in 0..500 {
                current = next_price(&mut rng, &walk, &btc, current);
                path.push(current);
            }
            path
        };
        let path = run(7);
        assert_eq!(path, run(7));
        assert_ne!(path, run(8));
        for step in &path {
            let unit = price_unit(&market("KRW-BTC"), step.value());
            assert_eq!(step.value() % unit, Decimal::ZERO, "{step} off the grid");
        }
        // Jumps happen: some step moves more than the ordinary volatility allows.
        let jumped = path.windows(2).any(|pair| {
            let change = (pair[1].value() - pair[0].value()).abs() / pair[0].value();
            change > Decimal::new(1, 2)
        });
        assert!(jumped);
    }

    #[test]
    fn price_units() {
        let krw = market("KRW-BTC");
        assert_eq!(
            price_unit(&krw, Decimal::from(95_000_000)),
            Decimal::from(1000)
        );
        assert_eq!(price_unit(&krw, Decimal::from(4_500)), Decimal::ONE);
        assert_eq!(price_unit(&krw, Decimal::from(800)), Decimal::new(1, 1));
        assert_eq!(price_unit(&krw, Decimal::new(5, 1)), Decimal::new(1, 4));
        assert_eq!(
            price_unit(&market("BTC-ETH"), Decimal::ONE),
            Decimal::new(1, 8)
        );
    }

    #[test]
    fn walk_markets_from_the_command_line() {
        let parsed: WalkMarket = "KRW-BTC=95000000".parse().unwrap();
        assert_eq!(
            parsed,
            WalkMarket::new(market("KRW-BTC"), price("95000000"))
        );
        assert!("KRW-BTC".parse::<WalkMarket>().is_err());
        assert!("KRW-BTC=0".parse::<WalkMarket>().is_err());
        assert!("btc=1".parse::<WalkMarket>().is_err());
    }

    #[test]
    fn bad_feeds_are_refused() {
        assert!(
            validate(&FeedMode::RandomWalk(RandomWalkConfig {
                markets: Vec::new(),
                ..RandomWalkConfig::default()
            }))
            .is_err()
        );
        assert!(
            validate(&FeedMode::RandomWalk(RandomWalkConfig {
                ticks_per_second: 0.0,
                ..RandomWalkConfig::default()
            }))
            .is_err()
        );
        assert!(
            validate(&FeedMode::Replay(ReplayConfig {
                frames: Vec::new(),
                ..ReplayConfig::default()
            }))
            .is_err()
        );
        assert!(validate(&FeedMode::Replay(ReplayConfig::default())).is_ok());
    }
}
