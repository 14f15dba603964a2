//! Avro through the real stack: Trips change events written the way
//! Confluent's AvroConverter writes them (schemas registered under
//! `<topic>-key` / `<topic>-value` in the local Apicurio registry through its
//! Confluent-compatible API, records in the wire format), read by projector
//! with `--schema-registry-url`, land in Elasticsearch with exact values. A
//! record naming a schema id the registry does not know is dead-lettered
//! with kind `unknown_schema`, and its neighbours land.

mod common;

use std::time::Duration;

use common::avro::{registry_url, to_avro};
use common::*;
use projector::decode::value::timestamp_text;
use projector::demo::bus_booking::{Timeline, trip};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn avro_change_events_land_with_exact_values() {
    let w = World::new("avro", 1).await;
    let mut t = Timeline::default();
    let mut json_records = Vec::new();
    // Snapshot read of trip 1, inserts of 2 and 3.
    json_records.push(w.db.trips.event('r', None, Some(&trip(1, 35_000_000, 1)), t.snapshot(), t.ts_ms, true));
    for id in [2, 3] {
        let at = t.commit(1);
        json_records.push(w.db.trips.event('c', None, Some(&trip(id, 1000 * id as i128, 1)), at, t.ts_ms, true));
    }
    // Trip 2: new fare with every decimal digit, a note, a status change.
    let mut changed = trip(2, 123_456_789_012, 2);
    changed[7].1 = json!("window seats — upper deck");
    let at = t.commit(2);
    json_records.push(w.db.trips.event('u', Some(&trip(2, 2000, 1)), Some(&changed), at, t.ts_ms, true));
    // Trip 3 deleted, then its tombstone.
    let at = t.commit(1);
    json_records.push(w.db.trips.event('d', Some(&trip(3, 3000, 1)), None, at, t.ts_ms, true));
    json_records.push(w.db.trips.tombstone(&trip(3, 3000, 1), true));
    let mut records = to_avro(&json_records).await;

    // Trip 4 names a schema id the registry has never assigned; trip 5 follows it.
    let at = t.commit(1);
    let mut unknown =
        to_avro(&[w.db.trips.event('c', None, Some(&trip(4, 4000, 1)), at, t.ts_ms, true)]).await.remove(0);
    if let Some(v) = unknown.value.as_mut() {
        v[1..5].copy_from_slice(&2_000_000_000u32.to_be_bytes());
    }
    let unknown_offset = records.len() as i64;
    records.push(unknown);
    let at = t.commit(1);
    records.extend(to_avro(&[w.db.trips.event('c', None, Some(&trip(5, -1, 1)), at, t.ts_ms, true)]).await);
    assert!(records.iter().all(|r| r.key.first() == Some(&0)), "keys are Avro too");
    w.produce(&records).await;

    let url = registry_url();
    let p = w.start_with(&w.group, &[("PROJECTOR_SCHEMA_REGISTRY_URL", url.as_str())]);
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;

    let docs = w.docs(&w.indexes[0]).await;
    assert_eq!(
        docs.keys().collect::<Vec<_>>(),
        ["1", "2", "5"],
        "trip 3 deleted, trip 4 dead-lettered; log: {}",
        p.log_text()
    );
    let d = &docs["2"];
    assert_eq!(d["Fare"].to_string(), "1234567890.12", "decimal(12,2) with its exact digits");
    assert_eq!(d["Note"], "window seats — upper deck");
    assert_eq!(d["Status"], 2);
    assert_eq!(d["SeatCount"], 40);
    assert_eq!(d["TripId"], 2);
    assert_eq!(d["Route"], "Da Nang → Hue");
    let depart_ns = 1_782_900_000_000_000_000_i128 + 2 * 3_600_000_000_000;
    assert_eq!(d["DepartAt"].as_str(), Some(timestamp_text(depart_ns).as_str()), "datetime2(7) as ISO text");
    assert_eq!(d["DepartAt"], "2026-07-01T12:00:00");
    assert_eq!(docs["1"]["Fare"].as_f64(), Some(350_000.0));
    assert!(docs["1"]["Note"].is_null());
    assert_eq!(docs["5"]["Fare"].to_string(), "-0.01", "negative decimal");

    let dlq = dead_letters(&format!("projector.{}.dlq", w.name), 1).await;
    let (_, kind, message) = &dlq[&(w.db.trips.topic(), unknown_offset)];
    assert_eq!(kind, "unknown_schema");
    assert!(message.contains("value names schema id 2000000000") && message.contains("does not know"), "{message}");
    assert_eq!(p.counter("projector_dead_letters_total", &["kind=\"unknown_schema\""]).await, 1.0);
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 1.0, "nothing else dead-lettered");
}
