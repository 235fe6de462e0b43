//! `coinalarm-bench`: measures the parts of CoinAlarm against the machine's own limits in one run, so
//! the figures are ratios that survive a noisy shared machine, and prints them as Markdown tables;
//! with `--write BENCHMARKS.md` it also replaces each table it measured between that file's
//! `<!-- bench:NAME -->` markers (`scripts/bench.sh all` does this).

// The services' binaries use the same allocator: the bench measures what runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod baselines;
mod cpu;
mod jetstream;
mod machine;
mod matcher;
mod pipeline;
mod replay;
mod report;

use std::io::Read as _;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "coinalarm-bench", about = "CoinAlarm benchmarks")]
struct Cli {
    /// What to measure (`section` reads one section's Markdown from stdin, for `--write`).
    #[arg(value_enum, default_value_t = Suite::All)]
    suite: Suite,
    /// The section name for `section`.
    #[arg(long)]
    name: Option<String>,
    /// Replace the measured tables in this Markdown file, between `<!-- bench:NAME -->` and
    /// `<!-- /bench:NAME -->`.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Largest alert count for the matcher and its cold start (1k, 100k and this).
    #[arg(long, default_value_t = 1_000_000)]
    max_alerts: usize,
    /// Messages for the raw JetStream baseline.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Notifications offered in the sustained pipeline run.
    #[arg(long, default_value_t = 30_000)]
    notifications: usize,
    /// Notifications per second offered in the sustained pipeline run (the target).
    #[arg(long, default_value_t = 10_000.0)]
    offered_rate: f64,
    /// Notifications per second offered in the latency run, and its length in seconds.
    #[arg(long, default_value_t = 1_000)]
    latency_rate: usize,
    #[arg(long, default_value_t = 20)]
    latency_seconds: usize,
    /// Rows for the Postgres baseline.
    #[arg(long, default_value_t = 200_000)]
    rows: usize,
    /// Requests for the loopback HTTP baseline.
    #[arg(long, default_value_t = 50_000)]
    requests: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    All,
    Jetstream,
    Baselines,
    Matcher,
    ColdStart,
    Pipeline,
    Latency,
    /// `coinalarm replay` over a synthetic stretch of ticks (not part of `all`: it runs the release
    /// `coinalarm` binary).
    Replay,
    Section,
}

impl Suite {
    fn includes(self, part: Suite) -> bool {
        self == Suite::All || self == part
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The services started in this process log like `coinalarm serve` does (`RUST_LOG=info` shows the
    // matcher's rebuild); quiet by default so the tables stay readable.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    let mut sections = report::Sections::default();
    if cli.suite == Suite::Section {
        let name = cli
            .name
            .clone()
            .ok_or_else(|| anyhow::anyhow!("`section` needs --name"))?;
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        sections.add(&name, text);
        return sections.finish(cli.write.as_deref());
    }
    sections.add("machine", format!("{}\n", machine::describe()));

    let mut raw_publish = None;
    if cli.suite.includes(Suite::Jetstream)
        || cli.suite.includes(Suite::Pipeline)
        || cli.suite.includes(Suite::Baselines)
    {
        let baseline = runtime.block_on(jetstream::measure(cli.messages))?;
        raw_publish = Some(baseline.publish_per_second);
        sections.add("jetstream", jetstream::report(&baseline));
    }
    if cli.suite.includes(Suite::Baselines) {
        let postgres = runtime.block_on(baselines::postgres(cli.rows, 1_000))?;
        let http = runtime.block_on(baselines::http(cli.requests, 64))?;
        sections.add("baselines", baselines::report(Some(&postgres), Some(&http)));
    }
    if cli.suite.includes(Suite::Pipeline) {
        let result = runtime.block_on(pipeline::throughput(cli.notifications, cli.offered_rate))?;
        let raw = raw_publish.unwrap_or(f64::NAN);
        sections.add("pipeline", pipeline::throughput_report(&result, raw));
    }
    if cli.suite.includes(Suite::Latency) {
        let result = runtime.block_on(pipeline::latency(cli.latency_rate, cli.latency_seconds))?;
        sections.add("latency", pipeline::latency_report(&result));
    }
    if cli.suite.includes(Suite::Matcher) {
        sections.add("matcher", matcher::run(cli.max_alerts)?);
    }
    if cli.suite.includes(Suite::ColdStart) {
        let mut results = Vec::new();
        for count in matcher::cold_start_counts(cli.max_alerts) {
            results.push(runtime.block_on(matcher::cold_start(count))?);
        }
        sections.add("cold-start", matcher::cold_start_report(&results));
    }
    if cli.suite == Suite::Replay {
        let result = runtime.block_on(replay::measure())?;
        sections.add("replay", replay::report(&result));
    }
    sections.finish(cli.write.as_deref())
}
