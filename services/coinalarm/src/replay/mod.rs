//! `coinalarm replay`: re-evaluates the alerts, as they were defined at each moment, against the ticks
//! recorded in a window, in a sandbox that sends nothing, and prints the diff against what was actually
//! triggered and sent: **missed** (the sandbox fires, no trigger exists), **extra** (a trigger the sandbox
//! does not produce), **duplicated** (one firing that became more than one SMS: two `dispatch.sent` for one
//! dispatch, from both sites, or two dispatches or two trigger ids for one firing) and **late** (the
//! trigger or the first SMS more than `--late-after` after ingest observed the crossing tick), plus the
//! matched count. Exit status 0 when there is no difference, 3 when there is.
//!
//! # How it reads
//!
//! Everything comes from one site's local aggregates (`--site`, default the configured site), through
//! ordered consumers (ephemeral, no acknowledgements, batches of 500), as the matcher itself reads them:
//! `ALERTS` whole; `TRIGGERS` from `--from` minus the look-back (below) plus the last trigger of every
//! alert; `TICKS` by stored time from `--from` minus the warm-up, until a tick traded more than a minute
//! after `--to` (only the markets of the selected alerts when `--market` or `--alert` is given);
//! `DISPATCH` from a minute before `--from`. Nothing is published and no durable consumer is touched. The
//! sandbox is the matcher's own [`coinalarm_matcher::AlertIndex`] with the site's `[matcher]` settings.
//!
//! # Warm-up: the state at `--from`
//!
//! Arming state, cooldowns, `once` alerts and rolling change windows depend on what happened before the
//! window. The sandbox rebuilds them at `--from` the way the matcher rebuilds its index when it starts
//! (see `sandbox`): alert events up to `--from`; the ticks of the **warm-up** before it (the largest
//! rolling window any selected alert uses, 5 min / 1 h / 24 h, plus two minutes, and at least 10 min), which
//! give each market's last price and fill the windows; and the latest real trigger of each alert before
//! `--from` (read within the **look-back**: the warm-up or the largest cooldown in use, whichever is
//! longer, plus the last trigger of each alert whenever it was), which gives its cooldown, `once` state
//! and firing count. Firings before `--from` are never reported.
//!
//! # Exact, and not
//!
//! Firings are matched by a key that does not depend on the warm-up: alert id, alert version and the
//! crossing tick's id (the same at both sites) for price and change alerts, alert id and occurrence for
//! scheduled ones — never by the trigger id, whose generation counts firings since the version began,
//! which the replay knows only from the triggers it restored. Given the same alert events and ticks, the
//! sandbox makes the decisions the matcher documents (`coinalarm_matcher` crate docs), so within the window
//! it is exact for target-price and daily change alerts, and for rolling change alerts whose window the
//! warm-up covers. Not exact:
//!
//! * the state at `--from` trusts the real triggers before it: a firing missed just before the window
//!   leaves the sandbox armed like the real matcher was, so the diff reports only the window's own faults;
//! * a market with no tick in the warm-up starts the window with no previous price: its first tick in the
//!   window places alerts without firing them, as after a matcher restart with no history;
//! * alert events take effect at their event time as if they had reached the matcher in time, so a live
//!   miss caused by an event older than the matcher's replay window shows as missed (it was one);
//! * scheduled occurrences fire when the ticks' trade time passes them (the matcher uses its clock), so
//!   the prices they carry can differ; their key (the occurrence) does not;
//! * lateness is measured from when ingest observed the crossing tick (its event time), so the exchange's
//!   own delay is not counted, across the clocks of the hosts involved.

mod diff;
mod sandbox;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use coinalarm_matcher::{IndexSettings, MatcherConfig};
use coinalarm_runtime::Config;
use coinalarm_runtime::nats::{connect_once, jetstream as jetstream_context};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use jiff::{SignedDuration, Timestamp};
use proto_events::domain::{AlertId, MarketCode, NatsName};
use proto_events::events::{AlertCondition, AlertSpec, ChangeBasis, RepeatPolicy};
use proto_events::{Category, Event, Site, envelope};
use serde::Serialize;

use crate::table;
use diff::{ActualTrigger, Differences, Dispatches, FiringReport};
use sandbox::{AlertEvent, Sandbox};

/// Exit code when the replay found differences.
const FOUND_DIFFERENCE: u8 = 3;
/// The shortest warm-up: enough for every active market's last price and the matcher's replay buffer.
const MIN_WARM_UP: SignedDuration = SignedDuration::from_mins(10);
/// Added to the largest rolling window: the window start is exact to one bucket (at most 60 s).
const WINDOW_MARGIN: SignedDuration = SignedDuration::from_mins(2);
/// Ticks are read until one traded this long after `--to` (stored order is only nearly trade order).
const TICK_SLACK: SignedDuration = SignedDuration::from_mins(1);
/// Dispatches of the window's triggers are stored after them; a margin for clocks.
const DISPATCH_SLACK: SignedDuration = SignedDuration::from_mins(1);
/// How long a read may wait for its next batch before it is declared stuck.
const READ_STALL: Duration = Duration::from_secs(30);
/// Messages handed on together from a read.
const CHUNK: usize = 2_048;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Start of the window (inclusive): RFC 3339 (`2026-11-22T01:00:00Z`), `now`, or relative (`-2h`,
    /// `now-90m`).
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
    pub from: Timestamp,
    /// End of the window (exclusive), same forms; default now.
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
    pub to: Option<Timestamp>,
    /// Only alerts on this market (repeatable), e.g. `KRW-BTC`.
    #[arg(long = "market", value_parser = parse_market)]
    pub markets: Vec<MarketCode>,
    /// Only this alert (repeatable).
    #[arg(long = "alert", value_parser = parse_alert)]
    pub alerts: Vec<AlertId>,
    /// The site whose streams are read; default the configured site.
    #[arg(long, value_parser = parse_site)]
    pub site: Option<Site>,
    /// A trigger or first SMS later than this after its crossing tick is reported late: seconds, or a
    /// duration such as `500ms`, `2m`.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub late_after: SignedDuration,
    #[arg(long)]
    pub json: bool,
}

/// What a replay found, as printed with `--json`.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub site: Site,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Ticks were read from here (the warm-up before `from`).
    pub ticks_from: Timestamp,
    pub late_after_seconds: f64,
    /// Alerts selected by `--alert` / `--market` (all alerts otherwise).
    pub alerts: usize,
    pub ticks_read: u64,
    pub ticks_in_window: u64,
    pub elapsed_seconds: f64,
    pub ticks_per_second: f64,
    /// Trade time replayed per second of this run.
    pub times_real_time: f64,
    pub clean: bool,
    #[serde(flatten)]
    pub differences: Differences,
}

pub async fn run(config: &Config, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let to = args.to.unwrap_or_else(Timestamp::now);
    if args.from >= to {
        anyhow::bail!("--from ({}) must be before --to ({to})", args.from);
    }
    let site = args.site.unwrap_or(config.site);
    let matcher: MatcherConfig = config
        .section(coinalarm_matcher::NAME)
        .context("reading the [matcher] settings")?;
    let client = connect_once(&config.nats, site, "admin")
        .await
        .with_context(|| format!("connecting to {site}'s NATS"))?;
    let context = jetstream_context(client, config.nats.request_timeout);
    let report = replay(&context, site, &matcher, &args, to).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FOUND_DIFFERENCE)
    })
}

/// Runs the replay against one site's streams.
pub async fn replay(
    context: &jetstream::Context,
    site: Site,
    matcher: &MatcherConfig,
    args: &ReplayArgs,
    to: Timestamp,
) -> anyhow::Result<ReplayReport> {
    let started = Instant::now();
    let from = args.from;

    let alert_events = read_alert_events(context).await?;
    let selection = Selection::of(&alert_events, &args.alerts, &args.markets);
    let alert_events: Vec<AlertEvent> = alert_events
        .into_iter()
        .filter(|event| alert_id_of(&event.event).is_some_and(|id| selection.alerts.contains(id)))
        .collect();
    let warm_up = warm_up(&alert_events);
    let look_back = warm_up.max(largest_cooldown(&alert_events)) + WINDOW_MARGIN;
    let ticks_from = from - warm_up;

    let actual = read_triggers(context, &selection.alerts, from - look_back).await?;
    let mut sandbox = Sandbox::new(
        IndexSettings {
            site,
            tick_stream: NatsName::parse(Category::Ticks.aggregate_stream())
                .context("the tick stream name")?,
            replay_window: SignedDuration::try_from(matcher.replay_window)
                .context("[matcher] replay_window")?,
            replay_ticks_max: matcher.replay_ticks_max,
        },
        from,
        to,
        alert_events,
        actual.iter().map(|actual| actual.trigger.clone()).collect(),
    );

    let tick_filters = if args.markets.is_empty() && args.alerts.is_empty() {
        Vec::new()
    } else {
        selection
            .markets
            .iter()
            .map(|market| format!("{}.*.{}", Category::Ticks.token(), market.as_str()))
            .collect()
    };
    let ticks = if selection.alerts.is_empty() {
        TickCounts::default()
    } else {
        read_ticks(context, &mut sandbox, tick_filters, ticks_from, to).await?
    };
    let outcome = sandbox.finish();

    let mut dispatches = Dispatches::default();
    let (mut messages, pending) = open(
        context,
        Category::Dispatch.aggregate_stream(),
        by_start_time(from - DISPATCH_SLACK)?,
        Vec::new(),
    )
    .await?;
    drain(&mut messages, "DISPATCH", pending, |message| {
        if let Ok(envelope) = envelope::decode(&message.payload) {
            dispatches.take(&envelope.data);
        }
        true
    })
    .await?;

    let in_window = diff::actual_in_window(&actual, &outcome.tick_times, from, to);
    let differences = diff::compare(
        &outcome.expected,
        &in_window,
        &outcome.tick_times,
        &dispatches,
        args.late_after,
    );
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let replayed = ticks
        .last_traded
        .zip(ticks.first_traded)
        .map(|(last, first)| last.duration_since(first).as_secs_f64().max(0.0))
        .unwrap_or(0.0);
    Ok(ReplayReport {
        site,
        from,
        to,
        ticks_from,
        late_after_seconds: args.late_after.as_secs_f64(),
        alerts: selection.alerts.len(),
        ticks_read: ticks.read,
        ticks_in_window: outcome.ticks_in_window,
        elapsed_seconds: elapsed,
        ticks_per_second: ticks.read as f64 / elapsed,
        times_real_time: replayed / elapsed,
        clean: differences.is_clean(),
        differences,
    })
}

/// Which alerts the replay covers, and the markets their definitions read.
struct Selection {
    alerts: HashSet<AlertId>,
    markets: BTreeSet<MarketCode>,
}

impl Selection {
    fn of(
        events: &[AlertEvent],
        only_alerts: &[AlertId],
        only_markets: &[MarketCode],
    ) -> Selection {
        let mut markets_of: HashMap<&AlertId, BTreeSet<&MarketCode>> = HashMap::new();
        for event in events {
            let Some(alert_id) = alert_id_of(&event.event) else {
                continue;
            };
            let markets = markets_of.entry(alert_id).or_default();
            if let Some(spec) = spec_of(&event.event) {
                markets.extend(spec.condition.markets());
            }
        }
        let mut selection = Selection {
            alerts: HashSet::new(),
            markets: BTreeSet::new(),
        };
        for (alert_id, markets) in markets_of {
            let wanted_alert = only_alerts.is_empty() || only_alerts.contains(alert_id);
            let wanted_market = only_markets.is_empty()
                || markets.iter().any(|market| only_markets.contains(market));
            if wanted_alert && wanted_market {
                selection.alerts.insert(alert_id.clone());
                selection.markets.extend(markets.into_iter().cloned());
            }
        }
        // `--market` alone also reads that market's ticks for scheduled alerts that name several.
        selection.markets.extend(only_markets.iter().cloned());
        selection
    }
}

fn alert_id_of(event: &Event) -> Option<&AlertId> {
    match event {
        Event::AlertCreated(created) => Some(&created.alert_id),
        Event::AlertUpdated(updated) => Some(&updated.alert_id),
        Event::AlertPaused(paused) => Some(&paused.alert_id),
        Event::AlertResumed(resumed) => Some(&resumed.alert_id),
        Event::AlertDeleted(deleted) => Some(&deleted.alert_id),
        _ => None,
    }
}

fn spec_of(event: &Event) -> Option<&AlertSpec> {
    match event {
        Event::AlertCreated(created) => Some(&created.spec),
        Event::AlertUpdated(updated) => Some(&updated.spec),
        _ => None,
    }
}

/// The ticks needed before `--from`: the largest rolling window in use plus a bucket's margin, at least
/// [`MIN_WARM_UP`].
fn warm_up(events: &[AlertEvent]) -> SignedDuration {
    let largest_window = events
        .iter()
        .filter_map(|event| match &spec_of(&event.event)?.condition {
            AlertCondition::ChangeRate(change) => match change.basis {
                ChangeBasis::Daily => None,
                ChangeBasis::Rolling5Minutes => Some(SignedDuration::from_mins(5)),
                ChangeBasis::Rolling1Hour => Some(SignedDuration::from_hours(1)),
                ChangeBasis::Rolling24Hours => Some(SignedDuration::from_hours(24)),
            },
            _ => None,
        })
        .max();
    largest_window
        .map(|window| window + WINDOW_MARGIN)
        .unwrap_or_default()
        .max(MIN_WARM_UP)
}

fn largest_cooldown(events: &[AlertEvent]) -> SignedDuration {
    events
        .iter()
        .filter_map(|event| match spec_of(&event.event)?.repeat {
            RepeatPolicy::Once => None,
            RepeatPolicy::Repeat { cooldown_seconds } => {
                Some(SignedDuration::from_secs(i64::from(cooldown_seconds.get())))
            }
        })
        .max()
        .unwrap_or_default()
}

async fn read_alert_events(context: &jetstream::Context) -> anyhow::Result<Vec<AlertEvent>> {
    let name = Category::Alerts.aggregate_stream();
    let (mut messages, pending) = open(context, name, DeliverPolicy::All, Vec::new()).await?;
    let mut events = Vec::new();
    drain(&mut messages, name, pending, |message| {
        if let Ok(envelope) = envelope::decode(&message.payload)
            && alert_id_of(&envelope.data).is_some()
        {
            events.push(AlertEvent {
                time: envelope.time,
                origin: envelope.origin_site,
                event: envelope.data,
            });
        }
        true
    })
    .await?;
    Ok(events)
}

/// The selected alerts' triggers stored since `since`, plus the last one of every alert (for `once`
/// alerts and long cooldowns), each once.
async fn read_triggers(
    context: &jetstream::Context,
    alerts: &HashSet<AlertId>,
    since: Timestamp,
) -> anyhow::Result<Vec<ActualTrigger>> {
    let name = Category::Triggers.aggregate_stream();
    let mut by_id: BTreeMap<String, ActualTrigger> = BTreeMap::new();
    for (deliver_policy, filter) in [
        (
            DeliverPolicy::LastPerSubject,
            vec![Category::Triggers.aggregate_filter()],
        ),
        (by_start_time(since)?, Vec::new()),
    ] {
        let (mut messages, pending) = open(context, name, deliver_policy, filter).await?;
        drain(&mut messages, name, pending, |message| {
            if let Ok(envelope) = envelope::decode(&message.payload)
                && let Event::TriggerFired(trigger) = envelope.data
                && alerts.contains(&trigger.alert_id)
            {
                by_id
                    .entry(trigger.trigger_id.as_str().to_owned())
                    .or_insert(ActualTrigger {
                        trigger,
                        written_at: envelope.time,
                    });
            }
            true
        })
        .await?;
    }
    Ok(by_id.into_values().collect())
}

#[derive(Debug, Default)]
struct TickCounts {
    read: u64,
    first_traded: Option<Timestamp>,
    last_traded: Option<Timestamp>,
}

/// Streams the ticks through the sandbox, with a progress bar over trade time.
async fn read_ticks(
    context: &jetstream::Context,
    sandbox: &mut Sandbox,
    filters: Vec<String>,
    ticks_from: Timestamp,
    to: Timestamp,
) -> anyhow::Result<TickCounts> {
    let name = Category::Ticks.aggregate_stream();
    let (mut messages, pending) = open(context, name, by_start_time(ticks_from)?, filters).await?;
    let stop_after = to + TICK_SLACK;
    let span = stop_after.duration_since(ticks_from).as_secs().max(1) as u64;
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(span);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} replaying ticks [{bar:40}] {percent}% of the window, {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut counts = TickCounts::default();
    drain(&mut messages, name, pending, |message| {
        let Ok(envelope) = envelope::decode(&message.payload) else {
            return true;
        };
        let Event::TickObserved(tick) = &envelope.data else {
            return true;
        };
        let traded_at = tick.trade_timestamp;
        if traded_at > stop_after {
            return false;
        }
        counts.read += 1;
        counts.first_traded = counts.first_traded.min(Some(traded_at)).or(Some(traded_at));
        counts.last_traded = counts.last_traded.max(Some(traded_at));
        let sequence = message
            .info()
            .map(|info| info.stream_sequence)
            .unwrap_or_default();
        sandbox.on_tick(tick, envelope.id.as_str(), sequence, envelope.time);
        if counts.read.is_multiple_of(4_096) {
            let position = traded_at.duration_since(ticks_from).as_secs().max(0) as u64;
            progress.set_position(position.min(span));
            progress.set_message(format!("{} ticks", counts.read));
        }
        true
    })
    .await?;
    progress.finish_and_clear();
    Ok(counts)
}

fn by_start_time(start: Timestamp) -> anyhow::Result<DeliverPolicy> {
    let start_time = async_nats::datetime::from_nanos(start.as_nanosecond())
        .map_err(|error| anyhow::anyhow!("{start} as a start time: {error}"))?;
    Ok(DeliverPolicy::ByStartTime { start_time })
}

/// An ordered consumer on `stream` (all of it when `filter_subjects` is empty) and how many messages it
/// has to deliver as of now.
async fn open(
    context: &jetstream::Context,
    stream: &str,
    deliver_policy: DeliverPolicy,
    filter_subjects: Vec<String>,
) -> anyhow::Result<(jetstream::consumer::pull::Ordered, u64)> {
    let handle = context
        .get_stream(stream)
        .await
        .with_context(|| format!("opening {stream}"))?;
    let consumer = handle
        .create_consumer(OrderedConfig {
            deliver_policy,
            filter_subjects,
            description: Some("coinalarm replay".to_owned()),
            ..Default::default()
        })
        .await
        .with_context(|| format!("reading {stream}"))?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .with_context(|| format!("reading {stream}"))?;
    Ok((messages, pending))
}

/// Hands the next `pending` messages to `each` in stream order, in chunks, until it returns false.
async fn drain(
    messages: &mut jetstream::consumer::pull::Ordered,
    stream: &str,
    pending: u64,
    mut each: impl FnMut(&jetstream::Message) -> bool,
) -> anyhow::Result<()> {
    let mut remaining = pending;
    let mut chunks = messages.ready_chunks(CHUNK);
    while remaining > 0 {
        let chunk = match tokio::time::timeout(READ_STALL, chunks.next()).await {
            Err(_) | Ok(None) => anyhow::bail!(
                "reading {stream} stalled: nothing for {READ_STALL:?} with {remaining} messages to go"
            ),
            Ok(Some(chunk)) => chunk,
        };
        for result in chunk {
            let message = result.with_context(|| format!("reading {stream}"))?;
            remaining = remaining.saturating_sub(1);
            if !each(&message) {
                return Ok(());
            }
            if remaining == 0 {
                break;
            }
        }
    }
    Ok(())
}

fn render(report: &ReplayReport) -> String {
    let differences = &report.differences;
    let mut out = format!(
        "replay at {} of {} .. {} (ticks from {}): {} alert(s), {} ticks read ({} in the window) in {:.1} s, {:.0} ticks/s\n",
        report.site,
        report.from,
        report.to,
        report.ticks_from,
        report.alerts,
        report.ticks_read,
        report.ticks_in_window,
        report.elapsed_seconds,
        report.ticks_per_second,
    );
    out.push_str(&format!(
        "matched {}, missed {}, extra {}, duplicated {}, late {} (after {} s)\n",
        differences.matched,
        differences.missed.len(),
        differences.extra.len(),
        differences.duplicated.len(),
        differences.late.len(),
        report.late_after_seconds,
    ));
    let firing_header = [
        "trigger", "alert", "version", "market", "price", "at", "tick",
    ];
    let firing_row = |firing: &FiringReport| {
        vec![
            firing.trigger_id.clone(),
            firing.alert_id.as_str().to_owned(),
            firing.alert_version.to_string(),
            firing.market.clone().unwrap_or_default(),
            firing.price.clone().unwrap_or_default(),
            firing.at.map(|at| at.to_string()).unwrap_or_default(),
            firing.tick_id.clone().unwrap_or_default(),
        ]
    };
    for (title, firings) in [
        (
            "MISSED: the sandbox fires, no trigger was computed",
            &differences.missed,
        ),
        (
            "EXTRA: a trigger the sandbox does not produce",
            &differences.extra,
        ),
    ] {
        if firings.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{title}\n"));
        let rows: Vec<Vec<String>> = firings.iter().map(firing_row).collect();
        out.push_str(&table::render(&firing_header, &rows));
    }
    if !differences.duplicated.is_empty() {
        out.push_str("\nDUPLICATED: one firing, more than one trigger or SMS\n");
        let rows: Vec<Vec<String>> = differences
            .duplicated
            .iter()
            .map(|duplicate| {
                let sends: Vec<String> = duplicate
                    .sends
                    .iter()
                    .map(|send| {
                        format!(
                            "{} by {} (attempt {}) at {}",
                            send.dispatch_id, send.site, send.attempt, send.sent_at
                        )
                    })
                    .collect();
                vec![
                    duplicate.trigger_ids.join(" "),
                    duplicate.firing.alert_id.as_str().to_owned(),
                    duplicate.sends.len().to_string(),
                    sends.join("; "),
                ]
            })
            .collect();
        out.push_str(&table::render(&["trigger", "alert", "sms", "sends"], &rows));
    }
    if !differences.late.is_empty() {
        out.push_str("\nLATE: trigger or first SMS after the crossing tick\n");
        let rows: Vec<Vec<String>> = differences
            .late
            .iter()
            .map(|late| {
                vec![
                    late.firing.trigger_id.clone(),
                    late.firing.alert_id.as_str().to_owned(),
                    format!("{:.3} s", late.trigger_after_seconds),
                    late.sms_after_seconds
                        .map(|seconds| format!("{seconds:.3} s"))
                        .unwrap_or_else(|| "no sms".to_owned()),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["trigger", "alert", "trigger after", "sms after"],
            &rows,
        ));
    }
    out
}

/// RFC 3339, `now`, or a duration before now: `-2h`, `now-90m`, `-PT30M`.
fn parse_time(input: &str) -> Result<Timestamp, String> {
    let input = input.trim();
    let now = Timestamp::now();
    if input == "now" {
        return Ok(now);
    }
    let relative = input.strip_prefix("now").unwrap_or(input);
    if let Some(ago) = relative.strip_prefix('-') {
        let ago: SignedDuration = ago
            .trim()
            .parse()
            .map_err(|error| format!("`{input}`: {error}"))?;
        return now
            .checked_sub(ago)
            .map_err(|error| format!("`{input}`: {error}"));
    }
    input.parse::<Timestamp>().map_err(|error| {
        format!("`{input}` is not an RFC 3339 time (2026-11-22T01:00:00Z), `now` or `-2h`: {error}")
    })
}

fn parse_duration(input: &str) -> Result<SignedDuration, String> {
    let input = input.trim();
    let duration = match input.parse::<f64>() {
        Ok(seconds) => {
            SignedDuration::try_from_secs_f64(seconds).map_err(|error| error.to_string())
        }
        Err(_) => input
            .parse::<SignedDuration>()
            .map_err(|error| error.to_string()),
    }
    .map_err(|error| format!("`{input}`: {error}"))?;
    if duration.is_negative() {
        return Err(format!("`{input}` is negative"));
    }
    Ok(duration)
}

fn parse_market(input: &str) -> Result<MarketCode, String> {
    MarketCode::parse(input).map_err(|error| error.to_string())
}

fn parse_alert(input: &str) -> Result<AlertId, String> {
    AlertId::parse(input).map_err(|error| error.to_string())
}

fn parse_site(input: &str) -> Result<Site, String> {
    input
        .parse()
        .map_err(|error: proto_events::site::UnknownSite| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_now_or_before_now() {
        let parsed = parse_time("2026-11-22T01:00:00Z").unwrap();
        assert_eq!(parsed.to_string(), "2026-11-22T01:00:00Z");
        let before = Timestamp::now();
        let two_hours_ago = parse_time("-2h").unwrap();
        let distance = before.duration_since(two_hours_ago);
        assert!(distance >= SignedDuration::from_hours(2) - SignedDuration::from_secs(5));
        assert!(distance <= SignedDuration::from_hours(2) + SignedDuration::from_secs(5));
        assert!(parse_time("now-90m").unwrap() < Timestamp::now());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn late_after_takes_seconds_or_a_duration() {
        assert_eq!(parse_duration("5").unwrap(), SignedDuration::from_secs(5));
        assert_eq!(
            parse_duration("500ms").unwrap(),
            SignedDuration::from_millis(500)
        );
        assert_eq!(parse_duration("2m").unwrap(), SignedDuration::from_mins(2));
        assert!(parse_duration("-1").is_err());
    }
}
