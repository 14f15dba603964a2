//! Type changes from the source against the real servers: a column widened
//! at the source (decimal(10,2) → decimal(12,4), smallint → int, as after an
//! `ALTER COLUMN` in SQL Server) is widened in place in PostgreSQL and
//! BigQuery and its new values land exactly, never rounded; a change a sink
//! cannot make in place follows the read model's `on_type_change` (dead
//! letters naming the column and the command to run, or a partition held
//! with health not ready); a column the source dropped keeps, nulls or
//! drops its stored values by `on_drop`, in every sink.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::bigquery::Bq;
use common::*;
use projector::decode::{DecodeOptions, Decoded, decode};
use projector::demo::bus_booking::Timeline;
use projector::demo::sqlserver::{Column, Record, Table, decimal_base64};
use projector::mapping::ReadModel;
use projector::pipeline::fields::KnownFields;
use projector::pipeline::isolate::TargetCall;
use projector::sink::catalog::State;
use projector::sink::elasticsearch::Elasticsearch;
use projector::sink::postgres::{Postgres, quote_table};
use projector::sink::{Outcome, Sink, Write};
use projector::source::{Lineage, SourceRecord};
use serde_json::{Value as Json, json};

const CATCH_UP: Duration = Duration::from_secs(120);

/// `Fares`: TripId int32 key, Seats smallint, Fare decimal(10,2), Note text;
/// `widened` is the same table after `ALTER COLUMN`: Seats int, Fare decimal(12,4).
fn fares(prefix: &'static str, widened: bool) -> Table {
    let (seats, fare) = if widened {
        (Column::new("Seats", "int32"), Column::new("Fare", "bytes").decimal(12, 4))
    } else {
        (Column::new("Seats", "int16"), Column::new("Fare", "bytes").decimal(10, 2))
    };
    Table {
        prefix,
        database: "vexere",
        schema: "dbo",
        name: "Fares",
        columns: vec![Column::new("TripId", "int32"), seats, fare, Column::new("Note", "string").optional()],
        key: vec!["TripId"],
    }
}

fn row(id: i64, seats: i64, fare_unscaled: i128, note: Json) -> Vec<(&'static str, Json)> {
    vec![("TripId", json!(id)), ("Seats", json!(seats)), ("Fare", json!(decimal_base64(fare_unscaled))), ("Note", note)]
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Decodes and maps records into writes for `sink`, as the pipeline does.
fn writes_for<S: Sink>(model: &ReadModel, sink: &S, records: &[Record], first_offset: i64) -> Vec<Write> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let rec = SourceRecord {
            lineage: Lineage { topic: r.topic.as_str().into(), partition: 0, offset: first_offset + i as i64 },
            key: Some(r.key.clone().into()),
            value: r.value.clone().map(Into::into),
            headers: vec![],
            timestamp_ms: None,
            generation: 0,
        };
        let Decoded::Change(ev) = decode(&rec, &DecodeOptions::default()).unwrap() else { continue };
        let table = model.table(&r.topic).unwrap();
        let doc = table.document(ev).unwrap();
        out.push(Write { target: sink.target(table).unwrap().into(), doc });
    }
    out
}

/// The staging PostgreSQL sink in-process, on a read model of one table.
struct Pg {
    model: Arc<ReadModel>,
    sink: Postgres,
    fields: KnownFields,
    /// The name readers use (its views) and the version table written.
    logical: String,
    table: String,
    offset: std::cell::Cell<i64>,
}

impl Pg {
    async fn new(topic: &str, table: &str, options: &str) -> Pg {
        Pg::with(topic, table, "", options).await
    }

    /// `section` is more of the table's `postgres:` section; `options` are read-model lines.
    async fn with(topic: &str, table: &str, section: &str, options: &str) -> Pg {
        let yaml = format!(
            "read_model: {}\n{options}tables:\n  - topic: {topic}\n    postgres: {{ table: {table}, {section} }}\n",
            unique("tc")
        );
        let model = Arc::new(ReadModel::parse(Path::new("test.yaml"), &yaml).expect("valid read model"));
        let sink = Postgres::new(&pg_url(), model.clone());
        sink.prepare(&model).await.expect("PostgreSQL is up (scripts/stack up)");
        // Version 1 behind the readers' views, as the pipeline starts a target.
        let physical = sink.physical(table, 1);
        sink.create_version(&model.tables[0], &physical).await.expect("version 1 created");
        sink.point_readers(&model.tables[0], table, &physical).await.expect("views over version 1");
        Pg {
            model,
            sink,
            fields: KnownFields::default(),
            logical: table.to_string(),
            table: physical,
            offset: std::cell::Cell::new(0),
        }
    }

    async fn write(&self, records: &[Record]) -> Vec<Outcome> {
        let writes = writes_for(&self.model, &self.sink, records, self.offset.get());
        self.offset.set(self.offset.get() + records.len() as i64);
        let table = &self.model.tables[0];
        let call = TargetCall { sink: &self.sink, fields: &self.fields, table, target: &self.table, progress: &[] };
        call.write_isolating(&writes).await.expect("batch written")
    }

    /// One row's columns as PostgreSQL prints them.
    async fn row_text(&self, id: &str) -> Vec<Option<String>> {
        let sql = format!(
            "SELECT \"Seats\"::text, \"Fare\"::text, \"Note\"::text FROM {} WHERE __id = $1",
            quote_table(&self.table)
        );
        let r = common::pg().await.query_one(&sql, &[&id]).await.unwrap();
        (0..3).map(|i| r.get::<_, Option<String>>(i)).collect()
    }

    async fn column_type(&self, column: &str) -> String {
        common::pg().await
            .query_one(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2",
                &[&quote_table(&self.table), &column],
            )
            .await
            .unwrap()
            .get(0)
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_widens_decimal_and_smallint_in_place_and_stores_new_values_exactly() {
    let prefix = leak(unique("tcpg"));
    let (old, new) = (fares(prefix, false), fares(prefix, true));
    let pg = Pg::new(&old.topic(), &format!("{prefix}_fares"), "").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    let first = old.event('c', None, Some(&row(1, 12, 1234, json!("a"))), at, t.ts_ms, true);
    assert_eq!(pg.write(&[first]).await, vec![Outcome::Applied]);
    assert_eq!(pg.column_type("Fare").await, "numeric(10,2)");
    // SQL Server: ALTER COLUMN Fare decimal(12,4); ALTER COLUMN Seats int.
    let at = t.commit(1);
    let widened = new.event('u', None, Some(&row(1, 40_000, 123_456_781_234, json!("b"))), at, t.ts_ms, true);
    let at = t.commit(1);
    let other = new.event('c', None, Some(&row(2, 7, 5, json!("c"))), at, t.ts_ms, true);
    assert_eq!(pg.write(&[widened, other]).await, vec![Outcome::Applied, Outcome::Applied]);
    assert_eq!(pg.row_text("1").await, vec![s("40000"), s("12345678.1234"), s("b")], "exact, never rounded");
    assert_eq!(pg.row_text("2").await, vec![s("7"), s("0.0005"), s("c")]);
    assert_eq!(pg.column_type("Fare").await, "numeric(12,4)");
    assert_eq!(pg.column_type("Seats").await, "integer");
    // The reader view follows the widened table.
    let live: String = common::pg()
        .await
        .query_one(
            &format!("SELECT \"Fare\"::text FROM {} WHERE __id = '1'", quote_table(&format!("{}_live", pg.logical))),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, "12345678.1234");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_refuses_a_value_its_column_would_round_naming_column_value_and_type() {
    let prefix = leak(unique("tcpground"));
    let wider = fares(prefix, true);
    // The file fixes numeric(10,2); the source sends four decimals, which
    // PostgreSQL would round silently.
    let pg = Pg::with(&wider.topic(), &format!("{prefix}_fares"), "types: { Fare: 'numeric(10,2)' }", "").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    let out = pg.write(&[wider.event('c', None, Some(&row(1, 1, 12345, json!("a"))), at, t.ts_ms, true)]).await;
    let Outcome::Failed(e) = &out[0] else { panic!("1.2345 must not be rounded into numeric(10,2): {out:?}") };
    assert!(e.kind.is_data(), "{e}");
    assert!(e.message.contains("Fare") && e.message.contains("1.2345") && e.message.contains("numeric(10,2)"), "{e}");
    let n: i64 = common::pg()
        .await
        .query_one(&format!("SELECT count(*) FROM {}", quote_table(&pg.table)), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bigquery_widens_decimal_in_place_and_stores_new_values_exactly() {
    let prefix = leak(unique("tcbq"));
    let (old, new) = (fares(prefix, false), fares(prefix, true));
    let bq = Bq::new("tcwiden", &old.topic(), "{ table: fares }").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    let first = old.event('c', None, Some(&row(1, 12, 1234, json!("a"))), at, t.ts_ms, true);
    assert_eq!(bq.write(&bq.writes(&[first])).await, vec![Outcome::Applied]);
    let at = t.commit(1);
    let widened = new.event('u', None, Some(&row(1, 40_000, 123_456_781_234, json!("b"))), at, t.ts_ms, true);
    let at = t.commit(1);
    let other = new.event('c', None, Some(&row(2, 7, 5, json!("c"))), at, t.ts_ms, true);
    assert_eq!(bq.write(&bq.writes(&[widened, other])).await, vec![Outcome::Applied, Outcome::Applied]);
    let rows = bq
        .query(&format!(
            "SELECT __id, CAST(Seats AS STRING), CAST(Fare AS STRING) FROM {} ORDER BY __id",
            bq.table("fares")
        ))
        .await;
    assert_eq!(
        rows,
        vec![vec![json!("1"), json!("40000"), json!("12345678.1234")], vec![json!("2"), json!("7"), json!("0.0005")]]
    );
    // A restarted sink (a new process) knows the widened type too: a later
    // value with four decimals is still exact.
    let again = Bq::named(&bq.model.name, bq.dataset.clone(), &old.topic(), "{ table: fares }").await;
    let at = t.commit(1);
    let later = new.event('u', None, Some(&row(2, 8, 9_9999, json!("d"))), at, t.ts_ms, true);
    assert_eq!(again.write(&again.writes(&[later])).await, vec![Outcome::Applied]);
    let rows = bq.query(&format!("SELECT CAST(Fare AS STRING) FROM {} WHERE __id = '2'", bq.table("fares"))).await;
    assert_eq!(rows, vec![vec![json!("9.9999")]]);
    bq.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bigquery_refuses_a_value_its_column_would_round() {
    let prefix = leak(unique("tcbqround"));
    let old = fares(prefix, false);
    // Declared NUMERIC(10,2): the file fixes the type, the source's scale 4 cannot fit.
    let bq = Bq::new("tcround", &old.topic(), "{ table: fares, types: { Fare: 'NUMERIC(10, 2)' } }").await;
    let mut wider = fares(prefix, true);
    wider.columns[1] = Column::new("Seats", "int16");
    let mut t = Timeline::default();
    let at = t.commit(1);
    let rec = wider.event('c', None, Some(&row(1, 1, 12345, json!("a"))), at, t.ts_ms, true);
    let out = bq.write(&bq.writes(&[rec])).await;
    let Outcome::Failed(e) = &out[0] else { panic!("1.2345 must not be rounded into NUMERIC(10, 2): {out:?}") };
    assert!(e.kind.is_data(), "{e}");
    assert!(e.message.contains("Fare") && e.message.contains("1.2345") && e.message.contains("NUMERIC(10, 2)"), "{e}");
    let rows = bq.query(&format!("SELECT __id FROM {}", bq.table("fares"))).await;
    assert!(rows.is_empty(), "{rows:?}");
    bq.drop().await;
}

/// A world whose trips topic carries the `Fares` table, mirrored to PostgreSQL.
async fn fares_world(stem: &str, options: &str) -> (World, Table, Table, String) {
    let w = World::new(stem, 1).await;
    let table = format!("{}_fares", w.name);
    let mut old = fares(w.db.trips.prefix, false);
    old.name = "Trips";
    old.columns[3] = Column::new("Note", "int32").optional();
    let mut retyped = old.clone();
    // Note: int → text at the source: PostgreSQL cannot hold it in place.
    retyped.columns[3] = Column::new("Note", "string").optional();
    w.set_model(&format!(
        "read_model: {}\n{options}tables:\n  - topic: {}\n    postgres: {{ table: {table} }}\n",
        w.name,
        w.db.trips.topic()
    ));
    (w, old, retyped, table)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_that_needs_a_rebuild_is_dead_lettered_naming_column_types_and_command() {
    let (w, old, retyped, table) = fares_world("tcdlq", "on_type_change: dead_letter\n").await;
    let mut t = Timeline::default();
    let mut records = vec![];
    let at = t.commit(1);
    records.push(old.event('c', None, Some(&row(1, 1, 100, json!(7))), at, t.ts_ms, true));
    let at = t.commit(1);
    records.push(retyped.event('u', None, Some(&row(1, 2, 200, json!("x"))), at, t.ts_ms, true));
    let at = t.commit(1);
    records.push(old.event('c', None, Some(&row(2, 3, 300, json!(8))), at, t.ts_ms, true));
    w.produce(&records[..1]).await;
    let _p = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    w.produce(&records[1..]).await;
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    let letters = dead_letters(&format!("projector.{}.dlq", w.name), 1).await;
    let (stage, _, message) = &letters[&(w.db.trips.topic(), 1)];
    assert_eq!(stage, "sink");
    for part in ["Note", "integer", "text", "projector rebuild", "--sink postgres", &w.db.trips.topic()] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    let rows: Vec<(String, String)> = common::pg()
        .await
        .query(&format!("SELECT __id, \"Note\"::text FROM {} ORDER BY 1", quote_table(&table)), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![("1".into(), "7".into()), ("2".into(), "8".into())], "the old row kept, the next one landed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_that_needs_a_rebuild_under_stop_holds_the_partition_and_health_says_why() {
    let (w, old, retyped, table) = fares_world("tcstop", "on_type_change: stop\n").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    w.produce(&[old.event('c', None, Some(&row(1, 1, 100, json!(7))), at, t.ts_ms, true)]).await;
    let p = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    let at = t.commit(1);
    w.produce(&[retyped.event('u', None, Some(&row(1, 2, 200, json!("x"))), at, t.ts_ms, true)]).await;
    wait_for(CATCH_UP, "/health/ready 503 naming the column and the rebuild command", || async {
        matches!(p.ready().await, Some((503, body)) if body["sinks"]["postgres"]["detail"].as_str().is_some_and(|d| d.contains("Note") && d.contains("projector rebuild")))
    })
    .await;
    let group = format!("{}.postgres", w.group);
    let topics = w.topics();
    let lag = tokio::task::spawn_blocking(move || lag(&group, &topics)).await.unwrap();
    assert_eq!(lag, Some(1), "the partition is held at the changed record");
    let note: String = common::pg()
        .await
        .query_one(&format!("SELECT \"Note\"::text FROM {} WHERE __id = '1'", quote_table(&table)), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "7");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_column_keeps_its_values_by_default_and_is_nulled_under_on_drop_null() {
    for (options, expect) in [("", s("kept")), ("on_drop: null\n", None)] {
        let prefix = leak(unique("tcdrop"));
        let old = fares(prefix, false);
        let mut dropped = old.clone();
        dropped.columns.retain(|c| c.name != "Note");
        let pg = Pg::new(&old.topic(), &format!("{prefix}_fares"), options).await;
        let mut t = Timeline::default();
        let at = t.commit(1);
        assert_eq!(
            pg.write(&[old.event('c', None, Some(&row(1, 1, 100, json!("kept"))), at, t.ts_ms, true)]).await,
            vec![Outcome::Applied]
        );
        let mut after = row(1, 2, 200, json!(null));
        after.retain(|(n, _)| *n != "Note");
        let at = t.commit(1);
        assert_eq!(
            pg.write(&[dropped.event('u', None, Some(&after), at, t.ts_ms, true)]).await,
            vec![Outcome::Applied]
        );
        assert_eq!(pg.row_text("1").await, vec![s("2"), s("2.00"), expect], "options {options:?}");
    }
}

/// The Elasticsearch sink in-process, on a read model of one table.
async fn es_call(topic: &str, alias: &str, options: &str) -> (Arc<ReadModel>, Elasticsearch) {
    let yaml = format!(
        "read_model: {}\n{options}tables:\n  - topic: {topic}\n    elasticsearch: {{ index: {alias} }}\n",
        unique("tc")
    );
    let model = Arc::new(ReadModel::parse(Path::new("test.yaml"), &yaml).expect("valid read model"));
    let sink = Elasticsearch::new(&es_url()).unwrap();
    sink.prepare(&model).await.expect("Elasticsearch is up (scripts/stack up)");
    (model, sink)
}

async fn es_write(
    model: &ReadModel,
    sink: &Elasticsearch,
    fields: &KnownFields,
    records: &[Record],
    offset: i64,
) -> Vec<Outcome> {
    let writes = writes_for(model, sink, records, offset);
    let table = &model.tables[0];
    let target = sink.target(table).unwrap();
    TargetCall { sink, fields, table, target, progress: &[] }.write_isolating(&writes).await.expect("batch written")
}

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_integer_fields_refuse_decimals_instead_of_truncating_them() {
    let prefix = leak(unique("tces"));
    let old = fares(prefix, false);
    let alias = format!("{prefix}-fares");
    let (model, sink) = es_call(&old.topic(), &alias, "").await;
    let fields = KnownFields::default();
    let mut t = Timeline::default();
    let at = t.commit(1);
    let first = old.event('c', None, Some(&row(1, 12, 1234, json!("a"))), at, t.ts_ms, true);
    assert_eq!(es_write(&model, &sink, &fields, &[first], 0).await, vec![Outcome::Applied]);
    // A schemaless record (no schema to say Seats changed) with 1.5 seats:
    // a default `long` would index 1 silently.
    let at = t.commit(1);
    let mut img = row(2, 0, 100, json!("b"));
    img[1].1 = json!(1.5);
    // Without a schema the decimal travels as a plain number.
    img[2].1 = json!(1.0);
    let bare = old.event('c', None, Some(&img), at, t.ts_ms, false);
    let out = es_write(&model, &sink, &fields, &[bare], 1).await;
    let Outcome::Failed(e) = &out[0] else { panic!("1.5 must not be truncated into a long: {out:?}") };
    assert!(e.kind.is_data(), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_a_field_that_needs_a_new_type_is_dead_lettered_under_dead_letter_and_held_by_default() {
    let prefix = leak(unique("tcesr"));
    let old = fares(prefix, false);
    let mut decimal_seats = old.clone();
    decimal_seats.columns[1] = Column::new("Seats", "bytes").decimal(5, 1);
    let mut t = Timeline::default();
    let at = t.commit(1);
    let first = old.event('c', None, Some(&row(1, 12, 1234, json!("a"))), at, t.ts_ms, true);
    let at = t.commit(1);
    let mut img = row(1, 0, 1234, json!("b"));
    img[1].1 = json!(decimal_base64(155));
    let retyped = decimal_seats.event('u', None, Some(&img), at, t.ts_ms, true);
    for (options, dead_letter) in [("on_type_change: dead_letter\n", true), ("", false)] {
        let alias = format!("{}-fares", unique("tcesr"));
        let (model, sink) = es_call(&old.topic(), &alias, options).await;
        let fields = KnownFields::default();
        assert_eq!(es_write(&model, &sink, &fields, std::slice::from_ref(&first), 0).await, vec![Outcome::Applied]);
        let writes = writes_for(&model, &sink, std::slice::from_ref(&retyped), 1);
        let table = &model.tables[0];
        let call = TargetCall { sink: &sink, fields: &fields, table, target: &alias, progress: &[] };
        let message = match call.write_isolating(&writes).await {
            Ok(out) if dead_letter => match &out[0] {
                Outcome::Failed(e) if e.kind.is_data() => e.message.clone(),
                other => panic!("the retyped write is refused for the dead-letter queue: {other:?}"),
            },
            Err(e) if !dead_letter => {
                assert!(!e.kind.is_data(), "held, not dead-lettered: {e}");
                e.message
            }
            other => panic!("options {options:?}: {other:?}"),
        };
        for part in ["Seats", "long", "double", "projector rebuild", "--sink elasticsearch"] {
            assert!(message.contains(part), "{part:?} missing from {message}");
        }
        assert!(dead_letter || message.contains("on_type_change: rebuild"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bigquery_a_dropped_column_keeps_its_values_by_default_and_is_nulled_under_on_drop_null() {
    for (options, expect) in [("", json!("kept")), ("on_drop: null\n", Json::Null)] {
        let prefix = leak(unique("tcbqdrop"));
        let old = fares(prefix, false);
        let mut dropped = old.clone();
        dropped.columns.retain(|c| c.name != "Note");
        let dataset = unique("it_tcdrop_");
        let yaml_name = unique("tcdrop");
        let bq = Bq::named_with(&yaml_name, dataset, &old.topic(), "{ table: fares }", options).await;
        let mut t = Timeline::default();
        let at = t.commit(1);
        let first = old.event('c', None, Some(&row(1, 1, 100, json!("kept"))), at, t.ts_ms, true);
        assert_eq!(bq.write(&bq.writes(&[first])).await, vec![Outcome::Applied]);
        let mut after = row(1, 2, 200, json!(null));
        after.retain(|(n, _)| *n != "Note");
        let at = t.commit(1);
        let later = dropped.event('u', None, Some(&after), at, t.ts_ms, true);
        assert_eq!(bq.write(&bq.writes(&[later])).await, vec![Outcome::Applied]);
        let rows = bq.query(&format!("SELECT CAST(Seats AS STRING), Note FROM {}", bq.table("fares"))).await;
        assert_eq!(rows, vec![vec![json!("2"), expect]], "options {options:?}");
        bq.drop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_a_dropped_field_keeps_its_value_by_default_and_is_gone_under_null_and_drop() {
    for (options, expect) in [("", json!("kept")), ("on_drop: null\n", Json::Null), ("on_drop: drop\n", Json::Null)] {
        let prefix = leak(unique("tcesdrop"));
        let old = fares(prefix, false);
        let mut dropped = old.clone();
        dropped.columns.retain(|c| c.name != "Note");
        let alias = format!("{prefix}-fares");
        let (model, sink) = es_call(&old.topic(), &alias, options).await;
        let fields = KnownFields::default();
        let mut t = Timeline::default();
        let at = t.commit(1);
        let first = old.event('c', None, Some(&row(1, 1, 100, json!("kept"))), at, t.ts_ms, true);
        assert_eq!(es_write(&model, &sink, &fields, &[first], 0).await, vec![Outcome::Applied]);
        let mut after = row(1, 2, 200, json!(null));
        after.retain(|(n, _)| *n != "Note");
        let at = t.commit(1);
        let later = dropped.event('u', None, Some(&after), at, t.ts_ms, true);
        assert_eq!(es_write(&model, &sink, &fields, &[later], 1).await, vec![Outcome::Applied]);
        let doc = get_json(&format!("{}/{alias}/_doc/1", es_url())).await;
        let source = &doc["_source"];
        assert_eq!(source["Seats"], json!(2), "options {options:?}: the later write landed: {doc}");
        assert_eq!(source.get("Note").cloned().unwrap_or(Json::Null), expect, "options {options:?}: {doc}");
        // Elasticsearch cannot unmap a field in place: the mapping keeps it (until a rebuild).
        let mapping = get_json(&format!("{}/{alias}/_mapping", es_url())).await;
        let mapped = mapping.as_object().and_then(|m| m.values().next()).map(|i| i["mappings"]["properties"].clone());
        assert!(mapped.is_some_and(|p| p.get("Note").is_some()), "options {options:?}: {mapping}");
        let _ = http().delete(format!("{}/{alias}", es_url())).send().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_on_drop_drop_removes_the_column_from_every_version_table_and_the_views_follow() {
    let prefix = leak(unique("tcpgdrop"));
    let old = fares(prefix, false);
    let mut dropped = old.clone();
    dropped.columns.retain(|c| c.name != "Note");
    let pg = Pg::new(&old.topic(), &format!("{prefix}_fares"), "on_drop: drop\n").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    assert_eq!(
        pg.write(&[old.event('c', None, Some(&row(1, 1, 100, json!("gone"))), at, t.ts_ms, true)]).await,
        vec![Outcome::Applied]
    );
    // A second version (as a rebuild leaves one for rollback) with the same columns.
    let v2 = pg.sink.physical(&pg.logical, 2);
    let db = common::pg().await;
    db.batch_execute(&format!("CREATE TABLE {} (LIKE {} INCLUDING ALL)", quote_table(&v2), quote_table(&pg.table)))
        .await
        .unwrap();
    let columns_of = async |table: &str| -> Vec<String> {
        db.query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&quote_table(table)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert!(columns_of(&pg.logical).await.contains(&"Note".to_string()), "the view has Note before the drop");
    let mut after = row(1, 2, 200, json!(null));
    after.retain(|(n, _)| *n != "Note");
    let at = t.commit(1);
    assert_eq!(pg.write(&[dropped.event('u', None, Some(&after), at, t.ts_ms, true)]).await, vec![Outcome::Applied]);
    for table in [pg.table.clone(), v2.clone(), pg.logical.clone(), format!("{}_live", pg.logical)] {
        let columns = columns_of(&table).await;
        assert!(columns.contains(&"Seats".to_string()), "{table} still exists with its other columns: {columns:?}");
        assert!(!columns.contains(&"Note".to_string()), "{table} lost the dropped column: {columns:?}");
    }
    // The readers' views still select from version 1, with the later write.
    let seats: String = db
        .query_one(
            &format!("SELECT \"Seats\"::text FROM {} WHERE __id = '1'", quote_table(&format!("{}_live", pg.logical))),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seats, "2");
    // Later writes go on without the column.
    let at = t.commit(1);
    let mut third = row(1, 3, 300, json!(null));
    third.retain(|(n, _)| *n != "Note");
    assert_eq!(pg.write(&[dropped.event('u', None, Some(&third), at, t.ts_ms, true)]).await, vec![Outcome::Applied]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bigquery_on_drop_drop_removes_the_column_from_every_version_table() {
    let prefix = leak(unique("tcbqdd"));
    let old = fares(prefix, false);
    let mut dropped = old.clone();
    dropped.columns.retain(|c| c.name != "Note");
    let bq =
        Bq::named_with(&unique("tcdd"), unique("it_tcdd_"), &old.topic(), "{ table: fares }", "on_drop: drop\n").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    let first = bq.writes(&[old.event('c', None, Some(&row(1, 1, 100, json!("gone"))), at, t.ts_ms, true)]);
    assert_eq!(bq.write(&first).await, vec![Outcome::Applied]);
    // A second version with the same columns, as a rebuild makes.
    let table = &bq.model.tables[0];
    bq.sink.create_version(table, "fares_v2").await.unwrap();
    let to_v2: Vec<Write> = first.iter().map(|w| Write { target: "fares_v2".into(), doc: w.doc.clone() }).collect();
    let call = TargetCall { sink: &bq.sink, fields: &bq.fields, table, target: "fares_v2", progress: &[] };
    assert_eq!(call.write_isolating(&to_v2).await.unwrap(), vec![Outcome::Applied]);
    let has_note = |schema: &[(String, String)]| schema.iter().any(|(n, _)| n == "Note");
    assert!(has_note(&bq.schema("fares_v2").await), "version 2 has Note before the drop");
    let mut after = row(1, 2, 200, json!(null));
    after.retain(|(n, _)| *n != "Note");
    let at = t.commit(1);
    let later = dropped.event('u', None, Some(&after), at, t.ts_ms, true);
    assert_eq!(bq.write(&bq.writes(&[later])).await, vec![Outcome::Applied]);
    for v in ["fares", "fares_v2"] {
        let schema = bq.schema(v).await;
        assert!(!has_note(&schema) && schema.iter().any(|(n, _)| n == "Seats"), "{v}: {schema:?}");
    }
    let rows = bq.query(&format!("SELECT CAST(Seats AS STRING) FROM {}", bq.table("fares_live"))).await;
    assert_eq!(rows, vec![vec![json!("2")]], "the readers' view follows the table without the column");
    bq.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_field_elasticsearch_cannot_retype_is_rebuilt_by_the_running_service_while_events_keep_arriving() {
    // smallint → decimal(7,1) at the source: PostgreSQL widens its column to
    // numeric(7,1) in place (every smallint keeps its digits); an
    // Elasticsearch long field cannot take decimals, so under the default
    // on_type_change: rebuild the running service rebuilds the index from
    // the mirror and swaps it in, and every write meanwhile reaches it.
    let w = World::new("tcauto", 1).await;
    let table = format!("{}_trips", w.name);
    let alias = w.indexes[0].clone();
    let mut old = fares(w.db.trips.prefix, false);
    old.name = "Trips";
    let mut new = old.clone();
    new.columns[1] = Column::new("Seats", "bytes").decimal(7, 1);
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{table}' }}\n    elasticsearch: {{ index: {alias} }}\n",
        w.name,
        w.db.trips.topic()
    ));
    const N: i64 = 60;
    let mut t = Timeline::default();
    // id → seats in tenths
    let mut expect: BTreeMap<String, i64> = BTreeMap::new();
    let mut records = vec![];
    for id in 1..=N {
        let at = t.commit(1);
        records.push(old.event('c', None, Some(&row(id, id, 100, json!("a"))), at, t.ts_ms, true));
        expect.insert(id.to_string(), id * 10);
    }
    w.produce(&records).await;
    // The rebuild is throttled to 20 rows/s in pages of 10, so that copying
    // the 60 rows takes 2.5 s whatever the machine: rounds arrive meanwhile.
    let p = w.start_with(
        &w.group,
        &[
            ("PROJECTOR_VERSION_REFRESH_MS", "300"),
            ("PROJECTOR_REBUILD_MAX_ROWS_PER_SECOND", "20"),
            ("PROJECTOR_REBUILD_PAGE_ROWS", "10"),
        ],
    );
    for sink in ["postgres", "elasticsearch"] {
        w.wait_sink_caught_up(&w.group, sink, CATCH_UP).await;
    }

    // The ALTER, then rounds of updates in the new type until the swap (a
    // bounded number: parity needs the stream to pause now and then).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let (mut round, mut while_building) = (0, 0);
    loop {
        let versions = versions_of(&w, "elasticsearch", &alias).await;
        if versions.iter().any(|(v, _, s)| *v == 2 && *s == State::Current) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no swap within 240 s: {versions:?}\n{}",
            log_tail(&p.log_text(), 40)
        );
        if round == 20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        if versions.iter().any(|(v, _, s)| *v == 2 && *s == State::Building) {
            while_building += 1;
        }
        round += 1;
        let updates: Vec<Record> = (1..=N)
            .filter(|id| id % 3 == round % 3)
            .map(|id| {
                let tenths = id * 10 + round % 10;
                expect.insert(id.to_string(), tenths);
                let mut img = row(id, 0, 100, json!("b"));
                img[1].1 = json!(decimal_base64(i128::from(tenths)));
                let at = t.commit(1);
                new.event('u', None, Some(&img), at, t.ts_ms, true)
            })
            .collect();
        w.produce(&updates).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(while_building >= 2, "rounds of events arrived while v2 was built ({while_building} of {round})");
    for sink in ["postgres", "elasticsearch"] {
        w.wait_sink_caught_up(&w.group, sink, CATCH_UP).await;
    }
    use State::{Current, Previous};
    assert_eq!(
        versions_of(&w, "elasticsearch", &alias).await,
        vec![(1, format!("{alias}_v1"), Previous), (2, format!("{alias}_v2"), Current)]
    );
    assert_eq!(
        versions_of(&w, "postgres", &table).await,
        vec![(1, format!("{table}_v1"), Current)],
        "widened in place"
    );
    let mirrored: BTreeMap<String, i64> = common::pg()
        .await
        .query(&format!("SELECT __id, (\"Seats\" * 10)::bigint FROM {} ORDER BY 1", quote_table(&table)), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(mirrored, expect, "the mirror holds every new value exactly");
    refresh(&format!("{alias}_v2")).await;
    let docs: BTreeMap<String, i64> = w
        .docs(&alias)
        .await
        .into_iter()
        .map(|(id, d)| (id, (d["Seats"].as_f64().unwrap() * 10.0).round() as i64))
        .collect();
    assert_eq!(docs, expect, "readers see every trip at its newest state");
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        match p.ready().await {
            Some((200, _)) => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "/health/ready not 200 once swapped: {other:?}\n{}",
                log_tail(&p.log_text(), 30)
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = p.log_text();
    assert!(log.contains("on_type_change: rebuild: swapped"), "{}", log_tail(&log, 40));
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 0.0, "nothing was dead-lettered");
}

async fn versions_of(w: &World, sink: &str, logical: &str) -> Vec<(i32, String, State)> {
    catalog_versions(&pg_url(), &w.name, sink, logical).await
}
