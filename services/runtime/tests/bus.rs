//! The event bus against real NATS: publishing with ids and trace context, optimistic concurrency on an
//! aggregate subject (also across the link to the home site), and a consumer that acks, retries and parks
//! poison messages in the dead-letter stream without blocking.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coinalarm_runtime::Shutdown;
use coinalarm_runtime::bus::{self, BatchHandler, Bus, ConsumerSpec, Delivery, Disposition};
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::trace::TraceContext;
use coinalarm_test_support::nats::{TwoSites, read_stream};
use coinalarm_test_support::wait;
use proto_events::domain::{AlertId, UserId};
use proto_events::events::alerts::AlertPaused;
use proto_events::{Envelope, Event, Site};

async fn sites_with_topology() -> TwoSites {
    let sites = TwoSites::start().await;
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        topology::apply(&topology, &sites.jetstream(site).await, false)
            .await
            .expect("apply");
    }
    sites
}

async fn bus_at(sites: &TwoSites, site: Site, user: &str) -> Bus {
    Bus::from_client(
        sites.client(site, user).await,
        site,
        user,
        Duration::from_secs(5),
    )
}

fn paused(alert_id: &AlertId, version: u64) -> Envelope<AlertPaused> {
    Envelope::new(
        AlertPaused {
            alert_id: alert_id.clone(),
            user_id: UserId::new(),
            version,
        },
        Site::Onprem,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_expected_sequence_is_refused_even_across_the_link() {
    let sites = sites_with_topology().await;
    let api_at_cloud = bus_at(&sites, Site::Cloud, "api").await;
    let alert_id = AlertId::new();

    // The alert's home is on-prem; the API serving it at the cloud site writes across the link.
    let first = api_at_cloud
        .publish_expecting(&paused(&alert_id, 2), Site::Onprem, 0, None)
        .await
        .expect("first write on a new aggregate");
    assert_eq!(first.stream, "ALERTS_ONPREM");
    let second = api_at_cloud
        .publish_expecting(&paused(&alert_id, 3), Site::Onprem, first.sequence, None)
        .await
        .expect("write at the current version");
    let stale = api_at_cloud
        .publish_expecting(&paused(&alert_id, 4), Site::Onprem, first.sequence, None)
        .await;
    assert!(
        matches!(stale, Err(bus::Error::WrongLastSequence { expected, .. }) if expected == first.sequence),
        "{stale:?}"
    );
    assert!(second.sequence > first.sequence);
    // A retried publish of the same command is a stored duplicate, not a second event.
    let retried = api_at_cloud
        .publish_expecting(&paused(&alert_id, 3), Site::Onprem, first.sequence, None)
        .await;
    match retried {
        Ok(published) => assert!(published.duplicate),
        Err(bus::Error::WrongLastSequence { .. }) => {}
        Err(other) => panic!("unexpected {other}"),
    }
}

/// Acks alert events, asks for a retry of the first delivery of one of them, and parks another.
struct Recorder {
    seen: Arc<AtomicUsize>,
    retry_once: AlertId,
    park: AlertId,
    traces: Vec<Option<TraceContext>>,
}

impl BatchHandler for Recorder {
    async fn handle(
        &mut self,
        batch: &[Delivery],
    ) -> Result<Vec<Disposition>, coinalarm_runtime::shutdown::BoxError> {
        Ok(batch
            .iter()
            .map(|delivery| {
                self.seen.fetch_add(1, Ordering::SeqCst);
                self.traces.push(delivery.trace);
                let Event::AlertPaused(paused) = &delivery.envelope.data else {
                    return Disposition::Ack;
                };
                if paused.alert_id == self.park {
                    return Disposition::Park {
                        reason_code: "test_reject".to_owned(),
                        reason: "rejected by the test".to_owned(),
                    };
                }
                if paused.alert_id == self.retry_once && delivery.deliveries == 1 {
                    return Disposition::Retry {
                        after: Duration::from_millis(50),
                    };
                }
                Disposition::Ack
            })
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_acks_retries_and_parks_without_blocking() {
    let sites = sites_with_topology().await;
    let producer = bus_at(&sites, Site::Onprem, "api").await;
    let consumer_bus = bus_at(&sites, Site::Onprem, "projector").await;
    let (ok, retry, park) = (AlertId::new(), AlertId::new(), AlertId::new());
    let root = TraceContext::new_root();
    for alert_id in [&ok, &retry, &park] {
        producer
            .publish(&paused(alert_id, 2), Some(&root))
            .await
            .expect("publish");
    }
    // Garbage on an alert subject: cannot be decoded, must be parked, must not block the others.
    let raw = sites.jetstream(Site::Onprem).await;
    raw.publish("onprem.alerts.garbage", "not json".into())
        .await
        .expect("send")
        .await
        .expect("stored");

    let seen = Arc::new(AtomicUsize::new(0));
    let mut handler = Recorder {
        seen: seen.clone(),
        retry_once: retry.clone(),
        park: park.clone(),
        traces: Vec::new(),
    };
    let spec = ConsumerSpec::new("ALERTS", "bus-test", vec!["alerts.>".to_owned()]);
    let shutdown = Shutdown::new();
    let consumer_shutdown = shutdown.clone();
    let running = tokio::spawn(async move {
        bus::run_consumer(&consumer_bus, &spec, &mut handler, &consumer_shutdown)
            .await
            .expect("consumer");
        handler
    });

    let jetstream = sites.jetstream(Site::Onprem).await;
    wait::until(
        "both dead letters and every ack",
        Duration::from_secs(30),
        || async {
            let parked = read_stream(&jetstream, "DEADLETTER").await;
            let mut consumer = jetstream
                .get_stream("ALERTS")
                .await
                .map_err(|e| e.to_string())?
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>("bus-test")
                .await
                .map_err(|e| e.to_string())?;
            let info = consumer.info().await.map_err(|e| e.to_string())?;
            if parked.len() == 2 && info.num_ack_pending == 0 && info.num_pending == 0 {
                Ok(())
            } else {
                Err(format!(
                    "parked {} pending {} ack-pending {}",
                    parked.len(),
                    info.num_pending,
                    info.num_ack_pending
                ))
            }
        },
    )
    .await
    .expect("consumer settles every message");
    shutdown.trigger();
    let handler = running.await.expect("consumer task");

    // three decodable events, one of them delivered twice
    assert_eq!(seen.load(Ordering::SeqCst), 4);
    assert!(
        handler
            .traces
            .iter()
            .all(|trace| trace.is_some_and(|trace| trace.trace_id == root.trace_id)),
        "every delivery continues the publisher's trace"
    );
    let parked = read_stream(&jetstream, "DEADLETTER").await;
    let bodies: Vec<Envelope<Event>> = parked
        .iter()
        .map(|message| proto_events::envelope::decode(&message.payload).expect("parked event"))
        .collect();
    let reasons: Vec<String> = bodies
        .iter()
        .map(|envelope| match &envelope.data {
            Event::MessageParked(parked) => parked.reason_code.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(reasons.contains(&"test_reject".to_owned()), "{reasons:?}");
    assert!(
        reasons.iter().any(|reason| reason != "test_reject"),
        "{reasons:?}"
    );
    assert!(bodies.iter().any(|envelope| matches!(&envelope.data,
        Event::MessageParked(parked) if parked.subject == "alerts.garbage")));
}
