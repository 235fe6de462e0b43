//! `coinalarm sites status` as an operator runs it, against both real sites beating as `coinalarm serve`
//! processes do: health, link, ownership and takeover counts, and a failing check once the link is cut.

use std::process::Output;
use std::time::Duration;

use coinalarm_runtime::Shutdown;
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::nats::topology::{self, SiteTopology, TopologyOptions};
use coinalarm_runtime::sites::{self, SitesConfig};
use coinalarm_test_support::nats::TwoSites;
use coinalarm_test_support::wait;
use jiff::Timestamp;
use proto_events::domain::{AlertId, PhoneNumber, ProviderName, ServiceName, UserId};
use proto_events::events::{DispatchPurpose, DispatchRequested, DispatchSent, MessageBody};
use proto_events::ids::{DispatchId, Firing, TriggerId};
use proto_events::{Envelope, Priority, Site};
use serde_json::Value;

async fn coinalarm(sites: &TwoSites, arguments: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_coinalarm"));
    command
        .args(arguments)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("COINALARM_NATS__URLS__ONPREM", sites.url(Site::Onprem))
        .env("COINALARM_NATS__URLS__CLOUD", sites.url(Site::Cloud))
        .env("COINALARM_NATS__USER", "admin")
        .env("COINALARM_NATS__PASSWORD", sites.password("admin"))
        .env("COINALARM_NATS__REQUEST_TIMEOUT", "2");
    command.output().await.expect("run coinalarm")
}

async fn status(sites: &TwoSites) -> (Option<i32>, Value) {
    let output = coinalarm(sites, &["sites", "status", "--json", "--check"]).await;
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

fn site<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["sites"]
        .as_array()
        .and_then(|sites| sites.iter().find(|site| site["site"] == name))
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

fn request(owner: Site, name: &str) -> DispatchRequested {
    let trigger = TriggerId::new(
        &AlertId::parse(name).expect("id"),
        Firing::Armed { generation: 1 },
    );
    DispatchRequested {
        dispatch_id: DispatchId::for_triggers(std::slice::from_ref(&trigger)).expect("one"),
        priority: Priority::Alert,
        destination: PhoneNumber::parse("010-1234-5678").expect("phone"),
        body: MessageBody::Plain {
            text: "x".to_owned(),
        },
        owning_site: owner,
        purpose: DispatchPurpose::Alert {
            user_id: UserId::new(),
            trigger_ids: vec![trigger],
        },
        created_at: Timestamp::now(),
        expires_at: Timestamp::now() + jiff::SignedDuration::from_secs(60),
    }
}

fn sent(request: &DispatchRequested, site: Site) -> DispatchSent {
    DispatchSent {
        dispatch_id: request.dispatch_id.clone(),
        site,
        attempt: 1,
        provider: ProviderName::parse("twilio").expect("name"),
        provider_message_id: format!("SM-{site}"),
        sent_at: Timestamp::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_status_reports_health_ownership_takeovers_and_a_cut_link() {
    let sites = TwoSites::start().await;
    let mut buses = Vec::new();
    for site in Site::ALL {
        let topology = SiteTopology::new(site, &TopologyOptions::default());
        topology::apply(&topology, &sites.jetstream(site).await, false)
            .await
            .expect("apply topology");
        buses.push(Bus::from_client(
            sites.client(site, "admin").await,
            site,
            "admin",
            Duration::from_secs(5),
        ));
    }
    let shutdown = Shutdown::new();
    for bus in &buses {
        tokio::spawn(sites::emit_heartbeats(
            bus.clone(),
            vec![
                ServiceName::parse("notifier").expect("name"),
                ServiceName::parse("dispatcher").expect("name"),
            ],
            SitesConfig::default(),
            shutdown.clone(),
        ));
    }
    let (onprem, cloud) = (&buses[0], &buses[1]);
    // The cloud's request sent by on-prem (a takeover), and on-prem's sent by both (a duplicate).
    let taken_over = request(Site::Cloud, "taken-over");
    let twice = request(Site::Onprem, "twice");
    cloud
        .publish(&Envelope::new(taken_over.clone(), Site::Cloud), None)
        .await
        .expect("publish");
    onprem
        .publish(&Envelope::new(twice.clone(), Site::Onprem), None)
        .await
        .expect("publish");
    for (bus, event) in [
        (onprem, sent(&taken_over, Site::Onprem)),
        (onprem, sent(&twice, Site::Onprem)),
        (cloud, sent(&twice, Site::Cloud)),
    ] {
        bus.publish(&Envelope::new(event, bus.site()), None)
            .await
            .expect("publish");
    }

    let report = wait::until("both sites healthy", Duration::from_secs(30), || async {
        let (code, report) = status(&sites).await;
        let counted = site(&report, "onprem")["ownership"]["sent"]["cloud"] == 1;
        if code == Some(0) && counted {
            Ok(report)
        } else {
            Err(format!("exit {code:?}: {report:#}"))
        }
    })
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    for name in ["onprem", "cloud"] {
        let entry = site(&report, name);
        assert_eq!(entry["health"], "alive", "{entry:#}");
        assert_eq!(entry["link_up"], true);
        assert_eq!(entry["sees_peer_alive"], true);
        assert_eq!(
            entry["services_alive"],
            serde_json::json!(["dispatcher", "notifier"])
        );
        let ownership = &entry["ownership"];
        assert_eq!(
            ownership["requests_owned"],
            serde_json::json!({"onprem": 1, "cloud": 1})
        );
        assert_eq!(
            ownership["sent"],
            serde_json::json!({"onprem": 2, "cloud": 1})
        );
        assert_eq!(
            ownership["sent_for_peer"],
            serde_json::json!({"onprem": 1, "cloud": 1})
        );
        assert_eq!(ownership["duplicated_dispatches"], 1);
        assert_eq!(
            ownership["duplicate_sends"],
            serde_json::json!({"cloud": 1})
        );
    }
    let text = coinalarm(&sites, &["sites", "status"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("SEES PEER") && text.contains("alive"),
        "{text}"
    );

    // A partition: each site still beats, sees its peer fall silent, and the check fails.
    sites.cut_link();
    let report = wait::until(
        "each site to see its peer silent",
        Duration::from_secs(30),
        || async {
            let (code, report) = status(&sites).await;
            let silent = ["onprem", "cloud"]
                .iter()
                .all(|name| site(&report, name)["sees_peer_alive"] == false);
            if code == Some(3) && silent {
                Ok(report)
            } else {
                Err(format!("exit {code:?}: {report:#}"))
            }
        },
    )
    .await
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    for name in ["onprem", "cloud"] {
        let entry = site(&report, name);
        assert_eq!(entry["health"], "alive", "{entry:#}");
        assert_eq!(entry["link_up"], false);
    }
    shutdown.trigger();
}
