//! The staging PostgreSQL sink against the real server: typed mirror tables,
//! the position guard (no stale overwrite, no resurrection), soft deletes
//! behind a `_live` view, progress recorded with the rows, restarts, a second
//! instance and quoting of hostile names. (Its outage test is in
//! `sink_outages.rs`.)

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use projector::demo::bus_booking::{Timeline, booking, trip};
use projector::demo::sqlserver::{Column, Table};
use serde_json::json;

const CATCH_UP: Duration = Duration::from_secs(120);

fn model(w: &World, table: &str, with_es: bool) -> String {
    let es = if with_es { format!("\n    elasticsearch: {{ index: {} }}", w.indexes[0]) } else { String::new() };
    format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: '{}' }}{es}\n",
        w.name,
        w.db.trips.topic(),
        table.replace('\'', "''")
    )
}

/// Live rows: id → fare in cents.
async fn live_fares(table: &str) -> BTreeMap<String, i64> {
    let sql =
        format!("SELECT __id, (\"Fare\" * 100)::bigint FROM {} ORDER BY 1", quote_table(&format!("{table}_live")));
    pg().await.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect()
}

fn quote_table(t: &str) -> String {
    projector::sink::postgres::quote_table(t)
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_mirror_with_faithful_types_and_deletes_stay_as_tombstones() {
    let w = World::new("pgcrud", 2).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&model(&w, &table, false));
    let mut t = Timeline::default();
    let (records, expect) = churn(&w, &mut t, 10, 2);
    w.produce(&records).await;
    let _p = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    assert_eq!(live_fares(&table).await, expect);

    let db = pg().await;
    let types: BTreeMap<String, String> = db
        .query("SELECT column_name::text, data_type::text || coalesce('(' || numeric_precision || ',' || numeric_scale || ')', '') FROM information_schema.columns WHERE table_name = $1", &[&table])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(types["Fare"], "numeric(12,2)");
    assert_eq!(types["DepartAt"], "timestamp without time zone");
    assert_eq!(types["SeatCount"], "smallint(16,0)");
    assert_eq!(types["TripId"], "integer(32,0)");
    // Deleted rows are kept as flagged tombstones with their key (and the
    // values they had, when the row was written before its delete).
    let gone = db
        .query(&format!("SELECT __id, __deleted, \"TripId\" FROM {} WHERE __id = '5'", quote_table(&table)), &[])
        .await
        .unwrap();
    assert_eq!(gone.len(), 1);
    assert!(gone[0].get::<_, bool>(1));
    assert_eq!(gone[0].get::<_, i32>(2), 5);
    // Progress was recorded with the rows.
    let progress: i64 = db
        .query_one("SELECT sum(next_offset)::bigint FROM projector.progress WHERE read_model = $1", &[&w.name])
        .await
        .unwrap()
        .get(0);
    assert_eq!(progress, records.len() as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_from_zero_and_late_stale_events_change_nothing() {
    let w = World::new("pgstale", 2).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&model(&w, &table, false));
    let mut t = Timeline::default();
    let (records, expect) = churn(&w, &mut t, 20, 3);
    w.produce(&records).await;
    {
        let _p = w.start(&w.group);
        w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    }
    let snapshot = |db: tokio_postgres::Client| {
        let table = table.clone();
        async move {
            db.query(
                &format!("SELECT __id, xmin::text, __position, __deleted FROM {} ORDER BY 1", quote_table(&table)),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2), r.get::<_, bool>(3)))
            .collect::<Vec<_>>()
        }
    };
    let before = snapshot(pg().await).await;
    // Replay everything with a new group, then append old events at the end.
    let replay = format!("{}-replay", w.group);
    let p = w.start(&replay);
    w.produce(&records[..40]).await;
    w.wait_sink_caught_up(&replay, "postgres", CATCH_UP).await;
    assert_eq!(snapshot(pg().await).await, before, "not one row rewritten (same xmin)");
    assert_eq!(live_fares(&table).await, expect, "no regression, no resurrection");
    assert_eq!(p.counter("projector_events_total", &["sink=\"postgres\"", "outcome=\"applied\""]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_then_another_instance_loses_nothing() {
    let w = World::new("pgkill", 4).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&model(&w, &table, false));
    let (records, expect) = churn(&w, &mut Timeline::default(), 200, 15);
    w.produce(&records).await;
    let mut a = w.start_with(&w.group, &[("PROJECTOR_BATCH_RECORDS", "100")]);
    wait_for(CATCH_UP, "writes before the kill", || async {
        a.counter("projector_events_total", &["sink=\"postgres\"", "outcome=\"applied\""]).await >= 100.0
    })
    .await;
    a.kill9();
    // Whatever the killed instance wrote but did not commit is redone, and found stale.
    let _b = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    assert_eq!(live_fares(&table).await, expect);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_table_and_column_names_round_trip() {
    let w = World::new("pgquote", 1).await;
    let table = format!("{}_we\"ird; drop table x", w.name);
    let weird = Table {
        prefix: w.db.trips.prefix,
        database: "vexere",
        schema: "dbo",
        name: "Trips",
        columns: vec![
            Column::new("TripId", "int32"),
            Column::new("Seat \"No\"; --", "string"),
            Column::new("Fare", "bytes").decimal(12, 2),
        ],
        key: vec!["TripId"],
    };
    w.set_model(&model(&w, &table, false));
    let mut t = Timeline::default();
    let at = t.commit(1);
    let img = vec![
        ("TripId", json!(1)),
        ("Seat \"No\"; --", json!("12A")),
        ("Fare", json!(projector::demo::sqlserver::decimal_base64(1234))),
    ];
    w.produce(&[weird.event('c', None, Some(&img), at, t.ts_ms, true)]).await;
    let _p = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    let row = pg()
        .await
        .query_one(&format!("SELECT \"Seat \"\"No\"\"; --\" FROM {}", quote_table(&table)), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "12A");
}

/// Issue 7 item 3.1: a batch that spans two PostgreSQL tables is written
/// table by table, each in its own transaction, so clean input never falls
/// into the split-and-isolate path (it used to: a fixed temp-table name
/// collided with itself, 42P07, and that was taken for bad data).
#[tokio::test(flavor = "multi_thread")]
async fn batches_spanning_two_tables_never_take_the_row_by_row_path() {
    let w = World::new("pgtwo", 1).await;
    let (trips, bookings) = (format!("{}_trips", w.name), format!("{}_bookings", w.name));
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    postgres: {{ table: {trips} }}\n  - topic: {}\n    postgres: {{ table: {bookings} }}\n",
        w.name,
        w.db.trips.topic(),
        w.db.bookings.topic(),
    ));
    let mut t = Timeline::default();
    let mut records = Vec::new();
    // Interleaved, so every batch holds writes to both tables.
    for id in 1..=30 {
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 10_000 + i128::from(id), 1)), at, t.ts_ms, true));
        let at = t.commit(1);
        let b = booking(i64::from(id), id, 1, "confirmed");
        records.push(w.db.bookings.event('c', None, Some(&b), at, t.ts_ms, true));
    }
    w.produce(&records).await;
    let p = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    let db = pg().await;
    for table in [&trips, &bookings] {
        let n: i64 = db
            .query_one(&format!("SELECT count(*) FROM {}", quote_table(&format!("{table}_live"))), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 30, "{table}: every row written");
    }
    assert_eq!(p.counter("projector_events_total", &["sink=\"postgres\"", "outcome=\"applied\""]).await, 60.0);
    assert_eq!(p.counter("projector_sink_isolations_total", &[]).await, 0.0);
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 0.0);
    let log = p.log_text();
    assert!(
        !log.contains("row by row") && !log.contains("isolate the bad rows"),
        "clean input took the isolation path: {}",
        log_tail(&log, 20)
    );
}

/// Fares (cents) and notes of a table's live rows, by id.
async fn live_notes(table: &str) -> BTreeMap<String, (i64, Option<String>)> {
    let sql = format!(
        "SELECT __id, (\"Fare\" * 100)::bigint, \"Note\" FROM {} ORDER BY 1",
        quote_table(&format!("{table}_live"))
    );
    pg().await.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lob_left_out_of_an_update_keeps_the_value_set_earlier_in_the_same_batch() {
    let w = World::new("pglobbatch", 1).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&model(&w, &table, false));
    let mut t = Timeline::default();
    let mut created = trip(1, 1000, 1);
    created[7].1 = json!("a long nvarchar(max) note");
    let at = t.commit(1);
    let mut records = vec![w.db.trips.event('c', None, Some(&created), at, t.ts_ms, true)];
    let mut updated = trip(1, 1250, 1);
    updated[7].1 = json!("__debezium_unavailable_value");
    let at = t.commit(2);
    records.push(w.db.trips.event('u', Some(&created), Some(&updated), at, t.ts_ms, true));
    w.produce(&records).await;
    // A long linger puts both events in one batch, collapsed to one write.
    let _p = w.start_with(&w.group, &[("PROJECTOR_LINGER_MS", "3000")]);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    let rows = live_notes(&table).await;
    assert_eq!(rows["1"], (1250, Some("a long nvarchar(max) note".to_string())), "the update applied, the LOB kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_update_leaves_the_good_create_before_it_in_the_batch_applied() {
    let w = World::new("pgrefnew", 1).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&model(&w, &table, false));
    let mut t = Timeline::default();
    let created = trip(1, 1000, 1);
    let at = t.commit(1);
    let mut records = vec![w.db.trips.event('c', None, Some(&created), at, t.ts_ms, true)];
    // 10^13 does not fit Fare's numeric(12,2): PostgreSQL refuses the row.
    let too_big = trip(1, 1_000_000_000_000_000, 1);
    let at = t.commit(2);
    records.push(w.db.trips.event('u', Some(&created), Some(&too_big), at, t.ts_ms, true));
    w.produce(&records).await;
    let p = w.start_with(&w.group, &[("PROJECTOR_LINGER_MS", "3000")]);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    assert_eq!(live_fares(&table).await, BTreeMap::from([("1".to_string(), 1000)]), "the create's row exists");
    let letters = dead_letters(&format!("projector.{}.dlq", w.name), 1).await;
    assert_eq!(letters.keys().collect::<Vec<_>>(), vec![&(w.db.trips.topic(), 1)], "the update is dead-lettered");
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 1.0);
}
