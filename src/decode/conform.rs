//! What a record must satisfy against its own schema before any of it is
//! applied: every required (`optional: false`) field present and not null,
//! every declared field of its declared type, and the key naming the row its
//! image describes. The general path checks here; the fast path
//! ([`super::fast`]) checks the same things as it reads and leaves any doubt
//! to the general path.

use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::value::{self, FieldType, Value, ValueError};
use super::{DecodeError, Name, Op, Row, fast};
use crate::source::Lineage;

/// A Connect struct's fields and which of them it requires (`"optional":
/// false`, Connect's default): a row image, key or `source` block that lacks
/// a required field, has it null, or has a value of another type breaks its
/// own schema and is refused.
#[derive(Debug)]
pub(super) struct StructSchema {
    pub fields: Arc<[(Name, FieldType)]>,
    pub required: Box<[bool]>,
    /// How the fast path types the fields (None: it cannot, see [`fast::Kind::of_fields`]).
    pub kinds: Option<Box<[fast::Kind]>>,
}

impl StructSchema {
    pub(super) fn of(schema: &Json) -> Option<StructSchema> {
        StructSchema::from_fields(schema.get("fields")?.as_array()?.iter())
    }

    pub(super) fn from_fields<'a>(fields: impl Iterator<Item = &'a Json>) -> Option<StructSchema> {
        let (fields, required): (Vec<_>, Vec<_>) = fields
            .filter_map(|f| {
                let name = Name::from(f.get("field")?.as_str()?);
                let optional = f.get("optional").and_then(Json::as_bool).unwrap_or(false);
                Some(((name, FieldType::from_schema(f)), !optional))
            })
            .unzip();
        let kinds = fast::Kind::of_fields(&fields);
        Some(StructSchema { fields: Arc::from(fields), required: required.into(), kinds })
    }

    pub(super) fn fast(&self) -> Option<fast::RowSchema<'_>> {
        Some(fast::RowSchema { fields: &self.fields, kinds: self.kinds.as_deref()?, required: &self.required })
    }

    /// Checks a block's declared fields: present when required, not null
    /// when required, and of their declared type. `block` names it in errors.
    pub(super) fn check(&self, block: &str, m: &Map<String, Json>) -> Result<(), ValueError> {
        for ((name, ty), required) in self.fields.iter().zip(&self.required) {
            match m.get(name.as_str()) {
                None if *required => return Err(ValueError::Missing { field: name.to_string() }.within(block)),
                None => {}
                Some(Json::Null) if *required => {
                    return Err(ValueError::RequiredNull { field: name.to_string() }.within(block));
                }
                Some(v) => drop(value::typed(name, ty, v).map_err(|e| e.within(block))?),
            }
        }
        Ok(())
    }
}

/// The key must name the row the image describes: each key column the
/// image carries (`after`, or `before` for a delete) has the key's value.
/// Otherwise the record would write one row's values under another's id.
pub(super) fn key_agrees(
    lineage: &Lineage,
    op: Op,
    key: &Row,
    after: Option<&Row>,
    before: Option<&Row>,
) -> Result<(), DecodeError> {
    let Some(image) = (if op == Op::Delete { before } else { after }) else {
        return Ok(());
    };
    for (column, k) in &key.columns {
        let Some(v) = image.get(column) else { continue };
        // Bit-equal floats agree even when NaN; an unread value says nothing.
        let same = k == v
            || matches!((k, v), (Value::Float(a), Value::Float(b)) if a.to_bits() == b.to_bits())
            || matches!(v, Value::Unavailable);
        if !same {
            return Err(DecodeError::KeyMismatch {
                lineage: lineage.clone(),
                column: column.to_string(),
                key: format!("{k:?}"),
                row: format!("{v:?}"),
            });
        }
    }
    Ok(())
}

/// Types a row object by its schema; with `required` (from a Connect
/// schema), a required column that is missing or null is an error.
pub(super) fn row(
    m: Map<String, Json>,
    schema: Option<&[(Name, FieldType)]>,
    required: Option<&[bool]>,
) -> Result<Row, ValueError> {
    let mut columns = Vec::with_capacity(m.len());
    let mut required_seen = 0;
    for (i, (name, v)) in m.into_iter().enumerate() {
        // Columns come in schema order: try the same position first.
        let at = schema.and_then(|s| match s.get(i) {
            Some((n, _)) if *n == name => Some(i),
            _ => s.iter().position(|(n, _)| *n == name),
        });
        // A declared column shares its schema's name; only others allocate one.
        let (name, value) = match (schema, at) {
            (Some(s), Some(at)) => {
                if required.is_some_and(|r| r.get(at) == Some(&true)) {
                    if v.is_null() {
                        return Err(ValueError::RequiredNull { field: name });
                    }
                    required_seen += 1;
                }
                (s[at].0.clone(), value::typed(&name, &s[at].1, &v)?)
            }
            _ => (Name::from(name), value::untyped_owned(v)),
        };
        columns.push((name, value));
    }
    if let (Some(s), Some(required)) = (schema, required)
        && required_seen < required.iter().filter(|r| **r).count()
    {
        let missing = s.iter().zip(required).find(|((n, _), r)| **r && columns.iter().all(|(c, _)| c != n));
        if let Some(((name, _), _)) = missing {
            return Err(ValueError::Missing { field: name.to_string() });
        }
    }
    Ok(Row { columns: columns.into() })
}
