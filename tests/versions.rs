//! Versioned targets against the real servers, through the binary: a fresh
//! target is version 1 behind the readers' name, an unversioned one is
//! adopted as version 1, a building version gets every live event (position
//! guarded), the swap moves readers in one step, rollback returns them with
//! what arrived since, and gc drops the previous version.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use projector::demo::bus_booking::{Timeline, trip};
use projector::demo::sqlserver::Record;
use projector::mapping::ReadModel;
use projector::pipeline::versions;
use projector::sink::Sink;
use projector::sink::catalog::{Catalog, State, TargetName};
use projector::sink::elasticsearch::Elasticsearch;
use projector::sink::postgres::{Postgres, quote_table};

const CATCH_UP: Duration = Duration::from_secs(120);
const FAST_REFRESH: [(&str, &str); 1] = [("PROJECTOR_VERSION_REFRESH_MS", "300")];

fn creates(w: &World, t: &mut Timeline, ids: std::ops::RangeInclusive<i32>, fare: i128) -> Vec<Record> {
    ids.map(|id| {
        let at = t.commit(1);
        w.db.trips.event('c', None, Some(&trip(id, fare + i128::from(id), 1)), at, t.ts_ms, true)
    })
    .collect()
}

/// id → fare in cents, from a PostgreSQL table or view.
async fn pg_fares(relation: &str) -> BTreeMap<String, i64> {
    try_pg_fares(relation).await.unwrap()
}

/// The same, or the server's refusal: a version begun a moment ago has only
/// its key columns until a running instance writes it a row.
async fn try_pg_fares(relation: &str) -> Result<BTreeMap<String, i64>, tokio_postgres::Error> {
    let sql =
        format!("SELECT __id, (\"Fare\" * 100)::bigint FROM {} WHERE NOT __deleted ORDER BY 1", quote_table(relation));
    Ok(pg().await.query(&sql, &[]).await?.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect())
}

async fn catalog_versions(read_model: &str, sink: &str, logical: &str) -> Vec<(i32, String, State)> {
    let catalog = Catalog::connect(&pg_url()).await.unwrap();
    let name = TargetName { read_model: read_model.into(), sink: sink.into(), logical: logical.into() };
    catalog.versions(&name).await.unwrap().into_iter().map(|v| (v.version, v.physical, v.state)).collect()
}

/// Runs a version command of the binary; returns its stdout.
fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(args)
        .env("PROJECTOR_POSTGRES_URL", pg_url())
        .env("PROJECTOR_ELASTICSEARCH_URL", es_url())
        .env("PROJECTOR_BIGQUERY_URL", "http://127.0.0.1:9050")
        .env("PROJECTOR_BIGQUERY_AUTH", "none")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "projector {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

async fn wait_fares(relation: &str, want: &BTreeMap<String, i64>) {
    wait_for(CATCH_UP, &format!("{relation} to hold {want:?}"), || async { pg_fares(relation).await == *want }).await;
}

fn fares(ids: std::ops::RangeInclusive<i32>, fare: i64) -> BTreeMap<String, i64> {
    ids.map(|id| (id.to_string(), fare + i64::from(id))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_versions_are_written_together_swapped_rolled_back_and_collected() {
    let w = World::new("verpg", 1).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n",
        w.name,
        w.db.trips.topic()
    ));
    let mut t = Timeline::default();
    w.produce(&creates(&w, &mut t, 1..=3, 1000)).await;
    let _p = w.start_with(&w.group, &FAST_REFRESH);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;

    // A fresh target is version 1, behind the readers' names.
    let v1 = format!("{table}_v1");
    assert_eq!(catalog_versions(&w.name, "postgres", &table).await, vec![(1, v1.clone(), State::Current)]);
    assert_eq!(pg_fares(&format!("{table}_live")).await, fares(1..=3, 1000));
    assert_eq!(pg_fares(&table).await, fares(1..=3, 1000), "the all-rows view");
    assert_eq!(pg_fares(&v1).await, fares(1..=3, 1000));

    // Version 2 begins (as a rebuild would); live events reach both.
    let model = std::sync::Arc::new(ReadModel::load(&w.model_file).unwrap());
    let sink = Postgres::new(&pg_url(), model.clone());
    sink.prepare(&model).await.unwrap();
    let catalog = Catalog::connect(&pg_url()).await.unwrap();
    let v2 = versions::begin_version(&catalog, &sink, &w.name, &model.tables[0]).await.unwrap();
    assert_eq!((v2.version, v2.physical.as_str()), (2, format!("{table}_v2").as_str()));
    // Only once the running instance writes v2 does an event reach it.
    wait_for(CATCH_UP, "the instance to see version 2", || async {
        w.produce(&creates(&w, &mut Timeline::default(), 900..=900, 0)).await;
        try_pg_fares(&v2.physical).await.is_ok_and(|rows| rows.contains_key("900"))
    })
    .await;
    w.produce(&creates(&w, &mut t, 4..=5, 1000)).await;
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    let v2_rows = pg_fares(&v2.physical).await;
    assert_eq!((v2_rows.get("4"), v2_rows.get("5")), (Some(&1004), Some(&1005)), "live events reach v2: {v2_rows:?}");
    // A replay of older events does not overwrite newer state in v2.
    w.produce(&creates(&w, &mut Timeline::default(), 4..=4, 0)).await;
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    assert_eq!(pg_fares(&v2.physical).await.get("4"), Some(&1004), "position-guarded in v2");

    // The swap: readers see v2.
    versions::swap(&catalog, &sink, &w.name, &model.tables[0]).await.unwrap();
    assert_eq!(pg_fares(&format!("{table}_live")).await, pg_fares(&v2.physical).await);
    assert!(!pg_fares(&format!("{table}_live")).await.contains_key("1"), "v2 was never filled with 1..=3");

    // Events after the swap still reach v1 (previous), so rollback returns
    // readers to v1 with them.
    w.produce(&creates(&w, &mut t, 6..=6, 1000)).await;
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    let file = w.model_file.to_str().unwrap();
    let listed = cli(&["versions", file]);
    assert!(listed.contains("v1") && listed.contains("previous") && listed.contains("v2"), "{listed}");
    cli(&["rollback", file, "--sink", "postgres"]);
    let live = pg_fares(&format!("{table}_live")).await;
    assert_eq!((live.get("1"), live.get("6")), (Some(&1001), Some(&1006)), "readers back on v1 with event 6: {live:?}");
    // A second rollback returns to v2.
    cli(&["rollback", file]);
    assert!(!pg_fares(&format!("{table}_live")).await.contains_key("1"), "readers on v2 again");

    // gc drops v1 (previous now); --dry-run drops nothing.
    let dry = cli(&["gc", file, "--dry-run"]);
    assert!(dry.contains(&v1), "{dry}");
    assert_eq!(pg_fares(&v1).await.get("1"), Some(&1001));
    cli(&["gc", file]);
    let exists: bool =
        pg().await.query_one("SELECT to_regclass($1) IS NOT NULL", &[&quote_table(&v1)]).await.unwrap().get(0);
    assert!(!exists, "{v1} is dropped");
    assert_eq!(catalog_versions(&w.name, "postgres", &table).await, vec![(2, v2.physical.clone(), State::Current)]);
    // The running instance keeps writing, now to v2 alone.
    w.produce(&creates(&w, &mut t, 7..=7, 1000)).await;
    wait_fares(&format!("{table}_live"), &{
        let mut m = pg_fares(&format!("{table}_live")).await;
        m.insert("7".into(), 1007);
        m
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unversioned_postgres_table_is_adopted_as_version_1() {
    let w = World::new("veradopt", 1).await;
    let table = format!("{}_trips", w.name);
    // A table as projector made it before versions: named like its view.
    pg().await
        .batch_execute(&format!(
            "CREATE TABLE {t} (__id text PRIMARY KEY, __position text NOT NULL, __deleted boolean NOT NULL DEFAULT false, __source_ts timestamptz, __written_at timestamptz NOT NULL DEFAULT now(), \"Fare\" numeric(12,2));
             INSERT INTO {t} (__id, __position, \"Fare\") VALUES ('old', '00', 12.34);
             CREATE VIEW {live} AS SELECT * FROM {t} WHERE NOT __deleted",
            t = quote_table(&table),
            live = quote_table(&format!("{table}_live"))
        ))
        .await
        .unwrap();
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n",
        w.name,
        w.db.trips.topic()
    ));
    w.produce(&creates(&w, &mut Timeline::default(), 1..=2, 1000)).await;
    let _p = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    let v1 = format!("{table}_v1");
    assert_eq!(catalog_versions(&w.name, "postgres", &table).await, vec![(1, v1.clone(), State::Current)]);
    let want: BTreeMap<String, i64> = [("1".to_string(), 1001), ("2".into(), 1002), ("old".into(), 1234)].into();
    assert_eq!(pg_fares(&v1).await, want, "the old rows were kept, renamed");
    assert_eq!(pg_fares(&format!("{table}_live")).await, want);
    assert_eq!(pg_fares(&table).await, want, "readers of the old table name still read it");
}

/// The ids of every document in index `physical`, tombstones included.
async fn index_ids(physical: &str) -> Vec<String> {
    refresh(physical).await;
    let body = post_json(&format!("{}/{physical}/_search", es_url()), &serde_json::json!({"size": 10000})).await;
    let mut ids: Vec<String> = body["hits"]["hits"]
        .as_array()
        .map(|hits| hits.iter().filter_map(|h| h["_id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Which indexes `alias` points at.
async fn alias_indexes(alias: &str) -> Vec<String> {
    let body = get_json(&format!("{}/_alias/{alias}", es_url())).await;
    body.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_swap_moves_the_alias_in_one_step_and_rollback_returns() {
    let w = World::new("veres", 1).await;
    let alias = w.indexes[0].clone();
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    elasticsearch: {{ index: {alias} }}\n",
        w.name,
        w.db.trips.topic()
    ));
    let mut t = Timeline::default();
    w.produce(&creates(&w, &mut t, 1..=3, 1000)).await;
    let _p = w.start_with(&w.group, &FAST_REFRESH);
    w.wait_caught_up(&w.group, CATCH_UP).await;
    let v1 = format!("{alias}_v1");
    assert_eq!(alias_indexes(&alias).await, vec![v1.clone()]);
    assert_eq!(catalog_versions(&w.name, "elasticsearch", &alias).await, vec![(1, v1.clone(), State::Current)]);

    let model = std::sync::Arc::new(ReadModel::load(&w.model_file).unwrap());
    let sink = Elasticsearch::new(&es_url()).unwrap();
    let catalog = Catalog::connect(&pg_url()).await.unwrap();
    let v2 = versions::begin_version(&catalog, &sink, &w.name, &model.tables[0]).await.unwrap();
    wait_for(CATCH_UP, "the instance to write version 2", || async {
        w.produce(&creates(&w, &mut Timeline::default(), 900..=900, 0)).await;
        index_ids(&v2.physical).await.contains(&"900".to_string())
    })
    .await;
    w.produce(&creates(&w, &mut t, 4..=4, 1000)).await;
    w.wait_caught_up(&w.group, CATCH_UP).await;

    // Poll the alias while the swap happens: never zero or two indexes.
    let poll = tokio::spawn({
        let alias = alias.clone();
        async move {
            let mut seen = Vec::new();
            for _ in 0..200 {
                seen.push(alias_indexes(&alias).await);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        }
    });
    versions::swap(&catalog, &sink, &w.name, &model.tables[0]).await.unwrap();
    let seen = poll.await.unwrap();
    assert!(seen.iter().all(|s| s.len() == 1), "the alias pointed at exactly one index at every poll");
    assert_eq!(alias_indexes(&alias).await, vec![v2.physical.clone()]);
    let docs = w.docs(&alias).await;
    assert!(docs.contains_key("4") && !docs.contains_key("1"), "readers see v2: {:?}", docs.keys());

    w.produce(&creates(&w, &mut t, 5..=5, 1000)).await;
    w.wait_caught_up(&w.group, CATCH_UP).await;
    cli(&["rollback", w.model_file.to_str().unwrap(), "--sink", "elasticsearch"]);
    assert_eq!(alias_indexes(&alias).await, vec![v1.clone()]);
    let docs = w.docs(&alias).await;
    assert!(docs.contains_key("1") && docs.contains_key("5"), "v1 with the event after the swap: {:?}", docs.keys());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unversioned_elasticsearch_index_is_adopted_as_version_1() {
    let w = World::new("veresadopt", 1).await;
    let alias = w.indexes[0].clone();
    // An index as projector made it before versions: `<alias>_v1` behind the
    // alias, holding a document.
    let old = format!("{alias}_v1");
    let filter = serde_json::json!({"bool": {"must_not": {"term": {"__projector.deleted": true}}}});
    let body = serde_json::json!({"mappings": {"dynamic": false}, "aliases": {&alias: {"is_write_index": true, "filter": filter}}});
    let r = http().put(format!("{}/{old}", es_url())).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "creating {old}: {}", r.text().await.unwrap());
    let r = http()
        .put(format!("{}/{old}/_doc/old?refresh=true", es_url()))
        .json(&serde_json::json!({"TripId": 0}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    elasticsearch: {{ index: {alias} }}\n",
        w.name,
        w.db.trips.topic()
    ));
    w.produce(&creates(&w, &mut Timeline::default(), 1..=2, 1000)).await;
    let _p = w.start(&w.group);
    w.wait_caught_up(&w.group, CATCH_UP).await;
    assert_eq!(catalog_versions(&w.name, "elasticsearch", &alias).await, vec![(1, old.clone(), State::Current)]);
    assert_eq!(alias_indexes(&alias).await, vec![old.clone()]);
    assert_eq!(w.docs(&alias).await.keys().collect::<Vec<_>>(), ["1", "2", "old"], "old and new documents, one index");
}

/// Live ids and fares (cents) of a BigQuery table or view.
async fn bq_fares(dataset: &str, relation: &str) -> BTreeMap<String, i64> {
    try_bq_fares(dataset, relation).await.unwrap_or_else(|error| panic!("fares of {relation}: {error}"))
}

/// [`bq_fares`], or the query's error: a new version's table has no data
/// columns until its first batch adds them.
async fn try_bq_fares(dataset: &str, relation: &str) -> Result<BTreeMap<String, i64>, serde_json::Value> {
    let rows = try_bigquery_rows(&format!(
        "SELECT __id, CAST(Fare * 100 AS INT64) FROM `projector-local.{dataset}.{relation}` WHERE NOT __deleted"
    ))
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.first()?.as_str()?.to_string(), r.get(1)?.as_str()?.parse().ok()?)))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn bigquery_versions_are_written_together_swapped_rolled_back_and_collected() {
    let w = World::new("verbq", 1).await;
    let dataset = w.name.replace('-', "_");
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    bigquery: {{ table: trips }}\n",
        w.name,
        w.db.trips.topic()
    ));
    let mut t = Timeline::default();
    w.produce(&creates(&w, &mut t, 1..=2, 1000)).await;
    let _p = w.start_with(&w.group, &FAST_REFRESH);
    w.wait_sink_caught_up(&w.group, "bigquery", CATCH_UP).await;
    // Version 1 keeps the table's own name, behind the readers' view.
    assert_eq!(catalog_versions(&w.name, "bigquery", "trips").await, vec![(1, "trips".into(), State::Current)]);
    assert_eq!(bq_fares(&dataset, "trips_live").await, fares(1..=2, 1000));

    let model = std::sync::Arc::new(ReadModel::load(&w.model_file).unwrap());
    let sink = projector::sink::bigquery::BigQuery::new(
        "http://127.0.0.1:9050",
        "projector-local",
        &dataset,
        model.clone(),
        projector::sink::bigquery::Auth::None,
    )
    .unwrap();
    sink.prepare(&model).await.unwrap();
    let catalog = Catalog::connect(&pg_url()).await.unwrap();
    let v2 = versions::begin_version(&catalog, &sink, &w.name, &model.tables[0]).await.unwrap();
    assert_eq!(v2.physical, "trips_v2");
    wait_for(CATCH_UP, "the instance to write version 2", || async {
        w.produce(&creates(&w, &mut Timeline::default(), 900..=900, 0)).await;
        w.wait_sink_caught_up(&w.group, "bigquery", CATCH_UP).await;
        // Until the instance notices version 2, event 900 goes to version 1
        // only, and trips_v2 may still lack the Fare column.
        try_bq_fares(&dataset, "trips_v2").await.is_ok_and(|fares| fares.contains_key("900"))
    })
    .await;
    w.produce(&creates(&w, &mut t, 3..=3, 1000)).await;
    w.wait_sink_caught_up(&w.group, "bigquery", CATCH_UP).await;
    versions::swap(&catalog, &sink, &w.name, &model.tables[0]).await.unwrap();
    let live = bq_fares(&dataset, "trips_live").await;
    assert!(live.contains_key("3") && !live.contains_key("1"), "readers see v2: {live:?}");

    w.produce(&creates(&w, &mut t, 4..=4, 1000)).await;
    w.wait_sink_caught_up(&w.group, "bigquery", CATCH_UP).await;
    let file = w.model_file.to_str().unwrap();
    cli(&["rollback", file, "--sink", "bigquery"]);
    let live = bq_fares(&dataset, "trips_live").await;
    assert_eq!((live.get("1"), live.get("4")), (Some(&1001), Some(&1004)), "v1 again, with event 4: {live:?}");

    let dropped = cli(&["gc", file, "--sink", "bigquery"]);
    assert!(dropped.contains("trips_v2"), "gc names what it drops: {dropped}");
    assert_eq!(catalog_versions(&w.name, "bigquery", "trips").await, vec![(1, "trips".into(), State::Current)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_running_instances_both_start_writing_a_new_version_and_say_so() {
    let w = World::new("vertwo", 2).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n",
        w.name,
        w.db.trips.topic()
    ));
    let mut t = Timeline::default();
    w.produce(&creates(&w, &mut t, 1..=4, 1000)).await;
    let _a = w.start_with(&w.group, &FAST_REFRESH);
    let _b = w.start_with(&w.group, &FAST_REFRESH);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    let model = std::sync::Arc::new(ReadModel::load(&w.model_file).unwrap());
    let sink = Postgres::new(&pg_url(), model.clone());
    sink.prepare(&model).await.unwrap();
    let catalog = Catalog::connect(&pg_url()).await.unwrap();
    let v2 = versions::begin_version(&catalog, &sink, &w.name, &model.tables[0]).await.unwrap();
    // Both instances record that they have seen version 2.
    wait_for(CATCH_UP, "two members to have seen version 2", || async {
        let row = pg()
            .await
            .query_one(
                "SELECT count(*) FROM projector.members WHERE read_model = $1 AND sink = 'postgres' AND epoch >= $2",
                &[&w.name, &v2.created_ms],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == 2
    })
    .await;
    // From then on, events of every partition (so of both instances) reach v2.
    w.produce(&creates(&w, &mut t, 5..=40, 1000)).await;
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    let v2_rows = pg_fares(&v2.physical).await;
    assert_eq!(v2_rows, fares(5..=40, 1000), "every event after both saw v2 is in v2");
    let partitions: i64 = pg()
        .await
        .query_one(&format!("SELECT count(DISTINCT __partition) FROM {}", quote_table(&v2.physical)), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitions, 2, "written from both partitions");
}

/// Found by CI: two rebuild workers creating the same version table at the
/// same moment; one was refused with "type ... already exists" (42710) and
/// its rebuild failed. Sixteen sessions race here, for a table in a schema
/// that does not exist yet either.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_creating_one_version_table_at_the_same_moment_all_succeed() {
    let w = World::new("vercreate", 1).await;
    let table = format!("{}_s.trips", w.name);
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n",
        w.name,
        w.db.trips.topic()
    ));
    let model = std::sync::Arc::new(ReadModel::load(&w.model_file).unwrap());
    // The window is narrow (between one session's check for the table and
    // its creating the table's row type), so the race runs many times.
    for version in 2..=40 {
        let physical = format!("{table}_v{version}");
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (model, physical) = (model.clone(), physical.clone());
            racers.spawn(async move {
                let sink = Postgres::new(&pg_url(), model.clone());
                sink.create_version(&model.tables[0], &physical).await
            });
        }
        let mut refused = Vec::new();
        while let Some(done) = racers.join_next().await {
            if let Err(e) = done.unwrap() {
                refused.push(e.to_string());
            }
        }
        assert!(refused.is_empty(), "{physical}: {} of 16 sessions were refused: {refused:#?}", refused.len());
        let found =
            pg().await.query_one("SELECT to_regclass($1) IS NOT NULL", &[&quote_table(&physical)]).await.unwrap();
        assert!(found.get::<_, bool>(0), "{physical} exists");
    }
}
