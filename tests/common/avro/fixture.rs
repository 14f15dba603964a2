//! The test fixture encoder: writes the demo's JsonConverter fixtures the way
//! Confluent's AvroConverter would, with Avro schemas as `AvroData` derives
//! them from Connect schemas, and payloads in the wire format.
//!
//! It is test-only, so it lives outside the library: the integration tests
//! reach it as `common::avro::fixture`, and the decoder's unit tests include
//! this same file (`#[path]` in `src/decode/registry.rs`). That is why it
//! names no crate and takes plain (topic, key, value) rather than a demo
//! `Record`.

use std::collections::HashSet;

use apache_avro::Schema as AvroSchema;
use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use base64::Engine;
use serde_json::{Map, Value as Json, json};

/// First byte of Confluent's wire format (the decoder's `avro::MAGIC`; this
/// file also compiles inside the library's unit tests, so it names no crate).
const MAGIC: u8 = 0x00;

/// A `{schema, payload}` JSON fixture record, split into what an
/// AvroConverter registers (`<topic>-key`, `<topic>-value`) and writes.
#[derive(Clone, Debug)]
pub struct AvroParts {
    pub topic: String,
    /// (Avro schema, JSON payload) of the key.
    pub key: (Json, Json),
    /// Of the value; None for a tombstone.
    pub value: Option<(Json, Json)>,
}

/// Splits a fixture record (topic, key, value) made with `schemas = true`.
pub fn split(topic: &str, key: &[u8], value: Option<&[u8]>) -> Result<AvroParts, String> {
    let part = |bytes: &[u8]| -> Result<(Json, Json), String> {
        let j: Json = serde_json::from_slice(bytes).map_err(|e| format!("fixture is not JSON: {e}"))?;
        match (j.get("schema"), j.get("payload")) {
            (Some(s), Some(p)) => Ok((avro_schema(s), p.clone())),
            _ => Err("fixture has no {schema, payload}: make it with schemas = true".into()),
        }
    };
    Ok(AvroParts { topic: topic.to_string(), key: part(key)?, value: value.map(part).transpose()? })
}

/// The Avro schema Confluent's `AvroData` derives from a Connect schema.
pub fn avro_schema(connect: &Json) -> Json {
    to_avro(connect, &mut HashSet::new(), &mut 0)
}

fn to_avro(c: &Json, defined: &mut HashSet<String>, unnamed: &mut u32) -> Json {
    let t = c.get("type").and_then(Json::as_str).unwrap_or("string");
    let name = c.get("name").and_then(Json::as_str);
    let mut base = match t {
        "struct" => {
            let full = name.map(str::to_string).unwrap_or_else(|| {
                *unnamed += 1;
                format!("io.confluent.connect.avro.ConnectDefault{unnamed}")
            });
            if !defined.insert(full.clone()) {
                Json::String(full)
            } else {
                let (namespace, short) = full.rsplit_once('.').unwrap_or(("", full.as_str()));
                let fields: Vec<Json> = c
                    .get("fields")
                    .and_then(Json::as_array)
                    .map(|fs| {
                        fs.iter()
                            .map(|f| {
                                let mut field = json!({"name": f.get("field").cloned().unwrap_or(Json::Null), "type": to_avro(f, defined, unnamed)});
                                if f.get("optional").and_then(Json::as_bool) == Some(true) {
                                    field["default"] = f.get("default").cloned().unwrap_or(Json::Null);
                                }
                                field
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut r = json!({"type": "record", "name": short, "fields": fields});
                if !namespace.is_empty() {
                    r["namespace"] = json!(namespace);
                }
                if let Some(v) = c.get("version") {
                    r["connect.version"] = v.clone();
                }
                if let Some(n) = name {
                    r["connect.name"] = json!(n);
                }
                r
            }
        }
        "array" => {
            json!({"type": "array", "items": to_avro(c.get("items").unwrap_or(&Json::Null), defined, unnamed)})
        }
        "map" => {
            json!({"type": "map", "values": to_avro(c.get("values").unwrap_or(&Json::Null), defined, unnamed)})
        }
        _ => {
            let avro = match t {
                "int8" | "int16" | "int32" => "int",
                "int64" => "long",
                "float32" => "float",
                "float64" => "double",
                "boolean" => "boolean",
                "bytes" => "bytes",
                _ => "string",
            };
            let mut p = Map::new();
            p.insert("type".into(), json!(avro));
            if matches!(t, "int8" | "int16") {
                p.insert("connect.type".into(), json!(t));
            }
            if let Some(n) = name {
                p.insert("connect.version".into(), c.get("version").cloned().unwrap_or(json!(1)));
                if let Some(params) = c.get("parameters") {
                    p.insert("connect.parameters".into(), params.clone());
                }
                if let Some(d) = c.get("default") {
                    p.insert("connect.default".into(), d.clone());
                }
                p.insert("connect.name".into(), json!(n));
                let param = |k: &str| {
                    c.get("parameters")
                        .and_then(|ps| ps.get(k))
                        .and_then(Json::as_str)
                        .and_then(|s| s.parse::<u64>().ok())
                };
                match n {
                    "org.apache.kafka.connect.data.Decimal" => {
                        p.insert("scale".into(), json!(param("scale").unwrap_or(0)));
                        p.insert("precision".into(), json!(param("connect.decimal.precision").unwrap_or(64)));
                        p.insert("logicalType".into(), json!("decimal"));
                    }
                    "org.apache.kafka.connect.data.Date" => {
                        p.insert("logicalType".into(), json!("date"));
                    }
                    "org.apache.kafka.connect.data.Time" => {
                        p.insert("logicalType".into(), json!("time-millis"));
                    }
                    "org.apache.kafka.connect.data.Timestamp" => {
                        p.insert("logicalType".into(), json!("timestamp-millis"));
                    }
                    _ => {}
                }
            }
            if p.len() == 1 { json!(avro) } else { Json::Object(p) }
        }
    };
    if c.get("optional").and_then(Json::as_bool) == Some(true) {
        // With a non-null default, AvroData puts the default's branch first.
        base =
            if c.get("default").is_some_and(|d| !d.is_null()) { json!([base, "null"]) } else { json!(["null", base]) };
    }
    base
}

/// The wire format (magic byte, schema id, Avro datum) of a
/// JsonConverter-shaped payload under an Avro schema.
pub fn wire(schema: &Json, id: u32, payload: &Json) -> Result<Vec<u8>, String> {
    let parsed = AvroSchema::parse(schema).map_err(|e| format!("invalid Avro schema: {e}"))?;
    let resolved = ResolvedSchema::try_from(&parsed).map_err(|e| format!("unresolvable Avro schema: {e}"))?;
    let value = from_json(&parsed, resolved.get_names(), payload)?;
    let datum = GenericDatumWriter::builder(&parsed)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(|e| format!("cannot encode: {e}"))?;
    let mut out = vec![MAGIC];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

fn from_json(schema: &AvroSchema, names: &NamesRef<'_>, v: &Json) -> Result<Avro, String> {
    let wrong = || format!("{v} does not fit {schema:?}");
    let b64 =
        |v: &Json| v.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()).ok_or_else(wrong);
    Ok(match schema {
        AvroSchema::Null => Avro::Null,
        AvroSchema::Boolean => Avro::Boolean(v.as_bool().ok_or_else(wrong)?),
        AvroSchema::Int => Avro::Int(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(wrong)?),
        AvroSchema::Long => Avro::Long(v.as_i64().ok_or_else(wrong)?),
        AvroSchema::Date => Avro::Date(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(wrong)?),
        AvroSchema::TimeMillis => Avro::TimeMillis(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(wrong)?),
        AvroSchema::TimestampMillis => Avro::TimestampMillis(v.as_i64().ok_or_else(wrong)?),
        AvroSchema::Float => Avro::Float(v.as_f64().ok_or_else(wrong)? as f32),
        AvroSchema::Double => Avro::Double(v.as_f64().ok_or_else(wrong)?),
        AvroSchema::String => Avro::String(v.as_str().ok_or_else(wrong)?.to_string()),
        AvroSchema::Bytes => Avro::Bytes(b64(v)?),
        AvroSchema::Decimal(_) => Avro::Decimal(apache_avro::Decimal::from(b64(v)?)),
        AvroSchema::Union(u) => {
            let pick = u.variants().iter().position(|s| (*s == AvroSchema::Null) == v.is_null()).ok_or_else(wrong)?;
            let index = u32::try_from(pick).map_err(|_| wrong())?;
            Avro::Union(index, Box::new(from_json(&u.variants()[pick], names, v)?))
        }
        AvroSchema::Record(r) => {
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                fields.push((f.name.clone(), from_json(&f.schema, names, v.get(&f.name).unwrap_or(&Json::Null))?));
            }
            Avro::Record(fields)
        }
        AvroSchema::Array(a) => Avro::Array(
            v.as_array().ok_or_else(wrong)?.iter().map(|i| from_json(&a.items, names, i)).collect::<Result<_, _>>()?,
        ),
        AvroSchema::Ref { name } => from_json(names.get(name).ok_or_else(wrong)?, names, v)?,
        _ => return Err(wrong()),
    })
}
