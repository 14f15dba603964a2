//! Compaction deletes in the staging PostgreSQL sink: a Kafka tombstone
//! (whose `d` may have been compacted away) marks its row deleted, guarded
//! by the row's stored `__partition`/`__offset` instead of its position.

use std::collections::HashSet;

use super::Write;
use super::schema::quote_table;

/// What one table's transaction did: the ids it wrote, and the ids of
/// compaction deletes that found a live row they cannot be ordered against.
#[derive(Default)]
pub(super) struct Applied {
    pub ids: HashSet<String>,
    pub unmatched: HashSet<String>,
}

/// Marks rows deleted for Kafka tombstones, guarded by offset: only a live
/// row last written from the tombstone's partition at a lower offset. The
/// row's `__position` stays, so the position guard still orders what comes
/// after; its `__offset` becomes the tombstone's.
pub fn compaction_delete_sql(target: &str) -> String {
    format!(
        "WITH s AS (SELECT * FROM unnest($1::text[], $2::int4[], $3::int8[]) AS s(id, p, o)) \
         UPDATE {t} AS t SET __deleted = true, __offset = s.o, __written_at = now() FROM s \
         WHERE t.__id = s.id AND NOT t.__deleted AND t.__partition = s.p AND t.__offset < s.o RETURNING t.__id",
        t = quote_table(target)
    )
}

/// The live rows of those ids that no stored offset of the same partition orders.
pub fn compaction_unmatched_sql(target: &str) -> String {
    format!(
        "SELECT t.__id FROM {t} AS t JOIN unnest($1::text[], $2::int4[]) AS s(id, p) ON t.__id = s.id \
         WHERE NOT t.__deleted AND (t.__offset IS NULL OR t.__partition IS DISTINCT FROM s.p)",
        t = quote_table(target)
    )
}

/// Applies one table's compaction deletes inside `tx`.
pub(super) async fn compaction_deletes(
    tx: &tokio_postgres::Transaction<'_>,
    target: &str,
    writes: &[&Write],
) -> Result<Applied, tokio_postgres::Error> {
    let ids: Vec<&str> = writes.iter().map(|w| w.doc.id.as_str()).collect();
    let partitions: Vec<i32> = writes.iter().map(|w| w.doc.lineage.partition).collect();
    let offsets: Vec<i64> = writes.iter().map(|w| w.doc.lineage.offset).collect();
    let mut applied = Applied::default();
    for row in tx.query(&compaction_delete_sql(target), &[&ids, &partitions, &offsets]).await? {
        applied.ids.insert(row.get::<_, String>(0));
    }
    for row in tx.query(&compaction_unmatched_sql(target), &[&ids, &partitions]).await? {
        applied.unmatched.insert(row.get::<_, String>(0));
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compaction_delete_is_guarded_by_offset_on_its_partition_and_keeps_the_position() {
        let sql = compaction_delete_sql("trips");
        assert!(sql.contains("SET __deleted = true, __offset = s.o, __written_at = now()"), "{sql}");
        assert!(!sql.contains("__position"), "the stored position stays: {sql}");
        assert!(sql.contains("NOT t.__deleted AND t.__partition = s.p AND t.__offset < s.o"), "{sql}");
        let unmatched = compaction_unmatched_sql("trips");
        assert!(unmatched.contains("t.__offset IS NULL OR t.__partition IS DISTINCT FROM s.p"), "{unmatched}");
    }
}
