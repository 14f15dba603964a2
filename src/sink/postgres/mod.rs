//! The staging PostgreSQL sink: a typed mirror of each source table, the
//! analysts' staging area and the source for rebuilds.
//!
//! ## Tables
//! Each mapped table gets `__id` (the document id, primary key),
//! `__position` (source position, fixed-width hex), `__deleted`,
//! `__source_ts`, `__partition` and `__offset` (the Kafka record that last
//! wrote the row; added to older tables on prepare) and `__written_at`, plus one column per output field, added
//! when the field first appears with a known type (from the Debezium schema:
//! `numeric(p,s)`, `timestamp(3|6)`, `timestamptz`, `uuid`, `bytea`, `jsonb`,
//! ...; or from the read model's `postgres.types`). A column whose source
//! type widened is altered in place (`schema::classify`), and a change it
//! cannot make in place is left to the read model's `on_type_change`. A
//! column the source dropped is kept, nulled or (`on_drop: drop`,
//! `dropped.rs`) dropped from every version table. A numeric value its column would round is
//! refused, never rounded. Every identifier is quoted.
//!
//! ## Writes and the guard
//! One transaction per table and batch: binary `COPY` into a temporary table, then
//! `INSERT ... ON CONFLICT DO NOTHING` for new ids and one `UPDATE ... WHERE
//! target.__position < new.__position` for existing ones, then the progress
//! record of the batch's partitions (`projector.progress`, from
//! `migrations/`). A stale event never overwrites a newer row.
//!
//! ## Deletes
//! Soft deletes: a delete (or a row that no longer matches the read model's
//! `where`) sets `__deleted = true` and the delete's position, and keeps the
//! values the row had in the table (a row first seen as a delete holds only
//! its key). The row stays as a tombstone for ever, so a late, older event
//! can never bring it back. Readers use the view `<table>_live`, which has
//! only live rows, or `<table>`, which has every row with its tombstones.
//! Both views select from the current version's table, `<table>_vN` (see
//! [`crate::sink::catalog`]; a table from before versions is renamed to
//! `<table>_v1` in one transaction with the views' creation). A Kafka tombstone (a compaction delete) is guarded by
//! offset, not position (see `compaction.rs`): it deletes only a live
//! row last written from its partition at a lower offset, and keeps the
//! row's `__position`. A value the connector could not capture (LOB/TOAST
//! placeholder) leaves the stored column as it was.
//!
//! ## Errors
//! [`kind_of_sqlstate`] is the one table from SQLSTATE to [`ErrorKind`]:
//! only a value PostgreSQL refuses (classes 22 and 23, and a value the
//! binary encoder cannot put in its column) is about the data; the pipeline
//! then isolates the bad rows. A missing table or column is re-created, and
//! everything else is retried with the sink reported down.

pub mod binary;
mod compaction;
mod dropped;
pub mod schema;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::{
    Document, ErrorKind, FieldSource, NewField, Outcome, Retype, Sink, SinkError, StoredPosition, TypeChange, Write,
    shape,
};
use crate::decode::{Row, Value};
use crate::mapping::{OnDrop, ReadModel, TableMapping};
use crate::source::PartitionOffset;
use binary::Cell;
use compaction::{Applied, compaction_deletes};
pub use compaction::{compaction_delete_sql, compaction_unmatched_sql};
pub use schema::{pg_type_of_field, pg_type_of_value, quote, quote_table};

mod migrations {
    refinery::embed_migrations!("migrations");
}

const SINK: &str = "postgres";

fn err(kind: ErrorKind, message: impl Into<String>) -> SinkError {
    SinkError::new(SINK, kind, message)
}

/// Applies `migrations/` (projector's bookkeeping tables) to the staging
/// PostgreSQL; idempotent. The sink runs it on prepare, a rebuild before it
/// leases ranges.
pub async fn migrate(client: &mut Client) -> Result<(), SinkError> {
    migrations::migrations::runner()
        .run_async(client)
        .await
        .map(|_| ())
        .map_err(|e| err(ErrorKind::Unavailable, format!("applying migrations/: {e}")))
}

/// The one table from a SQLSTATE to what kind of failure it is.
pub fn kind_of_sqlstate(code: &str) -> ErrorKind {
    match code {
        // Undefined table, column or schema: a mirror table dropped behind our back.
        "42P01" | "42703" | "3F000" => ErrorKind::NotFound,
        "42501" | "28000" | "28P01" => ErrorKind::Permission,
        "25006" => ErrorKind::Unavailable,
        "40001" | "40P01" => ErrorKind::Conflict,
        c if c.starts_with("22") || c.starts_with("23") => ErrorKind::BadData,
        c if c.starts_with("08") || c.starts_with("57P") => ErrorKind::Unavailable,
        c if c.starts_with("53") => ErrorKind::Overloaded,
        // The rest of class 42 (syntax, duplicate objects, ...) is the
        // sink's statements or the read model's types, not a row.
        c if c.starts_with("42") => ErrorKind::Configuration,
        _ => ErrorKind::Unavailable,
    }
}

/// A PostgreSQL error as a sink error: its kind from the SQLSTATE, or
/// unavailable for a connection failure.
fn pg_err(what: &str, e: &tokio_postgres::Error) -> SinkError {
    let kind = e.as_db_error().map_or(ErrorKind::Unavailable, |db| kind_of_db_error(db.code().code(), db.constraint()));
    err(kind, format!("{what}: {}", describe(e)))
}

/// [`kind_of_sqlstate`], but a unique violation on a system catalog's index
/// (`pg_type_typname_nsp_index`, `pg_class_relname_nsp_index`) is two
/// sessions creating the same table at once (`CREATE TABLE IF NOT EXISTS`
/// is not safe against that): a conflict that the next attempt settles, as
/// the table then exists. On a table's own constraint it is the row's data.
pub fn kind_of_db_error(code: &str, constraint: Option<&str>) -> ErrorKind {
    match (code, constraint) {
        ("23505", Some(c)) if c.starts_with("pg_") => ErrorKind::Conflict,
        _ => kind_of_sqlstate(code),
    }
}

/// Columns every mirror table has, in COPY order. `__partition` and
/// `__offset` (the Kafka record that last wrote the row) order compaction
/// deletes; tables created before them get them on prepare, NULL in old rows.
pub const META: [(&str, &str); 7] = [
    ("__id", "text NOT NULL PRIMARY KEY"),
    ("__position", "text NOT NULL"),
    ("__deleted", "boolean NOT NULL DEFAULT false"),
    ("__source_ts", "timestamptz"),
    ("__partition", "integer"),
    ("__offset", "bigint"),
    ("__written_at", "timestamptz NOT NULL DEFAULT now()"),
];

/// The bookkeeping columns added after the first release, added to older
/// tables by [`Postgres::create_table`].
const ADDED_META: [&str; 2] = ["__partition", "__offset"];

/// A mirror table's column as the catalog has it.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    /// The type the binary COPY encodes for.
    pub ty: Type,
    /// `format_type` of it, with its limits: `numeric(12,4)`, `character varying(20)`.
    pub format: String,
}

/// Writes read-model rows to PostgreSQL.
pub struct Postgres {
    url: String,
    model: Arc<ReadModel>,
    client: Mutex<Option<Client>>,
    /// Known columns and their types per target table.
    columns: Mutex<HashMap<String, Vec<Column>>>,
    /// The version table this instance last pointed each table's views at:
    /// where views dropped behind its back are put back.
    readers: std::sync::Mutex<HashMap<String, String>>,
}

impl Postgres {
    pub fn new(url: &str, model: Arc<ReadModel>) -> Postgres {
        Postgres {
            url: url.to_string(),
            model,
            client: Mutex::new(None),
            columns: Mutex::new(HashMap::new()),
            readers: std::sync::Mutex::default(),
        }
    }

    async fn connect(&self) -> Result<Client, SinkError> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(|e| pg_err(&format!("cannot connect to {}; is PostgreSQL up?", redact(&self.url)), &e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(sink = SINK, error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    /// Reads the table's columns and types from the catalog.
    async fn load_columns(client: &Client, target: &str) -> Result<Vec<Column>, SinkError> {
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&quote_table(target)],
            )
            .await
            .map_err(|e| pg_err(&format!("reading columns of {target}"), &e))?;
        Ok(rows
            .iter()
            .map(|r| Column {
                name: r.get::<_, String>(0),
                ty: Type::from_oid(r.get::<_, u32>(1)).unwrap_or(Type::TEXT),
                format: r.get::<_, String>(2),
            })
            .collect())
    }

    /// Creates version table `target` if it does not exist, and adds the
    /// bookkeeping columns an older table lacks.
    async fn create_table(client: &Client, target: &str) -> Result<(), SinkError> {
        let meta: Vec<String> = META.iter().map(|(n, ty)| format!("{} {ty}", quote(n))).collect();
        let added: Vec<String> = META
            .iter()
            .filter(|(n, _)| ADDED_META.contains(n))
            .map(|(n, ty)| format!("ADD COLUMN IF NOT EXISTS {} {ty}", quote(n)))
            .collect();
        // Another session (a running instance, a second rebuild worker) may
        // create it at the same moment: see `DDL_LOCK`.
        let sql = format!(
            "{DDL_LOCK}{schema}CREATE TABLE IF NOT EXISTS {table} ({}); ALTER TABLE {table} {};",
            meta.join(", "),
            added.join(", "),
            schema = schema::create_schema(target),
            table = quote_table(target),
        );
        client.batch_execute(&sql).await.map_err(|e| pg_err(&format!("creating table {target}"), &e))
    }

    /// Records in the table's comment the file's section as it is when the
    /// version is created (a comment already there is its creation's: kept),
    /// for `plan` and `run` to compare with the file later.
    async fn record_section(client: &Client, table: &TableMapping, target: &str) -> Result<(), SinkError> {
        let row = client
            .query_one("SELECT obj_description(to_regclass($1), 'pg_class')", &[&quote_table(target)])
            .await
            .map_err(|e| pg_err(&format!("reading the comment of {target}"), &e))?;
        if row.get::<_, Option<String>>(0).is_some() {
            return Ok(());
        }
        let note = serde_json::json!({shape::SECTION_KEY: shape::section(table, &declared(table))});
        client
            .batch_execute(&format!("COMMENT ON TABLE {} IS {}", quote_table(target), literal(&note.to_string())))
            .await
            .map_err(|e| pg_err(&format!("recording the read-model section in the comment of {target}"), &e))
    }

    /// The table mapping of a version table of this sink.
    fn model_table(&self, target: &str) -> Option<&TableMapping> {
        self.model.tables.iter().find(|t| t.postgres.as_ref().is_some_and(|p| super::is_version_of(target, &p.table)))
    }

    /// The read model's `on_drop` for a table of this sink.
    fn model_drop(&self, target: &str) -> OnDrop {
        self.model_table(target).map(|t| t.policy.on_drop).unwrap_or_default()
    }

    /// Under `on_drop: drop`, drops the columns `writes` no longer carry
    /// from every version table of `target`'s table (see `dropped.rs`);
    /// returns `target`'s columns after it.
    async fn drop_missing(
        &self,
        client: &Client,
        target: &str,
        columns: Vec<Column>,
        writes: &[Write],
    ) -> Result<Vec<Column>, SinkError> {
        if self.model_drop(target) != OnDrop::Drop {
            return Ok(columns);
        }
        let gone = dropped::missing(&columns, writes);
        let Some(table) = self.model_table(target).filter(|_| !gone.is_empty()) else { return Ok(columns) };
        let logical = table.postgres.as_ref().map_or(target, |p| p.table.as_str());
        let rebuild = table.rebuild_command(SINK);
        let altered = dropped::drop_columns(client, logical, &gone, &rebuild).await?;
        let mut cache = self.columns.lock().await;
        let target = target.to_string();
        let reload: Vec<String> = altered
            .into_iter()
            .filter(|v| cache.contains_key(v.as_str()) && *v != target)
            .chain([target.clone()])
            .collect();
        for v in reload {
            let now = Self::load_columns(client, &v).await?;
            cache.insert(v, now);
        }
        Ok(cache.get(&target).cloned().unwrap_or_default())
    }

    /// The client, connecting first when there is none or it closed.
    async fn client<'g>(&self, guard: &'g mut Option<Client>) -> Result<&'g mut Client, SinkError> {
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(self.connect().await?);
        }
        guard.as_mut().ok_or_else(|| err(ErrorKind::Unavailable, "no connection"))
    }

    /// Applies writes to one table inside `tx`: the compaction deletes by
    /// offset, the rest by position.
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        target: &str,
        writes: &[&Write],
        columns: &[Column],
    ) -> Result<Applied, TxError> {
        let (compactions, writes): (Vec<&Write>, Vec<&Write>) = writes.iter().partition(|w| w.doc.compaction);
        let mut applied = Applied::default();
        if !compactions.is_empty() {
            applied = compaction_deletes(tx, target, &compactions).await?;
        }
        if !writes.is_empty() {
            applied.ids.extend(self.apply_positioned(tx, target, &writes, columns).await?);
        }
        Ok(applied)
    }

    /// Applies writes guarded by position; returns the applied ids.
    async fn apply_positioned(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        target: &str,
        writes: &[&Write],
        columns: &[Column],
    ) -> Result<HashSet<String>, TxError> {
        let data: Vec<&Column> = columns.iter().filter(|c| !META.iter().any(|(m, _)| *m == c.name)).collect();
        let tmp = "projector_batch";
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT * FROM {} WITH NO DATA; ALTER TABLE {tmp} ADD COLUMN __unavailable text[]",
            quote_table(target)
        ))
        .await?;
        let mut copy_cols: Vec<&str> =
            vec!["__id", "__position", "__deleted", "__source_ts", "__partition", "__offset", "__unavailable"];
        copy_cols.extend(data.iter().map(|c| c.name.as_str()));
        let mut types =
            vec![Type::TEXT, Type::TEXT, Type::BOOL, Type::TIMESTAMPTZ, Type::INT4, Type::INT8, Type::TEXT_ARRAY];
        types.extend(data.iter().map(|c| c.ty.clone()));
        let sink = tx
            .copy_in(&format!(
                "COPY {tmp} ({}) FROM STDIN (FORMAT binary)",
                copy_cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
            ))
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        copy_rows(writer, writes, &data, self.model_drop(target)).await?;
        let data_list = data.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
        let all = format!(
            "__id, __position, __deleted, __source_ts, __partition, __offset{}{data_list}",
            if data.is_empty() { "" } else { ", " }
        );
        let mut applied = HashSet::new();
        for row in tx
            .query(
                &format!(
                    "INSERT INTO {t} ({all}) SELECT {all} FROM {tmp} ON CONFLICT (__id) DO NOTHING RETURNING __id",
                    t = quote_table(target)
                ),
                &[],
            )
            .await?
        {
            applied.insert(row.get::<_, String>(0));
        }
        let sets: Vec<String> = data
            .iter()
            .map(|Column { name: n, .. }| {
                format!(
                    "{c} = CASE WHEN s.__unavailable @> ARRAY[{lit}]::text[] THEN t.{c} ELSE s.{c} END",
                    c = quote(n),
                    lit = literal(n)
                )
            })
            .chain([
                "__position = s.__position".into(),
                "__deleted = s.__deleted".into(),
                "__source_ts = s.__source_ts".into(),
                "__partition = s.__partition".into(),
                "__offset = s.__offset".into(),
                "__written_at = now()".into(),
            ])
            .collect();
        let update = format!(
            "UPDATE {t} AS t SET {} FROM {tmp} AS s WHERE t.__id = s.__id AND t.__position < s.__position RETURNING t.__id",
            sets.join(", "),
            t = quote_table(target)
        );
        for row in tx.query(&update, &[]).await? {
            applied.insert(row.get::<_, String>(0));
        }
        Ok(applied)
    }

    /// One transaction: one table's writes and the progress record.
    async fn transaction(
        &self,
        client: &mut Client,
        target: &str,
        writes: &[&Write],
        columns: &[Column],
        progress: &[PartitionOffset],
    ) -> Result<Applied, SinkError> {
        let failed = |e: tokio_postgres::Error| pg_err(&format!("writing table {target}"), &e);
        let tx = client.transaction().await.map_err(failed)?;
        let applied = self.apply(&tx, target, writes, columns).await.map_err(|e| match e {
            TxError::Pg(e) => failed(e),
            TxError::Encode(m) => err(ErrorKind::BadData, format!("writing table {target}: {m}")),
        })?;
        if !progress.is_empty() {
            // Informational (nothing reads it to resume); GREATEST keeps it
            // monotonic whatever order the per-table transactions commit in.
            let stmt = "INSERT INTO projector.progress (read_model, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
                        ON CONFLICT (read_model, topic, partition) DO UPDATE SET next_offset = GREATEST(projector.progress.next_offset, EXCLUDED.next_offset), updated_at = now()";
            for p in progress {
                tx.execute(stmt, &[&self.model.name, &p.topic, &p.partition, &p.next]).await.map_err(failed)?;
            }
        }
        tx.commit().await.map_err(failed)?;
        Ok(applied)
    }
}

/// The bookkeeping columns of a row (`__id`, `__position`, `__deleted`,
/// `__source_ts`, `__partition`, `__offset`, in [`META`] order), as the
/// staging table stores them.
pub fn meta_values(d: &Document) -> [Value; 6] {
    [
        Value::String(d.id.as_str().into()),
        Value::String(d.position.as_str().into()),
        Value::Bool(d.body.is_none()),
        d.source_ts_ms.map(|ms| Value::Timestamp(ms as i128 * 1_000_000)).unwrap_or(Value::Null),
        Value::Int(i64::from(d.lineage.partition)),
        Value::Int(d.lineage.offset),
    ]
}

/// A row's value for a catalog column name, which is the mapped form of a
/// long source name (see `schema::identifier`).
fn get<'r>(row: &'r Row, column: &str) -> Option<&'r Value> {
    row.columns.iter().find(|(n, _)| schema::identifier(n) == column).map(|(_, v)| v)
}

/// Writes every row of the batch into the COPY stream: the bookkeeping
/// columns, the list of columns to leave as stored, then the data columns.
async fn copy_rows(
    writer: BinaryCopyInWriter,
    writes: &[&Write],
    data: &[&Column],
    on_drop: OnDrop,
) -> Result<(), TxError> {
    let mut writer = std::pin::pin!(writer);
    for w in writes {
        let d = &w.doc;
        let meta = meta_values(d);
        // A delete keeps the last values: every non-key column is left as stored.
        let unavailable: Vec<String> = match &d.body {
            Some(body) => {
                let mut keep: Vec<String> = body
                    .columns
                    .iter()
                    .filter(|(_, v)| matches!(v, Value::Unavailable))
                    .map(|(n, _)| schema::identifier(n).into_owned())
                    .collect();
                // A column the source dropped (the row no longer has it)
                // keeps its stored value unless the read model says null.
                if on_drop == OnDrop::Keep {
                    keep.extend(
                        data.iter()
                            .filter(|c| get(body, &c.name).is_none() && get(&d.key, &c.name).is_none())
                            .map(|c| c.name.clone()),
                    );
                }
                keep
            }
            None => data.iter().map(|c| c.name.clone()).filter(|n| get(&d.key, n).is_none()).collect(),
        };
        let values: Vec<&Value> = data
            .iter()
            .map(|c| {
                d.body.as_ref().and_then(|b| get(b, &c.name)).or_else(|| get(&d.key, &c.name)).unwrap_or(&Value::Null)
            })
            .collect();
        let meta_cells: Vec<Cell<'_>> =
            META.iter().zip(&meta).map(|((column, _), value)| Cell { column, value, numeric: None }).collect();
        let cells: Vec<Cell<'_>> = data
            .iter()
            .zip(values)
            .map(|(c, value)| Cell { column: &c.name, value, numeric: schema::numeric_limits(&c.format) })
            .collect();
        let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(5 + cells.len());
        row.extend(meta_cells.iter().map(|c| c as &(dyn ToSql + Sync)));
        row.push(&unavailable);
        row.extend(cells.iter().map(|c| c as &(dyn ToSql + Sync)));
        writer.as_mut().write(&row).await.map_err(|e| {
            // Not the socket: the encoder refused a value for its column.
            let encoding = std::error::Error::source(&e).is_some_and(|s| !s.is::<std::io::Error>()) && !e.is_closed();
            if encoding {
                TxError::Encode(format!("document {:?}: {}", w.doc.id, describe(&e)))
            } else {
                TxError::Pg(e)
            }
        })?;
    }
    writer.finish().await?;
    Ok(())
}

/// Why applying rows failed: PostgreSQL said no, or a value could not be
/// encoded for its column (client side, before PostgreSQL saw it).
enum TxError {
    Pg(tokio_postgres::Error),
    Encode(String),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> TxError {
        TxError::Pg(e)
    }
}

/// The views readers use, `<logical>` (every row) and `<logical>_live`,
/// replaced to select from version table `physical`, in one transaction
/// (PostgreSQL runs a multi-statement simple query as one).
fn reader_views(logical: &str, physical: &str) -> String {
    let (all, live, table) = (quote_table(logical), quote_table(&format!("{logical}_live")), quote_table(physical));
    format!(
        "{DDL_LOCK}DROP VIEW IF EXISTS {live}; DROP VIEW IF EXISTS {all}; CREATE VIEW {all} AS SELECT * FROM {table}; CREATE VIEW {live} AS SELECT * FROM {table} WHERE NOT __deleted"
    )
}

/// Taken first by the statements that create tables and views, and held
/// until their implicit transaction ends. Sessions (running instances,
/// rebuild workers) do this at the same moment, and `IF NOT EXISTS` does not
/// cover that race: the loser is refused with "type ... already exists".
/// Under the lock the later session finds what the earlier one made. A
/// transaction that alters tables takes it first too, so no two sessions
/// ever wait on each other's table locks in opposite orders.
const DDL_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('projector: creating tables and views', 0)); ";

/// Whether the live view of `logical` selects from `physical` (true) or is
/// missing (`None`).
const VIEW_FOLLOWS: &str = "SELECT to_regclass($1) IS NOT NULL, EXISTS (SELECT 1 FROM pg_rewrite r JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass WHERE r.ev_class = to_regclass($1) AND d.refobjid = to_regclass($2))";

/// A string as an SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

use super::catalog::redact;

impl Postgres {
    /// Re-creates the reader views of `table` over `physical` when they
    /// select from it (its columns changed: PostgreSQL expands `*` once), or
    /// when they are gone and `physical` is where this instance put them.
    async fn refresh_views(&self, client: &Client, table: &TableMapping, physical: &str) -> Result<(), SinkError> {
        let Some(logical) = self.target(table) else { return Ok(()) };
        let live = quote_table(&format!("{logical}_live"));
        let row = client
            .query_one(VIEW_FOLLOWS, &[&live, &quote_table(physical)])
            .await
            .map_err(|e| pg_err(&format!("reading the views of {logical}"), &e))?;
        let (exists, follows): (bool, bool) = (row.get(0), row.get(1));
        let ours = self.readers.lock().unwrap_or_else(|e| e.into_inner()).get(logical).is_some_and(|p| p == physical);
        if follows || (!exists && ours) {
            client
                .batch_execute(&reader_views(logical, physical))
                .await
                .map_err(|e| pg_err(&format!("re-creating the views of {logical} over {physical}"), &e))?;
        }
        Ok(())
    }
}

/// The file's declared column types of `table`.
fn declared(table: &TableMapping) -> Vec<(String, String)> {
    table.postgres.as_ref().map(|p| p.types.clone()).unwrap_or_default()
}

impl Sink for Postgres {
    fn name(&self) -> &'static str {
        SINK
    }

    fn target<'m>(&self, table: &'m TableMapping) -> Option<&'m str> {
        table.postgres.as_ref().map(|p| p.table.as_str())
    }

    fn excluded<'a>(&self, table: &'a TableMapping) -> &'a [String] {
        table.postgres.as_ref().map_or(&[], |p| p.exclude.as_slice())
    }

    async fn live_shape(&self, _: &TableMapping, physical: &str) -> Result<Option<shape::LiveShape>, SinkError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        let row = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL, obj_description(to_regclass($1), 'pg_class')",
                &[&quote_table(physical)],
            )
            .await
            .map_err(|e| pg_err(&format!("looking up table {physical}"), &e))?;
        if !row.get::<_, bool>(0) {
            return Ok(None);
        }
        let section = row
            .get::<_, Option<String>>(1)
            .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
            .and_then(|mut c| c.get_mut(shape::SECTION_KEY).map(serde_json::Value::take));
        let fields = Self::load_columns(client, physical)
            .await?
            .into_iter()
            .filter(|c| !META.iter().any(|(m, _)| *m == c.name))
            .map(|c| (c.name, c.format))
            .collect();
        Ok(Some(shape::LiveShape { fields, section }))
    }

    fn verdict(&self, table: &TableMapping, physical: &str, live: Option<&shape::LiveShape>) -> shape::Verdict {
        let retype = |field: &str, current: &str, wanted: &str| schema::classify(physical, field, current, wanted);
        let add =
            |field: &str, ty: &str| format!("ALTER TABLE {} ADD COLUMN {} {ty}", quote_table(physical), quote(field));
        // `run` does not rename columns yet: a rename is a rebuild, so that
        // plan never promises what run does not do.
        let dialect = shape::Dialect { target: physical, retype: &retype, rename: None, add: &add };
        shape::classify(live, &shape::section(table, &declared(table)), &dialect)
    }

    fn declares(&self, table: &TableMapping, field: &str) -> bool {
        table.postgres.as_ref().is_some_and(|p| p.types.iter().any(|(f, _)| f == field))
    }

    async fn prepare(&self, _: &ReadModel) -> Result<(), SinkError> {
        let mut client = self.connect().await?;
        migrate(&mut client).await?;
        *self.client.lock().await = Some(client);
        Ok(())
    }

    async fn adopt(&self, _: &TableMapping, logical: &str) -> Result<Option<String>, SinkError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        let row = client
            .query_one(
                "SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1))",
                &[&quote_table(logical)],
            )
            .await
            .map_err(|e| pg_err(&format!("looking up table {logical}"), &e))?;
        if row.get::<_, Option<String>>(0).as_deref() != Some("r") {
            return Ok(None);
        }
        let physical = self.physical(logical, 1);
        let bare = physical.rsplit_once('.').map_or(physical.as_str(), |(_, t)| t);
        // Its views follow the rename (they hold the table, not its name).
        client
            .batch_execute(&format!("ALTER TABLE {} RENAME TO {}", quote_table(logical), quote(bare)))
            .await
            .map_err(|e| pg_err(&format!("renaming table {logical} to {physical} (adopting it as version 1)"), &e))?;
        Ok(Some(physical))
    }

    async fn create_version(&self, table: &TableMapping, physical: &str) -> Result<(), SinkError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        Self::create_table(client, physical).await?;
        Self::record_section(client, table, physical).await?;
        let cols = Self::load_columns(client, physical).await?;
        self.columns.lock().await.insert(physical.to_string(), cols);
        Ok(())
    }

    async fn point_readers(&self, _: &TableMapping, logical: &str, physical: &str) -> Result<(), SinkError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        client
            .batch_execute(&reader_views(logical, physical))
            .await
            .map_err(|e| pg_err(&format!("pointing the views of {logical} at {physical}"), &e))?;
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).insert(logical.to_string(), physical.to_string());
        Ok(())
    }

    async fn drop_version(&self, physical: &str) -> Result<(), SinkError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        // No CASCADE: a table readers' views still select from is refused.
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", quote_table(physical)))
            .await
            .map_err(|e| pg_err(&format!("dropping version table {physical}"), &e))?;
        self.columns.lock().await.remove(physical);
        Ok(())
    }

    async fn add_fields(
        &self,
        table: &TableMapping,
        target: &str,
        fields: &[NewField],
    ) -> Result<Vec<Retype>, SinkError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        let mut columns = self.columns.lock().await;
        if !columns.contains_key(target) {
            // First sight, or found missing: (re-)create what projector owns.
            Self::create_table(client, target).await?;
            columns.insert(target.to_string(), Self::load_columns(client, target).await?);
            self.refresh_views(client, table, target).await?;
        }
        let known = columns.get(target).map(Vec::as_slice).unwrap_or(&[]);
        let declared = table.postgres.as_ref().map(|p| p.types.as_slice()).unwrap_or(&[]);
        let mut added: Vec<(&str, String)> = Vec::new();
        let mut widened: Vec<String> = Vec::new();
        let mut retypes: Vec<Retype> = Vec::new();
        for f in fields {
            // The catalog holds the mapped name (see `schema::identifier`).
            let existing = known.iter().find(|c| c.name == schema::identifier(&f.name));
            let ty = match &f.source {
                FieldSource::Declared => declared.iter().find(|(n, _)| *n == f.name).map(|(_, t)| t.clone()),
                FieldSource::Schema(ft) => Some(pg_type_of_field(ft)),
                FieldSource::Value(v) => pg_type_of_value(v),
            };
            let Some(ty) = ty else { continue };
            match (existing, &f.source) {
                (None, _) => added.push((f.name.as_str(), ty)),
                // A value's type is a guess: it never retypes a column.
                (Some(c), FieldSource::Schema(ft)) => match schema::classify(target, &c.name, &c.format, &ty) {
                    TypeChange::Unchanged => {}
                    TypeChange::InPlace(ddl) => widened.push(ddl),
                    TypeChange::Rebuild(why) => retypes.push(Retype {
                        field: f.name.clone(),
                        from: c.format.clone(),
                        to: ty,
                        why,
                        source: ft.clone(),
                    }),
                },
                // A type the file now declares wider: `run`'s shape check
                // widens it in place (a narrower one needs a rebuild).
                (Some(c), FieldSource::Declared) => {
                    if let TypeChange::InPlace(ddl) = schema::classify(target, &c.name, &c.format, &ty) {
                        widened.push(ddl);
                    }
                }
                (Some(_), _) => {}
            }
        }
        if added.is_empty() && widened.is_empty() {
            return Ok(retypes);
        }
        let alters: Vec<String> =
            added.iter().map(|(n, t)| format!("ADD COLUMN IF NOT EXISTS {} {t}", quote(n))).collect();
        let add = if alters.is_empty() {
            String::new()
        } else {
            format!("ALTER TABLE {} {}; ", quote_table(target), alters.join(", "))
        };
        // PostgreSQL expands `*` when a view is created, and refuses to
        // retype a column a view uses: the live view is dropped and
        // recreated in the same transaction, so readers never miss it.
        // Only the version readers see has views over it.
        let logical = self.target(table).unwrap_or(target);
        let follows = !widened.is_empty() && {
            let row = client
                .query_one(VIEW_FOLLOWS, &[&quote_table(&format!("{logical}_live")), &quote_table(target)])
                .await
                .map_err(|e| pg_err(&format!("reading the views of {logical}"), &e))?;
            row.get::<_, bool>(1)
        };
        let (drop, views) = if follows {
            let (all, live) = (quote_table(logical), quote_table(&format!("{logical}_live")));
            (
                format!("DROP VIEW IF EXISTS {live}; DROP VIEW IF EXISTS {all}; "),
                format!("{}; ", reader_views(logical, target)),
            )
        } else {
            (String::new(), String::new())
        };
        let retype = if widened.is_empty() { String::new() } else { format!("{drop}{}; ", widened.join("; ")) };
        let sql = format!("BEGIN; {DDL_LOCK}{add}{retype}{views}COMMIT;");
        if let Err(e) = client.batch_execute(&sql).await {
            columns.remove(target);
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(pg_err(&format!("adding columns {added:?} / widening {widened:?} in {target}"), &e));
        }
        if !added.is_empty() {
            tracing::info!(sink = SINK, table = target, columns = ?added, "added columns");
        }
        if !widened.is_empty() {
            tracing::info!(sink = SINK, table = target, changes = ?widened, "widened columns in place after a source type change");
        }
        columns.insert(target.to_string(), Self::load_columns(client, target).await?);
        self.refresh_views(client, table, target).await?;
        Ok(retypes)
    }

    async fn positions(&self, target: &str, ids: &[&str]) -> Result<Vec<Option<StoredPosition>>, SinkError> {
        self.stored_positions(target, ids).await
    }

    async fn count(&self, target: &str) -> Result<u64, SinkError> {
        self.count_rows(target).await
    }

    async fn write(
        &self,
        target: &str,
        writes: &[Write],
        progress: &[PartitionOffset],
    ) -> Result<Vec<Outcome>, SinkError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        let columns = match self.columns.lock().await.get(target) {
            Some(c) => c.clone(),
            None => return Err(err(ErrorKind::NotFound, format!("table {target} is not known yet; re-creating it"))),
        };
        let all: Vec<&Write> = writes.iter().collect();
        let written = match self.drop_missing(client, target, columns, writes).await {
            Ok(columns) => self.transaction(client, target, &all, &columns, progress).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(applied) => Ok(writes
                .iter()
                .map(|w| {
                    match (applied.ids.contains(w.doc.id.as_str()), applied.unmatched.contains(w.doc.id.as_str())) {
                        (true, _) => Outcome::Applied,
                        (false, true) => Outcome::Unmatched,
                        (false, false) => Outcome::Stale,
                    }
                })
                .collect()),
            Err(e) => {
                match e.kind {
                    // Re-created with the next add_fields.
                    ErrorKind::NotFound => {
                        self.columns.lock().await.remove(target);
                    }
                    ErrorKind::Unavailable => *guard = None,
                    _ => {}
                }
                Err(e)
            }
        }
    }
}

impl Postgres {
    /// [`Sink::positions`]: `__position` and `__deleted` of each id.
    async fn stored_positions(&self, target: &str, ids: &[&str]) -> Result<Vec<Option<StoredPosition>>, SinkError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        let sql = format!("SELECT __id, __position, __deleted FROM {} WHERE __id = ANY($1)", quote_table(target));
        let rows =
            client.query(&sql, &[&ids]).await.map_err(|e| pg_err(&format!("reading positions of {target}"), &e))?;
        let found: HashMap<String, StoredPosition> =
            rows.iter().map(|r| (r.get(0), StoredPosition { position: r.get(1), deleted: r.get(2) })).collect();
        Ok(ids.iter().map(|id| found.get(*id).cloned()).collect())
    }

    /// [`Sink::count`]: every row, tombstones included.
    async fn count_rows(&self, target: &str) -> Result<u64, SinkError> {
        let mut guard = self.client.lock().await;
        let client = self.client(&mut guard).await?;
        let sql = format!("SELECT count(*) FROM {}", quote_table(target));
        let row = client.query_one(&sql, &[]).await.map_err(|e| pg_err(&format!("counting rows of {target}"), &e))?;
        u64::try_from(row.get::<_, i64>(0))
            .map_err(|_| err(ErrorKind::Unavailable, format!("{target}: negative count")))
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_value_errors_are_data_and_the_sink_being_wrong_is_not() {
        for code in ["22003", "22P02", "23502", "23514"] {
            assert!(kind_of_sqlstate(code).is_data(), "{code}");
        }
        assert_eq!(kind_of_sqlstate("42P01"), ErrorKind::NotFound, "undefined table: re-created");
        assert_eq!(
            kind_of_db_error("23505", Some("pg_type_typname_nsp_index")),
            ErrorKind::Conflict,
            "two sessions creating one table"
        );
        assert_eq!(kind_of_db_error("23505", Some("trips_v2_pkey")), ErrorKind::BadData);
        assert_eq!(kind_of_sqlstate("42703"), ErrorKind::NotFound, "undefined column: re-added");
        assert_eq!(kind_of_sqlstate("42501"), ErrorKind::Permission);
        assert_eq!(kind_of_sqlstate("25006"), ErrorKind::Unavailable, "read-only transaction");
        assert_eq!(kind_of_sqlstate("08006"), ErrorKind::Unavailable);
        assert_eq!(kind_of_sqlstate("57P01"), ErrorKind::Unavailable);
        assert_eq!(kind_of_sqlstate("53300"), ErrorKind::Overloaded);
        assert_eq!(kind_of_sqlstate("40001"), ErrorKind::Conflict);
        assert_eq!(kind_of_sqlstate("40P01"), ErrorKind::Conflict);
        assert!(!kind_of_sqlstate("42P07").is_data(), "a duplicate object is not the row's fault");
    }
}
