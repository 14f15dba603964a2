//! Explicit index mappings. The index is created before the first write
//! with `dynamic: false`, projector's bookkeeping fields and every type the
//! read-model file fixes (and re-created with that mapping if it is deleted
//! while projector runs). Every other field is mapped just before the first
//! bulk request that carries it, typed by the pipeline's precedence: the
//! file's declared type, else the Debezium schema type, else the decoded
//! value (never Elasticsearch's guess at JSON). A column added at the source,
//! or a type declared after the index was created, is mapped the same way
//! when the column first appears.
//!
//! Default types: integers `long`, floats `double`, decimals `double` (the
//! exact digits stay in `_source`; use `scaled_float(N)` to index them
//! exactly on clusters that have mapper-extras), text `keyword` (use `text`
//! for full-text search), booleans `boolean`, dates `date`, wall-clock
//! timestamps `date_nanos`, `datetimeoffset` `date`, times `keyword`,
//! bytes `binary`, anything else an unindexed `object`.

use serde_json::{Value as Json, json};

use super::client::META_FIELD;
use crate::decode::{FieldType, Text, Value};
use crate::mapping::ElasticsearchTarget;
use crate::sink::TypeChange;

/// The Elasticsearch type for a decoded value; `None` for null.
pub fn value_type(v: &Value) -> Option<Json> {
    Some(match v {
        Value::Null | Value::Unavailable => return None,
        Value::Bool(_) => json!({"type": "boolean"}),
        // Elasticsearch truncates 1.5 to 1 in a long by default: refused instead.
        Value::Int(_) => json!({"type": "long", "coerce": false}),
        Value::Float(_) | Value::Decimal { .. } => json!({"type": "double"}),
        Value::String(_) => json!({"type": "keyword"}),
        Value::Bytes(_) => json!({"type": "binary"}),
        Value::Date(_) => json!({"type": "date", "format": "strict_date"}),
        Value::Time(_) => json!({"type": "keyword"}),
        Value::Timestamp(_) => json!({"type": "date_nanos", "format": "strict_date_optional_time_nanos"}),
        Value::ZonedTimestamp(_) => json!({"type": "date", "format": "strict_date_optional_time_nanos"}),
        Value::Json(_) => json!({"type": "object", "enabled": false}),
    })
}

/// The Elasticsearch type for a Debezium schema type: the type
/// [`value_type`] gives the value that schema decodes to. `None` for a
/// schema with no fixed type (a struct, an unknown connect type).
pub fn schema_type(ft: &FieldType) -> Option<Json> {
    let like = match ft.name.as_deref() {
        Some("org.apache.kafka.connect.data.Decimal" | "io.debezium.data.VariableScaleDecimal") => {
            Value::Decimal { unscaled: 0, scale: 0 }
        }
        Some("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date") => Value::Date(0),
        Some(
            "io.debezium.time.Time"
            | "org.apache.kafka.connect.data.Time"
            | "io.debezium.time.MicroTime"
            | "io.debezium.time.NanoTime",
        ) => Value::Time(0),
        Some(
            "io.debezium.time.Timestamp"
            | "org.apache.kafka.connect.data.Timestamp"
            | "io.debezium.time.MicroTimestamp"
            | "io.debezium.time.NanoTimestamp",
        ) => Value::Timestamp(0),
        Some("io.debezium.time.ZonedTimestamp") => Value::ZonedTimestamp(Text::default()),
        Some("io.debezium.data.Json") => Value::Json(Box::new(Json::Null)),
        Some("io.debezium.time.MicroDuration") => Value::Int(0),
        _ => match ft.connect.as_str() {
            "int8" | "int16" | "int32" | "int64" => Value::Int(0),
            "float" | "float32" | "float64" | "double" => Value::Float(0.0),
            "boolean" => Value::Bool(false),
            "string" => Value::String(Text::default()),
            "bytes" => Value::Bytes(Vec::new()),
            _ => return None,
        },
    };
    value_type(&like)
}

/// How a mapped field (`current`, its mapping) follows a new source type:
/// unchanged when the new type maps to the same field type (and, for a
/// `scaled_float` or an integer type, its decimals fit), else a rebuild,
/// since Elasticsearch never changes a field's type in place.
pub fn classify(current: &Json, ft: &FieldType) -> TypeChange {
    let Some(wanted) = schema_type(ft) else { return TypeChange::Unchanged };
    let (have, want) = (current["type"].as_str().unwrap_or("object"), wanted["type"].as_str().unwrap_or("object"));
    let decimals = ft.scale.unwrap_or(0);
    let decimal = want == "double" && ft.name.as_deref().is_some_and(|n| n.ends_with("Decimal"));
    let integer = matches!(have, "long" | "integer" | "short" | "byte");
    match have {
        "scaled_float" if decimal || want == "long" => {
            let factor = current["scaling_factor"].as_f64().unwrap_or(1.0);
            let needed = 10f64.powi(i32::try_from(decimals).unwrap_or(i32::MAX));
            if needed <= factor {
                TypeChange::Unchanged
            } else {
                TypeChange::Rebuild(format!(
                    "scaled_float with scaling_factor {factor} cannot hold {decimals} decimals"
                ))
            }
        }
        _ if integer && decimal && decimals == 0 => TypeChange::Unchanged,
        _ if integer && want == "long" => TypeChange::Unchanged,
        "double" | "float" if want == "long" || decimal => TypeChange::Unchanged,
        _ if have == want => TypeChange::Unchanged,
        "text" | "keyword" if want == "keyword" => TypeChange::Unchanged,
        _ => TypeChange::Rebuild(format!(
            "a {have} field cannot take {want} values; Elasticsearch never retypes a field in place"
        )),
    }
}

/// Bookkeeping fields every projector index has.
pub fn meta_properties() -> Json {
    json!({"properties": {
        "position": {"type": "keyword"},
        "deleted": {"type": "boolean"},
        "op": {"type": "keyword"},
        "source_ts_ms": {"type": "date", "format": "epoch_millis"},
        "partition": {"type": "integer"},
        "offset": {"type": "long"}
    }})
}

/// The mapping to create an index with: fixed types plus `observed` fields.
pub fn index_mapping(es: &ElasticsearchTarget, observed: &[(String, Json)]) -> Json {
    let mut props = serde_json::Map::new();
    props.insert(META_FIELD.to_string(), meta_properties());
    for (field, ty) in &es.types {
        props.insert(field.clone(), ty.clone());
    }
    for (field, ty) in observed {
        props.entry(field.clone()).or_insert_with(|| ty.clone());
    }
    json!({"dynamic": false, "properties": props})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_decoded_value_not_json_guessing() {
        assert_eq!(value_type(&Value::Int(1)).unwrap()["type"], "long");
        assert_eq!(value_type(&Value::Decimal { unscaled: 1, scale: 2 }).unwrap()["type"], "double");
        assert_eq!(value_type(&Value::Timestamp(0)).unwrap()["type"], "date_nanos");
        // A numeric-looking string stays a keyword: the schema said string.
        assert_eq!(value_type(&Value::String("123".into())).unwrap()["type"], "keyword");
        assert!(value_type(&Value::Null).is_none());
    }

    #[test]
    fn a_new_field_type_needs_a_rebuild_and_a_compatible_one_does_not() {
        let dec = |scale| FieldType {
            connect: "bytes".into(),
            name: Some("org.apache.kafka.connect.data.Decimal".into()),
            scale: Some(scale),
            precision: Some(12),
        };
        let int = FieldType { connect: "int32".into(), ..Default::default() };
        let string = FieldType { connect: "string".into(), ..Default::default() };
        let long = value_type(&Value::Int(0)).unwrap();
        assert_eq!(long["coerce"], false, "a long refuses 1.5 instead of truncating it");
        assert_eq!(classify(&json!({"type": "double"}), &dec(4)), TypeChange::Unchanged);
        assert_eq!(classify(&long, &int), TypeChange::Unchanged);
        assert!(matches!(classify(&long, &dec(2)), TypeChange::Rebuild(_)), "an integer field receiving decimals");
        let scaled = json!({"type": "scaled_float", "scaling_factor": 100});
        assert_eq!(classify(&scaled, &dec(2)), TypeChange::Unchanged);
        assert!(matches!(classify(&scaled, &dec(4)), TypeChange::Rebuild(_)));
        assert!(matches!(classify(&json!({"type": "keyword"}), &int), TypeChange::Rebuild(_)));
        assert!(matches!(classify(&json!({"type": "text"}), &int), TypeChange::Rebuild(_)));
        assert_eq!(classify(&json!({"type": "keyword"}), &string), TypeChange::Unchanged);
    }

    #[test]
    fn schema_types_map_like_the_values_they_decode_to() {
        let ft = |connect: &str, name: Option<&str>| FieldType {
            connect: connect.into(),
            name: name.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(schema_type(&ft("int16", None)).unwrap()["type"], "long");
        assert_eq!(schema_type(&ft("bytes", Some("org.apache.kafka.connect.data.Decimal"))).unwrap()["type"], "double");
        assert_eq!(schema_type(&ft("int64", Some("io.debezium.time.MicroTimestamp"))).unwrap()["type"], "date_nanos");
        assert_eq!(schema_type(&ft("string", Some("io.debezium.time.ZonedTimestamp"))).unwrap()["type"], "date");
        assert_eq!(schema_type(&ft("string", None)).unwrap()["type"], "keyword");
        assert!(schema_type(&ft("struct", None)).is_none());
    }
}
