//! Each sink moves at its own pace: PostgreSQL down for 30 s and BigQuery
//! down for 60 s, under load, while Elasticsearch stays caught up; each
//! catches up when back, with nothing lost. These tests stop shared servers,
//! so they live in their own test binary (cargo runs binaries one at a time).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

fn model(w: &World, table: &str) -> String {
    format!(
        "read_model: {}\ntables:\n  - topic: {}\n    elasticsearch: {{ index: {} }}\n    postgres: {{ table: {table} }}\n    bigquery: {{ table: trips }}\n",
        w.name,
        w.db.trips.topic(),
        w.indexes[0]
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_for_30s_under_load_does_not_delay_elasticsearch() {
    let w = World::new("pgdown", 3).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&format!("read_model: {}\ntables:\n  - topic: {}\n    elasticsearch: {{ index: {} }}\n    postgres: {{ table: {table} }}\n", w.name, w.db.trips.topic(), w.indexes[0]));
    let p = w.start(&w.group);
    let expect = sink_outage_under_load(&w, &p, "postgres", "postgres", Duration::from_secs(30)).await;
    let sql = format!("SELECT __id, (\"Fare\" * 100)::bigint FROM \"{table}_live\"");
    let got: BTreeMap<String, i64> =
        pg().await.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, expect, "nothing lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn bigquery_down_for_60s_under_load_does_not_delay_elasticsearch() {
    let w = World::new("bqdown", 3).await;
    w.set_model(&model(&w, &format!("{}_trips", w.name)));
    let p = w.start(&w.group);
    let expect = sink_outage_under_load(&w, &p, "bigquery", "bigquery", Duration::from_secs(60)).await;
    let got: BTreeMap<String, i64> =
        bigquery_rows(&format!("SELECT __id, CAST(Fare * 100 AS INT64) FROM `projector-local.{}.trips_live`", w.name))
            .await
            .into_iter()
            .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().parse().unwrap()))
            .collect();
    assert_eq!(got, expect, "nothing lost");
}
