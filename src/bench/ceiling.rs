//! The yardsticks projector is measured against, on the same machine, in
//! the same run, with the same documents:
//! - Elasticsearch `_bulk` driven directly: plain `index` actions (no
//!   ordering guard), over a grid of batch sizes and concurrencies; the best
//!   cell is the ceiling;
//! - PostgreSQL driven directly: binary `COPY` into a temporary table, then
//!   one `INSERT … ON CONFLICT DO UPDATE` per batch (no guard);
//! - Debezium's JDBC sink connector in the stack's Kafka Connect worker,
//!   upserting the same topic into PostgreSQL;
//! - BigQuery's `tabledata.insertAll` driven directly (the rebuild
//!   measurement's yardstick for BigQuery; on the local emulator).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value as Json, json};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::probe::{self, CatchUp};
use crate::decode::Value;
use crate::mapping::Document;
use crate::sink::elasticsearch::encode;
use crate::sink::postgres::schema::{quote, quote_table};
use crate::sink::postgres::{self, binary::Cell};

/// One cell of a ceiling grid.
#[derive(Clone, Copy, Debug)]
pub struct Cell3 {
    pub batch: usize,
    pub concurrency: usize,
    pub docs_per_s: f64,
}

/// Writes `docs` with `_bulk` into fresh indexes created with `template`'s
/// mapping, once per (batch size, concurrency); returns every cell.
pub async fn elasticsearch_bulk(
    http: &reqwest::Client,
    es: &str,
    template: &str,
    docs: &[Document],
    batches: &[usize],
    concurrencies: &[usize],
) -> anyhow::Result<Vec<Cell3>> {
    let mapping: Json = http.get(format!("{es}/{template}/_mapping")).send().await?.error_for_status()?.json().await?;
    let mappings = mapping
        .as_object()
        .and_then(|m| m.values().next())
        .map(|v| v["mappings"].clone())
        .context("no mapping for the template index")?;
    // Each document as its two NDJSON lines, encoded once.
    let lines: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| {
            let mut out = format!("{{\"index\":{{\"_id\":{}}}}}\n", serde_json::to_string(&d.id).unwrap_or_default())
                .into_bytes();
            encode::document(&mut out, d);
            out
        })
        .collect();
    let lines = Arc::new(lines);
    let mut cells = Vec::new();
    for &batch in batches {
        for &concurrency in concurrencies {
            let index = format!("{template}_ceiling_{batch}_{concurrency}");
            let _ = http.delete(format!("{es}/{index}")).send().await;
            http.put(format!("{es}/{index}"))
                .json(&json!({"mappings": mappings}))
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("creating {index}"))?;
            let next = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let mut workers = Vec::new();
            for _ in 0..concurrency {
                let (http, lines, next, url) =
                    (http.clone(), lines.clone(), next.clone(), format!("{es}/{index}/_bulk?filter_path=errors"));
                workers.push(tokio::spawn(async move {
                    loop {
                        let from = next.fetch_add(batch, Ordering::Relaxed);
                        if from >= lines.len() {
                            return anyhow::Ok(());
                        }
                        let body: Vec<u8> = lines[from..(from + batch).min(lines.len())].concat();
                        let resp =
                            http.post(&url).header("content-type", "application/x-ndjson").body(body).send().await?;
                        let status = resp.status();
                        let text = resp.text().await?;
                        anyhow::ensure!(
                            status.is_success() && text.contains("\"errors\":false"),
                            "ceiling bulk into {url}: HTTP {status}: {}",
                            &text[..text.len().min(300)]
                        );
                    }
                }));
            }
            for w in workers {
                w.await??;
            }
            let secs = started.elapsed().as_secs_f64();
            cells.push(Cell3 { batch, concurrency, docs_per_s: docs.len() as f64 / secs });
            let _ = http.delete(format!("{es}/{index}")).send().await;
        }
    }
    Ok(cells)
}

/// Upserts `docs` into a copy of projector's mirror table `table` with
/// binary COPY + `INSERT … ON CONFLICT DO UPDATE`, one transaction per
/// batch, for each batch size; returns every cell.
pub async fn postgres_copy(url: &str, table: &str, docs: &[Document], batches: &[usize]) -> anyhow::Result<Vec<Cell3>> {
    let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL for the ceiling")?;
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> '__written_at' ORDER BY a.attnum",
            &[&quote_table(table)],
        )
        .await?;
    let columns: Vec<(String, Type)> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), Type::from_oid(r.get::<_, u32>(1)).unwrap_or(Type::TEXT)))
        .collect();
    anyhow::ensure!(columns.len() > 4, "{table} has no data columns; did the postgres phase run?");
    let names = columns.iter().map(|(n, _)| quote(n)).collect::<Vec<_>>().join(", ");
    let sets = columns
        .iter()
        .filter(|(n, _)| n != "__id")
        .map(|(n, _)| format!("{c} = EXCLUDED.{c}", c = quote(n)))
        .collect::<Vec<_>>()
        .join(", ");
    let types: Vec<Type> = columns.iter().map(|(_, t)| t.clone()).collect();
    let mut cells = Vec::new();
    for &batch in batches {
        let target = format!("{table}_ceiling_{batch}");
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (LIKE {src} INCLUDING ALL)",
                t = quote_table(&target),
                src = quote_table(table)
            ))
            .await?;
        let started = Instant::now();
        for chunk in docs.chunks(batch) {
            let tx = client.transaction().await?;
            tx.batch_execute(&format!(
                "CREATE TEMP TABLE ceiling_batch ON COMMIT DROP AS SELECT {names} FROM {} WITH NO DATA",
                quote_table(&target)
            ))
            .await?;
            let sink = tx.copy_in(&format!("COPY ceiling_batch ({names}) FROM STDIN (FORMAT binary)")).await?;
            let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
            for d in chunk {
                let values = row_values(d, &columns);
                let cells: Vec<Cell<'_>> = columns
                    .iter()
                    .zip(&values)
                    .map(|((column, _), value)| Cell { column, value, numeric: None })
                    .collect();
                let row: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
                writer.as_mut().write(&row).await?;
            }
            writer.finish().await?;
            tx.batch_execute(&format!(
                "INSERT INTO {t} ({names}) SELECT DISTINCT ON (__id) {names} FROM ceiling_batch ORDER BY __id, __position DESC ON CONFLICT (__id) DO UPDATE SET {sets}",
                t = quote_table(&target)
            ))
            .await?;
            tx.commit().await?;
        }
        cells.push(Cell3 { batch, concurrency: 1, docs_per_s: docs.len() as f64 / started.elapsed().as_secs_f64() });
        client.batch_execute(&format!("DROP TABLE {}", quote_table(&target))).await?;
    }
    Ok(cells)
}

/// A document's values in the order of `columns` (bookkeeping columns
/// first, as projector's mirror table has them).
fn row_values(d: &Document, columns: &[(String, Type)]) -> Vec<Value> {
    let meta = postgres::meta_values(d);
    columns
        .iter()
        .map(|(n, _)| match postgres::META.iter().position(|(m, _)| m == n).and_then(|i| meta.get(i)) {
            Some(v) => v.clone(),
            None => d.body.as_ref().and_then(|b| b.get(n)).or_else(|| d.key.get(n)).cloned().unwrap_or(Value::Null),
        })
        .collect()
}

/// Inserts `docs` with `tabledata.insertAll` (BigQuery's direct bulk
/// write: no staging, no guard) into fresh tables with `template`'s schema,
/// once per request size; returns every cell.
pub async fn bigquery_insert_all(
    http: &reqwest::Client,
    url: &str,
    project: &str,
    dataset: &str,
    template: &str,
    docs: &[Document],
) -> anyhow::Result<Vec<Cell3>> {
    let base = format!("{url}/bigquery/v2/projects/{project}/datasets/{dataset}/tables");
    let table: Json = http.get(format!("{base}/{template}")).send().await?.error_for_status()?.json().await?;
    let schema = table["schema"].clone();
    let fields: Vec<(String, String)> = schema["fields"]
        .as_array()
        .context("the template table has no schema")?
        .iter()
        .filter_map(|f| Some((f["name"].as_str()?.to_string(), f["type"].as_str()?.to_string())))
        .collect();
    let mut cells = Vec::new();
    for batch in [500, 2_000] {
        let name = format!("{template}_ceiling_{batch}");
        let _ = http.delete(format!("{base}/{name}")).send().await;
        http.post(&base)
            .json(&json!({"tableReference": {"projectId": project, "datasetId": dataset, "tableId": name}, "schema": schema}))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("creating {name}"))?;
        let started = Instant::now();
        for chunk in docs.chunks(batch) {
            let rows: Vec<Json> =
                chunk.iter().map(|d| json!({"insertId": d.id, "json": bigquery_row(d, &fields)})).collect();
            let resp = http.post(format!("{base}/{name}/insertAll")).json(&json!({"rows": rows})).send().await?;
            let status = resp.status();
            let body: Json = resp.json().await.unwrap_or(Json::Null);
            anyhow::ensure!(
                status.is_success() && body.get("insertErrors").is_none_or(|e| e.as_array().is_some_and(Vec::is_empty)),
                "ceiling insertAll into {name}: HTTP {status}: {}",
                body.to_string().chars().take(300).collect::<String>()
            );
        }
        cells.push(Cell3 { batch, concurrency: 1, docs_per_s: docs.len() as f64 / started.elapsed().as_secs_f64() });
        let _ = http.delete(format!("{base}/{name}")).send().await;
    }
    Ok(cells)
}

/// A document as an `insertAll` row of a table with `fields` (name, type):
/// every value as the text BigQuery's JSON API takes for its type.
fn bigquery_row(d: &Document, fields: &[(String, String)]) -> Json {
    use crate::sink::bigquery::sql;
    let mut row = serde_json::Map::new();
    for (name, ty) in fields {
        let v = match name.as_str() {
            "__written_at" => continue,
            "__source_ts" => d
                .source_ts_ms
                .map(|ms| Json::String(format!("{}Z", crate::decode::value::timestamp_text(ms as i128 * 1_000_000)))),
            _ => row_values(d, &[(name.clone(), Type::TEXT)])
                .first()
                .and_then(|v| sql::cell_text(v, &sql::base_type(ty)))
                .map(Json::String),
        };
        row.insert(name.clone(), v.unwrap_or(Json::Null));
    }
    Json::Object(row)
}

/// Where the JDBC sink connector runs and writes.
pub struct JdbcSink<'a> {
    pub connect_url: &'a str,
    pub jdbc_url: &'a str,
    pub brokers: &'a str,
    pub name: &'a str,
    pub topic: &'a str,
    pub table: &'a str,
    pub tasks: usize,
    pub batch: usize,
}

/// Runs Debezium's JDBC sink over the topic until its consumer group has
/// committed everything (or `limit` passes), then removes it.
pub async fn jdbc_sink(http: &reqwest::Client, j: &JdbcSink<'_>, limit: Duration) -> anyhow::Result<CatchUp> {
    let config = json!({
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": j.tasks.to_string(),
        "topics": j.topic,
        "connection.url": j.jdbc_url,
        "connection.username": "postgres",
        "connection.password": "",
        "insert.mode": "upsert",
        "primary.key.mode": "record_key",
        "delete.enabled": "true",
        "schema.evolution": "basic",
        "collection.name.format": j.table,
        "batch.size": j.batch.to_string(),
        "consumer.override.max.poll.records": j.batch.to_string(),
        "consumer.override.auto.offset.reset": "earliest",
    });
    let url = format!("{}/connectors/{}/config", j.connect_url, j.name);
    let resp = http
        .put(&url)
        .json(&config)
        .send()
        .await
        .with_context(|| format!("PUT {url}: is Kafka Connect up (scripts/stack status)?"))?;
    anyhow::ensure!(
        resp.status().is_success(),
        "creating the JDBC sink connector: HTTP {}: {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );
    let status_url = format!("{}/connectors/{}/status", j.connect_url, j.name);
    let group = format!("connect-{}", j.name);
    let result = probe::wait_caught_up(j.brokers, &group, &[j.topic.to_string()], limit, async || {
        let status: Json = http.get(&status_url).send().await?.json().await.unwrap_or(Json::Null);
        let failed = status["tasks"].as_array().into_iter().flatten().find(|t| t["state"] == "FAILED");
        match failed {
            Some(t) => anyhow::bail!(
                "the JDBC sink task failed: {}",
                t["trace"].as_str().unwrap_or("").lines().take(3).collect::<Vec<_>>().join(" | ")
            ),
            None => Ok(()),
        }
    })
    .await;
    let _ = http.delete(format!("{}/connectors/{}", j.connect_url, j.name)).send().await;
    result
}
