//! Postgres plumbing shared by every service: a configured connection pool, the embedded schema
//! migrations (run under an advisory lock so several processes may start at once) and a readiness ping.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

pub use refinery::Report;

refinery::embed_migrations!("migrations");

/// Advisory lock key taken around migrations (ASCII "coinalrm"). Advisory locks are scoped to one
/// database, so the same key never makes unrelated databases on a shared server wait for each other.
const MIGRATION_LOCK_KEY: i64 = 0x636f_696e_616c_726d;

/// Database used to create the application database when it does not exist yet.
const MAINTENANCE_DATABASE: &str = "postgres";

/// How a service reaches Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// libpq-style URL, e.g. `postgres://user:password@host:5432/coinalarm`.
    pub url: String,
    /// Maximum number of pooled connections.
    pub pool_size: usize,
    /// Seconds allowed to open a connection, and to wait for a free pooled one.
    pub connect_timeout: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/coinalarm".to_owned(),
            pool_size: 16,
            connect_timeout: 5,
        }
    }
}

impl PostgresConfig {
    fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }
}

/// Failures of the Postgres plumbing. Messages never contain the URL, which may carry a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid postgres url")]
    InvalidUrl(#[source] tokio_postgres::Error),
    #[error("cannot connect to postgres")]
    Connect(#[source] tokio_postgres::Error),
    #[error("cannot build the postgres pool")]
    Build(#[source] deadpool_postgres::BuildError),
    #[error("cannot get a postgres connection from the pool")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("postgres migration failed")]
    Migrate(#[source] refinery::Error),
    #[error("postgres query failed")]
    Query(#[source] tokio_postgres::Error),
}

/// Builds the pool and opens one connection, so a wrong URL or an unreachable server fails at startup
/// rather than on the first request.
pub async fn connect_pool(config: &PostgresConfig) -> Result<Pool, Error> {
    let mut pg = tokio_postgres::Config::from_str(&config.url).map_err(Error::InvalidUrl)?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(config.connect_timeout());
    }
    let target = describe(&pg);
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(config.connect_timeout()))
        .wait_timeout(Some(config.connect_timeout()))
        .build()
        .map_err(Error::Build)?;
    drop(get(&pool).await?);
    tracing::info!(postgres = %target, pool_size = config.pool_size, "connected to postgres");
    Ok(pool)
}

/// Applies the embedded migrations that are not applied yet.
///
/// Safe to call from several processes at once: a session advisory lock serialises them, and the
/// ones that wait find nothing left to do.
pub async fn migrate(pool: &Pool) -> Result<Report, Error> {
    let mut conn = get(pool).await?;
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(Error::Query)?;
    let result = migrations::runner().run_async(&mut **conn).await;
    let unlocked = conn
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    if let Err(err) = unlocked {
        // A pooled connection still holding the lock would block every later migration; closing
        // it makes the server release the lock.
        tracing::warn!(error = %err, "cannot release the migration lock, closing the connection");
        drop(deadpool_postgres::Object::take(conn));
    }
    let report = result.map_err(Error::Migrate)?;
    for migration in report.applied_migrations() {
        tracing::info!(version = %migration.version(), name = migration.name(), "applied migration");
    }
    Ok(report)
}

/// Readiness check: a round trip on a pooled connection.
pub async fn ping(pool: &Pool) -> Result<(), Error> {
    get(pool)
        .await?
        .batch_execute("SELECT 1")
        .await
        .map_err(Error::Query)
}

/// Creates the database named in `url` if it does not exist, by connecting to the server's `postgres`
/// maintenance database with the same credentials. Returns whether it created it.
///
/// Concurrent callers are fine: losing the creation race counts as "already there".
pub async fn ensure_database(url: &str) -> Result<bool, Error> {
    let target = tokio_postgres::Config::from_str(url).map_err(Error::InvalidUrl)?;
    // libpq defaults the database name to the user name.
    let Some(name) = target.get_dbname().or(target.get_user()).map(str::to_owned) else {
        return Ok(false);
    };
    if name == MAINTENANCE_DATABASE {
        return Ok(false);
    }
    let mut maintenance = target.clone();
    maintenance.dbname(MAINTENANCE_DATABASE);
    if maintenance.get_connect_timeout().is_none() {
        maintenance.connect_timeout(PostgresConfig::default().connect_timeout());
    }
    let (client, connection) = maintenance.connect(NoTls).await.map_err(Error::Connect)?;
    let driver = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "maintenance connection ended");
        }
    });
    let result = create_if_missing(&client, &name).await;
    drop(client);
    // The connection task ends once the client is gone; waiting keeps the socket from outliving us.
    let _ = driver.await;
    let created = result?;
    if created {
        tracing::info!(database = %name, "created database");
    }
    Ok(created)
}

async fn create_if_missing(client: &tokio_postgres::Client, name: &str) -> Result<bool, Error> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(Error::Query)?
        .is_some();
    if exists {
        return Ok(false);
    }
    // CREATE DATABASE takes no bind parameters, hence the quoted identifier.
    match client
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
        .await
    {
        Ok(()) => Ok(true),
        Err(err)
            if matches!(
                err.code(),
                Some(&SqlState::DUPLICATE_DATABASE) | Some(&SqlState::UNIQUE_VIOLATION)
            ) =>
        {
            Ok(false)
        }
        Err(err) => Err(Error::Query(err)),
    }
}

async fn get(pool: &Pool) -> Result<deadpool_postgres::Object, Error> {
    pool.get().await.map_err(|err| match err {
        deadpool_postgres::PoolError::Backend(err) => Error::Connect(err),
        other => Error::Pool(other),
    })
}

/// Quotes an SQL identifier, doubling embedded quotes.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `user@host:port/db` for logs, without the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or_default(),
        config.get_dbname().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_rejects_unknown_fields() {
        let config: PostgresConfig = serde_json::from_str(r#"{"pool_size": 4}"#).expect("parses");
        assert_eq!(config.pool_size, 4);
        assert_eq!(config.connect_timeout, 5);
        assert_eq!(config.url, PostgresConfig::default().url);
        assert!(serde_json::from_str::<PostgresConfig>(r#"{"pool": 4}"#).is_err());
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("coinalarm"), "\"coinalarm\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn describe_hides_the_password() {
        let config =
            tokio_postgres::Config::from_str("postgres://alice:secret@db.example:6543/coinalarm")
                .expect("parses");
        assert_eq!(describe(&config), "alice@db.example:6543/coinalarm");
    }

    #[test]
    fn migrations_are_embedded() {
        let runner = migrations::runner();
        let names: Vec<_> = runner.get_migrations().iter().map(|m| m.name()).collect();
        assert!(names.contains(&"projection_checkpoints"), "{names:?}");
    }
}
