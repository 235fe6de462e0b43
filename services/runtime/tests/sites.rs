//! Site liveness on two real nats-servers: each site beats, each judges the other alive and in sync; a
//! cut link or a SIGKILLed site is judged dead within `dead_after` (plus a beat), and a returning peer
//! is held as rejoining until its backlog is in, then in sync again.

use std::time::Duration;

use coinalarm_runtime::Shutdown;
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::sites::{self, Liveness, Phase, SitesConfig};
use coinalarm_test_support::nats::TwoSites;
use coinalarm_test_support::wait;
use proto_events::domain::ServiceName;
use proto_events::{Category, Site};

/// Generous: a 2-core CI machine runs other tests at the same time.
const VERDICT: Duration = Duration::from_secs(15);

async fn bus(sites: &TwoSites, site: Site, user: &str) -> Bus {
    Bus::from_client(
        sites.client(site, user).await,
        site,
        user,
        Duration::from_secs(5),
    )
}

fn settings() -> SitesConfig {
    SitesConfig::default()
}

fn emit(bus: Bus, shutdown: &Shutdown) -> tokio::task::JoinHandle<()> {
    tokio::spawn(sites::emit_heartbeats(
        bus,
        vec![
            ServiceName::parse("notifier").expect("name"),
            ServiceName::parse("dispatcher").expect("name"),
        ],
        settings(),
        shutdown.child(),
    ))
}

async fn wait_phase(liveness: &Liveness, wanted: &str, within: Duration) -> Phase {
    wait::until(&format!("phase {wanted}"), within, || async {
        let view = liveness.view();
        if view.phase.name() == wanted {
            Ok(view.phase)
        } else {
            Err(format!("{view:?}"))
        }
    })
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_judged_alive_dead_and_back_from_their_beats() {
    let mut sites = TwoSites::start().await;
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        topology::apply(&topology, &sites.jetstream(site).await, false)
            .await
            .expect("apply topology");
    }
    let shutdown = Shutdown::new();
    let onprem_beats = emit(bus(&sites, Site::Onprem, "notifier").await, &shutdown);
    let cloud_shutdown = shutdown.child();
    let _cloud_beats = emit(
        bus(&sites, Site::Cloud, "dispatcher").await,
        &cloud_shutdown,
    );
    let onprem = Liveness::start(
        &bus(&sites, Site::Onprem, "dispatcher").await,
        settings(),
        "test",
        shutdown.child(),
    );
    let cloud = Liveness::start(
        &bus(&sites, Site::Cloud, "notifier").await,
        settings(),
        "test",
        shutdown.child(),
    );

    // Both beat and the streams are empty: each is in sync with the other within a few beats.
    wait_phase(&onprem, "in_sync", VERDICT).await;
    wait_phase(&cloud, "in_sync", VERDICT).await;
    let view = onprem.view();
    assert!(view.peer_alive() && view.peer_service_alive("dispatcher"));
    assert_eq!(view.link_up, Some(true));
    assert!(!view.takes_over(Site::Cloud, "dispatcher"));

    // A partition: both sides stop hearing each other and work alone.
    sites.cut_link();
    let cut_at = std::time::Instant::now();
    wait_phase(&onprem, "alone", VERDICT).await;
    let judged_after = cut_at.elapsed();
    wait_phase(&cloud, "alone", VERDICT).await;
    eprintln!("a cut link was judged after {judged_after:?}");
    assert!(judged_after >= settings().dead_after - Duration::from_millis(600));
    let view = onprem.view();
    assert_eq!(view.link_up, Some(false));
    assert!(view.takes_over(Site::Cloud, "dispatcher"));

    // Events written during the partition must arrive before a rejoining site decides anything.
    let cloud_jetstream = sites.jetstream(Site::Cloud).await;
    for index in 0..1000 {
        let subject = format!("cloud.dispatch.skipped.partition-{index}");
        cloud_jetstream
            .publish(subject, "x".into())
            .await
            .expect("publish")
            .await
            .expect("acknowledged");
    }
    sites.restore_link();
    let Phase::InSync { .. } = wait_phase(&onprem, "in_sync", Duration::from_secs(60)).await else {
        unreachable!()
    };
    // In sync means the aggregate holds what the cloud wrote during the cut.
    let local = sites.jetstream(Site::Onprem).await;
    let aggregate = local
        .get_stream(Category::Dispatch.aggregate_stream())
        .await
        .expect("DISPATCH")
        .cached_info()
        .state
        .messages;
    assert_eq!(
        aggregate, 1000,
        "the partition's backlog is in before in_sync"
    );

    // A whole site killed: its server and its process.
    cloud_shutdown.trigger();
    sites.kill(Site::Cloud);
    let killed_at = std::time::Instant::now();
    wait_phase(&onprem, "alone", VERDICT).await;
    eprintln!("a killed site was judged after {:?}", killed_at.elapsed());
    let check = sites::check_sources(&local, Site::Onprem).await;
    assert!(!check.caught_up, "{check:?}");

    // Back: the peer beats again, onprem rejoins and gets in sync.
    sites.restart(Site::Cloud).await;
    sites.wait_link_up(Duration::from_secs(60)).await;
    let _cloud_beats = emit(bus(&sites, Site::Cloud, "dispatcher").await, &shutdown);
    wait_phase(&onprem, "in_sync", Duration::from_secs(60)).await;
    shutdown.trigger();
    let _ = onprem_beats.await;
}
