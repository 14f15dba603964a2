//! Explicit index mappings. The index is created before the first write
//! with `dynamic: false`, projector's bookkeeping fields and every type the
//! read-model file fixes. Every other field is mapped from its decoded,
//! schema-typed value (not from Elasticsearch's guess at JSON) just before
//! the first bulk request that carries a non-null value for it; a column
//! added at the source is mapped the same way when it first appears.
//!
//! Default types: integers `long`, floats `double`, decimals `double` (the
//! exact digits stay in `_source`; use `scaled_float(N)` to index them
//! exactly on clusters that have mapper-extras), text `keyword` (use `text`
//! for full-text search), booleans `boolean`, dates `date`, wall-clock
//! timestamps `date_nanos`, `datetimeoffset` `date`, times `keyword`,
//! bytes `binary`, anything else an unindexed `object`.

use serde_json::{Value as Json, json};

use super::client::META_FIELD;
use crate::decode::Value;
use crate::mapping::ElasticsearchTarget;

/// The Elasticsearch type for a decoded value; `None` for null.
pub fn value_type(v: &Value) -> Option<Json> {
    Some(match v {
        Value::Null | Value::Unavailable => return None,
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Int(_) => json!({"type": "long"}),
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

/// Bookkeeping fields every projector index has.
pub fn meta_properties() -> Json {
    json!({"properties": {
        "position": {"type": "keyword"},
        "deleted": {"type": "boolean"},
        "op": {"type": "keyword"},
        "source_ts_ms": {"type": "date", "format": "epoch_millis"}
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
}
