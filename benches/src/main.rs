//! `coinalarm-bench`: measures the parts of CoinAlarm against the machine's own limits in one run, so
//! the figures are ratios that survive a noisy shared machine, and prints them as Markdown tables for
//! `BENCHMARKS.md` (`scripts/bench.sh` rewrites the file).

mod jetstream;
mod machine;
mod matcher;
mod pipeline;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "coinalarm-bench", about = "CoinAlarm benchmarks")]
struct Cli {
    /// What to measure.
    #[arg(value_enum, default_value_t = Suite::All)]
    suite: Suite,
    /// Largest alert count for the matcher (1k, 100k and this).
    #[arg(long, default_value_t = 1_000_000)]
    max_alerts: usize,
    /// Messages for the raw JetStream baseline.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Alerts (and SMS) in the pipeline burst.
    #[arg(long, default_value_t = 2_000)]
    notifications: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    All,
    Jetstream,
    Matcher,
    Pipeline,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    println!("{}", machine::describe());
    let mut raw_publish = None;
    if matches!(cli.suite, Suite::All | Suite::Jetstream | Suite::Pipeline) {
        let baseline = runtime.block_on(jetstream::measure(cli.messages))?;
        raw_publish = Some(baseline.publish_per_second);
        println!("{}", jetstream::report(&baseline));
    }
    if matches!(cli.suite, Suite::All | Suite::Pipeline) {
        println!(
            "{}",
            runtime.block_on(pipeline::run(cli.notifications, raw_publish))?
        );
    }
    if matches!(cli.suite, Suite::All | Suite::Matcher) {
        println!("{}", matcher::run(cli.max_alerts)?);
    }
    Ok(())
}
