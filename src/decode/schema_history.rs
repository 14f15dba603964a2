//! Column types learned from Debezium's schema-change topic.
//!
//! With `schemas.enable=false` a record no longer says that `"AhYOwA=="` is a
//! decimal at scale 2 or that `1782900000000000000` is a `datetime2(7)` in
//! nanoseconds. The connector's schema-change topic (`<topic.prefix>`, with
//! `include.schema.changes=true`) does: each record's `tableChanges` lists
//! every column's `typeName`, `length` and `scale`. projector reads that
//! topic from the beginning at start-up and again whenever a record names a
//! table or column it has not seen, so an `ALTER` that arrives after the
//! first record with the new column is still picked up.
//!
//! Types follow the SQL Server connector's defaults (`decimal.handling.mode`
//! precise, `time.precision.mode` adaptive, or connect when configured).
//! Fractional-second precision of `time`/`datetime2`/`datetimeoffset` is the
//! column's `scale` (JDBC DECIMAL_DIGITS), falling back to `length`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value as Json;

use super::value::FieldType;

/// Debezium's `time.precision.mode` for temporal columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimePrecision {
    #[default]
    Adaptive,
    Connect,
}

/// One column as `tableChanges` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnInfo {
    pub type_name: String,
    pub length: Option<i64>,
    pub scale: Option<i64>,
}

/// What the schema-change topic has said so far.
#[derive(Debug, Default)]
pub struct SchemaHistory {
    topic: String,
    brokers: String,
    /// `<prefix>.<db>.<schema>.<table>` → columns.
    tables: RwLock<HashMap<String, HashMap<String, ColumnInfo>>>,
    next_offset: RwLock<i64>,
    pub precision: TimePrecision,
}

/// Reading the schema-change topic failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read schema-change topic {topic}: {detail}; check `schema_changes:` in the read model and that the connector has include.schema.changes=true"
)]
pub struct HistoryError {
    pub topic: String,
    pub detail: String,
}

impl SchemaHistory {
    pub fn new(topic: &str, brokers: &str, precision: TimePrecision) -> SchemaHistory {
        SchemaHistory { topic: topic.to_string(), brokers: brokers.to_string(), precision, ..Default::default() }
    }

    /// The schema-change topic this history follows.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Applies one schema-change record's value (bare or `{schema, payload}`).
    pub fn apply(&self, value: &Json) {
        let payload = value.get("payload").filter(|_| value.get("schema").is_some()).unwrap_or(value);
        let Some(changes) = payload.get("tableChanges").and_then(Json::as_array) else { return };
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        for change in changes {
            let Some(id) = change.get("id").and_then(Json::as_str) else { continue };
            let topic =
                format!("{}.{}", self.topic, id.split('.').map(|p| p.trim_matches('"')).collect::<Vec<_>>().join("."));
            if change.get("type").and_then(Json::as_str) == Some("DROP") {
                tables.remove(&topic);
                continue;
            }
            let columns = change.pointer("/table/columns").and_then(Json::as_array).map(|cols| {
                cols.iter()
                    .filter_map(|c| {
                        Some((
                            c.get("name")?.as_str()?.to_string(),
                            ColumnInfo {
                                type_name: c.get("typeName").and_then(Json::as_str).unwrap_or("").to_ascii_lowercase(),
                                length: c.get("length").and_then(Json::as_i64),
                                scale: c.get("scale").and_then(Json::as_i64),
                            },
                        ))
                    })
                    .collect()
            });
            if let Some(columns) = columns {
                tables.insert(topic, columns);
            }
        }
    }

    /// Whether the history knows `table_topic`.
    pub fn knows(&self, table_topic: &str) -> bool {
        self.tables.read().unwrap_or_else(|e| e.into_inner()).contains_key(table_topic)
    }

    /// The Connect field type Debezium would have written for a column.
    pub fn field_type(&self, table_topic: &str, column: &str) -> Option<FieldType> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let info = tables.get(table_topic)?.get(column)?;
        Some(connect_type(info, self.precision))
    }

    /// Reads the topic from where it stopped to its current end. Blocking.
    pub fn catch_up(&self, timeout: Duration) -> Result<usize, HistoryError> {
        let err = |detail: String| HistoryError { topic: self.topic.clone(), detail };
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", "projector-schema-history-reader")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| err(e.to_string()))?;
        let (_, end) = consumer.fetch_watermarks(&self.topic, 0, timeout).map_err(|e| err(e.to_string()))?;
        let start = *self.next_offset.read().unwrap_or_else(|e| e.into_inner());
        if start >= end {
            return Ok(0);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Offset(start)).map_err(|e| err(e.to_string()))?;
        consumer.assign(&tpl).map_err(|e| err(e.to_string()))?;
        let deadline = std::time::Instant::now() + timeout;
        let mut next = start;
        let mut applied = 0;
        while next < end {
            if std::time::Instant::now() > deadline {
                return Err(err(format!("timed out at offset {next} of {end}")));
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(e)) => return Err(err(e.to_string())),
                Some(Ok(m)) => {
                    next = m.offset() + 1;
                    if let Some(v) = m.payload().and_then(|p| serde_json::from_slice::<Json>(p).ok()) {
                        self.apply(&v);
                        applied += 1;
                    }
                }
            }
        }
        *self.next_offset.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(applied)
    }
}

/// SQL Server type name → the Connect type the connector emits.
pub fn connect_type(info: &ColumnInfo, precision: TimePrecision) -> FieldType {
    let named = |connect: &str, name: &str| FieldType {
        connect: connect.into(),
        name: Some(name.into()),
        scale: None,
        precision: None,
    };
    let plain = |connect: &str| FieldType { connect: connect.into(), name: None, scale: None, precision: None };
    let frac = info.scale.or(info.length).unwrap_or(7);
    let adaptive = precision == TimePrecision::Adaptive;
    match info.type_name.as_str() {
        "decimal" | "numeric" | "money" | "smallmoney" => FieldType {
            connect: "bytes".into(),
            name: Some("org.apache.kafka.connect.data.Decimal".into()),
            // A scale or length outside u32 (negative, corrupt) is no scale:
            // decoding then refuses the column's values instead of wrapping.
            scale: match info.type_name.as_str() {
                "money" | "smallmoney" => Some(4),
                _ => u32::try_from(info.scale.unwrap_or(0)).ok(),
            },
            precision: match info.type_name.as_str() {
                "money" => Some(19),
                "smallmoney" => Some(10),
                _ => u32::try_from(info.length.unwrap_or(38)).ok(),
            },
        },
        "bit" => plain("boolean"),
        "tinyint" | "smallint" => plain("int16"),
        "int" => plain("int32"),
        "bigint" => plain("int64"),
        "real" => plain("float32"),
        "float" => plain("float64"),
        "date" if adaptive => named("int32", "io.debezium.time.Date"),
        "date" => named("int32", "org.apache.kafka.connect.data.Date"),
        "time" if !adaptive => named("int32", "org.apache.kafka.connect.data.Time"),
        "time" if frac <= 3 => named("int32", "io.debezium.time.Time"),
        "time" if frac <= 6 => named("int64", "io.debezium.time.MicroTime"),
        "time" => named("int64", "io.debezium.time.NanoTime"),
        "datetime" | "smalldatetime" if adaptive => named("int64", "io.debezium.time.Timestamp"),
        "datetime2" if adaptive && frac <= 3 => named("int64", "io.debezium.time.Timestamp"),
        "datetime2" if adaptive && frac <= 6 => named("int64", "io.debezium.time.MicroTimestamp"),
        "datetime2" if adaptive => named("int64", "io.debezium.time.NanoTimestamp"),
        "datetime" | "smalldatetime" | "datetime2" => named("int64", "org.apache.kafka.connect.data.Timestamp"),
        "datetimeoffset" => named("string", "io.debezium.time.ZonedTimestamp"),
        "binary" | "varbinary" | "image" | "timestamp" | "rowversion" => plain("bytes"),
        _ => plain("string"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(kind: &str, columns: Json) -> Json {
        json!({"source": {}, "databaseName": "vexere", "schemaName": "dbo", "ddl": null, "tableChanges": [
            {"type": kind, "id": "\"vexere\".\"dbo\".\"Trips\"", "table": {"primaryKeyColumnNames": ["TripId"], "columns": columns}}
        ]})
    }

    #[test]
    fn table_changes_give_scale_and_precision() {
        let h = SchemaHistory::new("vexere", "unused:9092", TimePrecision::Adaptive);
        h.apply(&change(
            "CREATE",
            json!([
                {"name": "TripId", "typeName": "int", "length": 10, "scale": 0},
                {"name": "Fare", "typeName": "decimal", "length": 12, "scale": 2},
                {"name": "Fee", "typeName": "money", "length": 19, "scale": 4},
                {"name": "DepartAt", "typeName": "datetime2", "length": 27, "scale": 7},
                {"name": "BookedAt", "typeName": "datetime2", "length": 23, "scale": 3},
                {"name": "Leg", "typeName": "time", "length": 15, "scale": 6},
                {"name": "Offset", "typeName": "datetimeoffset", "length": 34, "scale": 7}
            ]),
        ));
        let t = "vexere.vexere.dbo.Trips";
        assert!(h.knows(t));
        assert_eq!(h.field_type(t, "Fare").unwrap().scale, Some(2));
        assert_eq!(h.field_type(t, "Fee").unwrap().scale, Some(4));
        assert_eq!(h.field_type(t, "DepartAt").unwrap().name.as_deref(), Some("io.debezium.time.NanoTimestamp"));
        assert_eq!(h.field_type(t, "BookedAt").unwrap().name.as_deref(), Some("io.debezium.time.Timestamp"));
        assert_eq!(h.field_type(t, "Leg").unwrap().name.as_deref(), Some("io.debezium.time.MicroTime"));
        assert_eq!(h.field_type(t, "Offset").unwrap().name.as_deref(), Some("io.debezium.time.ZonedTimestamp"));
        assert_eq!(h.field_type(t, "TripId").unwrap().connect, "int32");
        assert!(h.field_type(t, "Nope").is_none());
    }

    #[test]
    fn alter_replaces_columns_and_drop_forgets_the_table() {
        let h = SchemaHistory::new("vexere", "unused:9092", TimePrecision::Connect);
        h.apply(&change("CREATE", json!([{"name": "TripId", "typeName": "int"}])));
        h.apply(&json!({"schema": {}, "payload": change("ALTER", json!([{"name": "TripId", "typeName": "int"}, {"name": "DepartAt", "typeName": "datetime2", "scale": 7}]))}));
        let t = "vexere.vexere.dbo.Trips";
        assert_eq!(
            h.field_type(t, "DepartAt").unwrap().name.as_deref(),
            Some("org.apache.kafka.connect.data.Timestamp"),
            "connect mode: ms"
        );
        h.apply(&change("DROP", json!([])));
        assert!(!h.knows(t));
    }

    #[test]
    fn a_negative_or_huge_scale_is_no_scale_not_a_wrapped_one() {
        for (scale, length) in [(Some(-2), Some(10)), (Some(4_294_967_298), Some(-1)), (Some(i64::MIN), Some(i64::MAX))]
        {
            let ty = connect_type(&ColumnInfo { type_name: "decimal".into(), length, scale }, TimePrecision::Adaptive);
            assert_eq!(ty.scale, None, "{scale:?}");
            assert_eq!(ty.precision, length.and_then(|l| u32::try_from(l).ok()), "{length:?}");
            let err = crate::decode::value::typed("Fare", &ty, &serde_json::json!("AQ==")).unwrap_err();
            assert_eq!(err.kind(), "bad_value", "{err}");
        }
    }
}
