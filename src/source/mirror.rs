//! The staging PostgreSQL mirror as a source: one mirror table (written by
//! the PostgreSQL sink, see [`crate::sink::postgres`]) read back as change
//! events, so a rebuild can fill a new target without Kafka or SQL Server.
//!
//! Each row becomes a snapshot read (`r`) at its stored `__position`, its
//! typed columns the after-image; a `__deleted` row becomes a delete at its
//! position, so a tombstone carries over and a late, older event cannot
//! revive it in the new target either. The row's `__partition`/`__offset`
//! stay its lineage, so compaction deletes order against it as before.
//! Rows are read by keyset pagination on `__id` within a key range
//! `[lo, hi)`, one page at a time: memory stays flat whatever the table size.
//!
//! Only a *whole* mirror can stand in for the topic: its read model's
//! mapping copies every column under its source name (no `fields:`,
//! `computed:`, `where:`, `key:` or `postgres.exclude`). The Debezium key
//! is not stored beside the row, so it is recovered from `__id` (see
//! [`KeyColumns`]) and checked on every row.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::decode::value::parse_decimal_text;
use crate::decode::{ChangeEvent, FieldType, Name, Op, Row, SourcePosition, Value};
use crate::mapping::{TableMapping, document_id, expr};
use crate::sink::postgres::{META, quote, quote_table};
use crate::source::Lineage;

/// Why a mirror cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("mirror table {table}: {message}; check that the staging PostgreSQL is up and the table exists")]
    Postgres { table: String, message: String },
    #[error(
        "mirror table {table} cannot rebuild {topic}: {why}. Rebuild with --from kafka, or mirror the table whole (a postgres target with no fields:, computed:, where:, key: or exclude:)"
    )]
    NotWhole { table: String, topic: String, why: String },
    #[error(
        "{topic} has no mirror to rebuild from: the read model has no postgres target for it. Rebuild with --from kafka, or mirror the table whole (a postgres target with no fields:, computed:, where:, key: or exclude:)"
    )]
    NoMirror { topic: String },
    #[error("mirror table {table}, row {id:?}: {detail}; fix the row or rebuild with --from kafka")]
    BadRow { table: String, id: String, detail: String },
}

/// How a column is read back into a [`Value`]: the SQL that selects it and
/// the Rust type that SQL returns.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Read {
    Int,
    Float,
    Bool,
    Decimal,
    Text,
    Bytes,
    Date,
    Time,
    Timestamp,
    Zoned,
    Json,
}

/// One data column of a mirror table.
#[derive(Clone, Debug)]
pub struct MirrorColumn {
    pub name: Name,
    /// The catalog type (`format_type`), e.g. `numeric(12,2)`.
    pub pg_type: String,
    /// The Connect type the sink would have made this column from, so the
    /// new target types its field as the live one did.
    pub field_type: FieldType,
    read: Read,
}

/// One mirror row as read.
#[derive(Clone, Debug)]
pub struct MirrorRow {
    pub id: String,
    pub position: String,
    pub deleted: bool,
    pub source_ts_ms: Option<i64>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub columns: Row,
}

/// A mirror table, its columns read from the catalog.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub table: String,
    pub columns: Vec<MirrorColumn>,
    types: Arc<[(Name, FieldType)]>,
    select: String,
}

/// The mirror of `table`'s topic: the table its `mirror:` names, else the
/// read model's own postgres target if its mapping copies the table whole;
/// else why not.
pub fn whole_mirror(table: &TableMapping) -> Result<&str, MirrorError> {
    table.mirror_table().map_err(|gap| match gap {
        None => MirrorError::NoMirror { topic: table.topic.clone() },
        Some(why) => MirrorError::NotWhole {
            table: table.postgres.as_ref().map(|pg| pg.table.clone()).unwrap_or_default(),
            topic: table.topic.clone(),
            why,
        },
    })
}

impl Mirror {
    /// Reads `table`'s columns from the catalog.
    pub async fn open(client: &Client, table: &str) -> Result<Mirror, MirrorError> {
        let pg = |e: tokio_postgres::Error| MirrorError::Postgres { table: table.into(), message: e.to_string() };
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text, a.atttypmod
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&quote_table(table)],
            )
            .await
            .map_err(pg)?;
        if rows.is_empty() {
            return Err(MirrorError::Postgres { table: table.into(), message: "no such table".into() });
        }
        let columns: Vec<MirrorColumn> = rows
            .iter()
            .filter(|r| !META.iter().any(|(m, _)| *m == r.get::<_, String>(0)))
            .map(|r| column(r.get(0), r.get(1), &r.get::<_, String>(2), r.get(3)))
            .collect();
        let types = columns.iter().map(|c| (c.name.clone(), c.field_type.clone())).collect();
        let mut select = vec![
            "__id".to_string(),
            "__position".into(),
            "__deleted".into(),
            "(EXTRACT(EPOCH FROM __source_ts) * 1000)::int8".into(),
            "__partition".into(),
            "__offset".into(),
        ];
        select.extend(columns.iter().map(|c| expression(&quote(&c.name), c.read)));
        Ok(Mirror { table: table.into(), columns, types, select: select.join(", ") })
    }

    /// Refuses a mirror that lacks a column `table`'s mapping reads.
    pub fn check_covers(&self, table: &TableMapping) -> Result<(), MirrorError> {
        let mut read: Vec<&str> = Vec::new();
        if let Some(fields) = &table.fields {
            read.extend(fields.iter().map(|f| f.column.as_str()));
        }
        read.extend(table.computed.iter().flat_map(|c| c.expr.columns()));
        if let Some((_, f)) = &table.filter {
            read.extend(f.columns());
        }
        if let Some(key) = &table.key {
            read.extend(key.iter().map(|k| &**k));
        }
        let mut missing: Vec<String> =
            read.into_iter().filter(|c| !self.columns.iter().any(|m| m.name == *c)).map(str::to_string).collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        Err(MirrorError::NotWhole {
            table: self.table.clone(),
            topic: table.topic.clone(),
            why: format!("the mapping (line {}) reads columns it lacks: {missing:?}", table.line),
        })
    }

    /// How many rows (tombstones included) the mirror holds.
    pub async fn count(&self, client: &Client) -> Result<u64, MirrorError> {
        let sql = format!("SELECT count(*) FROM {}", quote_table(&self.table));
        let row = client
            .query_one(&sql, &[])
            .await
            .map_err(|e| MirrorError::Postgres { table: self.table.clone(), message: e.to_string() })?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Up to `limit` rows of `[lo, hi)` after `after`, in `__id` order.
    pub async fn page(
        &self,
        client: &Client,
        lo: Option<&str>,
        hi: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MirrorRow>, MirrorError> {
        // `lo` and `after` are both lower bounds: the greater one wins.
        let sql = format!(
            "SELECT {} FROM {} WHERE ($1::text IS NULL OR __id >= $1) AND ($2::text IS NULL OR __id < $2) AND ($3::text IS NULL OR __id > $3) ORDER BY __id LIMIT $4",
            self.select,
            quote_table(&self.table)
        );
        let rows = client
            .query(&sql, &[&lo, &hi, &after, &limit])
            .await
            .map_err(|e| MirrorError::Postgres { table: self.table.clone(), message: e.to_string() })?;
        rows.iter().map(|r| self.row(r)).collect()
    }

    fn row(&self, r: &tokio_postgres::Row) -> Result<MirrorRow, MirrorError> {
        let id: String = r.get(0);
        let mut columns = Row::default();
        for (i, c) in self.columns.iter().enumerate() {
            let value = read(r, i + 6, c.read).map_err(|detail| MirrorError::BadRow {
                table: self.table.clone(),
                id: id.clone(),
                detail: format!("column {:?} ({}): {detail}", &*c.name, c.pg_type),
            })?;
            columns.columns.push((c.name.clone(), value));
        }
        Ok(MirrorRow {
            id,
            position: r.get(1),
            deleted: r.get(2),
            source_ts_ms: r.get(3),
            partition: r.get(4),
            offset: r.get(5),
            columns,
        })
    }

    /// The change event a row stands for, under `topic`, its key the
    /// columns `key` names.
    pub fn event(&self, topic: &Arc<str>, row: MirrorRow, key: &KeyColumns) -> Result<ChangeEvent, MirrorError> {
        let key_row = key.key_of(&row).ok_or_else(|| MirrorError::BadRow {
            table: self.table.clone(),
            id: row.id.clone(),
            detail: format!("its key columns {:?} do not form its __id", key.0),
        })?;
        let (op, after, before) =
            if row.deleted { (Op::Delete, None, Some(row.columns)) } else { (Op::Read, Some(row.columns), None) };
        Ok(ChangeEvent {
            // A row written before sinks stored its Kafka record has none: -1
            // orders like "another partition" for compaction deletes.
            lineage: Lineage {
                topic: topic.clone(),
                partition: row.partition.unwrap_or(-1),
                offset: row.offset.unwrap_or(-1),
            },
            op,
            key: key_row,
            after,
            before,
            position: SourcePosition::from_stored(row.position),
            source_ts_ms: row.source_ts_ms,
            types: Some(self.types.clone()),
        })
    }
}

/// The Debezium key's columns, recovered from rows: those whose values form
/// each row's `__id` (see [`document_id`]), in key order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyColumns(pub Vec<Name>);

impl KeyColumns {
    /// The key columns that form the `__id` of every live row of `rows`
    /// (a tombstone may hold only its key, so live rows decide); `None` if
    /// no choice fits them all.
    pub fn infer(rows: &[MirrorRow]) -> Option<KeyColumns> {
        let sample: Vec<&MirrorRow> = rows.iter().filter(|r| !r.deleted).collect();
        let first = sample.first().copied().or(rows.first())?;
        let fits = |k: &KeyColumns| sample.iter().chain(std::iter::once(&first)).all(|r| k.key_of(r).is_some());
        // A single-column key is the id's text itself.
        for (name, _) in &first.columns.columns {
            let k = KeyColumns(vec![name.clone()]);
            if fits(&k) {
                return Some(k);
            }
        }
        // A composite key: each `|`-separated part is one column, in order.
        let parts = split_id(&first.id);
        let mut chosen: Vec<Name> = Vec::new();
        for part in &parts {
            let next = first.columns.columns.iter().find(|(n, v)| {
                !chosen.contains(n)
                    && scalar_text(v).as_deref() == Some(part.as_str())
                    && sample.iter().all(|r| r.columns.get(n).and_then(scalar_text).is_some())
            })?;
            chosen.push(next.0.clone());
        }
        let k = KeyColumns(chosen);
        fits(&k).then_some(k)
    }

    /// The key row of `row`, if its columns form its `__id`.
    pub fn key_of(&self, row: &MirrorRow) -> Option<Row> {
        let mut key = Row::default();
        for n in &self.0 {
            key.columns.push((n.clone(), row.columns.get(n)?.clone()));
        }
        (document_id(&key).ok()? == row.id).then_some(key)
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null | Value::Unavailable | Value::Json(_) => None,
        other => Some(expr::text(other).into_owned()),
    }
}

/// The parts of a composite id, unescaped (the inverse of [`document_id`]'s join).
fn split_id(id: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = id.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(last)) = (chars.next(), parts.last_mut()) {
                    last.push(next);
                }
            }
            '|' => parts.push(String::new()),
            c => {
                if let Some(last) = parts.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    parts
}

/// A catalog column as a mirror column: how to read it and the Connect
/// type the sink made it from (the inverse of `pg_type_of_field`).
fn column(name: String, pg_type: String, typname: &str, typmod: i32) -> MirrorColumn {
    let named = |connect: &str, name: &str| FieldType {
        connect: connect.into(),
        name: Some(name.into()),
        ..FieldType::default()
    };
    let plain = |connect: &str| FieldType { connect: connect.into(), ..FieldType::default() };
    let (read, field_type) = match typname {
        "int2" => (Read::Int, plain("int16")),
        "int4" => (Read::Int, plain("int32")),
        "int8" => (Read::Int, plain("int64")),
        "float4" => (Read::Float, plain("float32")),
        "float8" => (Read::Float, plain("float64")),
        "bool" => (Read::Bool, plain("boolean")),
        "numeric" if typmod >= 4 => {
            // PostgreSQL packs numeric(p,s) as ((p << 16) | s) + 4.
            let packed = typmod - 4;
            let ft = FieldType {
                connect: "bytes".into(),
                name: Some("org.apache.kafka.connect.data.Decimal".into()),
                precision: u32::try_from((packed >> 16) & 0xffff).ok(),
                scale: u32::try_from(packed & 0xffff).ok(),
            };
            (Read::Decimal, ft)
        }
        "numeric" => (Read::Decimal, named("struct", "io.debezium.data.VariableScaleDecimal")),
        "date" => (Read::Date, named("int32", "io.debezium.time.Date")),
        "time" if typmod == 3 => (Read::Time, named("int32", "io.debezium.time.Time")),
        "time" => (Read::Time, named("int64", "io.debezium.time.MicroTime")),
        "timestamp" if typmod == 3 => (Read::Timestamp, named("int64", "io.debezium.time.Timestamp")),
        "timestamp" => (Read::Timestamp, named("int64", "io.debezium.time.MicroTimestamp")),
        "timestamptz" => (Read::Zoned, named("string", "io.debezium.time.ZonedTimestamp")),
        "uuid" => (Read::Text, named("string", "io.debezium.data.Uuid")),
        "json" | "jsonb" => (Read::Json, named("string", "io.debezium.data.Json")),
        "bytea" => (Read::Bytes, plain("bytes")),
        _ => (Read::Text, plain("string")),
    };
    MirrorColumn { name: Name::from(name.as_str()), pg_type, field_type, read }
}

/// The SQL that selects a column in the form [`read`] takes.
fn expression(c: &str, read: Read) -> String {
    match read {
        Read::Int => format!("{c}::int8"),
        Read::Float => format!("{c}::float8"),
        Read::Bool | Read::Bytes => c.to_string(),
        Read::Decimal | Read::Text | Read::Json => format!("{c}::text"),
        Read::Date => format!("({c} - DATE '1970-01-01')"),
        Read::Time | Read::Timestamp => format!("(EXTRACT(EPOCH FROM {c}) * 1000000)::int8"),
        // UTC ISO-8601, whatever the session's time zone.
        Read::Zoned => format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"),
    }
}

/// Column `i` of `r`, read as `read`.
fn read(r: &tokio_postgres::Row, i: usize, read: Read) -> Result<Value, String> {
    let e = |e: tokio_postgres::Error| e.to_string();
    Ok(match read {
        Read::Int => r.try_get::<_, Option<i64>>(i).map_err(e)?.map_or(Value::Null, Value::Int),
        Read::Float => r.try_get::<_, Option<f64>>(i).map_err(e)?.map_or(Value::Null, Value::Float),
        Read::Bool => r.try_get::<_, Option<bool>>(i).map_err(e)?.map_or(Value::Null, Value::Bool),
        Read::Bytes => r.try_get::<_, Option<Vec<u8>>>(i).map_err(e)?.map_or(Value::Null, Value::Bytes),
        Read::Date => r.try_get::<_, Option<i32>>(i).map_err(e)?.map_or(Value::Null, Value::Date),
        Read::Time => match r.try_get::<_, Option<i64>>(i).map_err(e)? {
            None => Value::Null,
            Some(us) => Value::Time(us.checked_mul(1000).ok_or("time out of range")?),
        },
        Read::Timestamp => {
            r.try_get::<_, Option<i64>>(i).map_err(e)?.map_or(Value::Null, |us| Value::Timestamp(i128::from(us) * 1000))
        }
        // Text is read borrowed from the row's buffer: a short one is then
        // held in place with no allocation at all (see decode::Text).
        Read::Text => r.try_get::<_, Option<&str>>(i).map_err(e)?.map_or(Value::Null, |s| Value::String(s.into())),
        Read::Zoned => {
            r.try_get::<_, Option<&str>>(i).map_err(e)?.map_or(Value::Null, |s| Value::ZonedTimestamp(s.into()))
        }
        Read::Decimal => match r.try_get::<_, Option<&str>>(i).map_err(e)? {
            None => Value::Null,
            Some(s) => parse_decimal_text(s).ok_or_else(|| format!("{s:?} is not a finite decimal"))?,
        },
        Read::Json => match r.try_get::<_, Option<&str>>(i).map_err(e)? {
            None => Value::Null,
            Some(s) => Value::Json(Box::new(serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))?)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, deleted: bool, cols: &[(&str, Value)]) -> MirrorRow {
        MirrorRow {
            id: id.into(),
            position: "01".into(),
            deleted,
            source_ts_ms: None,
            partition: Some(0),
            offset: Some(1),
            columns: Row { columns: cols.iter().map(|(n, v)| (Name::from(*n), v.clone())).collect() },
        }
    }

    #[test]
    fn a_single_key_is_the_column_every_live_row_shares_with_its_id() {
        // Seats equals the id in the first row only: the key is TripId.
        let rows = [
            row("2", false, &[("Seats", Value::Int(2)), ("TripId", Value::Int(2))]),
            row("3", false, &[("Seats", Value::Int(9)), ("TripId", Value::Int(3))]),
        ];
        assert_eq!(KeyColumns::infer(&rows), Some(KeyColumns(vec![Name::from("TripId")])));
    }

    #[test]
    fn a_composite_key_is_found_part_by_part_in_key_order() {
        let rows = [
            row("b|a\\|x", false, &[("A", Value::String("a|x".into())), ("B", Value::String("b".into()))]),
            row("c|d", true, &[("A", Value::String("d".into())), ("B", Value::String("c".into()))]),
        ];
        let key = KeyColumns::infer(&rows).unwrap();
        assert_eq!(key, KeyColumns(vec![Name::from("B"), Name::from("A")]));
        assert!(key.key_of(&rows[1]).is_some(), "the tombstone's key forms its id too");
    }

    #[test]
    fn numeric_typmod_gives_back_precision_and_scale() {
        let c = column("Fare".into(), "numeric(12,2)".into(), "numeric", (12 << 16 | 2) + 4);
        assert_eq!((c.field_type.precision, c.field_type.scale), (Some(12), Some(2)));
        assert_eq!(crate::sink::postgres::pg_type_of_field(&c.field_type), "numeric(12,2)");
        let t = column("At".into(), "timestamp(3) without time zone".into(), "timestamp", 3);
        assert_eq!(crate::sink::postgres::pg_type_of_field(&t.field_type), "timestamp(3)");
    }
}
