//! `coinalarm sites status`: each site's health (its heartbeats), the link, replication lag per stream,
//! and who owned, sent and took over what recently, as operators need it during an incident.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;

use anyhow::Context;
use async_nats::jetstream;
use coinalarm_runtime::Config;
use coinalarm_runtime::nats::status::{self, SiteStatus};
use coinalarm_runtime::nats::topology::{SiteTopology, TopologyOptions};
use coinalarm_runtime::nats::{connect_once, jetstream as jetstream_context, jetstream_in_domain};
use coinalarm_runtime::sites::{self, DuplicateLedger, SitesConfig};
use jiff::{SignedDuration, Timestamp};
use proto_events::events::{DispatchPurpose, TriggerFired};
use proto_events::{Category, Event, Site};
use serde::Serialize;

use crate::cli::SitesStatusArgs;
use crate::table;

/// Exit code for "ran fine, but something is unhealthy".
const FOUND_DIFFERENCE: u8 = 3;

/// How far back beats are read to judge health (beyond `dead_after`).
const BEAT_HISTORY: SignedDuration = SignedDuration::from_secs(30);

#[derive(Debug, Serialize)]
pub struct SitesReport {
    pub generated_at: Timestamp,
    /// The window the ownership counts cover.
    pub window_seconds: u64,
    /// A site silent for longer than this is judged dead (`sites.dead_after`).
    pub dead_after_seconds: f64,
    pub takeover: &'static str,
    pub sites: Vec<SiteReport>,
}

#[derive(Debug, Serialize)]
pub struct SiteReport {
    pub site: Site,
    /// Whether its NATS answered this command.
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `alive` when a beat of this site is younger than `dead_after`, `dead` otherwise, `unknown` when
    /// neither site's streams could be read.
    pub health: Health,
    /// Where the beats were read: the site itself, or its peer when the site is unreachable.
    pub beats_read_at: Option<Site>,
    pub last_beat_age_seconds: Option<f64>,
    /// Services listed in its beats within `dead_after`.
    pub services_alive: Vec<String>,
    /// Whether this site reaches the peer's JetStream over the leaf link.
    pub link_up: Option<bool>,
    /// Whether the peer's beats reach this site (its own verdict on the peer).
    pub sees_peer_alive: Option<bool>,
    pub peer_last_beat_age_seconds: Option<f64>,
    /// Messages each aggregate here is behind each origin.
    pub replication: Vec<ReplicationLag>,
    /// Ownership and takeovers in the window, as recorded in this site's `DISPATCH` aggregate.
    pub ownership: Option<OwnershipCounts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Alive,
    Dead,
    Unknown,
}

#[derive(Debug, Serialize)]
pub struct ReplicationLag {
    pub aggregate: String,
    pub origin: String,
    pub lag: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts per site over the window.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct OwnershipCounts {
    /// Dispatch requests each site owned (was to send).
    pub requests_owned: BTreeMap<Site, u64>,
    /// `dispatch.sent` events each site recorded.
    pub sent: BTreeMap<Site, u64>,
    /// Of those, dispatches another site owned: the dispatcher's takeovers.
    pub sent_for_peer: BTreeMap<Site, u64>,
    /// Requests a site worded for work of the other site (an alert homed there, a code its API
    /// issued): the notifier's takeovers.
    pub worded_for_peer: BTreeMap<Site, u64>,
    /// Dispatches sent more than once, and the extra sends by the site that sent later.
    pub duplicated_dispatches: u64,
    pub duplicate_sends: BTreeMap<Site, u64>,
}

pub async fn status(config: &Config, args: &SitesStatusArgs) -> anyhow::Result<ExitCode> {
    let settings = SitesConfig::from_config(config).context("reading [sites]")?;
    let report = collect(config, &settings, args.window_seconds).await;
    let healthy = report.sites.iter().all(|site| {
        site.reachable
            && site.health == Health::Alive
            && site.link_up == Some(true)
            && site.sees_peer_alive == Some(true)
            && site.replication.iter().all(|lag| lag.lag == Some(0))
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if args.check && !healthy {
        ExitCode::from(FOUND_DIFFERENCE)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads both sites (each directly; what cannot be read is reported, not fatal).
pub async fn collect(config: &Config, settings: &SitesConfig, window_seconds: u64) -> SitesReport {
    let now = Timestamp::now();
    let dead_after = SignedDuration::try_from(settings.dead_after).unwrap_or(SignedDuration::MAX);
    let mut contexts: BTreeMap<Site, Result<jetstream::Context, String>> = BTreeMap::new();
    for site in Site::ALL {
        let context = connect_once(&config.nats, site, "admin")
            .await
            .map(|client| jetstream_context(client, config.nats.request_timeout))
            .map_err(|error| error.to_string());
        contexts.insert(site, context);
    }
    let reachable = |site: Site| {
        contexts
            .get(&site)
            .and_then(|context| context.as_ref().ok())
    };

    // The beats each reachable site holds.
    let beats_since = now - dead_after - BEAT_HISTORY;
    let mut beats_at: BTreeMap<Site, Vec<(Timestamp, proto_events::events::SiteHeartbeatEmitted)>> =
        BTreeMap::new();
    for site in Site::ALL {
        if let Some(context) = reachable(site)
            && let Ok(beats) = sites::read_beats(context, beats_since).await
        {
            beats_at.insert(site, beats);
        }
    }

    let window = SignedDuration::from_secs(i64::try_from(window_seconds).unwrap_or(i64::MAX));
    let mut reports = Vec::new();
    for site in Site::ALL {
        let status = match reachable(site) {
            Some(local) => {
                let topology = SiteTopology::new(site, &TopologyOptions::default());
                let through_link = jetstream_in_domain(
                    local.client(),
                    site.peer().domain(),
                    config.nats.request_timeout,
                );
                let peer = reachable(site.peer())
                    .cloned()
                    .unwrap_or(through_link.clone());
                Some(status::collect(&topology, local, Some(&peer), Some(&through_link)).await)
            }
            None => None,
        };
        // A site's own beats as stored at the site, or, when it cannot be read, as its peer last got them.
        let beats_read_at = [site, site.peer()]
            .into_iter()
            .find(|reader| beats_at.contains_key(reader));
        let own_beats = beats_read_at
            .and_then(|reader| beats_at.get(&reader))
            .map(|beats| beats_of(beats, site, now, dead_after));
        let peer_beats = beats_at
            .get(&site)
            .map(|beats| beats_of(beats, site.peer(), now, dead_after));
        let health = match &own_beats {
            Some(beats) if beats.alive => Health::Alive,
            Some(_) => Health::Dead,
            None => Health::Unknown,
        };
        let ownership = match reachable(site) {
            Some(context) => ownership_counts(context, now - window).await.ok(),
            None => None,
        };
        reports.push(SiteReport {
            site,
            reachable: reachable(site).is_some(),
            error: contexts
                .get(&site)
                .and_then(|context| context.as_ref().err().cloned()),
            health,
            beats_read_at,
            last_beat_age_seconds: own_beats.as_ref().and_then(|beats| beats.age_seconds),
            services_alive: own_beats
                .as_ref()
                .map(|beats| beats.services.iter().cloned().collect())
                .unwrap_or_default(),
            link_up: status.as_ref().and_then(|status| status.link_up),
            sees_peer_alive: peer_beats.as_ref().map(|beats| beats.alive),
            peer_last_beat_age_seconds: peer_beats.as_ref().and_then(|beats| beats.age_seconds),
            replication: status.as_ref().map(replication).unwrap_or_default(),
            ownership,
        });
    }
    SitesReport {
        generated_at: now,
        window_seconds,
        dead_after_seconds: settings.dead_after.as_secs_f64(),
        takeover: settings.takeover.as_str(),
        sites: reports,
    }
}

struct BeatSummary {
    alive: bool,
    age_seconds: Option<f64>,
    services: BTreeSet<String>,
}

/// `site`'s beats among those stored somewhere: the youngest one's age, and the services listed
/// within `dead_after`.
fn beats_of(
    beats: &[(Timestamp, proto_events::events::SiteHeartbeatEmitted)],
    site: Site,
    now: Timestamp,
    dead_after: SignedDuration,
) -> BeatSummary {
    let fresh_since = now - dead_after;
    let mut last: Option<Timestamp> = None;
    let mut services = BTreeSet::new();
    for (stored_at, beat) in beats.iter().filter(|(_, beat)| beat.site == site) {
        // A beat that waited in a backlog proves nothing about its site now (see `sites`).
        let arrival = (*stored_at).min(beat.at + dead_after);
        last = Some(last.map_or(arrival, |last| last.max(arrival)));
        if arrival >= fresh_since {
            services.extend(
                beat.services_alive
                    .iter()
                    .map(|service| service.as_str().to_owned()),
            );
        }
    }
    BeatSummary {
        alive: last.is_some_and(|last| last >= fresh_since),
        age_seconds: last.map(|last| now.duration_since(last).as_secs_f64().max(0.0)),
        services,
    }
}

fn replication(status: &SiteStatus) -> Vec<ReplicationLag> {
    status
        .sources
        .iter()
        .map(|source| ReplicationLag {
            aggregate: source.aggregate.clone(),
            origin: source.origin.clone(),
            lag: source.lag,
            error: source.error.clone(),
        })
        .collect()
}

/// Ownership, sends, takeovers and duplicates in one site's aggregates since `since`.
pub async fn ownership_counts(
    context: &jetstream::Context,
    since: Timestamp,
) -> anyhow::Result<OwnershipCounts> {
    let read = |stream: Category| {
        let filter = stream.aggregate_filter();
        async move {
            sites::read_events_since(context, stream.aggregate_stream(), &filter, since)
                .await
                .map_err(|error| anyhow::anyhow!("reading {}: {error}", stream.aggregate_stream()))
        }
    };
    let dispatch = read(Category::Dispatch).await?;
    let triggers = read(Category::Triggers).await?;
    let auth = read(Category::Auth).await?;
    let home_of: HashMap<String, Site> = triggers
        .iter()
        .filter_map(|(_, envelope)| match &envelope.data {
            Event::TriggerFired(TriggerFired {
                trigger_id,
                home_site,
                ..
            }) => Some((trigger_id.as_str().to_owned(), *home_site)),
            _ => None,
        })
        .collect();
    let sign_in_origin: HashMap<uuid::Uuid, Site> = auth
        .iter()
        .filter_map(|(_, envelope)| match &envelope.data {
            Event::SignInCodeRequested(requested) => {
                Some((requested.request_id, envelope.origin_site))
            }
            _ => None,
        })
        .collect();
    Ok(count(&dispatch, &home_of, &sign_in_origin))
}

fn count(
    dispatch: &[(Timestamp, proto_events::Envelope<Event>)],
    home_of: &HashMap<String, Site>,
    sign_in_origin: &HashMap<uuid::Uuid, Site>,
) -> OwnershipCounts {
    let mut counts = OwnershipCounts::default();
    let mut owner_of: HashMap<String, Site> = HashMap::new();
    for (_, envelope) in dispatch {
        let Event::DispatchRequested(request) = &envelope.data else {
            continue;
        };
        let owner = request.owning_site;
        if owner_of
            .insert(request.dispatch_id.as_str().to_owned(), owner)
            .is_some()
        {
            continue;
        }
        *counts.requests_owned.entry(owner).or_default() += 1;
        let for_peer = match &request.purpose {
            DispatchPurpose::Alert { trigger_ids, .. } => trigger_ids.iter().any(|trigger| {
                home_of
                    .get(trigger.as_str())
                    .is_some_and(|home| *home != owner)
            }),
            DispatchPurpose::SignIn { request_id, .. } => sign_in_origin
                .get(request_id)
                .is_some_and(|origin| *origin != owner),
        };
        if for_peer {
            *counts.worded_for_peer.entry(owner).or_default() += 1;
        }
    }
    let mut ledger = DuplicateLedger::new();
    for (_, envelope) in dispatch {
        let Event::DispatchSent(sent) = &envelope.data else {
            continue;
        };
        if let Some(sender) = ledger.record(sent) {
            *counts.duplicate_sends.entry(sender).or_default() += 1;
        }
        *counts.sent.entry(sent.site).or_default() += 1;
        if owner_of
            .get(sent.dispatch_id.as_str())
            .is_some_and(|owner| *owner != sent.site)
        {
            *counts.sent_for_peer.entry(sent.site).or_default() += 1;
        }
    }
    counts.duplicated_dispatches = ledger.duplicated().count() as u64;
    counts
}

fn render(report: &SitesReport) -> String {
    let seconds =
        |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s ago"));
    let yes_no = |value: Option<bool>, yes: &str, no: &str| match value {
        Some(true) => yes.to_owned(),
        Some(false) => no.to_owned(),
        None => "?".to_owned(),
    };
    let mut out = format!(
        "sites (dead after {:.1}s of silence, takeover: {})\n",
        report.dead_after_seconds, report.takeover
    );
    let rows: Vec<Vec<String>> = report
        .sites
        .iter()
        .map(|site| {
            vec![
                site.site.to_string(),
                if site.reachable {
                    "yes".to_owned()
                } else {
                    "NO".to_owned()
                },
                match site.health {
                    Health::Alive => "alive".to_owned(),
                    Health::Dead => "DEAD".to_owned(),
                    Health::Unknown => "?".to_owned(),
                },
                seconds(site.last_beat_age_seconds),
                if site.services_alive.is_empty() {
                    "-".to_owned()
                } else {
                    site.services_alive.join(",")
                },
                yes_no(site.link_up, "up", "DOWN"),
                format!(
                    "{} ({})",
                    yes_no(site.sees_peer_alive, "alive", "DEAD"),
                    seconds(site.peer_last_beat_age_seconds)
                ),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "SITE",
            "REACHABLE",
            "HEALTH",
            "LAST BEAT",
            "SERVICES",
            "LINK",
            "SEES PEER",
        ],
        &rows,
    ));

    out.push_str("\nreplication lag (messages each aggregate is behind each origin)\n");
    let rows: Vec<Vec<String>> = report
        .sites
        .iter()
        .flat_map(|site| {
            site.replication.iter().map(move |lag| {
                vec![
                    site.site.to_string(),
                    lag.aggregate.clone(),
                    lag.origin.clone(),
                    lag.lag
                        .map_or_else(|| "?".to_owned(), |lag| lag.to_string()),
                    lag.error.clone().unwrap_or_default(),
                ]
            })
        })
        .collect();
    out.push_str(&table::render(
        &["AT", "AGGREGATE", "ORIGIN", "LAG", "ERROR"],
        &rows,
    ));

    out.push_str(&format!(
        "\nownership and takeovers in the last {}s (as recorded at each site)\n",
        report.window_seconds
    ));
    let mut rows = Vec::new();
    for observer in &report.sites {
        let Some(counts) = &observer.ownership else {
            continue;
        };
        for site in Site::ALL {
            let get = |map: &BTreeMap<Site, u64>| map.get(&site).copied().unwrap_or(0).to_string();
            rows.push(vec![
                observer.site.to_string(),
                site.to_string(),
                get(&counts.requests_owned),
                get(&counts.sent),
                get(&counts.sent_for_peer),
                get(&counts.worded_for_peer),
                get(&counts.duplicate_sends),
            ]);
        }
    }
    out.push_str(&table::render(
        &[
            "AT",
            "SITE",
            "OWNED",
            "SENT",
            "SENT FOR PEER",
            "WORDED FOR PEER",
            "DUPLICATE SENDS",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_events::Envelope;
    use proto_events::domain::{AlertId, PhoneNumber, ProviderName, UserId};
    use proto_events::events::{DispatchRequested, DispatchSent, MessageBody};
    use proto_events::ids::{DispatchId, Firing, TriggerId};
    use proto_events::subjects::Priority;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn request(trigger: &TriggerId, owner: Site) -> Envelope<Event> {
        let dispatch_id = DispatchId::for_triggers(std::slice::from_ref(trigger)).unwrap();
        Envelope::new(
            Event::DispatchRequested(DispatchRequested {
                dispatch_id,
                priority: Priority::Alert,
                destination: PhoneNumber::parse("010-1234-5678").unwrap(),
                body: MessageBody::Plain {
                    text: "x".to_owned(),
                },
                owning_site: owner,
                purpose: DispatchPurpose::Alert {
                    user_id: UserId::parse("u1").unwrap(),
                    trigger_ids: vec![trigger.clone()],
                },
                created_at: at(0),
                expires_at: at(60),
            }),
            owner,
        )
    }

    fn sent(trigger: &TriggerId, site: Site, attempt: u32, second: i64) -> Envelope<Event> {
        Envelope::new(
            Event::DispatchSent(DispatchSent {
                dispatch_id: DispatchId::for_triggers(std::slice::from_ref(trigger)).unwrap(),
                site,
                attempt,
                provider: ProviderName::parse("twilio").unwrap(),
                provider_message_id: format!("SM{second}"),
                sent_at: at(second),
            }),
            site,
        )
    }

    #[test]
    fn takeovers_and_duplicates_are_counted_for_the_site_that_did_them() {
        let trigger = |name: &str| {
            TriggerId::new(
                &AlertId::parse(name).unwrap(),
                Firing::Armed { generation: 1 },
            )
        };
        let (own, orphan, twice) = (trigger("own"), trigger("orphan"), trigger("twice"));
        let home_of: HashMap<String, Site> = [
            (own.as_str().to_owned(), Site::Onprem),
            (orphan.as_str().to_owned(), Site::Onprem),
            (twice.as_str().to_owned(), Site::Cloud),
        ]
        .into();
        let events: Vec<(Timestamp, Envelope<Event>)> = [
            request(&own, Site::Onprem),
            sent(&own, Site::Onprem, 1, 1),
            // On-prem's notifier died: the cloud worded its trigger and sent it.
            request(&orphan, Site::Cloud),
            sent(&orphan, Site::Cloud, 1, 2),
            // The cloud's request, sent by both sites in a partition.
            request(&twice, Site::Cloud),
            request(&twice, Site::Cloud),
            sent(&twice, Site::Cloud, 1, 3),
            sent(&twice, Site::Onprem, 1, 4),
        ]
        .into_iter()
        .map(|envelope| (at(0), envelope))
        .collect();
        let counts = count(&events, &home_of, &HashMap::new());
        assert_eq!(
            counts,
            OwnershipCounts {
                requests_owned: [(Site::Onprem, 1), (Site::Cloud, 2)].into(),
                sent: [(Site::Onprem, 2), (Site::Cloud, 2)].into(),
                sent_for_peer: [(Site::Onprem, 1)].into(),
                worded_for_peer: [(Site::Cloud, 1)].into(),
                duplicated_dispatches: 1,
                duplicate_sends: [(Site::Onprem, 1)].into(),
            }
        );
    }
}
