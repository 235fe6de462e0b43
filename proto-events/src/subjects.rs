//! The subject scheme and stream names: the one place that says where every event is written and read.
//!
//! Every event is written by its producer to the *origin* stream of the site the producer runs at, under a
//! subject that starts with the site name (`onprem.ticks.upbit.KRW-BTC`). Each site also has an
//! *aggregate* stream per category that sources both sites' origins and strips the site prefix
//! (`ticks.upbit.KRW-BTC`). Consumers read only their local aggregate. See
//! `docs/decisions/0002-two-site-topology.md` for why.
//!
//! | category   | origin subject (site-prefixed)                      | one subject per                 |
//! |------------|-----------------------------------------------------|---------------------------------|
//! | ticks      | `<site>.ticks.<exchange>.<market>`                  | market                          |
//! | users      | `<site>.users.<user_id>`                            | user aggregate (OCC)            |
//! | alerts     | `<site>.alerts.<alert_id>`                          | alert aggregate (OCC)           |
//! | auth       | `<site>.auth.<phone_hash>`                          | phone number (short retention)  |
//! | triggers   | `<site>.triggers.<alert_id>`                        | alert                           |
//! | dispatch   | `<site>.dispatch.request.<priority>.<dispatch_id>`  | dispatch request                |
//! |            | `<site>.dispatch.outcome.<dispatch_id>`             | dispatch lifecycle after request|
//! |            | `<site>.dispatch.skipped.<trigger_id>`              | trigger the notifier did not send|
//! | sites      | `<site>.sites.heartbeat`                            | site                            |
//! | deadletter | `<site>.deadletter.<stream>.<consumer>`             | failing consumer                |

use std::fmt;

use crate::site::Site;

/// A family of events with one retention policy, one origin stream per site and one aggregate per site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Ticks,
    Users,
    Alerts,
    Auth,
    Triggers,
    Dispatch,
    Sites,
    Deadletter,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Category::Ticks,
        Category::Users,
        Category::Alerts,
        Category::Auth,
        Category::Triggers,
        Category::Dispatch,
        Category::Sites,
        Category::Deadletter,
    ];

    /// The subject token right after the site prefix.
    pub const fn token(self) -> &'static str {
        match self {
            Category::Ticks => "ticks",
            Category::Users => "users",
            Category::Alerts => "alerts",
            Category::Auth => "auth",
            Category::Triggers => "triggers",
            Category::Dispatch => "dispatch",
            Category::Sites => "sites",
            Category::Deadletter => "deadletter",
        }
    }

    /// Name of the aggregate stream, present at both sites (`TICKS`).
    pub const fn aggregate_stream(self) -> &'static str {
        match self {
            Category::Ticks => "TICKS",
            Category::Users => "USERS",
            Category::Alerts => "ALERTS",
            Category::Auth => "AUTH",
            Category::Triggers => "TRIGGERS",
            Category::Dispatch => "DISPATCH",
            Category::Sites => "SITES",
            Category::Deadletter => "DEADLETTER",
        }
    }

    /// Name of the origin stream a site writes to (`TICKS_ONPREM`).
    pub fn origin_stream(self, site: Site) -> String {
        format!("{}_{}", self.aggregate_stream(), site.upper())
    }

    /// Subject filter captured by a site's origin stream (`onprem.ticks.>`).
    pub fn origin_filter(self, site: Site) -> String {
        format!("{}.{}.>", site.as_str(), self.token())
    }

    /// Subject filter of this category in the aggregate, after the site prefix is stripped (`ticks.>`).
    pub fn aggregate_filter(self) -> String {
        format!("{}.>", self.token())
    }

    /// Durable consumer created on `origin_site`'s origin stream that feeds the *other* site's aggregate.
    pub fn sourcing_consumer(self, origin_site: Site) -> String {
        format!(
            "{}_TO_{}",
            self.origin_stream(origin_site),
            origin_site.peer().upper()
        )
    }

    /// Deliver subject of that durable sourcing consumer; one per direction and category.
    pub fn sourcing_deliver_subject(self, origin_site: Site) -> String {
        format!(
            "_src.{}.{}",
            self.origin_stream(origin_site),
            origin_site.peer().as_str()
        )
    }

    /// The category of an aggregate or origin stream name.
    pub fn from_stream_name(stream: &str) -> Option<(Category, Option<Site>)> {
        Category::ALL.into_iter().find_map(|category| {
            if stream == category.aggregate_stream() {
                return Some((category, None));
            }
            Site::ALL
                .into_iter()
                .find(|site| stream == category.origin_stream(*site))
                .map(|site| (category, Some(site)))
        })
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Delivery priority of an SMS; a subject token so dispatchers can drain the urgent lane first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Sign-in codes: a person is waiting at a screen.
    SignIn,
    /// Price and change-rate alerts: value decays by the second.
    Alert,
    /// Scheduled reports.
    Scheduled,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::SignIn, Priority::Alert, Priority::Scheduled];

    pub const fn token(self) -> &'static str {
        match self {
            Priority::SignIn => "p0",
            Priority::Alert => "p1",
            Priority::Scheduled => "p2",
        }
    }
}

/// Builders for full subjects. `site` is `Some` for the origin form a producer publishes to and `None`
/// for the aggregate form consumers filter on.
pub mod subject {
    use super::{Category, Priority};
    use crate::site::Site;

    fn join(site: Option<Site>, category: Category, rest: &[&str]) -> String {
        let mut subject = String::with_capacity(64);
        if let Some(site) = site {
            subject.push_str(site.as_str());
            subject.push('.');
        }
        subject.push_str(category.token());
        for token in rest {
            subject.push('.');
            subject.push_str(token);
        }
        subject
    }

    pub fn tick(site: Option<Site>, exchange: &str, market: &str) -> String {
        join(site, Category::Ticks, &[exchange, market])
    }

    pub fn user(site: Option<Site>, user_id: &str) -> String {
        join(site, Category::Users, &[user_id])
    }

    pub fn alert(site: Option<Site>, alert_id: &str) -> String {
        join(site, Category::Alerts, &[alert_id])
    }

    pub fn auth(site: Option<Site>, phone_hash: &str) -> String {
        join(site, Category::Auth, &[phone_hash])
    }

    pub fn trigger(site: Option<Site>, alert_id: &str) -> String {
        join(site, Category::Triggers, &[alert_id])
    }

    pub fn dispatch_request(site: Option<Site>, priority: Priority, dispatch_id: &str) -> String {
        join(
            site,
            Category::Dispatch,
            &["request", priority.token(), dispatch_id],
        )
    }

    pub fn dispatch_outcome(site: Option<Site>, dispatch_id: &str) -> String {
        join(site, Category::Dispatch, &["outcome", dispatch_id])
    }

    pub fn dispatch_skipped(site: Option<Site>, trigger_id: &str) -> String {
        join(site, Category::Dispatch, &["skipped", trigger_id])
    }

    pub fn heartbeat(site: Site) -> String {
        join(Some(site), Category::Sites, &["heartbeat"])
    }

    pub fn deadletter(site: Option<Site>, stream: &str, consumer: &str) -> String {
        join(site, Category::Deadletter, &[stream, consumer])
    }

    /// Strips the site prefix of an origin subject: what the aggregate stores it as.
    pub fn to_aggregate(subject: &str) -> &str {
        Site::ALL
            .into_iter()
            .find_map(|site| {
                subject
                    .strip_prefix(site.as_str())
                    .and_then(|rest| rest.strip_prefix('.'))
            })
            .unwrap_or(subject)
    }
}

/// True when `token` can be one subject token: no separators, wildcards or whitespace.
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.bytes().all(|byte| {
            !matches!(byte, b'.' | b'*' | b'>' | b' ' | b'\t' | b'\r' | b'\n')
                && byte > 0x20
                && byte < 0x7f
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_and_aggregate_names_follow_the_scheme() {
        assert_eq!(Category::Ticks.origin_stream(Site::Onprem), "TICKS_ONPREM");
        assert_eq!(Category::Ticks.origin_filter(Site::Cloud), "cloud.ticks.>");
        assert_eq!(
            Category::Alerts.sourcing_consumer(Site::Cloud),
            "ALERTS_CLOUD_TO_ONPREM"
        );
        assert_eq!(
            Category::Alerts.sourcing_deliver_subject(Site::Cloud),
            "_src.ALERTS_CLOUD.onprem"
        );
        assert_eq!(
            subject::tick(Some(Site::Onprem), "upbit", "KRW-BTC"),
            "onprem.ticks.upbit.KRW-BTC"
        );
        assert_eq!(
            subject::to_aggregate("onprem.ticks.upbit.KRW-BTC"),
            "ticks.upbit.KRW-BTC"
        );
        assert_eq!(
            subject::dispatch_request(None, Priority::SignIn, "d1"),
            "dispatch.request.p0.d1"
        );
    }

    #[test]
    fn stream_names_parse_back_to_their_category() {
        for category in Category::ALL {
            assert_eq!(
                Category::from_stream_name(category.aggregate_stream()),
                Some((category, None))
            );
            for site in Site::ALL {
                assert_eq!(
                    Category::from_stream_name(&category.origin_stream(site)),
                    Some((category, Some(site)))
                );
            }
        }
        assert_eq!(Category::from_stream_name("NOPE"), None);
    }

    #[test]
    fn tokens_reject_subject_syntax() {
        assert!(is_valid_token("KRW-BTC"));
        assert!(!is_valid_token("a.b"));
        assert!(!is_valid_token("*"));
        assert!(!is_valid_token(">"));
        assert!(!is_valid_token(""));
        assert!(!is_valid_token("a b"));
    }
}
