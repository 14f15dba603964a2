//! The BigQuery sink: one typed table per mapped source table in one
//! dataset, for analytics.
//!
//! ## Tables
//! The dataset and tables are created by the sink. Every table has `__id`
//! (the document id; `PRIMARY KEY (__id) NOT ENFORCED`), `__position`
//! (source position, fixed-width hex, so it compares as text), `__deleted`,
//! `__source_ts` and `__written_at`, plus one column per output field, added
//! with `ALTER TABLE ADD COLUMN` when the field first appears with a known
//! type: the read model's `bigquery.types`, else the Debezium schema
//! (Decimal → NUMERIC(p,s)/BIGNUMERIC(p,s) by precision, wall-clock
//! timestamps → DATETIME, zoned → TIMESTAMP, DATE, TIME, BYTES, BOOL, INT64,
//! FLOAT64, STRING, JSON; see [`sql::type_of_field`]), else the value.
//! Tables are clustered by `cluster_by` (default `__id`) and, with
//! `partition_by: <DATE|DATETIME|TIMESTAMP field>`, partitioned by day. A
//! table whose partitioning or clustering names a field not yet typed is
//! created with the first batch. Every identifier is backtick-quoted;
//! BigQuery column names are case-insensitive, so `Fare` and `fare` are one
//! column. A column whose source type widened is altered in place
//! (`sql::classify`) and its new type recorded in the column's description
//! (`sql::TYPE_NOTE`); a decimal its column would round is refused. A
//! column the source dropped is kept, nulled or dropped by the read model's
//! `on_drop` (`dropped.rs`).
//!
//! ## Writes: staging table + guarded MERGE, never the streaming buffer
//! Production BigQuery refuses UPDATE/DELETE/MERGE over rows still in the
//! streaming buffer (rows written by `insertAll`, for up to ~30-90 min), so
//! this sink never streams into its tables: each table's batch is staged by
//! a query job and MERGEd, guarded by position, under job ids that belong to
//! one incarnation of the table; a second writer racing on the same ids
//! cannot leave an id stored twice. `merge.rs` has the steps and the reasons.
//!
//! ## Deletes
//! Soft deletes, as in the PostgreSQL sink: a delete (or a row that stops
//! matching `where`) sets `__deleted = TRUE` and the delete's position and
//! keeps the stored values; a row first seen as a delete holds only its key.
//! The tombstone stays, so a late, older event can never bring the row back.
//! Readers use the view `<table>_live`. A value the connector could not
//! capture (LOB placeholder) leaves the stored column as it was.
//!
//! Compaction deletes (a Kafka tombstone whose `d` may have been compacted
//! away, see [`crate::sink::compaction`]) are guarded by `__partition` and
//! `__offset`, the Kafka record that last wrote each row; a table created
//! before these columns existed gets them on start.
//!
//! ## Failures
//! [`kind_of`] folds the client's [`BqError`] into an [`ErrorKind`]: a 400
//! `invalid`/`invalidQuery` (a value BigQuery refuses) is bad data, and the
//! pipeline splits the call until the bad row is alone; a missing table is
//! re-created; unreachable, 5xx, 429 and rate limits are retried with the
//! sink reported down.

pub mod auth;
pub mod client;
mod dropped;
mod merge;
pub mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::{
    ErrorKind, FieldSource, NewField, Outcome, Retype, Sink, SinkError, StoredPosition, TypeChange, Write, shape,
};
use crate::mapping::{ReadModel, TableMapping};
use crate::source::PartitionOffset;
pub use auth::Auth;
use client::{BqError, Client};

const SINK: &str = "bigquery";

fn err(kind: ErrorKind, message: impl Into<String>) -> SinkError {
    SinkError::new(SINK, kind, message)
}

/// The one table from the client's classification (HTTP status and
/// `error.reason`, see [`client`]) to a kind.
pub fn kind_of(e: &BqError) -> ErrorKind {
    match e {
        BqError::Data(_) => ErrorKind::BadData,
        BqError::NotFound(_) => ErrorKind::NotFound,
        BqError::Overloaded(_) => ErrorKind::Overloaded,
        BqError::Permission(_) => ErrorKind::Permission,
        BqError::Conflict(_) => ErrorKind::Conflict,
        BqError::Transient(_) | BqError::FailedBefore(_) => ErrorKind::Unavailable,
    }
}

/// What to do about a refused value, appended to bad-data messages.
const BAD_DATA_HINT: &str = "fix the value at the source, declare the field's type under bigquery.types, or leave the field out with bigquery.exclude (a BigQuery column name cannot contain characters such as ; . , ( ) [ ] or quotes other than ')";

/// Writes read-model rows to BigQuery.
pub struct BigQuery {
    client: Client,
    dataset: String,
    model: Arc<ReadModel>,
    /// Columns `(name, type)` of each table known to exist.
    columns: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// The incarnation (`creationTime`) of each table last seen, part of its
    /// job ids.
    incarnations: Mutex<HashMap<String, String>>,
}

fn is_meta(name: &str) -> bool {
    sql::META.iter().any(|(m, _)| m.eq_ignore_ascii_case(name))
}

impl BigQuery {
    /// `base_url` is `https://bigquery.googleapis.com` (or the emulator's
    /// `http://127.0.0.1:9050`); `/bigquery/v2` is added when missing.
    pub fn new(
        base_url: &str,
        project: &str,
        dataset: &str,
        model: Arc<ReadModel>,
        auth: Auth,
    ) -> Result<BigQuery, SinkError> {
        if dataset.is_empty() || dataset.len() > 1024 || !dataset.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(err(
                ErrorKind::Configuration,
                format!("dataset {dataset:?} is not a valid BigQuery dataset id: use letters, digits and '_'"),
            ));
        }
        if project.is_empty() {
            return Err(err(
                ErrorKind::Configuration,
                "no BigQuery project id: set the project (e.g. projector-local for the emulator)",
            ));
        }
        for t in &model.tables {
            if let Some(bq) = &t.bigquery {
                sql::check_table_name(&bq.table)
                    .map_err(|e| err(ErrorKind::Configuration, format!("{}:{}: {e}", model.file.display(), t.line)))?;
            }
        }
        let tokens = auth::TokenSource::new(&auth).map_err(|m| err(ErrorKind::Configuration, m))?;
        let client = Client::new(base_url, project, tokens).map_err(|m| err(ErrorKind::Configuration, m))?;
        Ok(BigQuery {
            client,
            dataset: dataset.to_string(),
            model,
            columns: Mutex::new(HashMap::new()),
            incarnations: Mutex::new(HashMap::new()),
        })
    }

    /// The table mapping of a version table: `<table>` (version 1) or `<table>_vN`.
    fn table_for(&self, target: &str) -> Option<&TableMapping> {
        self.model.tables.iter().find(|t| t.bigquery.as_ref().is_some_and(|b| super::is_version_of(target, &b.table)))
    }

    fn tref(&self, table: &str) -> String {
        sql::table_ref(&self.client.project, &self.dataset, table)
    }

    fn view_ref(&self, table: &str) -> String {
        self.tref(&format!("{table}_live"))
    }

    /// Creates `target` with these data columns, its partitioning and
    /// clustering, and its live view. `Ok(false)` when a field that
    /// partitioning or clustering needs has no type yet.
    async fn create_table(&self, target: &str, columns: &[(String, String)]) -> Result<bool, BqError> {
        let bq = self.table_for(target).and_then(|t| t.bigquery.as_ref());
        let type_of = |name: &str| -> Option<String> {
            sql::META
                .iter()
                .find(|(m, _)| *m == name)
                .map(|(_, t)| t.to_string())
                .or_else(|| columns.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, t)| t.clone()))
        };
        let partition = match bq.and_then(|b| b.partition_by.as_deref()) {
            None => None,
            Some(p) => match type_of(p) {
                None => return Ok(false),
                Some(t) => Some(sql::partition_expr(p, &t).map_err(|e| BqError::Data(format!("table {target}: {e}")))?),
            },
        };
        let cluster = bq.and_then(|b| b.cluster_by.clone()).unwrap_or_default();
        if cluster.iter().any(|c| type_of(c).is_none()) {
            return Ok(false);
        }
        let tref = self.tref(target);
        self.client.query(&sql::create_table(&tref, columns, partition.as_deref(), &cluster), &[]).await?;
        self.client.query(&sql::live_view(&self.view_ref(target), &tref), &[]).await?;
        tracing::info!(sink = SINK, table = target, "created table and its _live view");
        Ok(true)
    }

    /// Adds to a table created by an older projector the bookkeeping
    /// columns it lacks (`__partition`, `__offset`).
    async fn add_missing_meta(&self, target: &str, cols: &mut Vec<(String, String)>) -> Result<(), BqError> {
        let missing: Vec<(String, String)> = sql::META
            .iter()
            .filter(|(m, _)| !cols.iter().any(|(n, _)| n.eq_ignore_ascii_case(m)))
            .map(|(m, t)| (m.to_string(), t.to_string()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.client.query(&sql::add_columns(&self.tref(target), &missing), &[]).await?;
        tracing::info!(sink = SINK, table = target, columns = ?missing, "added bookkeeping columns to a table an older projector created");
        cols.extend(missing);
        Ok(())
    }

    /// The fields the table lacks, in BigQuery types.
    fn new_columns(
        &self,
        table: &TableMapping,
        known: &[(String, String)],
        fields: &[NewField],
    ) -> Vec<(String, String)> {
        let declared = table.bigquery.as_ref().map(|b| b.types.as_slice()).unwrap_or(&[]);
        let mut added: Vec<(String, String)> = Vec::new();
        for f in fields {
            let seen =
                is_meta(&f.name) || known.iter().chain(added.iter()).any(|(n, _)| n.eq_ignore_ascii_case(&f.name));
            if seen {
                continue;
            }
            let ty = match &f.source {
                FieldSource::Declared => declared.iter().find(|(n, _)| *n == f.name).map(|(_, t)| t.clone()),
                FieldSource::Schema(ft) => Some(sql::type_of_field(ft)),
                FieldSource::Value(v) => sql::type_of_value(v),
            };
            if let Some(ty) = ty {
                added.push((f.name.clone(), ty));
            }
        }
        added
    }

    /// The known columns' types that a field's new source type changes:
    /// the `ALTER`s to run, and the fields that need a rebuild.
    fn retyped(
        &self,
        target: &str,
        known: &[(String, String)],
        fields: &[NewField],
    ) -> (Vec<(String, String, String)>, Vec<Retype>) {
        let tref = self.tref(target);
        let mut alters = Vec::new();
        let mut retypes = Vec::new();
        for f in fields {
            let FieldSource::Schema(ft) = &f.source else { continue };
            let Some((name, current)) = known.iter().find(|(n, _)| n.eq_ignore_ascii_case(&f.name)) else { continue };
            let wanted = sql::type_of_field(ft);
            match sql::classify(&tref, name, current, &wanted) {
                TypeChange::Unchanged => {}
                TypeChange::InPlace(ddl) => alters.push((name.clone(), wanted, ddl)),
                TypeChange::Rebuild(why) => retypes.push(Retype {
                    field: f.name.clone(),
                    from: current.clone(),
                    to: wanted,
                    why,
                    source: ft.clone(),
                }),
            }
        }
        (alters, retypes)
    }

    /// Makes sure the table exists with every column the batch needs, its
    /// known columns widened where a field's new source type needs it;
    /// returns the fields that need a rebuild instead.
    async fn evolve(&self, table: &TableMapping, target: &str, fields: &[NewField]) -> Result<Vec<Retype>, BqError> {
        let mut retypes = Vec::new();
        let mut columns = self.columns.lock().await;
        if !columns.contains_key(target)
            && let Some(info) = self.client.table(&self.dataset, target).await?
        {
            self.incarnations.lock().await.insert(target.to_string(), info.incarnation);
            columns.insert(target.to_string(), info.columns);
        }
        match columns.get(target) {
            None => {
                let mut wanted = self.new_columns(table, &[], fields);
                // Declared types are columns from the start.
                if let Some(bq) = self.table_for(target).and_then(|t| t.bigquery.as_ref()) {
                    for (f, t) in &bq.types {
                        if !wanted.iter().any(|(n, _)| n.eq_ignore_ascii_case(f)) {
                            wanted.push((f.clone(), t.clone()));
                        }
                    }
                }
                if !self.create_table(target, &wanted).await? {
                    return Err(BqError::Data(format!(
                        "table {target}: partition_by/cluster_by names a field that has no type yet (not in this batch and not in bigquery.types); declare its type under bigquery.types"
                    )));
                }
            }
            Some(known) => {
                let added = self.new_columns(table, known, fields);
                let (alters, rebuilds) = self.retyped(target, known, fields);
                retypes = rebuilds;
                for (name, ty, ddl) in alters {
                    self.client.query(&ddl, &[]).await?;
                    for note in sql::record_types(&self.tref(target), &[(name.clone(), ty.clone())]) {
                        self.client.query(&note, &[]).await?;
                    }
                    tracing::info!(
                        sink = SINK,
                        table = target,
                        column = name,
                        to = ty,
                        "widened column in place after a source type change"
                    );
                }
                if added.is_empty() {
                    let info = self.client.table(&self.dataset, target).await?;
                    if let Some(info) = info {
                        columns.insert(target.to_string(), info.columns);
                    }
                    return Ok(retypes);
                }
                let tref = self.tref(target);
                self.client.query(&sql::add_columns(&tref, &added), &[]).await.map_err(|e| match e {
                    BqError::Data(m) => BqError::Data(format!(
                        "adding columns {:?} to table {target}: {m}; {BAD_DATA_HINT}",
                        added.iter().map(|(n, _)| n).collect::<Vec<_>>()
                    )),
                    other => other,
                })?;
                for note in sql::record_types(&tref, &added) {
                    self.client.query(&note, &[]).await?;
                }
                self.client.query(&sql::live_view(&self.view_ref(target), &tref), &[]).await?;
                tracing::info!(sink = SINK, table = target, columns = ?added, "added columns");
            }
        }
        let info = self.client.table(&self.dataset, target).await?.ok_or_else(|| {
            BqError::NotFound(format!("table {target} vanished right after it was created or altered"))
        })?;
        self.incarnations.lock().await.insert(target.to_string(), info.incarnation);
        columns.insert(target.to_string(), info.columns);
        Ok(retypes)
    }

    /// For each write, the error refusing it when a decimal it carries does
    /// not fit its column's precision and scale: BigQuery (and its
    /// emulator) would round it silently.
    async fn unfit(&self, target: &str, writes: &[Write]) -> Vec<Option<SinkError>> {
        let columns = self.columns.lock().await;
        let known = columns.get(target).map(Vec::as_slice).unwrap_or(&[]);
        let limits: Vec<(&str, &str, (u32, u32))> =
            known.iter().filter_map(|(n, t)| sql::decimal_limits(t).map(|l| (n.as_str(), t.as_str(), l))).collect();
        writes
            .iter()
            .map(|w| {
                let body = w.doc.body.as_ref()?;
                body.columns.iter().find_map(|(name, v)| {
                    let (column, ty, (p, s)) = limits.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name))?;
                    let why = match v {
                        crate::decode::Value::Decimal { unscaled, scale } => {
                            crate::decode::value::decimal_fits(*unscaled, *scale, *p, *s).err()
                        }
                        crate::decode::Value::Int(i) => crate::decode::value::decimal_fits(i128::from(*i), 0, *p, *s).err(),
                        _ => None,
                    }?;
                    Some(err(
                        ErrorKind::RefusedRow,
                        format!(
                            "BigQuery table {}.{target}, row {:?} ({}): column {column:?}: {why} of a {ty} column; it is never rounded: declare a wider type under bigquery.types, or let the source's ALTER widen the column",
                            self.dataset, w.doc.id, w.doc.lineage
                        ),
                    ))
                })
            })
            .collect()
    }

    fn transient(&self, target: &str, e: BqError) -> SinkError {
        err(kind_of(&e), format!("table {}.{target}: {}", self.dataset, e.message()))
    }
}

impl Sink for BigQuery {
    fn name(&self) -> &'static str {
        SINK
    }

    fn target<'m>(&self, table: &'m TableMapping) -> Option<&'m str> {
        table.bigquery.as_ref().map(|b| b.table.as_str())
    }

    fn excluded<'a>(&self, table: &'a TableMapping) -> &'a [String] {
        table.bigquery.as_ref().map_or(&[], |b| b.exclude.as_slice())
    }

    fn declares(&self, table: &TableMapping, field: &str) -> bool {
        table.bigquery.as_ref().is_some_and(|b| b.types.iter().any(|(f, _)| f == field))
    }

    /// The table's columns (with the Debezium-derived type each column's
    /// description records). No section is recorded here yet: BigQuery
    /// targets are compared by shape only.
    async fn live_shape(&self, _: &TableMapping, physical: &str) -> Result<Option<shape::LiveShape>, SinkError> {
        let info = self.client.table(&self.dataset, physical).await.map_err(|e| self.transient(physical, e))?;
        Ok(info.map(|i| shape::LiveShape {
            fields: i.columns.into_iter().filter(|(n, _)| !is_meta(n)).collect(),
            section: None,
        }))
    }

    fn verdict(&self, table: &TableMapping, physical: &str, live: Option<&shape::LiveShape>) -> shape::Verdict {
        let tref = self.tref(physical);
        let retype = |field: &str, current: &str, wanted: &str| sql::classify(&tref, field, current, wanted);
        let add = |field: &str, ty: &str| format!("ALTER TABLE {tref} ADD COLUMN {} {ty}", sql::quote(field));
        // `run` does not rename columns yet: a rename is a rebuild.
        let dialect = shape::Dialect { target: physical, retype: &retype, rename: None, add: &add };
        let declared = table.bigquery.as_ref().map(|b| b.types.clone()).unwrap_or_default();
        shape::classify(live, &shape::section(table, &declared), &dialect)
    }

    async fn prepare(&self, _: &ReadModel) -> Result<(), SinkError> {
        let location = self
            .client
            .ensure_dataset(&self.dataset)
            .await
            .map_err(|e| err(kind_of(&e), format!("creating dataset {}: {}", self.dataset, e.message())))?;
        if let (Some(l), Ok(mut slot)) = (location, self.client.location.write()) {
            *slot = Some(l);
        }
        Ok(())
    }

    /// Version 1 keeps the table's own name: a table from before versions
    /// is version 1 as it is (no rename, which BigQuery does not offer for
    /// every table), and its readers' view `<table>_live` stays on it.
    fn physical(&self, logical: &str, version: i32) -> String {
        if version == 1 { logical.to_string() } else { format!("{logical}_v{version}") }
    }

    async fn adopt(&self, _: &TableMapping, logical: &str) -> Result<Option<String>, SinkError> {
        let existing =
            self.client.table_columns(&self.dataset, logical).await.map_err(|e| self.transient(logical, e))?;
        Ok(existing.map(|_| logical.to_string()))
    }

    async fn create_version(&self, t: &TableMapping, physical: &str) -> Result<(), SinkError> {
        let Some(bq) = &t.bigquery else { return Ok(()) };
        let existing =
            self.client.table_columns(&self.dataset, physical).await.map_err(|e| self.transient(physical, e))?;
        match existing {
            Some(mut cols) => {
                self.add_missing_meta(physical, &mut cols).await.map_err(|e| self.transient(physical, e))?;
                self.columns.lock().await.insert(physical.to_string(), cols);
            }
            // Created now when partitioning/clustering need only declared
            // fields; otherwise with the first batch, once fields are typed.
            None => {
                if self.create_table(physical, &bq.types).await.map_err(|e| self.transient(physical, e))? {
                    let cols = self
                        .client
                        .table_columns(&self.dataset, physical)
                        .await
                        .map_err(|e| self.transient(physical, e))?
                        .unwrap_or_default();
                    self.columns.lock().await.insert(physical.to_string(), cols);
                }
            }
        }
        Ok(())
    }

    async fn point_readers(&self, _: &TableMapping, logical: &str, physical: &str) -> Result<(), SinkError> {
        let exists =
            self.client.table_columns(&self.dataset, physical).await.map_err(|e| self.transient(physical, e))?;
        if exists.is_none() && physical == logical {
            // Created with the first batch (its partitioning needs a typed
            // field), together with the readers' view over it.
            return Ok(());
        }
        self.client
            .query(&sql::live_view(&self.view_ref(logical), &self.tref(physical)), &[])
            .await
            .map_err(|e| self.transient(logical, e))?;
        Ok(())
    }

    async fn drop_version(&self, physical: &str) -> Result<(), SinkError> {
        self.client
            .query(&format!("DROP TABLE IF EXISTS {}", self.tref(physical)), &[])
            .await
            .map_err(|e| self.transient(physical, e))?;
        self.columns.lock().await.remove(physical);
        Ok(())
    }

    async fn add_fields(
        &self,
        table: &TableMapping,
        target: &str,
        fields: &[NewField],
    ) -> Result<Vec<Retype>, SinkError> {
        self.evolve(table, target, fields).await.map_err(|e| self.transient(target, e))
    }

    async fn positions(&self, target: &str, ids: &[&str]) -> Result<Vec<Option<StoredPosition>>, SinkError> {
        let sql = format!("SELECT __id, __position, __deleted FROM {} WHERE __id IN UNNEST(@ids)", self.tref(target));
        let params = [client::Param::Strings("ids", ids.iter().map(|s| s.to_string()).collect())];
        let rows = self.client.query(&sql, &params).await.map_err(|e| self.transient(target, e))?;
        let found: HashMap<String, StoredPosition> = rows
            .into_iter()
            .filter_map(|r| {
                let mut cells = r.into_iter();
                let (id, position, deleted) = (cells.next()??, cells.next()??, cells.next()??);
                Some((id, StoredPosition { position, deleted: deleted.eq_ignore_ascii_case("true") }))
            })
            .collect();
        Ok(ids.iter().map(|id| found.get(*id).cloned()).collect())
    }

    async fn count(&self, target: &str) -> Result<u64, SinkError> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.tref(target));
        let rows = self.client.query(&sql, &[]).await.map_err(|e| self.transient(target, e))?;
        rows.first().and_then(|r| r.first().cloned().flatten()).and_then(|n| n.parse().ok()).ok_or_else(|| {
            err(ErrorKind::Unavailable, format!("counting {}.{target}: no count in the answer", self.dataset))
        })
    }

    async fn write(
        &self,
        target: &str,
        writes: &[Write],
        _progress: &[PartitionOffset],
    ) -> Result<Vec<Outcome>, SinkError> {
        let unfit = self.unfit(target, writes).await;
        let refs: Vec<&Write> = writes.iter().zip(&unfit).filter(|(_, u)| u.is_none()).map(|(w, _)| w).collect();
        let applied = match refs.is_empty() {
            true => Ok(HashMap::new()),
            false => match self.drop_missing(target, &refs).await {
                Ok(()) => self.apply(target, &refs).await,
                Err(e) => Err(e),
            },
        };
        match applied {
            Ok(mut outcomes) => Ok(writes
                .iter()
                .zip(unfit)
                .map(|(w, u)| match u {
                    Some(e) => Outcome::Failed(e),
                    None => outcomes.remove(w.doc.id.as_str()).unwrap_or(Outcome::Stale),
                })
                .collect()),
            Err(BqError::Data(m)) => {
                let rows = match writes {
                    [w] => format!("the row with __id {:?} ({})", w.doc.id, w.doc.lineage),
                    _ => format!("{} rows", writes.len()),
                };
                Err(err(
                    ErrorKind::BadData,
                    format!("BigQuery table {}.{target} refused {rows}: {m}; {BAD_DATA_HINT}", self.dataset),
                ))
            }
            Err(e) => {
                if matches!(e, BqError::NotFound(_)) {
                    // Dropped behind our back: re-created by the next add_fields.
                    self.columns.lock().await.remove(target);
                }
                Err(self.transient(target, e))
            }
        }
    }
}
