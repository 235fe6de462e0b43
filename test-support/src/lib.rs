//! Test harness: starts real servers from the repository's own configs on free ports — both NATS sites
//! with their leaf link, a fresh Postgres database, an isolated Redis namespace — and tears them down on
//! drop. Waits are conditions with deadlines, never bare sleeps.

pub mod nats;
pub mod ports;
pub mod postgres;
pub mod redis;
pub mod wait;
