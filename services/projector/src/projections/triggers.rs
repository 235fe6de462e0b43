//! TRIGGERS → `triggers`, `trigger_prices` and the per-alert summary `alert_trigger_stats`.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;
use proto_events::events::{ObservedPrice, TriggerFired};
use proto_events::{Event, Firing};

use super::{Applied, Params, execute_each, param, sequence};
use crate::event::StreamEvent;

const INSERT_TRIGGER: &str = "INSERT INTO triggers \
    (trigger_id, alert_id, user_id, alert_version, home_site, kind, generation, occurrence, exchange, \
     market, price, change_percent, tick_id, tick_stream, tick_sequence, tick_site, fired_at, \
     origin_site, correlation_id, stream_sequence) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
    ON CONFLICT (trigger_id) DO NOTHING";

const INSERT_PRICE: &str = "INSERT INTO trigger_prices \
    (trigger_id, position, market, price, change_percent, tick_id, tick_stream, tick_sequence, tick_site) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
    ON CONFLICT (trigger_id, position) DO NOTHING";

/// Recomputed from `triggers` rather than incremented, so a trigger seen twice counts once.
const REFRESH_STATS: &str = "INSERT INTO alert_trigger_stats \
    (alert_id, trigger_count, last_trigger_id, last_triggered_at, last_price, last_alert_version) \
    SELECT DISTINCT ON (t.alert_id) t.alert_id, counts.n, t.trigger_id, t.fired_at, t.price, t.alert_version \
    FROM triggers t \
    JOIN (SELECT alert_id, count(*) AS n FROM triggers WHERE alert_id = ANY($1) GROUP BY alert_id) counts \
      ON counts.alert_id = t.alert_id \
    WHERE t.alert_id = ANY($1) \
    ORDER BY t.alert_id, t.fired_at DESC, t.trigger_id DESC \
    ON CONFLICT (alert_id) DO UPDATE SET \
        trigger_count = EXCLUDED.trigger_count, last_trigger_id = EXCLUDED.last_trigger_id, \
        last_triggered_at = EXCLUDED.last_triggered_at, last_price = EXCLUDED.last_price, \
        last_alert_version = EXCLUDED.last_alert_version";

pub(super) async fn apply(
    transaction: &Transaction<'_>,
    events: &[&StreamEvent],
) -> Result<Applied, tokio_postgres::Error> {
    let mut applied = Applied::default();
    let mut triggers = Vec::new();
    let mut prices = Vec::new();
    let mut alerts = BTreeSet::new();
    for event in events {
        let Event::TriggerFired(fired) = &event.envelope.data else {
            applied.ignored += 1;
            continue;
        };
        triggers.push(trigger_params(event, fired));
        for (position, observed) in fired.observed.iter().enumerate() {
            prices.push(price_params(fired, position, observed));
        }
        alerts.insert(fired.alert_id.as_str().to_owned());
        applied.projected += 1;
    }
    execute_each(transaction, INSERT_TRIGGER, &triggers).await?;
    execute_each(transaction, INSERT_PRICE, &prices).await?;
    if !alerts.is_empty() {
        let alerts: Vec<String> = alerts.into_iter().collect();
        let statement = transaction.prepare_cached(REFRESH_STATS).await?;
        transaction.execute(&statement, &[&alerts]).await?;
    }
    Ok(applied)
}

fn trigger_params(event: &StreamEvent, fired: &TriggerFired) -> Params {
    let (generation, occurrence) = match fired.firing {
        Firing::Armed { generation } => (Some(crate::target::to_bigint(generation)), None),
        Firing::Scheduled { occurrence } => (None, Some(occurrence)),
    };
    let first = fired.observed.first();
    let tick = first.and_then(|observed| observed.tick.as_ref());
    vec![
        param(fired.trigger_id.as_str().to_owned()),
        param(fired.alert_id.as_str().to_owned()),
        param(fired.user_id.as_str().to_owned()),
        sequence(fired.alert_version),
        param(fired.home_site.as_str()),
        param(fired.kind.as_str()),
        param(generation),
        param(occurrence),
        param(fired.exchange.as_str().to_owned()),
        param(first.map(|observed| observed.market.as_str().to_owned())),
        param(first.map(|observed| observed.price.value())),
        param(first.and_then(|observed| observed.change.map(|change| change.value()))),
        param(tick.map(|tick| tick.tick_id.as_str().to_owned())),
        param(tick.map(|tick| tick.stream.as_str().to_owned())),
        param(tick.map(|tick| crate::target::to_bigint(tick.sequence))),
        param(tick.map(|tick| tick.site.as_str())),
        param(fired.evaluated_at),
        param(event.envelope.origin_site.as_str()),
        param(event.envelope.correlation_id.as_str().to_owned()),
        sequence(event.sequence),
    ]
}

fn price_params(fired: &TriggerFired, position: usize, observed: &ObservedPrice) -> Params {
    let tick = observed.tick.as_ref();
    vec![
        param(fired.trigger_id.as_str().to_owned()),
        param(i32::try_from(position).unwrap_or(i32::MAX)),
        param(observed.market.as_str().to_owned()),
        param(observed.price.value()),
        param(observed.change.map(|change| change.value())),
        param(tick.map(|tick| tick.tick_id.as_str().to_owned())),
        param(tick.map(|tick| tick.stream.as_str().to_owned())),
        param(tick.map(|tick| crate::target::to_bigint(tick.sequence))),
        param(tick.map(|tick| tick.site.as_str())),
    ]
}
