//! Column types learned from Debezium's schema-change topic, per source position.
//!
//! With `schemas.enable=false` a record no longer says that `"AhYOwA=="` is a
//! decimal at scale 2 or that `1782900000000000000` is a `datetime2(7)` in
//! nanoseconds. The connector's schema-change topic (`<topic.prefix>`, with
//! `include.schema.changes=true`) does: each record's `tableChanges` lists
//! every column's `typeName`, `length` and `scale`, and its `source` block
//! says where in the log the change was made (`commit_lsn`, `change_lsn`).
//!
//! A table's columns change over time, and a replay (a new group, a rewind)
//! reads events older than the newest schema. So the history keeps every
//! version of each table, ordered by [`SourcePosition`], and an event is typed
//! by the version in force at its own position: the newest one made at or
//! before it. Decoding a decimal written at scale 2 with a later scale of 4
//! would shift it by powers of ten without a sign, so the answer is never
//! a guess: an event older than every version, or after the table's DROP, is
//! a [`SchemaGap`] saying what to do. A record without a usable position (not
//! what the SQL Server connector writes) applies from "now", after every
//! version read so far, as the only reading that needs no position; it is
//! logged. Re-emitted, unchanged schemas (a connector restart) add no version,
//! so a table keeps a handful.
//!
//! projector reads the topic from the beginning at start-up and again whenever
//! a record names a table or column it has not seen, so an `ALTER` read after
//! the first record with the new column is still picked up. An event may carry
//! a column that only a version made just AFTER its position describes (the
//! connector positions an ALTER at the first change it captured with the new
//! columns, and an event of that transaction can sort before it). The event
//! itself proves it was written with that column, so that later version types
//! it, provided it agrees with the version in force on every other column the
//! event carries; otherwise the event is refused, never typed by a guess.
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

use super::position::SourcePosition;
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

/// A table's columns from one schema-change record's position on.
#[derive(Debug)]
struct Version {
    /// Where the record was made. `None` (only ever first) is a positionless
    /// first record: in force from the beginning.
    from: Option<SourcePosition>,
    /// `None` from a DROP on.
    columns: Option<HashMap<String, ColumnInfo>>,
}

/// What the schema-change topic has said so far.
#[derive(Debug, Default)]
pub struct SchemaHistory {
    topic: String,
    brokers: String,
    /// `<prefix>.<db>.<schema>.<table>` → its versions, sorted by `from`.
    tables: RwLock<HashMap<String, Vec<Version>>>,
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

/// Why the history cannot type an event's columns; completes the sentence
/// "schema-change topic T ...".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaGap {
    #[error(
        "does not describe this table; enable include.schema.changes on the connector (or declare source_type for typed columns and drop schema_changes from the read model)"
    )]
    UnknownTable,
    #[error(
        "does not describe column {column:?} of this table at the event's position {at}; enable include.schema.changes on the connector (or declare source_type for typed columns and drop schema_changes from the read model)"
    )]
    UnknownColumn { column: String, at: SourcePosition },
    #[error(
        "describes this table only from position {oldest} on, after this event's position {at}; typing it with a later schema could mis-scale its values, so it is not decoded. Keep the schema-change topic from before the oldest event you replay (retention.ms=-1 on it, as for Debezium's schema.history.internal.kafka.topic), or re-snapshot the table so its CREATE precedes the events"
    )]
    OlderThanHistory { at: SourcePosition, oldest: SourcePosition },
    #[error(
        "says this table was dropped at position {dropped_at}, at or before this event's position {at}; if the table was re-created, the connector's CREATE for it is missing from the topic (check include.schema.changes and the topic's retention)"
    )]
    Dropped { at: SourcePosition, dropped_at: SourcePosition },
    #[error(
        "does not describe column {column:?} at the event's position {at}; the version from {newer} does, but it types column {differs:?} differently, so which schema wrote this event is unknown and it is not decoded; check that the connector's source positions are ordered, or re-snapshot the table"
    )]
    Ambiguous { column: String, at: SourcePosition, newer: SourcePosition, differs: String },
}

impl SchemaGap {
    /// Whether reading newer schema-change records could close the gap: no
    /// record appended later describes a table before its oldest version.
    pub fn catch_up_may_help(&self) -> bool {
        !matches!(self, SchemaGap::OlderThanHistory { .. })
    }
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
        let position = match payload.get("source").and_then(Json::as_object).map(SourcePosition::from_source) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                tracing::warn!(topic = %self.topic, error = %e, "schema-change record has no usable source position; it applies after every version read so far");
                None
            }
            None => {
                tracing::warn!(topic = %self.topic, "schema-change record has no source block; it applies after every version read so far");
                None
            }
        };
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        for change in changes {
            let Some(id) = change.get("id").and_then(Json::as_str) else { continue };
            let topic =
                format!("{}.{}", self.topic, id.split('.').map(|p| p.trim_matches('"')).collect::<Vec<_>>().join("."));
            let columns = if change.get("type").and_then(Json::as_str) == Some("DROP") {
                None
            } else {
                match change.pointer("/table/columns").and_then(Json::as_array) {
                    Some(cols) => Some(cols.iter().filter_map(column_info).collect()),
                    None => continue,
                }
            };
            add_version(tables.entry(topic).or_default(), position.clone(), columns);
        }
    }

    /// Whether a version of `table_topic`, not a DROP, is in force at `at`.
    pub fn knows(&self, table_topic: &str, at: &SourcePosition) -> bool {
        self.field_types(table_topic, at, &[]).is_ok()
    }

    /// The Connect field type Debezium wrote for `column` in an event at
    /// `at`, from the version in force there.
    // SchemaGap holds two inline source positions (128 bytes). It is made only
    // when an event's schema is missing, a rare path, and decode::Error boxes it.
    #[allow(clippy::result_large_err)]
    pub fn field_type(&self, table_topic: &str, at: &SourcePosition, column: &str) -> Result<FieldType, SchemaGap> {
        let unknown = || SchemaGap::UnknownColumn { column: column.to_string(), at: at.clone() };
        self.field_types(table_topic, at, &[column])?.pop().map(|(_, t)| t).ok_or_else(unknown)
    }

    /// The field types of an event's columns: from the version in force at
    /// `at`, or from the first later version that describes every one of
    /// them and agrees with it on those both describe (see the header).
    // SchemaGap holds two inline source positions (128 bytes). It is made only
    // when an event's schema is missing, a rare path, and decode::Error boxes it.
    #[allow(clippy::result_large_err)]
    pub fn field_types(
        &self,
        table_topic: &str,
        at: &SourcePosition,
        columns: &[&str],
    ) -> Result<Vec<(String, FieldType)>, SchemaGap> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let versions = tables.get(table_topic).ok_or(SchemaGap::UnknownTable)?;
        let in_force = versions.partition_point(|v| v.from.as_ref() <= Some(at));
        let Some(current) = in_force.checked_sub(1).and_then(|i| versions.get(i)) else {
            let oldest = versions.first().and_then(|v| v.from.clone());
            return Err(match oldest {
                Some(oldest) => SchemaGap::OlderThanHistory { at: at.clone(), oldest },
                None => SchemaGap::UnknownTable,
            });
        };
        let Some(known) = &current.columns else {
            return Err(match current.from.clone() {
                Some(dropped_at) => SchemaGap::Dropped { at: at.clone(), dropped_at },
                None => SchemaGap::UnknownTable,
            });
        };
        let chosen = match columns.iter().find(|c| !known.contains_key(**c)) {
            None => known,
            Some(column) => later_version(&versions[in_force..], known, at, column, columns)?,
        };
        Ok(columns
            .iter()
            .filter_map(|c| Some((c.to_string(), connect_type(chosen.get(*c)?, self.precision))))
            .collect())
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

/// Inserts a version in position order. A positionless record goes after
/// every version so far; one that says what the version in force at its
/// position already says (a re-emitted CREATE) adds nothing.
fn add_version(
    versions: &mut Vec<Version>,
    from: Option<SourcePosition>,
    columns: Option<HashMap<String, ColumnInfo>>,
) {
    let from = match from {
        Some(p) => Some(p),
        None => versions.last().and_then(|v| v.from.clone()),
    };
    let at = versions.partition_point(|v| v.from <= from);
    if at.checked_sub(1).and_then(|i| versions.get(i)).is_some_and(|v| v.columns == columns) {
        return;
    }
    versions.insert(at, Version { from, columns });
}

/// The first version after the one in force (`known`) that describes every
/// column the event carries, when it agrees with `known` on all of them that
/// `known` describes: the event proves it was written with `missing`.
#[allow(clippy::result_large_err)] // see SchemaHistory::field_type
fn later_version<'v>(
    later: &'v [Version],
    known: &HashMap<String, ColumnInfo>,
    at: &SourcePosition,
    missing: &str,
    columns: &[&str],
) -> Result<&'v HashMap<String, ColumnInfo>, SchemaGap> {
    let unknown = || SchemaGap::UnknownColumn { column: missing.to_string(), at: at.clone() };
    let (newer, cols) = later
        .iter()
        .find_map(|v| Some((v, v.columns.as_ref().filter(|c| columns.iter().all(|n| c.contains_key(*n)))?)))
        .ok_or_else(unknown)?;
    match columns.iter().find(|n| known.get(**n).is_some_and(|k| cols.get(**n) != Some(k))) {
        None => Ok(cols),
        Some(differs) => Err(SchemaGap::Ambiguous {
            column: missing.to_string(),
            at: at.clone(),
            newer: newer.from.clone().ok_or_else(unknown)?,
            differs: differs.to_string(),
        }),
    }
}

fn column_info(c: &Json) -> Option<(String, ColumnInfo)> {
    Some((
        c.get("name")?.as_str()?.to_string(),
        ColumnInfo {
            type_name: c.get("typeName").and_then(Json::as_str).unwrap_or("").to_ascii_lowercase(),
            length: c.get("length").and_then(Json::as_i64),
            scale: c.get("scale").and_then(Json::as_i64),
        },
    ))
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

    const T: &str = "vexere.vexere.dbo.Trips";

    /// A SQL Server `source` block at commit LSN `n` (a snapshot read's shape).
    fn source(n: u32) -> Json {
        json!({"connector": "sqlserver", "commit_lsn": format!("0000002a:{n:08x}:0001"), "change_lsn": null, "event_serial_no": null})
    }

    fn at(n: u32) -> SourcePosition {
        SourcePosition::from_source(source(n).as_object().unwrap()).unwrap()
    }

    fn change(kind: &str, source: Json, columns: Json) -> Json {
        json!({"source": source, "databaseName": "vexere", "schemaName": "dbo", "ddl": null, "tableChanges": [
            {"type": kind, "id": "\"vexere\".\"dbo\".\"Trips\"", "table": {"primaryKeyColumnNames": ["TripId"], "columns": columns}}
        ]})
    }

    fn fare(scale: i64) -> Json {
        json!([{"name": "TripId", "typeName": "int"}, {"name": "Fare", "typeName": "decimal", "length": 14, "scale": scale}])
    }

    fn versions(h: &SchemaHistory) -> usize {
        h.tables.read().unwrap()[T].len()
    }

    #[test]
    fn table_changes_give_scale_and_precision() {
        let h = SchemaHistory::new("vexere", "unused:9092", TimePrecision::Adaptive);
        h.apply(&change(
            "CREATE",
            source(1),
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
        let (p, ty) = (at(1), |c: &str| h.field_type(T, &at(1), c).unwrap());
        assert!(h.knows(T, &p));
        assert_eq!(ty("Fare").scale, Some(2));
        assert_eq!(ty("Fee").scale, Some(4));
        assert_eq!(ty("DepartAt").name.as_deref(), Some("io.debezium.time.NanoTimestamp"));
        assert_eq!(ty("BookedAt").name.as_deref(), Some("io.debezium.time.Timestamp"));
        assert_eq!(ty("Leg").name.as_deref(), Some("io.debezium.time.MicroTime"));
        assert_eq!(ty("Offset").name.as_deref(), Some("io.debezium.time.ZonedTimestamp"));
        assert_eq!(ty("TripId").connect, "int32");
        assert_eq!(h.field_type(T, &p, "Nope"), Err(SchemaGap::UnknownColumn { column: "Nope".into(), at: p }));
    }

    #[test]
    fn each_event_gets_the_version_in_force_at_its_position_whatever_order_they_were_read_in() {
        let h = SchemaHistory::new("vexere", "unused:9092", TimePrecision::Connect);
        h.apply(&change("CREATE", source(10), fare(2)));
        h.apply(&json!({"schema": {}, "payload": change("ALTER", source(30), fare(4))}));
        // Read after the ALTER at 30, made before it.
        h.apply(&change("ALTER", source(20), fare(3)));
        h.apply(&change("DROP", source(40), json!([])));
        let scale = |n| h.field_type(T, &at(n), "Fare").map(|t| t.scale).map_err(Box::new);
        assert_eq!(
            (scale(10), scale(15), scale(20), scale(29), scale(35)),
            (Ok(Some(2)), Ok(Some(2)), Ok(Some(3)), Ok(Some(3)), Ok(Some(4)))
        );
        assert_eq!(
            scale(5),
            Err(Box::new(SchemaGap::OlderThanHistory { at: at(5), oldest: at(10) })),
            "never v1's types"
        );
        assert_eq!(scale(40), Err(Box::new(SchemaGap::Dropped { at: at(40), dropped_at: at(40) })));
        assert!(!h.knows(T, &at(41)) && h.knows(T, &at(39)));
        assert!(!SchemaGap::OlderThanHistory { at: at(5), oldest: at(10) }.catch_up_may_help());
    }

    #[test]
    fn a_positionless_record_applies_after_every_version_read_so_far() {
        let h = SchemaHistory::new("vexere", "unused:9092", TimePrecision::Adaptive);
        h.apply(&change("CREATE", json!({}), fare(1)));
        assert_eq!(h.field_type(T, &at(1), "Fare").unwrap().scale, Some(1), "a first one: from the beginning");
        h.apply(&change("ALTER", source(10), fare(2)));
        h.apply(&change("ALTER", json!({"connector": "sqlserver"}), fare(4)));
        let scale = |n| h.field_type(T, &at(n), "Fare").unwrap().scale;
        assert_eq!((scale(5), scale(10), scale(11)), (Some(1), Some(4), Some(4)));
    }

    #[test]
    fn a_re_emitted_unchanged_schema_adds_no_version() {
        let h = SchemaHistory::new("vexere", "unused:9092", TimePrecision::Adaptive);
        for n in [10, 20, 30, 20] {
            h.apply(&change("CREATE", source(n), fare(2)));
        }
        assert_eq!(versions(&h), 1);
        h.apply(&change("ALTER", source(40), fare(4)));
        h.apply(&change("CREATE", source(50), fare(4)));
        assert_eq!(versions(&h), 2);
    }

    #[test]
    fn a_column_only_the_next_version_describes_types_the_event_when_the_versions_agree() {
        let h = SchemaHistory::new("vexere", "unused:9092", TimePrecision::Adaptive);
        h.apply(&change("CREATE", source(10), fare(2)));
        let stops = json!({"name": "Stops", "typeName": "smallint"});
        let mut v20 = fare(2);
        v20.as_array_mut().unwrap().push(stops.clone());
        h.apply(&change("ALTER", source(20), v20));
        let types = h.field_types(T, &at(15), &["TripId", "Fare", "Stops"]).unwrap();
        assert_eq!(
            types.iter().map(|(c, t)| (c.as_str(), t.scale)).collect::<Vec<_>>(),
            [("TripId", None), ("Fare", Some(2)), ("Stops", None)]
        );
        assert_eq!(h.field_type(T, &at(15), "Stops").unwrap().connect, "int16");
        // Widened Fare and a new Legs at 30: an event at 25 with both has no
        // single version that wrote it.
        let mut v30 = fare(4);
        v30.as_array_mut().unwrap().extend([stops, json!({"name": "Legs", "typeName": "int"})]);
        h.apply(&change("ALTER", source(30), v30));
        assert_eq!(
            h.field_types(T, &at(25), &["Fare", "Legs"]),
            Err(SchemaGap::Ambiguous { column: "Legs".into(), at: at(25), newer: at(30), differs: "Fare".into() })
        );
        assert_eq!(
            h.field_types(T, &at(25), &["Nope"]),
            Err(SchemaGap::UnknownColumn { column: "Nope".into(), at: at(25) })
        );
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
