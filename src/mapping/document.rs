//! A change event becomes a [`Document`]: an id, the source position that
//! orders it, and either the mapped row or "absent" (deleted, or filtered out).
//!
//! The id comes from the key columns. A single-column key is its value as
//! text; a composite key joins its parts with `|`, escaping `\` and `|`
//! inside the parts so that two different keys never share an id. An update
//! that changes a `key:` mapping's columns also retires the old id (see
//! [`TableMapping::retired`]).
//!
//! A Kafka tombstone becomes a compaction delete ([`TableMapping::compaction_delete`]):
//! on a compacted topic the `d` event before it may be gone, so the
//! tombstone alone must delete the row. It carries only the Kafka key, so
//! its id is formed from the key alone, and it is ordered by Kafka offset.

use std::borrow::Cow;
use std::sync::Arc;

use super::types::SourceType;
use super::{TableMapping, expr};
use crate::decode::{ChangeEvent, FieldType, Name, Op, Row, SourcePosition, Text, Value, value};
use crate::source::Lineage;

/// What a sink should hold for one key after this change.
#[derive(Clone, Debug)]
pub struct Document {
    /// Held in place when short (a numeric key), shared with the record
    /// when it is a long text key: forming it rarely allocates.
    pub id: Text,
    pub position: SourcePosition,
    pub op: Op,
    pub source_ts_ms: Option<i64>,
    pub lineage: Lineage,
    /// Key columns, kept even for deletes so tombstones stay readable.
    pub key: Row,
    /// The mapped fields; `None` means the row is not in the read model
    /// (deleted at the source, or no longer matching the `where` filter).
    pub body: Option<Row>,
    /// The source columns' Connect types, when known (see [`TableMapping::output_type`]).
    pub source_types: Option<Arc<[(Name, FieldType)]>>,
    /// A compaction delete: a Kafka tombstone (see
    /// [`TableMapping::compaction_delete`]). It has no source position, so
    /// sinks guard it by Kafka offset instead: it deletes a row only when
    /// the row was last written from the same partition at a lower offset,
    /// and it leaves the row's stored position as it was.
    pub compaction: bool,
}

impl Document {
    /// True when some column's new value was not captured (a TOASTed or LOB
    /// column the connector marked unavailable): the sink must keep its
    /// stored value for that column instead of replacing the whole row.
    pub fn is_partial(&self) -> bool {
        self.body.as_ref().is_some_and(|b| b.columns.iter().any(|(_, v)| matches!(v, Value::Unavailable)))
    }
}

/// A change that could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error(
        "{lineage}: key column {column:?} has a value that cannot form a document id ({found}); use scalar, non-null key columns"
    )]
    BadKey { lineage: Lineage, column: String, found: String },
    #[error("{lineage}: key column {column:?} (from the mapping's `key:`) is not in the row; check the column name")]
    MissingKeyColumn { lineage: Lineage, column: String },
    #[error("{lineage}: column {column:?} does not match its source_type: {detail}")]
    SourceType { lineage: Lineage, column: String, detail: String },
}

impl MappingError {
    pub fn kind(&self) -> &'static str {
        match self {
            MappingError::BadKey { .. } => "bad_key",
            MappingError::MissingKeyColumn { .. } => "missing_key_column",
            MappingError::SourceType { .. } => "bad_source_type",
        }
    }
}

impl TableMapping {
    /// Maps one change event. The event is taken by value: its key,
    /// after-image, position and lineage move into the document instead of
    /// being copied (see [`TableMapping::documents`] for the caller that
    /// also needs [`TableMapping::retired`]).
    pub fn document(&self, event: ChangeEvent) -> Result<Document, MappingError> {
        let ChangeEvent { lineage, op, key: event_key, after, before, position, source_ts_ms, types } = event;
        let after = match after {
            Some(mut row) => {
                // Retyped in place: the after-image is this event's own.
                for (column, st) in &self.source_types {
                    if let Some(slot) = row.columns.iter_mut().find(|(n, _)| n == column) {
                        slot.1 = retyped(column, st, &slot.1).map_err(|detail| MappingError::SourceType {
                            lineage: lineage.clone(),
                            column: column.clone(),
                            detail,
                        })?;
                    }
                }
                Some(row)
            }
            None => None,
        };
        let key = match &self.key {
            None => event_key,
            Some(cols) => {
                let image = after.as_ref().or(before.as_ref());
                let mut key = Row::default();
                for c in cols {
                    let v = image.and_then(|r| r.get(c)).or_else(|| event_key.get(c)).ok_or_else(|| {
                        MappingError::MissingKeyColumn { lineage: lineage.clone(), column: c.to_string() }
                    })?;
                    key.columns.push((c.clone(), v.clone()));
                }
                key
            }
        };
        let id = document_id(&key).map_err(|(column, found)| MappingError::BadKey {
            lineage: lineage.clone(),
            column,
            found,
        })?;
        let body = match (op, after) {
            (Op::Delete, _) | (_, None) => None,
            (_, Some(row)) => {
                let passes = self.filter.as_ref().is_none_or(|(_, f)| expr::truthy(&f.eval(&row)));
                passes.then(|| self.shape(row))
            }
        };
        Ok(Document { id, position, op, source_ts_ms, lineage, key, body, source_types: types, compaction: false })
    }

    /// [`TableMapping::document`] and, for a `key:` mapping, the delete of
    /// the id the update moved away from ([`TableMapping::retired`]). Only
    /// then is the event copied, since `retired` reads its before-image.
    pub fn documents(&self, event: ChangeEvent) -> Result<(Document, Option<Document>), MappingError> {
        if self.key.is_none() {
            return Ok((self.document(event)?, None));
        }
        let doc = self.document(event.clone())?;
        let retired = self.retired(&event, &doc);
        Ok((doc, retired))
    }

    /// With a `key:` mapping an update may change the document id: the
    /// chosen columns are not Debezium's key, so no `d` + `c` pair says so.
    /// Then the document under the before-image's id must go: this is its
    /// delete, at the update's position (so the same guard orders it), or
    /// `None` when the id did not change or the before-image cannot tell
    /// (absent, or a key column it does not carry).
    pub fn retired(&self, event: &ChangeEvent, doc: &Document) -> Option<Document> {
        let cols = self.key.as_ref()?;
        let before = event.before.as_ref().filter(|_| event.after.is_some())?;
        let mut key = Row::default();
        for c in cols {
            let v = before.get(c).or_else(|| event.key.get(c))?;
            // Typed as the after-image was, so an unchanged key gives the same id.
            let v = match self.source_types.iter().find(|(n, _)| n == c) {
                Some((_, st)) => retyped(c, st, v).ok()?,
                None => v.clone(),
            };
            key.columns.push((c.clone(), v));
        }
        let id = document_id(&key).ok().filter(|id| *id != doc.id)?;
        Some(Document {
            id,
            position: doc.position.clone(),
            op: Op::Delete,
            source_ts_ms: doc.source_ts_ms,
            lineage: doc.lineage.clone(),
            key,
            body: None,
            source_types: doc.source_types.clone(),
            compaction: false,
        })
    }

    /// The delete a Kafka tombstone stands for, with `key` the tombstone's
    /// decoded Kafka key. `Ok(None)` when the document id cannot be formed
    /// from the Kafka key alone: a `key:` mapping naming a column the Kafka
    /// key does not carry (the pipeline skips such tombstones, counted).
    /// Its position is empty (below every real one) so a sink that ignored
    /// the flag would find it stale, never apply it as a newer delete.
    pub fn compaction_delete(&self, lineage: &Lineage, key: Row) -> Result<Option<Document>, MappingError> {
        let key = match &self.key {
            None => key,
            Some(cols) => {
                let mut chosen = Row::default();
                for c in cols {
                    let Some(v) = key.get(c) else { return Ok(None) };
                    // Typed as an after-image's value is, so both give one id.
                    let v = match self.source_types.iter().find(|(n, _)| n == c) {
                        Some((_, st)) => retyped(c, st, v).map_err(|detail| MappingError::SourceType {
                            lineage: lineage.clone(),
                            column: c.to_string(),
                            detail,
                        })?,
                        None => v.clone(),
                    };
                    chosen.columns.push((c.clone(), v));
                }
                chosen
            }
        };
        let id = document_id(&key).map_err(|(column, found)| MappingError::BadKey {
            lineage: lineage.clone(),
            column,
            found,
        })?;
        Ok(Some(Document {
            id,
            position: SourcePosition::from_stored(""),
            op: Op::Delete,
            source_ts_ms: None,
            lineage: lineage.clone(),
            key,
            body: None,
            source_types: None,
            compaction: true,
        }))
    }

    /// The source type of an output field: a column passed through or
    /// renamed keeps its column's type; value-mapped, computed and constant
    /// fields have none (sinks type them from their values).
    pub fn output_type(&self, field: &str, source: Option<&[(Name, FieldType)]>) -> Option<FieldType> {
        let column = match &self.fields {
            None => field,
            Some(fields) => {
                let f = fields.iter().find(|f| f.name == field)?;
                if f.values.is_some() {
                    return None;
                }
                f.column.as_str()
            }
        };
        let declared = self.source_types.iter().find(|(c, _)| c == column).map(|(_, st)| st.field_type());
        declared.or_else(|| source?.iter().find(|(c, _)| c == column).map(|(_, t)| t.clone()))
    }

    /// Selects, renames and value-maps columns, then adds computed fields and
    /// constants. Without `fields:` the row is moved, not copied.
    fn shape(&self, row: Row) -> Row {
        // Computed fields read the source row, which the output may take over.
        let computed: Vec<(Name, Value)> = self.computed.iter().map(|c| (c.name.clone(), c.expr.eval(&row))).collect();
        let mut out = match &self.fields {
            // Unavailable values stay as markers: the sink keeps what it has.
            None => row,
            Some(fields) => {
                let mut out = Row::default();
                for f in fields {
                    let v = row.get(&f.column).cloned().unwrap_or(Value::Null);
                    if matches!(v, Value::Unavailable) {
                        out.columns.push((f.name.clone(), v));
                        continue;
                    }
                    let v = match &f.values {
                        None => v,
                        Some(map) => {
                            let k = expr::text(&v);
                            match map.iter().find(|(mk, _)| *mk == k) {
                                Some((_, mapped)) => mapped.clone(),
                                None => f.default.clone().unwrap_or(v),
                            }
                        }
                    };
                    out.columns.push((f.name.clone(), v));
                }
                out
            }
        };
        out.columns.extend(computed);
        for (name, v) in &self.constants {
            out.columns.push((name.clone(), v.clone()));
        }
        out
    }
}

/// Applies a declared source type to a value that arrived without a schema.
/// Values that are already typed (the record had a schema) are kept.
fn retyped(column: &str, st: &SourceType, v: &Value) -> Result<Value, String> {
    let json = match v {
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
        }
        _ => return Ok(v.clone()),
    };
    if let (SourceType::Decimal { scale, .. }, Value::String(s) | Value::ZonedTimestamp(s)) = (st, v) {
        // decimal.handling.mode=string writes "350000.00"; precise writes base64.
        if let Some(Value::Decimal { unscaled, scale: written }) = value::parse_decimal_text(s) {
            if written <= *scale {
                let factor = 10i128.checked_pow(scale - written).ok_or("decimal too wide")?;
                return Ok(Value::Decimal {
                    unscaled: unscaled.checked_mul(factor).ok_or("decimal too wide")?,
                    scale: *scale,
                });
            }
            return Err(format!("{s:?} has more than {scale} decimal places"));
        }
    }
    value::typed(column, &st.field_type(), &json).map_err(|e| e.to_string())
}

/// The document id of a key; on failure names the column and its value.
pub fn document_id(key: &Row) -> Result<Text, (String, String)> {
    fn part((name, v): &(Name, Value)) -> Result<Cow<'_, str>, (String, String)> {
        match v {
            Value::Null | Value::Unavailable | Value::Json(_) => Err((name.to_string(), format!("{v:?}"))),
            other => Ok(expr::text(other)),
        }
    }
    // The common single-column key: its text is the id, formed without an
    // allocation for a number and shared with the row for a text.
    if let [only] = &key.columns[..] {
        return match only {
            (_, Value::Int(i)) => Ok(Text::display(i)),
            (_, Value::String(t)) => Ok(t.clone()),
            _ => part(only).map(Text::from),
        };
    }
    let parts = key.columns.iter().map(part).collect::<Result<Vec<_>, _>>()?;
    Ok(parts.iter().map(|p| p.replace('\\', "\\\\").replace('|', "\\|")).collect::<Vec<_>>().join("|").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cols: &[(&str, Value)]) -> Row {
        Row { columns: cols.iter().map(|(n, v)| (Name::from(*n), v.clone())).collect() }
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

    #[test]
    fn schemaless_decimal_is_retyped_exactly() {
        let st = SourceType::Decimal { precision: 12, scale: 2 };
        assert_eq!(
            retyped("Fare", &st, &Value::String("AhYOwA==".into())).unwrap(),
            Value::Decimal { unscaled: 35_000_000, scale: 2 }
        );
        assert_eq!(
            retyped("Fare", &st, &Value::String("350000.5".into())).unwrap(),
            Value::Decimal { unscaled: 35_000_050, scale: 2 }
        );
        assert!(retyped("Fare", &st, &Value::String("1.234".into())).is_err());
        let typed = Value::Decimal { unscaled: 1, scale: 2 };
        assert_eq!(retyped("Fare", &st, &typed).unwrap(), typed, "already typed values are kept");
    }
}
