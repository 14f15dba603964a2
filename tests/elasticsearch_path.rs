//! The Kafka → Elasticsearch path against the real local stack
//! (`scripts/stack up`): Debezium SQL Server-shaped events in, search
//! documents out, with the source-position guard, commits after writes,
//! restarts, replays and a second instance in the group.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use projector::demo::bus_booking::{Timeline, booking, seat, trip};
use projector::demo::sqlserver::Lsns;
use serde_json::{Value as Json, json};

const CATCH_UP: Duration = Duration::from_secs(120);

fn fare(doc: &Json) -> f64 {
    doc["Fare"].as_f64().unwrap()
}

async fn assert_fares(w: &World, expect: &BTreeMap<String, i64>) {
    let docs = w.docs(&w.indexes[0]).await;
    let got: BTreeMap<String, i64> =
        docs.iter().map(|(id, d)| (id.clone(), (fare(d) * 100.0).round() as i64)).collect();
    assert_eq!(&got, expect, "live trips and their fares");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_update_delete_and_tombstone_reach_the_index() {
    let w = World::new("crud", 3).await;
    let mut t = Timeline::default();
    let snap = t.snapshot();
    let mut records = vec![w.db.trips.event('r', None, Some(&trip(4, 5000, 1)), snap, t.ts_ms, true)];
    for id in 1..=5 {
        if id == 4 {
            continue;
        }
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 1000 * id as i128, 1)), at, t.ts_ms, true));
    }
    let at = t.commit(2);
    records.push(w.db.trips.event('u', Some(&trip(2, 2000, 1)), Some(&trip(2, 2500, 2)), at, t.ts_ms, true));
    let at = t.commit(2);
    records.push(w.db.trips.event('u', Some(&trip(4, 5000, 1)), Some(&trip(4, 4500, 1)), at, t.ts_ms, true));
    let at = t.commit(1);
    records.push(w.db.trips.event('d', Some(&trip(3, 3000, 1)), None, at, t.ts_ms, true));
    records.push(w.db.trips.tombstone(&trip(3, 3000, 1), true));
    // Bookings arrive without schemas (schemas.enable=false).
    for id in 1..=3 {
        let at = t.commit(1);
        records.push(w.db.bookings.event('c', None, Some(&booking(id, 1, id as i16, "confirmed")), at, t.ts_ms, false));
    }
    w.produce(&records).await;

    let p = w.start(&w.group);
    w.wait_caught_up(&w.group, CATCH_UP).await;

    let trips = w.docs(&w.indexes[0]).await;
    assert_eq!(trips.keys().collect::<Vec<_>>(), ["1", "2", "4", "5"]);
    assert_eq!(fare(&trips["2"]), 25.0);
    assert_eq!(trips["2"]["Status"], 2);
    assert_eq!(fare(&trips["4"]), 45.0, "a streamed update wins over the snapshot read");
    assert_eq!(trips["1"]["Route"], "Ha Noi → Sa Pa");
    assert!(trips["1"]["DepartAt"].as_str().unwrap().starts_with("2026-07-"), "{}", trips["1"]["DepartAt"]);
    // The deleted row is a tombstone document, hidden by the alias.
    let raw = raw_docs(&w.indexes[0]).await;
    assert_eq!(raw["3"].0["__projector"]["deleted"], true);
    assert_eq!(raw["3"].0["TripId"], 3);
    let bookings = w.docs(&w.indexes[1]).await;
    assert_eq!(bookings.len(), 3);
    assert_eq!(bookings["2"]["Customer"], "Le Minh Chau");
    assert!(
        p.counter("projector_events_total", &["outcome=\"applied\""]).await >= 8.0,
        "each key written at least once"
    );
    let trips_topic = format!("topic=\"{}\"", w.db.trips.topic());
    assert_eq!(
        p.counter("projector_events_total", &["outcome=\"skipped\"", &trips_topic]).await,
        0.0,
        "the tombstone is not skipped: it is a compaction delete (tests/compaction.rs), here settled by its d"
    );
    // Consumer lag per partition is published and reaches zero.
    wait_for(Duration::from_secs(30), "projector_consumer_lag at 0 for every Trips partition", || async {
        let m = p.metrics().await;
        m.lines().filter(|l| l.starts_with("projector_consumer_lag{") && l.contains(&trips_topic)).count() == 3
            && sum_metric(&m, "projector_consumer_lag", &[&trips_topic]) == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn composite_keys_and_a_primary_key_change() {
    let w = World::new("pk", 2).await;
    let mut t = Timeline::default();
    let mut records = Vec::new();
    for s in [12, 13] {
        let at = t.commit(1);
        records.push(w.db.seats.event('c', None, Some(&seat(3, s, false)), at, t.ts_ms, true));
    }
    // UPDATE Seats SET SeatNo = 14 WHERE TripId = 3 AND SeatNo = 13: SQL Server
    // CDC emits delete (serial 1) + tombstone + create (serial 2) at one LSN.
    let at = t.commit(1);
    let old = seat(3, 13, false);
    records.push(w.db.seats.event('d', Some(&old), None, at, t.ts_ms, true));
    records.push(w.db.seats.tombstone(&old, true));
    records.push(w.db.seats.event('c', None, Some(&seat(3, 14, true)), Lsns { serial: Some(2), ..at }, t.ts_ms, true));
    w.produce(&records).await;

    let _p = w.start(&w.group);
    w.wait_caught_up(&w.group, CATCH_UP).await;
    let seats = w.docs(&w.indexes[2]).await;
    assert_eq!(seats.keys().collect::<Vec<_>>(), ["3|12", "3|14"]);
    assert_eq!(seats["3|14"]["Held"], true);
    assert_eq!(seats["3|14"]["SeatNo"], 14);
    assert_eq!(raw_docs(&w.indexes[2]).await["3|13"].0["__projector"]["deleted"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_the_topic_from_offset_zero_changes_nothing() {
    let w = World::new("replay", 3).await;
    let (records, expect) = churn(&w, &mut Timeline::default(), 40, 3);
    w.produce(&records).await;
    {
        let _p = w.start(&w.group);
        w.wait_caught_up(&w.group, CATCH_UP).await;
    }
    assert_fares(&w, &expect).await;
    let before = raw_docs(&w.indexes[0]).await;

    // A new group starts at offset 0 and replays everything.
    let replay_group = format!("{}-replay", w.group);
    let p = w.start(&replay_group);
    w.wait_caught_up(&replay_group, CATCH_UP).await;
    let after = raw_docs(&w.indexes[0]).await;
    assert_eq!(before, after, "no document changed, not even its _seq_no");
    assert_fares(&w, &expect).await;
    assert!(p.counter("projector_events_total", &["outcome=\"stale\""]).await > 0.0);
    assert_eq!(p.counter("projector_events_total", &["outcome=\"applied\""]).await, 0.0);
}

/// Snapshot reads (`r`) into an empty index are sent as `create` without an
/// `_mget` first; the same reads again over the full index (a re-snapshot,
/// or a replay of it) then meet documents already there. Those older than
/// what is stored change nothing, not even a `_seq_no`, and the reads of
/// new rows are created, with batches small enough that the sink switches
/// from sending reads blind to looking them up first along the way.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_snapshot_over_a_full_index_changes_nothing_older_and_adds_the_new_rows() {
    let w = World::new("resnap", 2).await;
    let mut t = Timeline::default();
    let snap = t.snapshot();
    let read = |id: i32, fare: i128| w.db.trips.event('r', None, Some(&trip(id, fare, 1)), snap, 0, true);
    let mut expect: BTreeMap<String, i64> = BTreeMap::new();
    let mut records: Vec<_> = (1..=30).map(|id| read(id, 1000 + i128::from(id))).collect();
    for id in 1..=10 {
        let at = t.commit(2);
        let (before, after) = (trip(id, 1000 + i128::from(id), 1), trip(id, 2000 + i128::from(id), 1));
        records.push(w.db.trips.event('u', Some(&before), Some(&after), at, t.ts_ms, true));
    }
    for id in 1..=30 {
        expect.insert(id.to_string(), if id <= 10 { 2000 } else { 1000 } + i64::from(id));
    }
    w.produce(&records).await;
    let env =
        [("PROJECTOR_BATCH_RECORDS", "8"), ("PROJECTOR_LINGER_MS", "1"), ("PROJECTOR_ELASTICSEARCH_IN_FLIGHT", "1")];
    {
        let _first = w.start_with(&w.group, &env);
        w.wait_caught_up(&w.group, CATCH_UP).await;
    }
    assert_fares(&w, &expect).await;
    let before = raw_docs(&w.indexes[0]).await;

    // The snapshot again, with ten new rows at its end, read by a new
    // instance (one that has not written these documents itself).
    let again: Vec<_> = (1..=40).map(|id| read(id, 9000 + i128::from(id))).collect();
    for id in 31..=40 {
        expect.insert(id.to_string(), 9000 + i64::from(id));
    }
    w.produce(&again).await;
    let p = w.start_with(&w.group, &env);
    w.wait_caught_up(&w.group, CATCH_UP).await;
    assert_fares(&w, &expect).await;
    let after = raw_docs(&w.indexes[0]).await;
    let unchanged: BTreeMap<_, _> = after.iter().filter(|(id, _)| before.contains_key(*id)).collect();
    assert_eq!(unchanged, before.iter().collect(), "no document older rows met changed, not even its _seq_no");
    assert_eq!(p.counter("projector_events_total", &["outcome=\"stale\""]).await, 30.0);
    assert_eq!(p.counter("projector_events_total", &["outcome=\"applied\""]).await, 10.0);
    // Reads were sent blind over existing documents (conflicts), and not
    // all 30 of them: the sink turned to looking them up first.
    let conflicts = p.counter("projector_elasticsearch_conflicts_total", &[]).await;
    assert!(conflicts > 0.0 && conflicts < 30.0, "{conflicts} conflicts");
}

/// Small batches of a few hot keys with several bulk requests in flight:
/// batches overlap on the same documents, and whatever order their writes
/// land in, each document ends at its newest position. Two instances make
/// the remembered positions of one go stale under the other's writes.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_batches_in_flight_settle_on_the_newest_event() {
    let w = World::new("inflight", 3).await;
    let (records, expect) = churn(&w, &mut Timeline::default(), 12, 40);
    let env =
        [("PROJECTOR_BATCH_RECORDS", "15"), ("PROJECTOR_LINGER_MS", "1"), ("PROJECTOR_ELASTICSEARCH_IN_FLIGHT", "4")];
    let a = w.start_with(&w.group, &env);
    let (first, rest) = records.split_at(records.len() / 2);
    w.produce(first).await;
    let b = w.start_with(&w.group, &env);
    w.produce(rest).await;
    w.wait_caught_up(&w.group, CATCH_UP).await;
    assert_fares(&w, &expect).await;
    let applied = a.counter("projector_events_total", &["outcome=\"applied\""]).await
        + b.counter("projector_events_total", &["outcome=\"applied\""]).await;
    assert!(applied > 0.0, "both instances were running the path");
    // A replay by a third group with the same settings changes nothing.
    let before = raw_docs(&w.indexes[0]).await;
    let replay = format!("{}-replay", w.group);
    let c = w.start_with(&replay, &env);
    w.wait_caught_up(&replay, CATCH_UP).await;
    assert_eq!(before, raw_docs(&w.indexes[0]).await, "no document changed, not even its _seq_no");
    assert_eq!(c.counter("projector_events_total", &["outcome=\"applied\""]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_event_appended_late_changes_nothing_even_after_gc_deletes() {
    let w = World::new("late", 2).await;
    let mut t = Timeline::default();
    let create_at = t.commit(1);
    let create = w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), create_at, t.ts_ms, true);
    let create2_at = t.commit(1);
    let create2 = w.db.trips.event('c', None, Some(&trip(2, 2000, 1)), create2_at, t.ts_ms, true);
    let upd_at = t.commit(2);
    let update = w.db.trips.event('u', Some(&trip(1, 1000, 1)), Some(&trip(1, 1100, 1)), upd_at, t.ts_ms, true);
    let del_at = t.commit(1);
    let delete = w.db.trips.event('d', Some(&trip(2, 2000, 1)), None, del_at, t.ts_ms, true);
    w.produce(&[
        create.clone(),
        create2.clone(),
        update.clone(),
        delete,
        w.db.trips.tombstone(&trip(2, 2000, 1), true),
    ])
    .await;
    let p = w.start(&w.group);
    w.wait_caught_up(&w.group, CATCH_UP).await;
    let expect = BTreeMap::from([("1".to_string(), 1100)]);
    assert_fares(&w, &expect).await;

    // Shorten the delete-tombstone window and let it pass: a real ES delete
    // would have forgotten its version by now.
    let c = http();
    let r = c
        .put(format!("{}/{}_v1/_settings", es_url(), w.indexes[0]))
        .json(&json!({"index": {"gc_deletes": "1s"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = c.post(format!("{}/{}_v1/_flush", es_url(), w.indexes[0])).send().await;
    let before = raw_docs(&w.indexes[0]).await;

    // The old create of the deleted row and the old image of the updated row
    // arrive again, at the end of the topic.
    w.produce(&[create2, create, update]).await;
    w.wait_caught_up(&w.group, CATCH_UP).await;
    assert_fares(&w, &expect).await;
    assert_eq!(raw_docs(&w.indexes[0]).await, before, "no regression, no resurrection");
    assert!(
        p.counter("projector_events_total", &["outcome=\"stale\""]).await >= 2.0,
        "old events were seen and refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_then_restart_ends_complete_and_correct() {
    let w = World::new("kill", 3).await;
    let (records, expect) = churn(&w, &mut Timeline::default(), 300, 20);
    w.produce(&records).await;
    let mut p = w.start_with(&w.group, &[("PROJECTOR_BATCH_RECORDS", "200")]);
    wait_for(CATCH_UP, "some writes before the kill", || async {
        p.counter("projector_events_total", &["outcome=\"applied\""]).await >= 400.0
    })
    .await;
    p.kill9();
    let lag_at_kill = lag(&format!("{}.elasticsearch", w.group), &w.topics()).unwrap();
    assert!(lag_at_kill > 0, "the kill must land mid-stream (lag {lag_at_kill})");
    let _p2 = w.start(&w.group);
    w.wait_caught_up(&w.group, CATCH_UP).await;
    assert_fares(&w, &expect).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_split_the_partitions_and_agree_on_the_result() {
    let w = World::new("pair", 4).await;
    let a = w.start(&w.group);
    let b = w.start(&w.group);
    for p in [&a, &b] {
        wait_for(CATCH_UP, "each instance to be assigned partitions", || async {
            let log = p.log_text();
            // Cooperative rebalancing logs each increment; any non-empty one counts.
            log.lines().any(|l| l.contains("partitions assigned") && l.contains(&w.name))
        })
        .await;
    }
    // Load on all three tables, so that every partition has records.
    let mut t = Timeline::default();
    let (mut records, expect) = churn(&w, &mut t, 200, 5);
    for id in 1..=100 {
        let at = t.commit(1);
        records.push(w.db.bookings.event(
            'c',
            None,
            Some(&booking(id, 1, (id % 40) as i16, "confirmed")),
            at,
            t.ts_ms,
            true,
        ));
    }
    for s in 1..=40 {
        let at = t.commit(1);
        records.push(w.db.seats.event('c', None, Some(&seat(s as i32, s, false)), at, t.ts_ms, true));
    }
    w.produce(&records).await;
    w.wait_caught_up(&w.group, CATCH_UP).await;
    assert_fares(&w, &expect).await;
    assert_eq!(w.docs(&w.indexes[1]).await.len(), 100);
    assert_eq!(w.docs(&w.indexes[2]).await.len(), 40);
    let (wa, wb) = (
        a.counter("projector_events_total", &["outcome=\"applied\""]).await,
        b.counter("projector_events_total", &["outcome=\"applied\""]).await,
    );
    assert!(wa > 0.0 && wb > 0.0, "both instances wrote (a: {wa}, b: {wb})");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_flushes_commits_and_exits_zero() {
    let w = World::new("term", 2).await;
    let (records, expect) = churn(&w, &mut Timeline::default(), 50, 2);
    w.produce(&records).await;
    // A long linger: records wait in the buffer until shutdown flushes them.
    let mut p = w.start_with(&w.group, &[("PROJECTOR_LINGER_MS", "600000"), ("PROJECTOR_BATCH_RECORDS", "100000")]);
    wait_for(CATCH_UP, "records buffered", || async { p.log_text().contains("partitions assigned") }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.terminate(), Some(0), "log: {}", p.log_text());
    assert_eq!(
        lag(&format!("{}.elasticsearch", w.group), &w.topics()),
        Some(0),
        "everything flushed and committed before exit"
    );
    assert_fares(&w, &expect).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uncaptured_lob_value_keeps_the_stored_column() {
    let w = World::new("lob", 1).await;
    let mut t = Timeline::default();
    let mut created = trip(1, 1000, 1);
    created[7].1 = json!("a long nvarchar(max) note");
    let at = t.commit(1);
    let mut records = vec![w.db.trips.event('c', None, Some(&created), at, t.ts_ms, true)];
    // An update that did not touch Note: Debezium 3.6 marks the LOB it could
    // not read with its placeholder. It is not data and must not erase the note.
    let mut updated = trip(1, 1250, 1);
    updated[7].1 = json!("__debezium_unavailable_value");
    let at = t.commit(2);
    records.push(w.db.trips.event('u', Some(&created), Some(&updated), at, t.ts_ms, true));
    w.produce(&records[..1]).await;
    let _p = w.start_with(&w.group, &[("PROJECTOR_LINGER_MS", "1")]);
    w.wait_caught_up(&w.group, CATCH_UP).await;
    w.produce(&records[1..]).await;
    w.wait_caught_up(&w.group, CATCH_UP).await;
    let docs = w.docs(&w.indexes[0]).await;
    assert_eq!(fare(&docs["1"]), 12.5, "the update applied");
    assert_eq!(docs["1"]["Note"], "a long nvarchar(max) note", "the stored value survived");
}

/// Trips 1..=4 created and caught up, then `refuse` makes the index refuse
/// writes for a reason that is not the documents' (a block, a closed index)
/// while their fares change and trips 5 and 6 are created. Nothing may be
/// dead-lettered: the sink is reported down until `lift`, then every event lands.
async fn writes_wait_out_an_index_refusal<B, L>(stem: &str, refuse: B, lift: L)
where
    B: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    L: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
{
    let w = World::new(stem, 1).await;
    let physical = format!("{}/{}_v1", es_url(), w.indexes[0]);
    let mut t = Timeline::default();
    let mut expect = BTreeMap::new();
    let mut records = Vec::new();
    for id in 1..=4 {
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 1000, 1)), at, t.ts_ms, true));
        expect.insert(id.to_string(), 1000);
    }
    w.produce(&records).await;
    let p = w.start_with(&w.group, &[("PROJECTOR_LINGER_MS", "1")]);
    w.wait_caught_up(&w.group, CATCH_UP).await;
    assert_fares(&w, &expect).await;

    let c = http();
    let r = refuse(&c, &physical).send().await.unwrap();
    assert!(r.status().is_success(), "refusing writes on {physical}: {}", r.text().await.unwrap());
    let mut records = Vec::new();
    for id in 1..=4 {
        let at = t.commit(2);
        records.push(w.db.trips.event('u', Some(&trip(id, 1000, 1)), Some(&trip(id, 1500, 1)), at, t.ts_ms, true));
        expect.insert(id.to_string(), 1500);
    }
    for id in 5..=6 {
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 2000, 1)), at, t.ts_ms, true));
        expect.insert(id.to_string(), 2000);
    }
    w.produce(&records).await;
    wait_for(Duration::from_secs(60), "/health/ready to report the elasticsearch sink down", || async {
        p.ready().await.is_some_and(|(s, body)| s == 503 && body["sinks"]["elasticsearch"]["up"] == false)
    })
    .await;
    assert!(
        p.counter("projector_sink_retries_total", &["sink=\"elasticsearch\""]).await > 0.0,
        "the writes are retried"
    );
    assert_eq!(
        p.counter("projector_dead_letters_total", &[]).await,
        0.0,
        "a refusal of the index is no reason to dead-letter"
    );
    assert!(
        lag(&format!("{}.elasticsearch", w.group), &w.topics()).unwrap() > 0,
        "nothing committed past the refused writes"
    );

    let r = lift(&c, &physical).send().await.unwrap();
    assert!(r.status().is_success(), "lifting the refusal on {physical}: {}", r.text().await.unwrap());
    w.wait_caught_up(&w.group, CATCH_UP).await;
    assert_fares(&w, &expect).await;
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 0.0, "the dead-letter queue stays empty");
    wait_for(Duration::from_secs(30), "/health/ready to be 200 again", || async {
        p.ready().await.is_some_and(|(s, _)| s == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_blocked_index_holds_events_until_unblocked_and_dead_letters_none() {
    writes_wait_out_an_index_refusal(
        "wblock",
        |c, index| c.put(format!("{index}/_settings")).json(&json!({"index": {"blocks": {"write": true}}})),
        |c, index| c.put(format!("{index}/_settings")).json(&json!({"index": {"blocks": {"write": false}}})),
    )
    .await;
}

/// The flood-stage disk watermark's block (`read_only_allow_delete`).
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_allow_delete_index_holds_events_until_released_and_dead_letters_none() {
    writes_wait_out_an_index_refusal(
        "roblock",
        |c, index| {
            c.put(format!("{index}/_settings")).json(&json!({"index": {"blocks": {"read_only_allow_delete": true}}}))
        },
        |c, index| {
            c.put(format!("{index}/_settings")).json(&json!({"index": {"blocks": {"read_only_allow_delete": null}}}))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_index_holds_events_until_reopened_and_dead_letters_none() {
    writes_wait_out_an_index_refusal(
        "closed",
        |c, index| c.post(format!("{index}/_close")),
        |c, index| c.post(format!("{index}/_open")),
    )
    .await;
}
