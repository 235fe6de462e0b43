//! The two-site JetStream topology as code: every stream and durable sourcing consumer of each site,
//! rendered to the JSON files under `nats/jetstream/` and applied idempotently with drift reporting.
//!
//! Per category (see `proto_events::subjects`) each site has:
//! - an **origin** stream (`TICKS_ONPREM`) capturing `onprem.ticks.>`, written only at that site;
//! - a **durable sourcing consumer** on that origin (`TICKS_ONPREM_TO_CLOUD`) that feeds the other
//!   site's aggregate over the leaf link (ADR-60: resumes in seconds where ephemeral sources took 16–40 s);
//! - an **aggregate** stream (`TICKS`) sourcing the local origin and the remote one (through `external`
//!   `$JS.<peer>.API` and that durable consumer), stripping the site prefix with subject transforms and
//!   de-duplicating by `Nats-Msg-Id` over an explicit window.
//!
//! Everything one site needs lives at that site, so `apply` for one site never needs the other to be up.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, IntoConsumerConfig, push};
use async_nats::jetstream::stream::{
    self, DiscardPolicy, External, RetentionPolicy, Source, StorageType, StreamConsumerSource,
    SubjectTransform,
};
use proto_events::{Category, Site};
use serde::Serialize;
use serde_json::Value;

use super::Error;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Knobs that differ between deployments rather than between sites.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// Stream and consumer replicas: 1 for single-node sites (local, tests), 3 in production clusters.
    pub replicas: usize,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        TopologyOptions { replicas: 1 }
    }
}

/// How long a category's events are kept, and how long its aggregate remembers message ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `None` keeps events forever: aggregates are event-sourced and rebuilt from their whole history.
    pub max_age: Option<Duration>,
    /// Must outlast the longest partition tolerated plus the resume delay, or an event published at both
    /// sites is stored twice in the aggregate. Costs memory per id inside the window.
    pub duplicate_window: Duration,
}

/// Retention per category; the reasons are in `docs/decisions/0002-two-site-topology.md`.
pub fn retention(category: Category) -> Retention {
    match category {
        // Replay needs days of ticks; the matcher also drops ticks it has seen by exchange sequence, so a
        // short id window is enough and keeps memory bounded at the highest-rate stream.
        Category::Ticks => Retention {
            max_age: Some(7 * DAY),
            duplicate_window: 2 * MINUTE,
        },
        Category::Users | Category::Alerts => Retention {
            max_age: None,
            duplicate_window: 30 * MINUTE,
        },
        // Sealed sign-in codes: useless after minutes, so they are not kept for long.
        Category::Auth => Retention {
            max_age: Some(HOUR),
            duplicate_window: 30 * MINUTE,
        },
        Category::Triggers | Category::Dispatch => Retention {
            max_age: Some(90 * DAY),
            duplicate_window: 30 * MINUTE,
        },
        Category::Sites => Retention {
            max_age: Some(7 * DAY),
            duplicate_window: 30 * MINUTE,
        },
        Category::Deadletter => Retention {
            max_age: Some(30 * DAY),
            duplicate_window: 30 * MINUTE,
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamRole {
    Origin,
    Aggregate,
}

#[derive(Debug, Clone)]
pub struct StreamDefinition {
    pub role: StreamRole,
    pub category: Category,
    pub config: stream::Config,
}

#[derive(Debug, Clone)]
pub struct ConsumerDefinition {
    pub stream: String,
    pub config: consumer::Config,
}

impl ConsumerDefinition {
    pub fn name(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }
}

/// Everything that lives at one site.
#[derive(Debug, Clone)]
pub struct SiteTopology {
    pub site: Site,
    pub streams: Vec<StreamDefinition>,
    pub consumers: Vec<ConsumerDefinition>,
}

impl SiteTopology {
    pub fn new(site: Site, options: &TopologyOptions) -> SiteTopology {
        let mut streams = Vec::new();
        let mut consumers = Vec::new();
        for category in Category::ALL {
            streams.push(origin_stream(site, category, options));
            consumers.push(sourcing_consumer(site, category, options));
        }
        for category in Category::ALL {
            streams.push(aggregate_stream(site, category, options));
        }
        SiteTopology {
            site,
            streams,
            consumers,
        }
    }

    pub fn stream(&self, name: &str) -> Option<&StreamDefinition> {
        self.streams
            .iter()
            .find(|stream| stream.config.name == name)
    }

    /// The definition files of this site, keyed by path relative to `nats/jetstream/<site>/`.
    pub fn render(&self) -> Result<BTreeMap<String, String>, Error> {
        let mut files = BTreeMap::new();
        for stream in &self.streams {
            files.insert(
                format!("streams/{}.json", stream.config.name),
                to_pretty_json(&stream.config)?,
            );
        }
        for consumer in &self.consumers {
            files.insert(
                format!("consumers/{}/{}.json", consumer.stream, consumer.name()),
                to_pretty_json(&consumer.config)?,
            );
        }
        Ok(files)
    }
}

/// The definition files of both sites, keyed by path relative to `nats/jetstream/`.
pub fn render_all(options: &TopologyOptions) -> Result<BTreeMap<String, String>, Error> {
    let mut files = BTreeMap::new();
    for site in Site::ALL {
        for (path, content) in SiteTopology::new(site, options).render()? {
            files.insert(format!("{site}/{path}"), content);
        }
    }
    Ok(files)
}

fn to_pretty_json(value: &impl Serialize) -> Result<String, Error> {
    let mut text = serde_json::to_string_pretty(value).map_err(Error::Serialize)?;
    text.push('\n');
    Ok(text)
}

fn base_stream(name: String, category: Category, options: &TopologyOptions) -> stream::Config {
    let retention = retention(category);
    stream::Config {
        name,
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        num_replicas: options.replicas,
        max_age: retention.max_age.unwrap_or_default(),
        duplicate_window: retention.duplicate_window,
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        max_consumers: -1,
        // Events are facts: nobody deletes one by hand, retention ages them out.
        deny_delete: true,
        // Direct get lets trace tooling and the NATS CLI read single events from any replica cheaply.
        allow_direct: true,
        ..Default::default()
    }
}

fn origin_stream(site: Site, category: Category, options: &TopologyOptions) -> StreamDefinition {
    let mut config = base_stream(category.origin_stream(site), category, options);
    config.subjects = vec![category.origin_filter(site)];
    config.description = Some(format!(
        "{category} events produced at {site}; written only at {site}, sourced by both sites' {} aggregates",
        category.aggregate_stream()
    ));
    StreamDefinition {
        role: StreamRole::Origin,
        category,
        config,
    }
}

/// The consumer on `site`'s origin that the peer's aggregate reads through the leaf link.
fn sourcing_consumer(
    site: Site,
    category: Category,
    options: &TopologyOptions,
) -> ConsumerDefinition {
    ConsumerDefinition {
        stream: category.origin_stream(site),
        config: push::Config {
            durable_name: Some(category.sourcing_consumer(site)),
            description: Some(format!(
                "feeds {}'s {} aggregate (durable sourcing consumer)",
                site.peer(),
                category.aggregate_stream()
            )),
            deliver_subject: category.sourcing_deliver_subject(site),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::FlowControl,
            flow_control: true,
            idle_heartbeat: Duration::from_secs(1),
            max_deliver: -1,
            // The server default (1,000) slowed catch-up after a partition about threefold.
            max_ack_pending: 10_000,
            num_replicas: options.replicas,
            ..Default::default()
        }
        .into_consumer_config(),
    }
}

fn aggregate_stream(site: Site, category: Category, options: &TopologyOptions) -> StreamDefinition {
    let peer = site.peer();
    let mut config = base_stream(category.aggregate_stream().to_owned(), category, options);
    config.description = Some(format!(
        "all {category} events of both sites as seen at {site}, site prefix stripped; read by {site}'s services"
    ));
    config.sources = Some(vec![
        Source {
            name: category.origin_stream(site),
            subject_transforms: vec![strip_site_prefix(site, category)],
            ..Default::default()
        },
        Source {
            name: category.origin_stream(peer),
            external: Some(External {
                api_prefix: format!("$JS.{}.API", peer.domain()),
                delivery_prefix: None,
            }),
            subject_transforms: vec![strip_site_prefix(peer, category)],
            consumer: Some(StreamConsumerSource {
                name: category.sourcing_consumer(peer),
                deliver_subject: category.sourcing_deliver_subject(peer),
            }),
            ..Default::default()
        },
    ]);
    StreamDefinition {
        role: StreamRole::Aggregate,
        category,
        config,
    }
}

fn strip_site_prefix(site: Site, category: Category) -> SubjectTransform {
    SubjectTransform {
        source: category.origin_filter(site),
        destination: category.aggregate_filter(),
    }
}

/// What `apply` did (or, in a dry run, would do) to one stream or consumer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub site: Site,
    pub kind: ObjectKind,
    pub name: String,
    pub action: Action,
    /// Fields whose live value differs from the definition, before the change.
    pub drift: Vec<Drift>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Stream,
    Consumer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    WouldCreate,
    WouldUpdate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// JSON path of the field, e.g. `sources[1].consumer.name`.
    pub field: String,
    pub desired: Value,
    pub live: Value,
}

/// Creates what is missing and updates what drifted, in dependency order: origins, then the consumers on
/// them, then the aggregates that reference both (a source naming a missing consumer is accepted by the
/// server but silently delivers nothing).
pub async fn apply(
    topology: &SiteTopology,
    jetstream: &jetstream::Context,
    dry_run: bool,
) -> Result<Vec<Change>, Error> {
    let mut changes = Vec::new();
    for stream in topology
        .streams
        .iter()
        .filter(|s| s.role == StreamRole::Origin)
    {
        changes.push(apply_stream(topology.site, stream, jetstream, dry_run).await?);
    }
    for consumer in &topology.consumers {
        changes.push(apply_consumer(topology.site, consumer, jetstream, dry_run).await?);
    }
    for stream in topology
        .streams
        .iter()
        .filter(|s| s.role == StreamRole::Aggregate)
    {
        changes.push(apply_stream(topology.site, stream, jetstream, dry_run).await?);
    }
    Ok(changes)
}

async fn apply_stream(
    site: Site,
    definition: &StreamDefinition,
    jetstream: &jetstream::Context,
    dry_run: bool,
) -> Result<Change, Error> {
    let name = definition.config.name.clone();
    let change = |action, drift| Change {
        site,
        kind: ObjectKind::Stream,
        name: name.clone(),
        action,
        drift,
    };
    let live = super::api_read::<stream::Info>(jetstream, format!("STREAM.INFO.{name}"), &name)
        .await?
        .map(|(info, _raw)| info.config);
    let Some(live) = live else {
        if dry_run {
            return Ok(change(Action::WouldCreate, Vec::new()));
        }
        jetstream
            .create_stream(definition.config.clone())
            .await
            .map_err(Error::jetstream(&name))?;
        tracing::info!(%site, stream = %name, "created stream");
        return Ok(change(Action::Created, Vec::new()));
    };
    let drift = diff(&to_value(&definition.config)?, &to_value(&live)?);
    if drift.is_empty() {
        return Ok(change(Action::Unchanged, drift));
    }
    if dry_run {
        return Ok(change(Action::WouldUpdate, drift));
    }
    jetstream
        .update_stream(definition.config.clone())
        .await
        .map_err(Error::jetstream(&name))?;
    tracing::info!(%site, stream = %name, fields = drift.len(), "updated drifted stream");
    Ok(change(Action::Updated, drift))
}

async fn apply_consumer(
    site: Site,
    definition: &ConsumerDefinition,
    jetstream: &jetstream::Context,
    dry_run: bool,
) -> Result<Change, Error> {
    let name = definition.name().to_owned();
    let qualified = format!("{}/{}", definition.stream, name);
    let change = |action, drift| Change {
        site,
        kind: ObjectKind::Consumer,
        name: qualified.clone(),
        action,
        drift,
    };
    let live = super::api_read::<consumer::Info>(
        jetstream,
        format!("CONSUMER.INFO.{}.{}", definition.stream, name),
        &qualified,
    )
    .await?
    .map(|(info, _raw)| info.config);
    let Some(live) = live else {
        if dry_run {
            return Ok(change(Action::WouldCreate, Vec::new()));
        }
        jetstream
            .create_consumer_on_stream(definition.config.clone(), &definition.stream)
            .await
            .map_err(Error::jetstream(&qualified))?;
        tracing::info!(%site, consumer = %qualified, "created consumer");
        return Ok(change(Action::Created, Vec::new()));
    };
    let drift = diff(&to_value(&definition.config)?, &to_value(&live)?);
    if drift.is_empty() {
        return Ok(change(Action::Unchanged, drift));
    }
    if dry_run {
        return Ok(change(Action::WouldUpdate, drift));
    }
    jetstream
        .update_consumer_on_stream(definition.config.clone(), &definition.stream)
        .await
        .map_err(Error::jetstream(&qualified))?;
    tracing::info!(%site, consumer = %qualified, fields = drift.len(), "updated drifted consumer");
    Ok(change(Action::Updated, drift))
}

fn to_value(value: &impl Serialize) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(Error::Serialize)
}

/// Differences between a definition and the live object, looking only at what the definition says:
/// the server adds fields of its own (defaults, state) that are not drift.
pub fn diff(desired: &Value, live: &Value) -> Vec<Drift> {
    let mut drift = Vec::new();
    diff_into(String::new(), desired, live, &mut drift);
    drift
}

fn diff_into(path: String, desired: &Value, live: &Value, drift: &mut Vec<Drift>) {
    match (desired, live) {
        (Value::Object(desired_fields), Value::Object(live_fields)) => {
            for (key, desired_value) in desired_fields {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff_into(
                    child,
                    desired_value,
                    live_fields.get(key).unwrap_or(&Value::Null),
                    drift,
                );
            }
        }
        (Value::Array(desired_items), Value::Array(live_items))
            if desired_items.len() == live_items.len() =>
        {
            for (index, (desired_item, live_item)) in
                desired_items.iter().zip(live_items).enumerate()
            {
                diff_into(format!("{path}[{index}]"), desired_item, live_item, drift);
            }
        }
        _ if desired == live => {}
        _ => drift.push(Drift {
            field: path,
            desired: desired.clone(),
            live: live.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_aggregate_sources_both_origins_and_the_remote_through_a_durable_consumer() {
        for site in Site::ALL {
            let topology = SiteTopology::new(site, &TopologyOptions::default());
            for category in Category::ALL {
                let aggregate = topology
                    .stream(category.aggregate_stream())
                    .expect("aggregate defined");
                assert!(
                    aggregate.config.subjects.is_empty(),
                    "aggregates capture nothing"
                );
                assert!(aggregate.config.duplicate_window > Duration::ZERO);
                let sources = aggregate.config.sources.as_ref().expect("sources");
                let remote = sources
                    .iter()
                    .find(|source| source.name == category.origin_stream(site.peer()))
                    .expect("remote origin sourced");
                let consumer = remote.consumer.as_ref().expect("durable sourcing consumer");
                assert_eq!(consumer.name, category.sourcing_consumer(site.peer()));
                assert_eq!(
                    remote.external.as_ref().map(|e| e.api_prefix.as_str()),
                    Some(format!("$JS.{}.API", site.peer()).as_str())
                );
                // Never source an aggregate from an aggregate: cycles across domains go undetected.
                assert!(
                    sources
                        .iter()
                        .all(|source| source.name != category.aggregate_stream())
                );
            }
            // The consumers at this site feed the peer: they sit on this site's origins.
            for consumer in &topology.consumers {
                assert!(
                    consumer.stream.ends_with(site.upper()),
                    "{}",
                    consumer.stream
                );
            }
        }
    }

    #[test]
    fn retention_never_forgets_ids_before_events() {
        for category in Category::ALL {
            let retention = retention(category);
            if let Some(max_age) = retention.max_age {
                assert!(retention.duplicate_window <= max_age, "{category}");
            }
        }
    }

    #[test]
    fn diff_ignores_fields_the_definition_does_not_set() {
        let desired = json!({"name": "A", "sources": [{"name": "B"}]});
        let live = json!({"name": "A", "state": 3, "sources": [{"name": "B", "active": 1}]});
        assert!(diff(&desired, &live).is_empty());
        let drifted = json!({"name": "A", "sources": [{"name": "C"}]});
        let drift = diff(&desired, &drifted);
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].field, "sources[0].name");
    }
}
