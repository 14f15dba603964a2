//! Typing new fields, once for every sink: before a target's writes go out,
//! each field they carry that the target is not known to have is typed (the
//! sink's declared type from the read-model file, else the Debezium schema
//! type, else a non-null value of the batch) and handed to
//! [`Sink::add_fields`]. Fields a target took are remembered, so a steady
//! stream of known fields costs one map lookup per field; a target found
//! missing is forgotten, so its re-created index or table gets its types.
//!
//! A known field is remembered with the Debezium schema type it was typed
//! from: when a later write carries another one (an `ALTER COLUMN` at the
//! source), the field goes to the sink again, which widens it in place or
//! says it needs a rebuild ([`Retype`]); such a field stays unsettled, so
//! every later batch asks again until the target takes the new type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::decode::{FieldType, Value};
use crate::mapping::TableMapping;
use crate::sink::{FieldSource, NewField, Retype, Sink, SinkError, Write};

/// The fields each target is known to have, with the schema type each was
/// last typed from, shared by a sink's batches.
#[derive(Clone, Debug, Default)]
pub struct KnownFields(Arc<Mutex<HashMap<String, TargetFields>>>);

/// One target's known fields and the schema type each was last typed from.
type TargetFields = HashMap<String, Option<FieldType>>;

impl KnownFields {
    /// Adds to `target` the fields of `writes` it is not known to have, and
    /// hands it those whose schema type changed; returns the fields whose
    /// change the target cannot take in place.
    pub async fn add_new<S: Sink>(
        &self,
        sink: &S,
        table: &TableMapping,
        target: &str,
        writes: &[Write],
    ) -> Result<Vec<Retype>, SinkError> {
        let new = self.type_new(sink, table, target, writes);
        // A target seen for the first time (or found missing) is always
        // handed to the sink, even with no typed field, so it can be created.
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner()).contains_key(target);
        if new.is_empty() && seen {
            return Ok(Vec::new());
        }
        let retypes = sink.add_fields(table, target, &new).await?;
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fields = known.entry(target.to_string()).or_default();
        for f in new {
            if retypes.iter().any(|r| r.field == f.name) {
                continue;
            }
            let ft = match f.source {
                FieldSource::Schema(ft) => Some(ft),
                FieldSource::Declared | FieldSource::Value(_) => None,
            };
            fields.insert(f.name, ft);
        }
        Ok(retypes)
    }

    /// Forgets what `target` has (it was found missing and is re-created).
    pub fn forget(&self, target: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(target);
    }

    /// The fields of `writes` not known on `target`, each typed from the
    /// best source it has. A field with no type yet (only nulls, no schema,
    /// not declared) is left for a later batch.
    fn type_new<S: Sink>(&self, sink: &S, table: &TableMapping, target: &str, writes: &[Write]) -> Vec<NewField> {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let known = known.get(target);
        let mut new: Vec<NewField> = Vec::new();
        // The newest write decides a retyped field's type: a batch that
        // spans an ALTER carries both, and the target must hold the new one.
        let mut order: Vec<&Write> = writes.iter().collect();
        order.sort_by(|a, b| b.doc.position.cmp(&a.doc.position));
        for w in order {
            let body = w.doc.body.as_ref().map(|b| b.columns.as_slice()).unwrap_or(&[]);
            for (name, value) in body.iter().chain(w.doc.key.columns.iter()) {
                if new.iter().any(|f| f.name == *name) {
                    continue;
                }
                if let Some(was) = known.and_then(|k| k.get(name.as_str())) {
                    // Known: only a change of its schema type goes to the sink again.
                    let now = table.output_type(name, w.doc.source_types.as_deref());
                    if let (Some(was), Some(now)) = (was, now)
                        && *was != now
                        && !sink.declares(table, name)
                    {
                        new.push(NewField { name: name.to_string(), source: FieldSource::Schema(now) });
                    }
                    continue;
                }
                let source = if sink.declares(table, name) {
                    Some(FieldSource::Declared)
                } else if let Some(ft) = table.output_type(name, w.doc.source_types.as_deref()) {
                    Some(FieldSource::Schema(ft))
                } else if !matches!(value, Value::Null | Value::Unavailable) {
                    Some(FieldSource::Value(value.clone()))
                } else {
                    None
                };
                if let Some(source) = source {
                    new.push(NewField { name: name.to_string(), source });
                }
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{FieldType, Op, Row};
    use crate::pipeline::testing::{self, Scripted};

    /// A sink whose read-model file declares a type for `Declared`.
    fn declaring() -> Scripted {
        Scripted { declared: &["Declared"], ..Scripted::new(|_, _| Ok(vec![])) }
    }

    fn write(columns: Vec<(&str, Value)>, schema: Vec<(&str, FieldType)>) -> Write {
        let mut w = testing::write("1", "01", Op::Update, 0);
        w.doc.body =
            Some(Row { columns: columns.into_iter().map(|(n, v)| (crate::decode::Name::from(n), v)).collect() });
        w.doc.source_types = Some(schema.into_iter().map(|(n, t)| (crate::decode::Name::from(n), t)).collect());
        w
    }

    #[tokio::test]
    async fn declared_type_beats_schema_type_beats_value_and_known_fields_are_not_retyped() {
        let model = testing::model();
        let table = &model.tables[0];
        let int64 = FieldType { connect: "int64".into(), ..Default::default() };
        let w = write(
            vec![
                ("Declared", Value::Int(1)),
                ("Schema", Value::Int(2)),
                ("Value", Value::Bool(true)),
                ("Null", Value::Null),
            ],
            vec![("Declared", int64.clone()), ("Schema", int64.clone())],
        );
        let fields = KnownFields::default();
        let typed = fields.type_new(&declaring(), table, "t", std::slice::from_ref(&w));
        assert_eq!(
            typed,
            vec![
                NewField { name: "Declared".into(), source: FieldSource::Declared },
                NewField { name: "Schema".into(), source: FieldSource::Schema(int64) },
                NewField { name: "Value".into(), source: FieldSource::Value(Value::Bool(true)) },
            ],
            "a field with only nulls waits for a typed value"
        );
        fields.add_new(&declaring(), table, "t", std::slice::from_ref(&w)).await.unwrap();
        assert!(fields.type_new(&declaring(), table, "t", std::slice::from_ref(&w)).is_empty());
        fields.forget("t");
        assert_eq!(fields.type_new(&declaring(), table, "t", std::slice::from_ref(&w)).len(), 3);
    }

    #[tokio::test]
    async fn a_known_field_whose_schema_type_changed_goes_to_the_sink_again_with_the_newest_type() {
        let model = testing::model();
        let table = &model.tables[0];
        let ft = |connect: &str| FieldType { connect: connect.into(), ..Default::default() };
        let sink = Scripted::new(|_, _| Ok(vec![]));
        let fields = KnownFields::default();
        let old = write(vec![("Seats", Value::Int(1))], vec![("Seats", ft("int16"))]);
        fields.add_new(&sink, table, "t", std::slice::from_ref(&old)).await.unwrap();
        assert!(fields.type_new(&sink, table, "t", std::slice::from_ref(&old)).is_empty());
        let mut new = write(vec![("Seats", Value::Int(40_000))], vec![("Seats", ft("int32"))]);
        new.doc.position = crate::decode::SourcePosition::from_stored("02");
        let both = [new.clone(), old.clone()];
        let retyped = fields.type_new(&sink, table, "t", &both);
        assert_eq!(
            retyped,
            vec![NewField { name: "Seats".into(), source: FieldSource::Schema(ft("int32")) }],
            "the newest write's type, whatever the order"
        );
        fields.add_new(&sink, table, "t", &both).await.unwrap();
        assert!(fields.type_new(&sink, table, "t", &both[..1]).is_empty(), "taken: not asked again");
    }
}
