//! A change event becomes a [`Document`]: an id, the source position that
//! orders it, and either the new row or "deleted".
//!
//! The id comes from the primary key. A single-column key is its value as
//! text; a composite key joins its parts with `|`, escaping `\` and `|`
//! inside the parts so that two different keys never share an id.

use crate::decode::{ChangeEvent, Op, Row, SourcePosition, Value, value};
use crate::source::Lineage;

/// What a sink should hold for one key after this change.
#[derive(Clone, Debug)]
pub struct Document {
    pub id: String,
    pub position: SourcePosition,
    pub op: Op,
    pub source_ts_ms: Option<i64>,
    pub lineage: Lineage,
    /// Key columns, kept even for deletes so tombstones stay readable.
    pub key: Row,
    /// The row's columns; `None` means the row was deleted.
    pub body: Option<Row>,
}

/// A change that could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("{lineage}: key column {column:?} has a value that cannot form a document id ({found}); use scalar key columns")]
    BadKey { lineage: Lineage, column: String, found: String },
}

/// Maps one change event with the default mapping (all columns, key as id).
pub fn map_default(event: &ChangeEvent) -> Result<Document, MappingError> {
    let id = document_id(&event.key).map_err(|(column, found)| MappingError::BadKey { lineage: event.lineage.clone(), column, found })?;
    let body = match event.op {
        Op::Delete => None,
        Op::Create | Op::Update | Op::Read => event.after.clone().map(|mut row| {
            // An unavailable value (LOB before-image placeholder) is not data.
            row.columns.retain(|(_, v)| !matches!(v, Value::Unavailable));
            row
        }),
    };
    Ok(Document {
        id,
        position: event.position.clone(),
        op: event.op,
        source_ts_ms: event.source_ts_ms,
        lineage: event.lineage.clone(),
        key: event.key.clone(),
        body,
    })
}

/// The document id of a key; on failure names the column and its value.
pub fn document_id(key: &Row) -> Result<String, (String, String)> {
    let mut parts = Vec::with_capacity(key.columns.len());
    for (name, v) in &key.columns {
        let text = match v {
            Value::Int(i) => i.to_string(),
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Decimal { unscaled, scale } => value::decimal_text(*unscaled, *scale),
            Value::Date(d) => value::date_text(*d),
            Value::Timestamp(t) => value::timestamp_text(*t),
            Value::Time(t) => value::time_text(*t),
            Value::ZonedTimestamp(s) => s.clone(),
            Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
            Value::Float(f) => f.to_string(),
            other => return Err((name.clone(), format!("{other:?}"))),
        };
        parts.push(text);
    }
    if parts.len() == 1 {
        return Ok(parts.pop().unwrap_or_default());
    }
    Ok(parts.iter().map(|p| p.replace('\\', "\\\\").replace('|', "\\|")).collect::<Vec<_>>().join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cols: &[(&str, Value)]) -> Row {
        Row { columns: cols.iter().map(|(n, v)| (n.to_string(), v.clone())).collect() }
    }

    #[test]
    fn single_key_is_its_value() {
        assert_eq!(document_id(&key(&[("TripId", Value::Int(7))])).unwrap(), "7");
    }

    #[test]
    fn composite_keys_join_and_escape() {
        let a = document_id(&key(&[("A", Value::String("x|y".into())), ("B", Value::String("z".into()))])).unwrap();
        let b = document_id(&key(&[("A", Value::String("x".into())), ("B", Value::String("y|z".into()))])).unwrap();
        assert_eq!(a, "x\\|y|z");
        assert_eq!(b, "x|y\\|z");
        assert_ne!(a, b);
        assert_eq!(document_id(&key(&[("TripId", Value::Int(3)), ("SeatNo", Value::Int(12))])).unwrap(), "3|12");
    }

    #[test]
    fn null_key_part_is_refused() {
        let err = document_id(&key(&[("TripId", Value::Null)])).unwrap_err();
        assert_eq!(err.0, "TripId");
    }
}
