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
                // The version table: xmin is the stored row's, which a view lacks.
                &format!(
                    "SELECT __id, xmin::text, __position, __deleted FROM {} ORDER BY 1",
                    quote_table(&format!("{table}_v1"))
                ),
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

/// SQL Server allows 128-character names; PostgreSQL keeps 63 bytes of an
/// identifier. Two long columns that share their first 63 bytes must land as
/// two columns, each added once, in a table whose name is as long.
#[tokio::test(flavor = "multi_thread")]
async fn long_table_and_column_names_land_and_are_added_once() {
    let w = World::new("pglong", 1).await;
    let table = format!("{}_{}", w.name, "t".repeat(99 - w.name.len()));
    assert_eq!(table.len(), 100);
    // Column names are `&'static str` in the fixture tables.
    let seat: &'static str = (format!("Seat{}", "x".repeat(92)) + "Nº1").leak();
    let other: &'static str = (format!("Seat{}", "x".repeat(92)) + "Nº2").leak();
    assert!(seat.len() > 63 && seat[..63] == other[..63]);
    let long = Table {
        prefix: w.db.trips.prefix,
        database: "vexere",
        schema: "dbo",
        name: "Trips",
        columns: vec![Column::new("TripId", "int32"), Column::new(seat, "string"), Column::new(other, "string")],
        key: vec!["TripId"],
    };
    w.set_model(&model(&w, &table, false));
    let mut t = Timeline::default();
    let at = t.commit(1);
    let img = |id: i64| vec![("TripId", json!(id)), (seat, json!(format!("{id}A"))), (other, json!(format!("{id}B")))];
    w.produce(&[long.event('c', None, Some(&img(1)), at, t.ts_ms, true)]).await;
    let p = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    // A second batch, with the columns already there, must add none.
    let at = t.commit(1);
    w.produce(&[long.event('c', None, Some(&img(2)), at, t.ts_ms, true)]).await;
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;

    let q = projector::sink::postgres::quote;
    let sql =
        format!("SELECT __id, {}, {} FROM {} ORDER BY 1", q(seat), q(other), quote_table(&format!("{table}_live")));
    let rows: Vec<(String, Option<String>, Option<String>)> =
        pg().await.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let want = |id: &str| (id.to_string(), Some(format!("{id}A")), Some(format!("{id}B")));
    assert_eq!(rows, vec![want("1"), want("2")]);
    let data_columns: i64 = pg()
        .await
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_\\_%'",
            &[&quote_table(&table)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(data_columns, 3, "TripId and the two long columns");
    let log = p.log_text();
    let alters = log.lines().filter(|l| l.contains("added columns")).count();
    assert_eq!(alters, 1, "columns are added by the first batch only:\n{}", log_tail(&log, 40));
}

/// Trips `ids` created with fare `1000 + id` cents.
fn creates(w: &World, t: &mut Timeline, ids: std::ops::RangeInclusive<i32>) -> Vec<projector::demo::sqlserver::Record> {
    ids.map(|id| {
        let at = t.commit(1);
        w.db.trips.event('c', None, Some(&trip(id, 1000 + i128::from(id), 1)), at, t.ts_ms, true)
    })
    .collect()
}

fn fares(ids: std::ops::RangeInclusive<i32>) -> BTreeMap<String, i64> {
    ids.map(|id| (id.to_string(), 1000 + i64::from(id))).collect()
}

/// A login role of this test's own (so revoking its privileges or making it
/// read-only touches nobody else), with what projector needs to start:
/// its tables in `public`, the migrations' history and `projector.progress`.
/// Returns the role and a connection string for it.
async fn own_role(w: &World) -> (String, String) {
    let role = format!("{}_role", w.name);
    let r = projector::sink::postgres::quote(&role);
    pg().await
        .batch_execute(&format!(
            "CREATE ROLE {r} LOGIN; GRANT CREATE ON SCHEMA public TO {r}; GRANT SELECT ON public.refinery_schema_history TO {r};
             GRANT USAGE ON SCHEMA projector TO {r}; GRANT SELECT, INSERT, UPDATE ON projector.progress TO {r};
             GRANT SELECT, INSERT, UPDATE ON projector.targets TO {r}; GRANT SELECT, INSERT, UPDATE, DELETE ON projector.members TO {r}"
        ))
        .await
        .unwrap();
    let url = pg_url().split_whitespace().filter(|kv| !kv.starts_with("user=")).collect::<Vec<_>>().join(" ");
    (role.clone(), format!("{url} user={role}"))
}

/// Drops a role of [`own_role`] with what it owns (its mirror table), once
/// projector has stopped.
async fn drop_role(role: &str) {
    let r = projector::sink::postgres::quote(role);
    pg().await.batch_execute(&format!("DROP OWNED BY {r}; DROP ROLE {r}")).await.unwrap();
}

/// Waits until /health/ready answers 503 naming the PostgreSQL sink down
/// for the error `sqlstate`, and checks nothing was dead-lettered meanwhile.
async fn wait_postgres_down(p: &Projector, sqlstate: &str) {
    wait_for(CATCH_UP, &format!("/health/ready 503 with postgres down ({sqlstate})"), || async {
        p.ready().await.is_some_and(|(status, body)| {
            status == 503
                && body["sinks"]["postgres"]["up"] == json!(false)
                && body["sinks"]["postgres"]["detail"].as_str().is_some_and(|d| d.contains(&format!("({sqlstate})")))
        })
    })
    .await;
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 0.0, "the sink being wrong is never the data");
}

/// A projector running as a role of [`own_role`], caught up on trips
/// 1..=10: where the privilege and read-only tests start.
struct OwnRoleRun {
    w: World,
    table: String,
    role: String,
    t: Timeline,
    p: Projector,
}

impl OwnRoleRun {
    async fn start(stem: &str) -> OwnRoleRun {
        let w = World::new(stem, 1).await;
        let table = format!("{}_trips", w.name);
        let (role, url) = own_role(&w).await;
        w.set_model(&model(&w, &table, false));
        let mut t = Timeline::default();
        w.produce(&creates(&w, &mut t, 1..=10)).await;
        let p = w.start_with(&w.group, &[("PROJECTOR_POSTGRES_URL", url.as_str())]);
        w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
        OwnRoleRun { w, table, role, t, p }
    }

    /// Produces trips 11..=20 and waits for the sink to be down for `sqlstate`.
    async fn write_more_until_down(&mut self, sqlstate: &str) {
        self.w.produce(&creates(&self.w, &mut self.t, 11..=20)).await;
        wait_postgres_down(&self.p, sqlstate).await;
    }

    /// Waits until caught up: every trip 1..=20 landed, none dead-lettered.
    async fn every_row_lands(&self) {
        self.w.wait_sink_caught_up(&self.w.group, "postgres", CATCH_UP).await;
        assert_eq!(live_fares(&self.table).await, fares(1..=20));
        assert_eq!(self.p.counter("projector_dead_letters_total", &[]).await, 0.0);
    }

    async fn end(self) {
        drop(self.p);
        drop_role(&self.role).await;
    }
}

/// Issue 7 item 3.2: a mirror table dropped behind projector's back is the
/// sink being wrong, not the data: it is re-created and every row lands.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_mirror_table_is_re_created_and_nothing_is_dead_lettered() {
    let w = World::new("pgdrop", 1).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&model(&w, &table, false));
    let mut t = Timeline::default();
    w.produce(&creates(&w, &mut t, 1..=10)).await;
    let p = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    // The version table readers' views select from.
    pg().await.batch_execute(&format!("DROP TABLE {} CASCADE", quote_table(&format!("{table}_v1")))).await.unwrap();
    w.produce(&creates(&w, &mut t, 11..=20)).await;
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    assert_eq!(live_fares(&table).await, fares(11..=20), "the re-created table holds every row written after the drop");
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 0.0);
}

/// Issue 7 item 3.2: a dropped mirror column is added again.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_mirror_column_is_added_again_and_nothing_is_dead_lettered() {
    let w = World::new("pgdropcol", 1).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&model(&w, &table, false));
    let mut t = Timeline::default();
    w.produce(&creates(&w, &mut t, 1..=10)).await;
    let p = w.start(&w.group);
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    pg().await
        .batch_execute(&format!("ALTER TABLE {} DROP COLUMN \"Fare\" CASCADE", quote_table(&format!("{table}_v1"))))
        .await
        .unwrap();
    w.produce(&creates(&w, &mut t, 11..=20)).await;
    w.wait_sink_caught_up(&w.group, "postgres", CATCH_UP).await;
    // Rows written before the drop lost their fares with the column.
    let sql = format!(
        "SELECT __id, (\"Fare\" * 100)::bigint FROM {} WHERE \"Fare\" IS NOT NULL",
        quote_table(&format!("{table}_live"))
    );
    let landed: BTreeMap<String, i64> =
        pg().await.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(landed, fares(11..=20), "every row written after the drop has its fare");
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 0.0);
}

/// Issue 7 item 3.2: a missing privilege is retried with the sink reported
/// down (never dead-lettered); granted back, every row lands.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_privilege_is_retried_with_the_sink_down_until_granted_back() {
    let mut run = OwnRoleRun::start("pgrevoke").await;
    let (t_q, r_q) = (quote_table(&format!("{}_v1", run.table)), projector::sink::postgres::quote(&run.role));
    pg().await.batch_execute(&format!("REVOKE INSERT ON {t_q} FROM {r_q}")).await.unwrap();
    run.write_more_until_down("42501").await;
    pg().await.batch_execute(&format!("GRANT INSERT ON {t_q} TO {r_q}")).await.unwrap();
    run.every_row_lands().await;
    wait_for(CATCH_UP, "/health/ready 200 again", || async { run.p.ready().await.is_some_and(|(s, _)| s == 200) })
        .await;
    run.end().await;
}

/// Issue 7 item 3.2: a read-only transaction (a database switched read-only,
/// a failover to a replica) is the sink unavailable: retried, never
/// dead-lettered; writable again, every row lands.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_database_is_retried_with_the_sink_down_until_writable() {
    let mut run = OwnRoleRun::start("pgreadonly").await;
    let r_q = projector::sink::postgres::quote(&run.role);
    let db = pg().await;
    // The setting applies to new sessions: end projector's so it reconnects read-only.
    db.batch_execute(&format!("ALTER ROLE {r_q} SET default_transaction_read_only = on")).await.unwrap();
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", &[&run.role])
        .await
        .unwrap();
    run.write_more_until_down("25006").await;
    db.batch_execute(&format!("ALTER ROLE {r_q} RESET default_transaction_read_only")).await.unwrap();
    run.every_row_lands().await;
    run.end().await;
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
