//! Command-line surface of `coinalarm`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use coinalarm_runtime::Config;
use proto_events::Site;

#[derive(Debug, Parser)]
#[command(
    name = "coinalarm",
    version,
    about = "CoinAlarm: crypto price alerts by SMS"
)]
pub struct Cli {
    /// TOML configuration file; `COINALARM_*` environment variables override it.
    #[arg(long, global = true, env = "COINALARM_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run services in this process until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Set up and inspect the JetStream topology of both sites.
    #[command(subcommand)]
    Nats(NatsCommand),
    /// Postgres schema.
    #[command(subcommand)]
    Db(DbCommand),
    /// The two sites: health from their heartbeats, the link, replication, ownership and takeovers.
    #[command(subcommand)]
    Sites(SitesCommand),
    /// A local stand-in for Upbit's websocket feed (tests and the demo): replays the recorded capture or
    /// plays a seeded random walk, in Upbit's own protocol.
    FakeExchange(FakeExchangeArgs),
    /// A local stand-in for Twilio's Messages API (tests and the demo): accepts messages into a ledger
    /// (`GET /_fake/ledger`), can be told to fail, posts signed status callbacks.
    FakeTwilio(FakeTwilioArgs),
    /// Demo data for a local deployment.
    #[command(subcommand)]
    Demo(DemoCommand),
    /// Follow an alert, a dispatch or a phone number through the events of both sites.
    #[command(subcommand)]
    Trace(crate::trace::TraceCommand),
    /// Re-evaluate alerts as they were defined against the recorded ticks of a window, in a sandbox that
    /// sends nothing, and diff the result against what was actually triggered and sent.
    Replay(crate::replay::ReplayArgs),
    /// Rebuild Postgres read models from the streams into fresh tables, then swap them in.
    #[command(subcommand)]
    Projections(crate::projections::ProjectionsCommand),
    /// Dead letters: list, show, re-drive after a fix.
    #[command(subcommand)]
    Dlq(crate::dlq::DlqCommand),
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Define a demo user and repeating alerts near the fake exchange's prices, as events.
    Seed(DemoSeedArgs),
}

#[derive(Debug, Args)]
pub struct DemoSeedArgs {
    #[arg(long, default_value = "010-0000-0000")]
    pub phone: String,
    #[arg(long, default_value = "ko")]
    pub locale: String,
    /// The KRW-BTC price the alerts are placed around (the fake exchange's random walk starts here).
    #[arg(long, default_value = "95000000")]
    pub btc_price: rust_decimal::Decimal,
}

#[derive(Debug, Args)]
pub struct FakeTwilioArgs {
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub listen: std::net::SocketAddr,
    /// Name written into ledger entries (to tell a primary and a fallback fake apart).
    #[arg(long, default_value = "fake-twilio")]
    pub name: String,
    #[arg(long, default_value = "ACfake00000000000000000000000000")]
    pub account_sid: String,
    #[arg(
        long,
        env = "FAKE_TWILIO_AUTH_TOKEN",
        default_value = "fake-auth-token"
    )]
    pub auth_token: String,
    /// Do not post status callbacks.
    #[arg(long)]
    pub no_callbacks: bool,
}

#[derive(Debug, Args)]
pub struct FakeExchangeArgs {
    /// Websocket listener (`ws://<bind>/websocket/v1`).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub bind: std::net::SocketAddr,
    /// `GET /v1/market/all` listener.
    #[arg(long)]
    pub http_bind: Option<std::net::SocketAddr>,
    #[arg(long, value_enum, default_value_t = FeedKind::Walk)]
    pub feed: FeedKind,
    /// Replay speed: `original`, a factor such as `10`, or `max`.
    #[arg(long, default_value = "original")]
    pub speed: String,
    /// Random walk markets and start prices, e.g. `KRW-BTC=95000000` (repeatable).
    #[arg(long = "market")]
    pub markets: Vec<coinalarm_ingest::fake_exchange::WalkMarket>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Random walk trades per second per market.
    #[arg(long, default_value_t = 2.0)]
    pub ticks_per_second: f64,
    /// Largest relative move of an ordinary tick (`0.001` = 0.1 %).
    #[arg(long, default_value = "0.001")]
    pub volatility: rust_decimal::Decimal,
    /// Chance per tick of a jump.
    #[arg(long, default_value_t = 0.01)]
    pub jump_probability: f64,
    /// Relative size of a jump (`0.03` = 3 %).
    #[arg(long, default_value = "0.03")]
    pub jump_size: rust_decimal::Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FeedKind {
    /// The vendored Upbit capture, looping.
    Replay,
    /// A seeded random walk with jumps.
    Walk,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Services to run; `all` runs every one of them.
    #[arg(required = true, value_enum)]
    pub services: Vec<ServiceName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum ServiceName {
    All,
    Ingest,
    Matcher,
    Notifier,
    Dispatcher,
    Projector,
    Api,
}

#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Create or update streams and consumers to match the definitions; report drift.
    Apply(ApplyArgs),
    /// Each stream's size and each aggregate source's replication lag, at both sites.
    Status(StatusArgs),
    /// Write the definition files (`nats/jetstream/<site>/...`) from the code, or check them.
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Only this site (each site's definitions are self-contained); default both.
    #[arg(long, value_parser = parse_site)]
    pub site: Option<Site>,
    /// Report what would change without changing it; exits 3 when something would.
    #[arg(long)]
    pub dry_run: bool,
    /// Stream and consumer replicas (3 for production clusters).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
    /// Exit 3 unless every stream exists and every source has caught up.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[arg(long, default_value = "nats/jetstream")]
    pub out: PathBuf,
    /// Compare instead of write; exits 3 when the files differ from the code.
    #[arg(long)]
    pub check: bool,
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
}

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Each site's health, link state, replication lag per stream, ownership and takeover counts.
    Status(SitesStatusArgs),
}

#[derive(Debug, Args)]
pub struct SitesStatusArgs {
    #[arg(long)]
    pub json: bool,
    /// Exit 3 unless both sites beat, see each other, the link is up and nothing lags.
    #[arg(long)]
    pub check: bool,
    /// How far back ownership and takeovers are counted, in seconds.
    #[arg(long = "window", default_value_t = 3600)]
    pub window_seconds: u64,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the database if missing and run pending migrations.
    Migrate,
}

fn parse_site(value: &str) -> Result<Site, String> {
    value
        .parse()
        .map_err(|error: proto_events::site::UnknownSite| error.to_string())
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let load_config = || Config::load(cli.config.as_deref()).context("loading configuration");
    match cli.command {
        Command::Serve(args) => {
            let config = load_config()?;
            crate::serve::run(config, &args.services).await
        }
        Command::Nats(NatsCommand::Apply(args)) => crate::nats::apply(&load_config()?, &args).await,
        Command::Nats(NatsCommand::Status(args)) => {
            crate::nats::status(&load_config()?, &args).await
        }
        Command::Nats(NatsCommand::Render(args)) => crate::nats::render(&args),
        Command::Db(DbCommand::Migrate) => crate::db::migrate(&load_config()?).await,
        Command::Sites(SitesCommand::Status(args)) => {
            crate::sites::status(&load_config()?, &args).await
        }
        Command::FakeExchange(args) => crate::fakes::exchange(&load_config()?, args).await,
        Command::FakeTwilio(args) => crate::fakes::twilio(&load_config()?, args).await,
        Command::Demo(DemoCommand::Seed(args)) => crate::demo::seed(&load_config()?, &args).await,
        Command::Trace(command) => crate::trace::run(&load_config()?, command).await,
        Command::Replay(args) => crate::replay::run(&load_config()?, args).await,
        Command::Projections(command) => crate::projections::run(&load_config()?, command).await,
        Command::Dlq(command) => crate::dlq::run(&load_config()?, command).await,
    }
}
