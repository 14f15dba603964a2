//! Bad input against the real stack: every kind of bad record goes to the
//! dead-letter topic with its lineage and reason, its good neighbours on the
//! same partition land, and the partition's offsets move past it. With
//! `--errors-tolerance none` projector stops on the first bad record instead,
//! naming it, and commits nothing past it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use projector::demo::bus_booking::{Timeline, booking, trip};
use projector::demo::sqlserver::{Column, Record};
use serde_json::json;

fn raw(topic: &str, key: &str, value: &[u8]) -> Record {
    Record { topic: topic.to_string(), key: key.as_bytes().to_vec(), value: Some(value.to_vec()) }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_bad_record_is_dead_lettered_and_its_neighbours_land() {
    let w = World::new("dlq", 1).await;
    let trips = w.db.trips.topic();
    let bookings = w.db.bookings.topic();
    let mut t = Timeline::default();
    let mut good = |id: i32| {
        let at = t.commit(1);
        w.db.trips.event('c', None, Some(&trip(id, 1000, 1)), at, t.ts_ms, true)
    };
    let lsn = r#""connector":"sqlserver","commit_lsn":"00000099:00000001:0001""#;
    let schema_int = r#"{"type":"struct","fields":[{"field":"before","type":"struct","optional":true,"fields":[]},{"field":"after","type":"struct","optional":true,"fields":[{"field":"TripId","type":"int32","optional":true},{"field":"Fare","type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"}}]}]}"#;
    let key = |id: i32| format!(r#"{{"TripId":{id}}}"#);
    // (offset, record, expected stage, expected kind), interleaved with good rows.
    let bad: Vec<(Record, &str, &str)> = vec![
        (raw(&trips, &key(101), b"{not json"), "decode", "invalid_json"),
        (raw(&trips, &key(102), &[0xff, 0xfe, 0x9c, 0x01]), "decode", "invalid_json"),
        (raw(&trips, &key(103), format!(r#"{{"op":"c","source":{{{lsn}}},"after":{{"TripId":103}}}}"#).as_bytes()), "decode", "not_an_envelope"),
        (raw(&trips, &key(104), format!(r#"{{"schema":{schema_int},"payload":{{"source":{{{lsn}}},"after":{{"TripId":104}}}}}}"#).as_bytes()), "decode", "not_an_envelope"),
        (raw(&trips, &key(105), format!(r#"{{"schema":{schema_int},"payload":{{"op":"z","source":{{{lsn}}},"after":{{"TripId":105}}}}}}"#).as_bytes()), "decode", "unknown_op"),
        (raw(&trips, &key(106), format!(r#"{{"schema":{schema_int},"payload":{{"op":"c","source":{{{lsn}}},"after":{{"TripId":"one hundred six"}}}}}}"#).as_bytes()), "decode", "bad_value"),
        (raw(&trips, &key(107), format!(r#"{{"schema":{schema_int},"payload":{{"op":"c","source":{{{lsn}}},"after":{{"TripId":107,"Fare":"%%%"}}}}}}"#).as_bytes()), "decode", "bad_value"),
        (raw(&trips, &key(108), format!(r#"{{"schema":{schema_int},"payload":{{"op":"c","source":{{{lsn}}},"after":{{"TripId":108,"Pad":"{}"}}}}}}"#, "x".repeat(40_000)).as_bytes()), "decode", "too_large"),
        (raw(&trips, r#"{"TripId":null}"#, format!(r#"{{"schema":{schema_int},"payload":{{"op":"c","source":{{{lsn}}},"after":{{"TripId":null}}}}}}"#).as_bytes()), "mapping", "bad_key"),
    ];
    let mut records = vec![good(1)];
    let mut expected = BTreeMap::new();
    for (r, stage, kind) in bad {
        expected.insert(records.len() as i64, (stage, kind));
        records.push(r);
        let id = records.len() as i32;
        records.push(good(id));
    }
    w.produce(&records).await;
    // A document Elasticsearch rejects: SeatNo is a number in the index, "twelve" is not.
    let at = t.commit(1);
    w.produce(&[w.db.bookings.event('c', None, Some(&booking(1, 1, 1, "confirmed")), at, t.ts_ms, true)]).await;
    // The retyped SeatNo below is a source type change the index cannot take
    // in place: dead-lettered under `on_type_change: dead_letter` (the
    // default holds it for a rebuild; tests/type_changes.rs covers both).
    let yaml = std::fs::read_to_string(&w.model_file).unwrap();
    w.set_model(&yaml.replacen("tables:", "on_type_change: dead_letter\ntables:", 1));
    let p = w.start_with(&w.group, &[("PROJECTOR_SCHEMAS_ENABLE", "true"), ("PROJECTOR_MAX_RECORD_BYTES", "20000")]);
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    // The column was retyped at the source (smallint → varchar): the record
    // decodes, but the index maps SeatNo as a number.
    let mut retyped = w.db.bookings.clone();
    retyped.columns[2] = Column::new("SeatNo", "string");
    let mut bad_booking = booking(2, 1, 1, "confirmed");
    bad_booking[2].1 = json!("twelve");
    let at = t.commit(1);
    let mut more = vec![retyped.event('c', None, Some(&bad_booking), at, t.ts_ms, true)];
    let at = t.commit(1);
    more.push(w.db.bookings.event('c', None, Some(&booking(3, 1, 2, "confirmed")), at, t.ts_ms, true));
    w.produce(&more).await;
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;

    let trips_docs = w.docs(&w.indexes[0]).await;
    let want: Vec<String> = (0..records.len())
        .filter(|i| !expected.contains_key(&(*i as i64)))
        .map(|i| if i == 0 { "1".to_string() } else { i.to_string() })
        .collect();
    let mut got: Vec<String> = trips_docs.keys().cloned().collect();
    got.sort_by_key(|k| k.parse::<i64>().unwrap());
    assert_eq!(got, want, "every good neighbour landed");

    let dlq = format!("projector.{}.dlq", w.name);
    let letters = dead_letters(&dlq, expected.len() + 1).await;
    for (offset, (stage, kind)) in &expected {
        let (s, k, message) = &letters[&(trips.clone(), *offset)];
        assert_eq!((s.as_str(), k.as_str()), (*stage, *kind), "offset {offset}: {message}");
        assert!(message.contains(&format!("{trips}/0@{offset}")), "the message names the record: {message}");
    }
    let booking_letter = &letters[&(bookings.clone(), 1)];
    assert_eq!((booking_letter.0.as_str(), booking_letter.1.as_str()), ("sink", "rejected"));
    assert!(booking_letter.2.contains("SeatNo"), "{}", booking_letter.2);
    assert_eq!(w.docs(&w.indexes[1]).await.keys().collect::<Vec<_>>(), ["1", "3"]);
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, (expected.len() + 1) as f64);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_tolerance_none_stops_on_the_bad_record_and_commits_nothing_past_it() {
    let w = World::new("stop", 1).await;
    let mut t = Timeline::default();
    let mut records = Vec::new();
    for id in 1..=3 {
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 1000, 1)), at, t.ts_ms, true));
    }
    records.push(raw(&w.db.trips.topic(), r#"{"TripId":4}"#, b"{not json"));
    for id in 5..=6 {
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 1000, 1)), at, t.ts_ms, true));
    }
    w.produce(&records).await;
    let mut p = w.start_with(&w.group, &[("PROJECTOR_ERRORS_TOLERANCE", "none"), ("PROJECTOR_BATCH_RECORDS", "1")]);
    wait_for(Duration::from_secs(60), "projector to stop", || {
        let running = p.is_running();
        async move { !running }
    })
    .await;
    let log = p.log_text();
    assert!(log.contains(&format!("{}/0@3", w.db.trips.topic())), "the error names the record: {log}");
    assert!(log.contains("errors.tolerance is none"), "{log}");
    let lag = projector::source::consumer::group_lag(
        &brokers(),
        &format!("{}.elasticsearch", w.group),
        &w.topics(),
        Duration::from_secs(5),
    )
    .unwrap();
    let trips_partition = lag.iter().find(|l| l.topic == w.db.trips.topic()).unwrap();
    assert!(
        trips_partition.committed <= 3,
        "nothing committed past the bad record (committed {})",
        trips_partition.committed
    );
}

/// `r` with its value's payload edited (the schema kept as it is).
fn edited(r: &Record, edit: impl Fn(&mut serde_json::Value)) -> Record {
    let mut v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
    edit(&mut v["payload"]);
    Record { value: Some(serde_json::to_vec(&v).unwrap()), ..r.clone() }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_breaks_its_own_schema_is_dead_lettered_and_never_overwrites_good_state() {
    let w = World::new("strict", 1).await;
    let trips = w.db.trips.topic();
    let mut t = Timeline::default();
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), at, t.ts_ms, true)]).await;
    let p = w.start(&w.group);
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    let good_state = w.docs(&w.indexes[0]).await["1"].clone();

    // Each bad record is a newer update of trip 1 that, applied, would
    // overwrite its fare and status; a good create of another trip follows each.
    let update = |t: &mut Timeline| {
        let at = t.commit(1);
        w.db.trips.event('u', Some(&trip(1, 1000, 1)), Some(&trip(1, 999_999, 2)), at, t.ts_ms, true)
    };
    let bad: Vec<(Record, &str)> = vec![
        (edited(&update(&mut t), |p| drop(p["after"].as_object_mut().unwrap().shift_remove("Route"))), "missing_field"),
        (
            edited(&update(&mut t), |p| {
                p["before"].as_object_mut().unwrap().shift_remove("Operator").map(drop).unwrap()
            }),
            "missing_field",
        ),
        (edited(&update(&mut t), |p| p["after"]["Route"] = json!(null)), "required_null"),
        (edited(&update(&mut t), |p| p["after"]["Status"] = json!("2")), "bad_value"),
        (edited(&update(&mut t), |p| p["source"]["ts_ms"] = json!("1782000000000")), "bad_value"),
        (edited(&update(&mut t), |p| p["source"]["event_serial_no"] = json!("1")), "bad_value"),
        (edited(&update(&mut t), |p| p["after"]["Fare"] = json!(9999.99)), "decimal_not_bytes"),
        (edited(&update(&mut t), |p| p["after"]["TripId"] = json!(2)), "key_mismatch"),
    ];
    let mut records = Vec::new();
    let mut expected = BTreeMap::new();
    for (r, kind) in bad {
        expected.insert(records.len() as i64 + 1, kind);
        records.push(r);
        let id = 100 + records.len() as i32;
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 1000, 1)), at, t.ts_ms, true));
    }
    w.produce(&records).await;
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;

    let docs = w.docs(&w.indexes[0]).await;
    assert_eq!(docs["1"], good_state, "no bad record was applied, not even in part");
    let neighbours: Vec<String> = (0..records.len()).filter(|i| i % 2 == 1).map(|i| (100 + i).to_string()).collect();
    for id in &neighbours {
        assert!(docs.contains_key(id), "good neighbour {id} landed: {:?}", docs.keys().collect::<Vec<_>>());
    }
    let dlq = format!("projector.{}.dlq", w.name);
    let letters = dead_letters(&dlq, expected.len()).await;
    for (offset, kind) in &expected {
        let (stage, k, message) = &letters[&(trips.clone(), *offset)];
        assert_eq!((stage.as_str(), k.as_str()), ("decode", *kind), "offset {offset}: {message}");
        assert!(message.contains(&format!("{trips}/0@{offset}")), "the message names the record: {message}");
    }
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, expected.len() as f64);
}

/// A 9 MB record (over `--max-record-bytes`) on a topic that allows 12 MB:
/// its dead letter cannot be written whole (the producer and broker allow
/// about 1 MB), so it goes out with its lineage, a bounded prefix and
/// headers saying it was cut, and the partition moves on.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_dead_letter_is_truncated_keeps_its_lineage_and_the_partition_moves_on() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let w = World::new("bigdlq", 1).await;
    let trips = w.db.trips.topic();
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let allow = AlterConfig::new(ResourceSpecifier::Topic(&trips)).set("max.message.bytes", "12582912");
    for r in admin.alter_configs(&[allow], &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
    let mut t = Timeline::default();
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), at, t.ts_ms, true)]).await;
    let big_value = format!(r#"{{"pad":"{}"}}"#, "x".repeat(9_000_000));
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "12582912")
        .create()
        .unwrap();
    let big: FutureRecord<'_, str, str> = FutureRecord::to(&trips).key(r#"{"TripId":2}"#).payload(&big_value);
    producer.send(big, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&trip(3, 1000, 1)), at, t.ts_ms, true)]).await;

    let p = w.start(&w.group);
    wait_for(Duration::from_secs(120), "the partition to move past the 9 MB record", || {
        let (group, topics) = (format!("{}.elasticsearch", w.group), w.topics());
        async move { tokio::task::spawn_blocking(move || lag(&group, &topics)).await.unwrap() == Some(0) }
    })
    .await;
    let docs = w.docs(&w.indexes[0]).await;
    assert_eq!(
        docs.keys().collect::<Vec<_>>(),
        ["1", "3"],
        "the good neighbours landed; log: {}",
        log_tail(&p.log_text(), 30)
    );

    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("bigdlqreader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&format!("projector.{}.dlq", w.name)]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("a dead letter").unwrap();
    let h: BTreeMap<String, String> = m
        .headers()
        .unwrap()
        .iter()
        .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).to_string()))
        .collect();
    assert_eq!(h["__connect.errors.topic"], trips, "{h:#?}");
    assert_eq!(h["__connect.errors.partition"], "0");
    assert_eq!(h["__connect.errors.offset"], "1");
    assert_eq!(h["__connect.errors.stage"], "decode");
    assert_eq!(h["__connect.errors.exception.class.name"], "too_large");
    assert_eq!(h["projector.sink"], "elasticsearch");
    assert_eq!(h["projector.truncated"], "true");
    assert_eq!(h["projector.original.value.bytes"], big_value.len().to_string());
    assert_eq!(h["projector.original.key.bytes"], r#"{"TripId":2}"#.len().to_string());
    assert_eq!(h["projector.original"], format!("{trips}/0@1"), "the pointer to fetch the original from");
    let payload = m.payload().unwrap_or_default();
    assert!(payload.len() <= 64 * 1024, "a bounded prefix, not {} bytes", payload.len());
    assert!(big_value.as_bytes().starts_with(payload), "the letter carries a prefix of the value");
    assert_eq!(m.key(), Some(r#"{"TripId":2}"#.as_bytes()), "a short key is kept whole");
}
