//! The transaction at the heart of the projector, against a real database without NATS: replays write
//! nothing twice, holes are refused unless known to be gaps in the stream, and the checkpoint moves
//! only with the rows.

mod common;

use coinalarm_projector::Projection;
use coinalarm_projector::batch::{GapPolicy, Hole, Outcome, apply_batch};
use coinalarm_projector::event::Slot;
use coinalarm_projector::target::Target;
use common::*;
use pretty_assertions::assert_eq;

fn tick_slot(position: u64, sequential_id: u64, trade_price: &str, at: &str) -> Slot {
    let envelope = tick("KRW-BTC", sequential_id, trade_price, Some("1"), at);
    Slot::decode(
        position,
        "ticks.upbit.KRW-BTC",
        None,
        proto_events::encode(&envelope).into(),
    )
}

fn committed(outcome: Outcome) -> coinalarm_projector::batch::Committed {
    match outcome {
        Outcome::Committed(committed) => committed,
        Outcome::Gap { checkpoint, hole } => panic!("unexpected gap {hole:?} after {checkpoint}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_write_nothing_and_holes_write_nothing() {
    init_logs();
    let db = database().await;
    let pool =
        coinalarm_runtime::postgres::connect_pool(&coinalarm_runtime::postgres::PostgresConfig {
            url: db.url().to_owned(),
            pool_size: 2,
            ..Default::default()
        })
        .await
        .expect("pool");
    let target = Target::public();
    let embedded = coinalarm_runtime::postgres::migrations::runner()
        .get_migrations()
        .len();
    assert_eq!(target.migrate(&pool).await.expect("migrate"), embedded);
    assert_eq!(target.migrate(&pool).await.expect("migrate again"), 0);
    let candles = "SELECT open, close, volume, ticks FROM candles_1m";

    let first = [
        tick_slot(1, 1, "100", "2026-11-02T00:00:01Z"),
        tick_slot(2, 2, "101", "2026-11-02T00:00:02Z"),
        tick_slot(3, 3, "102", "2026-11-02T00:00:03Z"),
    ];
    let first: Vec<&Slot> = first.iter().collect();
    let reject = GapPolicy::Reject { accepted: None };
    let outcome = committed(
        apply_batch(&pool, &target, Projection::Ticks, &first, reject)
            .await
            .expect("apply"),
    );
    assert_eq!(
        (
            outcome.checkpoint,
            outcome.applied.projected,
            outcome.replayed
        ),
        (3, 3, 0)
    );
    assert_eq!(rows(db.client(), candles).await, vec!["100|102|3|3"]);

    // The same batch again (a crash between commit and ack): skipped, nothing written.
    let again = committed(
        apply_batch(&pool, &target, Projection::Ticks, &first, reject)
            .await
            .expect("apply"),
    );
    assert_eq!(
        (again.checkpoint, again.applied.projected, again.replayed),
        (3, 0, 3)
    );
    assert_eq!(rows(db.client(), candles).await, vec!["100|102|3|3"]);

    // Position 4 is missing: refused whole, nothing written, the checkpoint stays.
    let later = [
        tick_slot(5, 5, "104", "2026-11-02T00:00:05Z"),
        Slot::decode(
            6,
            "ticks.upbit.KRW-BTC",
            None,
            bytes::Bytes::from_static(b"garbage"),
        ),
    ];
    let later: Vec<&Slot> = later.iter().collect();
    let hole = Hole {
        expected: 4,
        found: 5,
    };
    assert_eq!(
        apply_batch(&pool, &target, Projection::Ticks, &later, reject)
            .await
            .expect("apply"),
        Outcome::Gap {
            checkpoint: 3,
            hole
        }
    );
    assert_eq!(rows(db.client(), candles).await, vec!["100|102|3|3"]);
    assert_eq!(
        checkpoint(db.client(), "public", Projection::Ticks).await,
        3
    );

    // Known to be missing from the stream: passed over, and the undecodable position with it.
    let accepted = committed(
        apply_batch(
            &pool,
            &target,
            Projection::Ticks,
            &later,
            GapPolicy::Reject {
                accepted: Some(hole),
            },
        )
        .await
        .expect("apply"),
    );
    assert_eq!(
        (
            accepted.checkpoint,
            accepted.applied.projected,
            accepted.undecodable,
            accepted.skipped_holes
        ),
        (6, 1, 1, vec![hole])
    );
    assert_eq!(rows(db.client(), candles).await, vec!["100|104|4|4"]);
}
