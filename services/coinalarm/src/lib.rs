//! The `coinalarm` command: hosts any set of services in one process (`serve`), sets up and inspects the
//! two-site JetStream topology (`nats apply|status|render`) and the Postgres schema (`db migrate`).

mod cli;
mod db;
mod demo;
pub mod dlq;
mod fakes;
mod nats;
pub mod projections;
pub mod replay;
mod serve;
mod sites;
mod table;
pub mod trace;

use std::process::ExitCode;

use clap::Parser;

pub use cli::Cli;

/// Parses the command line, runs the command and maps the result to an exit code: 0 success,
/// 1 failure, 2 bad usage or configuration, 3 a check found drift.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
