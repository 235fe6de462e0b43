//! The two sites of a CoinAlarm deployment and the JetStream domain each one runs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A site is one NATS cluster with its own JetStream domain, Postgres and Redis.
///
/// The set is closed on purpose: subjects, stream names and the leaf-node topology are derived from it,
/// and a third site would need a new replication layout, not just a new value.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    Onprem,
    Cloud,
}

impl Site {
    pub const ALL: [Site; 2] = [Site::Onprem, Site::Cloud];

    /// Lower-case name: the JetStream domain and the subject prefix of this site's origin streams.
    pub const fn as_str(self) -> &'static str {
        match self {
            Site::Onprem => "onprem",
            Site::Cloud => "cloud",
        }
    }

    /// Upper-case name, used as the suffix of origin stream names (`TICKS_ONPREM`).
    pub const fn upper(self) -> &'static str {
        match self {
            Site::Onprem => "ONPREM",
            Site::Cloud => "CLOUD",
        }
    }

    /// The JetStream domain of this site.
    pub const fn domain(self) -> &'static str {
        self.as_str()
    }

    /// The other site.
    pub const fn peer(self) -> Site {
        match self {
            Site::Onprem => Site::Cloud,
            Site::Cloud => Site::Onprem,
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown site {0:?}: expected \"onprem\" or \"cloud\"")]
pub struct UnknownSite(pub String);

impl FromStr for Site {
    type Err = UnknownSite;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "onprem" => Ok(Site::Onprem),
            "cloud" => Ok(Site::Cloud),
            other => Err(UnknownSite(other.to_owned())),
        }
    }
}
