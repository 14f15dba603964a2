//! Columns the source dropped, under `on_drop: drop`: a data column of the
//! mirror table that a row written no longer has (it disappeared from the
//! Debezium records, as after `ALTER TABLE ... DROP COLUMN`) is dropped
//! from every version table of the logical table, `<table>` and
//! `<table>_vN`, in one transaction. The readers' views select `*` as
//! PostgreSQL expanded it when they were made, so they depend on the
//! column: they are dropped and re-created over the version they selected
//! from, inside the same transaction, so readers never miss them. What was
//! dropped, where and why is logged. (`keep` and `null` are carried out by
//! the COPY, in `mod.rs`.)

use tokio_postgres::Client;

use super::schema::{self, quote, quote_table};
use super::{Column, DDL_LOCK, META, SinkError, VIEW_FOLLOWS, get, pg_err, reader_views};
use crate::sink::{Write, is_version_of};

/// The data columns of `columns` that some positioned write of `writes`
/// does not carry (neither in its row nor its key). Deletes and compaction
/// deletes never carry the row, so they never drop a column.
pub fn missing(columns: &[Column], writes: &[Write]) -> Vec<String> {
    columns
        .iter()
        .filter(|c| !META.iter().any(|(m, _)| *m == c.name))
        .filter(|c| {
            writes.iter().any(|w| {
                w.doc.body.as_ref().is_some_and(|b| !w.doc.compaction && get(b, &c.name).is_none())
                    && get(&w.doc.key, &c.name).is_none()
            })
        })
        .map(|c| c.name.clone())
        .collect()
}

/// The version tables of `logical` (itself, adopted, or `<logical>_vN`) in its schema.
async fn version_tables(client: &Client, logical: &str) -> Result<Vec<String>, SinkError> {
    let (namespace, bare) = match logical.split_once('.') {
        Some((s, t)) => (Some(schema::identifier(s).into_owned()), t),
        None => (None, logical),
    };
    let bare = schema::identifier(bare).into_owned();
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = COALESCE($1, current_schema()) AND c.relkind = 'r' AND starts_with(c.relname::text, $2)",
            &[&namespace, &bare],
        )
        .await
        .map_err(|e| pg_err(&format!("listing the version tables of {logical}"), &e))?;
    let qualify = |t: &str| match logical.split_once('.') {
        Some((s, _)) => format!("{s}.{t}"),
        None => t.to_string(),
    };
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).filter(|t| is_version_of(t, &bare)).map(|t| qualify(&t)).collect())
}

/// Drops `columns` from every version table of `logical`, re-creating the
/// readers' views over the version they followed; returns the version
/// tables it altered. Idempotent (`DROP COLUMN IF EXISTS`), so two
/// instances dropping at once, or a retry, change nothing twice.
pub async fn drop_columns(
    client: &Client,
    logical: &str,
    columns: &[String],
    rebuild: &str,
) -> Result<Vec<String>, SinkError> {
    let versions = version_tables(client, logical).await?;
    let live = quote_table(&format!("{logical}_live"));
    let mut followed = None;
    for v in &versions {
        let row = client
            .query_one(VIEW_FOLLOWS, &[&live, &quote_table(v)])
            .await
            .map_err(|e| pg_err(&format!("reading the views of {logical}"), &e))?;
        if row.get::<_, bool>(1) {
            followed = Some(v.clone());
        }
    }
    let drops: Vec<String> = columns.iter().map(|c| format!("DROP COLUMN IF EXISTS {}", quote(c))).collect();
    let mut sql = format!("BEGIN; {DDL_LOCK}");
    if followed.is_some() {
        let all = quote_table(logical);
        sql.push_str(&format!("DROP VIEW IF EXISTS {live}; DROP VIEW IF EXISTS {all}; "));
    }
    for v in &versions {
        sql.push_str(&format!("ALTER TABLE {} {}; ", quote_table(v), drops.join(", ")));
    }
    if let Some(physical) = &followed {
        sql.push_str(&format!("{}; ", reader_views(logical, physical)));
    }
    sql.push_str("COMMIT;");
    if let Err(e) = client.batch_execute(&sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(pg_err(&format!("dropping columns {columns:?} from the version tables of {logical}"), &e));
    }
    tracing::warn!(
        sink = super::SINK,
        table = logical,
        columns = ?columns,
        versions = ?versions,
        views = ?followed,
        policy = "on_drop: drop",
        "the source dropped these columns: dropped them, with their values, from every version table (the read model's on_drop: drop); to get them back, add them at the source and rebuild ({rebuild})"
    );
    Ok(versions)
}
