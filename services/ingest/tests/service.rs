//! The ingest service against both real NATS sites with the topology applied: two ingesters (on-prem and
//! cloud) reading one fake exchange store each trade once in both sites' TICKS aggregates, and the
//! recorded source publishes every recorded trade.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use coinalarm_ingest::fake_exchange::{FakeExchange, FakeExchangeConfig};
use coinalarm_ingest::publisher::TickPublisher;
use coinalarm_ingest::ticks::TickProcessor;
use coinalarm_ingest::{FeedHealth, IngestConfig, PublishReport, ingest};
use coinalarm_runtime::Config;
use coinalarm_runtime::Shutdown;
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::config::Credentials;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::trace::TraceContext;
use coinalarm_test_support::nats::{TwoSites, read_stream};
use coinalarm_test_support::wait;
use pretty_assertions::assert_eq;
use proto_events::domain::{Exchange, MarketCode, Price};
use proto_events::{Event, Site, ids};

const CONVERGE: Duration = Duration::from_secs(60);

async fn sites_with_topology() -> TwoSites {
    let sites = TwoSites::start().await;
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        topology::apply(&topology, &sites.jetstream(site).await, false)
            .await
            .expect("apply the topology");
    }
    sites
}

/// A bus as the `ingest` NATS user, so the test also proves its permissions suffice.
async fn ingest_bus(sites: &TwoSites, site: Site) -> Bus {
    Bus::from_client(
        sites.client(site, "ingest").await,
        site,
        "ingest",
        Duration::from_secs(5),
    )
}

fn market(code: &str) -> MarketCode {
    MarketCode::parse(code).unwrap()
}

async fn message_count(jetstream: &jetstream::Context, stream: &str) -> Result<u64, String> {
    let mut handle = jetstream
        .get_stream(stream)
        .await
        .map_err(|error| error.to_string())?;
    let info = handle.info().await.map_err(|error| error.to_string())?;
    Ok(info.state.messages)
}

/// Waits until `stream` holds `expected` messages and, for an aggregate, every source has caught up, so
/// that duplicates would have had every chance to arrive.
async fn wait_for_stream(sites: &TwoSites, site: Site, stream: &str, expected: u64) {
    let jetstream = sites.jetstream(site).await;
    let result = wait::until(
        &format!("{site} {stream} to hold {expected}"),
        CONVERGE,
        || {
            let jetstream = jetstream.clone();
            async move {
                let mut handle = jetstream
                    .get_stream(stream)
                    .await
                    .map_err(|error| error.to_string())?;
                let info = handle.info().await.map_err(|error| error.to_string())?;
                let lagging: Vec<String> = info
                    .sources
                    .iter()
                    .filter(|source| source.lag > 0)
                    .map(|source| format!("{} lag {}", source.name, source.lag))
                    .collect();
                if info.state.messages == expected && lagging.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} messages; {lagging:?}", info.state.messages))
                }
            }
        },
    )
    .await;
    if let Err(timeout) = result {
        panic!(
            "{timeout}\n--- onprem ---\n{}\n--- cloud ---\n{}",
            sites.onprem.log_tail(20),
            sites.cloud.log_tail(20)
        );
    }
}

async fn stored_ids(sites: &TwoSites, site: Site, stream: &str) -> Vec<String> {
    read_stream(&sites.jetstream(site).await, stream)
        .await
        .into_iter()
        .map(|message| message.message_id.expect("every tick has a message id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingesters_store_each_trade_once_at_both_sites() {
    let sites = sites_with_topology().await;
    let exchange = FakeExchange::start(FakeExchangeConfig::scripted())
        .await
        .unwrap();
    let btc = market("KRW-BTC");
    let eth = market("KRW-ETH");
    exchange.set_prev_closing_price(&btc, Price::parse("94000000").unwrap());
    exchange.set_prev_closing_price(&eth, Price::parse("4500000").unwrap());
    let settings = IngestConfig {
        url: exchange.url(),
        markets: vec![btc.clone(), eth.clone()],
        silence_seconds: Duration::from_secs(60),
        ..IngestConfig::default()
    };
    let shutdown = Shutdown::new();
    let mut ingesters = Vec::new();
    for site in Site::ALL {
        let bus = ingest_bus(&sites, site).await;
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        ingesters.push(tokio::spawn(async move {
            ingest(bus, settings, FeedHealth::new(), shutdown).await
        }));
    }
    wait::until_true("both ingesters subscribed", CONVERGE, || async {
        exchange.subscriber_count() == 2
    })
    .await
    .unwrap();

    let mut expected = BTreeSet::new();
    for step in 0..20_i64 {
        let (code, base) = if step % 2 == 0 {
            (&btc, 95_000_000)
        } else {
            (&eth, 4_600_000)
        };
        let price = Price::new((base + step * 1000).into()).unwrap();
        let sequential_id = exchange.push_trade(code, price);
        expected.insert(
            ids::tick(&Exchange::upbit(), code, sequential_id)
                .as_str()
                .to_owned(),
        );
    }
    assert_eq!(expected.len(), 20);

    for site in Site::ALL {
        wait_for_stream(
            &sites,
            site,
            &format!("TICKS_{}", site.as_str().to_uppercase()),
            20,
        )
        .await;
    }
    for site in Site::ALL {
        wait_for_stream(&sites, site, "TICKS", 20).await;
    }
    for (site, stream) in [
        (Site::Onprem, "TICKS_ONPREM"),
        (Site::Cloud, "TICKS_CLOUD"),
        (Site::Onprem, "TICKS"),
        (Site::Cloud, "TICKS"),
    ] {
        let ids = stored_ids(&sites, site, stream).await;
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(unique.len(), ids.len(), "{site} {stream} holds a duplicate");
        assert_eq!(unique, expected, "{site} {stream}");
    }

    // The stored event: the trade's values, the change derived in decimal, a root trace per tick.
    let origin = sites
        .jetstream(Site::Onprem)
        .await
        .get_stream("TICKS_ONPREM")
        .await
        .unwrap();
    let first = origin.get_raw_message(1).await.unwrap();
    assert_eq!(first.subject.as_str(), "onprem.ticks.upbit.KRW-BTC");
    let traceparent = first
        .headers
        .get("traceparent")
        .expect("a traceparent header");
    assert!(TraceContext::parse(traceparent.as_str()).is_some());
    let envelope = proto_events::decode(&first.payload).unwrap();
    let Event::TickObserved(tick) = envelope.data else {
        panic!("not a tick: {:?}", envelope.data);
    };
    assert_eq!(tick.market, btc);
    assert_eq!(tick.trade_price.to_string(), "95000000");
    assert_eq!(tick.signed_change_price.to_string(), "1000000");
    assert_eq!(
        tick.signed_change_rate.value(),
        rust_decimal::Decimal::from(1) / rust_decimal::Decimal::from(94)
    );
    assert_eq!(envelope.origin_site, Site::Onprem);

    shutdown.trigger();
    for ingester in ingesters {
        let report: PublishReport = tokio::time::timeout(Duration::from_secs(15), ingester)
            .await
            .expect("ingest stops promptly on shutdown")
            .expect("no panic")
            .expect("a clean stop");
        assert_eq!(report.published, 20);
        assert_eq!(report.duplicates, 0);
    }
    exchange.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_source_publishes_every_trade() {
    let sites = sites_with_topology().await;
    let mut config = Config {
        site: Site::Onprem,
        ..Config::default()
    };
    config.nats.urls.onprem = sites.url(Site::Onprem);
    config.nats.urls.cloud = sites.url(Site::Cloud);
    config.nats.users.insert(
        "ingest".to_owned(),
        Credentials {
            user: "ingest".to_owned(),
            password: sites.password("ingest").to_owned(),
        },
    );
    config.ingest = serde_json::json!({ "source": "recorded", "speed": "max", "batch_size": 32 })
        .as_object()
        .cloned()
        .unwrap();
    let shutdown = Shutdown::new();
    let service = tokio::spawn(coinalarm_ingest::run(config, shutdown.clone()));

    wait_for_stream(&sites, Site::Onprem, "TICKS_ONPREM", 304).await;
    let ids = stored_ids(&sites, Site::Onprem, "TICKS_ONPREM").await;
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (304, 304));
    assert!(ids.contains(&"tick:upbit:KRW-LAMB:1618678262000003".to_owned()));
    assert!(ids.contains(&"tick:upbit:BTC-ITAM:16186782720000000".to_owned()));
    let count = message_count(&sites.jetstream(Site::Onprem).await, "TICKS_ONPREM")
        .await
        .unwrap();
    assert_eq!(count, 304);

    // Played once, then idle until told to stop.
    assert!(!service.is_finished());
    shutdown.trigger();
    let result = tokio::time::timeout(Duration::from_secs(15), service)
        .await
        .expect("ingest stops promptly on shutdown")
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
}

/// Trade frames for `count` trades of KRW-BTC, as the websocket reader would hand them over.
fn trade_frames(count: u64) -> Vec<coinalarm_ingest::frame::Frame> {
    (1..=count)
        .map(|sequential_id| {
            coinalarm_ingest::frame::parse_frame(
                format!(
                    r#"{{"ty":"trade","cd":"KRW-BTC","ttms":1793581199871,"tp":95000000,"pcp":94000000,"sid":{sequential_id}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        })
        .collect()
}

fn publisher(bus: Bus, flush_timeout: Duration) -> TickPublisher {
    TickPublisher::new(
        bus,
        TickProcessor::new(Exchange::upbit()),
        16,
        flush_timeout,
        true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_read_before_shutdown_is_still_published() {
    let sites = sites_with_topology().await;
    let (sender, receiver) = tokio::sync::mpsc::channel(1000);
    for frame in trade_frames(100) {
        sender.send(frame).await.unwrap();
    }
    drop(sender);
    // Shutdown already triggered: the publisher still drains the channel before it returns.
    let shutdown = Shutdown::new();
    shutdown.trigger();
    let report = publisher(
        ingest_bus(&sites, Site::Onprem).await,
        Duration::from_secs(5),
    )
    .run(receiver, &shutdown)
    .await
    .unwrap();
    assert_eq!(report.published, 100);
    assert_eq!(
        message_count(&sites.jetstream(Site::Onprem).await, "TICKS_ONPREM")
            .await
            .unwrap(),
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_an_unreachable_nats_is_given_up_on_in_bounded_time() {
    let mut sites = sites_with_topology().await;
    let bus = ingest_bus(&sites, Site::Onprem).await;
    sites.kill(Site::Onprem);
    let (sender, receiver) = tokio::sync::mpsc::channel(1000);
    for frame in trade_frames(10) {
        sender.send(frame).await.unwrap();
    }
    drop(sender);
    let shutdown = Shutdown::new();
    shutdown.trigger();
    let started = std::time::Instant::now();
    let result = publisher(bus, Duration::from_millis(500))
        .run(receiver, &shutdown)
        .await;
    assert!(
        matches!(
            result,
            Err(coinalarm_ingest::publisher::Error::FlushAbandoned { ticks: 10, .. })
        ),
        "{result:?}"
    );
    // The flush timeout plus at most one backoff step: below the 5 s publish acknowledgement timeout, so
    // a hung attempt is cut short rather than waited out.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
