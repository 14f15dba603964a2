//! The cached-schema fast path against the general path: the same events,
//! the same results (rows, errors, kinds), and a record that breaks its own
//! schema refused whole on both.

use super::*;

#[test]
fn repeated_schemas_are_reused_and_a_changed_schema_replaces_them() {
    let opts = DecodeOptions::default();
    let mut db = BusBooking::new("vexere");
    let mut t = Timeline::default();
    let first = source_record(&db.trips.event('c', None, Some(&trip(1, 35_000_000, 1)), t.commit(1), t.ts_ms, true), 0);
    change_with(&first, &opts);
    // The second record of the same schema takes the cached path and types the same.
    let second = source_record(&db.trips.event('c', None, Some(&trip(2, 12_345, 1)), t.commit(1), t.ts_ms, true), 1);
    assert!(
        opts.schemas.split(avro::Part::Value, &second.lineage.topic, second.value.as_deref().unwrap()).is_some(),
        "the schema was learned"
    );
    let ev = change_with(&second, &opts);
    assert_eq!(ev.after.unwrap().get("Fare"), Some(&Value::Decimal { unscaled: 12_345, scale: 2 }));
    // The column is retyped to scale 4: the cache misses and the new schema wins.
    let fare = db.trips.columns.iter_mut().find(|c| c.name == "Fare").unwrap();
    *fare = crate::demo::sqlserver::Column::new("Fare", "bytes").decimal(14, 4);
    let third = source_record(&db.trips.event('c', None, Some(&trip(3, 12_345, 1)), t.commit(1), t.ts_ms, true), 2);
    let ev = change_with(&third, &opts);
    assert_eq!(ev.after.unwrap().get("Fare"), Some(&Value::Decimal { unscaled: 12_345, scale: 4 }));
    let ev = change_with(&third, &opts);
    assert_eq!(
        ev.after.unwrap().get("Fare"),
        Some(&Value::Decimal { unscaled: 12_345, scale: 4 }),
        "and is cached in turn"
    );
}

#[test]
fn fast_path_text_shares_the_record_and_escaped_text_is_unescaped() {
    let opts = DecodeOptions::default();
    let db = BusBooking::new("vexere");
    let mut t = Timeline::default();
    let mut row = trip(1, 35_000_000, 1);
    row[1].1 = serde_json::json!("Sai Gon - Da Lat, by the mountain pass");
    row[2].1 = serde_json::json!("Phương \"Trang\" Limousine, the long name");
    let r = source_record(&db.trips.event('c', None, Some(&row), t.commit(1), t.ts_ms, true), 0);
    change_with(&r, &opts);
    // The second decode takes the cached-schema path.
    let after = change_with(&r, &opts).after.unwrap();
    let record = r.value.as_ref().unwrap();
    let (Some(Value::String(route)), Some(Value::String(operator))) = (after.get("Route"), after.get("Operator"))
    else {
        panic!("text columns decode as text: {after:?}")
    };
    assert!(route.shares(record), "unescaped text is a slice of the record, not a copy");
    assert_eq!(*operator, "Phương \"Trang\" Limousine, the long name");
    assert!(!operator.shares(record), "text with escapes is unescaped into its own buffer");
    assert_eq!(Some(&after), change_with(&r, &DecodeOptions::default()).after.as_ref(), "as the general path reads it");
}

#[test]
fn cached_schema_path_still_reports_bad_payloads_and_other_layouts() {
    let opts = DecodeOptions::default();
    let db = BusBooking::new("vexere");
    let mut t = Timeline::default();
    let good = source_record(&db.trips.event('c', None, Some(&trip(1, 35_000_000, 1)), t.commit(1), t.ts_ms, true), 0);
    change_with(&good, &opts);
    let text = String::from_utf8(good.value.clone().unwrap().to_vec()).unwrap();
    // Same schema, truncated payload: an invalid-JSON error, not a panic or a wrong row.
    let mut bad = good.clone();
    bad.value = Some(Bytes::copy_from_slice(&text.as_bytes()[..text.len() - 40]));
    assert!(matches!(decode(&bad, &opts), Err(DecodeError::InvalidJson { .. })));
    // Same content, pretty-printed: not the compact layout, decoded the slow way.
    let mut pretty = good.clone();
    let v: Json = serde_json::from_str(&text).unwrap();
    pretty.value = Some(serde_json::to_vec_pretty(&v).unwrap().into());
    let ev = change_with(&pretty, &opts);
    assert_eq!(ev.after.unwrap().get("Fare"), Some(&Value::Decimal { unscaled: 35_000_000, scale: 2 }));
    // Trailing data after the envelope is not JSON.
    let mut trailing = good.clone();
    trailing.value = Some(format!("{text}}}").into());
    assert!(matches!(decode(&trailing, &opts), Err(DecodeError::InvalidJson { .. })));
}

/// A table with every kind the fast path types itself (ints, strings,
/// booleans, decimals, timestamps) and some it hands to `value::typed`
/// (float, micro time, date, zoned timestamp), with a composite key.
pub(super) fn fast_path_table() -> crate::demo::sqlserver::Table {
    use crate::demo::sqlserver::{Column, Table};
    Table {
        prefix: "fast",
        database: "vexere",
        schema: "dbo",
        name: "Bookings",
        columns: vec![
            Column::new("BookingId", "int64"),
            Column::new("SeatNo", "int16"),
            Column::new("Customer", "string"),
            Column::new("Amount", "bytes").decimal(12, 2),
            Column::new("BookedAt", "int64").semantic("io.debezium.time.Timestamp"),
            Column::new("UpdatedAt", "int64").semantic("io.debezium.time.NanoTimestamp"),
            Column::new("Paid", "boolean"),
            Column::new("Rating", "double").optional(),
            Column::new("Departs", "int64").semantic("io.debezium.time.MicroTime"),
            Column::new("Day", "int32").semantic("io.debezium.time.Date"),
            Column::new("Zoned", "string").semantic("io.debezium.time.ZonedTimestamp"),
            Column::new("PromoCode", "string").optional(),
            Column::new("Note", "string").optional(),
        ],
        key: vec!["BookingId", "SeatNo"],
    }
}

pub(super) fn fast_path_row(id: i64, version: i64, note: serde_json::Value) -> crate::demo::sqlserver::Image {
    use serde_json::json;
    vec![
        ("BookingId", json!(id)),
        ("SeatNo", json!(id % 40 + 1)),
        ("Customer", json!(["Nguyễn Văn An", "Tran \"Binh\" \\ \u{1F68C}", "Le\nMinh"][id as usize % 3])),
        (
            "Amount",
            json!(crate::demo::sqlserver::decimal_base64(if id % 2 == 0 {
                35_000_000 + version as i128 * 5_000
            } else {
                -(1_i128 << 70)
            })),
        ),
        ("BookedAt", json!(1_782_000_000_000_i64 + id * 1_000)),
        ("UpdatedAt", json!(-1_782_000_000_000_000_000_i64 + version)),
        ("Paid", json!(version % 2 == 0)),
        ("Rating", if id % 3 == 0 { json!(null) } else { json!(4.25 + version as f64) }),
        ("Departs", json!(3_723_000_001_i64)),
        ("Day", json!(19_000 + version)),
        ("Zoned", json!("2026-11-27T08:11:12.123456+07:00")),
        // Null optional column.
        ("PromoCode", if id % 2 == 0 { json!(null) } else { json!(format!("TET{id}")) }),
        ("Note", note),
    ]
}

/// Decodes `r` with a cache warmed by `warm` (the fast path) and with a
/// fresh cache (the general path), and checks that the two agree on every
/// field, or on the error.
pub(super) fn fast_and_general_agree(warm: &SourceRecord, r: &SourceRecord) -> Result<ChangeEvent, String> {
    let warmed = DecodeOptions::default();
    let _ = decode(warm, &warmed);
    let fast = decode(r, &warmed);
    let general = decode(r, &DecodeOptions::default());
    match (fast, general) {
        (Ok(Decoded::Change(f)), Ok(Decoded::Change(g))) => {
            assert_eq!(f.lineage, g.lineage);
            assert_eq!(f.op, g.op);
            // Debug text, so that NaN floats compare equal to themselves.
            assert_eq!(format!("{:?}", f.key), format!("{:?}", g.key));
            assert_eq!(format!("{:?}", f.after), format!("{:?}", g.after));
            assert_eq!(format!("{:?}", f.before), format!("{:?}", g.before));
            assert_eq!(f.position, g.position);
            assert_eq!(f.source_ts_ms, g.source_ts_ms);
            assert_eq!(f.types, g.types);
            Ok(f)
        }
        (Err(f), Err(g)) => {
            assert_eq!((f.kind(), f.to_string()), (g.kind(), g.to_string()));
            Err(f.to_string())
        }
        (Ok(f), Ok(g)) => {
            assert_eq!(format!("{f:?}"), format!("{g:?}"));
            Err(format!("{f:?}"))
        }
        (f, g) => panic!("fast path {f:?} but general path {g:?}"),
    }
}

/// The schema and payload texts of a `{"schema":S,"payload":P}` value.
pub(super) fn schema_and_payload(r: &SourceRecord) -> (String, String) {
    let (schema, payload) = super::schema_cache::schema_and_payload(r.value.as_deref().unwrap()).unwrap();
    (schema.to_string(), payload.to_string())
}

pub(super) fn with_payload(r: &SourceRecord, payload: &str) -> SourceRecord {
    let (schema, _) = schema_and_payload(r);
    SourceRecord { value: Some(format!(r#"{{"schema":{schema},"payload":{payload}}}"#).into()), ..r.clone() }
}

#[test]
fn fast_path_decodes_exactly_like_the_general_path() {
    use crate::decode::value::UNAVAILABLE_PLACEHOLDER;
    use serde_json::json;
    let table = fast_path_table();
    let mut t = Timeline::default();
    let snap = t.snapshot();
    let read = source_record(&table.event('r', None, Some(&fast_path_row(3, 1, json!(null))), snap, t.ts_ms, true), 0);
    let create = source_record(
        &table.event('c', None, Some(&fast_path_row(4, 1, json!("first"))), t.commit(1), t.ts_ms, true),
        1,
    );
    // An update whose before-image has a LOB the connector could not read.
    let update = source_record(
        &table.event(
            'u',
            Some(&fast_path_row(5, 1, json!(UNAVAILABLE_PLACEHOLDER))),
            Some(&fast_path_row(5, 2, json!("second"))),
            t.commit(12),
            t.ts_ms,
            true,
        ),
        2,
    );
    let delete = source_record(
        &table.event('d', Some(&fast_path_row(6, 3, json!("gone"))), None, t.commit(1), t.ts_ms, true),
        3,
    );
    for r in [&read, &create, &update, &delete] {
        // The fast path really takes these records (it is not falling back).
        let warmed = DecodeOptions::default();
        decode(r, &warmed).unwrap();
        let (schema, payload) =
            warmed.schemas.split(avro::Part::Value, &r.lineage.topic, r.value.as_deref().unwrap()).unwrap();
        assert!(
            fast::envelope(r.value.as_ref().unwrap(), payload, schema.fast_envelope().unwrap()).is_some(),
            "{:?}",
            r.lineage
        );
        let (schema, payload) =
            warmed.schemas.split(avro::Part::Key, &r.lineage.topic, r.key.as_deref().unwrap()).unwrap();
        assert!(fast::key(r.key.as_ref().unwrap(), payload, schema.fast_fields().unwrap()).is_some());
        fast_and_general_agree(&create, r).unwrap();
    }
    let u = fast_and_general_agree(&create, &update).unwrap();
    assert_eq!(u.op, Op::Update);
    let (before, after) = (u.before.unwrap(), u.after.unwrap());
    assert_eq!(before.get("Note"), Some(&Value::Unavailable));
    assert_eq!(after.get("Amount"), Some(&Value::Decimal { unscaled: -(1 << 70), scale: 2 }));
    assert_eq!(after.get("PromoCode"), Some(&Value::String("TET5".into())));
    assert_eq!(after.get("Rating"), Some(&Value::Float(6.25)));
    assert_eq!(u.key.columns, vec![("BookingId".into(), Value::Int(5)), ("SeatNo".into(), Value::Int(6))]);
    let d = fast_and_general_agree(&create, &delete).unwrap();
    assert!(d.after.is_none());
    assert_eq!(d.before.unwrap().get("PromoCode"), Some(&Value::Null), "a null optional column");
    let r = fast_and_general_agree(&create, &read).unwrap();
    assert_eq!(r.after.unwrap().get("Customer"), Some(&Value::String("Nguyễn Văn An".into())));
}

#[test]
fn unusual_payloads_leave_the_fast_path_with_the_same_result() {
    let table = fast_path_table();
    let mut t = Timeline::default();
    let good = source_record(
        &table.event('c', None, Some(&fast_path_row(4, 1, serde_json::json!("n"))), t.commit(1), t.ts_ms, true),
        1,
    );
    let (_, payload) = schema_and_payload(&good);
    let src = r#""source":{"version":"3.5.2.Final","connector":"sqlserver","name":"fast","db":"vexere","schema":"dbo","table":"Bookings","commit_lsn":"0000002a:00000310:0003","change_lsn":"0000002a:00000308:0002","event_serial_no":2,"ts_ms":5}"#;
    let row = r#"{"BookingId":4,"SeatNo":5,"Customer":"x","Amount":"AhYOwA==","BookedAt":1,"UpdatedAt":2,"Paid":true,"Rating":null,"Departs":1,"Day":1,"Zoned":"z","PromoCode":null,"Note":null}"#;
    let cases = [
        // Field and value variations that decode.
        format!(r#"{{"before":null,"after":{row},{src},"op":"c"}}"#),
        format!(
            r#"{{"after":{row},{src},"op":"c","transaction":{{"id":"1","total_order":[1,2.5e3,{{}}]}},"ts_ms":1}}"#
        ),
        format!(r#"{{"after":{row},{src},"op":"u","before":{{"BookingId":4}}}}"#),
        format!(
            r#"{{"after":{row},"source":{{"connector":"sqlserver","commit_lsn":"1:2:3","change_lsn":7,"event_serial_no":"9","ts_ms":-1}},"op":"r"}}"#
        ),
        format!(r#"{{"after":{row},"source":{{"connector":"postgresql","lsn":"42","ts_ms":1.5}},"op":"c"}}"#),
        format!(
            r#"{{"after":{},{src},"op":"c"}}"#,
            row.replace(r#""Customer":"x""#, r#""Customer":"\u0041\ud83d\ude8c""#)
        ),
        format!(
            r#"{{"after":{},{src},"\u006fp":"c"}}"#,
            row.replace(r#""BookingId":4"#, r#""BookingId":9223372036854775807"#)
        ),
        // Left to the general path: duplicates, order, types it reports on.
        format!(r#"{{"after":{row},{src},"op":"c","op":"u"}}"#),
        format!(r#"{{"after":{},{src},"op":"c"}}"#, row.replace(r#""Paid":true"#, r#""Paid":true,"Paid":false"#)),
        format!(
            r#"{{"after":{},{src},"op":"c"}}"#,
            row.replace(r#""BookingId":4,"SeatNo":5"#, r#""SeatNo":5,"BookingId":4"#)
        ),
        format!(r#"{{"after":{},{src},"op":"c"}}"#, row.replace(r#""Note":null"#, r#""Note":null,"Extra":[1]"#)),
        format!(r#"{{"after":{},{src},"op":"c"}}"#, row.replace(r#""BookingId":4"#, r#""BookingId":4.0"#)),
        format!(
            r#"{{"after":{},{src},"op":"c"}}"#,
            row.replace(r#""BookingId":4"#, r#""BookingId":9223372036854775808"#)
        ),
        format!(r#"{{"after":{},{src},"op":"c"}}"#, row.replace(r#""Amount":"AhYOwA==""#, r#""Amount":"%%""#)),
        format!(r#"{{"after":{},{src},"op":"c"}}"#, row.replace(r#""Amount":"AhYOwA==""#, r#""Amount":12.5"#)),
        format!(r#"{{"after":{},{src},"op":"c"}}"#, row.replace(r#""Customer":"x""#, r#""Customer":7"#)),
        format!(r#"{{"after":{row},{src},"op":"x"}}"#),
        format!(r#"{{"after":{row},{src},"op":null}}"#),
        format!(r#"{{"after":{row},{src}}}"#),
        format!(r#"{{"after":null,{src},"op":"c"}}"#),
        format!(r#"{{"after":[],{src},"op":"c"}}"#),
        format!(r#"{{"after":{row},"source":["sqlserver"],"op":"c"}}"#),
        format!(
            r#"{{"after":{row},"source":{{"connector":"sqlserver","table":"DEBEZIUM_SIGNAL","commit_lsn":"1:2:3"}},"op":"c"}}"#
        ),
        format!(
            r#"{{"after":{row},"source":{{"connector":"sqlserver","commit_lsn":"1:2:3","commit_lsn":"4:5:6"}},"op":"c"}}"#
        ),
        format!(
            r#"{{"after":{row},"source":{{"connector":"sqlserver","commit_lsn":"1:2:3","event_serial_no":-1}},"op":"c"}}"#
        ),
        format!(r#"{{"after":{row},"source":{{"connector":"sqlserver","commit_lsn":"1:2"}},"op":"c"}}"#),
        format!(r#"{{"after":{row},"source":{{"connector":"mysql"}},"op":"c"}}"#),
        format!(r#"{{"after":{row},{src},"op":"c","ts_ms":1e400}}"#),
        format!(r#"{{"after":{row},{src},"op":"c","note":"\ud800"}}"#),
        format!(r#"{{"after":{row},{src},"op":"c"}} x"#),
        format!(r#"{{"after":{row},{src},"op":"c""#),
        "[1]".to_string(),
        "null".to_string(),
    ];
    let mut decoded = 0;
    for p in &cases {
        if fast_and_general_agree(&good, &with_payload(&good, p)).is_ok() {
            decoded += 1;
        }
    }
    // Some variations above now break the schema (a partial before-image,
    // an int where source.change_lsn is a string, a source block without its
    // required fields, a key the row contradicts): both paths refuse those.
    assert!(decoded >= 7, "the decodable variations decode ({decoded})");
    // Invalid UTF-8 inside a field the fast path skips.
    let mut bytes = with_payload(&good, &payload).value.unwrap().to_vec();
    let at = bytes.windows(9).position(|w| w == b"\"version\"").unwrap() + 3;
    bytes[at] = 0xff;
    let bad = SourceRecord { value: Some(bytes.into()), ..good.clone() };
    assert_eq!(
        fast_and_general_agree(&good, &bad).map(|_| ()).unwrap_err(),
        decode(&bad, &DecodeOptions::default()).unwrap_err().to_string()
    );
    // Keys: same schema, other payloads.
    let (key_schema, _) = {
        let k = SourceRecord { value: good.key.clone(), ..good.clone() };
        schema_and_payload(&k)
    };
    for key in [
        r#"{"BookingId":1,"SeatNo":2}"#,
        r#"{"BookingId":1}"#,
        r#"{"SeatNo":2,"BookingId":1}"#,
        "{}",
        "null",
        r#"{"BookingId":null,"SeatNo":2}"#,
        r#"{"BookingId":"1","SeatNo":2}"#,
    ] {
        let r =
            SourceRecord { key: Some(format!(r#"{{"schema":{key_schema},"payload":{key}}}"#).into()), ..good.clone() };
        let _ = fast_and_general_agree(&good, &r);
    }
}

/// A good create of [`fast_path_table`] and its payload as JSON, to mutate.
pub(super) fn good_create() -> (SourceRecord, Json) {
    let table = fast_path_table();
    let mut t = Timeline::default();
    let good = source_record(
        &table.event('c', None, Some(&fast_path_row(4, 1, serde_json::json!("n"))), t.commit(1), t.ts_ms, true),
        1,
    );
    let (_, payload) = schema_and_payload(&good);
    (good.clone(), serde_json::from_str(&payload).unwrap())
}

/// `r` with its key payload replaced (same key schema).
pub(super) fn with_key(r: &SourceRecord, key: &Json) -> SourceRecord {
    let k = SourceRecord { value: r.key.clone(), ..r.clone() };
    let (schema, _) = schema_and_payload(&k);
    SourceRecord { key: Some(format!(r#"{{"schema":{schema},"payload":{key}}}"#).into()), ..r.clone() }
}

/// Decodes `r` on the fast path (cache warmed by `warm`) and on the general
/// path, checks that both refuse it with the same error, and returns its kind.
fn refused_kind(warm: &SourceRecord, r: &SourceRecord) -> &'static str {
    if let Ok(ev) = fast_and_general_agree(warm, r) {
        panic!("a record that breaks its schema was decoded: {ev:?}")
    }
    let err = decode(r, &DecodeOptions::default()).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}: ", r.lineage)), "{err}");
    err.kind()
}

#[test]
fn a_record_that_breaks_its_own_schema_is_refused_on_both_paths() {
    use serde_json::json;
    let (good, payload) = good_create();
    fast_and_general_agree(&good, &good).unwrap();
    let edit = |f: &dyn Fn(&mut Json)| {
        let mut p = payload.clone();
        f(&mut p);
        with_payload(&good, &p.to_string())
    };
    let cases: Vec<(&str, SourceRecord, &str)> = vec![
        (
            "required column missing from after",
            edit(&|p| drop(p["after"].as_object_mut().unwrap().shift_remove("Customer"))),
            "missing_field",
        ),
        (
            "required column missing from before",
            edit(&|p| {
                let mut before = p["after"].clone();
                before.as_object_mut().unwrap().shift_remove("Paid");
                p["before"] = before;
                p["op"] = json!("u");
            }),
            "missing_field",
        ),
        ("required column null", edit(&|p| p["after"]["Customer"] = json!(null)), "required_null"),
        (
            "string where the row schema says int64",
            edit(&|p| p["after"]["BookedAt"] = json!("1782000004000")),
            "bad_value",
        ),
        (
            "string where the source schema says int64 (ts_ms)",
            edit(&|p| p["source"]["ts_ms"] = json!("5")),
            "bad_value",
        ),
        (
            "string where the source schema says int64 (event_serial_no)",
            edit(&|p| p["source"]["event_serial_no"] = json!("2")),
            "bad_value",
        ),
        (
            "number where the source schema says string (commit_lsn)",
            edit(&|p| p["source"]["commit_lsn"] = json!(42)),
            "bad_value",
        ),
        (
            "required source field missing",
            edit(&|p| drop(p["source"].as_object_mut().unwrap().shift_remove("db"))),
            "missing_field",
        ),
        ("string where the envelope schema says int64 (ts_ms)", edit(&|p| p["ts_ms"] = json!("7")), "bad_value"),
        ("decimal as a JSON number", edit(&|p| p["after"]["Amount"] = json!(12.5)), "decimal_not_bytes"),
        ("key and after disagree", edit(&|p| p["after"]["BookingId"] = json!(5)), "key_mismatch"),
        (
            "key and before of a delete disagree",
            edit(&|p| {
                let mut before = p["after"].clone();
                before["SeatNo"] = json!(9);
                p["before"] = before;
                p["after"] = json!(null);
                p["op"] = json!("d");
            }),
            "key_mismatch",
        ),
        (
            "string where the key schema says int64",
            with_key(&good, &json!({"BookingId": "4", "SeatNo": 5})),
            "bad_value",
        ),
        ("key column missing", with_key(&good, &json!({"BookingId": 4})), "missing_field"),
        ("key and after disagree (key side)", with_key(&good, &json!({"BookingId": 4, "SeatNo": 6})), "key_mismatch"),
        ("null value with a null key", SourceRecord { key: None, value: None, ..good.clone() }, "null_record"),
    ];
    for (what, r, kind) in cases {
        if kind == "null_record" {
            let err = decode(&r, &DecodeOptions::default()).unwrap_err();
            assert_eq!(err.kind(), kind, "{what}: {err}");
            assert!(err.to_string().starts_with(&format!("{}: ", r.lineage)), "{err}");
            continue;
        }
        assert_eq!(refused_kind(&good, &r), kind, "{what}");
    }
    // A Kafka tombstone (null value) with a key is still a tombstone.
    let tomb = SourceRecord { value: None, ..good.clone() };
    assert!(matches!(decode(&tomb, &DecodeOptions::default()).unwrap(), Decoded::Tombstone));
}
