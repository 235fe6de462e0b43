//! Replication status of a site: each stream's size and position, and for each aggregate source how far
//! it is behind its origin — measured as the origin's last sequence against what the aggregate has
//! received, because the server's own `lag` reads 0 while a cross-domain source is stalled.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer;
use proto_events::{Category, Site};
use serde::Serialize;

use super::topology::{SiteTopology, StreamRole};

#[derive(Debug, Clone, Serialize)]
pub struct SiteStatus {
    pub site: Site,
    /// Whether this site's own JetStream answered.
    pub reachable: bool,
    pub error: Option<String>,
    /// Whether this site reaches the peer's JetStream domain over the leaf link.
    pub link_up: Option<bool>,
    pub streams: Vec<StreamStatus>,
    pub sources: Vec<SourceStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub name: String,
    pub role: StreamRole,
    pub exists: bool,
    pub messages: u64,
    pub bytes: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub consumers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// The aggregate at this site.
    pub aggregate: String,
    /// The origin stream it sources.
    pub origin: String,
    pub origin_site: Site,
    /// Last sequence of the origin, read at the origin's site.
    pub origin_last_sequence: Option<u64>,
    /// Highest origin sequence the aggregate has taken in.
    pub received_sequence: Option<u64>,
    /// `origin_last_sequence - received_sequence`; `None` when one side could not be read.
    pub lag: Option<u64>,
    /// Time since the source last saw traffic or a heartbeat, as the server reports it.
    pub last_active_ms: Option<u64>,
    /// Why the numbers are missing, or the source's own error.
    pub error: Option<String>,
}

/// Reads the status of `site`. `local` reaches the site's own domain; `peer` reaches the other site's
/// domain, directly or through the link; `link_probe` is a context on the peer's domain *through this
/// site's server*, used only to tell whether the leaf link carries JetStream traffic.
pub async fn collect(
    topology: &SiteTopology,
    local: &jetstream::Context,
    peer: Option<&jetstream::Context>,
    link_probe: Option<&jetstream::Context>,
) -> SiteStatus {
    let site = topology.site;
    let link_up = match link_probe {
        Some(probe) => Some(probe.query_account().await.is_ok()),
        None => None,
    };
    let mut status = SiteStatus {
        site,
        reachable: true,
        error: None,
        link_up,
        streams: Vec::new(),
        sources: Vec::new(),
    };
    if let Err(error) = local.query_account().await {
        status.reachable = false;
        status.error = Some(error.to_string());
        return status;
    }
    for definition in &topology.streams {
        let name = &definition.config.name;
        let read =
            super::api_read::<jetstream::stream::Info>(local, format!("STREAM.INFO.{name}"), name)
                .await;
        let (stream_status, info) = match read {
            Ok(Some((info, raw))) => (
                StreamStatus {
                    name: name.clone(),
                    role: definition.role,
                    exists: true,
                    messages: info.state.messages,
                    bytes: info.state.bytes,
                    first_sequence: info.state.first_sequence,
                    last_sequence: info.state.last_sequence,
                    consumers: info.state.consumer_count,
                },
                Some((info, raw)),
            ),
            Ok(None) | Err(_) => (missing(name, definition.role), None),
        };
        status.streams.push(stream_status);
        if definition.role != StreamRole::Aggregate {
            continue;
        }
        for origin_site in [site, site.peer()] {
            let origin = definition.category.origin_stream(origin_site);
            let origin_context = if origin_site == site {
                Some(local)
            } else {
                peer
            };
            status.sources.push(
                source_status(
                    definition.category,
                    name,
                    &origin,
                    origin_site,
                    site,
                    info.as_ref(),
                    origin_context,
                )
                .await,
            );
        }
    }
    status
}

fn missing(name: &str, role: StreamRole) -> StreamStatus {
    StreamStatus {
        name: name.to_owned(),
        role,
        exists: false,
        messages: 0,
        bytes: 0,
        first_sequence: 0,
        last_sequence: 0,
        consumers: 0,
    }
}

async fn source_status(
    category: Category,
    aggregate: &str,
    origin: &str,
    origin_site: Site,
    site: Site,
    aggregate_info: Option<&(jetstream::stream::Info, serde_json::Value)>,
    origin_context: Option<&jetstream::Context>,
) -> SourceStatus {
    let source_info = aggregate_info.and_then(|(info, _raw)| {
        info.sources
            .iter()
            .find(|source| source.name == origin)
            .cloned()
    });
    let mut status = SourceStatus {
        aggregate: aggregate.to_owned(),
        origin: origin.to_owned(),
        origin_site,
        origin_last_sequence: None,
        received_sequence: None,
        lag: None,
        last_active_ms: source_info
            .as_ref()
            .and_then(|source| source.active)
            .map(|active| u64::try_from(active.as_millis()).unwrap_or(u64::MAX)),
        error: None,
    };
    if aggregate_info.is_none() {
        status.error = Some("aggregate stream missing".to_owned());
        return status;
    }
    let Some(origin_context) = origin_context else {
        status.error = Some(format!("{origin_site} unreachable"));
        return status;
    };
    let origin_info = super::api_read::<jetstream::stream::Info>(
        origin_context,
        format!("STREAM.INFO.{origin}"),
        origin,
    )
    .await;
    let origin_last = match origin_info {
        Ok(Some((info, _raw))) => info.state.last_sequence,
        Ok(None) => {
            status.error = Some(format!("origin {origin} missing at {origin_site}"));
            return status;
        }
        Err(error) => {
            status.error = Some(format!("origin {origin}: {error}"));
            return status;
        }
    };
    status.origin_last_sequence = Some(origin_last);
    let received = if origin_site == site {
        // Sourcing within one server is reliable, so the server's lag can be trusted here.
        source_info.map(|source| origin_last.saturating_sub(source.lag))
    } else {
        // Across the link the durable sourcing consumer's ack floor is what the aggregate confirmed.
        let consumer_name = category.sourcing_consumer(origin_site);
        let read = super::api_read::<consumer::Info>(
            origin_context,
            format!("CONSUMER.INFO.{origin}.{consumer_name}"),
            &consumer_name,
        )
        .await;
        match read {
            // What the consumer has pushed to the aggregate. Its ack floor is no measure here: with
            // `ack_policy: flow_control` it moves only when a flow-control window fills, so a trickle
            // (the sites' heartbeats) would read as an ever-growing lag. A stalled source stops being
            // delivered to, so a partition still shows as lag.
            Ok(Some((info, _raw))) => Some(
                info.delivered
                    .stream_sequence
                    .max(info.ack_floor.stream_sequence),
            ),
            Ok(None) => {
                status.error = Some(format!("sourcing consumer {consumer_name} missing"));
                None
            }
            Err(error) => {
                status.error = Some(format!("sourcing consumer {consumer_name}: {error}"));
                None
            }
        }
    };
    if let Some(received) = received {
        status.received_sequence = Some(received);
        status.lag = Some(origin_last.saturating_sub(received));
    }
    // Some misconfigurations (a consumer with the wrong ack policy) show only here, as the source's error.
    if let Some(source_error) = aggregate_info.and_then(|(_info, raw)| {
        raw.get("sources")?
            .as_array()?
            .iter()
            .find(|source| source.get("name").and_then(serde_json::Value::as_str) == Some(origin))?
            .get("error")?
            .get("description")?
            .as_str()
            .map(str::to_owned)
    }) {
        status.error = Some(source_error);
    }
    status
}

/// Publishes a status as Prometheus gauges.
pub fn record_metrics(status: &SiteStatus) {
    let site = status.site.as_str();
    metrics::gauge!("coinalarm_site_reachable", "site" => site)
        .set(f64::from(u8::from(status.reachable)));
    if let Some(link_up) = status.link_up {
        metrics::gauge!("coinalarm_site_link_up", "site" => site, "peer" => status.site.peer().as_str())
            .set(f64::from(u8::from(link_up)));
    }
    for stream in &status.streams {
        metrics::gauge!("coinalarm_stream_messages", "site" => site, "stream" => stream.name.clone())
            .set(stream.messages as f64);
        metrics::gauge!("coinalarm_stream_last_sequence", "site" => site, "stream" => stream.name.clone())
            .set(stream.last_sequence as f64);
    }
    for source in &status.sources {
        let labels = [
            ("site", site.to_owned()),
            ("aggregate", source.aggregate.clone()),
            ("origin", source.origin.clone()),
        ];
        match source.lag {
            Some(lag) => {
                metrics::gauge!("coinalarm_replication_lag_messages", &labels).set(lag as f64);
                metrics::gauge!("coinalarm_replication_lag_known", &labels).set(1.0);
            }
            None => metrics::gauge!("coinalarm_replication_lag_known", &labels).set(0.0),
        }
    }
}

/// Collects and records the local site's status every `period` until shutdown; runs inside every
/// `coinalarm serve` process so each site exports its own replication health.
pub async fn monitor(
    topology: SiteTopology,
    local: jetstream::Context,
    peer_through_link: jetstream::Context,
    period: Duration,
    shutdown: crate::Shutdown,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => return,
        }
        let status = collect(
            &topology,
            &local,
            Some(&peer_through_link),
            Some(&peer_through_link),
        )
        .await;
        record_metrics(&status);
        for source in status
            .sources
            .iter()
            .filter(|source| source.lag.unwrap_or(0) > 0)
        {
            tracing::debug!(aggregate = %source.aggregate, origin = %source.origin, lag = ?source.lag, "replication behind");
        }
    }
}
