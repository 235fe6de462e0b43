//! `coinalarm serve`: runs the chosen services in this process, plus the site's replication monitor
//! (Prometheus gauges of each aggregate source's lag) and the site heartbeat (every process beats for
//! its site, listing the services it hosts: how the other site judges this one alive), until
//! SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use coinalarm_runtime::bus::Bus;
use coinalarm_runtime::host::{self, StartFn};
use coinalarm_runtime::nats::status;
use coinalarm_runtime::nats::topology::{SiteTopology, TopologyOptions};
use coinalarm_runtime::shutdown::ServiceFuture;
use coinalarm_runtime::sites;
use coinalarm_runtime::{Config, Shutdown, telemetry};

use proto_events::domain::ServiceName as HostedService;

use crate::cli::ServiceName;

/// How often the replication monitor refreshes its gauges.
const MONITOR_PERIOD: Duration = Duration::from_secs(5);

const EVERY_SERVICE: [(&str, StartFn); 6] = [
    (coinalarm_ingest::NAME, coinalarm_ingest::start),
    (coinalarm_matcher::NAME, coinalarm_matcher::start),
    (coinalarm_notifier::NAME, coinalarm_notifier::start),
    (coinalarm_dispatcher::NAME, coinalarm_dispatcher::start),
    (coinalarm_projector::NAME, coinalarm_projector::start),
    (coinalarm_api::NAME, coinalarm_api::start),
];

/// The services a command line names, `all` expanded, each once, in pipeline order.
pub fn selected(names: &[ServiceName]) -> Vec<(&'static str, StartFn)> {
    let wanted = |name: &str| {
        names.iter().any(|selected| {
            *selected == ServiceName::All || format!("{selected:?}").eq_ignore_ascii_case(name)
        })
    };
    EVERY_SERVICE
        .into_iter()
        .filter(|(name, _)| wanted(name))
        .collect()
}

pub async fn run(config: Config, names: &[ServiceName]) -> anyhow::Result<ExitCode> {
    telemetry::init(&config.telemetry).context("starting telemetry")?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let mut services = selected(names);
    let hosted: Vec<&'static str> = services.iter().map(|(name, _)| *name).collect();
    let heartbeat = tokio::spawn(beat(config.clone(), hosted, shutdown.child()));
    services.push(("replication-monitor", start_monitor));
    let outcome = host::serve(&config, &services, shutdown.clone()).await;
    // The services have stopped (or failed): so do the beats, and the other site may take over.
    shutdown.trigger();
    let _ = heartbeat.await;
    if outcome.is_clean() {
        return Ok(ExitCode::SUCCESS);
    }
    for (service, reason) in &outcome.failed {
        eprintln!("service {service} failed: {reason}");
    }
    for service in &outcome.timed_out {
        eprintln!("service {service} did not stop within the grace period");
    }
    Ok(ExitCode::FAILURE)
}

/// Beats for the site while the process's services run, connecting as the first hosted service (every
/// service's NATS user may publish `<site>.sites.heartbeat`).
async fn beat(config: Config, hosted: Vec<&'static str>, shutdown: Shutdown) {
    let settings = match sites::SitesConfig::from_config(&config) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(%error, "invalid [sites]; this process does not beat");
            return;
        }
    };
    let services: Vec<HostedService> = hosted
        .iter()
        .filter_map(|name| HostedService::parse(name).ok())
        .collect();
    let user = hosted.first().copied().unwrap_or("admin");
    let bus = tokio::select! {
        bus = Bus::connect(&config, user) => bus,
        () = shutdown.wait() => return,
    };
    match bus {
        Ok(bus) => sites::emit_heartbeats(bus, services, settings, shutdown).await,
        Err(error) => tracing::error!(%error, "cannot connect to beat for the site"),
    }
}

fn start_monitor(config: Config, shutdown: Shutdown) -> ServiceFuture {
    Box::pin(async move {
        // Its own read-only user where the deployment names one (`nats.users.monitor`), else the
        // default user.
        let client = coinalarm_runtime::nats::connect(&config.nats, config.site, "monitor").await?;
        let local = coinalarm_runtime::nats::jetstream(client.clone(), config.nats.request_timeout);
        let through_link = coinalarm_runtime::nats::jetstream_in_domain(
            client,
            config.site.peer().domain(),
            config.nats.request_timeout,
        );
        let topology = SiteTopology::new(config.site, &TopologyOptions::default());
        status::monitor(topology, local, through_link, MONITOR_PERIOD, shutdown).await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_to_every_service_once() {
        let names: Vec<&str> = selected(&[ServiceName::Api, ServiceName::All])
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            names,
            [
                "ingest",
                "matcher",
                "notifier",
                "dispatcher",
                "projector",
                "api"
            ]
        );
        let one: Vec<&str> = selected(&[ServiceName::Matcher])
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(one, ["matcher"]);
    }
}
