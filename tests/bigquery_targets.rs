//! The BigQuery sink's write targets, in-process against the local emulator:
//! a batch's job ids belong to one incarnation of one table in one dataset
//! (a table dropped and re-created behind the sink's back, or the same read
//! model name in two datasets, still gets its rows), and two sink instances
//! racing on the same new ids (two projector processes during a rebalance)
//! never leave two rows with one `__id`.
//!
//! search engine: none (scripts/test leaves this binary out of the
//! OpenSearch round)

mod common;

use std::collections::BTreeMap;

use common::bigquery::Bq;
use common::unique;
use projector::demo::bus_booking::{BusBooking, Timeline, trip};
use projector::demo::sqlserver::Record;
use projector::pipeline::fields::KnownFields;
use projector::pipeline::isolate::TargetCall;
use projector::sink::{ErrorKind, Outcome, Sink, Write};
use serde_json::Value as Json;

fn prefix(stem: &str) -> &'static str {
    Box::leak(unique(stem).into_boxed_str())
}

/// Creates trips `1..=n`, fare `100_000 + id` cents.
fn creates(db: &BusBooking, t: &mut Timeline, n: i32) -> Vec<Record> {
    (1..=n)
        .map(|id| {
            let at = t.commit(1);
            db.trips.event('c', None, Some(&trip(id, 100_000 + i128::from(id), 1)), at, t.ts_ms, true)
        })
        .collect()
}

/// Writes a batch as the pipeline does: a failed batch is retried whole (a
/// table dropped behind the sink's back fails the first attempt, which
/// forgets the table so that the next one re-creates it).
async fn write_retried(bq: &Bq, writes: &[Write]) -> Vec<Outcome> {
    let table = &bq.model.tables[0];
    let target = bq.sink.target(table).unwrap();
    let call = TargetCall { sink: &bq.sink, fields: &bq.fields, table, target, progress: &[] };
    let mut errors = Vec::new();
    for _ in 0..3 {
        match call.write_isolating(writes).await {
            Ok(outcomes) => return outcomes,
            Err(e) => {
                // As the pipeline does: a missing target's fields are forgotten.
                if e.kind == ErrorKind::NotFound {
                    bq.fields.forget(target);
                }
                errors.push(e.message)
            }
        }
    }
    panic!("the batch failed three times: {errors:?}");
}

/// Live rows: id → fare in cents.
async fn fares(bq: &Bq) -> BTreeMap<String, i64> {
    let sql = format!("SELECT __id, CAST(Fare * 100 AS INT64) FROM {} ORDER BY __id", bq.table("trips_live"));
    bq.query(&sql).await.into_iter().map(|r| (text(&r[0]), text(&r[1]).parse().unwrap())).collect()
}

fn text(v: &Json) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Ids stored more than once in the table itself (not the view).
async fn duplicated_ids(bq: &Bq) -> Vec<String> {
    let sql =
        format!("SELECT __id, COUNT(*) FROM {} GROUP BY __id HAVING COUNT(*) > 1 ORDER BY __id", bq.table("trips"));
    bq.query(&sql).await.iter().map(|r| text(&r[0])).collect()
}

fn expected(ids: &[(i32, i64)]) -> BTreeMap<String, i64> {
    ids.iter().map(|(id, cents)| (id.to_string(), *cents)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_written_again_after_the_table_was_recreated_lands_in_the_new_table() {
    let db = BusBooking::new(prefix("bqreinc"));
    let bq = Bq::new("reinc", &db.trips.topic(), "{ table: trips }").await;
    let writes = bq.writes(&creates(&db, &mut Timeline::default(), 3));
    assert_eq!(bq.write(&writes).await, vec![Outcome::Applied; 3]);
    let all = expected(&[(1, 100_001), (2, 100_002), (3, 100_003)]);
    assert_eq!(fares(&bq).await, all);

    // A rebuild (or an operator) drops the table and its view; the same
    // batch comes again (the group was rewound).
    bq.drop_table("trips_live").await;
    bq.drop_table("trips").await;
    assert_eq!(write_retried(&bq, &writes).await, vec![Outcome::Applied; 3]);
    assert_eq!(fares(&bq).await, all, "the re-created table holds the batch");
    // A plain retry of that batch against this incarnation finds its jobs.
    assert_eq!(bq.write(&writes).await, vec![Outcome::Stale; 3]);
    assert_eq!(fares(&bq).await, all);
    bq.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_recreated_by_another_instance_is_noticed_before_the_batch_is_called_done() {
    let db = BusBooking::new(prefix("bqreinc2"));
    let bq = Bq::new("reinc2", &db.trips.topic(), "{ table: trips }").await;
    let writes = bq.writes(&creates(&db, &mut Timeline::default(), 3));
    assert_eq!(bq.write(&writes).await, vec![Outcome::Applied; 3]);
    bq.drop_table("trips_live").await;
    bq.drop_table("trips").await;
    // Another instance starting up creates the table again, so this sink
    // never sees it missing: its cached columns and incarnation are stale.
    let _other = bq.another_sink().await;
    assert_eq!(write_retried(&bq, &writes).await, vec![Outcome::Applied; 3]);
    assert_eq!(fares(&bq).await, expected(&[(1, 100_001), (2, 100_002), (3, 100_003)]));
    bq.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_read_model_name_in_two_datasets_writes_both() {
    let db = BusBooking::new(prefix("bqtwods"));
    let name = unique("it_shared_");
    let a = Bq::named(&name, unique("it_dsa_"), &db.trips.topic(), "{ table: trips }").await;
    let b = Bq::named(&name, unique("it_dsb_"), &db.trips.topic(), "{ table: trips }").await;
    let writes = a.writes(&creates(&db, &mut Timeline::default(), 2));
    assert_eq!(a.write(&writes).await, vec![Outcome::Applied; 2]);
    assert_eq!(b.write(&writes).await, vec![Outcome::Applied; 2], "the second dataset's batch is not skipped");
    let both = expected(&[(1, 100_001), (2, 100_002)]);
    assert_eq!(fares(&a).await, both);
    assert_eq!(fares(&b).await, both);
    a.drop().await;
    b.drop().await;
}

/// During a rebalance two instances write the same new ids. On BigQuery both
/// MERGEs read a snapshot without those ids, so both INSERT and both commit
/// (INSERT-only DML does not conflict). The emulator runs one DML statement
/// at a time, so the test commits the racing instance's INSERT itself, with
/// the rows that instance's MERGE inserted: trip 1 as an older write, trips
/// 2 and 3 as the same write. The instance that committed second then
/// verifies its batch (and writes a newer trip 3), which must leave one row
/// per id, the newest.
#[tokio::test(flavor = "multi_thread")]
async fn two_writers_racing_on_new_ids_leave_one_row_per_id() {
    let db = BusBooking::new(prefix("bqrace"));
    let bq = Bq::new("race", &db.trips.topic(), "{ table: trips }").await;
    let second = bq.another_sink().await;
    let mut t = Timeline::default();
    let records = creates(&db, &mut t, 3);
    let writes = bq.writes(&records);
    assert_eq!(bq.write(&writes).await, vec![Outcome::Applied; 3]);

    let table = bq.table("trips");
    bq.query(&format!(
        "INSERT INTO {table} (__id, __position, __deleted, TripId, Fare) VALUES ('1', '0', FALSE, 1, 1.00)"
    ))
    .await;
    bq.query(&format!("INSERT INTO {table} SELECT * FROM {table} WHERE __id IN ('2', '3')")).await;
    assert_eq!(duplicated_ids(&bq).await, ["1", "2", "3"], "the race left two rows per id");

    let at = t.commit(2);
    let newer = db.trips.event('u', Some(&trip(3, 100_003, 1)), Some(&trip(3, 123_456, 2)), at, t.ts_ms, true);
    let mut again = bq.writes(&records[..2]);
    again.extend(bq.writes(&[newer]));
    let outcomes = bq.write_with(&second, &KnownFields::default(), &again).await;
    assert_eq!(outcomes, [Outcome::Stale, Outcome::Stale, Outcome::Applied]);
    assert_eq!(duplicated_ids(&bq).await, Vec::<String>::new(), "one row per __id");
    assert_eq!(fares(&bq).await, expected(&[(1, 100_001), (2, 100_002), (3, 123_456)]));
    bq.drop().await;
}
