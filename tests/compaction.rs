//! Compacted topics against the real servers: a Kafka tombstone whose `d`
//! event was compacted away still deletes the row (PostgreSQL's and
//! BigQuery's `_live` views, Elasticsearch's alias), a tombstone never
//! deletes a row a later event wrote (guarded by Kafka offset, on first run
//! and on replay), and the usual `d` + tombstone leaves the row deleted at
//! the `d`'s position.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use projector::demo::bus_booking::{Timeline, trip};

const CATCH_UP: Duration = Duration::from_secs(120);

/// The sinks every test here checks.
const SINKS: [&str; 3] = ["postgres", "elasticsearch", "bigquery"];

/// A world whose trips go to one PostgreSQL table, one index and one
/// BigQuery table (`trips` in the read model's dataset).
async fn world(stem: &str) -> (World, String) {
    let w = World::new(stem, 1).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n    elasticsearch: {{ index: {} }}\n    bigquery: {{ table: trips }}\n",
        w.name,
        w.db.trips.topic(),
        w.indexes[0]
    ));
    (w, table)
}

async fn caught_up(w: &World, group: &str) {
    for sink in SINKS {
        w.wait_sink_caught_up(group, sink, CATCH_UP).await;
    }
}

/// Every BigQuery row: id → (deleted, position).
async fn bigquery_table(w: &World) -> BTreeMap<String, (bool, String)> {
    let sql = format!("SELECT __id, __deleted, __position FROM `projector-local.{}.trips`", w.name.replace('-', "_"));
    bigquery_rows(&sql)
        .await
        .into_iter()
        .map(|r| {
            let text = |i: usize| r[i].as_str().unwrap().to_string();
            (text(0), (text(1) == "true", text(2)))
        })
        .collect()
}

/// Every row of the table: id → (deleted, position).
async fn rows(table: &str) -> BTreeMap<String, (bool, String)> {
    let sql = format!("SELECT __id, __deleted, __position FROM {}", projector::sink::postgres::quote_table(table));
    pg().await
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), (r.get::<_, bool>(1), r.get::<_, String>(2))))
        .collect()
}

/// Live ids in PostgreSQL, in the Elasticsearch alias and in BigQuery.
async fn live(w: &World, table: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let live_of = |rows: BTreeMap<String, (bool, String)>| {
        rows.into_iter().filter(|(_, (deleted, _))| !deleted).map(|(id, _)| id).collect()
    };
    (live_of(rows(table).await), w.docs(&w.indexes[0]).await.into_keys().collect(), live_of(bigquery_table(w).await))
}

fn ids(ids: &[&str]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    (v.clone(), v.clone(), v)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tombstone_whose_delete_was_compacted_away_still_deletes_the_row() {
    let (w, table) = world("compgone").await;
    let mut t = Timeline::default();
    let mut records = Vec::new();
    for id in 1..=2 {
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 1000, 1)), at, t.ts_ms, true));
    }
    // As after compaction: trip 1's `d` is gone, only its tombstone is left.
    records.push(w.db.trips.tombstone(&trip(1, 0, 1), true));
    w.produce(&records).await;
    let _p = w.start(&w.group);
    caught_up(&w, &w.group).await;
    assert_eq!(live(&w, &table).await, ids(&["2"]), "trip 1 is gone from the live views and the alias");
    // A tombstone in a later batch than the row's write meets the stored
    // row: only the offset guard orders the two.
    w.produce(&[w.db.trips.tombstone(&trip(2, 0, 1), true)]).await;
    caught_up(&w, &w.group).await;
    assert_eq!(live(&w, &table).await, ids(&[]), "trip 2 is gone too");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tombstone_never_deletes_a_row_that_a_later_event_wrote() {
    let (w, table) = world("comprevive").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    let create = w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), at, t.ts_ms, true);
    let tombstone = w.db.trips.tombstone(&trip(1, 0, 1), true);
    let at = t.commit(1);
    let again = w.db.trips.event('c', None, Some(&trip(1, 2000, 1)), at, t.ts_ms, true);
    w.produce(&[create, tombstone, again]).await;
    // One record per batch: the tombstone deletes the first create, and the
    // re-insert applies over it (the tombstone kept the row's position).
    let one_by_one = [("PROJECTOR_BATCH_RECORDS", "1")];
    {
        let _p = w.start_with(&w.group, &one_by_one);
        caught_up(&w, &w.group).await;
    }
    assert_eq!(live(&w, &table).await, ids(&["1"]), "the re-insert after the tombstone is live");
    let written = (rows(&table).await, bigquery_table(&w).await);
    // Replays from the earliest offset with new groups: record by record (the
    // tombstone meets a row written at a later offset), and in one batch.
    for (n, env) in [&one_by_one[..], &[]].into_iter().enumerate() {
        let group = format!("{}-replay{n}", w.group);
        let p = w.start_with(&group, env);
        caught_up(&w, &group).await;
        assert_eq!(live(&w, &table).await, ids(&["1"]), "replay {n} leaves the re-inserted row live");
        assert_eq!((rows(&table).await, bigquery_table(&w).await), written, "replay {n} changes nothing");
        for sink in SINKS {
            let label = format!("sink=\"{sink}\"");
            let applied = p.counter("projector_events_total", &[&label, "outcome=\"applied\""]).await;
            assert_eq!(applied, 0.0, "replay {n}: {sink} applied nothing");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_and_its_tombstone_leave_the_row_deleted_at_the_deletes_position() {
    let (w, table) = world("compdel").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    let create = w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), at, t.ts_ms, true);
    let at = t.commit(1);
    let delete = w.db.trips.event('d', Some(&trip(1, 1000, 1)), None, at, t.ts_ms, true);
    let tombstone = w.db.trips.tombstone(&trip(1, 0, 1), true);
    w.produce(&[create, delete]).await;
    let _p = w.start(&w.group);
    caught_up(&w, &w.group).await;
    let deleted = rows(&table).await;
    assert!(deleted["1"].0, "the d deleted the row");
    let bq_deleted = bigquery_table(&w).await;
    assert_eq!(bq_deleted, deleted, "BigQuery holds the same deleted row");
    w.produce(&[tombstone]).await;
    caught_up(&w, &w.group).await;
    assert_eq!(rows(&table).await, deleted, "the tombstone changed nothing: deleted at the d's position");
    assert_eq!(bigquery_table(&w).await, bq_deleted, "nor in BigQuery");
    let doc = raw_docs(&w.indexes[0]).await.remove("1").expect("the tombstone document stays").0;
    assert_eq!(doc["__projector"]["deleted"], true);
    assert_eq!(doc["__projector"]["position"].as_str(), Some(deleted["1"].1.as_str()), "the d's position");
    assert_eq!(live(&w, &table).await, ids(&[]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tombstone_keeps_a_row_written_before_offsets_were_stored_and_counts_it() {
    let (w, table) = world("compold").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), at, t.ts_ms, true)]).await;
    let p = w.start(&w.group);
    caught_up(&w, &w.group).await;
    // As a row written before projector stored Kafka offsets.
    let sql =
        format!("UPDATE {} SET __partition = NULL, __offset = NULL", projector::sink::postgres::quote_table(&table));
    pg().await.execute(&sql, &[]).await.unwrap();
    w.produce(&[w.db.trips.tombstone(&trip(1, 0, 1), true)]).await;
    caught_up(&w, &w.group).await;
    let (pg_live, es_live, bq_live) = live(&w, &table).await;
    assert_eq!(pg_live, vec!["1".to_string()], "the row without an offset is kept");
    assert!(es_live.is_empty(), "Elasticsearch stored the offset, so the tombstone deleted the document");
    assert!(bq_live.is_empty(), "BigQuery stored the offset, so the tombstone deleted the row");
    let unmatched =
        p.counter("projector_events_total", &["sink=\"postgres\"", "outcome=\"tombstone_unmatched\""]).await;
    assert_eq!(unmatched, 1.0);
    assert!(p.log_text().contains("a tombstone found a live row"), "logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bigquery_table_an_older_projector_created_gets_the_offset_columns_on_start() {
    let (w, table) = world("compbqold").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), at, t.ts_ms, true)]).await;
    {
        let _p = w.start(&w.group);
        caught_up(&w, &w.group).await;
    }
    // As a table created before projector stored Kafka offsets.
    let dataset = w.name.replace('-', "_");
    bigquery_rows(&format!(
        "ALTER TABLE `projector-local.{dataset}.trips` DROP COLUMN __partition, DROP COLUMN __offset"
    ))
    .await;
    let p = w.start(&w.group);
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('u', Some(&trip(1, 1000, 1)), Some(&trip(1, 2000, 1)), at, t.ts_ms, true)]).await;
    caught_up(&w, &w.group).await;
    w.produce(&[w.db.trips.tombstone(&trip(1, 0, 1), true)]).await;
    caught_up(&w, &w.group).await;
    assert_eq!(live(&w, &table).await, ids(&[]), "the update stored its offset, so the tombstone deleted the row");
    assert!(p.log_text().contains("added bookkeeping columns"), "the columns were added on start");
}
