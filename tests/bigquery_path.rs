//! The BigQuery sink against the local emulator (`scripts/stack up`,
//! http://127.0.0.1:9050, project `projector-local`), driven in-process:
//! Debezium-shaped fixtures from `projector::demo` are decoded and mapped
//! exactly as the pipeline does, then handed to `prepare` and `write`.
//! Covers typed tables, exact NUMERIC and DATETIME values, soft deletes
//! behind the `_live` view, replays and late stale events (no change, no
//! resurrection), a retried batch whose job ids already exist (not applied
//! twice), a bad row rejected alone, schema evolution, and hostile names.
//! Each test uses its own dataset and drops it at the end.
//!
//! search engine: none (scripts/test leaves this binary out of the
//! OpenSearch round)

use projector::decode::value::timestamp_text;
use projector::demo::bus_booking::{BusBooking, Timeline, trip};
use projector::demo::sqlserver::{Column, Image, Record, Table, decimal_base64};
use projector::sink::Outcome;
use serde_json::{Value as Json, json};

mod common;
use common::bigquery::{Bq, PROJECT, base_url};
use common::{get_json, http, unique};

fn prefix(stem: &str) -> &'static str {
    Box::leak(unique(stem).into_boxed_str())
}

fn s(v: &str) -> Json {
    Json::String(v.into())
}

/// Creates trips 1..=3, raises trip 2's fare, deletes trip 3.
fn story(db: &BusBooking, t: &mut Timeline) -> Vec<Record> {
    let mut out = Vec::new();
    for id in 1..=3 {
        let at = t.commit(1);
        out.push(db.trips.event('c', None, Some(&trip(id, 999_999_999_999, 1)), at, t.ts_ms, true));
    }
    let at = t.commit(2);
    out.push(db.trips.event('u', Some(&trip(2, 999_999_999_999, 1)), Some(&trip(2, 123_456, 2)), at, t.ts_ms, true));
    let at = t.commit(1);
    out.push(db.trips.event('d', Some(&trip(3, 999_999_999_999, 1)), None, at, t.ts_ms, true));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_land_typed_with_exact_values_and_deletes_stay_as_tombstones() {
    let db = BusBooking::new(prefix("bqcrud"));
    let bq = Bq::new("crud", &db.trips.topic(), "{ table: trips }").await;
    let mut t = Timeline::default();
    let records = story(&db, &mut t);
    // Three batches, as the pipeline collapses one write per key per batch.
    assert_eq!(bq.write(&bq.writes(&records[..3])).await, vec![Outcome::Applied; 3]);
    assert_eq!(bq.write(&bq.writes(&records[3..])).await, vec![Outcome::Applied; 2]);

    let types: std::collections::BTreeMap<_, _> = bq.schema("trips").await.into_iter().collect();
    assert_eq!(types["__id"], "STRING");
    assert_eq!(types["__deleted"], "BOOLEAN");
    assert_eq!(types["__source_ts"], "TIMESTAMP");
    assert_eq!(types["Fare"], "NUMERIC");
    assert_eq!(types["DepartAt"], "DATETIME");
    assert_eq!(types["SeatCount"], "INTEGER");
    assert_eq!(types["Route"], "STRING");

    let live = bq.query(&format!("SELECT __id, CAST(Fare AS STRING), CAST(DepartAt AS STRING), Route, Status, __source_ts FROM {} ORDER BY __id", bq.table("trips_live"))).await;
    let depart = |id: i64| timestamp_text(1_782_900_000_000_000_000 + id as i128 * 3_600_000_000_000).replace('T', " ");
    assert_eq!(live.len(), 2, "{live:?}");
    assert_eq!(live[0][..5], [s("1"), s("9999999999.99"), s(&depart(1)), s("Ha Noi → Sa Pa"), s("1")]);
    assert_eq!(live[1][..5], [s("2"), s("1234.56"), s(&depart(2)), s("Da Nang → Hue"), s("2")]);
    assert_eq!(live[0][5], s(&((1_782_000_000_000_i64 + 7) * 1000).to_string()), "__source_ts is the commit time");
    // The deleted trip stays as a tombstone with the values it had.
    let gone = bq
        .query(&format!("SELECT __deleted, TripId, CAST(Fare AS STRING) FROM {} WHERE __id = '3'", bq.table("trips")))
        .await;
    assert_eq!(gone, vec![vec![s("true"), s("3"), s("9999999999.99")]]);
    bq.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_and_late_stale_writes_change_nothing() {
    let db = BusBooking::new(prefix("bqstale"));
    let bq = Bq::new("stale", &db.trips.topic(), "{ table: trips, cluster_by: [TripId] }").await;
    let mut t = Timeline::default();
    let records = story(&db, &mut t);
    bq.write(&bq.writes(&records[..3])).await;
    bq.write(&bq.writes(&records[3..])).await;
    let snap_sql = format!(
        "SELECT __id, __position, __deleted, __written_at, CAST(Fare AS STRING), Status FROM {} ORDER BY __id",
        bq.table("trips")
    );
    let snapshot = || bq.query(&snap_sql);
    let before = snapshot().await;

    // The same writes again (a replay from offset zero): all stale, nothing rewritten.
    assert_eq!(bq.write(&bq.writes(&records[..3])).await, vec![Outcome::Stale; 3]);
    assert_eq!(bq.write(&bq.writes(&records[3..])).await, vec![Outcome::Stale; 2]);
    assert_eq!(snapshot().await, before, "not one row rewritten (same __written_at)");

    // Late, older events: trip 3's create (deleted since) and trip 2's first image.
    let late = bq.writes(&[records[2].clone(), records[1].clone()]);
    assert_eq!(bq.write(&late).await, vec![Outcome::Stale, Outcome::Stale]);
    assert_eq!(snapshot().await, before, "no regression");
    let live: Vec<Json> = bq
        .query(&format!("SELECT __id FROM {} ORDER BY __id", bq.table("trips_live")))
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(live, vec![s("1"), s("2")], "no resurrection");

    // A newer write still lands in the same batch as stale ones.
    let at = t.commit(2);
    let newer = db.trips.event('u', None, Some(&trip(1, 42, 3)), at, t.ts_ms, true);
    let mixed = bq.writes(&[newer, records[3].clone()]);
    assert_eq!(bq.write(&mixed).await, vec![Outcome::Applied, Outcome::Stale]);
    let one = bq
        .query(&format!("SELECT CAST(Fare AS STRING), Status FROM {} WHERE __id = '1'", bq.table("trips_live")))
        .await;
    assert_eq!(one, vec![vec![s("0.42"), s("3")]]);
    bq.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_batch_whose_jobs_exist_is_not_applied_twice() {
    let db = BusBooking::new(prefix("bqretry"));
    let bq = Bq::new("retry", &db.trips.topic(), "{ table: trips }").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    let batch = bq.writes(&[db.trips.event('c', None, Some(&trip(1, 500, 1)), at, t.ts_ms, true)]);
    assert_eq!(bq.write(&batch).await, vec![Outcome::Applied]);
    // Make the stored row look as if the MERGE had not happened: a retry
    // would overwrite it if it ran the MERGE again.
    bq.query(&format!("UPDATE {} SET __position = '0', Fare = 1 WHERE __id = '1'", bq.table("trips"))).await;
    // The same batch again (a retry after a lost response): same job ids,
    // 409 duplicate, the finished jobs count as done; nothing is re-applied.
    assert_eq!(bq.write(&batch).await, vec![Outcome::Stale]);
    let row = bq.query(&format!("SELECT __position, Fare = 1 FROM {}", bq.table("trips"))).await;
    assert_eq!(row, vec![vec![s("0"), s("true")]], "the MERGE ran once");
    // No staging table is left behind.
    let tables =
        get_json(&format!("{}/bigquery/v2/projects/{PROJECT}/datasets/{}/tables", base_url(), bq.dataset)).await;
    let names: Vec<&str> =
        tables["tables"].as_array().unwrap().iter().map(|t| t["tableReference"]["tableId"].as_str().unwrap()).collect();
    assert!(names.iter().all(|n| !n.starts_with("_projector_stage_")), "{names:?}");
    bq.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_value_rejects_only_its_row() {
    let db = BusBooking::new(prefix("bqbad"));
    let bq = Bq::new("bad", &db.trips.topic(), "{ table: trips, types: { Note: INT64 } }").await;
    let mut t = Timeline::default();
    let mut records = Vec::new();
    for id in 1..=3 {
        let mut img = trip(id, 100, 1);
        if id == 2 {
            img.retain(|(n, _)| *n != "Note");
            img.push(("Note", json!("not a number")));
        }
        let at = t.commit(1);
        records.push(db.trips.event('c', None, Some(&img), at, t.ts_ms, true));
    }
    let out = bq.write(&bq.writes(&records)).await;
    assert_eq!(out[0], Outcome::Applied);
    assert_eq!(out[2], Outcome::Applied);
    let Outcome::Failed(e) = &out[1] else { panic!("row 2 should be rejected: {out:?}") };
    assert!(e.kind.is_data(), "{e}");
    let why = &e.message;
    assert!(why.contains("trips") && why.contains("\"2\""), "{why}");
    let ids: Vec<Json> = bq
        .query(&format!("SELECT __id FROM {} ORDER BY __id", bq.table("trips")))
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(ids, vec![s("1"), s("3")]);
    bq.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_round_trip_and_new_fields_add_columns() {
    let p = prefix("bqquote");
    let cols = |extra: bool| {
        let mut c = vec![
            Column::new("TripId", "int32"),
            Column::new("Seat No's-#1 <x>&y=z+|:", "string"),
            Column::new("Giá vé", "bytes").decimal(12, 2),
            Column::new("Ảnh", "bytes"),
            Column::new("Ngày", "int32").semantic("io.debezium.time.Date"),
            Column::new("Lúc", "string").semantic("io.debezium.time.ZonedTimestamp"),
        ];
        if extra {
            c.push(Column::new("Ghi chú", "string").optional());
        }
        c
    };
    let v1 = Table {
        prefix: p,
        database: "vexere",
        schema: "dbo",
        name: "Trips",
        columns: cols(false),
        key: vec!["TripId"],
    };
    let v2 = Table { columns: cols(true), ..v1.clone() };
    let table = "Chuyến_đi-2026";
    let bq = Bq::new("quote", &v1.topic(), &format!("{{ table: '{table}' }}")).await;
    let mut t = Timeline::default();
    let img: Image = vec![
        ("TripId", json!(1)),
        ("Seat No's-#1 <x>&y=z+|:", json!("12A ' \" ` \\")),
        ("Giá vé", json!(decimal_base64(-1234))),
        ("Ảnh", json!("AAH/")),
        ("Ngày", json!(20_000)),
        ("Lúc", json!("2026-06-01T10:00:00.5+07:00")),
    ];
    let at = t.commit(1);
    assert_eq!(
        bq.write(&bq.writes(&[v1.event('c', None, Some(&img), at, t.ts_ms, true)])).await,
        vec![Outcome::Applied]
    );
    let row = bq
        .query(&format!("SELECT `Seat No's-#1 <x>&y=z+|:`, CAST(`Giá vé` AS STRING), TO_BASE64(`Ảnh`), CAST(`Ngày` AS STRING), `Lúc` FROM {}", bq.table(&format!("{table}_live"))))
        .await;
    assert_eq!(row, vec![vec![s("12A ' \" ` \\"), s("-12.34"), s("AAH/"), s("2024-10-04"), s("1780282800500000")]]);

    // A new source column becomes a new table column.
    let mut img2 = img.clone();
    img2.push(("Ghi chú", json!("xin chào")));
    let at = t.commit(2);
    assert_eq!(
        bq.write(&bq.writes(&[v2.event('u', None, Some(&img2), at, t.ts_ms, true)])).await,
        vec![Outcome::Applied]
    );
    let schema = bq.schema(table).await;
    assert!(schema.contains(&("Ghi chú".into(), "STRING".into())), "{schema:?}");
    assert!(schema.contains(&("Lúc".into(), "TIMESTAMP".into())), "{schema:?}");
    assert!(schema.contains(&("Ngày".into(), "DATE".into())), "{schema:?}");
    let note = bq.query(&format!("SELECT `Ghi chú` FROM {}", bq.table(&format!("{table}_live")))).await;
    assert_eq!(note, vec![vec![s("xin chào")]]);
    bq.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partitioned_clustered_table_is_created_with_the_first_batch() {
    let db = BusBooking::new(prefix("bqpart"));
    let bq =
        Bq::new("part", &db.trips.topic(), "{ table: trips, partition_by: DepartAt, cluster_by: [Route, TripId] }")
            .await;
    let meta = || async {
        http()
            .get(format!("{}/bigquery/v2/projects/{PROJECT}/datasets/{}/tables/trips", base_url(), bq.dataset))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(meta().await.status(), 404, "DepartAt has no type before the first batch");
    let mut t = Timeline::default();
    let at = t.commit(1);
    assert_eq!(
        bq.write(&bq.writes(&[db.trips.event('c', None, Some(&trip(1, 100, 1)), at, t.ts_ms, true)])).await,
        vec![Outcome::Applied]
    );
    let table: Json = meta().await.json().await.unwrap();
    assert_eq!(table["timePartitioning"]["field"], "DepartAt", "{table}");
    assert_eq!(table["clustering"]["fields"], json!(["Route", "TripId"]), "{table}");
    assert_eq!(table["tableConstraints"]["primaryKey"]["columns"], json!(["__id"]), "{table}");
    bq.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_name_bigquery_cannot_hold_is_rejected_with_a_hint() {
    let p = prefix("bqbadname");
    let table = Table {
        prefix: p,
        database: "vexere",
        schema: "dbo",
        name: "Trips",
        columns: vec![Column::new("TripId", "int32"), Column::new("Seat \"No\"; --", "string")],
        key: vec!["TripId"],
    };
    let bq = Bq::new("badname", &table.topic(), "{ table: trips }").await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    let img: Image = vec![("TripId", json!(1)), ("Seat \"No\"; --", json!("12A"))];
    let out = bq.write(&bq.writes(&[table.event('c', None, Some(&img), at, t.ts_ms, true)])).await;
    let [Outcome::Failed(e)] = out.as_slice() else { panic!("{out:?}") };
    assert!(e.kind.is_data(), "{e}");
    let why = &e.message;
    assert!(why.contains("Seat \"No\"; --") && why.contains("bigquery.exclude"), "{why}");
    bq.drop().await;
}
