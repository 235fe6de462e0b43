//! Graceful, bounded shutdown: one signal fans out to every service of a process, services drain, and the
//! process exits after a grace period even if one of them hangs.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A cheap, cloneable handle every service watches to know when to stop taking work.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks everything watching this handle (and its children) to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// A handle that stops when this one does, but can also be stopped on its own (one service of many).
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
        }
    }

    /// Triggers this handle on SIGINT or SIGTERM.
    pub fn trigger_on_signals(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            shutdown.trigger();
        });
    }
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for sigterm; only ctrl-c stops this process");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How a set of services ended.
#[derive(Debug)]
pub struct Outcome {
    /// Services that returned an error or panicked, with the reason.
    pub failed: Vec<(String, String)>,
    /// Services still running when the grace period ran out; they were aborted.
    pub timed_out: Vec<String>,
}

impl Outcome {
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.timed_out.is_empty()
    }
}

/// Runs named services until all end. The first failure stops the others (a half-running process hides
/// outages from the orchestrator); after shutdown is triggered, services get `grace` to drain.
pub async fn supervise(
    services: Vec<(String, ServiceFuture)>,
    shutdown: Shutdown,
    grace: Duration,
) -> Outcome {
    let mut running = JoinSet::new();
    let mut names = std::collections::BTreeSet::new();
    for (name, service) in services {
        names.insert(name.clone());
        running.spawn(async move { (name, service.await) });
    }
    let mut failed = Vec::new();
    loop {
        let next = tokio::select! {
            next = running.join_next() => next,
            () = shutdown.wait() => break,
        };
        let Some(joined) = next else {
            return Outcome {
                failed,
                timed_out: Vec::new(),
            };
        };
        let ended = record_end(joined, &mut names, &mut failed);
        if ended == EndKind::Failed {
            shutdown.trigger();
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        match tokio::time::timeout_at(deadline, running.join_next()).await {
            Ok(Some(joined)) => {
                record_end(joined, &mut names, &mut failed);
            }
            Ok(None) => break,
            Err(_elapsed) => {
                tracing::error!(services = ?names, grace_seconds = grace.as_secs_f64(), "services did not drain in time; aborting them");
                running.abort_all();
                return Outcome {
                    failed,
                    timed_out: names.into_iter().collect(),
                };
            }
        }
    }
    Outcome {
        failed,
        timed_out: Vec::new(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum EndKind {
    Clean,
    Failed,
}

fn record_end(
    joined: Result<(String, Result<(), BoxError>), tokio::task::JoinError>,
    names: &mut std::collections::BTreeSet<String>,
    failed: &mut Vec<(String, String)>,
) -> EndKind {
    match joined {
        Ok((name, Ok(()))) => {
            tracing::info!(service = %name, "service stopped");
            names.remove(&name);
            EndKind::Clean
        }
        Ok((name, Err(error))) => {
            tracing::error!(service = %name, %error, "service failed");
            names.remove(&name);
            failed.push((name, error.to_string()));
            EndKind::Failed
        }
        Err(join_error) => {
            // The name is lost with a panic; what is left in `names` afterwards tells which one it was.
            tracing::error!(error = %join_error, "service panicked");
            failed.push(("<panicked>".to_owned(), join_error.to_string()));
            EndKind::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(
        future: impl Future<Output = Result<(), BoxError>> + Send + 'static,
    ) -> ServiceFuture {
        Box::pin(future)
    }

    #[tokio::test]
    async fn a_failing_service_stops_the_others() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        let outcome = supervise(
            vec![
                (
                    "ok".to_owned(),
                    service(async move {
                        watcher.wait().await;
                        Ok(())
                    }),
                ),
                ("broken".to_owned(), service(async { Err("boom".into()) })),
            ],
            shutdown.clone(),
            Duration::from_secs(5),
        )
        .await;
        assert!(shutdown.is_triggered());
        assert_eq!(
            outcome.failed,
            vec![("broken".to_owned(), "boom".to_owned())]
        );
        assert!(outcome.timed_out.is_empty());
    }

    #[tokio::test]
    async fn a_hanging_service_is_aborted_after_the_grace_period() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let outcome = supervise(
            vec![("stuck".to_owned(), service(std::future::pending()))],
            shutdown,
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(outcome.timed_out, vec!["stuck".to_owned()]);
    }
}
