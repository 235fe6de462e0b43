//! Isolated Redis namespaces: each [`TestRedis`] is a unique key prefix on the server named by
//! `COINALARM_TEST_REDIS_URL`, whose keys are deleted when the handle is dropped, so tests share one
//! server without seeing each other's keys.

use fred::prelude::{Builder, Client, ClientLike, Config, KeysInterface};
use futures::TryStreamExt;

/// Environment variable naming the test server.
pub const URL_ENV: &str = "COINALARM_TEST_REDIS_URL";
/// Server used when [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Keys deleted per command during cleanup, to keep single commands small.
const DELETE_BATCH: usize = 500;

/// Failures while inspecting or cleaning a test namespace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The fred error is part of the message rather than a source: cleanup failures are only logged.
    #[error("redis failed while handling a test namespace: {0}")]
    Redis(fred::error::Error),
}

/// The test server's URL: [`URL_ENV`] or [`DEFAULT_URL`].
pub fn server_url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A unique namespace on the test server. Code under test is pointed at it through its own config
/// (the runtime's `RedisConfig { url, namespace, .. }`) and stores keys as `<namespace>:<key>`.
pub struct TestRedis {
    url: String,
    namespace: String,
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRedis {
    /// A fresh namespace `coinalarm_test_<uuid>`; nothing is written until the code under test does.
    pub fn new() -> Self {
        Self {
            url: server_url(),
            namespace: format!("coinalarm_test_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The namespace, without the `:` separator.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Full names of the keys currently stored in this namespace.
    pub async fn keys(&self) -> Result<Vec<String>, Error> {
        namespace_keys(&self.url, &self.namespace).await
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let url = self.url.clone();
        let namespace = self.namespace.clone();
        // Drop cannot await and may run inside (or outside) any runtime, so cleanup runs on its own
        // thread and runtime; joining it means the keys are gone once the handle is.
        let cleaned = std::thread::spawn(move || -> Result<usize, String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            runtime
                .block_on(delete_namespace(&url, &namespace))
                .map_err(|err| err.to_string())
        })
        .join();
        match cleaned {
            Ok(Ok(deleted)) => {
                tracing::debug!(namespace = %self.namespace, deleted, "deleted test redis namespace");
            }
            Ok(Err(error)) => {
                tracing::warn!(namespace = %self.namespace, %error, "cannot delete test redis namespace");
            }
            Err(_) => tracing::warn!(namespace = %self.namespace, "test redis cleanup panicked"),
        }
    }
}

/// Full names of the keys stored under `<namespace>:` on the server at `url`; usable after the
/// [`TestRedis`] that owned the namespace is gone.
pub async fn namespace_keys(url: &str, namespace: &str) -> Result<Vec<String>, Error> {
    let client = connect(url).await?;
    let keys = scan(&client, namespace).await;
    let _ = client.quit().await;
    Ok(keys?
        .into_iter()
        .map(|key| key.as_str_lossy().into_owned())
        .collect())
}

async fn delete_namespace(url: &str, namespace: &str) -> Result<usize, Error> {
    let client = connect(url).await?;
    let result = async {
        let keys = scan(&client, namespace).await?;
        for batch in keys.chunks(DELETE_BATCH) {
            client
                .unlink::<i64, _>(batch.to_vec())
                .await
                .map_err(Error::Redis)?;
        }
        Ok(keys.len())
    }
    .await;
    let _ = client.quit().await;
    result
}

async fn scan(client: &Client, namespace: &str) -> Result<Vec<fred::types::Key>, Error> {
    // Namespaces are generated here from hex digits, so the pattern needs no glob escaping.
    client
        .scan_buffered(format!("{namespace}:*"), Some(1_000), None)
        .try_collect()
        .await
        .map_err(Error::Redis)
}

async fn connect(url: &str) -> Result<Client, Error> {
    let config = Config::from_url(url).map_err(Error::Redis)?;
    let client = Builder::from_config(config).build().map_err(Error::Redis)?;
    client.init().await.map_err(Error::Redis)?;
    Ok(client)
}
