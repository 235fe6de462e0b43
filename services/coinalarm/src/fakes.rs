//! `coinalarm fake-exchange` and `coinalarm fake-twilio`: the local stand-ins for the outside world, run
//! as processes for the demo and for tests that kill services.

use std::process::ExitCode;

use anyhow::Context;
use coinalarm_ingest::fake_exchange::{self, FeedMode, RandomWalkConfig, ReplayConfig};
use coinalarm_ingest::recorded::Speed;
use coinalarm_runtime::{Config, Shutdown, telemetry};

use crate::cli::{FakeExchangeArgs, FakeTwilioArgs, FeedKind};

/// Logs as configured, but no metrics listener: that address belongs to the services' process.
fn init_logs(config: &Config) -> anyhow::Result<()> {
    let mut telemetry_config = config.telemetry.clone();
    telemetry_config.metrics_listen = None;
    telemetry::init(&telemetry_config).context("starting telemetry")
}

pub async fn exchange(config: &Config, args: FakeExchangeArgs) -> anyhow::Result<ExitCode> {
    init_logs(config)?;
    let speed = Speed::parse(&args.speed).map_err(anyhow::Error::msg)?;
    let feed = match args.feed {
        FeedKind::Replay => FeedMode::Replay(ReplayConfig {
            speed,
            ..ReplayConfig::default()
        }),
        FeedKind::Walk => {
            let defaults = RandomWalkConfig::default();
            FeedMode::RandomWalk(RandomWalkConfig {
                seed: args.seed,
                markets: if args.markets.is_empty() {
                    defaults.markets
                } else {
                    args.markets
                },
                ticks_per_second: args.ticks_per_second,
                volatility: args.volatility,
                jump_probability: args.jump_probability,
                jump_size: args.jump_size,
            })
        }
    };
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    fake_exchange::serve(
        fake_exchange::FakeExchangeConfig {
            bind: args.bind,
            http_bind: args.http_bind,
            feed,
        },
        shutdown,
    )
    .await
    .context("running the fake exchange")?;
    Ok(ExitCode::SUCCESS)
}

pub async fn twilio(config: &Config, args: FakeTwilioArgs) -> anyhow::Result<ExitCode> {
    use coinalarm_dispatcher::fake_twilio::{self, FakeTwilioConfig};
    init_logs(config)?;
    let mut fake = FakeTwilioConfig::with_account(&args.name, &args.account_sid, &args.auth_token);
    fake.listen = args.listen;
    fake.send_callbacks = !args.no_callbacks;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    fake_twilio::serve(fake, shutdown)
        .await
        .context("running the fake twilio")?;
    Ok(ExitCode::SUCCESS)
}
