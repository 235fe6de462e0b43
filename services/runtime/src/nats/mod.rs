//! NATS plumbing: connecting as a named service, JetStream contexts with bounded calls, and the
//! two-site topology (`topology`) and its replication status (`status`).

pub mod status;
pub mod topology;

use std::time::Duration;

use async_nats::jetstream;
use proto_events::Site;

use crate::config::NatsConfig;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to nats at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("jetstream call on {object} failed: {source}")]
    JetStream {
        object: String,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("jetstream refused the call on {object}: {description} (error code {code})")]
    JetStreamApi {
        object: String,
        code: u64,
        description: String,
    },
    #[error("cannot serialize a definition: {0}")]
    Serialize(serde_json::Error),
}

impl Error {
    /// Wraps any client error with the stream or consumer it concerned.
    pub(crate) fn jetstream<E>(object: &str) -> impl FnOnce(E) -> Error + '_
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |source| Error::JetStream {
            object: object.to_owned(),
            source: Box::new(source),
        }
    }
}

/// Connects to `site`'s NATS server as `service`, with the service's own credentials when configured.
/// The connection name shows up in the server's `connz`, so operators can tell who is connected.
pub async fn connect(
    config: &NatsConfig,
    site: Site,
    service: &str,
) -> Result<async_nats::Client, Error> {
    let url = config.url(site).to_owned();
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("coinalarm-{service}@{site}"))
        .request_timeout(Some(config.request_timeout))
        .connection_timeout(config.request_timeout)
        // Retry the first connect too: in a fresh deployment services may start before NATS.
        .retry_on_initial_connect()
        .max_reconnects(None);
    if let Some(credentials) = config.credentials_for(service) {
        options = options.user_and_password(credentials.user, credentials.password);
    }
    let client = options
        .connect(url.as_str())
        .await
        .map_err(|source| Error::Connect { url, source })?;
    Ok(client)
}

/// Connects and fails fast when the server is not there: for operator commands, which should say so at
/// once rather than retry forever.
pub async fn connect_once(
    config: &NatsConfig,
    site: Site,
    service: &str,
) -> Result<async_nats::Client, Error> {
    let url = config.url(site).to_owned();
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("coinalarm-{service}@{site}"))
        .request_timeout(Some(config.request_timeout))
        .connection_timeout(config.request_timeout);
    if let Some(credentials) = config.credentials_for(service) {
        options = options.user_and_password(credentials.user, credentials.password);
    }
    options
        .connect(url.as_str())
        .await
        .map_err(|source| Error::Connect { url, source })
}

/// A JetStream context on the local domain with every call bounded.
pub fn jetstream(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    let mut context = jetstream::new(client);
    context.set_timeout(timeout);
    context
}

/// A JetStream context that reaches `domain` through whatever link the client's server has: how one site
/// talks to the other site's streams over the leaf link.
pub fn jetstream_in_domain(
    client: async_nats::Client,
    domain: &str,
    timeout: Duration,
) -> jetstream::Context {
    let mut context = jetstream::with_domain(client, domain);
    context.set_timeout(timeout);
    context
}

/// Calls a JetStream read API (`STREAM.INFO.X`, `CONSUMER.INFO.X.Y`) and returns the typed answer with
/// its raw JSON (some fields, like a source's error, are not in the client's types), or `None` when the
/// object does not exist.
pub(crate) async fn api_read<T: serde::de::DeserializeOwned>(
    jetstream: &jetstream::Context,
    subject: String,
    object: &str,
) -> Result<Option<(T, serde_json::Value)>, Error> {
    // An empty JSON object: some read APIs reject `null` (error 10038).
    let raw: serde_json::Value = jetstream
        .request(subject, &serde_json::json!({}))
        .await
        .map_err(Error::jetstream(object))?;
    if let Some(error) = raw.get("error") {
        let code = error.get("code").and_then(serde_json::Value::as_u64);
        if code == Some(404) {
            return Ok(None);
        }
        return Err(Error::JetStreamApi {
            object: object.to_owned(),
            code: error
                .get("err_code")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or_default(),
            description: error
                .get("description")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("unknown error")
                .to_owned(),
        });
    }
    let typed = serde_json::from_value(raw.clone()).map_err(Error::jetstream(object))?;
    Ok(Some((typed, raw)))
}
