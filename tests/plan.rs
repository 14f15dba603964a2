//! `projector plan` against the real servers: for each target's current
//! version it prints `unchanged`, `in place` (with the change `run` applies)
//! or `rebuild` (why, and the command), from the target's live shape and the
//! read-model section recorded when the version was built; and it touches
//! nothing. Without a reachable server it prints the offline plan and names
//! the server it could not reach.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use projector::mapping::ReadModel;
use projector::pipeline::versions::Versions;
use projector::sink::catalog::Catalog;
use projector::sink::elasticsearch::Elasticsearch;
use projector::sink::postgres::{Postgres, quote_table};
use projector::sink::{FieldSource, NewField, Sink};

/// Runs `projector plan` on `file`; returns its stdout.
fn plan(file: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_projector"))
        .arg("plan")
        .arg(file)
        .args(extra)
        .env("PROJECTOR_POSTGRES_URL", pg_url())
        .env("PROJECTOR_ELASTICSEARCH_URL", es_url())
        .env("PROJECTOR_BIGQUERY_URL", "http://127.0.0.1:9050")
        .env("PROJECTOR_BIGQUERY_AUTH", "none")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "projector plan: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The verdict line of `sink`'s target `logical` and the lines under it.
fn verdict<'a>(out: &'a str, sink: &str, logical: &str) -> (&'a str, Vec<&'a str>) {
    let head = format!("  {sink} {logical} (");
    let mut lines = out.lines().skip_while(|l| !l.starts_with(&head));
    let first = lines.next().unwrap_or_else(|| panic!("no verdict for {sink} {logical} in:\n{out}"));
    let word = first.rsplit(": ").next().unwrap_or_default();
    (word, lines.take_while(|l| l.starts_with("      ")).collect())
}

/// What the pipeline does on start: version 1 of each of the sink's targets.
async fn establish<S: Sink>(sink: &S, model: &ReadModel) {
    sink.prepare(model).await.unwrap();
    let catalog = Arc::new(Catalog::connect(&pg_url()).await.unwrap());
    Versions::new(catalog, &model.name, sink.name(), "plan-test").establish(sink, model).await.unwrap();
}

fn es_model(w: &World, index: &str, fields: &str, route: &str, where_: &str) -> String {
    format!(
        "read_model: {}\ntables:\n  - topic: {}\n    where: \"{where_}\"\n    fields: [{fields}]\n    elasticsearch:\n      index: {index}\n      types: {{Route: {route}}}\n",
        w.name,
        w.db.trips.topic()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_plan_tells_an_added_field_from_an_analyzer_or_where_change_and_touches_nothing() {
    let w = World::new("planes", 1).await;
    let index = w.indexes[0].clone();
    w.set_model(&es_model(&w, &index, "TripId, Route", "text(standard)", "Status != 9"));
    let model = ReadModel::load(&w.model_file).unwrap();
    establish(&Elasticsearch::new(&es_url()).unwrap(), &model).await;
    let mapping = format!("{}/{index}_v1/_mapping", es_url());
    let before = get_json(&mapping).await;

    let out = plan(&w.model_file, &[]);
    assert_eq!(verdict(&out, "elasticsearch", &index).0, "unchanged", "{out}");

    w.set_model(&es_model(&w, &index, "TripId, Route, Fare", "text(standard)", "Status != 9"));
    let out = plan(&w.model_file, &[]);
    let (word, steps) = verdict(&out, "elasticsearch", &index);
    assert_eq!(word, "in place", "{out}");
    assert!(steps.iter().any(|s| s.contains("new field Fare")), "{out}");

    w.set_model(&es_model(&w, &index, "TripId, Route", "text(english)", "Status != 9"));
    let out = plan(&w.model_file, &["--sink", "elasticsearch"]);
    let (word, why) = verdict(&out, "elasticsearch", &index);
    assert_eq!(word, "rebuild", "{out}");
    assert!(why.iter().any(|l| l.contains("field Route") && l.contains("analyzer")), "{out}");
    let command = format!(
        // The table has no mirror: the command replays its topic.
        "run: projector rebuild {} --sink elasticsearch --table {} --from kafka",
        w.model_file.display(),
        w.db.trips.topic()
    );
    assert!(why.iter().any(|l| l.trim() == command), "names the command: {out}");

    w.set_model(&es_model(&w, &index, "TripId, Route", "text(standard)", "Status != 8"));
    let out = plan(&w.model_file, &[]);
    let (word, why) = verdict(&out, "elasticsearch", &index);
    assert_eq!(word, "rebuild", "{out}");
    assert!(why.iter().any(|l| l.contains("`where` changed from `Status != 9` to `Status != 8`")), "{out}");

    assert_eq!(get_json(&mapping).await, before, "plan changed the index mapping");
}

/// `table`'s columns and types, in order.
async fn pg_columns(table: &str) -> Vec<(String, String)> {
    let rows = pg()
        .await
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&quote_table(table)],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn pg_model(w: &World, table: &str, fare: &str, where_: &str) -> String {
    format!(
        "read_model: {}\ntables:\n  - topic: {}\n    where: \"{where_}\"\n    postgres:\n      table: '{table}'\n      types: {{Fare: '{fare}'}}\n",
        w.name,
        w.db.trips.topic()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_plan_widens_in_place_and_rebuilds_a_narrowing_or_a_changed_where() {
    let w = World::new("planpg", 1).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&pg_model(&w, &table, "numeric(10,2)", "Status != 9"));
    let model = Arc::new(ReadModel::load(&w.model_file).unwrap());
    let sink = Postgres::new(&pg_url(), model.clone());
    establish(&sink, &model).await;
    let physical = format!("{table}_v1");
    let fare = NewField { name: "Fare".into(), source: FieldSource::Declared };
    sink.add_fields(&model.tables[0], &physical, &[fare]).await.unwrap();
    let before = pg_columns(&physical).await;
    assert!(before.contains(&("Fare".into(), "numeric(10,2)".into())), "{before:?}");

    let out = plan(&w.model_file, &["--sink", "postgres"]);
    assert_eq!(verdict(&out, "postgres", &table).0, "unchanged", "{out}");

    w.set_model(&pg_model(&w, &table, "numeric(12,4)", "Status != 9"));
    let out = plan(&w.model_file, &["--table", &w.db.trips.topic()]);
    let (word, steps) = verdict(&out, "postgres", &table);
    assert_eq!(word, "in place", "{out}");
    let ddl = format!("ALTER TABLE {} ALTER COLUMN \"Fare\" TYPE numeric(12,4)", quote_table(&physical));
    assert!(steps.iter().any(|s| s.trim() == ddl), "prints the DDL {ddl}: {out}");

    w.set_model(&pg_model(&w, &table, "numeric(8,2)", "Status != 9"));
    let out = plan(&w.model_file, &[]);
    assert_eq!(verdict(&out, "postgres", &table).0, "rebuild", "{out}");

    w.set_model(&pg_model(&w, &table, "numeric(10,2)", "Status == 1"));
    let out = plan(&w.model_file, &[]);
    let (word, why) = verdict(&out, "postgres", &table);
    assert_eq!(word, "rebuild", "{out}");
    assert!(why.iter().any(|l| l.contains("`where` changed")), "{out}");

    assert_eq!(pg_columns(&physical).await, before, "plan changed the table");
}

#[tokio::test(flavor = "multi_thread")]
async fn bigquery_plan_widens_a_decimal_in_place_and_rebuilds_another_kind_by_shape_only() {
    let w = World::new("planbq", 1).await;
    let dataset = w.name.replace('-', "_");
    let model = |fare: &str| {
        format!(
            "read_model: {}\ntables:\n  - topic: {}\n    bigquery:\n      table: trips\n      types: {{Fare: '{fare}'}}\n",
            w.name,
            w.db.trips.topic()
        )
    };
    w.set_model(&model("NUMERIC(10,2)"));
    let loaded = Arc::new(ReadModel::load(&w.model_file).unwrap());
    let sink = projector::sink::bigquery::BigQuery::new(
        "http://127.0.0.1:9050",
        "projector-local",
        &dataset,
        loaded.clone(),
        projector::sink::bigquery::Auth::None,
    )
    .unwrap();
    establish(&sink, &loaded).await;
    let shape = || async { sink.live_shape(&loaded.tables[0], "trips").await.unwrap() };
    let before = shape().await;

    let out = plan(&w.model_file, &["--sink", "bigquery"]);
    let (word, notes) = verdict(&out, "bigquery", "trips");
    assert_eq!(word, "unchanged", "{out}");
    assert!(notes.iter().any(|n| n.contains("compared by shape only")), "says what it cannot see: {out}");

    w.set_model(&model("NUMERIC(12,4)"));
    let out = plan(&w.model_file, &["--sink", "bigquery"]);
    let (word, steps) = verdict(&out, "bigquery", "trips");
    assert_eq!(word, "in place", "{out}");
    assert!(steps.iter().any(|s| s.contains("ALTER COLUMN `Fare` SET DATA TYPE NUMERIC(12,4)")), "{out}");

    w.set_model(&model("STRING"));
    let out = plan(&w.model_file, &["--sink", "bigquery"]);
    assert_eq!(verdict(&out, "bigquery", "trips").0, "rebuild", "{out}");

    assert_eq!(shape().await, before, "plan changed the table");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_server_reachable_plan_prints_the_offline_plan_and_names_the_server() {
    let w = World::new("planoff", 1).await;
    let out = Command::new(env!("CARGO_BIN_EXE_projector"))
        .arg("plan")
        .arg(&w.model_file)
        .env("PROJECTOR_POSTGRES_URL", "host=127.0.0.1 port=1 user=postgres dbname=projector connect_timeout=2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("alias {} -> index {}_v1", w.indexes[0], w.indexes[0])), "{stdout}");
    assert!(
        stdout.contains("could not compare: the version catalog in the staging PostgreSQL (host=127.0.0.1 port=1"),
        "{stdout}"
    );
}

/// Trip creates `ids`, fare `fare_cents + id`.
fn trip_creates(
    w: &World,
    ids: std::ops::RangeInclusive<i32>,
    fare_cents: i128,
) -> Vec<projector::demo::sqlserver::Record> {
    let mut t = projector::demo::bus_booking::Timeline::default();
    ids.map(|id| {
        let at = t.commit(1);
        let image = projector::demo::bus_booking::trip(id, fare_cents + i128::from(id), 1);
        w.db.trips.event('c', None, Some(&image), at, t.ts_ms, true)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_never_writes_a_target_that_needs_a_rebuild_and_names_the_command_in_one_line() {
    let w = World::new("planhold", 1).await;
    let index = w.indexes[0].clone();
    w.set_model(&es_model(&w, &index, "TripId, Route", "text(standard)", "Status != 9"));
    let model = ReadModel::load(&w.model_file).unwrap();
    establish(&Elasticsearch::new(&es_url()).unwrap(), &model).await;
    w.set_model(&es_model(&w, &index, "TripId, Route", "text(english)", "Status != 9"));
    w.produce(&trip_creates(&w, 1..=3, 1000)).await;
    let p = w.start(&w.group);
    let command = format!(
        "run `projector rebuild {} --sink elasticsearch --table {} --from kafka`",
        w.model_file.display(),
        w.db.trips.topic()
    );
    wait_for(Duration::from_secs(60), "/health/ready to report the held target with the command", || async {
        p.ready().await.is_some_and(|(status, body)| status == 503 && body.to_string().contains(&command))
    })
    .await;
    refresh(&format!("{index}_v1")).await;
    let count = get_json(&format!("{}/{index}_v1/_count", es_url())).await;
    assert_eq!(count["count"], 0, "nothing written into the disagreeing target: {count}");
    let log = p.log_text();
    let naming: Vec<&str> = log.lines().filter(|l| l.contains(&command)).collect();
    assert_eq!(naming.len(), 1, "one line names the rebuild command:\n{}", log_tail(&log, 40));
    assert!(naming[0].contains("analyzer"), "{}", naming[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_applies_an_in_place_widening_on_start_and_writes_exact_values() {
    let w = World::new("planwide", 1).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&pg_model(&w, &table, "numeric(10,2)", "Status != 9"));
    let model = Arc::new(ReadModel::load(&w.model_file).unwrap());
    let sink = Postgres::new(&pg_url(), model.clone());
    establish(&sink, &model).await;
    let physical = format!("{table}_v1");
    let fare = NewField { name: "Fare".into(), source: FieldSource::Declared };
    sink.add_fields(&model.tables[0], &physical, &[fare]).await.unwrap();
    w.set_model(&pg_model(&w, &table, "numeric(12,4)", "Status != 9"));
    w.produce(&trip_creates(&w, 1..=2, 123_456)).await;
    let _p = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", Duration::from_secs(60)).await;
    let columns = pg_columns(&physical).await;
    assert!(columns.contains(&("Fare".into(), "numeric(12,4)".into())), "widened in place: {columns:?}");
    let rows = pg()
        .await
        .query(&format!("SELECT __id, \"Fare\"::text FROM {} ORDER BY 1", quote_table(&table)), &[])
        .await
        .unwrap();
    let fares: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(fares, vec![("1".into(), "1234.5700".into()), ("2".into(), "1234.5800".into())]);
}
