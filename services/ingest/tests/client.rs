//! The production websocket client against the fake exchange over real sockets: subscription, frames in
//! both formats, reconnect and resubscribe after a dropped connection, silence detection, ping/pong, and
//! the fake's replay, random walk and market list.

use std::collections::HashSet;
use std::time::Duration;

use coinalarm_ingest::client::{self, ClientConfig, FeedHealth};
use coinalarm_ingest::fake_exchange::{
    FakeExchange, FakeExchangeConfig, FeedMode, RandomWalkConfig, ReplayConfig, TradeSpec,
    WalkMarket,
};
use coinalarm_ingest::frame::{Frame, Trade, WireFormat};
use coinalarm_ingest::recorded::Speed;
use coinalarm_ingest::ticks::{Outcome, TickProcessor};
use coinalarm_ingest::{IngestConfig, fetch_catalogue, resolve_markets};
use coinalarm_runtime::Shutdown;
use coinalarm_test_support::wait;
use pretty_assertions::assert_eq;
use proto_events::domain::{Exchange, MarketCode, Price, Volume};
use proto_events::events::ticks::StreamType;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WITHIN: Duration = Duration::from_secs(10);

fn market(code: &str) -> MarketCode {
    MarketCode::parse(code).unwrap()
}

fn price(text: &str) -> Price {
    Price::parse(text).unwrap()
}

struct RunningClient {
    frames: mpsc::Receiver<Frame>,
    health: FeedHealth,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), client::Error>>,
}

impl RunningClient {
    fn start(
        url: String,
        markets: &[&str],
        adjust: impl FnOnce(&mut ClientConfig),
    ) -> RunningClient {
        let mut config = ClientConfig::new(url, markets.iter().map(|code| market(code)).collect());
        config.reconnect_min = Duration::from_millis(50);
        config.reconnect_max = Duration::from_millis(200);
        adjust(&mut config);
        let (sender, frames) = mpsc::channel(8192);
        let health = FeedHealth::new();
        let shutdown = Shutdown::new();
        let task = tokio::spawn({
            let health = health.clone();
            let shutdown = shutdown.clone();
            async move { client::run(&config, sender, health, shutdown).await }
        });
        RunningClient {
            frames,
            health,
            shutdown,
            task,
        }
    }

    async fn next_frame(&mut self) -> Frame {
        tokio::time::timeout(WITHIN, self.frames.recv())
            .await
            .expect("a frame within the deadline")
            .expect("the client is running")
    }

    /// The next trade frame, skipping ticker frames.
    async fn next_trade(&mut self) -> Trade {
        loop {
            if let Frame::Trade(trade) = self.next_frame().await {
                return trade;
            }
        }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        let result = tokio::time::timeout(WITHIN, self.task)
            .await
            .expect("the client stops promptly on shutdown")
            .expect("the client task does not panic");
        assert!(result.is_ok(), "{result:?}");
    }
}

async fn wait_for_subscribers(exchange: &FakeExchange, count: usize) {
    wait::until_true("fake exchange subscribers", WITHIN, || async {
        exchange.subscriber_count() == count
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_trades_arrive_in_both_formats() {
    for format in [WireFormat::Simple, WireFormat::Default] {
        let exchange = FakeExchange::start(FakeExchangeConfig::scripted())
            .await
            .unwrap();
        let btc = market("KRW-BTC");
        exchange.set_prev_closing_price(&btc, price("94000000"));
        let mut client = RunningClient::start(exchange.url(), &["KRW-BTC", "BTC-ITAM"], |config| {
            config.format = format;
        });
        wait_for_subscribers(&exchange, 1).await;

        let sequential_id = exchange.push_trade(&btc, price("95000000"));
        // Upbit's order: the ticker update, then the trade.
        let Frame::Ticker(ticker) = client.next_frame().await else {
            panic!("expected a ticker frame first");
        };
        assert_eq!(ticker.market, btc);
        assert_eq!(ticker.trade_price, price("95000000"));
        assert_eq!(ticker.signed_change_price.to_string(), "1000000");
        let trade = client.next_trade().await;
        assert_eq!(trade.market, btc);
        assert_eq!(trade.trade_price, price("95000000"));
        assert_eq!(trade.prev_closing_price, price("94000000"));
        assert_eq!(trade.sequential_id, sequential_id);
        assert_eq!(trade.stream_type, StreamType::Realtime);

        // A coin priced in satoshis survives the wire exactly.
        let itam = market("BTC-ITAM");
        exchange.push(TradeSpec {
            prev_closing_price: Some(price("0.00000119")),
            volume: Some(Volume::parse("3416.89061628").unwrap()),
            ..TradeSpec::new(itam.clone(), price("0.00001234"))
        });
        let trade = client.next_trade().await;
        assert_eq!(trade.market, itam);
        assert_eq!(trade.trade_price.to_string(), "0.00001234");
        assert_eq!(trade.trade_volume.unwrap().to_string(), "3416.89061628");

        // Markets nobody subscribed to are not sent.
        exchange.push_trade(&market("KRW-ETH"), price("4500000"));
        exchange.push_trade(&btc, price("95001000"));
        assert_eq!(client.next_trade().await.market, btc);
        client.stop().await;
        exchange.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resubscribes_after_the_connection_drops() {
    let exchange = FakeExchange::start(FakeExchangeConfig::scripted())
        .await
        .unwrap();
    let btc = market("KRW-BTC");
    let mut client = RunningClient::start(exchange.url(), &["KRW-BTC"], |_| {});
    wait_for_subscribers(&exchange, 1).await;
    let mut processor = TickProcessor::new(Exchange::upbit());
    let mut ticks = Vec::new();

    let first = exchange.push_trade(&btc, price("95000000"));
    let trade = client.next_trade().await;
    assert_eq!(trade.sequential_id, first);
    if let Outcome::Tick(tick) = processor.accept(Frame::Trade(trade)) {
        ticks.push(tick.sequential_id);
    }

    exchange.drop_connections();
    wait::until_true("a second connection, subscribed", WITHIN, || async {
        client.health.connections() >= 2
            && client.health.subscriptions() >= 2
            && exchange.subscriber_count() == 1
    })
    .await
    .unwrap();
    assert!(client.health.disconnects() >= 1);

    // The resubscription's snapshot repeats the last trade: same id, dropped as a duplicate.
    let snapshot = client.next_trade().await;
    assert_eq!(snapshot.stream_type, StreamType::Snapshot);
    assert_eq!(snapshot.sequential_id, first);
    assert_eq!(processor.accept(Frame::Trade(snapshot)), Outcome::Duplicate);

    let second = exchange.push_trade(&btc, price("95100000"));
    let trade = client.next_trade().await;
    assert_eq!(trade.sequential_id, second);
    if let Outcome::Tick(tick) = processor.accept(Frame::Trade(trade)) {
        ticks.push(tick.sequential_id);
    }
    assert_eq!(ticks, vec![first, second]);
    client.stop().await;
    exchange.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_feed_raises_the_alarm_and_reconnects() {
    let exchange = FakeExchange::start(FakeExchangeConfig::scripted())
        .await
        .unwrap();
    let btc = market("KRW-BTC");
    let mut client = RunningClient::start(exchange.url(), &["KRW-BTC"], |config| {
        config.silence = Duration::from_millis(300);
    });
    wait_for_subscribers(&exchange, 1).await;
    exchange.push_trade(&btc, price("95000000"));
    client.next_trade().await;
    assert!(!client.health.is_silent());

    // Nothing more is pushed: the client must notice and reconnect on its own.
    wait::until_true("silence detected and a reconnect", WITHIN, || async {
        client.health.silences() >= 1 && client.health.connections() >= 2
    })
    .await
    .unwrap();
    // The new connection's snapshot is data again: the alarm clears.
    let snapshot = client.next_trade().await;
    assert_eq!(snapshot.stream_type, StreamType::Snapshot);
    wait::until_true("the alarm to clear", WITHIN, || async {
        !client.health.is_silent()
    })
    .await
    .unwrap();
    client.stop().await;
    exchange.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_and_keep_the_connection() {
    let exchange = FakeExchange::start(FakeExchangeConfig::scripted())
        .await
        .unwrap();
    let client = RunningClient::start(exchange.url(), &["KRW-BTC"], |config| {
        config.ping_interval = Duration::from_millis(100);
        config.silence = Duration::from_secs(60);
    });
    wait::until_true("three pongs", WITHIN, || async {
        client.health.pongs() >= 3
    })
    .await
    .unwrap();
    assert_eq!(client.health.connections(), 1);
    assert_eq!(client.health.disconnects(), 0);
    client.stop().await;
    exchange.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_are_retried_until_the_exchange_is_up() {
    // A port nobody listens on: bind, learn the port, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let client = RunningClient::start(format!("ws://{address}/websocket/v1"), &["KRW-BTC"], |_| {});
    wait::until_true("a few failed attempts", WITHIN, || async {
        client.health.disconnects() >= 3
    })
    .await
    .unwrap();
    assert_eq!(client.health.connections(), 0);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_random_walk_streams_unique_trades() {
    let walk = RandomWalkConfig {
        markets: vec![
            WalkMarket::new(market("KRW-BTC"), price("95000000")),
            WalkMarket::new(market("KRW-XRP"), price("800")),
        ],
        ticks_per_second: 100.0,
        ..RandomWalkConfig::default()
    };
    let exchange = FakeExchange::start(FakeExchangeConfig {
        feed: FeedMode::RandomWalk(walk),
        ..FakeExchangeConfig::default()
    })
    .await
    .unwrap();
    let mut client = RunningClient::start(exchange.url(), &["KRW-BTC", "KRW-XRP"], |_| {});
    let mut seen = HashSet::new();
    let mut markets = HashSet::new();
    while seen.len() < 50 {
        let trade = client.next_trade().await;
        markets.insert(trade.market.clone());
        assert!(seen.insert((trade.market.clone(), trade.sequential_id)));
    }
    assert_eq!(markets.len(), 2);
    client.stop().await;
    exchange.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_loops_with_fresh_ids_and_timestamps() {
    let exchange = FakeExchange::start(FakeExchangeConfig {
        feed: FeedMode::Replay(ReplayConfig {
            speed: Speed::Fastest,
            loops: Some(2),
            ..ReplayConfig::default()
        }),
        ..FakeExchangeConfig::default()
    })
    .await
    .unwrap();
    let recorded_markets = ["KRW-LAMB", "KRW-WAVES", "BTC-ITAM", "BTC-PAX", "BTC-XTZ"];
    let mut client = RunningClient::start(exchange.url(), &recorded_markets, |_| {});
    let mut ids = HashSet::new();
    let mut trades = Vec::new();
    while trades.len() < 2 * 304 {
        let trade = client.next_trade().await;
        assert!(
            ids.insert((trade.market.clone(), trade.sequential_id)),
            "{} {} repeated",
            trade.market,
            trade.sequential_id
        );
        trades.push(trade);
    }
    // Shifted to now, not 2021.
    let year_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 365);
    assert!(trades.iter().all(|trade| trade.trade_timestamp > year_ago));
    // The recorded prices, in the recorded order.
    assert_eq!(trades[0].market.as_str(), "KRW-LAMB");
    assert_eq!(trades[0].trade_price, price("127"));
    assert_eq!(trades[304].trade_price, price("127"));
    assert_eq!(exchange.trades_generated(), 608);
    client.stop().await;
    exchange.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_market_list_is_served_over_http() {
    let exchange = FakeExchange::start(FakeExchangeConfig {
        http_bind: Some("127.0.0.1:0".parse().unwrap()),
        ..FakeExchangeConfig::scripted()
    })
    .await
    .unwrap();
    let url = exchange.market_list_url().unwrap();
    let catalogue = fetch_catalogue(&url).await.unwrap();
    assert_eq!(catalogue.len(), 294);
    let settings = IngestConfig {
        market_list_url: Some(url),
        ..IngestConfig::default()
    };
    let markets = resolve_markets(&settings).await;
    assert_eq!(markets.len(), 117);
    assert_eq!(markets[0].as_str(), "KRW-BTC");
    // An unreachable list falls back to the built-in catalogue.
    exchange.stop().await;
    let unreachable = IngestConfig {
        market_list_url: Some("http://127.0.0.1:1/v1/market/all".to_owned()),
        ..IngestConfig::default()
    };
    assert_eq!(resolve_markets(&unreachable).await.len(), 117);
}
