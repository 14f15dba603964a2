//! Avro records in Confluent's wire format, with their schemas from a
//! Confluent-compatible schema registry (Confluent Schema Registry, Karapace,
//! Apicurio's `/apis/ccompat/v7`).
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
//! Decoding stays synchronous and CPU-only: before decoding a record the
//! pipeline asks [`SchemaRegistry::wanted`] which schemas it lacks and
//! awaits [`SchemaRegistry::fetch_wanted`] for them (retrying while the
//! registry is unreachable, polling on meanwhile);
//! [`SchemaRegistry::decode`] only reads that cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use apache_avro::Schema as AvroSchema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use base64::Engine;
use serde_json::{Map, Value as Json, json};

use super::DecodeError;
use crate::ops::Health;
use crate::source::{Lineage, SourceRecord};

/// First byte of Confluent's wire format.
pub const MAGIC: u8 = 0x00;
/// Magic byte + 4-byte schema id.
const HEADER: usize = 5;
/// The registry's name in health and metrics.
const UPSTREAM: &str = "schema_registry";
/// After this long, an id the registry did not know is asked for again.
const UNKNOWN_RECHECK: Duration = Duration::from_secs(60);
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

/// What the registry said about one schema id.
#[derive(Clone)]
enum Cached {
    Known(Arc<RegisteredSchema>),
    /// The registry answered "schema not found" at `at`.
    Unknown {
        message: String,
        at: Instant,
    },
    /// The registry has it, but it is not a usable Avro schema.
    Unusable(String),
}

/// A client of a Confluent-compatible schema registry, with the schemas it
/// has fetched cached by id (ids are immutable, so entries never go stale).
pub struct SchemaRegistry {
    base: String,
    http: reqwest::Client,
    cache: RwLock<HashMap<u32, Cached>>,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.cache.read().map(|c| c.len()).unwrap_or_else(|e| e.into_inner().len());
        f.debug_struct("SchemaRegistry").field("url", &self.base).field("cached", &cached).finish()
    }
}

impl SchemaRegistry {
    /// `url` is the Confluent API's base: `http://registry:8081` for
    /// Confluent's, `http://host:8080/apis/ccompat/v7` for Apicurio's.
    pub fn new(url: &str) -> anyhow::Result<SchemaRegistry> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            anyhow::anyhow!(
                "schema registry URL {url:?} is not a URL ({e}); give e.g. http://127.0.0.1:8081/apis/ccompat/v7"
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("schema registry URL {url:?} is not http(s)");
        }
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the schema registry client: {e}"))?;
        Ok(SchemaRegistry { base: url.trim_end_matches('/').to_string(), http, cache: RwLock::new(HashMap::new()) })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Caches a schema under `id` without asking the registry (tests, preloading).
    pub fn insert(&self, id: u32, schema: &str) -> Result<(), String> {
        let parsed = RegisteredSchema::parse(schema).map_err(|e| format!("schema id {id} {e}"))?;
        self.put(id, Cached::Known(Arc::new(parsed)));
        Ok(())
    }

    fn put(&self, id: u32, entry: Cached) {
        self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(id, entry);
    }

    fn get(&self, id: u32) -> Option<Cached> {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    /// The schema ids `record`'s key and value name that must be fetched
    /// before it can be decoded: not cached yet, or answered "not found" long
    /// enough ago to ask again. Empty means decoding can run now. Bytes that
    /// are not in the wire format are left to decoding to report.
    pub fn wanted(&self, record: &SourceRecord) -> Vec<(u32, Part)> {
        let mut out = Vec::new();
        for (part, bytes) in [(Part::Value, record.value.as_deref()), (Part::Key, record.key.as_deref())] {
            if let Some(Ok((id, _))) = bytes.map(split_wire) {
                let cached = match self.get(id) {
                    Some(Cached::Known(_) | Cached::Unusable(_)) => true,
                    Some(Cached::Unknown { at, .. }) => at.elapsed() < UNKNOWN_RECHECK,
                    None => false,
                };
                if !cached && !out.iter().any(|(i, _)| *i == id) {
                    out.push((id, part));
                }
            }
        }
        out
    }

    /// Fetches and caches the schemas `wanted` names for the record at
    /// `lineage`. While the registry is unreachable (or answers with errors)
    /// this retries with backoff for as long as it takes, with the registry
    /// reported down in `health`; an id the registry answers "not found" for
    /// is cached as unknown, so decoding fails with a clear error and the
    /// record is dead-lettered. The pipeline runs this beside its poll loop,
    /// so the consumer stays in its group however long the outage lasts.
    pub async fn fetch_wanted(&self, wanted: &[(u32, Part)], lineage: &Lineage, health: &Health) {
        let mut delays = crate::pipeline::retry::delays();
        for &(id, part) in wanted {
            loop {
                match self.fetch(id).await {
                    Ok(entry) => {
                        let outcome = match &entry {
                            Cached::Known(_) => "found",
                            Cached::Unknown { .. } => "not_found",
                            Cached::Unusable(_) => "unusable",
                        };
                        metrics::counter!("projector_schema_registry_requests_total", "outcome" => outcome)
                            .increment(1);
                        tracing::info!(record = %lineage, part = part.as_str(), schema_id = id, outcome, "schema fetched from the registry");
                        health.upstream_up(UPSTREAM);
                        self.put(id, entry);
                        break;
                    }
                    Err(e) => {
                        metrics::counter!("projector_schema_registry_requests_total", "outcome" => "error")
                            .increment(1);
                        health.upstream_down(
                            UPSTREAM,
                            &format!("{e}; records naming schema id {id} wait (first: {lineage})"),
                        );
                        let wait = delays.next().unwrap_or(Duration::from_secs(30));
                        tracing::warn!(record = %lineage, part = part.as_str(), schema_id = id, error = %e, retry_in = ?wait, "schema registry unavailable; retrying");
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }

    /// One `GET /schemas/ids/{id}`. `Err` is worth retrying; `Ok` is final.
    async fn fetch(&self, id: u32) -> Result<Cached, String> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let resp = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/vnd.schemaregistry.v1+json, application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("GET {url}: reading the answer: {e}"))?;
        let json: Option<Json> = serde_json::from_slice(&body).ok();
        let wrong_url = "is --schema-registry-url the base of a Confluent-compatible API (for Apicurio: http://host:port/apis/ccompat/v7)?";
        if status == reqwest::StatusCode::NOT_FOUND {
            // Confluent's code for "schema not found"; any other 404 is a wrong URL.
            let error_code = json.as_ref().and_then(|j| j.get("error_code")).and_then(Json::as_i64);
            if error_code == Some(40403) {
                let message = json
                    .as_ref()
                    .and_then(|j| j.get("message"))
                    .and_then(Json::as_str)
                    .unwrap_or("schema not found")
                    .to_string();
                return Ok(Cached::Unknown { message, at: Instant::now() });
            }
            return Err(format!("GET {url} answered 404 without Confluent's error code 40403; {wrong_url}"));
        }
        if !status.is_success() {
            return Err(format!(
                "GET {url} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        let Some(json) = json else {
            return Err(format!("GET {url} answered {status} with a body that is not JSON; {wrong_url}"));
        };
        let schema_type = json.get("schemaType").and_then(Json::as_str).unwrap_or("AVRO");
        if !schema_type.eq_ignore_ascii_case("AVRO") {
            return Ok(Cached::Unusable(format!(
                "is a {schema_type} schema, not Avro; projector reads Avro and JSON (JsonConverter) records"
            )));
        }
        let Some(text) = json.get("schema").and_then(Json::as_str) else {
            return Err(format!("GET {url} answered without a \"schema\" string; {wrong_url}"));
        };
        Ok(match RegisteredSchema::parse(text) {
            Ok(s) => Cached::Known(Arc::new(s)),
            Err(e) => Cached::Unusable(e),
        })
    }

    /// Decodes one part of a record from the cache into (Connect schema,
    /// JsonConverter-shaped payload). Needs [`prefetch`](Self::fetch_wanted) first.
    pub fn decode(&self, lineage: &Lineage, part: Part, bytes: &[u8]) -> Result<(Json, Json), DecodeError> {
        let bad = |detail: String| DecodeError::BadAvro { lineage: lineage.clone(), part: part.as_str(), detail };
        let (id, datum) = split_wire(bytes).map_err(bad)?;
        let unknown =
            |detail: String| DecodeError::UnknownSchema { lineage: lineage.clone(), part: part.as_str(), id, detail };
        let schema = match self.get(id) {
            Some(Cached::Known(s)) => s,
            Some(Cached::Unknown { message, .. }) => {
                return Err(unknown(format!(
                    "the schema registry at {} does not know ({message}); was the subject deleted, or did the producer use another registry? Point --schema-registry-url at the producer's registry, or re-register the schema",
                    self.base
                )));
            }
            Some(Cached::Unusable(why)) => {
                return Err(bad(format!("schema id {id} from the registry at {} {why}", self.base)));
            }
            None => return Err(unknown(format!("has not been fetched from the schema registry at {}", self.base))),
        };
        let payload = schema.payload(datum).map_err(|e| {
            bad(format!("schema id {id}: {e}; was the record written with another registry's ids, or is it corrupt?"))
        })?;
        Ok((schema.connect.clone(), payload))
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

/// Writes the demo's JsonConverter fixtures the way Confluent's AvroConverter
/// would, for tests: Avro schemas as `AvroData` derives them from Connect
/// schemas, and payloads in the wire format.
pub mod fixture {
    use std::collections::HashSet;

    use apache_avro::Schema as AvroSchema;
    use apache_avro::schema::{NamesRef, ResolvedSchema};
    use apache_avro::types::Value as Avro;
    use apache_avro::writer::datum::GenericDatumWriter;
    use base64::Engine;
    use serde_json::{Map, Value as Json, json};

    use super::MAGIC;
    use crate::demo::sqlserver::Record;

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

    /// Splits a fixture made with `schemas = true`.
    pub fn split(record: &Record) -> Result<AvroParts, String> {
        let part = |bytes: &[u8]| -> Result<(Json, Json), String> {
            let j: Json = serde_json::from_slice(bytes).map_err(|e| format!("fixture is not JSON: {e}"))?;
            match (j.get("schema"), j.get("payload")) {
                (Some(s), Some(p)) => Ok((avro_schema(s), p.clone())),
                _ => Err("fixture has no {schema, payload}: make it with schemas = true".into()),
            }
        };
        Ok(AvroParts {
            topic: record.topic.clone(),
            key: part(&record.key)?,
            value: record.value.as_deref().map(part).transpose()?,
        })
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
            base = if c.get("default").is_some_and(|d| !d.is_null()) {
                json!([base, "null"])
            } else {
                json!(["null", base])
            };
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
        let b64 = |v: &Json| {
            v.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()).ok_or_else(wrong)
        };
        Ok(match schema {
            AvroSchema::Null => Avro::Null,
            AvroSchema::Boolean => Avro::Boolean(v.as_bool().ok_or_else(wrong)?),
            AvroSchema::Int => Avro::Int(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(wrong)?),
            AvroSchema::Long => Avro::Long(v.as_i64().ok_or_else(wrong)?),
            AvroSchema::Date => Avro::Date(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(wrong)?),
            AvroSchema::TimeMillis => {
                Avro::TimeMillis(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(wrong)?)
            }
            AvroSchema::TimestampMillis => Avro::TimestampMillis(v.as_i64().ok_or_else(wrong)?),
            AvroSchema::Float => Avro::Float(v.as_f64().ok_or_else(wrong)? as f32),
            AvroSchema::Double => Avro::Double(v.as_f64().ok_or_else(wrong)?),
            AvroSchema::String => Avro::String(v.as_str().ok_or_else(wrong)?.to_string()),
            AvroSchema::Bytes => Avro::Bytes(b64(v)?),
            AvroSchema::Decimal(_) => Avro::Decimal(apache_avro::Decimal::from(b64(v)?)),
            AvroSchema::Union(u) => {
                let pick =
                    u.variants().iter().position(|s| (*s == AvroSchema::Null) == v.is_null()).ok_or_else(wrong)?;
                Avro::Union(pick as u32, Box::new(from_json(&u.variants()[pick], names, v)?))
            }
            AvroSchema::Record(r) => {
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    fields.push((f.name.clone(), from_json(&f.schema, names, v.get(&f.name).unwrap_or(&Json::Null))?));
                }
                Avro::Record(fields)
            }
            AvroSchema::Array(a) => Avro::Array(
                v.as_array()
                    .ok_or_else(wrong)?
                    .iter()
                    .map(|i| from_json(&a.items, names, i))
                    .collect::<Result<_, _>>()?,
            ),
            AvroSchema::Ref { name } => from_json(names.get(name).ok_or_else(wrong)?, names, v)?,
            _ => return Err(wrong()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{AvroParts, split, wire};
    use super::*;
    use crate::decode::{ChangeEvent, DecodeOptions, Decoded, Op, Value, decode};
    use crate::demo::bus_booking::{BusBooking, Timeline, trip};
    use crate::demo::sqlserver::Record;

    const KEY_ID: u32 = 7;
    const VALUE_ID: u32 = 8;

    fn source(topic: &str, offset: i64, key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> SourceRecord {
        SourceRecord {
            lineage: Lineage { topic: topic.into(), partition: 1, offset },
            key,
            value,
            headers: vec![],
            timestamp_ms: None,
        }
    }

    fn json_record(r: &Record, offset: i64) -> SourceRecord {
        source(&r.topic, offset, Some(r.key.clone()), r.value.clone())
    }

    /// The same event as Confluent's AvroConverter writes it.
    fn avro_record(parts: &AvroParts, offset: i64) -> SourceRecord {
        let key = wire(&parts.key.0, KEY_ID, &parts.key.1).unwrap();
        let value = parts.value.as_ref().map(|(s, p)| wire(s, VALUE_ID, p).unwrap());
        source(&parts.topic, offset, Some(key), value)
    }

    fn registry_for(parts: &AvroParts) -> Arc<SchemaRegistry> {
        let r = SchemaRegistry::new("http://127.0.0.1:9/apis/ccompat/v7").unwrap();
        r.insert(KEY_ID, &parts.key.0.to_string()).unwrap();
        if let Some((s, _)) = &parts.value {
            r.insert(VALUE_ID, &s.to_string()).unwrap();
        }
        Arc::new(r)
    }

    fn opts(registry: &Arc<SchemaRegistry>) -> DecodeOptions {
        DecodeOptions { registry: Some(registry.clone()), ..Default::default() }
    }

    fn change(d: Result<Decoded, DecodeError>) -> ChangeEvent {
        match d {
            Ok(Decoded::Change(c)) => c,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    fn trips_events() -> (BusBooking, Vec<Record>) {
        let db = BusBooking::new("vexere");
        let mut t = Timeline::default();
        let mut noted = trip(2, 123_456_789, 1);
        noted[7].1 = serde_json::json!("window seats");
        let mut records = vec![];
        let at = t.commit(1);
        records.push(db.trips.event('c', None, Some(&trip(1, -35_000_001, 1)), at, t.ts_ms, true));
        let at = t.commit(2);
        records.push(db.trips.event('u', Some(&trip(2, 100, 1)), Some(&noted), at, t.ts_ms, true));
        let at = t.commit(1);
        records.push(db.trips.event('d', Some(&trip(3, 100, 1)), None, at, t.ts_ms, true));
        let snap = t.snapshot();
        records.push(db.trips.event('r', None, Some(&trip(4, 0, 9)), snap, t.ts_ms, true));
        (db, records)
    }

    #[test]
    fn the_avro_schema_carries_connect_metadata_as_avro_data_writes_it() {
        let (_, records) = trips_events();
        let parts = split(&records[0]).unwrap();
        let schema = &parts.value.as_ref().unwrap().0;
        let row = &schema["fields"][0]["type"][1];
        assert_eq!(schema["fields"][0]["type"][0], "null", "optional before");
        assert_eq!(row["type"], "record");
        assert_eq!(
            schema["fields"][1]["type"],
            serde_json::json!(["null", "vexere.vexere.dbo.Trips.Value"]),
            "after reuses the named row type"
        );
        let field =
            |n: &str| row["fields"].as_array().unwrap().iter().find(|f| f["name"] == n).unwrap()["type"].clone();
        assert_eq!(field("SeatCount"), serde_json::json!({"type": "int", "connect.type": "int16"}));
        assert_eq!(field("DepartAt")["connect.name"], "io.debezium.time.NanoTimestamp");
        assert_eq!(field("Fare")["logicalType"], "decimal");
        assert_eq!((field("Fare")["precision"].as_u64(), field("Fare")["scale"].as_u64()), (Some(12), Some(2)));
        assert_eq!(field("Note"), serde_json::json!(["null", "string"]));
        // The snapshot enum has a non-null default: its branch comes first.
        let source = schema["fields"].as_array().unwrap().iter().find(|f| f["name"] == "source").unwrap();
        let snapshot = source["type"]["fields"].as_array().unwrap().iter().find(|f| f["name"] == "snapshot").unwrap();
        assert_eq!(snapshot["type"][1], "null");
        assert_eq!(snapshot["default"], "false");
    }

    #[test]
    fn avro_decodes_to_the_same_change_events_as_json_with_schema() {
        let (_, records) = trips_events();
        for (i, r) in records.iter().enumerate() {
            let parts = split(r).unwrap();
            let registry = registry_for(&parts);
            let from_json = change(decode(&json_record(r, i as i64), &DecodeOptions::default()));
            let from_avro = change(decode(&avro_record(&parts, i as i64), &opts(&registry)));
            assert_eq!(from_avro.op, from_json.op);
            assert_eq!(from_avro.key, from_json.key);
            assert_eq!(from_avro.after, from_json.after, "after of {}", from_json.op.as_str());
            assert_eq!(from_avro.before, from_json.before);
            assert_eq!(from_avro.position, from_json.position);
            assert_eq!(from_avro.source_ts_ms, from_json.source_ts_ms);
            assert_eq!(from_avro.types, from_json.types, "column types, decimal precision included");
            assert_eq!(from_avro.lineage, from_json.lineage);
        }
        // And the values are the typed ones, not raw Avro.
        let parts = split(&records[1]).unwrap();
        let ev = change(decode(&avro_record(&parts, 1), &opts(&registry_for(&parts))));
        assert_eq!(ev.op, Op::Update);
        let after = ev.after.unwrap();
        assert_eq!(after.get("Fare"), Some(&Value::Decimal { unscaled: 123_456_789, scale: 2 }));
        assert_eq!(after.get("SeatCount"), Some(&Value::Int(40)));
        assert_eq!(after.get("DepartAt"), Some(&Value::Timestamp(1_782_900_000_000_000_000 + 2 * 3_600_000_000_000)));
        assert_eq!(after.get("Note"), Some(&Value::String("window seats".into())));
        assert_eq!(ev.before.unwrap().get("Note"), Some(&Value::Null));
        // A negative decimal keeps its sign.
        let parts = split(&records[0]).unwrap();
        let ev = change(decode(&avro_record(&parts, 0), &opts(&registry_for(&parts))));
        assert_eq!(ev.after.unwrap().get("Fare"), Some(&Value::Decimal { unscaled: -35_000_001, scale: 2 }));
    }

    #[test]
    fn tombstones_stay_kafka_null_with_an_avro_key() {
        let db = BusBooking::new("vexere");
        let r = db.trips.tombstone(&trip(3, 100, 1), true);
        let parts = split(&r).unwrap();
        assert!(parts.value.is_none());
        let d = decode(&avro_record(&parts, 5), &opts(&registry_for(&parts))).unwrap();
        assert!(matches!(d, Decoded::Tombstone));
    }

    #[test]
    fn json_records_still_decode_when_a_registry_is_configured() {
        let (_, records) = trips_events();
        let parts = split(&records[0]).unwrap();
        let ev = change(decode(&json_record(&records[0], 0), &opts(&registry_for(&parts))));
        assert_eq!(ev.op, Op::Create);
        // An Avro value with a JSON key, and the other way round.
        let registry = registry_for(&parts);
        let avro = avro_record(&parts, 0);
        let mixed = source(&avro.lineage.topic, 0, Some(records[0].key.clone()), avro.value.clone());
        assert_eq!(change(decode(&mixed, &opts(&registry))).key, ev.key);
        let mixed = source(&avro.lineage.topic, 0, avro.key.clone(), records[0].value.clone());
        assert_eq!(change(decode(&mixed, &opts(&registry))).key, ev.key);
    }

    fn err(r: &SourceRecord, o: &DecodeOptions) -> DecodeError {
        match decode(r, o) {
            Err(e) => e,
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn bad_bytes_are_clear_errors_naming_the_record() {
        let (_, records) = trips_events();
        let parts = split(&records[0]).unwrap();
        let registry = registry_for(&parts);
        let o = opts(&registry);
        let good = avro_record(&parts, 0);
        let value = good.value.clone().unwrap();
        let with_value = |v: Vec<u8>| source("vexere.vexere.dbo.Trips", 41, good.key.clone(), Some(v));

        // Truncated datum.
        let e = err(&with_value(value[..value.len() - 3].to_vec()), &o);
        assert_eq!(e.kind(), "bad_avro");
        assert!(
            e.to_string()
                .starts_with("vexere.vexere.dbo.Trips/1@41: value is not readable Confluent Avro: schema id 8"),
            "{e}"
        );
        // Header only, and shorter than the header.
        assert_eq!(err(&with_value(value[..5].to_vec()), &o).kind(), "bad_avro");
        let e = err(&with_value(vec![0, 0, 1]), &o);
        assert!(e.to_string().contains("shorter than the 5-byte header"), "{e}");
        // Trailing garbage after a complete datum.
        let mut longer = value.clone();
        longer.extend_from_slice(&[1, 2, 3]);
        let e = err(&with_value(longer), &o);
        assert!(e.to_string().contains("3 bytes are left over"), "{e}");
        // Garbage after a valid header.
        let e =
            err(&with_value(vec![0, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), &o);
        assert_eq!(e.kind(), "bad_avro");
        // Wrong magic byte, neither Avro nor JSON.
        let mut wrong_magic = value.clone();
        wrong_magic[0] = 1;
        let e = err(&with_value(wrong_magic), &o);
        assert_eq!(e.kind(), "bad_avro");
        assert!(e.to_string().contains("first byte is 0x01, not the magic byte 0x00"), "{e}");
        assert_eq!(split_wire(&[]).unwrap_err(), "it is empty");
        // An id the cache does not know.
        let mut other_id = value.clone();
        other_id[1..5].copy_from_slice(&999u32.to_be_bytes());
        let e = err(&with_value(other_id), &o);
        assert_eq!(e.kind(), "unknown_schema");
        assert!(e.to_string().contains("value names schema id 999"), "{e}");
        // The key is checked too.
        let mut key = good.key.clone().unwrap();
        key[1..5].copy_from_slice(&998u32.to_be_bytes());
        let e = err(&source("t", 1, Some(key), Some(value.clone())), &o);
        assert_eq!(e.kind(), "unknown_schema");
        assert!(e.to_string().contains("key names schema id 998"), "{e}");
        // Avro without a registry: say so.
        let e = err(&good, &DecodeOptions::default());
        assert_eq!(e.kind(), "invalid_json");
        assert!(e.to_string().contains("--schema-registry-url"), "{e}");
    }

    #[test]
    fn an_id_the_registry_does_not_know_is_a_clear_error() {
        let (_, records) = trips_events();
        let parts = split(&records[0]).unwrap();
        let registry = registry_for(&parts);
        registry.put(VALUE_ID, Cached::Unknown { message: "Schema 8 not found.".into(), at: Instant::now() });
        let e = err(&avro_record(&parts, 3), &opts(&registry));
        assert_eq!(e.kind(), "unknown_schema");
        let text = e.to_string();
        assert!(text.starts_with("vexere.vexere.dbo.Trips/1@3: value names schema id 8, which the schema registry at http://127.0.0.1:9/apis/ccompat/v7 does not know (Schema 8 not found.)"), "{text}");
    }

    #[test]
    fn unusable_schemas_are_refused_not_panicked_on() {
        assert!(RegisteredSchema::parse("not json").unwrap_err().contains("not JSON"));
        assert!(RegisteredSchema::parse(r#"{"type":"record","name":"R"}"#).is_err());
        let recursive = r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}"#;
        assert!(RegisteredSchema::parse(recursive).unwrap_err().contains("recursive"));
        let r = SchemaRegistry::new("http://127.0.0.1:9").unwrap();
        assert!(r.insert(1, recursive).is_err());
        r.put(2, Cached::Unusable("is a PROTOBUF schema, not Avro".into()));
        let e = r
            .decode(&Lineage { topic: "t".into(), partition: 0, offset: 0 }, Part::Value, &[0, 0, 0, 0, 2, 0])
            .unwrap_err();
        assert_eq!(e.kind(), "bad_avro");
        assert!(e.to_string().contains("PROTOBUF"), "{e}");
        assert!(SchemaRegistry::new("not a url").is_err());
    }

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

    #[tokio::test]
    async fn fetching_retries_and_reports_the_registry_down_while_unreachable() {
        let (_, records) = trips_events();
        let parts = split(&records[0]).unwrap();
        // Nothing listens on the discard port.
        let registry = SchemaRegistry::new("http://127.0.0.1:9/apis/ccompat/v7").unwrap();
        let r = avro_record(&parts, 0);
        let wanted = registry.wanted(&r);
        assert_eq!(wanted.len(), 2, "key and value name their schemas");
        let health = Health::default();
        health.sink_up("elasticsearch");
        let waited =
            tokio::time::timeout(Duration::from_millis(700), registry.fetch_wanted(&wanted, &r.lineage, &health)).await;
        assert!(waited.is_err(), "fetching must keep retrying, not give up");
        assert!(!health.ready(), "the registry is reported down");
        assert!(health.upstreams()["schema_registry"].detail.contains("127.0.0.1:9"), "{:?}", health.upstreams());
        assert_eq!(err(&r, &opts(&Arc::new(registry))).kind(), "unknown_schema");
        // Records that are not Avro need nothing.
        let plain = SchemaRegistry::new("http://127.0.0.1:9").unwrap();
        assert!(plain.wanted(&json_record(&records[0], 0)).is_empty());
    }
}
