//! `coinalarm projections status|rebuild`: where each read model stands against its stream, and
//! rebuilding read models from the streams into fresh tables that are then swapped in atomically
//! while the live projector and the API keep running (see `coinalarm_projector::swap`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use coinalarm_projector::swap::{SwapOptions, SwapReport};
use coinalarm_projector::{Projection, RebuildOptions, RebuildProgress, RebuildReport, Target};
use coinalarm_runtime::Config;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::table;

/// Exit code for "ran fine, but found a difference" (as `nats apply --dry-run` and `sites status`).
const FOUND_DIFFERENCE: u8 = 3;

/// Prefix of the schemas the replaced tables are kept in.
const ARCHIVE_PREFIX: &str = "projections_old_";

/// Prefix of the schemas rebuilds write into before the swap.
const REBUILD_PREFIX: &str = "projections_rebuild_";

#[derive(Debug, clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's checkpoint against its stream's last position, and the archived tables of
    /// earlier rebuilds.
    Status(StatusArgs),
    /// Rebuild read models from the streams into fresh tables, compare them with the live ones and
    /// swap them in atomically. Exits 3 when the comparison differs and nothing was swapped.
    Rebuild(RebuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Rebuild only this projection (repeatable): users, alerts, triggers, dispatch, ticks,
    /// dead_letters. Projections sharing a table come along (users and alerts share
    /// `aggregate_events`).
    #[arg(long = "only", value_parser = parse_projection)]
    pub only: Vec<Projection>,
    /// Swap even when the rebuilt tables differ from the live ones.
    #[arg(long)]
    pub force: bool,
    /// Do not compare the rebuilt tables with the live ones before swapping.
    #[arg(long)]
    pub no_verify: bool,
    /// Events per transaction while rebuilding.
    #[arg(long, default_value_t = 1_000)]
    pub batch_size: usize,
    /// Seconds to wait for a lock held by a reader or a projector batch before giving up the swap.
    #[arg(long, default_value_t = 30)]
    pub lock_timeout: u64,
    #[arg(long)]
    pub json: bool,
}

fn parse_projection(name: &str) -> Result<Projection, String> {
    Projection::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
        format!("unknown projection {name:?}; one of {}", known.join(", "))
    })
}

pub async fn run(config: &Config, command: ProjectionsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProjectionsCommand::Status(args) => status(config, &args).await,
        ProjectionsCommand::Rebuild(args) => rebuild(config, &args).await,
    }
}

struct Connections {
    pool: deadpool_postgres::Pool,
    jetstream: async_nats::jetstream::Context,
}

async fn connect(config: &Config) -> anyhow::Result<Connections> {
    let pool = coinalarm_runtime::postgres::connect_pool(&config.postgres)
        .await
        .context("connecting to postgres")?;
    // As the projector: a rebuild reads nothing the live service cannot.
    let client =
        coinalarm_runtime::nats::connect_once(&config.nats, config.site, coinalarm_projector::NAME)
            .await
            .with_context(|| format!("connecting to the {} site", config.site))?;
    let jetstream = coinalarm_runtime::nats::jetstream(client, config.nats.request_timeout);
    Ok(Connections { pool, jetstream })
}

#[derive(Debug, Serialize)]
struct StatusOutput {
    site: String,
    projections: Vec<StatusRow>,
    /// Schemas holding the tables replaced by earlier rebuilds.
    archives: Vec<String>,
    /// Schemas of rebuilds that did not swap (refused or interrupted).
    unfinished_rebuilds: Vec<String>,
}

#[derive(Debug, Serialize)]
struct StatusRow {
    projection: Projection,
    stream: &'static str,
    checkpoint: u64,
    stream_last_sequence: u64,
    lag: u64,
}

async fn status(config: &Config, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let connections = connect(config).await?;
    let statuses =
        coinalarm_projector::status(&connections.jetstream, &connections.pool, &Target::public())
            .await
            .context("reading checkpoints and streams")?;
    let output = StatusOutput {
        site: config.site.to_string(),
        projections: statuses
            .iter()
            .map(|status| StatusRow {
                projection: status.projection,
                stream: status.stream,
                checkpoint: status.checkpoint,
                stream_last_sequence: status.stream_last_sequence,
                lag: status.lag(),
            })
            .collect(),
        archives: schemas_with_prefix(&connections.pool, ARCHIVE_PREFIX).await?,
        unfinished_rebuilds: schemas_with_prefix(&connections.pool, REBUILD_PREFIX).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = output
        .projections
        .iter()
        .map(|row| {
            vec![
                row.projection.to_string(),
                row.stream.to_owned(),
                row.checkpoint.to_string(),
                row.stream_last_sequence.to_string(),
                row.lag.to_string(),
            ]
        })
        .collect();
    println!("site {}", output.site);
    print!(
        "{}",
        table::render(
            &["PROJECTION", "STREAM", "CHECKPOINT", "STREAM LAST", "LAG"],
            &rows
        )
    );
    for schema in &output.archives {
        println!("archived tables in {schema} (drop with: DROP SCHEMA {schema} CASCADE)");
    }
    for schema in &output.unfinished_rebuilds {
        println!("unfinished rebuild in {schema} (drop with: DROP SCHEMA {schema} CASCADE)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn schemas_with_prefix(
    pool: &deadpool_postgres::Pool,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let client = pool.get().await.context("postgres connection")?;
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY 1",
            &[&prefix],
        )
        .await
        .context("listing schemas")?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

#[derive(Debug, Serialize)]
struct RebuildOutput {
    site: String,
    /// What was asked for, and what was rebuilt (projections sharing a table come along).
    requested: Vec<Projection>,
    projections: Vec<Projection>,
    rebuild_schema: String,
    rebuilt: Vec<RebuildSummary>,
    swap: SwapReport,
    /// How to drop the archived tables once the new ones are trusted, or the refused rebuild.
    cleanup: String,
}

#[derive(Debug, Serialize)]
struct RebuildSummary {
    projection: Projection,
    stream: &'static str,
    read: usize,
    projected: usize,
    undecodable: usize,
    checkpoint: u64,
}

async fn rebuild(config: &Config, args: &RebuildArgs) -> anyhow::Result<ExitCode> {
    let requested = if args.only.is_empty() {
        Projection::ALL.to_vec()
    } else {
        args.only.clone()
    };
    let projections = Projection::closed_selection(&requested);
    let connections = connect(config).await?;
    // To the millisecond: two rebuilds in one second must not collide on the archive's name.
    let now = jiff::Timestamp::now();
    let stamp = format!(
        "{}{:03}",
        now.strftime("%Y%m%d_%H%M%S_"),
        now.subsec_millisecond()
    );
    let rebuilt = Target::new(&format!("{REBUILD_PREFIX}{stamp}"))?;
    let archive = Target::new(&format!("{ARCHIVE_PREFIX}{stamp}"))?;
    if projections.len() != requested.len() && !args.json {
        let added: Vec<String> = projections
            .iter()
            .filter(|projection| !requested.contains(projection))
            .map(ToString::to_string)
            .collect();
        eprintln!(
            "also rebuilding {} (shares tables with what was asked)",
            added.join(", ")
        );
    }

    // 1. The bulk, without holding anything: the live projector and the API go on.
    let bars = Bars::new();
    let options = RebuildOptions {
        projections: projections.clone(),
        batch_size: args.batch_size,
        ..RebuildOptions::everything_into(rebuilt.clone())
    };
    let reports = coinalarm_projector::rebuild_with_progress(
        &connections.jetstream,
        &connections.pool,
        &options,
        &bars,
    )
    .await
    .with_context(|| format!("rebuilding into {rebuilt}"))?;
    // 2. What arrived meanwhile, still without holding anything, so the swap's own catch-up (with the
    //    live projector paused) is short.
    let again = coinalarm_projector::rebuild(&connections.jetstream, &connections.pool, &options)
        .await
        .with_context(|| format!("catching up {rebuilt}"))?;
    bars.clear();
    // 3. Pause the live projector, bring both copies to one position, compare, swap.
    let swap = coinalarm_projector::swap(
        &connections.jetstream,
        &connections.pool,
        &SwapOptions {
            rebuilt: rebuilt.clone(),
            archive: archive.clone(),
            projections: projections.clone(),
            verify: !args.no_verify,
            force: args.force,
            batch_size: args.batch_size,
            idle_timeout: options.idle_timeout,
            lock_timeout: Duration::from_secs(args.lock_timeout.max(1)),
        },
    )
    .await
    .context("swapping the rebuilt tables in")?;

    let cleanup = if swap.swapped {
        format!(
            "the replaced tables are kept in schema {archive}; drop them with: DROP SCHEMA {archive} CASCADE"
        )
    } else {
        format!(
            "nothing was swapped; the rebuilt tables are in schema {rebuilt} for inspection; drop them with: DROP SCHEMA {rebuilt} CASCADE"
        )
    };
    let output = RebuildOutput {
        site: config.site.to_string(),
        requested,
        projections,
        rebuild_schema: rebuilt.to_string(),
        rebuilt: summarize(&reports, &again),
        swap,
        cleanup,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        print_rebuild(&output);
    }
    Ok(if output.swap.swapped {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FOUND_DIFFERENCE)
    })
}

fn summarize(first: &[RebuildReport], second: &[RebuildReport]) -> Vec<RebuildSummary> {
    first
        .iter()
        .map(|report| {
            let later = second
                .iter()
                .find(|again| again.projection == report.projection);
            RebuildSummary {
                projection: report.projection,
                stream: report.stream,
                read: report.read + later.map_or(0, |again| again.read),
                projected: report.projected + later.map_or(0, |again| again.projected),
                undecodable: report.undecodable + later.map_or(0, |again| again.undecodable),
                checkpoint: later.map_or(report.checkpoint, |again| again.checkpoint),
            }
        })
        .collect()
}

fn print_rebuild(output: &RebuildOutput) {
    let rows: Vec<Vec<String>> = output
        .swap
        .projections
        .iter()
        .map(|catch_up| {
            let rebuilt = output
                .rebuilt
                .iter()
                .find(|summary| summary.projection == catch_up.projection);
            vec![
                catch_up.projection.to_string(),
                catch_up.projection.stream().to_owned(),
                rebuilt.map_or(0, |summary| summary.read).to_string(),
                rebuilt.map_or(0, |summary| summary.projected).to_string(),
                catch_up.applied_to_rebuilt.to_string(),
                catch_up.position.to_string(),
            ]
        })
        .collect();
    println!(
        "site {}: rebuilt into {}",
        output.site, output.rebuild_schema
    );
    print!(
        "{}",
        table::render(
            &[
                "PROJECTION",
                "STREAM",
                "READ",
                "PROJECTED",
                "CAUGHT UP UNDER LOCK",
                "POSITION"
            ],
            &rows
        )
    );
    match &output.swap.verification {
        None => println!("not verified (--no-verify)"),
        Some(verification) if verification.is_equal() => println!(
            "verified: {} tables equal row by row ({} rows)",
            verification.tables.len(),
            verification
                .tables
                .iter()
                .map(|table| table.live_rows)
                .sum::<i64>()
        ),
        Some(verification) => {
            println!("the rebuilt tables DIFFER from the live ones:");
            for table in verification.differing() {
                println!(
                    "  {}: {} live rows, {} rebuilt; {} only live, {} only rebuilt",
                    table.table,
                    table.live_rows,
                    table.rebuilt_rows,
                    table.only_live,
                    table.only_rebuilt
                );
                for row in &table.live_sample {
                    println!("    live:    {row}");
                }
                for row in &table.rebuilt_sample {
                    println!("    rebuilt: {row}");
                }
            }
            if output.swap.swapped {
                println!("swapped anyway (--force)");
            } else {
                println!(
                    "refusing to swap; --force swaps anyway, --no-verify skips the comparison"
                );
            }
        }
    }
    if output.swap.swapped {
        println!(
            "swapped {} tables; recreated views: {}",
            output.swap.tables.len(),
            if output.swap.views.is_empty() {
                "none".to_owned()
            } else {
                output.swap.views.join(", ")
            }
        );
    }
    println!("{}", output.cleanup);
}

/// One progress bar per projection with its ETA, on stderr; drawn only on a terminal.
struct Bars {
    multi: MultiProgress,
    bars: std::sync::Mutex<Vec<(Projection, ProgressBar)>>,
}

impl Bars {
    fn new() -> Bars {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn with_bar(&self, projection: Projection, action: impl FnOnce(&ProgressBar)) {
        let bars = self
            .bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, bar)) = bars.iter().find(|(owner, _)| *owner == projection) {
            action(bar);
        }
    }

    fn clear(&self) {
        if let Err(error) = self.multi.clear() {
            tracing::debug!(%error, "clearing the progress bars failed");
        }
    }
}

impl RebuildProgress for Bars {
    fn started(&self, projection: Projection, total: u64) {
        let bar = self.multi.add(ProgressBar::new(total));
        let style = ProgressStyle::with_template(
            "{prefix:>13} [{bar:30}] {pos}/{len} events, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(projection.name());
        self.bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((projection, bar));
    }

    fn advanced(&self, projection: Projection, read: u64) {
        self.with_bar(projection, |bar| bar.inc(read));
    }

    fn finished(&self, projection: Projection) {
        self.with_bar(projection, ProgressBar::finish);
    }
}
