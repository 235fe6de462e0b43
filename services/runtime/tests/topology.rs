//! The two-site topology against real nats-servers started from `nats/*.conf`: apply is idempotent and
//! reports drift, events reach both aggregates exactly once, and the sites converge after a partition
//! and after a site is killed and restarted.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use coinalarm_runtime::nats::status;
use coinalarm_runtime::nats::topology::{self, Action, SiteTopology, TopologyOptions};
use coinalarm_test_support::nats::{TwoSites, read_stream};
use coinalarm_test_support::wait;
use proto_events::subjects::subject;
use proto_events::{Category, Site};

const CONVERGE: Duration = Duration::from_secs(60);

async fn apply_both(sites: &TwoSites) -> Vec<topology::Change> {
    let mut changes = Vec::new();
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        let jetstream = sites.jetstream(site).await;
        changes.extend(
            topology::apply(&topology, &jetstream, false)
                .await
                .expect("apply topology"),
        );
    }
    changes
}

async fn started_and_applied() -> TwoSites {
    let sites = TwoSites::start().await;
    apply_both(&sites).await;
    sites
}

async fn publish(jetstream: &jetstream::Context, subject: String, message_id: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", message_id);
    jetstream
        .publish_with_headers(subject, headers, message_id.to_owned().into())
        .await
        .expect("publish")
        .await
        .expect("publish acknowledged");
}

/// Waits until every source of every aggregate at both sites has taken in all of its origin, and each
/// aggregate holds `expected` messages (the lag measure alone can read 0 for a moment after a restart,
/// before the restarted side resets its source).
async fn wait_converged(sites: &TwoSites, category: Category, expected: usize) {
    let contexts = [
        (Site::Onprem, sites.jetstream(Site::Onprem).await),
        (Site::Cloud, sites.jetstream(Site::Cloud).await),
    ];
    let result = wait::until(
        &format!("{category} aggregates to converge"),
        CONVERGE,
        || async {
            for (site, local) in &contexts {
                let peer = &contexts
                    .iter()
                    .find(|(other, _)| other == &site.peer())
                    .expect("peer")
                    .1;
                let topology = SiteTopology::new(*site, &TopologyOptions::default());
                let status = status::collect(&topology, local, Some(peer), None).await;
                let behind: Vec<String> = status
                    .sources
                    .iter()
                    .filter(|source| source.aggregate == category.aggregate_stream())
                    .filter(|source| source.lag != Some(0))
                    .map(|source| {
                        format!(
                            "{site}:{}<-{} lag {:?} {:?}",
                            source.aggregate, source.origin, source.lag, source.error
                        )
                    })
                    .collect();
                if !behind.is_empty() {
                    return Err(behind.join(", "));
                }
                let stored = status
                    .streams
                    .iter()
                    .find(|stream| stream.name == category.aggregate_stream())
                    .map_or(0, |stream| stream.messages);
                if stored != expected as u64 {
                    return Err(format!(
                        "{site}: {stored} of {expected} in {}",
                        category.aggregate_stream()
                    ));
                }
            }
            Ok(())
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

/// The aggregate holds exactly `expected` ids, once each, at contiguous sequences from 1.
async fn assert_aggregate_holds(sites: &TwoSites, category: Category, expected: &BTreeSet<String>) {
    for site in Site::ALL {
        let stored = read_stream(&sites.jetstream(site).await, category.aggregate_stream()).await;
        let ids: Vec<String> = stored
            .iter()
            .map(|message| message.message_id.clone().expect("every event has an id"))
            .collect();
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{site}: duplicates in {}",
            category.aggregate_stream()
        );
        assert_eq!(
            &unique,
            expected,
            "{site}: {} content",
            category.aggregate_stream()
        );
        let sequences: Vec<u64> = stored.iter().map(|message| message.sequence).collect();
        let contiguous: Vec<u64> = (1..=stored.len() as u64).collect();
        assert_eq!(
            sequences,
            contiguous,
            "{site}: gap in {}",
            category.aggregate_stream()
        );
        for message in &stored {
            assert!(
                message
                    .subject
                    .starts_with(&format!("{}.", category.token())),
                "{site}: aggregate subject {} keeps no site prefix",
                message.subject
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_twice_changes_nothing_and_drift_is_reported_and_repaired() {
    let sites = TwoSites::start().await;
    let first = apply_both(&sites).await;
    assert!(
        first.iter().all(|change| change.action == Action::Created),
        "{first:#?}"
    );
    let per_site = SiteTopology::new(Site::Onprem, &TopologyOptions::default());
    assert_eq!(
        first.len(),
        2 * (per_site.streams.len() + per_site.consumers.len())
    );

    let second = apply_both(&sites).await;
    let changed: Vec<_> = second
        .iter()
        .filter(|change| change.action != Action::Unchanged)
        .collect();
    assert!(changed.is_empty(), "second apply changed: {changed:#?}");

    // Someone shortens retention by hand: a dry run reports it, apply puts it back.
    let jetstream = sites.jetstream(Site::Cloud).await;
    let mut tampered = per_site_stream_config(Site::Cloud, "TRIGGERS");
    tampered.max_age = Duration::from_secs(3600);
    jetstream.update_stream(tampered).await.expect("tamper");
    let topology = SiteTopology::new(Site::Cloud, &TopologyOptions::default());
    let dry = topology::apply(&topology, &jetstream, true)
        .await
        .expect("dry run");
    let drifted: Vec<_> = dry
        .iter()
        .filter(|change| change.action != Action::Unchanged)
        .collect();
    assert_eq!(drifted.len(), 1, "{drifted:#?}");
    assert_eq!(drifted[0].name, "TRIGGERS");
    assert_eq!(drifted[0].action, Action::WouldUpdate);
    assert_eq!(drifted[0].drift[0].field, "max_age");
    let repaired = topology::apply(&topology, &jetstream, false)
        .await
        .expect("repair");
    assert!(
        repaired
            .iter()
            .any(|change| change.name == "TRIGGERS" && change.action == Action::Updated)
    );
    let again = topology::apply(&topology, &jetstream, true)
        .await
        .expect("dry run");
    assert!(
        again
            .iter()
            .all(|change| change.action == Action::Unchanged)
    );
}

fn per_site_stream_config(site: Site, name: &str) -> jetstream::stream::Config {
    SiteTopology::new(site, &TopologyOptions::default())
        .stream(name)
        .expect("stream defined")
        .config
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_at_either_site_reaches_both_aggregates_once() {
    let sites = started_and_applied().await;
    let onprem = sites.jetstream(Site::Onprem).await;
    let cloud = sites.jetstream(Site::Cloud).await;
    publish(
        &onprem,
        subject::alert(Some(Site::Onprem), "a1"),
        "alert:a1:1",
    )
    .await;
    publish(
        &cloud,
        subject::alert(Some(Site::Cloud), "a2"),
        "alert:a2:1",
    )
    .await;
    wait_converged(&sites, Category::Alerts, 2).await;
    let expected = ["alert:a1:1", "alert:a2:1"].map(str::to_owned).into();
    assert_aggregate_holds(&sites, Category::Alerts, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_id_at_both_sites_is_stored_once_per_aggregate() {
    let sites = started_and_applied().await;
    let onprem = sites.jetstream(Site::Onprem).await;
    let cloud = sites.jetstream(Site::Cloud).await;
    // Two ingesters saw the same exchange trade: same deterministic id, each at its own site.
    for sequence in 0..50 {
        let id = format!("tick:upbit:KRW-BTC:{sequence}");
        publish(
            &onprem,
            subject::tick(Some(Site::Onprem), "upbit", "KRW-BTC"),
            &id,
        )
        .await;
        publish(
            &cloud,
            subject::tick(Some(Site::Cloud), "upbit", "KRW-BTC"),
            &id,
        )
        .await;
    }
    wait_converged(&sites, Category::Ticks, 50).await;
    let expected = (0..50)
        .map(|sequence| format!("tick:upbit:KRW-BTC:{sequence}"))
        .collect();
    assert_aggregate_holds(&sites, Category::Ticks, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_converge_with_no_gap_after_the_link_is_cut_and_restored() {
    let sites = started_and_applied().await;
    let onprem = sites.jetstream(Site::Onprem).await;
    let cloud = sites.jetstream(Site::Cloud).await;
    let mut expected = BTreeSet::new();
    for index in 0..20 {
        let id = format!("dsp:before-{index}");
        publish(
            &onprem,
            subject::dispatch_outcome(Some(Site::Onprem), &format!("before-{index}")),
            &id,
        )
        .await;
        expected.insert(id);
    }
    wait_converged(&sites, Category::Dispatch, expected.len()).await;

    sites.cut_link();
    // During the cut each site keeps accepting its own writes.
    for index in 0..200 {
        for (site, jetstream) in [(Site::Onprem, &onprem), (Site::Cloud, &cloud)] {
            let id = format!("dsp:{site}-during-{index}");
            publish(
                jetstream,
                subject::dispatch_outcome(Some(site), &format!("{site}-during-{index}")),
                &id,
            )
            .await;
            expected.insert(id);
        }
    }
    // The link really is down: the cloud aggregate has not seen on-prem's writes.
    let cloud_view = read_stream(&cloud, "DISPATCH").await;
    assert!(
        cloud_view.iter().all(|message| !message
            .message_id
            .as_deref()
            .unwrap_or("")
            .starts_with("dsp:onprem-during")),
        "the cut link still carried traffic"
    );

    sites.restore_link();
    sites.wait_link_up(CONVERGE).await;
    wait_converged(&sites, Category::Dispatch, expected.len()).await;
    assert_aggregate_holds(&sites, Category::Dispatch, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_site_catches_up() {
    let mut sites = started_and_applied().await;
    let onprem = sites.jetstream(Site::Onprem).await;
    let mut expected = BTreeSet::new();
    for index in 0..10 {
        let id = format!("trg:a{index}:g1");
        publish(
            &onprem,
            subject::trigger(Some(Site::Onprem), &format!("a{index}")),
            &id,
        )
        .await;
        expected.insert(id);
    }
    wait_converged(&sites, Category::Triggers, expected.len()).await;

    sites.kill(Site::Cloud);
    for index in 10..300 {
        let id = format!("trg:a{index}:g1");
        publish(
            &onprem,
            subject::trigger(Some(Site::Onprem), &format!("a{index}")),
            &id,
        )
        .await;
        expected.insert(id);
    }
    sites.restart(Site::Cloud).await;
    sites.wait_link_up(CONVERGE).await;
    let cloud = sites.jetstream(Site::Cloud).await;
    for index in 300..310 {
        let id = format!("trg:c{index}:g1");
        publish(
            &cloud,
            subject::trigger(Some(Site::Cloud), &format!("c{index}")),
            &id,
        )
        .await;
        expected.insert(id);
    }
    wait_converged(&sites, Category::Triggers, expected.len()).await;
    assert_aggregate_holds(&sites, Category::Triggers, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_write_only_their_own_subjects_and_cannot_change_streams() {
    let sites = started_and_applied().await;
    let ingest = jetstream::new(sites.client(Site::Onprem, "ingest").await);
    publish(
        &ingest,
        subject::tick(Some(Site::Onprem), "upbit", "KRW-ETH"),
        "tick:upbit:KRW-ETH:1",
    )
    .await;

    let mut ingest_quick = ingest.clone();
    ingest_quick.set_timeout(Duration::from_millis(500));
    let forbidden = ingest_quick
        .publish(subject::alert(Some(Site::Onprem), "a1"), "x".into())
        .await
        .expect("sent")
        .await;
    assert!(forbidden.is_err(), "ingest must not write alert events");

    let mut config = per_site_stream_config(Site::Onprem, "TICKS_ONPREM");
    config.max_age = Duration::from_secs(60);
    assert!(
        ingest_quick.update_stream(config).await.is_err(),
        "ingest must not change streams"
    );

    // The API at the cloud site writes an alert command to its home site, on-prem, across the link.
    let api = jetstream::new(sites.client(Site::Cloud, "api").await);
    let ack = api
        .publish(
            subject::alert(Some(Site::Onprem), "home-onprem"),
            "x".into(),
        )
        .await
        .expect("sent")
        .await
        .expect("acknowledged by the home site");
    assert_eq!(ack.stream, "ALERTS_ONPREM");
    assert_eq!(ack.domain, "onprem");
}

/// The `monitor` user (what `coinalarm serve`'s replication monitor connects as) reads both sites'
/// streams and sources, its own site's directly and the peer's through the link, and can change
/// nothing: no publish to an event subject, no stream created or purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_user_reads_replication_state_across_the_link_and_changes_nothing() {
    let sites = started_and_applied().await;
    let admin = sites.jetstream(Site::Onprem).await;
    publish(
        &admin,
        subject::alert(Some(Site::Onprem), "m1"),
        "alert:m1:1",
    )
    .await;
    wait_converged(&sites, Category::Alerts, 1).await;

    let client = sites.client(Site::Onprem, "monitor").await;
    let timeout = Duration::from_secs(5);
    let local = coinalarm_runtime::nats::jetstream(client.clone(), timeout);
    let through_link =
        coinalarm_runtime::nats::jetstream_in_domain(client.clone(), Site::Cloud.domain(), timeout);
    let topology = SiteTopology::new(Site::Onprem, &TopologyOptions::default());
    let status = status::collect(&topology, &local, Some(&through_link), Some(&through_link)).await;
    assert!(status.reachable, "{:?}", status.error);
    assert_eq!(status.link_up, Some(true));
    assert!(!status.streams.is_empty());
    assert!(
        status.streams.iter().all(|stream| stream.exists),
        "{:?}",
        status.streams
    );
    assert!(!status.sources.is_empty());
    for source in &status.sources {
        assert_eq!(source.error, None, "{source:?}");
        assert_eq!(source.lag, Some(0), "{source:?}");
    }

    let monitor = jetstream::new(client);
    let published = monitor
        .publish(subject::alert(Some(Site::Onprem), "m2"), "x".into())
        .await;
    let refused = match published {
        Err(_) => true,
        Ok(ack) => ack.await.is_err(),
    };
    assert!(refused, "the monitor published an event");
    assert!(
        monitor
            .create_stream(jetstream::stream::Config {
                name: "MONITOR_MADE_THIS".to_owned(),
                subjects: vec!["monitor.made.this".to_owned()],
                ..Default::default()
            })
            .await
            .is_err(),
        "the monitor created a stream"
    );
    assert!(
        admin.get_stream("MONITOR_MADE_THIS").await.is_err(),
        "no stream was created"
    );
    let aggregate = Category::Alerts.aggregate_stream();
    let mut stream = admin.get_stream(aggregate).await.expect("aggregate");
    assert_eq!(stream.info().await.expect("info").state.messages, 1);
}
