//! BigQuery through the whole path: Kafka → projector binary → the BigQuery
//! emulator, beside Elasticsearch and PostgreSQL, each sink on its own
//! consumer group. (Its outage test is in `sink_outages.rs`.)

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use projector::demo::bus_booking::{Timeline, trip};

pub fn model(w: &World) -> String {
    format!(
        "read_model: {}\ntables:\n  - topic: {}\n    elasticsearch: {{ index: {} }}\n    postgres: {{ table: {}_trips }}\n    bigquery: {{ table: trips }}\n",
        w.name,
        w.db.trips.topic(),
        w.indexes[0],
        w.name
    )
}

/// Live BigQuery rows: id → fare in cents.
async fn bigquery_fares(w: &World) -> BTreeMap<String, i64> {
    bigquery_rows(&format!("SELECT __id, CAST(Fare * 100 AS INT64) FROM `projector-local.{}.trips_live`", w.name))
        .await
        .into_iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().parse().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn trips_reach_all_three_sinks_each_on_its_own_group() {
    let w = World::new("bqall", 2).await;
    w.set_model(&model(&w));
    let mut t = Timeline::default();
    let mut records = Vec::new();
    for id in 1..=6 {
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 100_000 + id as i128, 1)), at, t.ts_ms, true));
    }
    let at = t.commit(2);
    records.push(w.db.trips.event('u', Some(&trip(2, 100_002, 1)), Some(&trip(2, 123_456, 1)), at, t.ts_ms, true));
    let at = t.commit(1);
    records.push(w.db.trips.event('d', Some(&trip(3, 100_003, 1)), None, at, t.ts_ms, true));
    records.push(w.db.trips.tombstone(&trip(3, 0, 1), true));
    w.produce(&records).await;
    let _p = w.start(&w.group);
    for sink in ["elasticsearch", "postgres", "bigquery"] {
        w.wait_sink_caught_up(&w.group, sink, Duration::from_secs(120)).await;
    }
    let expect: BTreeMap<String, i64> = [(1, 100_001), (2, 123_456), (4, 100_004), (5, 100_005), (6, 100_006)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(bigquery_fares(&w).await, expect);
    let es: BTreeMap<String, i64> = w.docs(&w.indexes[0]).await.into_iter().map(|(k, d)| (k, (d["Fare"].as_f64().unwrap() * 100.0).round() as i64)).collect();
    assert_eq!(es, expect);
    // Exact decimal text in BigQuery, not a float.
    let fare = bigquery_rows(&format!("SELECT CAST(Fare AS STRING) FROM `projector-local.{}.trips` WHERE __id = '2'", w.name)).await;
    assert_eq!(fare[0][0], "1234.56");
}
