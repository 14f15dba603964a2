//! BigQuery through the whole path: Kafka → projector binary → the BigQuery
//! emulator, beside Elasticsearch and PostgreSQL, each sink on its own
//! consumer group; a kill -9 mid-stream, then two instances sharing the
//! partitions, lose nothing. (Its outage test is in `sink_outages.rs`.)

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
    let expect: BTreeMap<String, i64> = [(1, 100_001), (2, 123_456), (4, 100_004), (5, 100_005), (6, 100_006)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(bigquery_fares(&w).await, expect);
    let es: BTreeMap<String, i64> = w
        .docs(&w.indexes[0])
        .await
        .into_iter()
        .map(|(k, d)| (k, (d["Fare"].as_f64().unwrap() * 100.0).round() as i64))
        .collect();
    assert_eq!(es, expect);
    // Exact decimal text in BigQuery, not a float.
    let fare =
        bigquery_rows(&format!("SELECT CAST(Fare AS STRING) FROM `projector-local.{}.trips` WHERE __id = '2'", w.name))
            .await;
    assert_eq!(fare[0][0], "1234.56");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_then_two_instances_split_the_partitions_and_lose_nothing() {
    let w = World::new("bqkill", 4).await;
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    bigquery: {{ table: trips }}\n",
        w.name,
        w.db.trips.topic()
    ));
    let (records, expect) = churn(&w, &mut projector::demo::bus_booking::Timeline::default(), 40, 5);
    w.produce(&records).await;
    let small_batches = [("PROJECTOR_BATCH_RECORDS", "20")];
    let mut a = w.start_with(&w.group, &small_batches);
    wait_for(Duration::from_secs(120), "BigQuery writes before the kill", || async {
        a.counter("projector_events_total", &["sink=\"bigquery\"", "outcome=\"applied\""]).await >= 20.0
    })
    .await;
    a.kill9();
    // What the killed instance wrote but did not commit is redone by the
    // two that follow, and found stale; each takes a share of the partitions.
    let b = w.start_with(&w.group, &small_batches);
    let c = w.start_with(&w.group, &small_batches);
    for p in [&b, &c] {
        wait_for(Duration::from_secs(60), "each instance to be assigned BigQuery partitions", || async {
            p.log_text().lines().any(|l| l.contains("partitions assigned") && l.contains("-bigquery-"))
        })
        .await;
    }
    w.wait_sink_caught_up(&w.group, "bigquery", Duration::from_secs(180)).await;
    let got: BTreeMap<String, i64> = bigquery_fares(&w).await;
    assert_eq!(got, expect, "live rows and fares after the kill and the hand-over");
}
