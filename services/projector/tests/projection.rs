//! The projector against real NATS (both sites, the repository's topology) and a fresh Postgres
//! database: a known history of every event type becomes exactly the expected rows.

mod common;

use coinalarm_projector::Projection;
use common::*;
use pretty_assertions::assert_eq;
use proto_events::Site;
use proto_events::events::{ObservedPrice, SkipReason};

const USER: &str = "u-0001";
const TARGET: &str = "a-target";
const CHANGE: &str = "a-change";
const SCHEDULED: &str = "a-scheduled";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_history_becomes_exactly_these_rows() {
    let sites = started_sites().await;
    let db = database().await;
    let onprem = Publisher::new(&sites, Site::Onprem).await;
    let cloud = Publisher::new(&sites, Site::Cloud).await;

    // Users: registered at on-prem, preferences changed through the cloud site's API (to the home
    // origin, as commands are) — the subject sequence is the home origin's.
    onprem
        .publish(&registered(USER, Site::Onprem, "2026-11-02T00:00:00Z"))
        .await;
    let preferences = onprem
        .publish(&preferences_changed(
            USER,
            2,
            proto_events::domain::Locale::En,
            Site::Cloud,
            "2026-11-02T00:01:00Z",
        ))
        .await;

    // Alerts of all three kinds and every command; one message that is not an event at all.
    let target_created = onprem
        .publish(&created(
            TARGET,
            USER,
            Site::Onprem,
            target_price_spec("100000000"),
            "2026-11-02T00:02:00Z",
        ))
        .await;
    onprem
        .publish(&created(
            CHANGE,
            USER,
            Site::Onprem,
            change_rate_spec(),
            "2026-11-02T00:02:10Z",
        ))
        .await;
    onprem
        .publish(&created(
            SCHEDULED,
            USER,
            Site::Onprem,
            scheduled_spec(),
            "2026-11-02T00:02:20Z",
        ))
        .await;
    onprem
        .publish(&updated(
            TARGET,
            USER,
            2,
            target_price_spec("101000000"),
            Site::Onprem,
            "2026-11-02T00:10:00Z",
        ))
        .await;
    onprem
        .publish(&paused(
            TARGET,
            USER,
            3,
            Site::Onprem,
            "2026-11-02T00:20:00Z",
        ))
        .await;
    let target_resumed = onprem
        .publish(&resumed(
            TARGET,
            USER,
            4,
            Site::Onprem,
            "2026-11-02T00:30:00Z",
        ))
        .await;
    onprem
        .publish(&deleted(
            SCHEDULED,
            USER,
            2,
            Site::Onprem,
            "2026-11-02T00:40:00Z",
        ))
        .await;
    onprem
        .publish_raw(
            "onprem.alerts.a-poison",
            "alert:a-poison:1:onprem",
            b"this is not an envelope",
        )
        .await;
    assert_eq!(target_created.stream, "ALERTS_ONPREM");

    // Triggers: a price alert and a scheduled one (written by the cloud matcher).
    let target_fired = fired_armed(
        TARGET,
        USER,
        1,
        vec![ObservedPrice {
            market: market("KRW-BTC"),
            price: price("101500000"),
            change: None,
            tick: Some(tick_ref(3)),
        }],
        "2026-11-02T01:00:00Z",
    );
    let scheduled_fired = fired_scheduled(
        SCHEDULED,
        USER,
        "2026-11-02T00:00:00Z",
        "2026-11-02T00:00:01Z",
    );
    onprem.publish(&target_fired).await;
    cloud.publish(&scheduled_fired).await;

    // Dispatch: the price alert's SMS fails once, is sent on the second attempt and delivered; the
    // scheduled one falls in quiet hours; a sign-in code is sent.
    let trigger = target_fired.data.trigger_id.clone();
    let request = requested_alert(
        &trigger,
        USER,
        "KRW-BTC reached 101,500,000 KRW",
        "2026-11-02T01:00:00.100Z",
    );
    let dispatch = request.data.dispatch_id.clone();
    onprem.publish(&request).await;
    onprem
        .publish(&claimed(
            &dispatch,
            1,
            Site::Onprem,
            "2026-11-02T01:00:00.200Z",
        ))
        .await;
    onprem
        .publish(&failed(&dispatch, 1, "2026-11-02T01:00:00.300Z"))
        .await;
    onprem
        .publish(&claimed(
            &dispatch,
            2,
            Site::Onprem,
            "2026-11-02T01:00:01.400Z",
        ))
        .await;
    onprem
        .publish(&sent(
            &dispatch,
            2,
            Site::Onprem,
            "SM-second",
            "2026-11-02T01:00:01.500Z",
        ))
        .await;
    cloud
        .publish(&delivered(
            &dispatch,
            2,
            "SM-second",
            "2026-11-02T01:00:04Z",
        ))
        .await;
    onprem
        .publish(&skipped(
            &scheduled_fired.data.trigger_id,
            USER,
            SkipReason::QuietHours,
            "2026-11-02T00:00:02Z",
        ))
        .await;
    let sign_in = requested_sign_in(uuid::Uuid::from_u128(7), "2026-11-02T02:00:00Z");
    let sign_in_id = sign_in.data.dispatch_id.clone();
    onprem.publish(&sign_in).await;
    onprem
        .publish(&sent(
            &sign_in_id,
            1,
            Site::Onprem,
            "SM-code",
            "2026-11-02T02:00:00.500Z",
        ))
        .await;

    // Ticks across a minute boundary, out of trade-time order (the earliest trade comes last), and
    // in batches of two so candles merge across transactions.
    for (sequential_id, trade_price, volume, at) in [
        (11, "100000000", Some("0.5"), "2026-11-02T00:00:05Z"),
        (12, "105000000", Some("1"), "2026-11-02T00:00:30Z"),
        (14, "95000000", Some("0.25"), "2026-11-02T00:00:50Z"),
        (15, "99000000", Some("2"), "2026-11-02T00:01:10Z"),
        (13, "110000000", Some("0.1"), "2026-11-02T00:00:40Z"),
        (10, "90000000", Some("0.05"), "2026-11-02T00:00:01Z"),
    ] {
        onprem
            .publish(&tick("KRW-BTC", sequential_id, trade_price, volume, at))
            .await;
    }
    onprem
        .publish(&tick(
            "KRW-ETH",
            501,
            "4500000",
            None,
            "2026-11-02T00:00:20Z",
        ))
        .await;

    // A dead letter parked by another service.
    onprem.publish(&parked(7, "2026-11-02T03:00:00Z")).await;

    let config = config(
        &sites,
        Site::Onprem,
        db.url(),
        serde_json::json!({"tick_batch_size": 2, "batch_size": 3}),
    );
    let projector = RunningProjector::start(&config);
    let jetstream = sites.jetstream(Site::Onprem).await;
    wait_stream_holds(&jetstream, "ALERTS", 8).await;
    wait_stream_holds(&jetstream, "TRIGGERS", 2).await;
    wait_stream_holds(&jetstream, "DISPATCH", 9).await;
    // The projector parks the poison message; wait for both dead letters to arrive.
    wait_stream_holds(&jetstream, "DEADLETTER", 2).await;
    wait_projected(db.client(), &jetstream, &Projection::ALL).await;
    projector.stop().await;
    let db = db.client();

    // Users: no clear phone number, preferences of version 2, the home origin's subject sequence.
    assert_eq!(
        rows(
            db,
            "SELECT user_id, phone_masked, home_site, locale, time_zone, quiet_hours_start, \
             quiet_hours_end, daily_sms_cap, version, subject_sequence, conflicts FROM users"
        )
        .await,
        vec![format!(
            "u-0001|+8210****5678|onprem|en|Europe/London|22:00:00|07:00:00|20|2|{}|0",
            preferences.sequence
        )]
    );
    let phone_hash: String = db
        .query_one("SELECT phone_hash FROM users", &[])
        .await
        .expect("user")
        .get(0);
    assert_eq!(
        phone_hash,
        proto_events::domain::PhoneHash::of(PHONE_KEY, &phone()).as_str()
    );

    // Alerts: current state per alert; the paused-then-resumed one is active at version 4.
    assert_eq!(
        rows(
            db,
            "SELECT alert_id, kind, array_to_string(markets, ','), target_price, direction, \
             change_basis, change_threshold, repeat_mode, cooldown_seconds, status, version, \
             subject_sequence, conflicts, created_at, updated_at, deleted_at \
             FROM alerts ORDER BY alert_id"
        )
        .await,
        vec![
            "a-change|change_rate|KRW-ETH|∅|either|5m|3.5|once|∅|active|1|2|0|2026-11-02T00:02:10+00:00|2026-11-02T00:02:10+00:00|∅".to_owned(),
            "a-scheduled|scheduled|KRW-BTC,KRW-ETH|∅|∅|∅|∅|once|∅|deleted|2|7|0|2026-11-02T00:02:20+00:00|2026-11-02T00:40:00+00:00|2026-11-02T00:40:00+00:00".to_owned(),
            format!(
                "a-target|target_price|KRW-BTC|101000000|up|∅|∅|repeat|3600|active|4|{}|0|2026-11-02T00:02:00+00:00|2026-11-02T00:30:00+00:00|∅",
                target_resumed.sequence
            ),
        ]
    );
    let condition: serde_json::Value = db
        .query_one(
            "SELECT condition FROM alerts WHERE alert_id = $1",
            &[&TARGET],
        )
        .await
        .expect("alert")
        .get(0);
    assert_eq!(condition["kind"], "target_price");
    assert_eq!(condition["target"], "101000000");
    assert_eq!(
        rows(
            db,
            "SELECT aggregate_id, version, event_type FROM aggregate_events \
             WHERE aggregate = 'alert' ORDER BY aggregate_id, version"
        )
        .await,
        vec![
            "a-change|1|alert.created",
            "a-scheduled|1|alert.created",
            "a-scheduled|2|alert.deleted",
            "a-target|1|alert.created",
            "a-target|2|alert.updated",
            "a-target|3|alert.paused",
            "a-target|4|alert.resumed",
        ]
    );
    assert_eq!(
        rows(
            db,
            "SELECT alert_id, effective_status, trigger_count FROM alerts_current ORDER BY alert_id"
        )
        .await,
        vec![
            "a-change|active|0",
            "a-scheduled|deleted|1",
            "a-target|active|1"
        ]
    );

    // Triggers with their prices and tick references.
    assert_eq!(
        rows(
            db,
            "SELECT trigger_id, alert_id, kind, generation, occurrence, market, price, tick_id, \
             tick_sequence, fired_at, origin_site FROM triggers ORDER BY trigger_id"
        )
        .await,
        vec![
            format!(
                "{}|a-scheduled|scheduled|∅|2026-11-02T00:00:00+00:00|KRW-BTC|99000000|tick:upbit:KRW-BTC:5|5|2026-11-02T00:00:01+00:00|cloud",
                scheduled_fired.data.trigger_id.as_str()
            ),
            format!(
                "{}|a-target|target_price|1|∅|KRW-BTC|101500000|tick:upbit:KRW-BTC:3|3|2026-11-02T01:00:00+00:00|onprem",
                trigger.as_str()
            ),
        ]
    );
    assert_eq!(
        rows(db, "SELECT position, market, price, tick_id FROM trigger_prices WHERE trigger_id LIKE 'trg:a-scheduled:%' ORDER BY position").await,
        vec!["0|KRW-BTC|99000000|tick:upbit:KRW-BTC:5", "1|KRW-ETH|4500000|∅"]
    );

    // Dispatches: current status from the whole timeline; the sign-in body is never kept.
    assert_eq!(
        rows(
            db,
            "SELECT dispatch_id, purpose, user_id, phone_masked, priority, body_text, status, \
             status_site, attempts, sent_count, provider, provider_message_id, last_error_code \
             FROM dispatches ORDER BY requested_at"
        )
        .await,
        vec![
            format!(
                "{}|alert|u-0001|+8210****5678|alert|KRW-BTC reached 101,500,000 KRW|delivered|cloud|2|1|twilio|SM-second|20429",
                dispatch.as_str()
            ),
            format!(
                "{}|sign_in|∅|+8210****5678|sign_in|∅|sent|onprem|1|1|twilio|SM-code|∅",
                sign_in_id.as_str()
            ),
        ]
    );
    assert_eq!(
        rows(
            db,
            &format!(
                "SELECT status, attempt, site, at, error_code FROM dispatch_timeline \
                 WHERE dispatch_id = '{}' ORDER BY at",
                dispatch.as_str()
            )
        )
        .await,
        vec![
            "requested|∅|onprem|2026-11-02T01:00:00.1+00:00|∅",
            "claimed|1|onprem|2026-11-02T01:00:00.2+00:00|∅",
            "failed|1|onprem|2026-11-02T01:00:00.3+00:00|20429",
            "claimed|2|onprem|2026-11-02T01:00:01.4+00:00|∅",
            "sent|2|onprem|2026-11-02T01:00:01.5+00:00|∅",
            "delivered|2|cloud|2026-11-02T01:00:04+00:00|∅",
        ]
    );
    assert_eq!(
        rows(db, "SELECT trigger_id, reason_code FROM dispatch_skips").await,
        vec![format!(
            "{}|quiet_hours",
            scheduled_fired.data.trigger_id.as_str()
        )]
    );
    // The API's history reads.
    assert_eq!(
        rows(
            db,
            "SELECT alert_id, price, sms_status, skip_reason FROM alert_history ORDER BY fired_at"
        )
        .await,
        vec![
            "a-scheduled|99000000|∅|quiet_hours",
            "a-target|101500000|delivered|∅",
        ]
    );
    assert_eq!(
        rows(db, "SELECT entry, status, skip_reason FROM notification_history WHERE user_id = 'u-0001' ORDER BY at DESC").await,
        vec!["sms|delivered|∅", "skipped|skipped|quiet_hours"]
    );

    // Markets: the latest trade by trade time, with the exchange's names.
    assert_eq!(
        rows(
            db,
            "SELECT market, korean_name, english_name, trade_price, change_rate, trade_at, sequential_id \
             FROM markets ORDER BY market"
        )
        .await,
        vec![
            "KRW-BTC|비트코인|Bitcoin|99000000|0.0123|2026-11-02T00:01:10+00:00|15",
            "KRW-ETH|이더리움|Ethereum|4500000|0.0123|2026-11-02T00:00:20+00:00|501",
        ]
    );
    // Candles: open and close by trade time across batches, sums of the trades' volumes.
    assert_eq!(
        rows(
            db,
            "SELECT market, minute, open, high, low, close, volume, ticks FROM candles_1m \
             ORDER BY market, minute"
        )
        .await,
        vec![
            "KRW-BTC|2026-11-02T00:00:00+00:00|90000000|110000000|90000000|95000000|1.90|5",
            "KRW-BTC|2026-11-02T00:01:00+00:00|99000000|99000000|99000000|99000000|2|1",
            "KRW-ETH|2026-11-02T00:00:00+00:00|4500000|4500000|4500000|4500000|0|1",
        ]
    );

    // Dead letters: the one published, and the poison message the alerts projection parked.
    assert_eq!(
        rows(
            db,
            "SELECT stream, consumer, reason_code, original_message_id, event_type, payload \
             FROM dead_letters ORDER BY consumer"
        )
        .await,
        vec![
            "DISPATCH|dispatcher|too_many_deliveries|req:dsp-0123456789abcdef0123456789abcdef|dispatch.requested|{\"broken\":true}",
            "ALERTS|projector-alerts|not_json|alert:a-poison:1:onprem|∅|this is not an envelope",
        ]
    );
}

/// Every projection table of `schema`, rows as JSON without the columns stamped at write time
/// (`recorded_at`, `updated_at`) and, with `without_positions`, without this site's stream positions.
async fn tables(
    db: &tokio_postgres::Client,
    schema: &str,
    without_positions: bool,
) -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for table in [
        "users",
        "alerts",
        "aggregate_events",
        "triggers",
        "trigger_prices",
        "alert_trigger_stats",
        "dispatches",
        "dispatch_triggers",
        "dispatch_timeline",
        "dispatch_skips",
        "markets",
        "candles_1m",
        "dead_letters",
    ] {
        let dropped = if without_positions {
            " - 'recorded_at' - 'updated_at' - 'stream_sequence' - 'deadletter_sequence' - 'tick_sequence'"
        } else {
            " - 'recorded_at' - 'updated_at'"
        };
        let sql = format!(
            "SELECT (to_jsonb(t){dropped})::text AS row FROM {schema}.{table} t ORDER BY 1"
        );
        let rows = db
            .query(&sql, &[])
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        all.push((table.to_owned(), rows));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_written_at_both_sites_during_a_partition_merge_the_same_way_at_both() {
    let sites = started_sites().await;
    let onprem_db = database().await;
    let cloud_db = database().await;
    let onprem = Publisher::new(&sites, Site::Onprem).await;
    let cloud = Publisher::new(&sites, Site::Cloud).await;
    let onprem_js = sites.jetstream(Site::Onprem).await;
    let cloud_js = sites.jetstream(Site::Cloud).await;
    let settings = serde_json::json!({"projections": ["users", "alerts"]});
    let onprem_projector = RunningProjector::start(&config(
        &sites,
        Site::Onprem,
        onprem_db.url(),
        settings.clone(),
    ));
    let cloud_projector =
        RunningProjector::start(&config(&sites, Site::Cloud, cloud_db.url(), settings));

    onprem
        .publish(&registered(USER, Site::Onprem, "2026-11-02T00:00:00Z"))
        .await;
    onprem
        .publish(&created(
            TARGET,
            USER,
            Site::Onprem,
            target_price_spec("100000000"),
            "2026-11-02T00:02:00Z",
        ))
        .await;
    for jetstream in [&onprem_js, &cloud_js] {
        wait_stream_holds(jetstream, "ALERTS", 1).await;
        wait_stream_holds(jetstream, "USERS", 1).await;
    }

    // The link is cut; the API at the cloud site cannot reach the home site and writes locally.
    sites.cut_link();
    onprem
        .publish(&paused(
            TARGET,
            USER,
            2,
            Site::Onprem,
            "2026-11-02T00:10:00Z",
        ))
        .await;
    cloud
        .publish(&updated(
            TARGET,
            USER,
            2,
            target_price_spec("120000000"),
            Site::Cloud,
            "2026-11-02T00:11:00Z",
        ))
        .await;
    onprem
        .publish(&resumed(
            TARGET,
            USER,
            3,
            Site::Onprem,
            "2026-11-02T00:12:00Z",
        ))
        .await;
    // Same version at the same instant: the site name decides.
    onprem
        .publish(&preferences_changed(
            USER,
            2,
            proto_events::domain::Locale::Ko,
            Site::Onprem,
            "2026-11-02T00:05:00Z",
        ))
        .await;
    cloud
        .publish(&preferences_changed(
            USER,
            2,
            proto_events::domain::Locale::En,
            Site::Cloud,
            "2026-11-02T00:05:00Z",
        ))
        .await;
    // Each side projects what it has: so far they disagree.
    wait_stream_holds(&onprem_js, "ALERTS", 3).await;
    wait_stream_holds(&cloud_js, "ALERTS", 2).await;
    wait_projected(
        onprem_db.client(),
        &onprem_js,
        &[Projection::Alerts, Projection::Users],
    )
    .await;
    wait_projected(
        cloud_db.client(),
        &cloud_js,
        &[Projection::Alerts, Projection::Users],
    )
    .await;
    let status = "SELECT status, target_price, version FROM alerts";
    assert_eq!(
        rows(onprem_db.client(), status).await,
        vec!["active|100000000|3"]
    );
    assert_eq!(
        rows(cloud_db.client(), status).await,
        vec!["active|120000000|2"]
    );

    sites.restore_link();
    sites.wait_link_up(PATIENCE).await;
    for jetstream in [&onprem_js, &cloud_js] {
        wait_stream_holds(jetstream, "ALERTS", 4).await;
        wait_stream_holds(jetstream, "USERS", 3).await;
    }
    wait_projected(
        onprem_db.client(),
        &onprem_js,
        &[Projection::Alerts, Projection::Users],
    )
    .await;
    wait_projected(
        cloud_db.client(),
        &cloud_js,
        &[Projection::Alerts, Projection::Users],
    )
    .await;
    onprem_projector.stop().await;
    cloud_projector.stop().await;

    // The later command won version 2; version 3 applies on top of it. Both sites agree.
    for db in [onprem_db.client(), cloud_db.client()] {
        assert_eq!(
            rows(
                db,
                "SELECT status, target_price, version, conflicts, last_message_id FROM alerts"
            )
            .await,
            vec!["active|120000000|3|1|alert:a-target:3:onprem"]
        );
        assert_eq!(
            rows(
                db,
                "SELECT aggregate, version, winner_message_id, winner_site, loser_message_id, loser_site \
                 FROM aggregate_conflicts ORDER BY aggregate"
            )
            .await,
            vec![
                "alert|2|alert:a-target:2:cloud|cloud|alert:a-target:2:onprem|onprem",
                "user|2|user:u-0001:2:onprem|onprem|user:u-0001:2:cloud|cloud",
            ]
        );
        assert_eq!(
            rows(db, "SELECT locale, version, conflicts FROM users").await,
            vec!["ko|2|1"]
        );
    }
    assert_eq!(
        tables(onprem_db.client(), "public", true).await,
        tables(cloud_db.client(), "public", true).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_into_another_schema_gives_the_live_read_models() {
    let sites = started_sites().await;
    let db = database().await;
    let onprem = Publisher::new(&sites, Site::Onprem).await;
    onprem
        .publish(&registered(USER, Site::Onprem, "2026-11-02T00:00:00Z"))
        .await;
    onprem
        .publish(&created(
            TARGET,
            USER,
            Site::Onprem,
            target_price_spec("100000000"),
            "2026-11-02T00:02:00Z",
        ))
        .await;
    onprem
        .publish(&paused(
            TARGET,
            USER,
            2,
            Site::Onprem,
            "2026-11-02T00:10:00Z",
        ))
        .await;
    onprem.publish(&parked(3, "2026-11-02T03:00:00Z")).await;
    let workload = Workload::new(50, 10);
    workload.publish(&onprem).await;
    let jetstream = sites.jetstream(Site::Onprem).await;
    wait_stream_holds(&jetstream, "DISPATCH", workload.dispatch.len() as u64).await;

    let config = config(&sites, Site::Onprem, db.url(), serde_json::json!({}));
    let projector = RunningProjector::start(&config);
    wait_projected(db.client(), &jetstream, &Projection::ALL).await;
    projector.stop().await;

    let pool = coinalarm_runtime::postgres::connect_pool(&config.postgres)
        .await
        .expect("pool");
    // Migrations are idempotent, in the live schema as in a rebuild target.
    assert_eq!(
        coinalarm_projector::Target::public()
            .migrate(&pool)
            .await
            .expect("migrate"),
        0
    );
    let target = coinalarm_projector::Target::new("rebuild_one").expect("schema name");
    let embedded = coinalarm_runtime::postgres::migrations::runner()
        .get_migrations()
        .len();
    assert_eq!(target.migrate(&pool).await.expect("migrate"), embedded);
    assert_eq!(target.migrate(&pool).await.expect("migrate again"), 0);

    // As the projector's own NATS user: a rebuild needs nothing more than the live service.
    let projector_js = async_nats::jetstream::new(sites.client(Site::Onprem, "projector").await);
    let options = coinalarm_projector::RebuildOptions {
        batch_size: 37,
        ..coinalarm_projector::RebuildOptions::everything_into(target.clone())
    };
    let reports = coinalarm_projector::rebuild(&projector_js, &pool, &options)
        .await
        .expect("rebuild");
    let ticks = reports
        .iter()
        .find(|report| report.projection == Projection::Ticks)
        .expect("ticks report");
    assert_eq!(
        (ticks.read, ticks.projected, ticks.checkpoint),
        (
            workload.ticks.len(),
            workload.ticks.len(),
            workload.ticks.len() as u64
        )
    );
    assert_eq!(
        tables(db.client(), "rebuild_one", false).await,
        tables(db.client(), "public", false).await
    );

    let statuses = coinalarm_projector::status(&projector_js, &pool, &target)
        .await
        .expect("status");
    assert_eq!(statuses.len(), Projection::ALL.len());
    assert!(
        statuses
            .iter()
            .all(|status| status.lag() == 0 && status.checkpoint > 0),
        "{statuses:?}"
    );

    // Running it again continues from the target's checkpoints: nothing is read twice into it.
    let again = coinalarm_projector::rebuild(&projector_js, &pool, &options)
        .await
        .expect("rebuild again");
    assert!(
        again.iter().all(|report| report.projected == 0),
        "{again:?}"
    );
    assert_eq!(
        tables(db.client(), "rebuild_one", false).await,
        tables(db.client(), "public", false).await
    );
}
