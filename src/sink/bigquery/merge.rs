//! How one table's writes reach BigQuery: positions read, rows staged,
//! MERGEd under the position guard, positions read again. Called by the sink
//! ([`super::BigQuery`]) once per table of a batch, after the table has been
//! created or given its new columns.
//!
//! ## Steps
//! 1. the stored positions of the batch's ids are read; writes that are not
//!    newer are reported `Stale` and left out; compaction deletes (Kafka
//!    tombstones, no position) are decided by [`compaction::outcome`] on the
//!    stored `__deleted`/`__partition`/`__offset`, and those it lets through
//!    are one offset-guarded MERGE ([`sql::compaction_delete`]), read back;
//! 2. the rest are staged with a query job, `CREATE OR REPLACE TABLE
//!    _projector_stage_<hash> AS SELECT ... FROM UNNEST(JSON_QUERY_ARRAY(@rows))`
//!    (values travel as exact text and are cast to the column types; a query
//!    job's output is ordinary storage, not the streaming buffer);
//! 3. `MERGE` into the table keyed by `__id`: `WHEN MATCHED AND T.__position
//!    < S.__position THEN UPDATE ... WHEN NOT MATCHED THEN INSERT ...`;
//! 4. the staging table is dropped (it also expires after a day);
//! 5. the stored positions are read again: a write whose position is now
//!    stored is `Applied`, otherwise `Stale` (a newer write won meanwhile).
//!
//! ## Job ids: one per batch and per incarnation of the table
//! Steps 2 and 3 run as jobs with deterministic ids, so a retry after a
//! timeout gets 409 "duplicate" and, when that job had succeeded, is treated
//! as done instead of running again; a job that had failed is run again
//! under a new id. Job ids are unique per project, so the hash they carry
//! covers the read model, the dataset, the table, the table's incarnation
//! (its `creationTime` from tables.get) and the batch's ids, positions and
//! columns: the same batch for another dataset, or for a table dropped and
//! re-created (a rebuild, an operator), is new work. A MERGE found done, or
//! refused, is checked against the table's incarnation now, since a table
//! re-created by someone else goes unnoticed until then; if it changed, the
//! cached columns are forgotten and the batch fails with `NotFound`, so the
//! pipeline writes it again to the new table. The position guard makes any
//! re-application a no-op anyway. (BigQuery cannot record Kafka progress in
//! the same transaction, so `progress` is not stored here; the pipeline
//! commits offsets after the batch.)
//!
//! ## Two writers on one key
//! During a rebalance two instances can write the same new ids at once.
//! BigQuery runs each DML statement as its own snapshot transaction;
//! mutating statements (UPDATE, DELETE, MERGE) that touch the same data
//! conflict and one fails with "Could not serialize access to table ... due
//! to concurrent update" (classified `Transient`: the batch is retried), but
//! statements that only add rows do not conflict ("Transform data with DML",
//! DML concurrency and quotas: cloud.google.com/bigquery/docs/data-manipulation-language).
//! Two MERGEs that both find an id absent therefore both INSERT and both
//! commit, and `PRIMARY KEY NOT ENFORCED` does not stop them. Nothing in a
//! single statement can prevent that, so the sink repairs it: every read of
//! stored positions (steps 1 and 5) sees an id stored twice and, in one
//! MERGE ([`sql::dedup`]), keeps its row with the highest `__position`. The
//! writer that commits second always reads after both rows exist; if it dies
//! first, its batch is redelivered uncommitted and step 1 of the redelivery
//! repairs it. The repair is idempotent, and a repair racing another write
//! conflicts as a mutating statement and is retried. A per-table lease would
//! serialize every writer on a table for the rare race; a view picking one
//! row per id would leave the table itself wrong for every other reader.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::client::{BqError, Param};
use super::{BigQuery, SINK, is_meta, sql};
use crate::decode::Value;
use crate::decode::value::timestamp_text;
use crate::mapping::OnDrop;
use crate::sink::compaction::{self, Stored};
use crate::sink::{Outcome, Write};

/// One stored row as the sink reads it back.
struct StoredRow {
    position: String,
    stored: Stored,
}

impl StoredRow {
    /// From a `sql::positions` row: id, position, deleted, partition, offset.
    fn of(r: &[Option<String>]) -> Option<(String, StoredRow)> {
        let cell = |i: usize| r.get(i).cloned().flatten();
        let number = |i: usize| cell(i).and_then(|c| c.parse::<i64>().ok());
        let written_by = match (number(3).and_then(|p| i32::try_from(p).ok()), number(4)) {
            (Some(p), Some(o)) => Some((p, o)),
            _ => None,
        };
        let deleted = cell(2).is_some_and(|d| d.eq_ignore_ascii_case("true"));
        Some((cell(0)?, StoredRow { position: cell(1)?, stored: Stored { deleted, written_by } }))
    }
}

/// Largest staging parameter per job (BigQuery caps a request at 10 MB).
const MAX_STAGE_BYTES: usize = 4 * 1024 * 1024;

impl BigQuery {
    /// The incarnation of `target` last seen, looked up when not known yet.
    async fn incarnation(&self, target: &str) -> Result<String, BqError> {
        if let Some(known) = self.incarnations.lock().await.get(target) {
            return Ok(known.clone());
        }
        self.current_incarnation(target).await
    }

    /// The incarnation of `target` now (tables.get), remembered.
    async fn current_incarnation(&self, target: &str) -> Result<String, BqError> {
        let info = self.client.table(&self.dataset, target).await?.ok_or_else(|| {
            BqError::NotFound(format!(
                "table {}.{target} was dropped while writing to it; it is re-created on the next attempt",
                self.dataset
            ))
        })?;
        self.incarnations.lock().await.insert(target.to_string(), info.incarnation.clone());
        Ok(info.incarnation)
    }

    /// What is stored per id: its `__position`, and what a compaction
    /// delete reads (deleted, written by which record). An id stored twice
    /// (two writers raced, see the module doc) is collapsed to its newest
    /// row first.
    async fn stored_rows(&self, target: &str, ids: Vec<String>) -> Result<HashMap<String, StoredRow>, BqError> {
        let tref = self.tref(target);
        let rows = self.client.query(&sql::positions(&tref), &[Param::Strings("ids", ids)]).await?;
        let mut stored: HashMap<String, StoredRow> = HashMap::new();
        let mut twice: Vec<String> = Vec::new();
        for (id, row) in rows.iter().filter_map(|r| StoredRow::of(r)) {
            match stored.get_mut(&id) {
                None => {
                    stored.insert(id, row);
                }
                Some(newest) => {
                    if newest.position < row.position {
                        *newest = row;
                    }
                    if !twice.contains(&id) {
                        twice.push(id);
                    }
                }
            }
        }
        if !twice.is_empty() {
            tracing::warn!(
                sink = SINK,
                table = target,
                ids = twice.len(),
                "ids stored more than once (concurrent writers); keeping each one's newest row"
            );
            self.client.query(&sql::dedup(&tref), &[Param::Strings("ids", twice)]).await.map_err(|e| match e {
                // Not the rows' fault: never let it reject (dead-letter) them.
                BqError::Data(m) => BqError::Transient(format!(
                    "collapsing ids stored twice in table {}.{target} was refused: {m}; the batch is retried, and until it succeeds the table holds two rows for those ids (the statement is sql::dedup)",
                    self.dataset
                )),
                other => other,
            })?;
        }
        Ok(stored)
    }

    /// One staging row (JSON): bookkeeping values and one text cell per data column.
    /// A column the row does not have (the source dropped it) is kept as
    /// stored with `keep_dropped` (`on_drop: keep`), else set null.
    fn stage_row(w: &Write, data: &[(String, String)], keep_dropped: bool) -> String {
        let d = &w.doc;
        let find = |row: &crate::decode::Row, n: &str| {
            row.columns.iter().find(|(c, _)| c.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone())
        };
        let mut m = Map::new();
        m.insert("id".into(), Json::String(d.id.to_string()));
        m.insert("pos".into(), Json::String(d.position.as_str().to_string()));
        m.insert("del".into(), Json::String(d.body.is_none().to_string()));
        m.insert("part".into(), Json::String(d.lineage.partition.to_string()));
        m.insert("off".into(), Json::String(d.lineage.offset.to_string()));
        m.insert(
            "ts".into(),
            d.source_ts_ms
                .map(|ms| Json::String(format!("{}Z", timestamp_text(ms as i128 * 1_000_000))))
                .unwrap_or(Json::Null),
        );
        let mut keep = String::from(",");
        for (i, (n, ty)) in data.iter().enumerate() {
            let v = match &d.body {
                Some(body) => find(body, n).or_else(|| find(&d.key, n)).unwrap_or(if keep_dropped {
                    Value::Unavailable
                } else {
                    Value::Null
                }),
                None => match find(&d.key, n) {
                    Some(v) => v,
                    None => Value::Unavailable,
                },
            };
            if matches!(v, Value::Unavailable) {
                keep.push_str(&format!("{i},"));
            }
            m.insert(format!("c{i}"), sql::cell_text(&v, &sql::base_type(ty)).map(Json::String).unwrap_or(Json::Null));
        }
        m.insert("keep".into(), Json::String(keep));
        Json::Object(m).to_string()
    }

    /// Runs a job; a job that had failed under this id runs again under a new one.
    async fn job(&self, id: &str, statement: &str, params: &[Param<'_>]) -> Result<bool, BqError> {
        match self.client.run_job(id, statement, params).await {
            Err(BqError::FailedBefore(m)) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                tracing::warn!(sink = SINK, job = id, error = %m, "an earlier run of this job failed; running it again under a new id");
                self.client.run_job(&format!("{id}_r{nanos}"), statement, params).await
            }
            other => other,
        }
    }

    /// Applies one table's writes; returns the outcome per id.
    pub(super) async fn apply(&self, target: &str, writes: &[&Write]) -> Result<HashMap<String, Outcome>, BqError> {
        let columns = self
            .columns
            .lock()
            .await
            .get(target)
            .cloned()
            .ok_or_else(|| BqError::NotFound(format!("table {target} is not known yet; re-creating it")))?;
        let data: Vec<(String, String)> = columns.into_iter().filter(|(n, _)| !is_meta(n)).collect();
        let before = self.stored_rows(target, writes.iter().map(|w| w.doc.id.to_string()).collect()).await?;
        let mut out: HashMap<String, Outcome> = HashMap::new();
        let (tombstones, writes): (Vec<&Write>, Vec<&Write>) = writes.iter().copied().partition(|w| w.doc.compaction);
        let tombstones: Vec<&Write> = tombstones
            .into_iter()
            .filter(|w| match compaction::outcome(&w.doc, before.get(w.doc.id.as_str()).map(|r| r.stored)) {
                Some(outcome) => {
                    out.insert(w.doc.id.to_string(), outcome);
                    false
                }
                None => true,
            })
            .collect();
        if !tombstones.is_empty() {
            self.compaction_deletes(target, &tombstones, &mut out).await?;
        }
        let fresh: Vec<&Write> = writes
            .into_iter()
            .filter(|w| {
                let newer = before.get(w.doc.id.as_str()).is_none_or(|r| r.position.as_str() < w.doc.position.as_str());
                if !newer {
                    out.insert(w.doc.id.to_string(), Outcome::Stale);
                }
                newer
            })
            .collect();
        if fresh.is_empty() {
            return Ok(out);
        }
        // Staging rows travel as one query parameter: keep each request well
        // under BigQuery's 10 MB request limit.
        let keep_dropped = self.table_for(target).is_none_or(|t| t.policy.on_drop == OnDrop::Keep);
        let rows: Vec<String> = fresh.iter().map(|w| Self::stage_row(w, &data, keep_dropped)).collect();
        let mut start = 0;
        while start < fresh.len() {
            let mut end = start;
            let mut size = 0;
            while end < fresh.len() && (end == start || size + rows[end].len() < MAX_STAGE_BYTES) {
                size += rows[end].len() + 1;
                end += 1;
            }
            self.stage_and_merge(target, &fresh[start..end], &rows[start..end], &data).await?;
            start = end;
        }
        let after = self.stored_rows(target, fresh.iter().map(|w| w.doc.id.to_string()).collect()).await?;
        for w in fresh {
            let applied = after.get(w.doc.id.as_str()).is_some_and(|r| r.position == w.doc.position.as_str());
            out.insert(w.doc.id.to_string(), if applied { Outcome::Applied } else { Outcome::Stale });
        }
        Ok(out)
    }

    /// Marks rows deleted for compaction deletes that their stored rows let
    /// through (see [`compaction::outcome`]); reads back which did. The
    /// statement is guarded by offset, so a retry changes nothing twice.
    async fn compaction_deletes(
        &self,
        target: &str,
        tombstones: &[&Write],
        out: &mut HashMap<String, Outcome>,
    ) -> Result<(), BqError> {
        let rows: Vec<Json> = tombstones
            .iter()
            .map(|w| {
                serde_json::json!({"id": w.doc.id, "part": w.doc.lineage.partition.to_string(), "off": w.doc.lineage.offset.to_string()})
            })
            .collect();
        let rows = Json::Array(rows).to_string();
        self.client.query(&sql::compaction_delete(&self.tref(target)), &[Param::String("rows", rows)]).await?;
        let after = self.stored_rows(target, tombstones.iter().map(|w| w.doc.id.to_string()).collect()).await?;
        for w in tombstones {
            let by_it = Some((w.doc.lineage.partition, w.doc.lineage.offset));
            let applied =
                after.get(w.doc.id.as_str()).is_some_and(|r| r.stored.deleted && r.stored.written_by == by_it);
            out.insert(w.doc.id.to_string(), if applied { Outcome::Applied } else { Outcome::Stale });
        }
        Ok(())
    }

    /// Stages some fresh writes and MERGEs them, each step a job with a
    /// deterministic id (see the module doc), then drops the staging table.
    async fn stage_and_merge(
        &self,
        target: &str,
        fresh: &[&Write],
        rows: &[String],
        data: &[(String, String)],
    ) -> Result<(), BqError> {
        let incarnation = self.incarnation(target).await?;
        // A MERGE found done, or refused, is checked against the table as it
        // is now: it may have run against an earlier table of this name,
        // dropped and re-created since by someone else (the sink only
        // notices a table gone when a statement says so).
        let recreated = match self.stage_and_merge_once(target, &incarnation, fresh, rows, data).await {
            Ok(false) => return Ok(()),
            Ok(true) => self.current_incarnation(target).await? != incarnation,
            Err(BqError::Data(m)) => {
                if self.current_incarnation(target).await? == incarnation {
                    return Err(BqError::Data(m));
                }
                true
            }
            Err(e) => return Err(e),
        };
        if !recreated {
            return Ok(());
        }
        // Its columns are not the ones cached either: learn them again.
        self.columns.lock().await.remove(target);
        Err(BqError::NotFound(format!(
            "table {}.{target} was re-created while the sink was writing to it; the batch is written again to the new table",
            self.dataset
        )))
    }

    /// One stage-and-MERGE under the ids of this incarnation of the table.
    /// `Ok(true)` when the MERGE's job id existed and had succeeded.
    async fn stage_and_merge_once(
        &self,
        target: &str,
        incarnation: &str,
        fresh: &[&Write],
        rows: &[String],
        data: &[(String, String)],
    ) -> Result<bool, BqError> {
        // Job ids are unique per project, so they name the dataset and the
        // table's incarnation: the same batch for another dataset, or for
        // a re-created table, is new work, not a retry.
        let mut parts: Vec<&str> = vec![&self.model.name, &self.dataset, target, incarnation];
        for w in fresh {
            parts.push(&w.doc.id);
            parts.push(w.doc.position.as_str());
        }
        parts.extend(data.iter().map(|(n, _)| n.as_str()));
        let hash = sql::stable_hash(&parts);
        let stage_ref = self.tref(&format!("_projector_stage_{hash}"));
        let rows = format!("[{}]", rows.join(","));
        let stage_sql = sql::stage(&stage_ref, data);
        let names: Vec<String> = data.iter().map(|(n, _)| n.clone()).collect();
        let merge_sql = sql::merge(&self.tref(target), &stage_ref, &names);
        let stage_id = sql::job_id(&self.model.name, target, &hash, "stage");
        let merge_id = sql::job_id(&self.model.name, target, &hash, "merge");
        let stage_dup = self.job(&stage_id, &stage_sql, &[Param::String("rows", rows.clone())]).await?;
        let merged_before = match self.job(&merge_id, &merge_sql, &[]).await {
            Ok(dup) => {
                if dup {
                    tracing::info!(
                        sink = SINK,
                        table = target,
                        job = merge_id,
                        "MERGE of this batch already ran (job id exists); not applying it again"
                    );
                }
                dup
            }
            // The staged table is gone (an earlier attempt staged it, and it
            // expired or was dropped): stage again under a fresh id.
            Err(BqError::NotFound(_)) if stage_dup => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                self.client
                    .run_job(&format!("{stage_id}_r{nanos}"), &stage_sql, &[Param::String("rows", rows)])
                    .await?;
                self.client.run_job(&format!("{merge_id}_r{nanos}"), &merge_sql, &[]).await?;
                false
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = self.client.query(&format!("DROP TABLE IF EXISTS {stage_ref}"), &[]).await {
            tracing::warn!(sink = SINK, table = target, error = %e.message(), "could not drop the staging table; it expires in a day");
        }
        Ok(merged_before)
    }
}
