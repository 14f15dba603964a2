//! Columns the source dropped, under `on_drop: drop`: a data column that a
//! row written no longer has (it disappeared from the Debezium records, as
//! after `ALTER TABLE ... DROP COLUMN`) is dropped with `ALTER TABLE ...
//! DROP COLUMN IF EXISTS` from the table written and from every other
//! version table of the same logical table this sink knows, and each
//! table's own `_live` view is re-created over it. A readers' view that
//! selects `*` from a later version needs nothing: BigQuery expands `*`
//! when a view is queried. What was dropped, where and why is logged.
//! (`keep` and `null` are carried out by the MERGE, in `merge.rs`.)

use super::client::BqError;
use super::{BigQuery, SINK, is_meta, sql};
use crate::mapping::OnDrop;
use crate::sink::{Write, is_version_of};

/// The data columns of `columns` that some positioned write of `writes`
/// does not carry (BigQuery names are case-insensitive). Deletes and
/// compaction deletes never carry the row, so they never drop a column.
pub fn missing(columns: &[(String, String)], writes: &[&Write]) -> Vec<String> {
    let has = |row: &crate::decode::Row, n: &str| row.columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(n));
    columns
        .iter()
        .filter(|(n, _)| !is_meta(n))
        .filter(|(n, _)| {
            writes
                .iter()
                .any(|w| w.doc.body.as_ref().is_some_and(|b| !w.doc.compaction && !has(b, n)) && !has(&w.doc.key, n))
        })
        .map(|(n, _)| n.clone())
        .collect()
}

impl BigQuery {
    /// Under `on_drop: drop`, drops the columns `writes` no longer carry
    /// from every version table of `target`'s table that this sink knows.
    /// Idempotent: a retry or a second instance changes nothing twice.
    pub(super) async fn drop_missing(&self, target: &str, writes: &[&Write]) -> Result<(), BqError> {
        let Some(table) = self.table_for(target).filter(|t| t.policy.on_drop == OnDrop::Drop) else { return Ok(()) };
        let Some(logical) = table.bigquery.as_ref().map(|b| b.table.as_str()) else { return Ok(()) };
        let Some(columns) = self.columns.lock().await.get(target).cloned() else { return Ok(()) };
        let gone = missing(&columns, writes);
        if gone.is_empty() {
            return Ok(());
        }
        let mut versions: Vec<String> =
            self.columns.lock().await.keys().filter(|k| is_version_of(k, logical)).cloned().collect();
        versions.sort();
        let drops: Vec<String> = gone.iter().map(|c| format!("DROP COLUMN IF EXISTS {}", sql::quote(c))).collect();
        // Not the rows' fault: a refusal must never dead-letter them.
        let not_data = |e: BqError| match e {
            BqError::Data(m) => BqError::Transient(format!(
                "dropping columns {gone:?} (on_drop: drop) from {}.{target} was refused: {m}; the batch is retried",
                self.dataset
            )),
            other => other,
        };
        for v in &versions {
            let tref = self.tref(v);
            self.client.query(&format!("ALTER TABLE {tref} {}", drops.join(", ")), &[]).await.map_err(not_data)?;
            self.client.query(&sql::live_view(&self.view_ref(v), &tref), &[]).await.map_err(not_data)?;
            let now = self.client.table_columns(&self.dataset, v).await?.unwrap_or_default();
            self.columns.lock().await.insert(v.clone(), now);
        }
        tracing::warn!(
            sink = SINK,
            dataset = %self.dataset,
            table = logical,
            columns = ?gone,
            versions = ?versions,
            policy = "on_drop: drop",
            "the source dropped these columns: dropped them, with their values, from every version table (the read model's on_drop: drop); to get them back, add them at the source and rebuild ({})",
            table.rebuild_command(SINK)
        );
        Ok(())
    }
}
