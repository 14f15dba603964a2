//! Step 2 of the path: a Kafka record becomes a [`ChangeEvent`].
//!
//! Debezium's JSON comes with the Connect schema (`{"schema":..,"payload":..}`,
//! `schemas.enable=true`) or bare (`schemas.enable=false`); Avro in Confluent's
//! wire format is turned into that same schema + payload shape by [`avro`]
//! when a schema registry is configured. Either way the
//! payload is an envelope `{before, after, source, op, ts_ms, ..}` and the
//! key is a struct of the primary-key columns. This module checks the shape,
//! types the column values (see [`value`]), reads the [`SourcePosition`] and
//! names the record in every error so it can be dead-lettered and found.
//! A record that breaks its own schema (see [`conform`]) is refused whole.
//! The common case, a JSON value or key whose inline schema is the topic's
//! cached one, is read by [`fast`] straight into rows; everything else, and
//! every error, goes through the general path below.
//!
//! Records that are not row changes are classified, not failed: Kafka
//! tombstones (the null value after each delete), the schema-change topic,
//! transaction metadata and heartbeats.

pub mod avro;
mod columns;
mod conform;
mod fast;
mod name;
pub mod position;
pub mod registry;
pub mod schema_cache;
pub mod schema_history;
mod text;
mod unwrapped;
pub mod value;

use std::sync::Arc;

use serde_json::{Map, Value as Json};

pub use columns::{Column, Columns};
pub use name::Name;
pub use position::{PositionError, SourcePosition};
pub use registry::SchemaRegistry;
pub use schema_cache::{RowFields, SchemaCache, ValueSchema};
pub use schema_history::SchemaHistory;
pub use text::Text;
pub use value::{FieldType, Value, ValueError};

use crate::source::{Lineage, SourceRecord};
use conform::{StructSchema, key_agrees, row};

/// Debezium's conventional signal table (`signal.data.collection`).
pub const SIGNAL_TABLE: &str = "debezium_signal";

/// The kind of row change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// A snapshot read: same meaning as an upsert.
    Read,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }
}

/// Ordered column values (key columns in key order, row columns in table order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub columns: Columns,
}

impl Row {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// One decoded row change.
#[derive(Clone, Debug)]
pub struct ChangeEvent {
    pub lineage: Lineage,
    pub op: Op,
    /// Primary-key columns from the record key.
    pub key: Row,
    /// Row image after the change (`c`, `u`, `r`).
    pub after: Option<Row>,
    /// Row image before the change (`u`, `d`), possibly partial.
    pub before: Option<Row>,
    pub position: SourcePosition,
    /// Source commit time in ms (`source.ts_ms`), for freshness metrics.
    pub source_ts_ms: Option<i64>,
    /// The row's column types, when the record (or the schema history) gave them.
    pub types: Option<RowFields>,
}

/// What a record turned out to be.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every record is a Change; boxing it would cost an allocation per record to save a move"
)]
pub enum Decoded {
    Change(ChangeEvent),
    /// The Kafka-null value Debezium writes after each delete so compaction can
    /// drop the key. Compaction may drop the `d` event before it too, so the
    /// pipeline turns it into a compaction delete (see [`tombstone_key`]).
    Tombstone,
    /// A record that is not a row change: schema change, transaction marker,
    /// heartbeat. The reason names which.
    NotAChange(&'static str),
}

/// Why a record could not be decoded. Each names the record.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{lineage}: value is not valid JSON ({detail}); check the connector's value.converter")]
    InvalidJson { lineage: Lineage, detail: String },
    #[error("{lineage}: key is not valid JSON ({detail}); check the connector's key.converter")]
    InvalidKey { lineage: Lineage, detail: String },
    #[error(
        "{lineage}: record has no key; projector needs the primary key (give the table a primary key or set message.key.columns)"
    )]
    MissingKey { lineage: Lineage },
    #[error("{lineage}: {detail}")]
    NotAnEnvelope { lineage: Lineage, detail: String },
    #[error("{lineage}: op {op:?} is not one of c, u, d, r")]
    UnknownOp { lineage: Lineage, op: String },
    #[error("{lineage}: {source}")]
    Position { lineage: Lineage, source: PositionError },
    #[error("{lineage}: {source}")]
    Value { lineage: Lineage, source: ValueError },
    #[error(
        "{lineage}: the key says {column} = {key}, the row image says {row}; key and row disagree, so the record is not applied (check the connector's message.key.columns and key converter)"
    )]
    KeyMismatch { lineage: Lineage, column: String, key: String, row: String },
    #[error(
        "{lineage}: record has a null value and a null key: neither a change nor a tombstone for a key; check what else writes to this topic"
    )]
    NullRecord { lineage: Lineage },
    #[error(
        "{lineage}: value is {size} bytes, over the {limit}-byte limit (raise max_record_bytes if this row is legitimate)"
    )]
    TooLarge { lineage: Lineage, size: usize, limit: usize },
    #[error("{lineage}: the record has no schema and schema-change topic {history} {gap}")]
    NoSchema { lineage: Lineage, history: String, gap: Box<schema_history::SchemaGap> },
    #[error("{lineage}: {part} names schema id {id}, which {detail}")]
    UnknownSchema { lineage: Lineage, part: &'static str, id: u32, detail: String },
    #[error("{lineage}: {part} is not readable Confluent Avro: {detail}")]
    BadAvro { lineage: Lineage, part: &'static str, detail: String },
    #[error(
        "{lineage}: {detail}; configure ExtractNewRecordState with delete.tombstone.handling.mode=rewrite and add.fields=op,source.ts_ms,source.commit_lsn,source.change_lsn,source.event_serial_no (SQL Server) or op,source.ts_ms,source.lsn (PostgreSQL)"
    )]
    Unordered { lineage: Lineage, detail: String },
}

impl DecodeError {
    /// Short machine-readable reason for DLQ headers and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::InvalidJson { .. } => "invalid_json",
            DecodeError::InvalidKey { .. } => "invalid_key",
            DecodeError::MissingKey { .. } => "missing_key",
            DecodeError::NotAnEnvelope { .. } => "not_an_envelope",
            DecodeError::UnknownOp { .. } => "unknown_op",
            DecodeError::Position { .. } => "bad_position",
            DecodeError::Value { source, .. } => source.kind(),
            DecodeError::KeyMismatch { .. } => "key_mismatch",
            DecodeError::NullRecord { .. } => "null_record",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Unordered { .. } => "unordered",
            DecodeError::NoSchema { .. } => "no_schema",
            DecodeError::UnknownSchema { .. } => "unknown_schema",
            DecodeError::BadAvro { .. } => "bad_avro",
        }
    }
}

/// Whether JSON values carry their Connect schema, as the connector's
/// `value.converter.schemas.enable` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemasEnable {
    /// Accept both forms.
    #[default]
    Auto,
    /// Every value must be `{"schema":..,"payload":..}`.
    True,
    /// Values are bare payloads.
    False,
}

/// Decoding limits and expectations.
#[derive(Clone, Debug)]
pub struct DecodeOptions {
    pub max_record_bytes: usize,
    pub schemas_enable: SchemasEnable,
    /// Column types from the schema-change topic, for schemaless records.
    pub history: Option<Arc<SchemaHistory>>,
    /// Where Avro records' schemas come from; without it they are not read.
    pub registry: Option<Arc<SchemaRegistry>>,
    /// Connect schemas of JSON values already parsed, per topic.
    pub schemas: Arc<SchemaCache>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_record_bytes: 8 * 1024 * 1024,
            schemas_enable: SchemasEnable::Auto,
            history: None,
            registry: None,
            schemas: Arc::default(),
        }
    }
}

/// The key of a tombstone (a record [`decode`] found [`Decoded::Tombstone`]),
/// decoded as every record's key is: on a compacted topic it is all that
/// is left of a delete.
pub fn tombstone_key(record: &SourceRecord, opts: &DecodeOptions) -> Result<Row, DecodeError> {
    decode_key(record, opts)
}

/// Decodes one Kafka record.
pub fn decode(record: &SourceRecord, opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    let lineage = &record.lineage;
    let Some(buf) = record.value.as_ref() else {
        if record.key.is_none() {
            return Err(DecodeError::NullRecord { lineage: lineage.clone() });
        }
        return Ok(Decoded::Tombstone);
    };
    let bytes: &[u8] = buf;
    if bytes.len() > opts.max_record_bytes {
        return Err(DecodeError::TooLarge {
            lineage: lineage.clone(),
            size: bytes.len(),
            limit: opts.max_record_bytes,
        });
    }
    let cached = match opts.schemas_enable {
        SchemasEnable::False => None,
        _ => opts.schemas.split(avro::Part::Value, &lineage.topic, bytes),
    };
    // The common record: a row change whose schema is cached. Anything the
    // fast path does not handle is decoded again below, from the start.
    if let Some((schema, payload)) = &cached
        && let Some(fields) = schema.fast_envelope()
        && let Some(fast::Envelope { op, before, after, position, source_ts_ms }) = fast::envelope(buf, payload, fields)
    {
        let key = decode_key(record, opts)?;
        key_agrees(lineage, op, &key, after.as_ref(), before.as_ref())?;
        return Ok(Decoded::Change(ChangeEvent {
            lineage: lineage.clone(),
            op,
            key,
            after,
            before,
            position,
            source_ts_ms,
            types: schema.row.as_ref().map(|r| r.fields.clone()),
        }));
    }
    let cached = cached.and_then(|(schema, payload)| Some((schema, serde_json::from_slice::<Json>(payload).ok()?)));
    let (schema, payload) = if let Some((schema, payload)) = cached {
        (Some(schema), payload)
    } else if let Some(registry) = opts.registry.as_deref().filter(|_| avro::is_avro(bytes)) {
        let (schema, payload) = registry.decode(lineage, avro::Part::Value, bytes)?;
        (Some(Arc::new(ValueSchema::new(&schema, None))), payload)
    } else {
        let value: Json =
            serde_json::from_slice(bytes).map_err(|e| not_json(lineage, avro::Part::Value, e, bytes, opts))?;
        let (schema, payload) = split_schema(value);
        match (opts.schemas_enable, schema.is_some()) {
            (SchemasEnable::True, false) => {
                return Err(DecodeError::NotAnEnvelope {
                    lineage: lineage.clone(),
                    detail: "value is not {\"schema\":..,\"payload\":..} although schemas are enabled; check the connector's value.converter.schemas.enable or run with --schemas-enable auto".into(),
                });
            }
            (SchemasEnable::False, true) => {
                return Err(DecodeError::NotAnEnvelope {
                    lineage: lineage.clone(),
                    detail:
                        "value carries a schema although schemas are disabled; run with --schemas-enable true or auto"
                            .into(),
                });
            }
            _ => {}
        }
        (schema.map(|s| opts.schemas.learn(avro::Part::Value, &lineage.topic, bytes, &s)), payload)
    };
    let mut payload = match payload {
        Json::Object(m) => m,
        // ExtractNewRecordState's default delete: a null payload, not a Kafka null.
        Json::Null => {
            return Err(DecodeError::Unordered {
                lineage: lineage.clone(),
                detail: "an unwrapped delete (null payload) carries no key position".into(),
            });
        }
        other => {
            return Err(DecodeError::NotAnEnvelope {
                lineage: lineage.clone(),
                detail: format!("payload is {}, not a Debezium envelope object", kind_of(&other)),
            });
        }
    };
    let Some(op) = payload.get("op") else {
        if let Some(reason) = classify_other(&payload) {
            return Ok(Decoded::NotAChange(reason));
        }
        if payload.keys().any(|k| k.starts_with("__")) {
            return unwrapped::decode(record, opts, schema.as_deref(), payload);
        }
        return Err(DecodeError::NotAnEnvelope {
            lineage: lineage.clone(),
            detail: "value has no 'op' field: it is not a Debezium change envelope (is ExtractNewRecordState configured on the connector?)".into(),
        });
    };
    let op = match op.as_str() {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("r") => Op::Read,
        _ => return Err(DecodeError::UnknownOp { lineage: lineage.clone(), op: op.to_string() }),
    };
    let source = match payload.get("source") {
        Some(Json::Object(s)) => s,
        _ => {
            return Err(DecodeError::NotAnEnvelope {
                lineage: lineage.clone(),
                detail: "envelope has no 'source' object".into(),
            });
        }
    };
    // Rows of Debezium's signal table (execute-snapshot requests and the
    // incremental-snapshot watermarks it writes) are control data, not a
    // read model's rows, even when its topic is subscribed.
    if source.get("table").and_then(Json::as_str).is_some_and(|t| t.eq_ignore_ascii_case(SIGNAL_TABLE)) {
        return Ok(Decoded::NotAChange("signal table row"));
    }
    let bad_value = |source: ValueError| DecodeError::Value { lineage: lineage.clone(), source };
    if let Some(s) = schema.as_ref().and_then(|s| s.source.as_ref()) {
        s.check("source", source).map_err(bad_value)?;
    }
    if let Some(s) = schema.as_ref().and_then(|s| s.scalars.as_ref()) {
        s.check("envelope", &payload).map_err(bad_value)?;
    }
    let position = SourcePosition::from_source(source)
        .map_err(|source| DecodeError::Position { lineage: lineage.clone(), source })?;
    let source_ts_ms = source.get("ts_ms").and_then(Json::as_i64);

    let (row_schema, required): (Option<RowFields>, _) = match (&schema, &opts.history) {
        (Some(s), _) => (s.row.as_ref().map(|r| r.fields.clone()), s.row.as_ref().map(|r| &r.required)),
        (None, Some(history)) => (Some(Arc::from(history_row_schema(history, lineage, &position, &payload)?)), None),
        (None, None) => (None, None),
    };
    let mut image = |name: &str| -> Result<Option<Row>, DecodeError> {
        match payload.remove(name) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Object(m)) => row(m, row_schema.as_deref(), required.map(|r| &r[..]))
                .map(Some)
                .map_err(|source| DecodeError::Value { lineage: lineage.clone(), source }),
            Some(other) => Err(DecodeError::NotAnEnvelope {
                lineage: lineage.clone(),
                detail: format!("'{name}' is {}, expected a row object or null", kind_of(&other)),
            }),
        }
    };
    let after = image("after")?;
    let before = image("before")?;
    match op {
        Op::Create | Op::Update | Op::Read if after.is_none() => {
            return Err(DecodeError::NotAnEnvelope {
                lineage: lineage.clone(),
                detail: format!("op '{}' has no 'after' row", op.as_str()),
            });
        }
        _ => {}
    }
    let key = decode_key(record, opts)?;
    key_agrees(lineage, op, &key, after.as_ref(), before.as_ref())?;
    Ok(Decoded::Change(ChangeEvent {
        lineage: lineage.clone(),
        op,
        key,
        after,
        before,
        position,
        source_ts_ms,
        types: row_schema,
    }))
}

/// The error for bytes that are not JSON, saying whether they look like Avro.
fn not_json(
    lineage: &Lineage,
    part: avro::Part,
    e: serde_json::Error,
    bytes: &[u8],
    opts: &DecodeOptions,
) -> DecodeError {
    let mut detail = e.to_string();
    if opts.registry.is_some() && bytes.first() != Some(&b'{') {
        let why = avro::split_wire(bytes).err().unwrap_or_default();
        let detail =
            format!("{why}, and it is not JSON either ({detail}); check the connector's {}.converter", part.as_str());
        return DecodeError::BadAvro { lineage: lineage.clone(), part: part.as_str(), detail };
    }
    if opts.registry.is_none() && avro::is_avro(bytes) {
        detail.push_str(
            "; it starts with the magic byte 0x00 of Confluent's Avro wire format: run with --schema-registry-url",
        );
    }
    match part {
        avro::Part::Value => DecodeError::InvalidJson { lineage: lineage.clone(), detail },
        avro::Part::Key => DecodeError::InvalidKey { lineage: lineage.clone(), detail },
    }
}

/// Separates `{"schema":..,"payload":..}` into its parts; bare JSON has no schema.
fn split_schema(value: Json) -> (Option<Json>, Json) {
    match value {
        Json::Object(mut m) if m.len() == 2 && m.contains_key("schema") && m.contains_key("payload") => {
            let payload = m.remove("payload").unwrap_or(Json::Null);
            (m.remove("schema"), payload)
        }
        other => (None, other),
    }
}

fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Recognises the non-row topics a Debezium subscriber meets.
fn classify_other(payload: &Map<String, Json>) -> Option<&'static str> {
    if payload.contains_key("tableChanges") || payload.contains_key("ddl") {
        Some("schema change")
    } else if payload.contains_key("status") && payload.contains_key("id") && payload.contains_key("event_count") {
        Some("transaction metadata")
    } else if payload.len() == 1 && payload.contains_key("ts_ms") {
        Some("heartbeat")
    } else {
        None
    }
}

/// Field types of a schemaless row's columns, from the schema history's
/// version in force at the event's position.
fn history_row_schema(
    history: &SchemaHistory,
    lineage: &Lineage,
    position: &SourcePosition,
    payload: &Map<String, Json>,
) -> Result<Vec<(Name, FieldType)>, DecodeError> {
    let row = payload.get("after").filter(|a| a.is_object()).or_else(|| payload.get("before"));
    let columns = row.and_then(Json::as_object).map(|m| m.keys().map(String::as_str).collect::<Vec<_>>());
    let types = history.field_types(&lineage.topic, position, &columns.unwrap_or_default()).map_err(|gap| {
        DecodeError::NoSchema { lineage: lineage.clone(), history: history.topic().to_string(), gap: Box::new(gap) }
    })?;
    Ok(types.into_iter().map(|(c, t)| (Name::from(c), t)).collect())
}

fn decode_key(record: &SourceRecord, opts: &DecodeOptions) -> Result<Row, DecodeError> {
    let lineage = &record.lineage;
    let Some(buf) = record.key.as_ref() else {
        return Err(DecodeError::MissingKey { lineage: lineage.clone() });
    };
    let bytes: &[u8] = buf;
    // Keys repeat their schema too: a cached one lets the fast path read
    // the payload alone; anything it does not handle is read below.
    if let Some((schema, payload)) = opts.schemas.split(avro::Part::Key, &lineage.topic, bytes)
        && let Some(fields) = schema.fast_fields()
        && let Some(key) = fast::key(buf, payload, fields)
    {
        return Ok(key);
    }
    let (schema, payload) = match opts.registry.as_deref().filter(|_| avro::is_avro(bytes)) {
        Some(registry) => registry.decode(lineage, avro::Part::Key, bytes).map(|(s, p)| (Some(s), p))?,
        None => {
            let (schema, payload) = split_schema(
                serde_json::from_slice(bytes).map_err(|e| not_json(lineage, avro::Part::Key, e, bytes, opts))?,
            );
            if let Some(schema) = &schema {
                opts.schemas.learn(avro::Part::Key, &lineage.topic, bytes, schema);
            }
            (schema, payload)
        }
    };
    let fields = schema.as_ref().and_then(StructSchema::of);
    match payload {
        Json::Object(m) if !m.is_empty() => {
            row(m, fields.as_ref().map(|f| &f.fields[..]), fields.as_ref().map(|f| &f.required[..]))
                .map_err(|source| DecodeError::Value { lineage: lineage.clone(), source })
        }
        Json::Null => Err(DecodeError::MissingKey { lineage: lineage.clone() }),
        other => Err(DecodeError::InvalidKey {
            lineage: lineage.clone(),
            detail: format!("key is {}, expected a struct of primary-key columns", kind_of(&other)),
        }),
    }
}

#[cfg(test)]
mod tests;
