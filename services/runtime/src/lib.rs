//! Shared runtime of every CoinAlarm service: layered configuration, telemetry, graceful shutdown, NATS
//! connections and the two-site JetStream topology, Postgres and Redis plumbing.

pub mod bus;
pub mod config;
pub mod host;
pub mod nats;
pub mod postgres;
pub mod redis;
pub mod sealing;
pub mod shutdown;
pub mod sites;
pub mod telemetry;
pub mod trace;

pub use config::Config;
pub use shutdown::Shutdown;
