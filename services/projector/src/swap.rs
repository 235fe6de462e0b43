//! Putting rebuilt read models in place of the live ones (for `coinalarm projections rebuild`), in one
//! transaction, while the live projector and the API keep running.
//!
//! The transaction first locks the live checkpoint row of every projection swapped: the live projector
//! takes that lock at the start of each batch, so it pauses right there, before touching a table. Both
//! copies are then brought to the same stream position `T` (the rebuilt schema up to the live
//! checkpoint, or the live tables up to where the rebuild read, whichever is further), which makes the
//! row-by-row comparison meaningful however much arrived during the rebuild. Then the live tables move
//! to an archive schema, the rebuilt ones into `public` (indexes and constraints travel with a table;
//! grants and owner are copied), the views that read them are recreated (a view is bound to table
//! OIDs, not names), the live checkpoints are set to `T`, and the rebuild schema is dropped. When the
//! transaction commits the paused projector's batch continues at `T` on the new tables: nothing lost,
//! nothing applied twice. Any failure rolls everything back and the live tables stay as they were.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use deadpool_postgres::{Pool, Transaction};
use serde::Serialize;

use crate::batch::{self, GapPolicy, Outcome};
use crate::event::Slot;
use crate::projections::Projection;
use crate::rebuild::{RangeReader, RebuildError};
use crate::target::{self, Target};

/// Rows shown per table and side when the copies differ.
const SAMPLE_ROWS: i64 = 3;

/// How to swap.
#[derive(Debug, Clone)]
pub struct SwapOptions {
    /// The schema a rebuild filled; dropped once swapped in.
    pub rebuilt: Target,
    /// The schema the live tables move to (created; must not exist), kept for rollback.
    pub archive: Target,
    /// What to swap; must be closed under shared tables (see [`Projection::closed_selection`]).
    pub projections: Vec<Projection>,
    /// Compare the copies row by row before swapping.
    pub verify: bool,
    /// Swap even when the comparison finds differences.
    pub force: bool,
    pub batch_size: usize,
    /// How long to wait for the next message of the stream during the catch-up.
    pub idle_timeout: Duration,
    /// How long to wait for a lock (a long API query, a stuck projector batch) before giving up.
    pub lock_timeout: Duration,
}

/// What a swap found and did.
#[derive(Debug, Clone, Serialize)]
pub struct SwapReport {
    /// Whether the rebuilt tables are live now.
    pub swapped: bool,
    pub projections: Vec<CatchUp>,
    /// `None` when not verified.
    pub verification: Option<Verification>,
    /// Tables moved (each to `archive` and from `rebuilt`).
    pub tables: Vec<String>,
    /// Views recreated on the new tables, `schema.name`.
    pub views: Vec<String>,
    /// Where the previous tables are, when swapped.
    pub archive: Option<String>,
}

/// How one projection's copies were brought to the same position.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUp {
    pub projection: Projection,
    /// The live checkpoint when the projector was paused.
    pub live_checkpoint: u64,
    /// The rebuilt schema's checkpoint then.
    pub rebuilt_checkpoint: u64,
    /// The position both copies were brought to; the live checkpoint after the swap.
    pub position: u64,
    /// Events read to bring the rebuilt copy, and the live one, up to `position`.
    pub applied_to_rebuilt: usize,
    pub applied_to_live: usize,
}

/// The row-by-row comparison of every swapped table.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub tables: Vec<TableComparison>,
}

impl Verification {
    pub fn is_equal(&self) -> bool {
        self.tables.iter().all(TableComparison::is_equal)
    }

    pub fn differing(&self) -> impl Iterator<Item = &TableComparison> {
        self.tables.iter().filter(|table| !table.is_equal())
    }
}

/// One table compared (as multisets of rows over `columns`).
#[derive(Debug, Clone, Serialize)]
pub struct TableComparison {
    pub table: String,
    pub live_rows: i64,
    pub rebuilt_rows: i64,
    /// Rows of the live table with no equal row in the rebuilt one, and the reverse.
    pub only_live: i64,
    pub only_rebuilt: i64,
    /// A few of those rows, as JSON.
    pub live_sample: Vec<String>,
    pub rebuilt_sample: Vec<String>,
    /// Columns compared: all but bookkeeping ones filled by `now()` (`recorded_at`, `updated_at`),
    /// which differ between two projections of the same events.
    pub columns: Vec<String>,
    pub ignored_columns: Vec<String>,
}

impl TableComparison {
    pub fn is_equal(&self) -> bool {
        self.only_live == 0 && self.only_rebuilt == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("cannot get a postgres connection")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("postgres failed during the swap")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("cannot read the stream to catch up")]
    Stream(#[from] RebuildError),
    #[error("applying the last events of {projection} to {schema} failed")]
    Batch {
        projection: Projection,
        schema: String,
        #[source]
        source: batch::BatchError,
    },
    #[error(
        "{requested:?} cannot be swapped alone: it shares tables with {missing:?}; swap them together"
    )]
    NotClosed {
        requested: Vec<Projection>,
        missing: Vec<Projection>,
    },
    #[error("schema {0} already exists; pick another archive name")]
    ArchiveExists(String),
    #[error("schema {0} does not exist; rebuild into it first")]
    NotRebuilt(String),
    #[error("{schema} is the live schema or the rebuild schema; the archive must be a third one")]
    SameSchema { schema: String },
}

/// The tables of `projections`, each once, in a stable order.
pub fn tables_of(projections: &[Projection]) -> Vec<&'static str> {
    let mut seen = BTreeSet::new();
    projections
        .iter()
        .flat_map(|projection| projection.tables().iter().copied())
        .filter(|table| seen.insert(*table))
        .collect()
}

/// Brings `options.rebuilt` in place of the live tables of `options.projections`; see the module
/// documentation. When verification finds differences and `force` is not set, nothing changes and
/// the report says what differed (`swapped: false`).
pub async fn swap(
    jetstream: &jetstream::Context,
    pool: &Pool,
    options: &SwapOptions,
) -> Result<SwapReport, SwapError> {
    let closed = Projection::closed_selection(&options.projections);
    if closed.len() != options.projections.len() {
        return Err(SwapError::NotClosed {
            requested: options.projections.clone(),
            missing: closed
                .into_iter()
                .filter(|projection| !options.projections.contains(projection))
                .collect(),
        });
    }
    let live = Target::public();
    for schema in [&live, &options.rebuilt] {
        if options.archive == *schema {
            return Err(SwapError::SameSchema {
                schema: schema.to_string(),
            });
        }
    }
    let tables = tables_of(&options.projections);
    let mut client = pool.get().await.map_err(SwapError::Pool)?;
    let transaction = client.transaction().await?;
    transaction
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            options.lock_timeout.as_millis().max(1)
        ))
        .await?;
    if !schema_exists(&transaction, options.rebuilt.as_str()).await? {
        return Err(SwapError::NotRebuilt(options.rebuilt.to_string()));
    }
    if schema_exists(&transaction, options.archive.as_str()).await? {
        return Err(SwapError::ArchiveExists(options.archive.to_string()));
    }

    // Pause the live projector of each projection (in a fixed order: two swaps never deadlock).
    let mut catch_ups = Vec::with_capacity(options.projections.len());
    for projection in &options.projections {
        live.enter(&transaction).await?;
        let live_checkpoint =
            target::lock_checkpoint(&transaction, projection.name(), projection.stream()).await?;
        options.rebuilt.enter(&transaction).await?;
        let rebuilt_checkpoint =
            target::lock_checkpoint(&transaction, projection.name(), projection.stream()).await?;
        catch_ups.push(CatchUp {
            projection: *projection,
            live_checkpoint,
            rebuilt_checkpoint,
            position: live_checkpoint.max(rebuilt_checkpoint),
            applied_to_rebuilt: 0,
            applied_to_live: 0,
        });
    }
    for catch_up in &mut catch_ups {
        catch_up.applied_to_rebuilt = apply_range(
            &transaction,
            jetstream,
            &options.rebuilt,
            catch_up.projection,
            catch_up.rebuilt_checkpoint,
            catch_up.position,
            options,
        )
        .await?;
        // Only to compare like with like: the live tables are archived right after.
        if options.verify {
            catch_up.applied_to_live = apply_range(
                &transaction,
                jetstream,
                &live,
                catch_up.projection,
                catch_up.live_checkpoint,
                catch_up.position,
                options,
            )
            .await?;
        }
    }

    let verification = if options.verify {
        let mut compared = Vec::with_capacity(tables.len());
        for table in &tables {
            compared.push(compare_table(&transaction, &options.rebuilt, table).await?);
        }
        Some(Verification { tables: compared })
    } else {
        None
    };
    let mut report = SwapReport {
        swapped: false,
        projections: catch_ups,
        verification,
        tables: tables.iter().map(|table| (*table).to_owned()).collect(),
        views: Vec::new(),
        archive: None,
    };
    if let Some(verification) = &report.verification
        && !verification.is_equal()
        && !options.force
    {
        transaction.rollback().await?;
        return Ok(report);
    }

    let views = dependent_views(&transaction, &tables, &options.rebuilt).await?;
    for view in &views {
        transaction
            .batch_execute(&format!(
                "DROP VIEW {}",
                qualified(&view.schema, &view.name)
            ))
            .await?;
    }
    let archive = options.archive.as_str();
    transaction
        .batch_execute(&format!("CREATE SCHEMA {}", quote(archive)))
        .await?;
    // The checkpoints the archived tables stand at, for a rollback by hand.
    transaction
        .execute(
            &format!(
                "CREATE TABLE {0}.projection_checkpoints AS SELECT * FROM public.projection_checkpoints \
                 WHERE projection = ANY($1)",
                quote(archive)
            ),
            &[&options
                .projections
                .iter()
                .map(|projection| projection.name())
                .collect::<Vec<_>>()],
        )
        .await?;
    for table in &tables {
        copy_privileges(&transaction, "public", options.rebuilt.as_str(), table).await?;
        transaction
            .batch_execute(&format!(
                "ALTER TABLE public.{table} SET SCHEMA {archive}; \
                 ALTER TABLE {rebuilt}.{table} SET SCHEMA public",
                table = quote(table),
                archive = quote(archive),
                rebuilt = quote(options.rebuilt.as_str()),
            ))
            .await?;
    }
    // View definitions were rendered with `public` as the search path: their names resolve there.
    transaction
        .batch_execute("SET LOCAL search_path TO public")
        .await?;
    for view in &views {
        view.recreate(&transaction).await?;
        report.views.push(format!("{}.{}", view.schema, view.name));
    }
    for catch_up in &report.projections {
        transaction
            .execute(
                "UPDATE public.projection_checkpoints SET last_sequence = $3, updated_at = now() \
                 WHERE projection = $1 AND stream = $2",
                &[
                    &catch_up.projection.name(),
                    &catch_up.projection.stream(),
                    &target::to_bigint(catch_up.position),
                ],
            )
            .await?;
    }
    transaction
        .batch_execute(&format!(
            "DROP SCHEMA {} CASCADE",
            quote(options.rebuilt.as_str())
        ))
        .await?;
    transaction.commit().await?;
    report.swapped = true;
    report.archive = Some(archive.to_owned());
    tracing::info!(archive, tables = ?report.tables, views = ?report.views, "rebuilt read models swapped in");
    Ok(report)
}

/// Applies positions `after + 1 ..= to` of the projection's stream to `target` inside the swap
/// transaction; the number of positions read.
async fn apply_range(
    transaction: &Transaction<'_>,
    jetstream: &jetstream::Context,
    target: &Target,
    projection: Projection,
    after: u64,
    to: u64,
    options: &SwapOptions,
) -> Result<usize, SwapError> {
    if to <= after {
        return Ok(0);
    }
    let mut reader = RangeReader::open(
        jetstream,
        projection.stream(),
        after + 1,
        Some(to),
        options.batch_size,
        options.idle_timeout,
    )
    .await?;
    let mut read = 0;
    while let Some(slots) = reader.next_batch().await? {
        read += slots.len();
        let batch: Vec<&Slot> = slots.iter().collect();
        let outcome = batch::apply_batch_in(
            transaction,
            target,
            projection,
            &batch,
            GapPolicy::AcceptAll,
        )
        .await
        .map_err(|source| SwapError::Batch {
            projection,
            schema: target.to_string(),
            source,
        })?;
        debug_assert!(matches!(outcome, Outcome::Committed(_)));
    }
    // Positions past the last message (deleted at the stream's tail) still count as read.
    target.enter(transaction).await?;
    target::advance_checkpoint(transaction, projection.name(), projection.stream(), to).await?;
    Ok(read)
}

async fn schema_exists(
    transaction: &Transaction<'_>,
    schema: &str,
) -> Result<bool, tokio_postgres::Error> {
    let row = transaction
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await?;
    Ok(row.get(0))
}

/// Compares `public.<table>` with `<rebuilt>.<table>` as multisets of rows (`EXCEPT ALL` both ways).
async fn compare_table(
    transaction: &Transaction<'_>,
    rebuilt: &Target,
    table: &str,
) -> Result<TableComparison, tokio_postgres::Error> {
    let columns = transaction
        .query(
            "SELECT column_name::text, COALESCE(column_default, '') ILIKE '%now()%' \
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 \
             ORDER BY ordinal_position",
            &[&table],
        )
        .await?;
    let (mut compared, mut ignored) = (Vec::new(), Vec::new());
    for row in columns {
        let name: String = row.get(0);
        if row.get::<_, bool>(1) {
            ignored.push(name);
        } else {
            compared.push(name);
        }
    }
    let list = compared
        .iter()
        .map(|column| quote(column))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH live AS (SELECT {list} FROM public.{table}), \
              rebuilt AS (SELECT {list} FROM {schema}.{table}), \
              only_live AS (SELECT * FROM live EXCEPT ALL SELECT * FROM rebuilt), \
              only_rebuilt AS (SELECT * FROM rebuilt EXCEPT ALL SELECT * FROM live) \
         SELECT (SELECT count(*) FROM live), (SELECT count(*) FROM rebuilt), \
                (SELECT count(*) FROM only_live), (SELECT count(*) FROM only_rebuilt), \
                ARRAY(SELECT row_to_json(r)::text FROM (SELECT * FROM only_live LIMIT $1) r), \
                ARRAY(SELECT row_to_json(r)::text FROM (SELECT * FROM only_rebuilt LIMIT $1) r)",
        table = quote(table),
        schema = quote(rebuilt.as_str()),
    );
    let row = transaction.query_one(&sql, &[&SAMPLE_ROWS]).await?;
    Ok(TableComparison {
        table: table.to_owned(),
        live_rows: row.get(0),
        rebuilt_rows: row.get(1),
        only_live: row.get(2),
        only_rebuilt: row.get(3),
        live_sample: row.get(4),
        rebuilt_sample: row.get(5),
        columns: compared,
        ignored_columns: ignored,
    })
}

/// A view that reads a swapped table, as it must be recreated.
struct DependentView {
    schema: String,
    name: String,
    definition: String,
    grants: Vec<String>,
    owner: String,
    comment: Option<String>,
}

impl DependentView {
    async fn recreate(&self, transaction: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        let name = qualified(&self.schema, &self.name);
        transaction
            .batch_execute(&format!("CREATE VIEW {name} AS {}", self.definition))
            .await?;
        let current: String = transaction
            .query_one("SELECT quote_ident(current_user::text)", &[])
            .await?
            .get(0);
        if current != self.owner {
            transaction
                .batch_execute(&format!("ALTER VIEW {name} OWNER TO {}", self.owner))
                .await?;
        }
        for grant in &self.grants {
            transaction.batch_execute(grant).await?;
        }
        if let Some(comment) = &self.comment {
            transaction
                .execute(
                    &format!("COMMENT ON VIEW {name} IS {}", quote_literal(comment)),
                    &[],
                )
                .await?;
        }
        Ok(())
    }
}

/// Views (outside the rebuild schema) that read any of `public.<tables>`, with what it takes to
/// recreate them. Views are bound to the tables' OIDs: left alone, they would follow the old tables
/// into the archive.
async fn dependent_views(
    transaction: &Transaction<'_>,
    tables: &[&str],
    rebuilt: &Target,
) -> Result<Vec<DependentView>, tokio_postgres::Error> {
    // Render the definitions with only `public` visible, so their table names come out unqualified
    // and resolve to the swapped-in tables when recreated.
    transaction
        .batch_execute("SET LOCAL search_path TO public")
        .await?;
    let tables: Vec<String> = tables.iter().map(|table| (*table).to_owned()).collect();
    let rows = transaction
        .query(
            "SELECT DISTINCT view_namespace.nspname::text, view.relname::text, \
                    pg_get_viewdef(view.oid), quote_ident(pg_get_userbyid(view.relowner)::text), \
                    obj_description(view.oid, 'pg_class'), view.oid \
             FROM pg_depend dependency \
             JOIN pg_rewrite rule ON rule.oid = dependency.objid \
             JOIN pg_class view ON view.oid = rule.ev_class \
             JOIN pg_namespace view_namespace ON view_namespace.oid = view.relnamespace \
             JOIN pg_class source ON source.oid = dependency.refobjid \
             WHERE dependency.classid = 'pg_rewrite'::regclass \
               AND dependency.refclassid = 'pg_class'::regclass \
               AND source.relnamespace = 'public'::regnamespace \
               AND source.relname = ANY($1) \
               AND view.relkind = 'v' AND view.oid <> source.oid \
               AND view_namespace.nspname <> $2 \
             ORDER BY 1, 2",
            &[&tables, &rebuilt.as_str()],
        )
        .await?;
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        let schema: String = row.get(0);
        let name: String = row.get(1);
        let oid: u32 = row.get(5);
        let target = qualified(&schema, &name);
        let grants = transaction
            .query(
                "SELECT format('GRANT %s ON %s TO %s%s', privilege.privilege_type, $2::text, \
                        CASE WHEN privilege.grantee = 0 THEN 'PUBLIC' \
                             ELSE quote_ident(pg_get_userbyid(privilege.grantee)::text) END, \
                        CASE WHEN privilege.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
                 FROM pg_class relation, aclexplode(relation.relacl) privilege \
                 WHERE relation.oid = $1",
                &[&oid, &target],
            )
            .await?
            .iter()
            .map(|grant| grant.get(0))
            .collect();
        views.push(DependentView {
            schema,
            name,
            definition: row.get(2),
            owner: row.get(3),
            comment: row.get(4),
            grants,
        });
    }
    Ok(views)
}

/// Gives `<to>.<table>` the owner and privileges of `<from>.<table>`.
async fn copy_privileges(
    transaction: &Transaction<'_>,
    from: &str,
    to: &str,
    table: &str,
) -> Result<(), tokio_postgres::Error> {
    let source = qualified(from, table);
    let destination = qualified(to, table);
    let owners = transaction
        .query_one(
            "SELECT quote_ident(pg_get_userbyid(source.relowner)::text), \
                    quote_ident(pg_get_userbyid(destination.relowner)::text) \
             FROM pg_class source, pg_class destination \
             WHERE source.oid = $1::text::regclass AND destination.oid = $2::text::regclass",
            &[&source, &destination],
        )
        .await?;
    let (source_owner, destination_owner): (String, String) = (owners.get(0), owners.get(1));
    if source_owner != destination_owner {
        transaction
            .batch_execute(&format!(
                "ALTER TABLE {destination} OWNER TO {source_owner}"
            ))
            .await?;
    }
    let grants: Vec<String> = transaction
        .query(
            "SELECT format('GRANT %s ON %s TO %s%s', privilege.privilege_type, $2::text, \
                    CASE WHEN privilege.grantee = 0 THEN 'PUBLIC' \
                         ELSE quote_ident(pg_get_userbyid(privilege.grantee)::text) END, \
                    CASE WHEN privilege.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
             FROM pg_class relation, aclexplode(relation.relacl) privilege \
             WHERE relation.oid = $1::text::regclass",
            &[&source, &destination],
        )
        .await?
        .iter()
        .map(|grant| grant.get(0))
        .collect();
    for grant in grants {
        transaction.batch_execute(&grant).await?;
    }
    Ok(())
}

/// A double-quoted identifier.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote(schema), quote(name))
}

/// A single-quoted string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_listed_once() {
        assert_eq!(
            tables_of(&[Projection::Users, Projection::Alerts]),
            vec!["users", "aggregate_events", "alerts"]
        );
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(qualified("public", "a\"b"), "\"public\".\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
