//! The live feed behind the SSE stream: one ordered (ephemeral) consumer per process on the local
//! `TICKS` aggregate and one on `TRIGGERS`, fanned out to every connected client through broadcast
//! channels. A consumer runs only while someone listens, starts at "new" messages, and is recreated
//! after any failure; a client too slow for the feed skips what it missed rather than slowing others.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use coinalarm_runtime::Shutdown;
use coinalarm_runtime::bus::Bus;
use futures::StreamExt;
use proto_events::events::{TickObserved, TriggerFired};
use proto_events::{Category, Event};
use tokio::sync::{Notify, broadcast};

/// Messages a slow client may fall behind before it skips.
const CHANNEL_CAPACITY: usize = 1_024;

/// The fan-out of live ticks and triggers.
#[derive(Debug, Clone)]
pub struct LiveHub {
    ticks: broadcast::Sender<Arc<TickObserved>>,
    triggers: broadcast::Sender<Arc<TriggerFired>>,
    listeners: Arc<Notify>,
}

impl Default for LiveHub {
    fn default() -> Self {
        LiveHub {
            ticks: broadcast::channel(CHANNEL_CAPACITY).0,
            triggers: broadcast::channel(CHANNEL_CAPACITY).0,
            listeners: Arc::new(Notify::new()),
        }
    }
}

impl LiveHub {
    pub fn subscribe(
        &self,
    ) -> (
        broadcast::Receiver<Arc<TickObserved>>,
        broadcast::Receiver<Arc<TriggerFired>>,
    ) {
        let receivers = (self.ticks.subscribe(), self.triggers.subscribe());
        self.listeners.notify_waiters();
        receivers
    }

    /// Starts the two feeds; they idle while nobody listens.
    pub fn start(&self, bus: Bus, shutdown: Shutdown) {
        let hub = self.clone();
        let tick_bus = bus.clone();
        let tick_shutdown = shutdown.clone();
        tokio::spawn(async move {
            hub.feed(tick_bus, Category::Ticks, tick_shutdown, |hub, event| {
                if let Event::TickObserved(tick) = event {
                    let _ = hub.ticks.send(Arc::new(tick));
                }
            })
            .await;
        });
        let hub = self.clone();
        tokio::spawn(async move {
            hub.feed(bus, Category::Triggers, shutdown, |hub, event| {
                if let Event::TriggerFired(fired) = event {
                    let _ = hub.triggers.send(Arc::new(fired));
                }
            })
            .await;
        });
    }

    fn listening(&self) -> bool {
        self.ticks.receiver_count() > 0 || self.triggers.receiver_count() > 0
    }

    async fn feed(
        &self,
        bus: Bus,
        category: Category,
        shutdown: Shutdown,
        forward: impl Fn(&LiveHub, Event),
    ) {
        while !shutdown.is_triggered() {
            // Registered before the check, so a subscription between the two is not missed.
            let notified = self.listeners.notified();
            if !self.listening() {
                tokio::select! {
                    () = notified => {}
                    () = shutdown.wait() => return,
                }
                continue;
            }
            if let Err(error) = self.consume(&bus, category, &shutdown, &forward).await {
                tracing::debug!(stream = category.aggregate_stream(), %error, "live feed interrupted; restarting");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.wait() => return,
                }
            }
        }
    }

    async fn consume(
        &self,
        bus: &Bus,
        category: Category,
        shutdown: &Shutdown,
        forward: &impl Fn(&LiveHub, Event),
    ) -> Result<(), async_nats::Error> {
        let stream = bus
            .jetstream()
            .get_stream_no_info(category.aggregate_stream())
            .await?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::New,
                filter_subject: category.aggregate_filter(),
                description: Some(format!("api live feed at {}", bus.site())),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(Duration::from_secs(5), messages.next()) => next,
                () = shutdown.wait() => return Ok(()),
            };
            if !self.listening() {
                return Ok(());
            }
            let message = match next {
                Err(_elapsed) => continue,
                Ok(None) => return Ok(()),
                Ok(Some(message)) => message?,
            };
            match proto_events::decode(&message.payload) {
                Ok(envelope) => forward(self, envelope.data),
                Err(error) => tracing::debug!(%error, "live feed skipped an undecodable message"),
            }
        }
    }
}
