//! Postgres plumbing against a real server: pool, migrations (also concurrent), checkpoints, and
//! database creation.

use coinalarm_runtime::postgres::{self, Error, PostgresConfig};
use coinalarm_test_support::postgres::{TestDatabase, server_url};

fn config(db: &TestDatabase) -> PostgresConfig {
    PostgresConfig {
        url: db.url().to_owned(),
        pool_size: 2,
        ..PostgresConfig::default()
    }
}

async fn applied_versions(db: &TestDatabase) -> Vec<i32> {
    db.client()
        .query(
            "SELECT version FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .await
        .expect("schema history")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn pool_connects_and_pings() {
    let db = TestDatabase::create().await.expect("test database");
    let pool = postgres::connect_pool(&config(&db)).await.expect("pool");
    postgres::ping(&pool).await.expect("ping");
    let client = pool.get().await.expect("connection");
    let row = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), db.name());
}

#[tokio::test]
async fn connect_pool_reports_a_missing_database_and_a_bad_url() {
    let db = TestDatabase::create().await.expect("test database");
    let missing = PostgresConfig {
        url: db
            .url()
            .replace(db.name(), &format!("{}_missing", db.name())),
        ..PostgresConfig::default()
    };
    let err = postgres::connect_pool(&missing)
        .await
        .expect_err("no such database");
    assert!(matches!(err, Error::Connect(_)), "{err:?}");

    let bad = PostgresConfig {
        url: "postgres://host:notaport/db".to_owned(),
        ..PostgresConfig::default()
    };
    let err = postgres::connect_pool(&bad).await.expect_err("bad url");
    assert!(matches!(err, Error::InvalidUrl(_)), "{err:?}");
}

#[tokio::test]
async fn migrate_twice_is_idempotent() {
    let db = TestDatabase::create().await.expect("test database");
    let pool = postgres::connect_pool(&config(&db)).await.expect("pool");

    let first = postgres::migrate(&pool).await.expect("first migrate");
    assert!(
        first
            .applied_migrations()
            .iter()
            .any(|m| m.name() == "projection_checkpoints"),
        "{:?}",
        first.applied_migrations()
    );
    let second = postgres::migrate(&pool).await.expect("second migrate");
    assert!(second.applied_migrations().is_empty());

    let versions = applied_versions(&db).await;
    assert_eq!(versions.len(), first.applied_migrations().len());
    assert_eq!(versions.first(), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_from_two_pools_apply_each_migration_once() {
    let db = TestDatabase::create().await.expect("test database");
    let a = postgres::connect_pool(&config(&db)).await.expect("pool a");
    let b = postgres::connect_pool(&config(&db)).await.expect("pool b");

    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { postgres::migrate(&a).await }),
        tokio::spawn(async move { postgres::migrate(&b).await }),
    );
    let ra = ra.expect("task a").expect("migrate a");
    let rb = rb.expect("task b").expect("migrate b");

    // Whoever got the lock second found everything applied.
    let applied = ra.applied_migrations().len() + rb.applied_migrations().len();
    let versions = applied_versions(&db).await;
    assert_eq!(applied, versions.len());
    assert!(
        ra.applied_migrations().is_empty() || rb.applied_migrations().is_empty(),
        "both processes applied migrations"
    );
}

#[tokio::test]
async fn checkpoint_table_keeps_one_position_per_projection_and_stream() {
    let db = TestDatabase::create().await.expect("test database");
    let pool = postgres::connect_pool(&config(&db)).await.expect("pool");
    postgres::migrate(&pool).await.expect("migrate");

    let mut client = pool.get().await.expect("connection");
    let upsert = "INSERT INTO projection_checkpoints (projection, stream, last_sequence) \
                  VALUES ($1, $2, $3) \
                  ON CONFLICT (projection, stream) \
                  DO UPDATE SET last_sequence = EXCLUDED.last_sequence, updated_at = now()";
    // Advanced in the same transaction as the projected rows, which is what makes it exactly-once.
    let tx = client.transaction().await.expect("begin");
    tx.execute(upsert, &[&"alerts", &"ALERTS", &41_i64])
        .await
        .expect("insert");
    tx.execute(upsert, &[&"alerts", &"ALERTS", &42_i64])
        .await
        .expect("update");
    tx.execute(upsert, &[&"alerts", &"TICKS", &7_i64])
        .await
        .expect("other stream");
    tx.commit().await.expect("commit");

    let rows = db
        .client()
        .query(
            "SELECT stream, last_sequence FROM projection_checkpoints \
             WHERE projection = 'alerts' ORDER BY stream",
            &[],
        )
        .await
        .expect("select");
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![("ALERTS".to_owned(), 42), ("TICKS".to_owned(), 7)]
    );

    let negative = db
        .client()
        .execute(
            "INSERT INTO projection_checkpoints (projection, stream, last_sequence) \
             VALUES ('x', 'y', -1)",
            &[],
        )
        .await;
    assert!(negative.is_err(), "a negative sequence must be rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_database_creates_a_missing_database_once() {
    let db = TestDatabase::create().await.expect("test database");
    assert!(!postgres::ensure_database(db.url()).await.expect("exists"));

    // Remove it behind the handle's back (its drop uses IF EXISTS) to exercise creation.
    let (admin, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name()))
        .await
        .expect("drop");

    let (a, b) = tokio::join!(
        postgres::ensure_database(db.url()),
        postgres::ensure_database(db.url())
    );
    let created = [a.expect("ensure a"), b.expect("ensure b")];
    assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");

    let pool = postgres::connect_pool(&config(&db)).await.expect("pool");
    postgres::ping(&pool).await.expect("ping");
}
