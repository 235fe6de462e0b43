//! USERS → `users`: registration facts (phone hash and masked number, never the number) and the
//! preferences of the winning command by the merge rule.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;
use proto_events::Event;
use proto_events::events::users::USER_REGISTERED_VERSION;

use super::aggregates::{self, Aggregate};
use super::{Applied, Params, execute_each, param, sequence};
use crate::event::StreamEvent;

const UPSERT_REGISTRATION: &str = "INSERT INTO users \
    (user_id, phone_hash, phone_masked, home_site, registered_at, version, stream_sequence, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $5) \
    ON CONFLICT (user_id) DO UPDATE SET \
        phone_hash = EXCLUDED.phone_hash, \
        phone_masked = EXCLUDED.phone_masked, \
        home_site = EXCLUDED.home_site, \
        registered_at = EXCLUDED.registered_at, \
        version = GREATEST(users.version, EXCLUDED.version), \
        stream_sequence = GREATEST(users.stream_sequence, EXCLUDED.stream_sequence), \
        updated_at = GREATEST(users.updated_at, EXCLUDED.updated_at)";

/// Makes sure the row exists (a preferences change can overtake the registration across sites).
const UPSERT_USER: &str = "INSERT INTO users (user_id, version, stream_sequence, updated_at) \
    VALUES ($1, $2, $3, $4) \
    ON CONFLICT (user_id) DO UPDATE SET \
        version = GREATEST(users.version, EXCLUDED.version), \
        stream_sequence = GREATEST(users.stream_sequence, EXCLUDED.stream_sequence), \
        updated_at = GREATEST(users.updated_at, EXCLUDED.updated_at)";

/// Preferences replace the whole value, so the winner over all versions is simply the greatest
/// (version, time, site): the same answer as applying each version's winner in order, in any order.
const UPDATE_PREFERENCES: &str = "UPDATE users SET \
        locale = $2, time_zone = $3, quiet_hours_start = $4, quiet_hours_end = $5, \
        daily_sms_cap = $6, preferences_version = $7, preferences_time = $8, preferences_site = $9 \
    WHERE user_id = $1 \
      AND (preferences_version, COALESCE(preferences_time, '-infinity'::timestamptz), \
           COALESCE(preferences_site, '')) < ($7, $8, $9)";

/// Conflict count and the home origin's subject sequence, from the command log.
const UPDATE_SUMMARY: &str = "UPDATE users u SET \
        conflicts = $2, \
        subject_sequence = (SELECT max(e.origin_sequence) FROM aggregate_events e \
                            WHERE e.aggregate = 'user' AND e.aggregate_id = u.user_id \
                              AND e.origin_stream = 'USERS_' || upper(u.home_site)) \
    WHERE u.user_id = $1";

pub(super) async fn apply(
    transaction: &Transaction<'_>,
    events: &[&StreamEvent],
) -> Result<Applied, tokio_postgres::Error> {
    let mut applied = Applied::default();
    let mut commands = Vec::new();
    let mut registrations = Vec::new();
    let mut user_rows = Vec::new();
    let mut preferences = Vec::new();
    let mut touched = BTreeSet::new();
    for event in events {
        match &event.envelope.data {
            Event::UserRegistered(registered) => {
                let user_id = registered.user_id.as_str();
                commands.push(aggregates::insert_params(
                    Aggregate::User,
                    user_id,
                    USER_REGISTERED_VERSION,
                    event,
                    None,
                ));
                registrations.push(registration_params(event, registered));
                touched.insert(user_id.to_owned());
            }
            Event::UserPreferencesChanged(changed) => {
                let user_id = changed.user_id.as_str();
                commands.push(aggregates::insert_params(
                    Aggregate::User,
                    user_id,
                    changed.version,
                    event,
                    None,
                ));
                user_rows.push(vec![
                    param(user_id.to_owned()),
                    sequence(changed.version),
                    sequence(event.sequence),
                    param(event.envelope.time),
                ]);
                preferences.push(preferences_params(event, changed));
                touched.insert(user_id.to_owned());
            }
            _ => {
                applied.ignored += 1;
                continue;
            }
        }
        applied.projected += 1;
    }
    aggregates::insert(transaction, &commands).await?;
    execute_each(transaction, UPSERT_REGISTRATION, &registrations).await?;
    execute_each(transaction, UPSERT_USER, &user_rows).await?;
    // After the upserts: every row exists, and the updates only compare merge keys.
    execute_each(transaction, UPDATE_PREFERENCES, &preferences).await?;

    let touched: Vec<String> = touched.into_iter().collect();
    let mut summaries: Vec<Params> = Vec::with_capacity(touched.len());
    for (user_id, commands) in
        aggregates::load(transaction, Aggregate::User, &touched, false).await?
    {
        let settled = aggregates::settle(commands);
        applied.conflicts +=
            aggregates::mark_superseded(transaction, Aggregate::User, &user_id, &settled.changes)
                .await?;
        summaries.push(vec![
            param(user_id),
            param(i32::try_from(settled.losers).unwrap_or(i32::MAX)),
        ]);
    }
    execute_each(transaction, UPDATE_SUMMARY, &summaries).await?;
    Ok(applied)
}

fn registration_params(
    event: &StreamEvent,
    registered: &proto_events::events::UserRegistered,
) -> Params {
    vec![
        param(registered.user_id.as_str().to_owned()),
        param(registered.phone_hash.as_str().to_owned()),
        param(registered.phone.masked()),
        param(registered.home_site.as_str()),
        param(event.envelope.time),
        sequence(USER_REGISTERED_VERSION),
        sequence(event.sequence),
    ]
}

fn preferences_params(
    event: &StreamEvent,
    changed: &proto_events::events::UserPreferencesChanged,
) -> Params {
    let preferences = &changed.preferences;
    vec![
        param(changed.user_id.as_str().to_owned()),
        param(preferences.locale.as_str()),
        param(preferences.time_zone.as_str().to_owned()),
        param(preferences.quiet_hours.map(|quiet| quiet.start)),
        param(preferences.quiet_hours.map(|quiet| quiet.end)),
        param(
            preferences
                .daily_sms_cap
                .map(|cap| i32::try_from(cap.get()).unwrap_or(i32::MAX)),
        ),
        sequence(changed.version),
        param(event.envelope.time),
        param(event.envelope.origin_site.as_str()),
    ]
}
