//! Site liveness. Subject `sites.heartbeat`; the peer judges a site dead when its beats stop.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Routed;
use crate::domain::ServiceName;
use crate::ids::{self, MessageId};
use crate::site::Site;
use crate::subjects::subject;

/// A site reported itself and its live services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SiteHeartbeatEmitted {
    pub site: Site,
    /// Strictly increasing per emitter: the beat's time in unix milliseconds, so that a restarted emitter
    /// (every process of a site beats) never reuses the message id of an earlier beat.
    pub sequence: u64,
    pub at: Timestamp,
    /// Services of this site that reported alive since the previous beat.
    pub services_alive: Vec<ServiceName>,
}

impl Routed for SiteHeartbeatEmitted {
    fn message_id(&self, _producer: Site) -> MessageId {
        ids::heartbeat(self.site, self.sequence)
    }

    fn subject(&self, site: Option<Site>) -> String {
        match site {
            Some(site) => subject::heartbeat(site),
            None => subject::to_aggregate(&subject::heartbeat(self.site)).to_owned(),
        }
    }
}
