//! Where projections write: a Postgres schema, set per transaction with `SET LOCAL search_path`, so the
//! same SQL fills the live read models or a rebuild's copy. Also the checkpoint rows and migrations of
//! a schema.

use std::fmt;

use deadpool_postgres::{Pool, Transaction};

/// A valid, unquoted Postgres schema name: the target of a projection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    schema: String,
}

/// Why a schema name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a usable schema name: expected 1 to 63 lower-case letters, digits or '_', \
     starting with a letter or '_', and not pg_*"
)]
pub struct InvalidSchema(pub String);

/// Longest identifier Postgres keeps without truncating it.
const IDENTIFIER_MAX: usize = 63;

impl Target {
    /// Accepts only names that need no quoting, so a name in config or on a command line can never
    /// smuggle SQL and always means the schema it reads as.
    pub fn new(schema: &str) -> Result<Target, InvalidSchema> {
        let mut bytes = schema.bytes();
        let valid_start = bytes
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first == b'_');
        let valid = valid_start
            && schema.len() <= IDENTIFIER_MAX
            && bytes.all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
            && !schema.starts_with("pg_");
        if valid {
            Ok(Target {
                schema: schema.to_owned(),
            })
        } else {
            Err(InvalidSchema(schema.to_owned()))
        }
    }

    /// The live read models.
    pub fn public() -> Target {
        Target {
            schema: "public".to_owned(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.schema
    }

    /// Points the transaction's unqualified names at this schema until it ends.
    pub async fn enter(&self, transaction: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        // Validated to need no quoting; quoted anyway so it reads as an identifier to a reviewer.
        transaction
            .batch_execute(&format!("SET LOCAL search_path TO \"{}\"", self.schema))
            .await
    }

    /// Creates the schema if needed and applies the embedded migrations inside it (its own
    /// `refinery_schema_history` included), so a rebuild target has every table the live one has.
    pub async fn migrate(&self, pool: &Pool) -> Result<usize, MigrateError> {
        if *self == Target::public() {
            let report = coinalarm_runtime::postgres::migrate(pool).await?;
            return Ok(report.applied_migrations().len());
        }
        let object = pool.get().await.map_err(MigrateError::Pool)?;
        // Taken out of the pool: this connection's session search_path is changed below, and it must
        // not serve anyone else afterwards.
        let mut client = deadpool_postgres::Object::take(object);
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{0}\"; SET search_path TO \"{0}\"",
                self.schema
            ))
            .await
            .map_err(MigrateError::Query)?;
        let report = coinalarm_runtime::postgres::migrations::runner()
            .run_async(&mut *client)
            .await
            .map_err(MigrateError::Migrate)?;
        Ok(report.applied_migrations().len())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.schema)
    }
}

/// Failures while preparing a target schema.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Runtime(#[from] coinalarm_runtime::postgres::Error),
    #[error("cannot get a postgres connection")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("postgres query failed")]
    Query(#[source] tokio_postgres::Error),
    #[error("migration failed")]
    Migrate(#[source] refinery::Error),
}

/// Reads a projection's checkpoint and locks its row for the transaction, creating it at 0 if absent.
/// The lock makes two projectors on one database take turns instead of interleaving batches.
pub async fn lock_checkpoint(
    transaction: &Transaction<'_>,
    projection: &str,
    stream: &str,
) -> Result<u64, tokio_postgres::Error> {
    let insert = transaction
        .prepare_cached(
            "INSERT INTO projection_checkpoints (projection, stream, last_sequence) \
             VALUES ($1, $2, 0) ON CONFLICT (projection, stream) DO NOTHING",
        )
        .await?;
    transaction
        .execute(&insert, &[&projection, &stream])
        .await?;
    let select = transaction
        .prepare_cached(
            "SELECT last_sequence FROM projection_checkpoints \
             WHERE projection = $1 AND stream = $2 FOR UPDATE",
        )
        .await?;
    let row = transaction
        .query_one(&select, &[&projection, &stream])
        .await?;
    Ok(to_sequence(row.get::<_, i64>(0)))
}

/// Moves a projection's checkpoint; only ever forward.
pub async fn advance_checkpoint(
    transaction: &Transaction<'_>,
    projection: &str,
    stream: &str,
    last_sequence: u64,
) -> Result<(), tokio_postgres::Error> {
    let update = transaction
        .prepare_cached(
            "UPDATE projection_checkpoints SET last_sequence = GREATEST(last_sequence, $3), \
             updated_at = now() WHERE projection = $1 AND stream = $2",
        )
        .await?;
    transaction
        .execute(&update, &[&projection, &stream, &to_bigint(last_sequence)])
        .await?;
    Ok(())
}

/// Reads a checkpoint without locking it (0 when the projection has none yet).
pub async fn read_checkpoint(
    pool: &Pool,
    target: &Target,
    projection: &str,
    stream: &str,
) -> Result<u64, CheckpointError> {
    let mut client = pool.get().await.map_err(CheckpointError::Pool)?;
    let transaction = client.transaction().await.map_err(CheckpointError::Query)?;
    target
        .enter(&transaction)
        .await
        .map_err(CheckpointError::Query)?;
    let row = transaction
        .query_opt(
            "SELECT last_sequence FROM projection_checkpoints WHERE projection = $1 AND stream = $2",
            &[&projection, &stream],
        )
        .await
        .map_err(CheckpointError::Query)?;
    transaction.commit().await.map_err(CheckpointError::Query)?;
    Ok(row.map_or(0, |row| to_sequence(row.get::<_, i64>(0))))
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot get a postgres connection")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("cannot read the checkpoint")]
    Query(#[source] tokio_postgres::Error),
}

/// Stream sequences are u64 on the wire and BIGINT in Postgres; JetStream sequences stay far below
/// 2^63, so saturating is a formality that keeps the conversion total.
pub fn to_bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The inverse of [`to_bigint`]; the CHECK constraint keeps stored sequences non-negative.
pub fn to_sequence(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_need_no_quoting() {
        for valid in ["public", "rebuild_20261102", "_scratch", "a1"] {
            assert_eq!(
                Target::new(valid).map(|t| t.to_string()),
                Ok(valid.to_owned())
            );
        }
        for invalid in [
            "",
            "Public",
            "1abc",
            "a-b",
            "a b",
            "x\"; drop table users; --",
            "pg_catalog",
            &"a".repeat(64),
        ] {
            assert!(Target::new(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn sequences_convert_both_ways() {
        assert_eq!(to_bigint(42), 42);
        assert_eq!(to_bigint(u64::MAX), i64::MAX);
        assert_eq!(to_sequence(42), 42);
        assert_eq!(to_sequence(-1), 0);
    }
}
