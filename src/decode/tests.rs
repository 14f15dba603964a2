//! Decoding tests on events shaped exactly like the SQL Server connector's.

use bytes::Bytes;

use super::*;
use crate::demo::bus_booking::{BusBooking, Timeline, booking, seat, trip};
use crate::demo::sqlserver::Record;

fn source_record(r: &Record, offset: i64) -> SourceRecord {
    SourceRecord {
        lineage: Lineage { topic: r.topic.as_str().into(), partition: 0, offset },
        key: Some(r.key.clone().into()),
        value: r.value.clone().map(Into::into),
        headers: vec![],
        timestamp_ms: None,
        generation: 0,
    }
}

fn raw(topic: &str, key: Option<&str>, value: Option<&str>) -> SourceRecord {
    SourceRecord {
        lineage: Lineage { topic: topic.into(), partition: 2, offset: 41 },
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: vec![],
        timestamp_ms: None,
        generation: 0,
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
        let ev =
            change(&source_record(&db.trips.event('c', None, Some(&trip(7, 35_000_000, 1)), at, t.ts_ms, schemas), 0));
        assert_eq!(ev.op, Op::Create);
        assert_eq!(ev.key.columns, vec![("TripId".into(), Value::Int(7))]);
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
    let u = change(&source_record(
        &db.bookings.event(
            'u',
            Some(&booking(1, 1, 3, "held")),
            Some(&booking(1, 1, 3, "confirmed")),
            u_at,
            t.ts_ms,
            true,
        ),
        1,
    ));
    let d_at = t.commit(1);
    let d = change(&source_record(
        &db.bookings.event('d', Some(&booking(1, 1, 3, "confirmed")), None, d_at, t.ts_ms, true),
        2,
    ));
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
    let u =
        change(&source_record(&db.trips.event('u', Some(&trip(1, 1, 1)), Some(&trip(1, 2, 1)), at, t.ts_ms, true), 1));
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
    let ddl = raw(
        "vexere",
        Some(r#"{"databaseName":"vexere"}"#),
        Some(r#"{"source":{},"ts_ms":1,"databaseName":"vexere","schemaName":"dbo","ddl":"N/A","tableChanges":[]}"#),
    );
    assert!(matches!(decode(&ddl, &DecodeOptions::default()).unwrap(), Decoded::NotAChange("schema change")));
    let tx = raw(
        "vexere.transaction",
        Some(r#"{"id":"1"}"#),
        Some(
            r#"{"status":"BEGIN","id":"00000025:00000d08:0025","event_count":null,"data_collections":null,"ts_ms":1}"#,
        ),
    );
    assert!(matches!(decode(&tx, &DecodeOptions::default()).unwrap(), Decoded::NotAChange("transaction metadata")));
    let hb = raw("__debezium-heartbeat.vexere", Some(r#"{"serverName":"vexere"}"#), Some(r#"{"ts_ms":1}"#));
    assert!(matches!(decode(&hb, &DecodeOptions::default()).unwrap(), Decoded::NotAChange("heartbeat")));
}

#[test]
fn bad_records_name_topic_partition_offset() {
    let cases = [
        (Some(r#"{"TripId":1}"#), Some("{not json"), "invalid_json"),
        (Some(r#"{"TripId":1}"#), Some(r#"{"after":{"TripId":1}}"#), "not_an_envelope"),
        (
            Some(r#"{"TripId":1}"#),
            Some(r#"{"op":"x","source":{"connector":"sqlserver","commit_lsn":"00000001:00000001:0001"},"after":{}}"#),
            "unknown_op",
        ),
        (
            None,
            Some(
                r#"{"op":"c","source":{"connector":"sqlserver","commit_lsn":"00000001:00000001:0001"},"after":{"TripId":1}}"#,
            ),
            "missing_key",
        ),
        (
            Some(r#"{"TripId":1}"#),
            Some(r#"{"op":"c","source":{"connector":"sqlserver","commit_lsn":"nope"},"after":{"TripId":1}}"#),
            "bad_position",
        ),
        (
            Some(r#"{"TripId":1}"#),
            Some(r#"{"op":"c","source":{"connector":"sqlserver","commit_lsn":"00000001:00000001:0001"}}"#),
            "not_an_envelope",
        ),
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
    let err = decode(
        &raw("t", Some("{}"), Some(&"x".repeat(100))),
        &DecodeOptions { max_record_bytes: 10, ..Default::default() },
    )
    .unwrap_err();
    assert_eq!(err.kind(), "too_large");
}

fn unwrapped_value(extra: &str) -> String {
    format!(r#"{{"TripId":7,"Route":"Da Nang → Hue","Fare":"AhYOwA=="{extra}}}"#)
}

#[test]
fn extract_new_record_state_rewrite_mode_is_ordered_and_deletes() {
    let pos = r#","__source_commit_lsn":"0000002a:00000310:0003","__source_change_lsn":"0000002a:00000308:0002","__source_event_serial_no":2,"__source_ts_ms":1782000000000"#;
    let up = raw(
        "vexere.vexere.dbo.Trips",
        Some(r#"{"TripId":7}"#),
        Some(&unwrapped_value(&format!(r#","__deleted":"false","__op":"u"{pos}"#))),
    );
    let ev = change(&up);
    assert_eq!(ev.op, Op::Update);
    let after = ev.after.unwrap();
    assert!(after.get("__deleted").is_none() && after.get("__op").is_none(), "bookkeeping fields are not columns");
    assert_eq!(after.get("Route"), Some(&Value::String("Da Nang → Hue".into())));
    assert_eq!(ev.source_ts_ms, Some(1_782_000_000_000));
    let del = raw(
        "vexere.vexere.dbo.Trips",
        Some(r#"{"TripId":7}"#),
        Some(&unwrapped_value(&format!(r#","__deleted":"true"{pos}"#))),
    );
    let d = change(&del);
    assert_eq!(d.op, Op::Delete);
    assert_eq!(d.position, ev.position);
    // Unqualified add.fields names (`__commit_lsn`) work too.
    let short = raw(
        "t",
        Some(r#"{"TripId":7}"#),
        Some(&unwrapped_value(r#","__op":"c","__commit_lsn":"0000002a:00000310:0003""#)),
    );
    assert_eq!(change(&short).op, Op::Create);
}

#[test]
fn extract_new_record_state_with_schema_types_columns() {
    let v = r#"{"schema":{"type":"struct","fields":[{"field":"TripId","type":"int32"},{"field":"Fare","type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"}},{"field":"__deleted","type":"string","optional":true},{"field":"__source_commit_lsn","type":"string","optional":true}]},"payload":{"TripId":7,"Fare":"AhYOwA==","__deleted":"false","__source_commit_lsn":"00000001:00000001:0001"}}"#;
    let ev = change(&raw("t", Some(r#"{"TripId":7}"#), Some(v)));
    assert_eq!(ev.after.unwrap().get("Fare"), Some(&Value::Decimal { unscaled: 35_000_000, scale: 2 }));
}

#[test]
fn unwrapped_records_without_a_position_say_how_to_configure_the_connector() {
    for v in [r#"{"TripId":7,"__deleted":"false"}"#, r#"{"schema":{"type":"struct"},"payload":null}"#, "null"] {
        let err = decode(&raw("t", Some(r#"{"TripId":7}"#), Some(v)), &DecodeOptions::default()).unwrap_err();
        assert_eq!(err.kind(), "unordered", "{v}: {err}");
        assert!(err.to_string().contains("delete.tombstone.handling.mode=rewrite"), "{err}");
    }
}

#[test]
fn decimal_handling_modes_double_and_string() {
    let schema = |ty: &str| {
        format!(
            r#"{{"type":"struct","fields":[{{"field":"before","type":"struct","optional":true,"fields":[]}},{{"field":"after","type":"struct","optional":true,"fields":[{{"field":"Fare","type":"{ty}"}}]}}]}}"#
        )
    };
    let env = |ty: &str, v: &str| {
        format!(
            r#"{{"schema":{},"payload":{{"op":"c","source":{{"connector":"sqlserver","commit_lsn":"00000001:00000001:0001"}},"after":{{"Fare":{v}}}}}}}"#,
            schema(ty)
        )
    };
    let d = change(&raw("t", Some(r#"{"TripId":1}"#), Some(&env("double", "350000.5"))));
    assert_eq!(d.after.unwrap().get("Fare"), Some(&Value::Float(350000.5)));
    let s = change(&raw("t", Some(r#"{"TripId":1}"#), Some(&env("string", "\"350000.50\""))));
    assert_eq!(
        s.after.unwrap().get("Fare"),
        Some(&Value::String("350000.50".into())),
        "string mode stays text unless the mapping declares source_type decimal"
    );
}

#[test]
fn time_precision_connect_mode() {
    use crate::decode::value::FieldType;
    let ts = value::typed(
        "t",
        &FieldType {
            connect: "int64".into(),
            name: Some("org.apache.kafka.connect.data.Timestamp".into()),
            scale: None,
            precision: None,
        },
        &serde_json::json!(1_000),
    )
    .unwrap();
    assert_eq!(ts, Value::Timestamp(1_000_000_000));
    let time = value::typed(
        "t",
        &FieldType {
            connect: "int32".into(),
            name: Some("org.apache.kafka.connect.data.Time".into()),
            scale: None,
            precision: None,
        },
        &serde_json::json!(1_500),
    )
    .unwrap();
    assert_eq!(time, Value::Time(1_500_000_000));
}

#[test]
fn schemas_enable_true_refuses_a_bare_payload_and_false_a_schema() {
    let db = BusBooking::new("vexere");
    let mut t = Timeline::default();
    let at = t.commit(1);
    let bare = source_record(&db.trips.event('c', None, Some(&trip(1, 1, 1)), at, t.ts_ms, false), 0);
    let with = source_record(&db.trips.event('c', None, Some(&trip(1, 1, 1)), at, t.ts_ms, true), 1);
    let on = DecodeOptions { schemas_enable: SchemasEnable::True, ..Default::default() };
    let off = DecodeOptions { schemas_enable: SchemasEnable::False, ..Default::default() };
    assert_eq!(decode(&bare, &on).unwrap_err().kind(), "not_an_envelope");
    assert!(decode(&with, &on).is_ok());
    assert_eq!(decode(&with, &off).unwrap_err().kind(), "not_an_envelope");
    assert!(decode(&bare, &off).is_ok());
}

#[test]
fn undecodable_bytes_are_invalid_json() {
    let mut r = raw("t", Some(r#"{"TripId":1}"#), None);
    r.value = Some(Bytes::from_static(&[0xff, 0xfe, 0x00, 0x9c]));
    assert_eq!(decode(&r, &DecodeOptions::default()).unwrap_err().kind(), "invalid_json");
}

#[test]
fn schemaless_records_are_typed_from_the_schema_change_topic() {
    use crate::decode::schema_history::{SchemaHistory, TimePrecision};
    let db = BusBooking::new("vexere");
    let history = std::sync::Arc::new(SchemaHistory::new("vexere", "unused:9092", TimePrecision::Adaptive));
    let opts = DecodeOptions { history: Some(history.clone()), ..Default::default() };
    let mut t = Timeline::default();
    let at = t.commit(1);
    let rec = source_record(&db.trips.event('c', None, Some(&trip(7, 35_000_000, 1)), at, t.ts_ms, false), 0);
    let err = decode(&rec, &opts).unwrap_err();
    assert_eq!(err.kind(), "no_schema", "{err}");
    assert!(err.to_string().contains("include.schema.changes"), "{err}");
    let ddl: serde_json::Value =
        serde_json::from_slice(db.trips.schema_change("CREATE", t.ts_ms, false).value.as_deref().unwrap()).unwrap();
    history.apply(&ddl);
    let after = change_with(&rec, &opts).after.unwrap();
    assert_eq!(after.get("Fare"), Some(&Value::Decimal { unscaled: 35_000_000, scale: 2 }));
    assert!(matches!(after.get("DepartAt"), Some(Value::Timestamp(_))));
    // The schema-change record itself is not a row change.
    let ddl_rec = source_record(&db.trips.schema_change("CREATE", t.ts_ms, true), 1);
    assert!(matches!(decode(&ddl_rec, &DecodeOptions::default()).unwrap(), Decoded::NotAChange("schema change")));
}

/// Issue 8 §3: a replay decodes each schemaless event with the columns in
/// force at its source position, not the newest ones.
#[test]
fn a_schemaless_event_decodes_with_the_schema_in_force_at_its_position() {
    use crate::decode::schema_history::{SchemaHistory, TimePrecision};
    use crate::demo::sqlserver::Column;
    let mut db = BusBooking::new("vexere");
    let history = std::sync::Arc::new(SchemaHistory::new("vexere", "unused:9092", TimePrecision::Adaptive));
    let opts = DecodeOptions { history: Some(history.clone()), ..Default::default() };
    let apply = |r: crate::demo::sqlserver::Record| {
        history.apply(&serde_json::from_slice(r.value.as_deref().unwrap()).unwrap());
    };
    let mut t = Timeline::default();
    let too_old = t.commit(1);
    // v1: Fare decimal(12,2) and a Stops column, from the snapshot on.
    db.trips.columns.push(Column::new("Stops", "int16").optional());
    let v1_at = t.commit(1);
    apply(db.trips.schema_change_at("CREATE", v1_at, t.ts_ms, false));
    let mut with_stops = trip(1, 123_456_789, 1);
    with_stops.push(("Stops", serde_json::json!(3)));
    let e1 = source_record(&db.trips.event('c', None, Some(&with_stops), t.commit(1), t.ts_ms, false), 1);
    // v2 at P: Fare widened to decimal(14,4), Stops dropped.
    let v1_shape = db.trips.clone();
    db.trips.columns.pop();
    db.trips.columns.iter_mut().filter(|c| c.name == "Fare").for_each(|c| c.decimal = Some((4, 14)));
    let p = t.commit(1);
    apply(db.trips.schema_change_at("ALTER", p, t.ts_ms, false));
    let at_p = source_record(&db.trips.event('c', None, Some(&trip(2, 12_345_678_912, 1)), p, t.ts_ms, false), 2);
    let e3 = source_record(&db.trips.event('c', None, Some(&trip(3, 5, 1)), t.commit(1), t.ts_ms, false), 3);
    let after_p_with_stops =
        source_record(&v1_shape.event('c', None, Some(&with_stops), t.commit(1), t.ts_ms, false), 4);

    let old = change_with(&e1, &opts).after.unwrap();
    assert_eq!(old.get("Fare"), Some(&Value::Decimal { unscaled: 123_456_789, scale: 2 }), "1234567.89 as written");
    assert_eq!(old.get("Stops"), Some(&Value::Int(3)), "a column dropped later still decodes before the drop");
    let new = change_with(&at_p, &opts).after.unwrap();
    assert_eq!(new.get("Fare"), Some(&Value::Decimal { unscaled: 12_345_678_912, scale: 4 }), "1234567.8912");
    let newer = change_with(&e3, &opts).after.unwrap();
    assert_eq!(newer.get("Fare"), Some(&Value::Decimal { unscaled: 5, scale: 4 }));
    let err = decode(&after_p_with_stops, &opts).unwrap_err();
    assert_eq!(err.kind(), "no_schema", "{err}");
    assert!(err.to_string().contains("\"Stops\""), "{err}");

    // Older than every version: an error naming both positions, never v1's types.
    let before_v1 = source_record(&db.trips.event('c', None, Some(&trip(9, 1, 1)), too_old, t.ts_ms, false), 5);
    let err = decode(&before_v1, &opts).unwrap_err();
    assert_eq!(err.kind(), "no_schema", "{err}");
    let position = |at: crate::demo::sqlserver::Lsns| {
        let text = crate::demo::sqlserver::lsn_text;
        let serial = at.serial.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
        SourcePosition::sqlserver_parts(&text(at.commit), at.change.map(text).as_deref(), serial).unwrap()
    };
    let (event_at, v1) = (position(too_old), position(v1_at));
    for part in [event_at.as_str(), v1.as_str(), "retention"] {
        assert!(err.to_string().contains(part), "{part} in {err}");
    }

    // A DROP of the table ends its last version: events before it still decode.
    let drop_at = t.commit(1);
    apply(db.trips.schema_change_at("DROP", drop_at, t.ts_ms, false));
    assert_eq!(change_with(&e3, &opts).after.unwrap().get("Fare"), Some(&Value::Decimal { unscaled: 5, scale: 4 }));
    let after_drop = source_record(&db.trips.event('c', None, Some(&trip(4, 1, 1)), t.commit(1), t.ts_ms, false), 6);
    let err = decode(&after_drop, &opts).unwrap_err();
    assert_eq!(err.kind(), "no_schema", "{err}");
    assert!(err.to_string().contains("dropped"), "{err}");
}

fn change_with(r: &SourceRecord, opts: &DecodeOptions) -> ChangeEvent {
    match decode(r, opts).unwrap() {
        Decoded::Change(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

/// A record captured from the real Debezium PostgreSQL connector
/// (`tests/fixtures/debezium-postgres/`, written by scripts/stack.d/connect/debezium-probe.sh).
fn real_fixture(name: &str) -> SourceRecord {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debezium-postgres").join(name);
    let f: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    SourceRecord {
        lineage: Lineage {
            topic: f["topic"].as_str().unwrap().into(),
            partition: 0,
            offset: f["offset"].as_i64().unwrap(),
        },
        key: Some(serde_json::to_vec(&f["key"]).unwrap().into()),
        value: (!f["value"].is_null()).then(|| serde_json::to_vec(&f["value"]).unwrap().into()),
        headers: vec![],
        timestamp_ms: None,
        generation: 0,
    }
}

#[test]
fn real_debezium_postgres_output_decodes_exactly() {
    let read = change(&real_fixture("read.json"));
    let create = change(&real_fixture("create.json"));
    let update = change(&real_fixture("update.json"));
    let delete = change(&real_fixture("delete.json"));
    assert_eq!((read.op, create.op, update.op, delete.op), (Op::Read, Op::Create, Op::Update, Op::Delete));
    assert!(read.position < create.position || read.key != create.key, "snapshot before streaming");
    assert!(update.position < delete.position);
    let a = update.after.as_ref().unwrap();
    assert_eq!(a.get("price"), Some(&Value::Decimal { unscaled: 0x270f, scale: 2 }), "numeric(10,2) 99.99");
    assert_eq!(a.get("amount"), Some(&Value::Decimal { unscaled: 0x04cb2f, scale: 5 }), "numeric without scale");
    assert_eq!(a.get("qty"), Some(&Value::Int(7)));
    assert_eq!(a.get("small"), Some(&Value::Int(-3)));
    assert_eq!(a.get("ratio"), Some(&Value::Float(1.5)));
    assert_eq!(a.get("active"), Some(&Value::Null));
    assert_eq!(
        a.get("created_at")
            .map(|v| match v {
                Value::Timestamp(n) => value::timestamp_text(*n),
                _ => String::new(),
            })
            .as_deref(),
        Some("2026-11-27T10:11:12.123456"),
        "timestamp: wall clock kept"
    );
    assert_eq!(a.get("created_ms"), Some(&Value::Timestamp(1_795_774_272_123_000_000)));
    assert_eq!(a.get("updated_at"), Some(&Value::ZonedTimestamp("2026-11-27T08:11:12.123456Z".into())));
    assert_eq!(
        a.get("day")
            .map(|v| match v {
                Value::Date(d) => value::date_text(*d),
                _ => String::new(),
            })
            .as_deref(),
        Some("2026-11-27")
    );
    assert_eq!(
        a.get("at_time")
            .map(|v| match v {
                Value::Time(n) => value::time_text(*n),
                _ => String::new(),
            })
            .as_deref(),
        Some("10:11:12.5")
    );
    assert_eq!(a.get("uid"), Some(&Value::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())));
    assert_eq!(a.get("data"), Some(&Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])));
    assert_eq!(a.get("doc"), Some(&Value::Json(Box::new(serde_json::json!({"a": [1, "x"], "b": 2})))));
    assert_eq!(a.get("tags"), Some(&Value::Json(Box::new(serde_json::json!(["blue"])))));
    assert_eq!(a.get("code"), Some(&Value::String("ab ".into())), "char(n) keeps its padding");
    assert!(matches!(decode(&real_fixture("tombstone.json"), &DecodeOptions::default()).unwrap(), Decoded::Tombstone));
    // A primary-key change: delete of the old key, tombstone, create of the new.
    let pk_d = change(&real_fixture("pk-change-delete.json"));
    let pk_c = change(&real_fixture("pk-change-create.json"));
    assert_eq!((pk_d.op, pk_c.op), (Op::Delete, Op::Create));
    assert_ne!(pk_d.key, pk_c.key);
}

#[test]
fn signal_table_rows_are_control_data_not_changes() {
    let v = r#"{"op":"c","source":{"connector":"sqlserver","table":"debezium_signal","commit_lsn":"00000001:00000001:0001"},"after":{"id":"ad-hoc-1","type":"execute-snapshot","data":"{}"}}"#;
    let r = raw("vexere.vexere.dbo.debezium_signal", Some(r#"{"id":"ad-hoc-1"}"#), Some(v));
    assert!(matches!(decode(&r, &DecodeOptions::default()).unwrap(), Decoded::NotAChange("signal table row")));
}

#[test]
fn schema_scales_out_of_range_are_errors_not_wraps() {
    use crate::decode::value::{FieldType, ValueError};
    use serde_json::json;
    let decimal = |params: Json| {
        FieldType::from_schema(
            &json!({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": params}),
        )
    };
    // 2^32 + 2 would wrap to scale 2 with `as u32`.
    for params in [
        json!({"scale": 4_294_967_298_u64}),
        json!({"scale": "-2"}),
        json!({"scale": -2}),
        json!({"scale": "4294967298"}),
    ] {
        let err = value::typed("Fare", &decimal(params.clone()), &json!("AQ==")).unwrap_err();
        assert!(matches!(err, ValueError::MissingScale { .. } | ValueError::ScaleOutOfRange { .. }), "{params}: {err}");
    }
    // A scale that fits u32 but would make decimal text gigabytes long.
    let err = value::typed("Fare", &decimal(json!({"scale": "2147483648"})), &json!("AQ==")).unwrap_err();
    assert!(matches!(err, ValueError::ScaleOutOfRange { .. }), "{err}");
    let precision = FieldType::from_schema(
        &json!({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2", "connect.decimal.precision": 4_294_967_306_u64}}),
    );
    assert_eq!(precision.precision, None, "a precision over u32 is not wrapped");
    let vsd = FieldType {
        connect: "struct".into(),
        name: Some("io.debezium.data.VariableScaleDecimal".into()),
        scale: None,
        precision: None,
    };
    for scale in [json!(4_294_967_297_u64), json!(2_147_483_648_u64), json!(16_384), json!(-1)] {
        let err = value::typed("amount", &vsd, &json!({"scale": scale, "value": "AQ=="})).unwrap_err();
        assert!(matches!(err, ValueError::ScaleOutOfRange { .. } | ValueError::WrongType { .. }), "{scale}: {err}");
    }
    assert_eq!(
        value::typed("amount", &vsd, &json!({"scale": 16_383, "value": "AQ=="})).unwrap(),
        Value::Decimal { unscaled: 1, scale: 16_383 }
    );
    // Through decode: the record is refused, naming it.
    let (good, _) = good_create();
    let text = String::from_utf8(good.value.clone().unwrap().to_vec()).unwrap();
    let huge = text.replace(r#""scale":"2""#, r#""scale":"3000000000""#);
    assert_ne!(huge, text);
    let r = SourceRecord { value: Some(huge.into()), ..good.clone() };
    let err = decode(&r, &DecodeOptions::default()).unwrap_err();
    assert_eq!(err.kind(), "bad_schema", "{err}");
}

mod fast_path;
mod property;

use fast_path::{
    fast_and_general_agree, fast_path_row, fast_path_table, good_create, schema_and_payload, with_key, with_payload,
};
