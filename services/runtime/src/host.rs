//! Hosting services in a process: one service per binary in production, several (or all) in one
//! `coinalarm serve` process locally. Both paths load config, start telemetry, watch signals and drain
//! with a bounded grace period the same way.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::shutdown::{Outcome, ServiceFuture, supervise};
use crate::{Config, Shutdown};

/// How a service is started: its config and its shutdown handle in, a future out.
pub type StartFn = fn(Config, Shutdown) -> ServiceFuture;

/// Runs `services` in this process until they end or `shutdown` is triggered (each gets its own child
/// handle, so one failing stops the rest through `supervise`).
pub async fn serve(
    config: &Config,
    services: &[(&'static str, StartFn)],
    shutdown: Shutdown,
) -> Outcome {
    let running = services
        .iter()
        .map(|(name, start)| {
            tracing::info!(service = name, site = %config.site, "starting service");
            ((*name).to_owned(), start(config.clone(), shutdown.child()))
        })
        .collect();
    supervise(running, shutdown, config.shutdown_grace).await
}

/// `main` of a single-service binary: `--config <file>` (or `COINALARM_CONFIG`), then the environment.
pub fn service_main(name: &'static str, start: StartFn) -> ExitCode {
    let config_file = config_file_argument();
    let config = match Config::load(config_file.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        if let Err(error) = crate::telemetry::init(&config.telemetry) {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signals();
        let outcome = serve(&config, &[(name, start)], shutdown).await;
        if outcome.is_clean() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

fn config_file_argument() -> Option<PathBuf> {
    let mut arguments = std::env::args_os().skip(1);
    while let Some(argument) = arguments.next() {
        if argument == "--config" {
            return arguments.next().map(PathBuf::from);
        }
    }
    std::env::var_os("COINALARM_CONFIG").map(PathBuf::from)
}
