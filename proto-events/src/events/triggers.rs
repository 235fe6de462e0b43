//! Alert firings. Subject `triggers.<alert_id>`.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Routed;
use super::alerts::AlertKind;
use crate::domain::{AlertId, Exchange, MarketCode, NatsName, Percent, Price, UserId};
use crate::ids::{Firing, MessageId, TriggerId};
use crate::site::Site;
use crate::subjects::subject;

/// The tick an evaluation used, so a trace can go from an SMS back to the trade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TickRef {
    /// The tick's message id: the same at both sites.
    pub tick_id: MessageId,
    /// The stream the matcher read it from (normally the local aggregate `TICKS`).
    pub stream: NatsName,
    /// Its sequence in that stream. Aggregate sequences differ per site, hence `site`.
    pub sequence: u64,
    /// The site whose stream `sequence` refers to.
    pub site: Site,
}

/// One market's price at firing time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObservedPrice {
    pub market: MarketCode,
    pub price: Price,
    /// The change that met the threshold (change-rate alerts), in percent over the alert's basis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Percent>,
    /// The tick the price came from; absent when a scheduled alert had no tick for the market yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<TickRef>,
}

/// An alert fired. Computed independently by both sites' matchers; the trigger id makes the two copies
/// one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TriggerFired {
    pub trigger_id: TriggerId,
    pub alert_id: AlertId,
    pub user_id: UserId,
    /// The alert version whose definition was evaluated.
    pub alert_version: u64,
    /// The alert's home site: by default the site that owns (sends) the resulting SMS.
    pub home_site: Site,
    pub kind: AlertKind,
    /// Arming generation (price and change-rate alerts) or scheduled occurrence. Generations count
    /// armings over the alert's whole life, across edits and pauses, so trigger ids never repeat.
    pub firing: Firing,
    pub exchange: Exchange,
    /// One entry for price and change-rate alerts, one per market for scheduled alerts.
    pub observed: Vec<ObservedPrice>,
    /// When the matcher decided.
    pub evaluated_at: Timestamp,
}

impl Routed for TriggerFired {
    fn message_id(&self, _producer: Site) -> MessageId {
        self.trigger_id.message_id()
    }

    fn subject(&self, site: Option<Site>) -> String {
        subject::trigger(site, self.alert_id.as_str())
    }
}
