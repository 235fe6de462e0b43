//! Throwaway Postgres databases: each [`TestDatabase`] is a fresh, uniquely named database on the
//! server named by `COINALARM_TEST_POSTGRES_URL`, dropped again when the handle is dropped, so any
//! number of tests can run at once against one server.

use std::str::FromStr;

use tokio_postgres::{Client, Config, NoTls};

/// Environment variable naming the test server; its database is used for CREATE/DROP DATABASE.
pub const URL_ENV: &str = "COINALARM_TEST_POSTGRES_URL";
/// Server used when [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Failures while setting up a test database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid postgres url in {URL_ENV}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    #[error("postgres failed while preparing a test database")]
    Postgres(#[source] tokio_postgres::Error),
}

/// The test server's URL: [`URL_ENV`] or [`DEFAULT_URL`].
pub fn server_url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A fresh database, dropped (connections included) when this handle is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
    server: Config,
    client: Client,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// Creates `coinalarm_test_<uuid>` on the test server and connects to it.
    pub async fn create() -> Result<Self, Error> {
        let server_url = server_url();
        let server = Config::from_str(&server_url).map_err(Error::InvalidUrl)?;
        let name = format!("coinalarm_test_{}", uuid::Uuid::new_v4().simple());

        let admin = connect(&server).await?;
        // template0 accepts no connections, so creation never fails with "source database is being
        // accessed by other users", which a session left open on template1 would cause.
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\" TEMPLATE template0"))
            .await
            .map_err(Error::Postgres)?;
        drop(admin);

        let url = with_database(&server_url, &name);
        let mut config = server.clone();
        config.dbname(&name);
        let client = connect(&config).await?;
        tracing::debug!(database = %name, "created test database");
        Ok(Self {
            name,
            url,
            server,
            client,
        })
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL for the database, for code under test that connects by itself.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection to the database, for setting up and inspecting state.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Another connection to the database.
    pub async fn connect(&self) -> Result<Client, Error> {
        let mut config = self.server.clone();
        config.dbname(&self.name);
        connect(&config).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop cannot await and may run inside (or outside) any runtime, so the DROP runs on its own
        // thread and runtime; joining it means the database is gone once the handle is.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            runtime.block_on(async {
                let admin = connect(&server).await.map_err(|err| err.to_string())?;
                // FORCE ends the connections still open, including this handle's own client.
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .map_err(|err| err.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => tracing::debug!(database = %self.name, "dropped test database"),
            Ok(Err(error)) => {
                tracing::warn!(database = %self.name, %error, "cannot drop test database");
            }
            Err(_) => tracing::warn!(database = %self.name, "test database cleanup panicked"),
        }
    }
}

async fn connect(config: &Config) -> Result<Client, Error> {
    let (client, connection) = config.connect(NoTls).await.map_err(Error::Postgres)?;
    tokio::spawn(async move {
        // Ends with an error when the database is dropped under it; that is expected here.
        if let Err(error) = connection.await {
            tracing::debug!(%error, "test database connection ended");
        }
    });
    Ok(client)
}

/// `url` with its database replaced by `name`, for both URL and `key=value` connection strings.
fn with_database(url: &str, name: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // In key=value strings the last occurrence of a key wins.
        return format!("{url} dbname={name}");
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |at| &tail[at..]);
    format!("{scheme}://{authority}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgresql://u:p@h:1/db?connect_timeout=3", "t1"),
            "postgresql://u:p@h:1/t1?connect_timeout=3"
        );
        assert_eq!(
            with_database("postgres://h?sslmode=disable", "t1"),
            "postgres://h/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
        assert_eq!(
            with_database("host=h user=u dbname=postgres", "t1"),
            "host=h user=u dbname=postgres dbname=t1"
        );
    }
}
