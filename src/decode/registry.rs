//! The client of a Confluent-compatible schema registry (Confluent Schema
//! Registry, Karapace, Apicurio's `/apis/ccompat/v7`), with the schemas it
//! has fetched cached by id, and the retries while it is unreachable.
//!
//! Decoding stays synchronous and CPU-only: before decoding a record the
//! pipeline asks [`SchemaRegistry::wanted`] which schemas it lacks and
//! awaits [`SchemaRegistry::fetch_wanted`] for them (retrying while the
//! registry is unreachable, polling on meanwhile);
//! [`SchemaRegistry::decode`] only reads that cache, and hands the datum to
//! [`super::avro`] for the translation.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::DecodeError;
use super::avro::{Part, RegisteredSchema, split_wire};
use crate::ops::Health;
use crate::source::{Lineage, SourceRecord};

/// The registry's name in health and metrics.
const UPSTREAM: &str = "schema_registry";
/// After this long, an id the registry did not know is asked for again.
const UNKNOWN_RECHECK: Duration = Duration::from_secs(60);

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
        let mut delays = crate::backoff::delays();
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
        Ok((schema.connect().clone(), payload))
    }
}

/// The test fixture encoder lives outside the library, beside the
/// integration tests that also use it.
#[cfg(test)]
#[path = "../../tests/common/avro/fixture.rs"]
mod fixture;

#[cfg(test)]
mod tests {
    use super::fixture::{AvroParts, wire};
    use super::*;
    use crate::decode::{ChangeEvent, DecodeOptions, Decoded, Op, Value, decode};
    use crate::demo::bus_booking::{BusBooking, Timeline, trip};
    use crate::demo::sqlserver::Record;
    use bytes::Bytes;

    const KEY_ID: u32 = 7;
    const VALUE_ID: u32 = 8;

    fn source(
        topic: &str,
        offset: i64,
        key: Option<impl Into<Bytes>>,
        value: Option<impl Into<Bytes>>,
    ) -> SourceRecord {
        SourceRecord {
            lineage: Lineage { topic: topic.into(), partition: 1, offset },
            key: key.map(Into::into),
            value: value.map(Into::into),
            headers: vec![],
            timestamp_ms: None,
            generation: 0,
        }
    }

    fn split(r: &Record) -> Result<AvroParts, String> {
        super::fixture::split(&r.topic, &r.key, r.value.as_deref())
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
        let value = good.value.clone().unwrap().to_vec();
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
        let mut key = good.key.clone().unwrap().to_vec();
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
