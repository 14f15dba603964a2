//! The GoogleSQL the BigQuery sink sends, as pure functions: identifier
//! quoting, the column type of each Debezium type (or decoded value), the
//! text each value travels as, and the DDL/DML statements (create, add
//! column, live view, per-batch staging table, guarded MERGE, position
//! look-up). No I/O here, so every statement is unit-tested.

use base64::Engine;

use crate::decode::value::{date_text, decimal_text, time_text, timestamp_text};
use crate::decode::{FieldType, Value};
use crate::sink::TypeChange;

/// The bookkeeping columns every table has, with their types.
pub const META: [(&str, &str); 7] = [
    ("__id", "STRING NOT NULL"),
    ("__position", "STRING NOT NULL"),
    ("__deleted", "BOOL NOT NULL"),
    ("__source_ts", "TIMESTAMP"),
    ("__written_at", "TIMESTAMP"),
    // The Kafka record that last wrote the row: what a compaction delete
    // (a tombstone, which has no source position) is ordered by.
    ("__partition", "INT64"),
    ("__offset", "INT64"),
];

/// The staging table's extra column: `,i,j,` lists the data columns whose
/// stored value must be kept (uncaptured LOB values; non-key columns of a delete).
pub const KEEP: &str = "__keep";

/// A quoted identifier: backtick-quoted, `\` and `` ` `` escaped with `\`.
pub fn quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for ch in name.chars() {
        match ch {
            '`' => out.push_str("\\`"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            other => out.push(other),
        }
    }
    out.push('`');
    out
}

/// A fully qualified table: `` `project`.`dataset`.`table` ``.
pub fn table_ref(project: &str, dataset: &str, table: &str) -> String {
    format!("{}.{}.{}", quote(project), quote(dataset), quote(table))
}

/// A string literal: single-quoted, `\` and `'` escaped.
pub fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        match ch {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            other => out.push(other),
        }
    }
    out.push('\'');
    out
}

/// Checks a table name against BigQuery's rules (letters, marks, digits,
/// `_`, `-`, spaces; at most 1024 bytes) so a bad name fails at start-up
/// with a hint rather than as an opaque 400 on the first batch.
pub fn check_table_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 1024
        && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bigquery table {name:?} is not a valid BigQuery table name: use letters, digits, '_' , '-' or spaces (no dots or quotes), at most 1024 bytes"
        ))
    }
}

/// The column type for a Connect field type, as faithful as BigQuery allows:
/// decimals keep precision and scale (NUMERIC up to 29 integer + 9 fraction
/// digits, else BIGNUMERIC), wall-clock timestamps are DATETIME, zoned ones
/// TIMESTAMP. Times and timestamps keep microseconds (BigQuery's limit).
pub fn type_of_field(ft: &FieldType) -> String {
    match ft.name.as_deref() {
        Some("org.apache.kafka.connect.data.Decimal") => decimal_type(ft.precision, ft.scale),
        Some("io.debezium.data.VariableScaleDecimal") => "BIGNUMERIC".into(),
        Some("io.debezium.time.Date") | Some("org.apache.kafka.connect.data.Date") => "DATE".into(),
        Some("io.debezium.time.Time")
        | Some("org.apache.kafka.connect.data.Time")
        | Some("io.debezium.time.MicroTime")
        | Some("io.debezium.time.NanoTime") => "TIME".into(),
        Some("io.debezium.time.Timestamp")
        | Some("org.apache.kafka.connect.data.Timestamp")
        | Some("io.debezium.time.MicroTimestamp")
        | Some("io.debezium.time.NanoTimestamp") => "DATETIME".into(),
        Some("io.debezium.time.ZonedTimestamp") => "TIMESTAMP".into(),
        Some("io.debezium.data.Uuid") => "STRING".into(),
        Some("io.debezium.data.Json") => "JSON".into(),
        Some("io.debezium.time.MicroDuration") => "INT64".into(),
        _ => match ft.connect.as_str() {
            "int8" | "int16" | "int32" | "int64" => "INT64".into(),
            "float" | "float32" | "float64" | "double" => "FLOAT64".into(),
            "boolean" => "BOOL".into(),
            "bytes" => "BYTES".into(),
            "string" => "STRING".into(),
            _ => "JSON".into(),
        },
    }
}

/// NUMERIC(p,s) when it fits (s ≤ 9, p − s ≤ 29), else BIGNUMERIC(p,s)
/// (s ≤ 38, p − s ≤ 38), else unparameterized BIGNUMERIC.
pub fn decimal_type(precision: Option<u32>, scale: Option<u32>) -> String {
    match (precision, scale) {
        (Some(p), Some(s)) if p >= 1 && s <= p => {
            if s <= 9 && p - s <= 29 {
                format!("NUMERIC({p}, {s})")
            } else if s <= 38 && p - s <= 38 {
                format!("BIGNUMERIC({p}, {s})")
            } else {
                "BIGNUMERIC".into()
            }
        }
        (_, Some(s)) if s <= 9 => "NUMERIC".into(),
        _ => "BIGNUMERIC".into(),
    }
}

/// The column type for a field known only by a decoded value; `None` for null.
pub fn type_of_value(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null | Value::Unavailable => return None,
        Value::Bool(_) => "BOOL".into(),
        Value::Int(_) => "INT64".into(),
        Value::Float(_) => "FLOAT64".into(),
        Value::Decimal { scale, .. } => decimal_type(None, Some(*scale)),
        Value::String(_) => "STRING".into(),
        Value::Bytes(_) => "BYTES".into(),
        Value::Date(_) => "DATE".into(),
        Value::Time(_) => "TIME".into(),
        Value::Timestamp(_) => "DATETIME".into(),
        Value::ZonedTimestamp(_) => "TIMESTAMP".into(),
        Value::Json(_) => "JSON".into(),
    })
}

/// A column's decimal limits `(precision, scale)` as written in DDL or read
/// back (`NUMERIC(12, 4)`); unparameterized NUMERIC holds 29 integer digits
/// and 9 decimals, BIGNUMERIC 38 and 38 (rounded down from 38.x).
pub fn decimal_limits(ty: &str) -> Option<(u32, u32)> {
    let base = base_type(ty);
    let args: Vec<u32> = ty
        .split_once('(')
        .map(|(_, rest)| rest.trim_end_matches(')').split(',').filter_map(|a| a.trim().parse().ok()).collect())
        .unwrap_or_default();
    match (base.as_str(), args.as_slice()) {
        ("NUMERIC" | "BIGNUMERIC", [p, s]) => Some((*p, *s)),
        ("NUMERIC" | "BIGNUMERIC", [p]) => Some((*p, 0)),
        ("NUMERIC", _) => Some((38, 9)),
        ("BIGNUMERIC", _) => Some((76, 38)),
        _ => None,
    }
}

/// How column `column` of `table`, of type `current`, follows a source type
/// that now needs `wanted`, by what `ALTER COLUMN SET DATA TYPE` allows:
/// INT64 → NUMERIC → BIGNUMERIC and decimal limits up (no fewer integer
/// digits, no fewer decimals) in place; what `current` already holds
/// unchanged; anything else a rebuild.
pub fn classify(table: &str, column: &str, current: &str, wanted: &str) -> TypeChange {
    let (from, to) = (base_type(current), base_type(wanted));
    let widen =
        || TypeChange::InPlace(format!("ALTER TABLE {table} ALTER COLUMN {} SET DATA TYPE {wanted}", quote(column)));
    let rank = |b: &str| match b {
        "INT64" => Some(0),
        "NUMERIC" => Some(1),
        "BIGNUMERIC" => Some(2),
        _ => None,
    };
    match (rank(&from), rank(&to)) {
        (Some(a), Some(b)) => {
            // INT64 holds 19 integer digits.
            let (p, s) = decimal_limits(current).unwrap_or((19, 0));
            let (p2, s2) = decimal_limits(wanted).unwrap_or((19, 0));
            let (int, int2) = (p.saturating_sub(s), p2.saturating_sub(s2));
            if s >= s2 && int >= int2 {
                TypeChange::Unchanged
            } else if b >= a && s2 >= s && int2 >= int {
                widen()
            } else {
                TypeChange::Rebuild(format!("{wanted} holds fewer integer digits or decimals than {current}"))
            }
        }
        _ if from == to => TypeChange::Unchanged,
        _ => TypeChange::Rebuild(format!("BigQuery cannot change {current} to {wanted} in place")),
    }
}

/// The base type of a column type as written in DDL or read back from
/// `tables.get` (`INTEGER` → `INT64`, `NUMERIC(12, 2)` → `NUMERIC`, ...).
pub fn base_type(ty: &str) -> String {
    let t = ty.trim().to_ascii_uppercase();
    let t = t.split(['(', ' ']).next().unwrap_or("").to_string();
    match t.as_str() {
        "INTEGER" => "INT64".into(),
        "FLOAT" => "FLOAT64".into(),
        "BOOLEAN" => "BOOL".into(),
        "BIGDECIMAL" => "BIGNUMERIC".into(),
        "DECIMAL" => "NUMERIC".into(),
        _ => t,
    }
}

/// How a staged value is read back from its JSON text in the staging query.
fn parse_expr(base: &str, json_path: &str) -> String {
    let v = format!("JSON_VALUE(r, {})", literal(json_path));
    match base {
        "STRING" => v,
        "BYTES" => format!("FROM_BASE64({v})"),
        "JSON" => format!("PARSE_JSON({v})"),
        "INT64" | "FLOAT64" | "NUMERIC" | "BIGNUMERIC" | "BOOL" | "DATE" | "TIME" | "DATETIME" | "TIMESTAMP" => {
            format!("CAST({v} AS {base})")
        }
        // GEOGRAPHY, INTERVAL, ...: BigQuery converts from text where it can.
        other => format!("CAST({v} AS {other})"),
    }
}

/// Truncates a `.fffffffff` fraction to microseconds (BigQuery's precision).
fn micros(text: String) -> String {
    match text.split_once('.') {
        Some((head, frac)) if frac.len() > 6 && frac.bytes().take(6).all(|b| b.is_ascii_digit()) => {
            let rest: String = frac.chars().skip_while(|c| c.is_ascii_digit()).collect();
            format!("{head}.{}{rest}", &frac[..6])
        }
        _ => text,
    }
}

/// The text a value travels as in the staging JSON, for a column of `base`
/// type; `None` is SQL NULL.
pub fn cell_text(v: &Value, base: &str) -> Option<String> {
    Some(match v {
        Value::Null | Value::Unavailable => return None,
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_nan() => "NaN".into(),
        Value::Float(f) if f.is_infinite() => {
            if *f > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            }
        }
        Value::Float(f) => f.to_string(),
        Value::Decimal { unscaled, scale } => decimal_text(*unscaled, *scale),
        Value::String(s) if base == "BYTES" => base64::engine::general_purpose::STANDARD.encode(s.as_bytes()),
        Value::String(s) => s.to_string(),
        Value::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Value::Date(d) => date_text(*d),
        Value::Time(n) => micros(time_text(*n)),
        // A wall clock: in a TIMESTAMP column it is read as UTC.
        Value::Timestamp(n) if base == "TIMESTAMP" => format!("{}Z", micros(timestamp_text(*n))),
        Value::Timestamp(n) => micros(timestamp_text(*n)),
        Value::ZonedTimestamp(s) => micros(s.to_string()),
        Value::Json(j) if base == "STRING" => match &**j {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        Value::Json(j) => j.to_string(),
    })
}

/// `CREATE TABLE IF NOT EXISTS` with the bookkeeping columns, the given data
/// columns, the primary key (not enforced), partitioning and clustering.
pub fn create_table(table: &str, columns: &[(String, String)], partition: Option<&str>, cluster: &[String]) -> String {
    let mut cols: Vec<String> = META.iter().map(|(n, t)| format!("{} {t}", quote(n))).collect();
    cols.extend(columns.iter().map(|(n, t)| format!("{} {t}", quote(n))));
    cols.push(format!("PRIMARY KEY ({}) NOT ENFORCED", quote("__id")));
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {table} ({})", cols.join(", "));
    if let Some(p) = partition {
        sql.push_str(&format!(" PARTITION BY {p}"));
    }
    let cluster: Vec<String> =
        if cluster.is_empty() { vec![quote("__id")] } else { cluster.iter().map(|c| quote(c)).collect() };
    sql.push_str(&format!(" CLUSTER BY {}", cluster.join(", ")));
    sql
}

/// The `PARTITION BY` expression for a column of the given type.
pub fn partition_expr(column: &str, ty: &str) -> Result<String, String> {
    let c = quote(column);
    match base_type(ty).as_str() {
        "DATE" => Ok(c),
        "TIMESTAMP" => Ok(format!("TIMESTAMP_TRUNC({c}, DAY)")),
        "DATETIME" => Ok(format!("DATETIME_TRUNC({c}, DAY)")),
        other => Err(format!(
            "partition_by {column:?} is a {other} column; BigQuery partitions by a DATE, DATETIME or TIMESTAMP column (daily): choose one of those, or remove partition_by"
        )),
    }
}

/// Where the sink records a column's type: its description, `projector
/// type: NUMERIC(12, 4)`. tables.get of the emulator reports no precision
/// for an added column, and the old one after `SET DATA TYPE`, while it
/// rounds to the limits it was given; the description survives restarts
/// and is read back first ([`recorded_type`]).
pub const TYPE_NOTE: &str = "projector type: ";

/// The type a column's description records, if it does.
pub fn recorded_type(description: &str) -> Option<&str> {
    description.strip_prefix(TYPE_NOTE).map(str::trim).filter(|t| !t.is_empty())
}

/// `ALTER COLUMN ... SET OPTIONS (description = ...)` recording the type of
/// each column whose limits matter (decimals); `None` when there is none.
pub fn record_types(table: &str, columns: &[(String, String)]) -> Vec<String> {
    columns
        .iter()
        .filter(|(_, t)| decimal_limits(t).is_some())
        .map(|(n, t)| {
            format!(
                "ALTER TABLE {table} ALTER COLUMN {} SET OPTIONS (description = {})",
                quote(n),
                literal(&format!("{TYPE_NOTE}{}", plain_type(t)))
            )
        })
        .collect()
}

/// `ALTER TABLE ... ADD COLUMN IF NOT EXISTS ...` for new columns.
pub fn add_columns(table: &str, columns: &[(String, String)]) -> String {
    let adds: Vec<String> =
        columns.iter().map(|(n, t)| format!("ADD COLUMN IF NOT EXISTS {} {}", quote(n), plain_type(t))).collect();
    format!("ALTER TABLE {table} {}", adds.join(", "))
}

/// `NOT NULL` is not allowed on added columns; everything else is kept.
fn plain_type(t: &str) -> String {
    t.replace(" NOT NULL", "")
}

/// The view readers use: live rows only.
pub fn live_view(view: &str, table: &str) -> String {
    format!("CREATE OR REPLACE VIEW {view} AS SELECT * FROM {table} WHERE NOT {}", quote("__deleted"))
}

/// `CREATE OR REPLACE TABLE <stage> AS SELECT ...` from the `@rows` JSON
/// array parameter: each row `{"id","pos","del","ts","part","off","keep","c0".."cN"}`,
/// every value as text, cast to its column's type. A query job's output is
/// ordinary table storage (not the streaming buffer), so it can be merged at
/// once. The table expires after a day should the sink never drop it.
pub fn stage(stage: &str, columns: &[(String, String)]) -> String {
    let mut sel = vec![
        format!("JSON_VALUE(r, '$.id') AS {}", quote("__id")),
        format!("JSON_VALUE(r, '$.pos') AS {}", quote("__position")),
        format!("CAST(JSON_VALUE(r, '$.del') AS BOOL) AS {}", quote("__deleted")),
        format!("CAST(JSON_VALUE(r, '$.ts') AS TIMESTAMP) AS {}", quote("__source_ts")),
        format!("CAST(JSON_VALUE(r, '$.part') AS INT64) AS {}", quote("__partition")),
        format!("CAST(JSON_VALUE(r, '$.off') AS INT64) AS {}", quote("__offset")),
        format!("JSON_VALUE(r, '$.keep') AS {}", quote(KEEP)),
    ];
    for (i, (n, t)) in columns.iter().enumerate() {
        sel.push(format!("{} AS {}", parse_expr(&base_type(t), &format!("$.c{i}")), quote(n)));
    }
    format!(
        "CREATE OR REPLACE TABLE {stage} OPTIONS (expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 1 DAY)) AS SELECT {} FROM UNNEST(JSON_QUERY_ARRAY(@rows)) AS r",
        sel.join(", ")
    )
}

/// The guarded upsert: a staged row replaces the stored one only when its
/// position is newer; new ids are inserted. A delete is a row with
/// `__deleted = TRUE` whose non-key columns are kept as stored.
pub fn merge(target: &str, stage: &str, columns: &[String]) -> String {
    let q = |n: &str| quote(n);
    let mut sets = vec![
        format!("{p} = S.{p}", p = q("__position")),
        format!("{d} = S.{d}", d = q("__deleted")),
        format!("{s} = S.{s}", s = q("__source_ts")),
        format!("{} = CURRENT_TIMESTAMP()", q("__written_at")),
        format!("{p} = S.{p}", p = q("__partition")),
        format!("{o} = S.{o}", o = q("__offset")),
    ];
    for (i, n) in columns.iter().enumerate() {
        sets.push(format!("{c} = IF(STRPOS(COALESCE(S.{k}, ''), ',{i},') > 0, T.{c}, S.{c})", c = q(n), k = q(KEEP)));
    }
    let mut names = vec![
        q("__id"),
        q("__position"),
        q("__deleted"),
        q("__source_ts"),
        q("__written_at"),
        q("__partition"),
        q("__offset"),
    ];
    let mut values = vec![
        format!("S.{}", q("__id")),
        format!("S.{}", q("__position")),
        format!("S.{}", q("__deleted")),
        format!("S.{}", q("__source_ts")),
        "CURRENT_TIMESTAMP()".to_string(),
        format!("S.{}", q("__partition")),
        format!("S.{}", q("__offset")),
    ];
    for n in columns {
        names.push(q(n));
        values.push(format!("S.{}", q(n)));
    }
    format!(
        "MERGE {target} T USING {stage} S ON T.{id} = S.{id} WHEN MATCHED AND T.{p} < S.{p} THEN UPDATE SET {} WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
        sets.join(", "),
        names.join(", "),
        values.join(", "),
        id = q("__id"),
        p = q("__position"),
    )
}

/// The stored position, deletion and writing record (partition, offset) of
/// some ids (`@ids`, an ARRAY<STRING> parameter).
pub fn positions(target: &str) -> String {
    format!(
        "SELECT {id}, {p}, {d}, {part}, {off} FROM {target} WHERE {id} IN UNNEST(@ids)",
        id = quote("__id"),
        p = quote("__position"),
        d = quote("__deleted"),
        part = quote("__partition"),
        off = quote("__offset"),
    )
}

/// Compaction deletes (Kafka tombstones) from the `@rows` JSON array
/// parameter, each `{"id","part","off"}`: a live row last written from the
/// same partition at a lower offset is marked deleted and takes the
/// tombstone's offset; its position and values stay. Run again it changes
/// nothing (the row is deleted, or its offset is no longer lower).
pub fn compaction_delete(target: &str) -> String {
    format!(
        "MERGE {target} T USING (SELECT JSON_VALUE(r, '$.id') AS id, CAST(JSON_VALUE(r, '$.part') AS INT64) AS part, CAST(JSON_VALUE(r, '$.off') AS INT64) AS off FROM UNNEST(JSON_QUERY_ARRAY(@rows)) AS r) S ON T.{id} = S.id WHEN MATCHED AND NOT T.{d} AND T.{part} = S.part AND T.{off} < S.off THEN UPDATE SET {d} = TRUE, {off} = S.off, {w} = CURRENT_TIMESTAMP()",
        id = quote("__id"),
        d = quote("__deleted"),
        part = quote("__partition"),
        off = quote("__offset"),
        w = quote("__written_at"),
    )
}

/// Collapses the rows of each `@ids` id to one, the one with the highest
/// `__position` (then the latest `__written_at`; rows that tie on both are
/// the same write). One statement, so the rows it removes and the row it puts
/// back commit together: `ON FALSE` makes every stored row of those ids "not
/// matched by source" (deleted) and every kept row "not matched" (inserted
/// again). Run again it changes nothing but rewriting those rows.
pub fn dedup(target: &str) -> String {
    format!(
        "MERGE {target} T USING (SELECT * EXCEPT({rank}) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {id} ORDER BY {p} DESC, {w} DESC) AS {rank} FROM {target} WHERE {id} IN UNNEST(@ids)) WHERE {rank} = 1) S ON FALSE WHEN NOT MATCHED BY SOURCE AND T.{id} IN UNNEST(@ids) THEN DELETE WHEN NOT MATCHED THEN INSERT ROW",
        id = quote("__id"),
        p = quote("__position"),
        w = quote("__written_at"),
        rank = quote("__projector_rank"),
    )
}

/// A stable 128-bit FNV-1a hash as 32 hex digits: job ids and staging
/// table names must be the same in every process and Rust version.
pub fn stable_hash(parts: &[&str]) -> String {
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= b as u128;
            h = h.wrapping_mul(PRIME);
        }
    }
    format!("{h:032x}")
}

/// A job id from a readable prefix and a hash: `[A-Za-z0-9_-]`, ≤ 1024 bytes.
pub fn job_id(model: &str, target: &str, hash: &str, step: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
            .take(200)
            .collect::<String>()
    };
    format!("projector_{}_{}_{hash}_{step}", clean(model), clean(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ft(connect: &str, name: Option<&str>, scale: Option<u32>, precision: Option<u32>) -> FieldType {
        FieldType { connect: connect.into(), name: name.map(Into::into), scale, precision }
    }

    #[test]
    fn identifiers_are_backtick_quoted_and_escaped() {
        assert_eq!(quote("Trips"), "`Trips`");
        assert_eq!(quote("a`b\\c"), "`a\\`b\\\\c`");
        assert_eq!(quote("x`; DROP TABLE y; --"), "`x\\`; DROP TABLE y; --`");
        assert_eq!(table_ref("projector-local", "ds", "t"), "`projector-local`.`ds`.`t`");
        assert_eq!(literal("it's \\ ok"), "'it\\'s \\\\ ok'");
    }

    #[test]
    fn table_names_are_checked() {
        assert!(check_table_name("trips_2026").is_ok());
        assert!(check_table_name("Chuyến đi-1").is_ok());
        assert!(check_table_name("a.b").unwrap_err().contains("not a valid BigQuery table name"));
        assert!(check_table_name("a`b").is_err());
        assert!(check_table_name("").is_err());
    }

    #[test]
    fn debezium_types_map_faithfully() {
        let dec = "org.apache.kafka.connect.data.Decimal";
        assert_eq!(type_of_field(&ft("bytes", Some(dec), Some(2), Some(12))), "NUMERIC(12, 2)");
        assert_eq!(type_of_field(&ft("bytes", Some(dec), Some(10), Some(38))), "BIGNUMERIC(38, 10)");
        assert_eq!(type_of_field(&ft("bytes", Some(dec), Some(0), Some(38))), "BIGNUMERIC(38, 0)");
        assert_eq!(type_of_field(&ft("bytes", Some(dec), Some(4), None)), "NUMERIC");
        assert_eq!(type_of_field(&ft("bytes", Some(dec), Some(12), None)), "BIGNUMERIC");
        assert_eq!(type_of_field(&ft("int64", Some("io.debezium.time.NanoTimestamp"), None, None)), "DATETIME");
        assert_eq!(type_of_field(&ft("int64", Some("io.debezium.time.Timestamp"), None, None)), "DATETIME");
        assert_eq!(type_of_field(&ft("string", Some("io.debezium.time.ZonedTimestamp"), None, None)), "TIMESTAMP");
        assert_eq!(type_of_field(&ft("int32", Some("io.debezium.time.Date"), None, None)), "DATE");
        assert_eq!(type_of_field(&ft("int64", Some("io.debezium.time.MicroTime"), None, None)), "TIME");
        assert_eq!(type_of_field(&ft("int16", None, None, None)), "INT64");
        assert_eq!(type_of_field(&ft("float32", None, None, None)), "FLOAT64");
        assert_eq!(type_of_field(&ft("boolean", None, None, None)), "BOOL");
        assert_eq!(type_of_field(&ft("bytes", None, None, None)), "BYTES");
        assert_eq!(type_of_field(&ft("string", Some("io.debezium.data.Json"), None, None)), "JSON");
        assert_eq!(type_of_field(&ft("struct", None, None, None)), "JSON");
        assert_eq!(type_of_value(&Value::Decimal { unscaled: 1, scale: 2 }).unwrap(), "NUMERIC");
        assert_eq!(type_of_value(&Value::Timestamp(0)).unwrap(), "DATETIME");
        assert_eq!(type_of_value(&Value::Null), None);
        assert_eq!(base_type("NUMERIC(12, 2)"), "NUMERIC");
        assert_eq!(base_type("INTEGER"), "INT64");
        assert_eq!(base_type("STRING NOT NULL"), "STRING");
    }

    #[test]
    fn decimals_widen_in_place_and_narrowing_or_another_kind_is_a_rebuild() {
        let c = |a: &str, b: &str| classify("`t`", "c", a, b);
        assert_eq!(
            c("NUMERIC(10, 2)", "NUMERIC(12, 4)"),
            TypeChange::InPlace("ALTER TABLE `t` ALTER COLUMN `c` SET DATA TYPE NUMERIC(12, 4)".into())
        );
        assert_eq!(c("NUMERIC(12, 4)", "NUMERIC(10, 2)"), TypeChange::Unchanged);
        assert!(matches!(c("NUMERIC(10, 2)", "NUMERIC(10, 4)"), TypeChange::Rebuild(_)));
        assert!(matches!(c("NUMERIC(12, 2)", "BIGNUMERIC(40, 2)"), TypeChange::InPlace(_)));
        assert!(matches!(c("INT64", "NUMERIC"), TypeChange::InPlace(_)));
        assert!(
            matches!(c("INT64", "NUMERIC(12, 4)"), TypeChange::Rebuild(_)),
            "8 integer digits cannot hold an INT64"
        );
        assert_eq!(c("INT64", "INT64"), TypeChange::Unchanged);
        assert_eq!(c("NUMERIC", "NUMERIC(12, 2)"), TypeChange::Unchanged);
        assert!(matches!(c("STRING", "INT64"), TypeChange::Rebuild(_)));
        assert_eq!(c("DATETIME", "DATETIME"), TypeChange::Unchanged);
        assert_eq!(decimal_limits("NUMERIC(12, 4)"), Some((12, 4)));
        assert_eq!(decimal_limits("INT64"), None);
    }

    #[test]
    fn values_travel_as_exact_text() {
        assert_eq!(cell_text(&Value::Decimal { unscaled: 35_000_000, scale: 2 }, "NUMERIC").unwrap(), "350000.00");
        assert_eq!(cell_text(&Value::Decimal { unscaled: -1, scale: 4 }, "NUMERIC").unwrap(), "-0.0001");
        assert_eq!(
            cell_text(&Value::Timestamp(1_700_000_000_123_456_789), "DATETIME").unwrap(),
            "2023-11-14T22:13:20.123456"
        );
        assert_eq!(
            cell_text(&Value::Timestamp(1_700_000_000_000_000_000), "TIMESTAMP").unwrap(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            cell_text(&Value::ZonedTimestamp("2026-01-02T03:04:05.1234567+07:00".into()), "TIMESTAMP").unwrap(),
            "2026-01-02T03:04:05.123456+07:00"
        );
        assert_eq!(cell_text(&Value::Time(3_723_000_001_999), "TIME").unwrap(), "01:02:03.000001");
        assert_eq!(cell_text(&Value::Bytes(vec![0, 1, 255]), "BYTES").unwrap(), "AAH/");
        assert_eq!(cell_text(&Value::Float(f64::NEG_INFINITY), "FLOAT64").unwrap(), "-Infinity");
        assert_eq!(cell_text(&Value::Json(Box::new(serde_json::json!({"a": 1}))), "JSON").unwrap(), "{\"a\":1}");
        assert_eq!(cell_text(&Value::Null, "STRING"), None);
        assert_eq!(cell_text(&Value::Unavailable, "STRING"), None);
    }

    #[test]
    fn create_table_has_key_partition_and_cluster() {
        let sql = create_table(
            "`p`.`d`.`t`",
            &[("Fare".into(), "NUMERIC(12, 2)".into())],
            Some("DATETIME_TRUNC(`DepartAt`, DAY)"),
            &[],
        );
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS `p`.`d`.`t` (`__id` STRING NOT NULL, `__position` STRING NOT NULL, `__deleted` BOOL NOT NULL, `__source_ts` TIMESTAMP, `__written_at` TIMESTAMP, `__partition` INT64, `__offset` INT64, `Fare` NUMERIC(12, 2), PRIMARY KEY (`__id`) NOT ENFORCED) PARTITION BY DATETIME_TRUNC(`DepartAt`, DAY) CLUSTER BY `__id`"
        );
        assert!(create_table("t", &[], None, &["Trip`Id".into()]).ends_with("NOT ENFORCED) CLUSTER BY `Trip\\`Id`"));
        assert_eq!(partition_expr("d", "DATE").unwrap(), "`d`");
        assert!(partition_expr("n", "INTEGER").unwrap_err().contains("DATE, DATETIME or TIMESTAMP"));
        assert_eq!(
            add_columns("t", &[("a b".into(), "INT64".into()), ("c".into(), "STRING NOT NULL".into())]),
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS `a b` INT64, ADD COLUMN IF NOT EXISTS `c` STRING"
        );
        assert_eq!(live_view("`v`", "`t`"), "CREATE OR REPLACE VIEW `v` AS SELECT * FROM `t` WHERE NOT `__deleted`");
    }

    #[test]
    fn stage_and_merge_are_guarded_and_quoted() {
        let st = stage("`s`", &[("Fare".into(), "NUMERIC".into()), ("B`y".into(), "BYTES".into())]);
        assert!(st.starts_with("CREATE OR REPLACE TABLE `s` OPTIONS"), "{st}");
        assert!(st.contains("CAST(JSON_VALUE(r, '$.c0') AS NUMERIC) AS `Fare`"), "{st}");
        assert!(st.contains("FROM_BASE64(JSON_VALUE(r, '$.c1')) AS `B\\`y`"), "{st}");
        assert!(st.ends_with("FROM UNNEST(JSON_QUERY_ARRAY(@rows)) AS r"));
        let m = merge("`t`", "`s`", &["Fare".into()]);
        assert_eq!(
            m,
            "MERGE `t` T USING `s` S ON T.`__id` = S.`__id` WHEN MATCHED AND T.`__position` < S.`__position` THEN UPDATE SET `__position` = S.`__position`, `__deleted` = S.`__deleted`, `__source_ts` = S.`__source_ts`, `__written_at` = CURRENT_TIMESTAMP(), `__partition` = S.`__partition`, `__offset` = S.`__offset`, `Fare` = IF(STRPOS(COALESCE(S.`__keep`, ''), ',0,') > 0, T.`Fare`, S.`Fare`) WHEN NOT MATCHED THEN INSERT (`__id`, `__position`, `__deleted`, `__source_ts`, `__written_at`, `__partition`, `__offset`, `Fare`) VALUES (S.`__id`, S.`__position`, S.`__deleted`, S.`__source_ts`, CURRENT_TIMESTAMP(), S.`__partition`, S.`__offset`, S.`Fare`)"
        );
        assert!(st.contains("CAST(JSON_VALUE(r, '$.off') AS INT64) AS `__offset`"), "{st}");
        assert_eq!(
            positions("`t`"),
            "SELECT `__id`, `__position`, `__deleted`, `__partition`, `__offset` FROM `t` WHERE `__id` IN UNNEST(@ids)"
        );
        let c = compaction_delete("`t`");
        assert!(
            c.contains("WHEN MATCHED AND NOT T.`__deleted` AND T.`__partition` = S.part AND T.`__offset` < S.off THEN UPDATE SET `__deleted` = TRUE, `__offset` = S.off"),
            "{c}"
        );
        assert!(!c.contains("`__position` ="), "the stored position stays: {c}");
        assert_eq!(
            dedup("`t`"),
            "MERGE `t` T USING (SELECT * EXCEPT(`__projector_rank`) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY `__id` ORDER BY `__position` DESC, `__written_at` DESC) AS `__projector_rank` FROM `t` WHERE `__id` IN UNNEST(@ids)) WHERE `__projector_rank` = 1) S ON FALSE WHEN NOT MATCHED BY SOURCE AND T.`__id` IN UNNEST(@ids) THEN DELETE WHEN NOT MATCHED THEN INSERT ROW"
        );
    }

    #[test]
    fn job_ids_are_stable_and_clean() {
        let h = stable_hash(&["a", "b"]);
        assert_eq!(h.len(), 32);
        assert_eq!(h, stable_hash(&["a", "b"]));
        assert_ne!(h, stable_hash(&["ab", ""]));
        assert_eq!(job_id("m-1", "trips x", "00ff", "merge"), "projector_m-1_trips_x_00ff_merge");
    }
}
