//! Read-model queries through each connection's prepared-statement cache.
//!
//! Why: every query the API sends is one of a few fixed texts, and Postgres spent longer planning them
//! than running them (1.4 ms planning against 0.2 ms execution for an alert read under load). A cached
//! statement is parsed once per connection, and after a few runs Postgres keeps a generic plan.

use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub async fn query(
    connection: &Object,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = connection.prepare_cached(sql).await?;
    connection.query(&statement, params).await
}

pub async fn query_opt(
    connection: &Object,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = connection.prepare_cached(sql).await?;
    connection.query_opt(&statement, params).await
}

pub async fn query_one(
    connection: &Object,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, tokio_postgres::Error> {
    let statement = connection.prepare_cached(sql).await?;
    connection.query_one(&statement, params).await
}
