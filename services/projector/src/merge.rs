//! The cross-site merge rule for aggregates (DESIGN.md §4).
//!
//! Optimistic concurrency holds inside one origin stream only. When an aggregate's home site is
//! unreachable, a command goes to the local origin instead, and both sites may then hold a command for
//! the same aggregate version. The projection settles it the same way at both sites, whatever order
//! the events arrived in: per version, the command with the later event time wins, then the greater
//! site name (`onprem` > `cloud`), then the greater message id (never reached: ids carry version and
//! site). Versions are then applied in ascending order. Losers stay recorded as conflicts.

use std::cmp::Ordering;

use jiff::Timestamp;

/// One command of an aggregate with what the rule orders by.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub version: u64,
    pub time: Timestamp,
    pub site: String,
    pub message_id: String,
    pub data: T,
}

impl<T> Versioned<T> {
    /// Orders two commands of the same version: the greater one wins.
    fn precedence(&self, other: &Self) -> Ordering {
        self.time
            .cmp(&other.time)
            .then_with(|| self.site.cmp(&other.site))
            .then_with(|| self.message_id.cmp(&other.message_id))
    }
}

/// The outcome of the rule over all commands of one aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution<T> {
    /// One command per version, ascending.
    pub winners: Vec<Versioned<T>>,
    /// `(loser message id, winner message id)` for every command that lost its version.
    pub superseded: Vec<(String, String)>,
}

/// Applies the rule; the input order does not matter.
pub fn resolve<T>(mut commands: Vec<Versioned<T>>) -> Resolution<T> {
    // Ascending by version, and within a version the winner first.
    commands.sort_by(|a, b| a.version.cmp(&b.version).then_with(|| b.precedence(a)));
    let mut winners: Vec<Versioned<T>> = Vec::with_capacity(commands.len());
    let mut superseded = Vec::new();
    for command in commands {
        match winners.last() {
            Some(winner) if winner.version == command.version => {
                superseded.push((command.message_id, winner.message_id.clone()));
            }
            _ => winners.push(command),
        }
    }
    Resolution {
        winners,
        superseded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(version: u64, time: &str, site: &str) -> Versioned<&'static str> {
        Versioned {
            version,
            time: time.parse().expect("time"),
            site: site.to_owned(),
            message_id: format!("alert:a:{version}:{site}"),
            data: "",
        }
    }

    #[test]
    fn later_time_then_site_name_wins_in_any_arrival_order() {
        let early_onprem = command(2, "2026-11-02T00:00:01Z", "onprem");
        let late_cloud = command(2, "2026-11-02T00:00:02Z", "cloud");
        let created = command(1, "2026-11-02T00:00:00Z", "onprem");
        let orders = [
            vec![created.clone(), early_onprem.clone(), late_cloud.clone()],
            vec![late_cloud.clone(), early_onprem.clone(), created.clone()],
            vec![early_onprem.clone(), created.clone(), late_cloud.clone()],
        ];
        for order in orders {
            let resolution = resolve(order);
            let winners: Vec<_> = resolution
                .winners
                .iter()
                .map(|winner| winner.message_id.as_str())
                .collect();
            assert_eq!(winners, ["alert:a:1:onprem", "alert:a:2:cloud"]);
            assert_eq!(
                resolution.superseded,
                vec![("alert:a:2:onprem".to_owned(), "alert:a:2:cloud".to_owned())]
            );
        }

        let same_time_cloud = command(3, "2026-11-02T00:00:05Z", "cloud");
        let same_time_onprem = command(3, "2026-11-02T00:00:05Z", "onprem");
        let resolution = resolve(vec![same_time_onprem, same_time_cloud]);
        assert_eq!(resolution.winners[0].site, "onprem");
    }
}
