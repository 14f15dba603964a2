//! The staging PostgreSQL sink: a typed mirror of each source table, the
//! analysts' staging area and the source for rebuilds.
//!
//! ## Tables
//! Each mapped table gets `__id` (the document id, primary key),
//! `__position` (source position, fixed-width hex), `__deleted`,
//! `__source_ts` and `__written_at`, plus one column per output field, added
//! when the field first appears with a known type (from the Debezium schema:
//! `numeric(p,s)`, `timestamp(3|6)`, `timestamptz`, `uuid`, `bytea`, `jsonb`,
//! ...; or from the read model's `postgres.types`). Nothing is dropped or
//! retyped automatically. Every identifier is quoted.
//!
//! ## Writes and the guard
//! One transaction per batch: binary `COPY` into a temporary table, then
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
//! only live rows. A value the connector could not capture (LOB/TOAST
//! placeholder) leaves the stored column as it was.
//!
//! A batch that PostgreSQL refuses for one bad value is retried row by row,
//! so only the bad row is rejected (and dead-lettered).

pub mod binary;
pub mod schema;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::{Document, Outcome, Sink, SinkError, Write};
use crate::decode::{Row, Value};
use crate::mapping::{ReadModel, TableMapping};
use binary::Cell;
pub use schema::{pg_type_of_field, pg_type_of_value, quote, quote_table};

mod migrations {
    refinery::embed_migrations!("migrations");
}

const SINK: &str = "postgres";

fn err(message: impl Into<String>) -> SinkError {
    SinkError { sink: SINK, message: message.into() }
}

/// Columns every mirror table has, in COPY order.
pub const META: [(&str, &str); 5] = [
    ("__id", "text NOT NULL PRIMARY KEY"),
    ("__position", "text NOT NULL"),
    ("__deleted", "boolean NOT NULL DEFAULT false"),
    ("__source_ts", "timestamptz"),
    ("__written_at", "timestamptz NOT NULL DEFAULT now()"),
];

/// Writes read-model rows to PostgreSQL.
pub struct Postgres {
    url: String,
    model: Arc<ReadModel>,
    client: Mutex<Option<Client>>,
    /// Known columns and their types per target table.
    columns: Mutex<HashMap<String, Vec<(String, Type)>>>,
}

impl Postgres {
    pub fn new(url: &str, model: Arc<ReadModel>) -> Postgres {
        Postgres { url: url.to_string(), model, client: Mutex::new(None), columns: Mutex::new(HashMap::new()) }
    }

    async fn connect(&self) -> Result<Client, SinkError> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(|e| err(format!("cannot connect to {}: {e}; is PostgreSQL up?", redact(&self.url))))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(sink = SINK, error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    fn table_for(&self, target: &str) -> Option<&TableMapping> {
        self.model.tables.iter().find(|t| t.postgres.as_ref().is_some_and(|p| p.table == target))
    }

    /// Reads the table's columns and types from the catalog.
    async fn load_columns(client: &Client, target: &str) -> Result<Vec<(String, Type)>, SinkError> {
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&quote_table(target)],
            )
            .await
            .map_err(|e| err(format!("reading columns of {target}: {e}")))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), Type::from_oid(r.get::<_, u32>(1)).unwrap_or(Type::TEXT)))
            .collect())
    }

    /// Adds columns for fields of this batch that the table lacks.
    async fn evolve(&self, client: &Client, target: &str, writes: &[&Write]) -> Result<Vec<(String, Type)>, SinkError> {
        let mut columns = self.columns.lock().await;
        let known: HashSet<String> =
            columns.get(target).map(|c| c.iter().map(|(n, _)| n.clone()).collect()).unwrap_or_default();
        let table = self.table_for(target);
        let mut added: Vec<(String, String)> = Vec::new();
        for w in writes {
            let Some(body) = &w.doc.body else { continue };
            for (name, v) in &body.columns {
                // The catalog holds the mapped name (see `schema::identifier`).
                if known.contains(schema::identifier(name).as_ref()) || added.iter().any(|(n, _)| n == name) {
                    continue;
                }
                let declared = table
                    .and_then(|t| t.postgres.as_ref())
                    .and_then(|p| p.types.iter().find(|(f, _)| f == name))
                    .map(|(_, t)| t.clone());
                let from_schema = table
                    .and_then(|t| t.output_type(name, w.doc.source_types.as_deref()))
                    .map(|ft| pg_type_of_field(&ft));
                if let Some(ty) = declared.or(from_schema).or_else(|| pg_type_of_value(v)) {
                    added.push((name.clone(), ty));
                }
            }
        }
        if !added.is_empty() {
            let alters: Vec<String> =
                added.iter().map(|(n, t)| format!("ADD COLUMN IF NOT EXISTS {} {t}", quote(n))).collect();
            // PostgreSQL expands `*` when a view is created: recreate the live view too.
            let sql = format!("ALTER TABLE {t} {}; {}", alters.join(", "), live_view(target), t = quote_table(target));
            client.batch_execute(&sql).await.map_err(|e| err(format!("adding columns to {target}: {e}")))?;
            tracing::info!(sink = SINK, table = target, columns = ?added, "added columns");
        }
        if !added.is_empty() || !columns.contains_key(target) {
            let loaded = Self::load_columns(client, target).await?;
            columns.insert(target.to_string(), loaded);
        }
        Ok(columns.get(target).cloned().unwrap_or_default())
    }

    /// Applies writes to one table inside `tx`; returns the applied ids.
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        target: &str,
        writes: &[&Write],
        columns: &[(String, Type)],
    ) -> Result<HashSet<String>, tokio_postgres::Error> {
        let data: Vec<&(String, Type)> = columns.iter().filter(|(n, _)| !META.iter().any(|(m, _)| m == n)).collect();
        let tmp = "projector_batch";
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT * FROM {} WITH NO DATA; ALTER TABLE {tmp} ADD COLUMN __unavailable text[]",
            quote_table(target)
        ))
        .await?;
        let mut copy_cols: Vec<&str> = vec!["__id", "__position", "__deleted", "__source_ts", "__unavailable"];
        copy_cols.extend(data.iter().map(|(n, _)| n.as_str()));
        let mut types = vec![Type::TEXT, Type::TEXT, Type::BOOL, Type::TIMESTAMPTZ, Type::TEXT_ARRAY];
        types.extend(data.iter().map(|(_, t)| t.clone()));
        let sink = tx
            .copy_in(&format!(
                "COPY {tmp} ({}) FROM STDIN (FORMAT binary)",
                copy_cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
            ))
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        copy_rows(writer, writes, &data).await?;
        let data_list = data.iter().map(|(n, _)| quote(n)).collect::<Vec<_>>().join(", ");
        let all =
            format!("__id, __position, __deleted, __source_ts{}{data_list}", if data.is_empty() { "" } else { ", " });
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
            .map(|(n, _)| {
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

    /// One transaction: every target's writes and the progress record.
    async fn transaction(
        &self,
        client: &mut Client,
        writes: &[&Write],
        progress: &[(String, i32, i64)],
    ) -> Result<HashSet<(String, String)>, TxError> {
        let mut by_target: Vec<(&str, Vec<&Write>)> = Vec::new();
        for w in writes {
            match by_target.iter_mut().find(|(t, _)| *t == &*w.target) {
                Some((_, v)) => v.push(w),
                None => by_target.push((&w.target, vec![w])),
            }
        }
        let mut columns = Vec::new();
        for (target, ws) in &by_target {
            columns.push(self.evolve(client, target, ws).await.map_err(TxError::Sink)?);
        }
        let tx = client.transaction().await.map_err(TxError::Pg)?;
        let mut applied = HashSet::new();
        for ((target, ws), cols) in by_target.iter().zip(&columns) {
            for id in self.apply(&tx, target, ws, cols).await.map_err(TxError::Pg)? {
                applied.insert((target.to_string(), id));
            }
        }
        if !progress.is_empty() {
            let stmt = "INSERT INTO projector.progress (read_model, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
                        ON CONFLICT (read_model, topic, partition) DO UPDATE SET next_offset = GREATEST(projector.progress.next_offset, EXCLUDED.next_offset), updated_at = now()";
            for (topic, partition, next) in progress {
                tx.execute(stmt, &[&self.model.name, topic, partition, next]).await.map_err(TxError::Pg)?;
            }
        }
        tx.commit().await.map_err(TxError::Pg)?;
        Ok(applied)
    }
}

/// The bookkeeping columns of a row (`__id`, `__position`, `__deleted`,
/// `__source_ts`, in [`META`] order), as the staging table stores them.
pub fn meta_values(d: &Document) -> [Value; 4] {
    [
        Value::String(d.id.clone()),
        Value::String(d.position.as_str().to_string()),
        Value::Bool(d.body.is_none()),
        d.source_ts_ms.map(|ms| Value::Timestamp(ms as i128 * 1_000_000)).unwrap_or(Value::Null),
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
    data: &[&(String, Type)],
) -> Result<(), tokio_postgres::Error> {
    let mut writer = std::pin::pin!(writer);
    for w in writes {
        let d = &w.doc;
        let meta = meta_values(d);
        // A delete keeps the last values: every non-key column is left as stored.
        let unavailable: Vec<String> = match &d.body {
            Some(body) => body
                .columns
                .iter()
                .filter(|(_, v)| matches!(v, Value::Unavailable))
                .map(|(n, _)| schema::identifier(n).into_owned())
                .collect(),
            None => data.iter().map(|(n, _)| n.clone()).filter(|n| get(&d.key, n).is_none()).collect(),
        };
        let values: Vec<&Value> = data
            .iter()
            .map(|(n, _)| d.body.as_ref().and_then(|b| get(b, n)).or_else(|| get(&d.key, n)).unwrap_or(&Value::Null))
            .collect();
        let meta_cells: Vec<Cell<'_>> =
            META.iter().zip(&meta).map(|((column, _), value)| Cell { column, value }).collect();
        let cells: Vec<Cell<'_>> = data.iter().zip(values).map(|((column, _), value)| Cell { column, value }).collect();
        let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(5 + cells.len());
        row.extend(meta_cells.iter().map(|c| c as &(dyn ToSql + Sync)));
        row.push(&unavailable);
        row.extend(cells.iter().map(|c| c as &(dyn ToSql + Sync)));
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}

enum TxError {
    Sink(SinkError),
    Pg(tokio_postgres::Error),
}

/// The view readers use: live rows only.
fn live_view(table: &str) -> String {
    format!(
        "CREATE OR REPLACE VIEW {} AS SELECT * FROM {} WHERE NOT __deleted",
        quote_table(&format!("{table}_live")),
        quote_table(table)
    )
}

/// A string as an SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Hides a password in a connection string for messages.
fn redact(url: &str) -> String {
    url.split_whitespace()
        .map(|kv| if kv.starts_with("password=") { "password=…" } else { kv })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether an error is about the data (retry row by row, reject the bad one)
/// rather than the connection or server (retry the batch).
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return code.starts_with("22") || code.starts_with("23") || code.starts_with("42");
    }
    // Client-side encoding errors (a value that does not fit its column).
    e.to_string().contains("error serializing")
}

impl Sink for Postgres {
    fn name(&self) -> &'static str {
        SINK
    }

    fn target(&self, model: &ReadModel, topic: &str) -> Option<Arc<str>> {
        model.table(topic)?.postgres.as_ref().map(|p| Arc::from(p.table.as_str()))
    }

    fn excluded<'a>(&self, table: &'a TableMapping) -> &'a [String] {
        table.postgres.as_ref().map_or(&[], |p| p.exclude.as_slice())
    }

    async fn prepare(&self, model: &ReadModel) -> Result<(), SinkError> {
        let mut client = self.connect().await?;
        migrations::migrations::runner()
            .run_async(&mut client)
            .await
            .map_err(|e| err(format!("applying migrations/: {e}")))?;
        for t in &model.tables {
            let Some(pg) = &t.postgres else { continue };
            let table = quote_table(&pg.table);
            let meta: Vec<String> = META.iter().map(|(n, ty)| format!("{} {ty}", quote(n))).collect();
            client
                .batch_execute(&format!(
                    "{schema}CREATE TABLE IF NOT EXISTS {table} ({}); {}",
                    meta.join(", "),
                    live_view(&pg.table),
                    schema = schema::create_schema(&pg.table),
                ))
                .await
                .map_err(|e| err(format!("creating table {}: {e}", pg.table)))?;
            let cols = Self::load_columns(&client, &pg.table).await?;
            self.columns.lock().await.insert(pg.table.clone(), cols);
        }
        *self.client.lock().await = Some(client);
        Ok(())
    }

    async fn write(&self, writes: &[Write], progress: &[(String, i32, i64)]) -> Result<Vec<Outcome>, SinkError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(self.connect().await?);
        }
        let client = guard.as_mut().ok_or_else(|| err("no connection"))?;
        let all: Vec<&Write> = writes.iter().collect();
        match self.transaction(client, &all, progress).await {
            Ok(applied) => Ok(writes
                .iter()
                .map(|w| {
                    if applied.contains(&(w.target.to_string(), w.doc.id.clone())) {
                        Outcome::Applied
                    } else {
                        Outcome::Stale
                    }
                })
                .collect()),
            Err(TxError::Sink(e)) => {
                *guard = None;
                Err(e)
            }
            Err(TxError::Pg(e)) if is_data_error(&e) && writes.len() > 1 => {
                // Find the bad rows: one transaction per row.
                tracing::warn!(sink = SINK, error = %e, rows = writes.len(), "batch refused; retrying row by row to isolate the bad rows");
                let mut out = Vec::with_capacity(writes.len());
                for w in writes {
                    out.push(match self.transaction(client, &[w], progress).await {
                        Ok(applied) => {
                            if applied.is_empty() {
                                Outcome::Stale
                            } else {
                                Outcome::Applied
                            }
                        }
                        Err(TxError::Pg(e)) if is_data_error(&e) => Outcome::Rejected(describe(&e)),
                        Err(TxError::Pg(e)) => Outcome::Retry(describe(&e)),
                        Err(TxError::Sink(e)) => Outcome::Retry(e.message),
                    });
                }
                Ok(out)
            }
            Err(TxError::Pg(e)) if is_data_error(&e) => Ok(vec![Outcome::Rejected(describe(&e))]),
            Err(TxError::Pg(e)) => {
                *guard = None;
                Err(err(describe(&e)))
            }
        }
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
