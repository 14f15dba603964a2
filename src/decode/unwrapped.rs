//! The unwrapped form: a record that Debezium's ExtractNewRecordState SMT
//! flattened to the row itself, its envelope fields moved to `__`-prefixed
//! columns by `add.fields`. It is a [`ChangeEvent`] like any other once its
//! source position, op and deletion are read back from those columns.

use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::conform::{key_agrees, row};
use super::{ChangeEvent, DecodeError, DecodeOptions, Decoded, Op, SourcePosition, ValueSchema, decode_key};
use crate::source::SourceRecord;

/// The ExtractNewRecordState form: the row itself plus `__`-prefixed fields
/// from `add.fields` (`__op`, `__source_ts_ms`, `__source_commit_lsn`, ...)
/// and, with `delete.tombstone.handling.mode=rewrite`, `__deleted`.
pub(super) fn decode(
    record: &SourceRecord,
    opts: &DecodeOptions,
    schema: Option<&ValueSchema>,
    mut payload: Map<String, Json>,
) -> Result<Decoded, DecodeError> {
    let lineage = &record.lineage;
    // add.fields names source fields `__source_<f>` when qualified, `__<f>` when not.
    let mut meta = Map::new();
    let keys: Vec<String> = payload.keys().filter(|k| k.starts_with("__")).cloned().collect();
    for k in keys {
        let v = payload.remove(&k).unwrap_or(Json::Null);
        let name = k.trim_start_matches("__");
        meta.insert(name.strip_prefix("source_").unwrap_or(name).to_string(), v);
    }
    let connector = if meta.contains_key("commit_lsn") {
        "sqlserver"
    } else if meta.contains_key("lsn") {
        "postgresql"
    } else {
        return Err(DecodeError::Unordered {
            lineage: lineage.clone(),
            detail: "an unwrapped record carries no source position (__source_commit_lsn or __source_lsn)".into(),
        });
    };
    meta.insert("connector".into(), Json::String(connector.into()));
    let position = SourcePosition::from_source(&meta)
        .map_err(|source| DecodeError::Position { lineage: lineage.clone(), source })?;
    let deleted = meta.get("deleted").and_then(Json::as_str) == Some("true");
    let op = match meta.get("op").and_then(Json::as_str) {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("r") => Op::Read,
        Some(other) => return Err(DecodeError::UnknownOp { lineage: lineage.clone(), op: other.to_string() }),
        None if deleted => Op::Delete,
        None => Op::Update,
    };
    let op = if deleted { Op::Delete } else { op };
    let fields = schema.and_then(|s| s.fields.as_ref());
    // The `__` fields were taken out above: only the row's own are required here.
    let required: Option<Vec<bool>> =
        fields.map(|f| f.fields.iter().zip(&f.required).map(|((n, _), r)| *r && !n.starts_with("__")).collect());
    let image = row(payload, fields.map(|f| &f.fields[..]), required.as_deref())
        .map_err(|source| DecodeError::Value { lineage: lineage.clone(), source })?;
    let (after, before) = if op == Op::Delete { (None, Some(image)) } else { (Some(image), None) };
    let key = decode_key(record, opts)?;
    key_agrees(lineage, op, &key, after.as_ref(), before.as_ref())?;
    let source_ts_ms = meta.get("ts_ms").and_then(Json::as_i64);
    let types =
        fields.map(|f| Arc::from(f.fields.iter().filter(|(n, _)| !n.starts_with("__")).cloned().collect::<Vec<_>>()));
    Ok(Decoded::Change(ChangeEvent { lineage: lineage.clone(), op, key, after, before, position, source_ts_ms, types }))
}
