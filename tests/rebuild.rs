//! Rebuilds from the staging PostgreSQL mirror against the real servers: a
//! mirror written by the real PostgreSQL sink (through the binary, with
//! deletes) is copied into a fresh Elasticsearch index and a fresh
//! PostgreSQL table with exact positions and tombstones; a newer live write
//! is never overwritten; a kill -9 resumes from the checkpoint; two workers
//! share the ranges; parity passes on a good copy and names the difference
//! on a tampered one; a mirror that is not whole is refused.
//!
//! These tests use their own database (`projector_rebuild`): the rebuild's
//! migration must not land in the database other branches' binaries use.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use projector::demo::bus_booking::{Timeline, trip};
use projector::mapping::ReadModel;
use projector::ops::Health;
use projector::pipeline::ErrorTolerance;
use projector::pipeline::dead_letter::DeadLetters;
use projector::rebuild::parity::parity;
use projector::rebuild::{Copied, Rebuild};
use projector::sink::Sink;
use projector::sink::catalog::{Catalog, State};
use projector::sink::elasticsearch::Elasticsearch;
use projector::sink::postgres::{Postgres, quote_table};
use projector::source::mirror::Mirror;

const CATCH_UP: Duration = Duration::from_secs(180);
const TRIPS: i32 = 1500;

fn rebuild_db_url() -> String {
    pg_url().replace("dbname=projector", "dbname=projector_rebuild")
}

async fn rebuild_db() -> tokio_postgres::Client {
    let admin = pg().await;
    // Another test may create it at the same moment: either way it exists.
    let _ = admin.batch_execute("CREATE DATABASE projector_rebuild").await;
    let (client, conn) = tokio_postgres::connect(&rebuild_db_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// A world whose trips are mirrored (by the binary) in `<name>_trips`,
/// with every fifth trip deleted; returns the world and the mirror table.
async fn mirrored(stem: &str) -> (World, String) {
    let db = rebuild_db().await;
    let w = World::new(stem, 2).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n    elasticsearch: {{ index: {} }}\n",
        w.name,
        w.db.trips.topic(),
        w.indexes[0]
    ));
    let (records, _) = churn(&w, &mut Timeline::default(), TRIPS, 1);
    w.produce(&records).await;
    let mut p = w.start_with(&w.group, &[("PROJECTOR_POSTGRES_URL", &rebuild_db_url())]);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    p.terminate();
    let deleted: i64 = db
        .query_one(&format!("SELECT count(*) FILTER (WHERE __deleted) FROM {}", quote_table(&table)), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deleted, i64::from(TRIPS / 5), "the mirror holds the deletes as tombstones");
    (w, table)
}

fn copy<S: Sink>(w: &World, sink: Arc<S>, mirror: &str, target: &str, id: &str) -> Rebuild<S> {
    let model = Arc::new(ReadModel::load(&w.model_file).unwrap());
    Rebuild {
        sink,
        model: model.clone(),
        topic: w.db.trips.topic(),
        mirror: mirror.into(),
        target: target.into(),
        rebuild_id: id.into(),
        worker: format!("{id}-test"),
        postgres_url: rebuild_db_url(),
        ranges: 4,
        page_rows: 250,
        lease: Duration::from_secs(10),
        max_rows_per_second: None,
        dead_letters: DeadLetters::new(&brokers(), &format!("{}.dlq", w.name), &model.name).unwrap(),
        health: Health::default(),
        tolerance: ErrorTolerance::None,
    }
}

async fn mirror_of(table: &str) -> (tokio_postgres::Client, Mirror) {
    let client = rebuild_db().await;
    let mirror = Mirror::open(&client, table).await.unwrap();
    (client, mirror)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_copies_into_a_fresh_index_and_table_with_exact_positions_and_tombstones() {
    let (w, mirror_table) = mirrored("rbcopy").await;
    let model = Arc::new(ReadModel::load(&w.model_file).unwrap());
    let (client, mirror) = mirror_of(&mirror_table).await;

    let pg_target = format!("{}_trips_v2", w.name);
    let pg = Arc::new(Postgres::new(&rebuild_db_url(), model.clone()));
    pg.prepare(&model).await.unwrap();
    let done: Copied = copy(&w, pg.clone(), &mirror_table, &pg_target, &format!("{}-pg", w.name)).copy().await.unwrap();
    assert_eq!((done.rows, done.total), (TRIPS as u64, TRIPS as u64));
    let report = parity(&client, &mirror, &*pg, &pg_target, 300).await.unwrap();
    assert!(report.passed(), "{report}");
    let tombstones: i64 = client
        .query_one(&format!("SELECT count(*) FILTER (WHERE __deleted) FROM {}", quote_table(&pg_target)), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tombstones, i64::from(TRIPS / 5));
    let same: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} m JOIN {} t USING (__id) WHERE m.__deleted OR (m.\"Fare\" = t.\"Fare\" AND m.\"Route\" = t.\"Route\")",
                quote_table(&mirror_table),
                quote_table(&pg_target)
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(same, i64::from(TRIPS), "every live row's values carried over");

    let es_target = format!("{}-trips-rebuilt", w.name);
    let es = Arc::new(Elasticsearch::new(&es_url()).unwrap());
    copy(&w, es.clone(), &mirror_table, &es_target, &format!("{}-es", w.name)).copy().await.unwrap();
    let report = parity(&client, &mirror, &*es, &es_target, 300).await.unwrap();
    assert!(report.passed(), "{report}");
    // Readers see the copy through an alias pointed at it, as after a swap.
    let readers = format!("{}-trips-readers", w.name);
    let table = model.table(&w.db.trips.topic()).unwrap();
    es.point_readers(table, &readers, &es_target).await.unwrap();
    refresh(&es_target).await;
    let live = search_all(&readers).await.len();
    assert_eq!(live, (TRIPS - TRIPS / 5) as usize, "the alias shows the live rows only");

    // A tampered copy fails parity and names the row.
    client
        .execute(&format!("UPDATE {} SET __position = '00' WHERE __id = '7'", quote_table(&pg_target)), &[])
        .await
        .unwrap();
    let report = parity(&client, &mirror, &*pg, &pg_target, 300).await.unwrap();
    assert!(!report.passed());
    assert_eq!(report.differing, 1, "{report}");
    assert_eq!(report.differences[0].id, "7");
    assert_eq!(report.differences[0].target.as_ref().map(|p| p.position.as_str()), Some("00"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_live_write_is_never_overwritten_by_the_copy() {
    let (w, mirror_table) = mirrored("rblive").await;
    let model = Arc::new(ReadModel::load(&w.model_file).unwrap());
    let client = rebuild_db().await;
    let target = format!("{}_trips_v2", w.name);
    // The live stream reaches the new target first with a newer state of
    // trip 9: a copy of the whole mirror row, at a position above every real one.
    // Made like the mirror's version 1 table (the view `<table>` has no key).
    let mirror_v1 = format!("{mirror_table}_v1");
    client
        .batch_execute(&format!(
            "CREATE TABLE {t} (LIKE {m} INCLUDING ALL); INSERT INTO {t} SELECT * FROM {m} WHERE __id = '9'; UPDATE {t} SET __position = 'ff', \"Fare\" = 1.23 WHERE __id = '9'",
            t = quote_table(&target),
            m = quote_table(&mirror_v1)
        ))
        .await
        .unwrap();
    let pg = Arc::new(Postgres::new(&rebuild_db_url(), model.clone()));
    pg.prepare(&model).await.unwrap();
    copy(&w, pg.clone(), &mirror_table, &target, &format!("{}-pg", w.name)).copy().await.unwrap();
    let row = client
        .query_one(
            &format!("SELECT __position, (\"Fare\" * 100)::int8 FROM {} WHERE __id = '9'", quote_table(&target)),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1)), ("ff".to_string(), 123));
    let n: i64 = client.query_one(&format!("SELECT count(*) FROM {}", quote_table(&target)), &[]).await.unwrap().get(0);
    assert_eq!(n, i64::from(TRIPS));
}

/// Starts `projector rebuild` on the world's trips into `target`.
fn rebuild_process(w: &World, target: &str, id: &str, worker: &str, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(["rebuild", w.model_file.to_str().unwrap(), "--sink", "postgres", "--table", &w.db.trips.topic()])
        .args(["--target", target, "--rebuild-id", id, "--worker", worker, "--lease-seconds", "2"])
        .args(extra)
        .env("PROJECTOR_POSTGRES_URL", rebuild_db_url())
        .env("PROJECTOR_BROKERS", brokers())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn checkpointed(client: &tokio_postgres::Client, id: &str) -> (i64, i64) {
    let r = client
        .query_one(
            "SELECT coalesce(sum(rows), 0)::int8, count(DISTINCT owner) FROM projector.rebuild_ranges WHERE rebuild_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// The rows a finished `projector rebuild` says it copied.
fn copied_rows(child: std::process::Child) -> u64 {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "rebuild failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.contains("copied")).unwrap_or_else(|| panic!("no copied line in {text}"));
    line.split_whitespace().nth(3).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unreadable: {line}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_copy_resumes_from_the_checkpoint_not_from_zero() {
    let (w, _mirror_table) = mirrored("rbkill").await;
    let client = rebuild_db().await;
    let target = format!("{}_trips_v2", w.name);
    let id = format!("{}-kill", w.name);
    let slow = ["--ranges", "1", "--page-rows", "100", "--max-rows-per-second", "400"];
    let mut first = rebuild_process(&w, &target, &id, "first", &slow);
    wait_for(Duration::from_secs(60), "a few checkpoints", || async { checkpointed(&client, &id).await.0 >= 300 })
        .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let (at_kill, _) = checkpointed(&client, &id).await;
    assert!(at_kill < i64::from(TRIPS), "killed mid-copy");

    let resumed = rebuild_process(&w, &target, &id, "second", &["--parity"]);
    let rows = copied_rows(resumed);
    assert_eq!(rows, (i64::from(TRIPS) - at_kill) as u64, "the resumed run reads only what the checkpoint lacks");
    assert_eq!(checkpointed(&client, &id).await.0, i64::from(TRIPS));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_the_ranges_of_one_rebuild() {
    let (w, _mirror_table) = mirrored("rbtwo").await;
    let client = rebuild_db().await;
    let target = format!("{}_trips_v2", w.name);
    let id = format!("{}-two", w.name);
    let args = ["--ranges", "6", "--page-rows", "100", "--max-rows-per-second", "1000"];
    let a = rebuild_process(&w, &target, &id, "a", &args);
    let b = rebuild_process(&w, &target, &id, "b", &args);
    let (ra, rb) = (copied_rows(a), copied_rows(b));
    assert!(ra > 0 && rb > 0, "both workers copied: {ra} and {rb}");
    assert_eq!(ra + rb, TRIPS as u64, "no range was copied twice");
    let (rows, owners) = checkpointed(&client, &id).await;
    assert_eq!((rows, owners), (i64::from(TRIPS), 2));
    let check = rebuild_process(&w, &target, &id, "c", &["--parity"]);
    assert_eq!(copied_rows(check), 0, "a finished rebuild copies nothing more, and its parity passes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_that_is_not_whole_is_refused_naming_what_it_lacks() {
    let _ = rebuild_db().await;
    let w = World::new("rbpart", 1).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    fields: [TripId, Fare]\n    postgres: {{ table: '{table}' }}\n",
        w.name,
        w.db.trips.topic()
    ));
    let out =
        rebuild_process(&w, &format!("{table}_v2"), &format!("{}-x", w.name), "x", &[]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the command refuses it");
    assert!(stderr.contains("fields:") && stderr.contains("--from kafka") && stderr.contains(&table), "{stderr}");
    let model = ReadModel::load(&w.model_file).unwrap();
    let e = projector::source::mirror::whole_mirror(&model.tables[0]).unwrap_err().to_string();
    assert!(e.contains("fields:") && e.contains("--from kafka") && e.contains(&table), "{e}");
    // Naming a whole mirror (another read model's table) makes it usable.
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    fields: [TripId, Fare]\n    mirror: staging.trips_whole\n    elasticsearch: {{ index: {} }}\n",
        w.name,
        w.db.trips.topic(),
        w.indexes[0]
    ));
    let model = ReadModel::load(&w.model_file).unwrap();
    assert_eq!(projector::source::mirror::whole_mirror(&model.tables[0]).unwrap(), "staging.trips_whole");

    // A whole mirror lacking a column the rebuilt mapping reads is refused too.
    let (mw, mirror_table) = mirrored("rbcols").await;
    let (_client, mirror) = mirror_of(&mirror_table).await;
    let reads = mw.model_file.with_extension("reads.yaml");
    std::fs::write(
        &reads,
        format!(
            "read_model: {}\ntables:\n  - topic: {}\n    fields: [TripId, Nope]\n    elasticsearch: {{ index: x }}\n",
            mw.name,
            mw.db.trips.topic()
        ),
    )
    .unwrap();
    let model = ReadModel::load(&reads).unwrap();
    let e = mirror.check_covers(&model.tables[0]).unwrap_err().to_string();
    assert!(e.contains("\"Nope\"") && e.contains("--from kafka"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_copies_into_a_fresh_bigquery_table_with_exact_positions_and_tombstones() {
    let (w, mirror_table) = mirrored("rbbq").await;
    let (client, mirror) = mirror_of(&mirror_table).await;
    // A read model that writes only BigQuery and names its mirror.
    let yaml = format!(
        "read_model: {}\ntables:\n  - topic: {}\n    mirror: '{mirror_table}'\n    bigquery: {{ table: trips }}\n",
        w.name,
        w.db.trips.topic()
    );
    let bq = common::bigquery::Bq::named(&w.name, unique("it_rbbq_"), &w.db.trips.topic(), "{ table: trips }").await;
    let file = w.model_file.with_extension("bq.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let model = Arc::new(ReadModel::load(&file).unwrap());
    let sink = Arc::new(bq.another_sink().await);
    let mut job = copy(&w, sink.clone(), &mirror_table, "trips_v2", &format!("{}-bq", w.name));
    job.model = model;
    job.page_rows = 500;
    let done = job.copy().await.unwrap();
    assert_eq!(done.rows, TRIPS as u64);
    let report = parity(&client, &mirror, &*sink, "trips_v2", 500).await.unwrap();
    assert!(report.passed(), "{report}");
    let tombstones = bq.query(&format!("SELECT COUNT(*) FROM {} WHERE __deleted", bq.table("trips_v2"))).await;
    assert_eq!(tombstones[0][0], serde_json::json!((TRIPS / 5).to_string()), "{tombstones:?}");
    bq.drop().await;
}

// The one-command rebuild: `projector rebuild <file> [--sink S]` begins (or
// resumes) version 2, copies, checks parity and swaps, with the version
// catalog in the rebuild database.

/// `projector rebuild <file>` with `args`, against the test servers.
fn rebuild_command(w: &World, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_projector"))
        .arg("rebuild")
        .arg(&w.model_file)
        .args(args)
        .env("PROJECTOR_POSTGRES_URL", rebuild_db_url())
        .env("PROJECTOR_BROKERS", brokers())
        .env("PROJECTOR_ELASTICSEARCH_URL", es_url())
        .env("PROJECTOR_BIGQUERY_URL", "http://127.0.0.1:9050")
        .env("PROJECTOR_BIGQUERY_AUTH", "none")
        .env("PROJECTOR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The stdout of a `projector rebuild` that succeeded.
fn succeeded(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "rebuild failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The rows the rebuild of `sink` says this process copied.
fn copied_here(stdout: &str, sink: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(sink) && l.contains(": copied "))
        .unwrap_or_else(|| panic!("no copied line for {sink} in {stdout}"));
    let after = line.split(": copied ").nth(1).unwrap_or_default();
    after.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unreadable: {line}"))
}

async fn versions_of(w: &World, sink: &str, logical: &str) -> Vec<(i32, String, State)> {
    catalog_versions(&rebuild_db_url(), &w.name, sink, logical).await
}

/// id → fare in cents of the live rows of a PostgreSQL relation in the rebuild database.
async fn pg_fares(relation: &str) -> BTreeMap<String, i64> {
    let sql =
        format!("SELECT __id, (\"Fare\" * 100)::bigint FROM {} WHERE NOT __deleted ORDER BY 1", quote_table(relation));
    rebuild_db().await.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn es_fares(w: &World, alias: &str) -> BTreeMap<String, i64> {
    w.docs(alias)
        .await
        .into_iter()
        .map(|(id, doc)| (id, (doc["Fare"].as_f64().unwrap() * 100.0).round() as i64))
        .collect()
}

async fn bq_fares(dataset: &str, relation: &str) -> BTreeMap<String, i64> {
    common::bigquery_rows(&format!(
        "SELECT __id, CAST(Fare * 100 AS INT64) FROM `projector-local.{dataset}.{relation}` WHERE NOT __deleted"
    ))
    .await
    .into_iter()
    .filter_map(|r| Some((r.first()?.as_str()?.to_string(), r.get(1)?.as_str()?.parse().ok()?)))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sink_is_rebuilt_and_swapped_while_events_keep_arriving() {
    let _ = rebuild_db().await;
    let w = World::new("rbswap", 2).await;
    let table = format!("{}_trips", w.name);
    let alias = w.indexes[0].clone();
    let dataset = w.name.replace('-', "_");
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n    elasticsearch: {{ index: {alias} }}\n    bigquery: {{ table: trips }}\n",
        w.name,
        w.db.trips.topic(),
    ));
    const N: i32 = 300;
    let mut t = Timeline::default();
    let (records, mut expect) = churn(&w, &mut t, N, 1);
    w.produce(&records).await;
    let _p = w.start_with(
        &w.group,
        &[("PROJECTOR_POSTGRES_URL", &rebuild_db_url()), ("PROJECTOR_VERSION_REFRESH_MS", "300")],
    );
    for sink in ["postgres", "elasticsearch", "bigquery"] {
        w.wait_sink_caught_up(&w.group, sink, CATCH_UP).await;
    }

    // Every sink rebuilt in one command, throttled so that it takes a few
    // seconds, while rounds of fare updates keep arriving (a bounded number:
    // the BigQuery emulator's pipeline needs a pause to catch up for parity).
    let args =
        ["--ranges", "2", "--page-rows", "50", "--max-rows-per-second", "300", "--parity-timeout-seconds", "120"];
    let mut child = rebuild_command(&w, &args);
    let mut rounds = 0;
    while child.try_wait().unwrap().is_none() && rounds < 12 {
        rounds += 1;
        let updates: Vec<_> = (1..=N)
            .filter(|id| id % 5 != 0 && id % 4 == rounds % 4)
            .map(|id| {
                let fare = 5000 + i64::from(rounds) * 10 + i64::from(id);
                expect.insert(id.to_string(), fare);
                let at = t.commit(1);
                w.db.trips.event('u', None, Some(&trip(id, i128::from(fare), 1)), at, t.ts_ms, true)
            })
            .collect();
        w.produce(&updates).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stdout = succeeded(child);
    assert!(rounds >= 3, "events kept arriving during the rebuild ({rounds} rounds)");
    for sink in ["elasticsearch", "postgres", "bigquery"] {
        assert!(stdout.contains(&format!("{sink} ")) && stdout.contains("swapped: readers now see v2"), "{stdout}");
        assert!(stdout.contains(&format!("projector rollback {} --sink {sink}", w.model_file.display())), "{stdout}");
    }
    for sink in ["postgres", "elasticsearch", "bigquery"] {
        w.wait_sink_caught_up(&w.group, sink, CATCH_UP).await;
    }
    use State::{Current, Previous};
    assert_eq!(
        versions_of(&w, "postgres", &table).await,
        vec![(1, format!("{table}_v1"), Previous), (2, format!("{table}_v2"), Current)]
    );
    assert_eq!(
        versions_of(&w, "elasticsearch", &alias).await,
        vec![(1, format!("{alias}_v1"), Previous), (2, format!("{alias}_v2"), Current)]
    );
    assert_eq!(
        versions_of(&w, "bigquery", "trips").await,
        vec![(1, "trips".into(), Previous), (2, "trips_v2".into(), Current)]
    );
    // The readers see version 2 with every row at its newest state.
    assert_eq!(pg_fares(&format!("{table}_live")).await, expect, "PostgreSQL readers");
    assert_eq!(pg_fares(&format!("{table}_v2")).await, expect, "PostgreSQL v2");
    refresh(&format!("{alias}_v2")).await;
    assert_eq!(es_fares(&w, &alias).await, expect, "Elasticsearch readers");
    let indexes = get_json(&format!("{}/_alias/{alias}", es_url())).await;
    assert_eq!(indexes.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()), Some(vec![format!("{alias}_v2")]));
    // The copy filled v2 without periodic refreshes; readers search it now,
    // so the swap gave them back.
    let settings = get_json(&format!("{}/{alias}_v2/_settings", es_url())).await;
    let interval = settings[format!("{alias}_v2")]["settings"]["index"].get("refresh_interval").cloned();
    assert_eq!(interval, None, "v2 refreshes at the default interval again: {settings}");
    assert_eq!(bq_fares(&dataset, "trips_live").await, expect, "BigQuery readers");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_rebuild_then_the_same_command_resumes_from_its_checkpoints() {
    let (w, table) = mirrored("rbresume").await;
    let client = rebuild_db().await;
    let alias = w.indexes[0].clone();
    let args = ["--ranges", "1", "--page-rows", "100", "--max-rows-per-second", "500", "--lease-seconds", "2"];
    for (sink, logical) in [("elasticsearch", alias.as_str()), ("postgres", table.as_str())] {
        let id = format!("{}/{sink}/{logical}/v2", w.name);
        let mut sink_args = vec!["--sink", sink];
        sink_args.extend(args);
        let mut first = rebuild_command(&w, &sink_args);
        wait_for(Duration::from_secs(60), &format!("{sink}: a few checkpoints"), || async {
            checkpointed(&client, &id).await.0 >= 300
        })
        .await;
        first.kill().unwrap();
        first.wait().unwrap();
        let (at_kill, _) = checkpointed(&client, &id).await;
        assert!(at_kill < i64::from(TRIPS), "{sink}: killed mid-copy");
        let physical = format!("{logical}_v2");
        assert_eq!(versions_of(&w, sink, logical).await[1], (2, physical.clone(), State::Building));

        let stdout = succeeded(rebuild_command(&w, &sink_args));
        assert_eq!(
            copied_here(&stdout, sink),
            (i64::from(TRIPS) - at_kill) as u64,
            "{sink}: the same command resumed where the checkpoints stood: {stdout}"
        );
        assert_eq!(versions_of(&w, sink, logical).await[1], (2, physical, State::Current), "{stdout}");
    }
    let live = (1..=TRIPS).filter(|id| id % 5 != 0).count();
    assert_eq!(pg_fares(&format!("{table}_live")).await.len(), live);
    assert_eq!(w.docs(&alias).await.len(), live);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parity_failure_blocks_the_swap_and_names_the_difference() {
    let (w, _table) = mirrored("rbparity").await;
    let alias = w.indexes[0].clone();
    let model = Arc::new(ReadModel::load(&w.model_file).unwrap());
    let es = Elasticsearch::new(&es_url()).unwrap();
    es.prepare(&model).await.unwrap();
    let catalog = Catalog::connect(&rebuild_db_url()).await.unwrap();
    // Version 2 is begun, and before the copy trip 7 lands in it at a
    // position no mirror row reaches (a writer gone wrong): the copy's row
    // is stale against it, and the two never agree.
    let v2 = projector::pipeline::versions::begin_version(&catalog, &es, &w.name, &model.tables[0]).await.unwrap();
    let planted = serde_json::json!({"TripId": 7, "Fare": 1.23, "__projector": {"position": "ffffffffffffffffffffffffffffffff", "deleted": false}});
    let put =
        http().put(format!("{}/{}/_doc/7?refresh=true", es_url(), v2.physical)).json(&planted).send().await.unwrap();
    assert!(put.status().is_success(), "{:?}", put.text().await);

    let out =
        rebuild_command(&w, &["--sink", "elasticsearch", "--parity-timeout-seconds", "2"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the rebuild fails: {stderr}");
    assert!(stderr.contains("parity check failed") && stderr.contains("not swapped"), "{stderr}");
    assert!(stderr.contains("1 ids differ") && stderr.contains("\"7\": mirror "), "names the difference: {stderr}");
    assert_eq!(
        versions_of(&w, "elasticsearch", &alias).await,
        vec![(1, format!("{alias}_v1"), State::Current), (2, v2.physical.clone(), State::Building)],
        "left building, not swapped"
    );
    let indexes = get_json(&format!("{}/_alias/{alias}", es_url())).await;
    assert_eq!(indexes.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()), Some(vec![format!("{alias}_v1")]));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_running_the_same_rebuild_share_it_and_swap_once() {
    let (w, table) = mirrored("rbpair").await;
    let args = ["--sink", "postgres", "--ranges", "6", "--page-rows", "100", "--max-rows-per-second", "1000"];
    let (a, b) = (rebuild_command(&w, &args), rebuild_command(&w, &args));
    let (a, b) = (succeeded(a), succeeded(b));
    let (ra, rb) = (copied_here(&a, "postgres"), copied_here(&b, "postgres"));
    assert!(ra > 0 && rb > 0, "both copied: {ra} and {rb}");
    assert_eq!(ra + rb, TRIPS as u64, "no range copied twice");
    let swapped = [&a, &b].iter().filter(|out| out.contains("swapped: readers now see v2")).count();
    let reported = [&a, &b].iter().filter(|out| out.contains("already swapped by another worker")).count();
    assert_eq!((swapped, reported), (1, 1), "exactly one swap, the other says so:\n{a}\n{b}");
    // The instance that wrote the mirror stopped cleanly and left the
    // catalog's members: nobody waited for it.
    assert!(!a.contains("waiting for running instances") && !b.contains("waiting for running instances"), "{a}\n{b}");
    assert_eq!(
        versions_of(&w, "postgres", &table).await,
        vec![(1, format!("{table}_v1"), State::Previous), (2, format!("{table}_v2"), State::Current)]
    );
    assert_eq!(pg_fares(&format!("{table}_live")).await.len(), (1..=TRIPS).filter(|id| id % 5 != 0).count());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_instance_that_never_writes_the_new_version_fails_the_rebuild_resumably() {
    let _ = rebuild_db().await;
    let w = World::new("rbbehind", 1).await;
    let table = format!("{}_trips", w.name);
    let alias = w.indexes[0].clone();
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n    elasticsearch: {{ index: {alias} }}\n",
        w.name,
        w.db.trips.topic()
    ));
    let (records, _) = churn(&w, &mut Timeline::default(), 20, 0);
    w.produce(&records).await;
    let mut p = w.start_with(&w.group, &[("PROJECTOR_POSTGRES_URL", &rebuild_db_url())]);
    w.wait_sink_caught_up(&w.group, "elasticsearch", CATCH_UP).await;
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    // Killed: it never reads the catalog again, but counts as running for a minute.
    p.kill9();
    let out =
        rebuild_command(&w, &["--sink", "elasticsearch", "--members-timeout-seconds", "1"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("have not started writing")
            && stderr.contains(&format!("{alias}_v2"))
            && stderr.contains("run the same command again"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("projector-{}-elasticsearch", w.name)), "names the instance: {stderr}");
    assert_eq!(versions_of(&w, "elasticsearch", &alias).await[1], (2, format!("{alias}_v2"), State::Building));
}
