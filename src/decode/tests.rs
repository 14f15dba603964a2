//! Decoding tests on events shaped exactly like the SQL Server connector's.

use super::*;
use crate::demo::bus_booking::{BusBooking, Timeline, booking, seat, trip};
use crate::demo::sqlserver::Record;

fn source_record(r: &Record, offset: i64) -> SourceRecord {
    SourceRecord {
        lineage: Lineage { topic: r.topic.clone(), partition: 0, offset },
        key: Some(r.key.clone()),
        value: r.value.clone(),
        headers: vec![],
        timestamp_ms: None,
    }
}

fn raw(topic: &str, key: Option<&str>, value: Option<&str>) -> SourceRecord {
    SourceRecord {
        lineage: Lineage { topic: topic.into(), partition: 2, offset: 41 },
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.map(|v| v.as_bytes().to_vec()),
        headers: vec![],
        timestamp_ms: None,
    }
}

fn change(r: &SourceRecord) -> ChangeEvent {
    match decode(r, &DecodeOptions::default()).unwrap() {
        Decoded::Change(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn create_with_schema_types_every_column() {
    let db = BusBooking::new("vexere");
    let mut t = Timeline::default();
    for schemas in [true, false] {
        let at = t.commit(1);
        let ev = change(&source_record(&db.trips.event('c', None, Some(&trip(7, 35_000_000, 1)), at, t.ts_ms, schemas), 0));
        assert_eq!(ev.op, Op::Create);
        assert_eq!(ev.key.columns, vec![("TripId".to_string(), Value::Int(7))]);
        let after = ev.after.unwrap();
        if schemas {
            assert_eq!(after.get("Fare"), Some(&Value::Decimal { unscaled: 35_000_000, scale: 2 }));
            assert!(matches!(after.get("DepartAt"), Some(Value::Timestamp(_))));
        } else {
            // Without a schema the decimal is only base64 text; issue #3 adds
            // scale from the schema-change topic or the mapping.
            assert_eq!(after.get("Fare"), Some(&Value::String("AhYOwA==".into())));
        }
        assert_eq!(after.get("Note"), Some(&Value::Null));
        assert_eq!(ev.source_ts_ms, Some(t.ts_ms));
    }
}

#[test]
fn update_and_delete_carry_images_and_order() {
    let db = BusBooking::new("vexere");
    let mut t = Timeline::default();
    let u_at = t.commit(2);
    let u = change(&source_record(&db.bookings.event('u', Some(&booking(1, 1, 3, "held")), Some(&booking(1, 1, 3, "confirmed")), u_at, t.ts_ms, true), 1));
    let d_at = t.commit(1);
    let d = change(&source_record(&db.bookings.event('d', Some(&booking(1, 1, 3, "confirmed")), None, d_at, t.ts_ms, true), 2));
    assert_eq!(u.op, Op::Update);
    assert_eq!(u.before.unwrap().get("Status"), Some(&Value::String("held".into())));
    assert_eq!(d.op, Op::Delete);
    assert!(d.after.is_none());
    assert_eq!(d.key.get("BookingId"), Some(&Value::Int(1)));
    assert!(u.position < d.position);
}

#[test]
fn snapshot_read_has_position_from_commit_lsn_only() {
    let db = BusBooking::new("vexere");
    let mut t = Timeline::default();
    let snap = t.snapshot();
    let r = change(&source_record(&db.trips.event('r', None, Some(&trip(1, 1, 1)), snap, t.ts_ms, true), 0));
    let at = t.commit(2);
    let u = change(&source_record(&db.trips.event('u', Some(&trip(1, 1, 1)), Some(&trip(1, 2, 1)), at, t.ts_ms, true), 1));
    assert_eq!(r.op, Op::Read);
    assert!(r.position < u.position);
}

#[test]
fn composite_key_keeps_key_order() {
    let db = BusBooking::new("vexere");
    let mut t = Timeline::default();
    let at = t.commit(1);
    let ev = change(&source_record(&db.seats.event('c', None, Some(&seat(3, 12, false)), at, t.ts_ms, true), 0));
    let names: Vec<&str> = ev.key.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["TripId", "SeatNo"]);
}

#[test]
fn tombstone_and_other_topics_are_not_changes() {
    let db = BusBooking::new("vexere");
    let tomb = source_record(&db.trips.tombstone(&trip(1, 1, 1), true), 3);
    assert!(matches!(decode(&tomb, &DecodeOptions::default()).unwrap(), Decoded::Tombstone));
    let ddl = raw("vexere", Some(r#"{"databaseName":"vexere"}"#), Some(r#"{"source":{},"ts_ms":1,"databaseName":"vexere","schemaName":"dbo","ddl":"N/A","tableChanges":[]}"#));
    assert!(matches!(decode(&ddl, &DecodeOptions::default()).unwrap(), Decoded::NotAChange("schema change")));
    let tx = raw("vexere.transaction", Some(r#"{"id":"1"}"#), Some(r#"{"status":"BEGIN","id":"00000025:00000d08:0025","event_count":null,"data_collections":null,"ts_ms":1}"#));
    assert!(matches!(decode(&tx, &DecodeOptions::default()).unwrap(), Decoded::NotAChange("transaction metadata")));
    let hb = raw("__debezium-heartbeat.vexere", Some(r#"{"serverName":"vexere"}"#), Some(r#"{"ts_ms":1}"#));
    assert!(matches!(decode(&hb, &DecodeOptions::default()).unwrap(), Decoded::NotAChange("heartbeat")));
}

#[test]
fn bad_records_name_topic_partition_offset() {
    let cases = [
        (Some(r#"{"TripId":1}"#), Some("{not json"), "invalid_json"),
        (Some(r#"{"TripId":1}"#), Some(r#"{"after":{"TripId":1}}"#), "not_an_envelope"),
        (Some(r#"{"TripId":1}"#), Some(r#"{"op":"x","source":{"connector":"sqlserver","commit_lsn":"00000001:00000001:0001"},"after":{}}"#), "unknown_op"),
        (None, Some(r#"{"op":"c","source":{"connector":"sqlserver","commit_lsn":"00000001:00000001:0001"},"after":{"TripId":1}}"#), "missing_key"),
        (Some(r#"{"TripId":1}"#), Some(r#"{"op":"c","source":{"connector":"sqlserver","commit_lsn":"nope"},"after":{"TripId":1}}"#), "bad_position"),
        (Some(r#"{"TripId":1}"#), Some(r#"{"op":"c","source":{"connector":"sqlserver","commit_lsn":"00000001:00000001:0001"}}"#), "not_an_envelope"),
    ];
    for (key, value, kind) in cases {
        let err = decode(&raw("vexere.vexere.dbo.Trips", key, value), &DecodeOptions::default()).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.to_string().starts_with("vexere.vexere.dbo.Trips/2@41: "), "{err}");
    }
}

#[test]
fn wrong_typed_value_is_an_error_not_a_guess() {
    let v = r#"{"schema":{"type":"struct","fields":[{"field":"before","type":"struct","optional":true,"fields":[]},{"field":"after","type":"struct","optional":true,"fields":[{"field":"SeatCount","type":"int16","optional":false}]}]},"payload":{"op":"c","source":{"connector":"sqlserver","commit_lsn":"00000001:00000001:0001"},"after":{"SeatCount":"forty"}}}"#;
    let err = decode(&raw("t", Some(r#"{"TripId":1}"#), Some(v)), &DecodeOptions::default()).unwrap_err();
    assert_eq!(err.kind(), "bad_value");
    assert!(err.to_string().contains("SeatCount"), "{err}");
}

#[test]
fn oversized_record_is_refused() {
    let err = decode(&raw("t", Some("{}"), Some(&"x".repeat(100))), &DecodeOptions { max_record_bytes: 10 }).unwrap_err();
    assert_eq!(err.kind(), "too_large");
}
