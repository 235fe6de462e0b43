//! `coinalarm trace alert|dispatch|phone`: what happened to an alert, an SMS or a phone number, told
//! from the events in both sites' JetStream aggregates (never from the Postgres read models, which
//! may be what is wrong), with the stream and sequence of every event so it can be checked with
//! `nats stream get`, and loud about what the sites disagree on and about SMS sent twice.

mod alert;
mod collect;
mod dispatch;
pub mod model;
mod phone;
mod read;
mod render;

use std::process::ExitCode;

use anyhow::Context as _;
use coinalarm_runtime::Config;
use coinalarm_runtime::nats::{connect_once, jetstream};
use jiff::{SignedDuration, Timestamp};
use proto_events::Site;
use proto_events::domain::{AlertId, PhoneNumber};
use proto_events::ids::DispatchId;

pub use alert::AlertOptions;
pub use model::{AlertTrace, DispatchTrace, PhoneTrace};
pub use phone::PhoneOptions;
pub use render::{render_alert, render_dispatch, render_phone};

use read::SiteReader;

#[derive(Debug, clap::Subcommand)]
pub enum TraceCommand {
    /// An alert's whole life: definition changes, the ticks around each firing, triggers, skips,
    /// dispatch attempts, provider answers, delivery callbacks, dead letters, and hop latencies.
    Alert(AlertArgs),
    /// One SMS dispatch: request, claims, attempts, provider answers, callbacks, dead letters.
    Dispatch(DispatchArgs),
    /// The last dispatches to a phone number (matched by its keyed hash).
    Phone(PhoneArgs),
}

#[derive(Debug, clap::Args)]
pub struct SiteArgs {
    /// Read only this site's aggregates; default: both, compared.
    #[arg(long, value_parser = parse_site)]
    pub site: Option<Site>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AlertArgs {
    pub alert_id: AlertId,
    #[command(flatten)]
    pub common: SiteArgs,
    /// Seconds after each trigger in which its dispatch requests are searched.
    #[arg(long, default_value_t = 35 * 60)]
    pub dispatch_window: u32,
}

#[derive(Debug, clap::Args)]
pub struct DispatchArgs {
    pub dispatch_id: DispatchId,
    #[command(flatten)]
    pub common: SiteArgs,
}

#[derive(Debug, clap::Args)]
pub struct PhoneArgs {
    /// E.164 (`+821012345678`) or a Korean local form (`010-1234-5678`).
    pub phone: PhoneNumber,
    #[command(flatten)]
    pub common: SiteArgs,
    /// How many dispatches to show, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// How far back requests are searched, in hours.
    #[arg(long, default_value_t = 7 * 24)]
    pub since_hours: u32,
}

fn parse_site(value: &str) -> Result<Site, String> {
    value
        .parse()
        .map_err(|error: proto_events::site::UnknownSite| error.to_string())
}

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no site could be read: {0}")]
    Unreachable(String),
    #[error("reading {stream} at {site}: {detail}")]
    Read {
        site: Site,
        stream: String,
        detail: String,
    },
    #[error("{what} is unknown at {}", collect::join_sites(sites))]
    NotFound { what: String, sites: Vec<Site> },
    #[error("configuration: {0}")]
    Config(String),
}

/// The sites being read, and how reading each went.
pub struct Sites {
    readers: Vec<SiteReader>,
    reads: Vec<model::SiteRead>,
}

impl Sites {
    /// Connects as `admin` to `only`, or to both sites; a site that does not answer is reported, not
    /// fatal, unless no site answers.
    pub async fn connect(config: &Config, only: Option<Site>) -> Result<Sites, Error> {
        let wanted: Vec<Site> = match only {
            Some(site) => vec![site],
            None => Site::ALL.to_vec(),
        };
        let mut readers = Vec::new();
        let mut reads = Vec::new();
        for site in wanted {
            match connect_once(&config.nats, site, "admin").await {
                Ok(client) => {
                    readers.push(SiteReader::new(
                        site,
                        jetstream(client, config.nats.request_timeout),
                    ));
                    reads.push(model::SiteRead {
                        site,
                        reachable: true,
                        error: None,
                    });
                }
                Err(error) => reads.push(model::SiteRead {
                    site,
                    reachable: false,
                    error: Some(error.to_string()),
                }),
            }
        }
        if readers.is_empty() {
            let errors: Vec<String> = reads
                .iter()
                .map(|read| format!("{}: {}", read.site, read.error.clone().unwrap_or_default()))
                .collect();
            return Err(Error::Unreachable(errors.join("; ")));
        }
        Ok(Sites { readers, reads })
    }

    /// The sites actually read.
    pub fn read_sites(&self) -> Vec<Site> {
        self.readers.iter().map(|reader| reader.site).collect()
    }
}

/// `trace alert` as a library call: the typed report.
pub async fn alert(
    config: &Config,
    only: Option<Site>,
    alert_id: &AlertId,
    options: &AlertOptions,
) -> Result<AlertTrace, Error> {
    let sites = Sites::connect(config, only).await?;
    alert::trace_alert(&sites, alert_id, options).await
}

/// `trace dispatch` as a library call.
pub async fn dispatch(
    config: &Config,
    only: Option<Site>,
    dispatch_id: &DispatchId,
) -> Result<DispatchTrace, Error> {
    let sites = Sites::connect(config, only).await?;
    dispatch::trace_dispatch(&sites, dispatch_id).await
}

/// `trace phone` as a library call. The phone-hash key is the API's (`[api] phone_hash_key`).
pub async fn phone(
    config: &Config,
    only: Option<Site>,
    phone: &PhoneNumber,
    options: &PhoneOptions,
) -> Result<PhoneTrace, Error> {
    let settings: coinalarm_api::ApiConfig = config
        .section("api")
        .map_err(|error| Error::Config(error.to_string()))?;
    let key = settings.phone_hash_key_bytes().map_err(|error| {
        Error::Config(format!(
            "numbers are matched by their keyed hash, which needs the deployment's [api] \
             phone_hash_key: {error}"
        ))
    })?;
    let sites = Sites::connect(config, only).await?;
    phone::trace_phone(&sites, &key, phone, options).await
}

pub async fn run(config: &Config, command: TraceCommand) -> anyhow::Result<ExitCode> {
    let (json, outcome) = match command {
        TraceCommand::Alert(args) => {
            let options = AlertOptions {
                dispatch_window: SignedDuration::from_secs(i64::from(args.dispatch_window)),
            };
            let report = alert(config, args.common.site, &args.alert_id, &options).await;
            (
                args.common.json,
                report.map(|report| Printable::Alert(Box::new(report))),
            )
        }
        TraceCommand::Dispatch(args) => {
            let report = dispatch(config, args.common.site, &args.dispatch_id).await;
            (
                args.common.json,
                report.map(|report| Printable::Dispatch(Box::new(report))),
            )
        }
        TraceCommand::Phone(args) => {
            let options = PhoneOptions {
                limit: args.limit,
                since: Timestamp::now() - SignedDuration::from_hours(i64::from(args.since_hours)),
            };
            let report = phone(config, args.common.site, &args.phone, &options).await;
            (
                args.common.json,
                report.map(|report| Printable::Phone(Box::new(report))),
            )
        }
    };
    let printable = match outcome {
        Ok(printable) => printable,
        Err(Error::NotFound { what, sites }) => {
            eprintln!(
                "error: {what} is unknown at {} (searched the JetStream aggregates there)",
                collect::join_sites(&sites)
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error).context("tracing"),
    };
    let text = match (&printable, json) {
        (Printable::Alert(report), true) => serde_json::to_string_pretty(report)?,
        (Printable::Dispatch(report), true) => serde_json::to_string_pretty(report)?,
        (Printable::Phone(report), true) => serde_json::to_string_pretty(report)?,
        (Printable::Alert(report), false) => render_alert(report),
        (Printable::Dispatch(report), false) => render_dispatch(report),
        (Printable::Phone(report), false) => render_phone(report),
    };
    println!("{}", text.trim_end());
    Ok(ExitCode::SUCCESS)
}

enum Printable {
    Alert(Box<AlertTrace>),
    Dispatch(Box<DispatchTrace>),
    Phone(Box<PhoneTrace>),
}
