//! Type names a read-model file may use: source types (for records that come
//! without a schema) and each sink's own field types. Checked when the file
//! is loaded so that a typo fails `projector validate`, not a deployment.

use crate::decode::FieldType;

/// A source column type declared in the file, for schemaless records.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceType {
    /// Debezium `decimal.handling.mode=precise` bytes (base64) or a numeric
    /// string/number, read exactly at this scale.
    Decimal { precision: u32, scale: u32 },
    /// Epoch milli/micro/nanoseconds as a wall clock.
    Timestamp(TimeUnit),
    /// Days since the epoch.
    Date,
    /// Time past midnight.
    Time(TimeUnit),
    /// ISO-8601 with offset (datetimeoffset).
    ZonedTimestamp,
    /// Base64 bytes.
    Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimeUnit {
    Millis,
    Micros,
    Nanos,
}

impl SourceType {
    pub fn parse(s: &str) -> Result<SourceType, String> {
        let t = s.trim().to_ascii_lowercase();
        let unit = |u: &str| match u {
            "" | "(ms)" | "(millis)" => Ok(TimeUnit::Millis),
            "(us)" | "(micros)" => Ok(TimeUnit::Micros),
            "(ns)" | "(nanos)" => Ok(TimeUnit::Nanos),
            _ => Err(format!("unknown time unit in {s:?}; use (ms), (us) or (ns)")),
        };
        if let Some(args) = t.strip_prefix("decimal").or_else(|| t.strip_prefix("numeric")) {
            let inner = args
                .trim()
                .strip_prefix('(')
                .and_then(|a| a.strip_suffix(')'))
                .ok_or_else(|| format!("{s:?}: write decimal(precision,scale), e.g. decimal(12,2)"))?;
            let (p, sc) = inner
                .split_once(',')
                .ok_or_else(|| format!("{s:?}: write decimal(precision,scale), e.g. decimal(12,2)"))?;
            let precision: u32 = p.trim().parse().map_err(|_| format!("{s:?}: precision is not a number"))?;
            let scale: u32 = sc.trim().parse().map_err(|_| format!("{s:?}: scale is not a number"))?;
            if precision == 0 || precision > 38 || scale > precision {
                return Err(format!("{s:?}: need 1 <= precision <= 38 and scale <= precision"));
            }
            return Ok(SourceType::Decimal { precision, scale });
        }
        if let Some(u) = t.strip_prefix("timestamp") {
            return Ok(SourceType::Timestamp(unit(u)?));
        }
        if let Some(u) = t.strip_prefix("time") {
            return Ok(SourceType::Time(unit(u)?));
        }
        match t.as_str() {
            "date" => Ok(SourceType::Date),
            "zoned_timestamp" | "datetimeoffset" => Ok(SourceType::ZonedTimestamp),
            "bytes" | "binary" => Ok(SourceType::Bytes),
            _ => Err(format!(
                "unknown source_type {s:?}; use decimal(p,s), timestamp(ms|us|ns), date, time(ms|us|ns), zoned_timestamp or bytes"
            )),
        }
    }

    /// The Connect field type this declaration stands for.
    pub fn field_type(&self) -> FieldType {
        let named = |connect: &str, name: &str| FieldType {
            connect: connect.into(),
            name: Some(name.into()),
            scale: None,
            precision: None,
        };
        match self {
            SourceType::Decimal { scale, precision } => FieldType {
                connect: "bytes".into(),
                name: Some("org.apache.kafka.connect.data.Decimal".into()),
                scale: Some(*scale),
                precision: Some(*precision),
            },
            SourceType::Timestamp(TimeUnit::Millis) => named("int64", "io.debezium.time.Timestamp"),
            SourceType::Timestamp(TimeUnit::Micros) => named("int64", "io.debezium.time.MicroTimestamp"),
            SourceType::Timestamp(TimeUnit::Nanos) => named("int64", "io.debezium.time.NanoTimestamp"),
            SourceType::Date => named("int32", "io.debezium.time.Date"),
            SourceType::Time(TimeUnit::Millis) => named("int32", "io.debezium.time.Time"),
            SourceType::Time(TimeUnit::Micros) => named("int64", "io.debezium.time.MicroTime"),
            SourceType::Time(TimeUnit::Nanos) => named("int64", "io.debezium.time.NanoTime"),
            SourceType::ZonedTimestamp => named("string", "io.debezium.time.ZonedTimestamp"),
            SourceType::Bytes => FieldType { connect: "bytes".into(), name: None, scale: None, precision: None },
        }
    }
}

/// Checks an Elasticsearch field type; returns its mapping JSON.
pub fn elasticsearch_type(s: &str) -> Result<serde_json::Value, String> {
    let t = s.trim();
    if let Some(args) = t.strip_prefix("scaled_float") {
        let factor =
            args.trim().strip_prefix('(').and_then(|a| a.strip_suffix(')')).and_then(|a| a.trim().parse::<f64>().ok());
        return match factor {
            Some(f) if f > 0.0 => Ok(serde_json::json!({"type": "scaled_float", "scaling_factor": f})),
            _ => Err(format!("{s:?}: write scaled_float(<factor>), e.g. scaled_float(100) for 2 decimal places")),
        };
    }
    // `text(english)`: full text with that analyzer.
    if let Some(args) = t.strip_prefix("text(").and_then(|a| a.strip_suffix(')')) {
        let analyzer = args.trim();
        if analyzer.is_empty() || !analyzer.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(format!("{s:?}: write text(<analyzer>), e.g. text(english)"));
        }
        return Ok(serde_json::json!({"type": "text", "analyzer": analyzer}));
    }
    const KNOWN: [&str; 16] = [
        "keyword",
        "text",
        "long",
        "integer",
        "short",
        "byte",
        "double",
        "float",
        "half_float",
        "boolean",
        "date",
        "date_nanos",
        "binary",
        "ip",
        "object",
        "flattened",
    ];
    if KNOWN.contains(&t) {
        Ok(serde_json::json!({"type": t}))
    } else {
        Err(format!(
            "unknown Elasticsearch type {s:?}; use one of {}, scaled_float(N), text(<analyzer>)",
            KNOWN.join(", ")
        ))
    }
}

/// Checks a PostgreSQL column type (base name, optional modifiers): only the
/// types the binary COPY encoder (`sink/postgres/binary.rs`) writes exactly.
/// `interval` and arrays are refused here rather than at write time.
pub fn postgres_type(s: &str) -> Result<String, String> {
    const KNOWN: [&str; 21] = [
        "smallint",
        "integer",
        "int",
        "bigint",
        "real",
        "double precision",
        "numeric",
        "decimal",
        "boolean",
        "text",
        "varchar",
        "char",
        "uuid",
        "bytea",
        "date",
        "time",
        "timestamp",
        "timestamptz",
        "jsonb",
        "json",
        "xml",
    ];
    let t = s.trim().to_ascii_lowercase();
    let base = t.split('(').next().unwrap_or("").trim();
    let hint = format!("use one of {} (modifiers such as numeric(12,2) are allowed)", KNOWN.join(", "));
    if t.ends_with(']') {
        Err(format!("PostgreSQL type {s:?} is not supported: projector writes no arrays; {hint}, or jsonb for a list"))
    } else if base == "interval" {
        Err(format!(
            "PostgreSQL type {s:?} is not supported: Debezium's interval is microseconds, so use bigint; {hint}"
        ))
    } else if KNOWN.contains(&base) {
        Ok(t)
    } else {
        Err(format!("unknown PostgreSQL type {s:?}; {hint}"))
    }
}

/// Checks a BigQuery column type.
pub fn bigquery_type(s: &str) -> Result<String, String> {
    const KNOWN: [&str; 15] = [
        "STRING",
        "BYTES",
        "INT64",
        "INTEGER",
        "FLOAT64",
        "FLOAT",
        "NUMERIC",
        "BIGNUMERIC",
        "BOOL",
        "BOOLEAN",
        "TIMESTAMP",
        "DATE",
        "TIME",
        "DATETIME",
        "JSON",
    ];
    let t = s.trim().to_ascii_uppercase();
    let base = t.split('(').next().unwrap_or("").trim();
    if KNOWN.contains(&base) {
        Ok(t)
    } else {
        Err(format!("unknown BigQuery type {s:?}; use one of {}", KNOWN.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_types_parse() {
        assert_eq!(SourceType::parse("decimal(12,2)").unwrap(), SourceType::Decimal { precision: 12, scale: 2 });
        assert_eq!(SourceType::parse("timestamp(us)").unwrap(), SourceType::Timestamp(TimeUnit::Micros));
        assert_eq!(SourceType::parse("timestamp").unwrap(), SourceType::Timestamp(TimeUnit::Millis));
        assert!(SourceType::parse("decimal(40,2)").unwrap_err().contains("precision <= 38"));
        assert!(SourceType::parse("money").unwrap_err().contains("unknown source_type"));
    }

    #[test]
    fn sink_types_check() {
        assert_eq!(elasticsearch_type("scaled_float(100)").unwrap()["scaling_factor"], 100.0);
        assert!(elasticsearch_type("strng").is_err());
        assert_eq!(postgres_type("numeric(12,2)").unwrap(), "numeric(12,2)");
        assert!(postgres_type("number").is_err());
        assert_eq!(bigquery_type("numeric(12, 2)").unwrap(), "NUMERIC(12, 2)");
        assert!(bigquery_type("VARCHAR").is_err());
    }
}
