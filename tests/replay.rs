//! Rebuilds from Kafka (`--from kafka`) against the real servers: a table's
//! topic, with updates, deletes, tombstones and stale re-deliveries, is
//! replayed into a fresh PostgreSQL table (the mirror's own rebuild) and a
//! fresh Elasticsearch index, each ending with exactly the newest state; a
//! second replay with the same id goes on from its checkpoint (the group's
//! committed offsets) and reads only what was appended since.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use projector::decode::DecodeOptions;
use projector::demo::bus_booking::{Timeline, trip};
use projector::demo::sqlserver::Record;
use projector::mapping::ReadModel;
use projector::ops::Health;
use projector::pipeline::ErrorTolerance;
use projector::pipeline::batch::BatchLimits;
use projector::pipeline::dead_letter::DeadLetters;
use projector::rebuild::replay::Replay;
use projector::sink::Sink;
use projector::sink::elasticsearch::Elasticsearch;
use projector::sink::postgres::{Postgres, quote_table};

const TRIPS: i32 = 300;

fn replay<S: Sink>(w: &World, model: &Arc<ReadModel>, sink: Arc<S>, target: &str, id: &str) -> Replay<S> {
    Replay {
        sink,
        model: model.clone(),
        topic: w.db.trips.topic(),
        target: target.into(),
        rebuild_id: id.into(),
        brokers: brokers(),
        decode: DecodeOptions::default(),
        dead_letters: DeadLetters::new(&brokers(), &format!("{}.dlq", w.name), &model.name).unwrap(),
        health: Health::default(),
        tolerance: ErrorTolerance::None,
        limits: BatchLimits { max_records: 200, ..Default::default() },
    }
}

/// Live rows of a PostgreSQL table: id → fare in cents.
async fn pg_fares(table: &str) -> BTreeMap<String, i64> {
    let sql = format!("SELECT __id, (\"Fare\" * 100)::bigint FROM {} WHERE NOT __deleted", quote_table(table));
    pg().await.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Live documents of an Elasticsearch index: id → fare in cents.
async fn es_fares(index: &str) -> BTreeMap<String, i64> {
    search_all(index)
        .await
        .into_iter()
        .filter(|(_, src, _)| src["__projector"]["deleted"] != true)
        .map(|(id, src, _)| {
            let fare: f64 = src["Fare"].as_str().map_or_else(|| src["Fare"].as_f64().unwrap(), |s| s.parse().unwrap());
            (id, (fare * 100.0).round() as i64)
        })
        .collect()
}

/// Each trip's create sent again after everything else: older positions
/// than what the topic already holds for it.
fn stale(w: &World, n: i32) -> Vec<Record> {
    let mut t = Timeline::default();
    (1..=n).map(|id| w.db.trips.event('c', None, Some(&trip(id, 1, 1)), t.commit(1), t.ts_ms, true)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_replays_into_a_fresh_table_and_index_and_resumes_from_its_checkpoint() {
    let w = World::new("replay", 2).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n    elasticsearch: {{ index: {} }}\n",
        w.name,
        w.db.trips.topic(),
        w.indexes[0]
    ));
    let model = Arc::new(ReadModel::load(&w.model_file).unwrap());
    let mut t = Timeline::default();
    let (mut records, want) = churn(&w, &mut t, TRIPS, 2);
    records.extend(stale(&w, 10));
    w.produce(&records).await;
    assert_eq!(want.len(), (TRIPS - TRIPS / 5) as usize);

    let mirror_sink = Arc::new(Postgres::new(&pg_url(), model.clone()));
    mirror_sink.prepare(&model).await.unwrap();
    let pg_target = format!("{table}_v2");
    let pg_id = format!("{}-pg", w.name);
    let done = replay(&w, &model, mirror_sink.clone(), &pg_target, &pg_id).replay().await.unwrap();
    assert_eq!((done.rows, done.total), (records.len() as u64, records.len() as u64), "every record, once");
    assert_eq!(pg_fares(&pg_target).await, want, "the newest state, deletes applied, stale events refused");
    let tombstones: i64 = pg()
        .await
        .query_one(&format!("SELECT count(*) FILTER (WHERE __deleted) FROM {}", quote_table(&pg_target)), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tombstones, i64::from(TRIPS / 5), "deletes kept as tombstones, as in the mirror");

    let es = Arc::new(Elasticsearch::new(&es_url()).unwrap());
    es.prepare(&model).await.unwrap();
    let es_target = format!("{}_v2", w.indexes[0]);
    replay(&w, &model, es.clone(), &es_target, &format!("{}-es", w.name)).replay().await.unwrap();
    assert_eq!(es_fares(&es_target).await, want);

    // Appended since: a second run of the same replay reads only those.
    let updates: Vec<Record> = (1..=4)
        .map(|id| {
            let at = t.commit(1);
            w.db.trips.event('u', Some(&trip(id, 1002, 1)), Some(&trip(id, 5000, 1)), at, t.ts_ms, true)
        })
        .collect();
    w.produce(&updates).await;
    let again = replay(&w, &model, mirror_sink.clone(), &pg_target, &pg_id).replay().await.unwrap();
    assert_eq!(again.rows, 4, "resumed from the checkpoint, not from zero");
    let fares = pg_fares(&pg_target).await;
    assert_eq!((1..=4).map(|id| fares[&id.to_string()]).collect::<Vec<_>>(), vec![5000; 4]);
    assert_eq!(fares.len(), want.len());
}

/// `projector rebuild --from kafka` through the binary, for the mirror
/// itself (which cannot be rebuilt from itself): version 2 of the PostgreSQL
/// table is replayed from the topic while an instance runs and an update
/// arrives meanwhile, checked against the current version, and swapped in.
#[tokio::test(flavor = "multi_thread")]
async fn the_mirror_is_rebuilt_from_kafka_by_one_command_while_an_instance_runs() {
    let w = World::new("rplcli", 2).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n",
        w.name,
        w.db.trips.topic(),
    ));
    let mut t = Timeline::default();
    let (records, mut want) = churn(&w, &mut t, 100, 1);
    w.produce(&records).await;
    let _p = w.start_with(&w.group, &[("PROJECTOR_VERSION_REFRESH_MS", "300")]);
    w.wait_sink_caught_up(&w.group, "postgres", std::time::Duration::from_secs(120)).await;

    let child = std::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(["rebuild", w.model_file.to_str().unwrap(), "--sink", "postgres", "--from", "kafka"])
        .env("PROJECTOR_POSTGRES_URL", pg_url())
        .env("PROJECTOR_BROKERS", brokers())
        .env("PROJECTOR_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let update = w.db.trips.event('u', None, Some(&trip(3, 7777, 1)), t.commit(1), t.ts_ms, true);
    w.produce(&[update]).await;
    want.insert("3".into(), 7777);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "rebuild failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("swapped: readers now see v2"), "{stdout}");
    w.wait_sink_caught_up(&w.group, "postgres", std::time::Duration::from_secs(120)).await;
    assert_eq!(pg_fares(&format!("{table}_live")).await, want, "readers on v2, replayed, with the update");
    assert_eq!(pg_fares(&format!("{table}_v2")).await, want);
}
