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
//! column. Nothing is dropped or retyped automatically.
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
//! ## Failures
//! Unreachable, 5xx, 429 and rate limits fail the whole batch (the pipeline
//! retries). A 400 `invalid`/`invalidQuery` (a value BigQuery refuses) makes
//! the sink retry that table's writes one by one, so only the bad row is
//! rejected (and dead-lettered).

pub mod auth;
pub mod client;
mod merge;
pub mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::{Outcome, Sink, SinkError, Write};
use crate::mapping::{ReadModel, TableMapping};
pub use auth::Auth;
use client::{BqError, Client};

const SINK: &str = "bigquery";

fn err(message: impl Into<String>) -> SinkError {
    SinkError { sink: SINK, message: message.into() }
}

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
            return Err(err(format!(
                "dataset {dataset:?} is not a valid BigQuery dataset id: use letters, digits and '_'"
            )));
        }
        if project.is_empty() {
            return Err(err("no BigQuery project id: set the project (e.g. projector-local for the emulator)"));
        }
        for t in &model.tables {
            if let Some(bq) = &t.bigquery {
                sql::check_table_name(&bq.table)
                    .map_err(|e| err(format!("{}:{}: {e}", model.file.display(), t.line)))?;
            }
        }
        let tokens = auth::TokenSource::new(&auth).map_err(err)?;
        let client = Client::new(base_url, project, tokens).map_err(err)?;
        Ok(BigQuery {
            client,
            dataset: dataset.to_string(),
            model,
            columns: Mutex::new(HashMap::new()),
            incarnations: Mutex::new(HashMap::new()),
        })
    }

    fn table_for(&self, target: &str) -> Option<&TableMapping> {
        self.model.tables.iter().find(|t| t.bigquery.as_ref().is_some_and(|b| b.table == target))
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

    /// The columns a batch needs that the table lacks, typed.
    fn new_columns(&self, target: &str, known: &[(String, String)], writes: &[&Write]) -> Vec<(String, String)> {
        let table = self.table_for(target);
        let declared = table.and_then(|t| t.bigquery.as_ref()).map(|b| b.types.as_slice()).unwrap_or(&[]);
        let mut added: Vec<(String, String)> = Vec::new();
        let seen = |name: &str, added: &Vec<(String, String)>| {
            is_meta(name) || known.iter().chain(added.iter()).any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        for w in writes {
            let body = w.doc.body.as_ref().map(|b| b.columns.as_slice()).unwrap_or(&[]);
            for (name, v) in body.iter().chain(w.doc.key.columns.iter()) {
                if seen(name, &added) {
                    continue;
                }
                let ty = declared
                    .iter()
                    .find(|(f, _)| f == name)
                    .map(|(_, t)| t.clone())
                    .or_else(|| {
                        table
                            .and_then(|t| t.output_type(name, w.doc.source_types.as_deref()))
                            .map(|ft| sql::type_of_field(&ft))
                    })
                    .or_else(|| sql::type_of_value(v));
                if let Some(ty) = ty {
                    added.push((name.clone(), ty));
                }
            }
        }
        added
    }

    /// Makes sure the table exists with every column the batch needs;
    /// returns its columns.
    async fn evolve(&self, target: &str, writes: &[&Write]) -> Result<Vec<(String, String)>, BqError> {
        let mut columns = self.columns.lock().await;
        if !columns.contains_key(target)
            && let Some(info) = self.client.table(&self.dataset, target).await?
        {
            self.incarnations.lock().await.insert(target.to_string(), info.incarnation);
            columns.insert(target.to_string(), info.columns);
        }
        match columns.get(target) {
            None => {
                let mut wanted = self.new_columns(target, &[], writes);
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
                let added = self.new_columns(target, known, writes);
                if added.is_empty() {
                    return Ok(known.clone());
                }
                let tref = self.tref(target);
                self.client.query(&sql::add_columns(&tref, &added), &[]).await.map_err(|e| match e {
                    BqError::Data(m) => BqError::Data(format!(
                        "adding columns {:?} to table {target}: {m}",
                        added.iter().map(|(n, _)| n).collect::<Vec<_>>()
                    )),
                    other => other,
                })?;
                self.client.query(&sql::live_view(&self.view_ref(target), &tref), &[]).await?;
                tracing::info!(sink = SINK, table = target, columns = ?added, "added columns");
            }
        }
        let info = self.client.table(&self.dataset, target).await?.ok_or_else(|| {
            BqError::NotFound(format!("table {target} vanished right after it was created or altered"))
        })?;
        self.incarnations.lock().await.insert(target.to_string(), info.incarnation);
        columns.insert(target.to_string(), info.columns.clone());
        Ok(info.columns)
    }

    fn transient(&self, target: &str, e: BqError) -> SinkError {
        err(format!("table {}.{target}: {}", self.dataset, e.message()))
    }
}

impl Sink for BigQuery {
    fn name(&self) -> &'static str {
        SINK
    }

    fn target(&self, model: &ReadModel, topic: &str) -> Option<Arc<str>> {
        model.table(topic)?.bigquery.as_ref().map(|b| Arc::from(b.table.as_str()))
    }

    fn excluded<'a>(&self, table: &'a TableMapping) -> &'a [String] {
        table.bigquery.as_ref().map_or(&[], |b| b.exclude.as_slice())
    }

    async fn prepare(&self, model: &ReadModel) -> Result<(), SinkError> {
        let location = self
            .client
            .ensure_dataset(&self.dataset)
            .await
            .map_err(|e| err(format!("creating dataset {}: {}", self.dataset, e.message())))?;
        if let (Some(l), Ok(mut slot)) = (location, self.client.location.write()) {
            *slot = Some(l);
        }
        for t in &model.tables {
            let Some(bq) = &t.bigquery else { continue };
            let existing =
                self.client.table_columns(&self.dataset, &bq.table).await.map_err(|e| self.transient(&bq.table, e))?;
            match existing {
                Some(cols) => {
                    self.columns.lock().await.insert(bq.table.clone(), cols);
                }
                // Created now when partitioning/clustering need only declared
                // fields; otherwise with the first batch, once fields are typed.
                None => {
                    if self.create_table(&bq.table, &bq.types).await.map_err(|e| self.transient(&bq.table, e))? {
                        let cols = self
                            .client
                            .table_columns(&self.dataset, &bq.table)
                            .await
                            .map_err(|e| self.transient(&bq.table, e))?
                            .unwrap_or_default();
                        self.columns.lock().await.insert(bq.table.clone(), cols);
                    }
                }
            }
        }
        Ok(())
    }

    async fn write(&self, writes: &[Write], _progress: &[(String, i32, i64)]) -> Result<Vec<Outcome>, SinkError> {
        let mut by_target: Vec<(&str, Vec<&Write>)> = Vec::new();
        for w in writes {
            match by_target.iter_mut().find(|(t, _)| *t == &*w.target) {
                Some((_, v)) => v.push(w),
                None => by_target.push((&w.target, vec![w])),
            }
        }
        let mut outcomes: HashMap<(String, String), Outcome> = HashMap::new();
        for (target, ws) in &by_target {
            match self.apply(target, ws).await {
                Ok(o) => outcomes.extend(o.into_iter().map(|(id, o)| ((target.to_string(), id), o))),
                Err(BqError::Data(e)) => {
                    // Find the bad rows: one MERGE per row.
                    tracing::warn!(sink = SINK, table = target, error = %e, rows = ws.len(), "batch refused; retrying row by row to isolate the bad rows");
                    for w in ws {
                        let o = match self.apply(target, &[w]).await {
                            Ok(mut o) => o.remove(&w.doc.id).unwrap_or(Outcome::Stale),
                            Err(BqError::Data(m)) => Outcome::Rejected(format!(
                                "BigQuery table {}.{target} refused the row with __id {:?} ({}): {m}; fix the value at the source, declare the field's type under bigquery.types, or leave the field out with bigquery.exclude (a BigQuery column name cannot contain characters such as ; . , ( ) [ ] or quotes other than ')",
                                self.dataset, w.doc.id, w.doc.lineage
                            )),
                            Err(BqError::NotFound(m)) => {
                                self.columns.lock().await.remove(*target);
                                Outcome::Retry(m)
                            }
                            Err(other) => Outcome::Retry(other.message().to_string()),
                        };
                        outcomes.insert((target.to_string(), w.doc.id.clone()), o);
                    }
                }
                Err(e) => {
                    if matches!(e, BqError::NotFound(_)) {
                        // Dropped behind our back: recreate on the next attempt.
                        self.columns.lock().await.remove(*target);
                    }
                    return Err(self.transient(target, e));
                }
            }
        }
        Ok(writes
            .iter()
            .map(|w| outcomes.remove(&(w.target.to_string(), w.doc.id.clone())).unwrap_or(Outcome::Stale))
            .collect())
    }
}
