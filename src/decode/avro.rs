//! Avro records in Confluent's wire format, turned into what Kafka Connect's
//! JsonConverter would have written.
//!
//! A record written by Confluent's `AvroConverter` is the magic byte `0x00`, a
//! 4-byte big-endian schema id, then the Avro binary datum. The converter keeps
//! the Kafka Connect schema inside the Avro schema (`connect.name`,
//! `connect.version`, `connect.parameters`, `connect.type`, the `decimal`
//! logical type), so this module turns a datum back into what JsonConverter
//! would have written: a Connect schema JSON and a payload whose bytes and
//! decimals are base64. The envelope and typing code of [`super`] then runs
//! unchanged, so typing lives in one place.
//!
//! The schemas come from the registry client in [`super::registry`], which
//! caches [`RegisteredSchema`]s by id; this module only translates, with no
//! I/O.

use std::collections::HashMap;
use std::fmt;

use apache_avro::Schema as AvroSchema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use base64::Engine;
use serde_json::{Map, Value as Json, json};

/// First byte of Confluent's wire format.
pub const MAGIC: u8 = 0x00;
/// Magic byte + 4-byte schema id.
const HEADER: usize = 5;
/// Cap on the Connect schema built from one Avro schema (named types expand
/// at each use), against schemas that reference themselves into blow-ups.
const MAX_SCHEMA_NODES: usize = 100_000;

/// Which part of a Kafka record a datum came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Key,
    Value,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Key => "key",
            Part::Value => "value",
        }
    }
}

/// Whether bytes start like Confluent's wire format.
pub fn is_avro(bytes: &[u8]) -> bool {
    bytes.first() == Some(&MAGIC)
}

/// Splits Confluent's wire format into the schema id and the Avro datum.
pub fn split_wire(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    match bytes.first() {
        None => return Err("it is empty".into()),
        Some(&MAGIC) => {}
        Some(b) => {
            return Err(format!("its first byte is 0x{b:02x}, not the magic byte 0x00 of Confluent's wire format"));
        }
    }
    match bytes.get(1..HEADER) {
        Some(&[a, b, c, d]) => Ok((u32::from_be_bytes([a, b, c, d]), &bytes[HEADER..])),
        _ => Err(format!("it is {} bytes, shorter than the 5-byte header (magic byte and schema id)", bytes.len())),
    }
}

/// One registered Avro schema: parsed for decoding, and as the Connect schema
/// it stands for.
pub struct RegisteredSchema {
    avro: AvroSchema,
    connect: Json,
}

impl fmt::Debug for RegisteredSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredSchema").field("connect", &self.connect).finish_non_exhaustive()
    }
}

impl RegisteredSchema {
    /// Parses the schema text a registry returns. The error completes "the schema ...".
    pub fn parse(text: &str) -> Result<RegisteredSchema, String> {
        let raw: Json = serde_json::from_str(text).map_err(|e| format!("is not JSON ({e})"))?;
        let avro = AvroSchema::parse(&raw).map_err(|e| format!("is not a valid Avro schema ({e})"))?;
        let connect = ToConnect::default().schema(&raw, "")?;
        Ok(RegisteredSchema { avro, connect })
    }

    /// The Connect schema JSON (`{"type":"struct","fields":[..]}` and so on).
    pub fn connect(&self) -> &Json {
        &self.connect
    }

    /// Decodes one Avro binary datum into a JsonConverter-shaped payload.
    pub fn payload(&self, datum: &[u8]) -> Result<Json, String> {
        let mut reader = datum;
        let value = GenericDatumReader::builder(&self.avro)
            .build()
            .and_then(|r| r.read_value(&mut reader))
            .map_err(|e| format!("the datum does not match the schema ({e})"))?;
        if !reader.is_empty() {
            return Err(format!("{} bytes are left over after the datum", reader.len()));
        }
        to_json(value)
    }
}

/// Builds the Connect schema JSON an Avro schema stands for, reading the
/// metadata Confluent's AvroData writes (`connect.*`, logical types).
#[derive(Default)]
struct ToConnect<'a> {
    /// Named types seen so far: full name → (definition, enclosing namespace).
    named: HashMap<String, (&'a Map<String, Json>, String)>,
    /// Records being expanded, to refuse recursive types.
    open: Vec<String>,
    nodes: usize,
}

impl<'a> ToConnect<'a> {
    fn schema(&mut self, s: &'a Json, ns: &str) -> Result<Json, String> {
        self.nodes += 1;
        if self.nodes > MAX_SCHEMA_NODES {
            return Err(format!("is too large: over {MAX_SCHEMA_NODES} types once its named types are expanded"));
        }
        match s {
            Json::String(name) => match primitive(name) {
                Some(connect) => Ok(plain(connect)),
                None => self.reference(name, ns),
            },
            Json::Array(branches) => self.union(branches, ns),
            Json::Object(m) => self.complex(m, ns),
            other => Err(format!("has {other} where a type belongs")),
        }
    }

    fn reference(&mut self, name: &str, ns: &str) -> Result<Json, String> {
        let qualified = if name.contains('.') || ns.is_empty() { None } else { Some(format!("{ns}.{name}")) };
        let full = qualified.filter(|q| self.named.contains_key(q)).unwrap_or_else(|| name.to_string());
        let Some((definition, enclosing)) = self.named.get(&full).cloned() else {
            return Err(format!("uses the type {name:?} without defining it"));
        };
        if self.open.contains(&full) {
            return Err(format!("is recursive (type {full} contains itself), which Kafka Connect cannot write"));
        }
        self.complex(definition, &enclosing)
    }

    /// Registers a named type; returns its full name and its own namespace.
    fn define(&mut self, m: &'a Map<String, Json>, ns: &str) -> Result<(String, String), String> {
        let name = m.get("name").and_then(Json::as_str).ok_or("has a named type without a name")?;
        let (full, own) = match name.rsplit_once('.') {
            Some((space, _)) => (name.to_string(), space.to_string()),
            None => {
                let space = m.get("namespace").and_then(Json::as_str).unwrap_or(ns);
                (if space.is_empty() { name.to_string() } else { format!("{space}.{name}") }, space.to_string())
            }
        };
        self.named.entry(full.clone()).or_insert((m, ns.to_string()));
        Ok((full, own))
    }

    fn union(&mut self, branches: &'a [Json], ns: &str) -> Result<Json, String> {
        let mut nullable = false;
        let mut types = Vec::new();
        for b in branches {
            if b.as_str() == Some("null") || b.get("type").and_then(Json::as_str) == Some("null") {
                nullable = true;
            } else {
                types.push(self.schema(b, ns)?);
            }
        }
        let mut out = match types.len() {
            1 => types.swap_remove(0),
            // Not a plain optional: values pass through untyped.
            _ => json!({"type": "union"}),
        };
        if let Json::Object(o) = &mut out {
            o.insert("optional".into(), Json::Bool(nullable));
        }
        Ok(out)
    }

    fn complex(&mut self, m: &'a Map<String, Json>, ns: &str) -> Result<Json, String> {
        let t = match m.get("type") {
            Some(Json::String(t)) => t.as_str(),
            Some(nested) => return self.schema(nested, ns),
            None => return Err("has a type object without \"type\"".into()),
        };
        let mut out = match t {
            "record" | "error" => {
                let (full, own) = self.define(m, ns)?;
                let fields = m
                    .get("fields")
                    .and_then(Json::as_array)
                    .ok_or_else(|| format!("has record {full} without a fields list"))?;
                self.open.push(full.clone());
                let mut connect_fields = Vec::with_capacity(fields.len());
                for f in fields {
                    let name = f
                        .get("name")
                        .and_then(Json::as_str)
                        .ok_or_else(|| format!("has a field of record {full} without a name"))?;
                    let ty = f.get("type").ok_or_else(|| format!("has field {full}.{name} without a type"))?;
                    let mut c = self.schema(ty, &own)?;
                    if let (Json::Object(c), Some(attrs)) = (&mut c, f.as_object()) {
                        // Connect metadata on the field rather than its type.
                        annotate(c, attrs);
                        c.insert("field".into(), Json::String(name.to_string()));
                    }
                    connect_fields.push(c);
                }
                self.open.pop();
                let mut out = json!({"type": "struct", "optional": false, "name": full});
                if let Json::Object(o) = &mut out {
                    o.insert("fields".into(), Json::Array(connect_fields));
                }
                out
            }
            "enum" => {
                self.define(m, ns)?;
                plain("string")
            }
            "fixed" => {
                self.define(m, ns)?;
                plain("bytes")
            }
            "array" => {
                let items = m.get("items").ok_or("has an array without items")?;
                json!({"type": "array", "optional": false, "items": self.schema(items, ns)?})
            }
            "map" => {
                let values = m.get("values").ok_or("has a map without values")?;
                json!({"type": "map", "optional": false, "keys": plain("string"), "values": self.schema(values, ns)?})
            }
            other => match primitive(other) {
                Some(connect) => plain(connect),
                None => self.reference(other, ns)?,
            },
        };
        if let Json::Object(o) = &mut out {
            annotate(o, m);
        }
        Ok(out)
    }
}

/// Connect type of an Avro primitive.
fn primitive(name: &str) -> Option<&'static str> {
    Some(match name {
        "null" => "null",
        "boolean" => "boolean",
        "int" => "int32",
        "long" => "int64",
        "float" => "float32",
        "double" => "float64",
        "bytes" => "bytes",
        "string" => "string",
        _ => return None,
    })
}

fn plain(connect: &str) -> Json {
    json!({"type": connect, "optional": false})
}

/// Adds Connect's name, version, parameters and narrow int type from an Avro
/// schema's attributes, and names for Avro logical types written without
/// them (by producers other than Kafka Connect).
fn annotate(out: &mut Map<String, Json>, attrs: &Map<String, Json>) {
    let str_attr = |k: &str| attrs.get(k).and_then(Json::as_str);
    if out.get("type").and_then(Json::as_str) == Some("int32")
        && let Some(t @ ("int8" | "int16")) = str_attr("connect.type")
    {
        out.insert("type".into(), json!(t));
    }
    if let Some(name) = str_attr("connect.name") {
        // A record's Connect name wins over its Avro full name.
        out.insert("name".into(), json!(name));
    }
    if let Some(v) = attrs.get("connect.version").filter(|v| v.is_number()) {
        out.entry("version").or_insert_with(|| v.clone());
    }
    if let Some(p) = attrs.get("connect.parameters").filter(|p| p.is_object()) {
        out.entry("parameters").or_insert_with(|| p.clone());
    }
    let is = |t: &str| out.get("type").and_then(Json::as_str) == Some(t);
    match str_attr("logicalType") {
        Some("decimal") if is("bytes") => {
            out.entry("name").or_insert_with(|| json!("org.apache.kafka.connect.data.Decimal"));
            let avro_scale = attrs.get("scale").and_then(Json::as_u64);
            let avro_precision = attrs.get("precision").and_then(Json::as_u64);
            let params = out.entry("parameters").or_insert_with(|| json!({}));
            if let Json::Object(p) = params {
                match avro_scale {
                    // The Avro scale is what the bytes were written with.
                    Some(s) => {
                        p.insert("scale".into(), json!(s.to_string()));
                    }
                    None => {
                        p.entry("scale").or_insert_with(|| json!("0"));
                    }
                }
                if let Some(precision) = avro_precision {
                    p.entry("connect.decimal.precision").or_insert_with(|| json!(precision.to_string()));
                }
            }
        }
        Some(logical) => {
            let name = match logical {
                "date" => "org.apache.kafka.connect.data.Date",
                "time-millis" => "org.apache.kafka.connect.data.Time",
                "time-micros" => "io.debezium.time.MicroTime",
                "timestamp-millis" | "local-timestamp-millis" => "org.apache.kafka.connect.data.Timestamp",
                "timestamp-micros" | "local-timestamp-micros" => "io.debezium.time.MicroTimestamp",
                "timestamp-nanos" | "local-timestamp-nanos" => "io.debezium.time.NanoTimestamp",
                _ => return,
            };
            out.entry("name").or_insert_with(|| json!(name));
        }
        None => {}
    }
}

fn base64(bytes: &[u8]) -> Json {
    Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A float as JsonConverter writes it; non-finite values as Debezium's text.
fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map(Json::Number).unwrap_or_else(|| {
        Json::String(
            if f.is_nan() {
                "NaN"
            } else if f > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            }
            .into(),
        )
    })
}

/// Converts a decoded datum into the payload JsonConverter would write.
fn to_json(v: Avro) -> Result<Json, String> {
    Ok(match v {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => Json::Bool(b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => json!(i),
        Avro::Long(i)
        | Avro::TimeMicros(i)
        | Avro::TimestampMillis(i)
        | Avro::TimestampMicros(i)
        | Avro::TimestampNanos(i)
        | Avro::LocalTimestampMillis(i)
        | Avro::LocalTimestampMicros(i)
        | Avro::LocalTimestampNanos(i) => json!(i),
        // Through its shortest text, so 0.1f32 is 0.1 as in JsonConverter's output.
        Avro::Float(f) => float(f.to_string().parse::<f64>().unwrap_or(f as f64)),
        Avro::Double(f) => float(f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => base64(&b),
        Avro::String(s) | Avro::Enum(_, s) => Json::String(s),
        Avro::Union(_, inner) => to_json(*inner)?,
        Avro::Array(items) => Json::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?),
        Avro::Map(m) => {
            let mut entries: Vec<(String, Avro)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Map::new();
            for (k, v) in entries {
                out.insert(k, to_json(v)?);
            }
            Json::Object(out)
        }
        Avro::Record(fields) => {
            let mut out = Map::new();
            for (k, v) in fields {
                out.insert(k, to_json(v)?);
            }
            Json::Object(out)
        }
        Avro::Decimal(d) => base64(&Vec::<u8>::try_from(&d).map_err(|e| format!("a decimal cannot be read ({e})"))?),
        Avro::BigDecimal(d) => Json::String(d.to_string()),
        Avro::Duration(d) => {
            json!({"months": u32::from(d.months()), "days": u32::from(d.days()), "millis": u32::from(d.millis())})
        }
        Avro::Uuid(u) => Json::String(u.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_avro_logical_types_and_collections_are_typed() {
        let schema = r#"{"type":"record","name":"Row","namespace":"x","fields":[
            {"name":"id","type":"long"},
            {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":3}},
            {"name":"day","type":{"type":"int","logicalType":"date"}},
            {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
            {"name":"ratio","type":"float"},
            {"name":"tags","type":{"type":"array","items":"string"}},
            {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"]}},
            {"name":"alt","type":["null","long","string"]}
        ]}"#;
        let s = RegisteredSchema::parse(schema).unwrap();
        let fields = s.connect()["fields"].as_array().unwrap();
        assert_eq!(fields[1]["name"], "org.apache.kafka.connect.data.Decimal");
        assert_eq!(fields[1]["parameters"], serde_json::json!({"scale": "3", "connect.decimal.precision": "9"}));
        assert_eq!(fields[2]["name"], "org.apache.kafka.connect.data.Date");
        assert_eq!(fields[3]["name"], "io.debezium.time.MicroTimestamp");
        assert_eq!(fields[4]["type"], "float32");
        assert_eq!(fields[5]["type"], "array");
        assert_eq!(fields[6]["type"], "string");
        assert_eq!((fields[7]["type"].as_str(), fields[7]["optional"].as_bool()), (Some("union"), Some(true)));
        // id 5, price 1.234 (0x04d2), day 3, at 7, ratio 0.1, tags ["a"], kind B, alt "z"
        let mut datum = vec![10, 4, 0x04, 0xd2, 6, 14];
        datum.extend_from_slice(&0.1f32.to_le_bytes());
        datum.extend_from_slice(&[2, 2, b'a', 0, 2, 4, 2, b'z']);
        let p = s.payload(&datum).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"id": 5, "price": "BNI=", "day": 3, "at": 7, "ratio": 0.1, "tags": ["a"], "kind": "B", "alt": "z"})
        );
    }
}
