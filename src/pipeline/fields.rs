//! Typing new fields, once for every sink: before a target's writes go out,
//! each field they carry that the target is not known to have is typed (the
//! sink's declared type from the read-model file, else the Debezium schema
//! type, else a non-null value of the batch) and handed to
//! [`Sink::add_fields`]. Fields a target took are remembered, so a steady
//! stream of known fields costs one set lookup per field; a target found
//! missing is forgotten, so its re-created index or table gets its types.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::decode::Value;
use crate::mapping::TableMapping;
use crate::sink::{FieldSource, NewField, Sink, SinkError, Write};

/// The fields each target is known to have, shared by a sink's batches.
#[derive(Clone, Debug, Default)]
pub struct KnownFields(Arc<Mutex<HashMap<String, HashSet<String>>>>);

impl KnownFields {
    /// Adds to `target` the fields of `writes` it is not known to have.
    pub async fn add_new<S: Sink>(
        &self,
        sink: &S,
        table: &TableMapping,
        target: &str,
        writes: &[Write],
    ) -> Result<(), SinkError> {
        let new = self.type_new(sink, table, target, writes);
        // A target seen for the first time (or found missing) is always
        // handed to the sink, even with no typed field, so it can be created.
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner()).contains_key(target);
        if new.is_empty() && seen {
            return Ok(());
        }
        sink.add_fields(table, target, &new).await?;
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        known.entry(target.to_string()).or_default().extend(new.into_iter().map(|f| f.name));
        Ok(())
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
        for w in writes {
            let body = w.doc.body.as_ref().map(|b| b.columns.as_slice()).unwrap_or(&[]);
            for (name, value) in body.iter().chain(w.doc.key.columns.iter()) {
                if known.is_some_and(|k| k.contains(name.as_str())) || new.iter().any(|f| f.name == *name) {
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
}
