//! Turns a write into the two NDJSON lines of a bulk action. Every document
//! carries, beside its position, the Kafka partition and offset that wrote
//! it (`__projector.partition`/`.offset`), which order compaction deletes.

use std::io::Write as _;

use super::client::{Current, META_FIELD};
use crate::decode::{Value, value};
use crate::mapping::Document;
use crate::sink::Write;

/// The action and document lines: conditional `index` over an existing
/// document, `create` for a new one, and a conditional partial `update` when
/// some column's value was not captured or `keep_stored` (a field the source
/// dropped keeps its value under `on_drop: keep`), so the stored value survives.
pub fn write(out: &mut Vec<u8>, w: &Write, current: Option<&Current>, keep_stored: bool) {
    match current {
        // Only the deleted flag and the offset change: the stored position
        // (and values) stay, so the position guard still orders later events.
        Some(c) if w.doc.compaction => {
            action(out, "update", w, Some(c));
            let _ = writeln!(
                out,
                r#"{{"doc":{{"{META_FIELD}":{{"deleted":true,"partition":{},"offset":{}}}}}}}"#,
                w.doc.lineage.partition, w.doc.lineage.offset
            );
            return;
        }
        Some(c) if keep_stored || w.doc.is_partial() => {
            action(out, "update", w, Some(c));
            out.extend_from_slice(b"{\"doc\":");
            document(out, &w.doc);
            out.pop();
            out.extend_from_slice(b"}\n");
            return;
        }
        Some(c) => action(out, "index", w, Some(c)),
        None => action(out, "create", w, None),
    }
    document(out, &w.doc);
}

/// An action line, written straight into the body: the target and id as
/// JSON strings, and the sequence number and term the write is guarded by.
fn action(out: &mut Vec<u8>, verb: &str, w: &Write, guard: Option<&Current>) {
    let _ = write!(out, r#"{{"{verb}":{{"_index":"#);
    // Through the version's write alias (see `client::write_alias`): the
    // name's closing quote gives way to the suffix's.
    let _ = serde_json::to_writer(&mut *out, &*w.target);
    out.pop();
    out.extend_from_slice(super::client::WRITE_ALIAS_SUFFIX.as_bytes());
    out.push(b'"');
    out.extend_from_slice(b",\"_id\":");
    let _ = serde_json::to_writer(&mut *out, &w.doc.id);
    if let Some(c) = guard {
        let _ = write!(out, r#","if_seq_no":{},"if_primary_term":{}"#, c.seq_no, c.primary_term);
    }
    out.extend_from_slice(b"}}\n");
}

/// The document line: the row's columns (or only the key for a tombstone)
/// plus projector's bookkeeping.
pub fn document(out: &mut Vec<u8>, doc: &Document) {
    out.push(b'{');
    let (row, deleted) = match &doc.body {
        Some(row) => (row, false),
        None => (&doc.key, true),
    };
    for (name, v) in &row.columns {
        if matches!(v, Value::Unavailable) {
            continue;
        }
        let _ = serde_json::to_writer(&mut *out, name);
        out.push(b':');
        value_json(out, v);
        out.push(b',');
    }
    let _ = write!(
        out,
        r#""{META_FIELD}":{{"position":"{}","deleted":{deleted},"op":"{}","partition":{},"offset":{}"#,
        doc.position.as_str(),
        doc.op.as_str(),
        doc.lineage.partition,
        doc.lineage.offset
    );
    if let Some(ts) = doc.source_ts_ms {
        let _ = write!(out, r#","source_ts_ms":{ts}"#);
    }
    out.extend_from_slice(b"}}\n");
}

/// A value as Elasticsearch should index it.
pub fn value_json(out: &mut Vec<u8>, v: &Value) {
    let _ = match v {
        Value::Null | Value::Unavailable => write!(out, "null"),
        Value::Bool(b) => write!(out, "{b}"),
        Value::Int(i) => write!(out, "{i}"),
        Value::Float(f) if f.is_finite() => write!(out, "{f}"),
        Value::Float(_) => write!(out, "null"),
        // Exact digits as a JSON number: no f64 rounding on our side.
        Value::Decimal { unscaled, scale } => write!(out, "{}", value::DecimalText(*unscaled, *scale)),
        Value::String(s) | Value::ZonedTimestamp(s) => {
            serde_json::to_writer(&mut *out, s.as_str()).map_err(std::io::Error::other)
        }
        Value::Bytes(b) => {
            use base64::Engine;
            write!(out, "\"{}\"", base64::engine::general_purpose::STANDARD.encode(b))
        }
        Value::Date(d) => write!(out, "\"{}\"", value::DateText(*d)),
        Value::Time(t) => write!(out, "\"{}\"", value::TimeText(*t)),
        Value::Timestamp(t) => write!(out, "\"{}\"", value::TimestampText(*t)),
        Value::Json(j) => serde_json::to_writer(&mut *out, j).map_err(std::io::Error::other),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Op, Row, SourcePosition};
    use crate::source::Lineage;

    fn doc(body: Option<Row>) -> Document {
        Document {
            id: "7".into(),
            position: SourcePosition::from_stored("00ff"),
            op: if body.is_some() { Op::Update } else { Op::Delete },
            source_ts_ms: Some(1000),
            lineage: Lineage { topic: "t".into(), partition: 0, offset: 1 },
            key: Row { columns: vec![("TripId".into(), Value::Int(7))].into() },
            body,
            source_types: None,
            compaction: false,
        }
    }

    #[test]
    fn document_carries_columns_and_position() {
        let row = Row {
            columns: vec![
                ("TripId".into(), Value::Int(7)),
                ("Fare".into(), Value::Decimal { unscaled: 35_000_000, scale: 2 }),
                ("Note".into(), Value::Unavailable),
                ("Route".into(), Value::String("A \"B\"".into())),
            ]
            .into(),
        };
        let mut out = Vec::new();
        document(&mut out, &doc(Some(row)));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Fare"].to_string(), "350000.0");
        assert!(v.get("Note").is_none(), "unavailable values are never written");
        assert_eq!(v["Route"], "A \"B\"");
        assert_eq!(v[META_FIELD]["position"], "00ff");
        assert_eq!(v[META_FIELD]["deleted"], false);
        assert!(String::from_utf8(out).unwrap().contains("\"Fare\":350000.00,"));
    }

    #[test]
    fn a_partial_row_becomes_a_conditional_update_that_keeps_the_stored_value() {
        let row = Row { columns: vec![("TripId".into(), Value::Int(7)), ("Note".into(), Value::Unavailable)].into() };
        let w = Write { target: "trips".into(), doc: doc(Some(row)) };
        let mut out = Vec::new();
        write(
            &mut out,
            &w,
            Some(&Current { seq_no: 4, primary_term: 1, position: Some("00aa".into()), ..Current::default() }),
            false,
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"update":{"_index":"trips.writes","_id":"7","if_seq_no":4,"if_primary_term":1}}"#);
        let body: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(body["doc"]["TripId"], 7);
        assert!(body["doc"].get("Note").is_none(), "the unavailable column is left as stored");
        assert_eq!(body["doc"][META_FIELD]["position"], "00ff");
    }

    #[test]
    fn a_new_document_is_created_and_a_known_one_indexed_over_its_sequence_number() {
        let row = Row { columns: vec![("TripId".into(), Value::Int(7))].into() };
        let mut d = doc(Some(row));
        d.id = "a\"b".into();
        let w = Write { target: "trips-\"x\"".into(), doc: d };
        let first_line = |current: Option<&Current>| {
            let mut out = Vec::new();
            write(&mut out, &w, current, false);
            String::from_utf8(out).unwrap().lines().next().unwrap().to_string()
        };
        assert_eq!(first_line(None), r#"{"create":{"_index":"trips-\"x\".writes","_id":"a\"b"}}"#);
        assert_eq!(
            first_line(Some(&Current { seq_no: 4, primary_term: 2, ..Current::default() })),
            r#"{"index":{"_index":"trips-\"x\".writes","_id":"a\"b","if_seq_no":4,"if_primary_term":2}}"#
        );
    }

    #[test]
    fn a_compaction_delete_is_a_conditional_update_of_the_flag_and_offset_only() {
        let mut d = doc(None);
        d.compaction = true;
        d.lineage.offset = 9;
        let w = Write { target: "trips".into(), doc: d };
        let mut out = Vec::new();
        write(&mut out, &w, Some(&Current { seq_no: 4, primary_term: 1, ..Current::default() }), false);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"update":{"_index":"trips.writes","_id":"7","if_seq_no":4,"if_primary_term":1}}"#);
        let body: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(body, serde_json::json!({"doc": {META_FIELD: {"deleted": true, "partition": 0, "offset": 9}}}));
    }

    #[test]
    fn every_document_carries_the_kafka_partition_and_offset_that_wrote_it() {
        let mut out = Vec::new();
        document(&mut out, &doc(None));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v[META_FIELD]["partition"].as_i64(), v[META_FIELD]["offset"].as_i64()), (Some(0), Some(1)));
    }

    #[test]
    fn tombstone_keeps_key_and_marks_deleted() {
        let mut out = Vec::new();
        document(&mut out, &doc(None));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["TripId"], 7);
        assert_eq!(v[META_FIELD]["deleted"], true);
        assert_eq!(v[META_FIELD]["op"], "d");
    }
}
