//! Exactly once under failure: a projector killed mid-stream, batches redelivered after their
//! transaction committed, Postgres going away for a while, and a fresh database behind existing
//! consumers. Every case ends with the read models holding every event exactly once.

mod common;

use coinalarm_projector::runner::consumer_config;
use coinalarm_projector::{Projection, ProjectorConfig};
use coinalarm_test_support::wait;
use common::*;
use pretty_assertions::assert_eq;
use proto_events::Site;

/// The tables whose content must not change when events are applied again; `ticks` and `volume` of
/// candles and the dispatch counters are the sums a second application would inflate.
const SNAPSHOT: [&str; 6] = [
    CANDLES,
    "SELECT exchange, market, trade_price, sequential_id, stream_sequence FROM markets ORDER BY market",
    "SELECT trigger_id, alert_id, price, stream_sequence FROM triggers ORDER BY trigger_id",
    "SELECT alert_id, trigger_count, last_trigger_id FROM alert_trigger_stats ORDER BY alert_id",
    "SELECT dispatch_id, status, attempts, sent_count FROM dispatches ORDER BY dispatch_id",
    "SELECT message_id, dispatch_id, status FROM dispatch_timeline ORDER BY message_id",
];

async fn snapshot(db: &tokio_postgres::Client) -> Vec<Vec<String>> {
    let mut tables = Vec::new();
    for sql in SNAPSHOT {
        tables.push(rows(db, sql).await);
    }
    tables
}

const PROJECTIONS: [Projection; 3] = [
    Projection::Ticks,
    Projection::Triggers,
    Projection::Dispatch,
];

async fn assert_workload_projected_once(db: &tokio_postgres::Client, workload: &Workload) {
    assert_eq!(rows(db, CANDLES).await, workload.expected_candles());
    let counts = rows(
        db,
        "SELECT (SELECT count(*) FROM triggers), (SELECT count(*) FROM trigger_prices), \
         (SELECT count(*) FROM dispatches), (SELECT count(*) FROM dispatch_timeline), \
         (SELECT sum(sent_count) FROM dispatches), (SELECT sum(trigger_count) FROM alert_trigger_stats)",
    )
    .await;
    let triggers = workload.triggers.len();
    assert_eq!(
        counts,
        vec![format!(
            "{triggers}|{triggers}|{triggers}|{}|{triggers}|{triggers}",
            workload.dispatch.len()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_stream_projects_every_event_exactly_once() {
    let sites = started_sites().await;
    let db = database().await;
    let workload = Workload::new(400, 150);
    let publisher = Publisher::new(&sites, Site::Onprem).await;
    workload.publish(&publisher).await;
    let jetstream = sites.jetstream(Site::Onprem).await;
    wait_stream_holds(&jetstream, "TICKS", workload.ticks.len() as u64).await;
    wait_stream_holds(&jetstream, "DISPATCH", workload.dispatch.len() as u64).await;
    let total_ticks = workload.ticks.len() as u64;

    let config = config(
        &sites,
        Site::Onprem,
        db.url(),
        serde_json::json!({"tick_batch_size": 10, "batch_size": 10, "projections": ["ticks", "triggers", "dispatch"]}),
    );
    // Killed twice while ticks are being projected, wherever it is: between batches, inside a
    // transaction, or between a commit and its acknowledgements.
    for fraction in [3, 2] {
        let projector = RunningProjector::start(&config);
        let threshold = total_ticks / fraction;
        wait::until("the projector to get some way", PATIENCE, || async {
            let at = checkpoint(db.client(), "public", Projection::Ticks).await;
            if at >= threshold {
                Ok(())
            } else {
                Err(format!("ticks at {at}"))
            }
        })
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"));
        projector.kill().await;
    }
    let projector = RunningProjector::start(&config);
    wait_projected(db.client(), &jetstream, &PROJECTIONS).await;
    projector.stop().await;

    assert_workload_projected_once(db.client(), &workload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_redelivered_after_their_commit_write_nothing_twice() {
    let sites = started_sites().await;
    let db = database().await;
    let workload = Workload::new(100, 40);
    let publisher = Publisher::new(&sites, Site::Onprem).await;
    workload.publish(&publisher).await;
    let jetstream = sites.jetstream(Site::Onprem).await;
    wait_stream_holds(&jetstream, "DISPATCH", workload.dispatch.len() as u64).await;

    let config = config(
        &sites,
        Site::Onprem,
        db.url(),
        serde_json::json!({"projections": ["ticks", "triggers", "dispatch"]}),
    );
    let settings: ProjectorConfig = config.section("projector").expect("settings");
    let projector = RunningProjector::start(&config);
    wait_projected(db.client(), &jetstream, &PROJECTIONS).await;
    projector.stop().await;
    let before = snapshot(db.client()).await;
    let checkpoints_before = checkpoints(db.client()).await;

    // A crash between commit and acknowledgement, for every batch at once: the consumers forget what
    // was acknowledged and deliver the whole streams again.
    for projection in PROJECTIONS {
        jetstream
            .delete_consumer_from_stream(projection.durable(), projection.stream())
            .await
            .expect("delete the consumer");
        jetstream
            .create_consumer_on_stream(
                consumer_config(projection, &settings, Site::Onprem, 1),
                projection.stream(),
            )
            .await
            .expect("recreate the consumer from the start");
    }
    let projector = RunningProjector::start(&config);
    for projection in PROJECTIONS {
        let last = last_sequence(&jetstream, projection.stream()).await;
        wait::until(
            &format!("every {projection} message to be delivered again and acknowledged"),
            PATIENCE,
            || async {
                let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
                    .get_consumer_from_stream(projection.durable(), projection.stream())
                    .await
                    .map_err(|error| error.to_string())?;
                let info = consumer.info().await.map_err(|error| error.to_string())?;
                if info.ack_floor.stream_sequence >= last {
                    Ok(())
                } else {
                    Err(format!(
                        "acknowledged up to {}",
                        info.ack_floor.stream_sequence
                    ))
                }
            },
        )
        .await
        .unwrap_or_else(|timeout| panic!("{timeout}"));
    }
    projector.stop().await;

    assert_eq!(snapshot(db.client()).await, before);
    assert_eq!(checkpoints(db.client()).await, checkpoints_before);
    assert_workload_projected_once(db.client(), &workload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_waited_out_and_loses_nothing() {
    let sites = started_sites().await;
    let db = database().await;
    let (proxy, proxied_url) = PostgresProxy::start(db.url()).await;
    let jetstream = sites.jetstream(Site::Onprem).await;
    let publisher = Publisher::new(&sites, Site::Onprem).await;
    let workload = Workload::new(120, 30);
    let (ticks_before, ticks_during) = workload.ticks.split_at(workload.ticks.len() / 2);

    let config = config(
        &sites,
        Site::Onprem,
        &proxied_url,
        serde_json::json!({"ack_wait": 2.0, "retry_max": 0.5, "projections": ["ticks", "triggers", "dispatch"]}),
    );
    let projector = RunningProjector::start(&config);
    publisher.publish_many(ticks_before).await;
    wait_stream_holds(&jetstream, "TICKS", ticks_before.len() as u64).await;
    wait_projected(db.client(), &jetstream, &[Projection::Ticks]).await;

    proxy.cut();
    publisher.publish_many(ticks_during).await;
    publisher.publish_many(&workload.triggers).await;
    publisher.publish_many(&workload.dispatch).await;
    let total_ticks = workload.ticks.len() as u64;
    // The projector holds a batch it cannot commit, and keeps it across several acknowledgement
    // deadlines (its retries extend them): nothing is redelivered, nothing is lost. Three projections
    // retrying about a dozen times each take well over the 2 s `ack_wait`.
    wait::until(
        "the projector to be retrying a held batch",
        PATIENCE,
        || async {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
                .get_consumer_from_stream(Projection::Ticks.durable(), "TICKS")
                .await
                .map_err(|error| error.to_string())?;
            let info = consumer
                .info()
                .await
                .map_err(|error| error.to_string())?
                .clone();
            let refused = proxy.refused();
            if info.num_ack_pending > 0 && refused >= 36 {
                Ok(info)
            } else {
                Err(format!(
                    "{} pending, {refused} connection attempts refused",
                    info.num_ack_pending
                ))
            }
        },
    )
    .await
    .map(|info| {
        assert_eq!(
            info.num_redelivered, 0,
            "a held batch was redelivered: {info:?}"
        );
    })
    .unwrap_or_else(|timeout| panic!("{timeout}"));
    assert!(checkpoint(db.client(), "public", Projection::Ticks).await < total_ticks);

    proxy.restore();
    wait_projected(db.client(), &jetstream, &PROJECTIONS).await;
    projector.stop().await;
    assert_workload_projected_once(db.client(), &workload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_is_rebuilt_from_the_streams_behind_existing_consumers() {
    let sites = started_sites().await;
    let first = database().await;
    let workload = Workload::new(60, 20);
    let publisher = Publisher::new(&sites, Site::Onprem).await;
    workload.publish(&publisher).await;
    let jetstream = sites.jetstream(Site::Onprem).await;
    wait_stream_holds(&jetstream, "DISPATCH", workload.dispatch.len() as u64).await;

    let settings = serde_json::json!({"projections": ["ticks", "triggers", "dispatch"]});
    let projector =
        RunningProjector::start(&config(&sites, Site::Onprem, first.url(), settings.clone()));
    wait_projected(first.client(), &jetstream, &PROJECTIONS).await;
    projector.stop().await;

    // The durable consumers have acknowledged everything; the new database has no checkpoint. The
    // projector must rewind them rather than wait for messages that will never come again.
    let second = database().await;
    let projector = RunningProjector::start(&config(&sites, Site::Onprem, second.url(), settings));
    wait_projected(second.client(), &jetstream, &PROJECTIONS).await;
    projector.stop().await;
    assert_eq!(
        snapshot(second.client()).await,
        snapshot(first.client()).await
    );
    assert_workload_projected_once(second.client(), &workload).await;
}

async fn checkpoints(db: &tokio_postgres::Client) -> Vec<String> {
    rows(
        db,
        "SELECT projection, stream, last_sequence FROM projection_checkpoints ORDER BY projection",
    )
    .await
}
