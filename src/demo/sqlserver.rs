//! Builds change events exactly as Debezium's SQL Server connector writes
//! them through Kafka Connect's JsonConverter (Debezium 3.5, envelope v2).
//!
//! SQL Server cannot run on this machine, so the demo and the tests produce
//! these fixtures instead. The shapes follow `shared/notes/debezium-sqlserver-format.md`:
//! key = struct of PK columns, value = `{before, after, source, transaction,
//! op, ts_ms, ts_us, ts_ns}`, LSNs as `%08x:%08x:%04x`, `event_serial_no` a
//! number, snapshot reads with a null `change_lsn`, a Kafka-null tombstone
//! after each delete.

use base64::Engine;
use serde_json::{Value as Json, json};

/// One column of a captured table, as the Connect schema describes it.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: &'static str,
    pub connect: &'static str,
    pub semantic: Option<&'static str>,
    /// Decimal scale and precision, when `semantic` is Connect's Decimal.
    pub decimal: Option<(u32, u32)>,
    pub optional: bool,
}

impl Column {
    pub const fn new(name: &'static str, connect: &'static str) -> Column {
        Column { name, connect, semantic: None, decimal: None, optional: false }
    }
    pub const fn semantic(mut self, name: &'static str) -> Column {
        self.semantic = Some(name);
        self
    }
    pub const fn decimal(mut self, precision: u32, scale: u32) -> Column {
        self.semantic = Some("org.apache.kafka.connect.data.Decimal");
        self.decimal = Some((scale, precision));
        self
    }
    pub const fn optional(mut self) -> Column {
        self.optional = true;
        self
    }

    fn schema(&self) -> Json {
        let mut s = json!({"type": self.connect, "optional": self.optional});
        if let Some(name) = self.semantic {
            s["name"] = json!(name);
            s["version"] = json!(1);
        }
        if let Some((scale, precision)) = self.decimal {
            s["parameters"] = json!({"scale": scale.to_string(), "connect.decimal.precision": precision.to_string()});
        }
        s["field"] = json!(self.name);
        s
    }
}

/// A captured SQL Server table: `<prefix>.<db>.<schema>.<table>`.
#[derive(Clone, Debug)]
pub struct Table {
    pub prefix: &'static str,
    pub database: &'static str,
    pub schema: &'static str,
    pub name: &'static str,
    pub columns: Vec<Column>,
    pub key: Vec<&'static str>,
}

/// Where in the log a change happened: `(commit_lsn, change_lsn, event_serial_no)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsns {
    pub commit: u128,
    /// None for snapshot reads.
    pub change: Option<u128>,
    pub serial: Option<i64>,
}

/// Formats an 80-bit LSN the way `Lsn.toString` does.
pub fn lsn_text(lsn: u128) -> String {
    format!("{:08x}:{:08x}:{:04x}", (lsn >> 48) as u32, (lsn >> 16) as u32, lsn as u16)
}

/// Base64 of the big-endian two's-complement unscaled value (minimal width).
pub fn decimal_base64(unscaled: i128) -> String {
    let bytes = unscaled.to_be_bytes();
    let fill = if unscaled < 0 { 0xff } else { 0x00 };
    let mut start = 0;
    while start < 15 && bytes[start] == fill && (bytes[start + 1] & 0x80 == fill & 0x80) {
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&bytes[start..])
}

/// A row image: column name → JSON-encoded value as the converter writes it.
pub type Image = Vec<(&'static str, Json)>;

/// A Kafka record ready to produce.
#[derive(Clone, Debug)]
pub struct Record {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Table {
    pub fn topic(&self) -> String {
        format!("{}.{}.{}.{}", self.prefix, self.database, self.schema, self.name)
    }

    fn row_schema(&self, field: &str) -> Json {
        json!({
            "type": "struct",
            "fields": self.columns.iter().map(Column::schema).collect::<Vec<_>>(),
            "optional": true,
            "name": format!("{}.Value", self.topic()),
            "field": field,
        })
    }

    fn key_schema(&self) -> Json {
        let fields: Vec<Json> = self
            .key
            .iter()
            .map(|k| {
                let c = self.columns.iter().find(|c| c.name == *k).expect("key column is a table column");
                let mut s = c.schema();
                s["optional"] = json!(false);
                s
            })
            .collect();
        json!({"type": "struct", "fields": fields, "optional": false, "name": format!("{}.Key", self.topic())})
    }

    fn envelope_schema(&self) -> Json {
        json!({
            "type": "struct",
            "fields": [
                self.row_schema("before"),
                self.row_schema("after"),
                {"type": "struct", "fields": [
                    {"type": "string", "optional": false, "field": "version"},
                    {"type": "string", "optional": false, "field": "connector"},
                    {"type": "string", "optional": false, "field": "name"},
                    {"type": "int64", "optional": false, "field": "ts_ms"},
                    {"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
                     "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
                     "default": "false", "field": "snapshot"},
                    {"type": "string", "optional": false, "field": "db"},
                    {"type": "string", "optional": true, "field": "sequence"},
                    {"type": "int64", "optional": true, "field": "ts_us"},
                    {"type": "int64", "optional": true, "field": "ts_ns"},
                    {"type": "string", "optional": false, "field": "schema"},
                    {"type": "string", "optional": false, "field": "table"},
                    {"type": "string", "optional": true, "field": "change_lsn"},
                    {"type": "string", "optional": true, "field": "commit_lsn"},
                    {"type": "int64", "optional": true, "field": "event_serial_no"}
                ], "optional": false, "name": "io.debezium.connector.sqlserver.Source", "version": 1, "field": "source"},
                {"type": "struct", "fields": [
                    {"type": "string", "optional": false, "field": "id"},
                    {"type": "int64", "optional": false, "field": "total_order"},
                    {"type": "int64", "optional": false, "field": "data_collection_order"}
                ], "optional": true, "name": "event.block", "version": 1, "field": "transaction"},
                {"type": "string", "optional": false, "field": "op"},
                {"type": "int64", "optional": true, "field": "ts_ms"},
                {"type": "int64", "optional": true, "field": "ts_us"},
                {"type": "int64", "optional": true, "field": "ts_ns"}
            ],
            "optional": false,
            "name": format!("{}.Envelope", self.topic()),
            "version": 2
        })
    }

    fn image(&self, image: &Image) -> Json {
        let mut m = serde_json::Map::new();
        for c in &self.columns {
            let v = image.iter().find(|(n, _)| *n == c.name).map(|(_, v)| v.clone()).unwrap_or(Json::Null);
            m.insert(c.name.to_string(), v);
        }
        Json::Object(m)
    }

    fn key_of(&self, image: &Image) -> Json {
        let mut m = serde_json::Map::new();
        for k in &self.key {
            let v = image.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or(Json::Null);
            m.insert(k.to_string(), v);
        }
        Json::Object(m)
    }

    /// One change event. `ts_ms` is the source commit time.
    pub fn event(
        &self,
        op: char,
        before: Option<&Image>,
        after: Option<&Image>,
        at: Lsns,
        ts_ms: i64,
        schemas: bool,
    ) -> Record {
        let key_image = after.or(before).expect("an event has a row image");
        let snapshot = if op == 'r' { "true" } else { "false" };
        let payload = json!({
            "before": before.map(|b| self.image(b)),
            "after": after.map(|a| self.image(a)),
            "source": {
                "version": "3.5.2.Final",
                "connector": "sqlserver",
                "name": self.prefix,
                "ts_ms": ts_ms,
                "snapshot": snapshot,
                "db": self.database,
                "sequence": null,
                "ts_us": ts_ms * 1000,
                "ts_ns": ts_ms * 1_000_000,
                "schema": self.schema,
                "table": self.name,
                "change_lsn": at.change.map(lsn_text),
                "commit_lsn": lsn_text(at.commit),
                "event_serial_no": at.serial,
            },
            "transaction": null,
            "op": op.to_string(),
            "ts_ms": ts_ms + 5,
            "ts_us": (ts_ms + 5) * 1000,
            "ts_ns": (ts_ms + 5) * 1_000_000,
        });
        let key = self.key_of(key_image);
        let (key, value) = if schemas {
            (
                json!({"schema": self.key_schema(), "payload": key}),
                json!({"schema": self.envelope_schema(), "payload": payload}),
            )
        } else {
            (key, payload)
        };
        Record {
            topic: self.topic(),
            key: serde_json::to_vec(&key).unwrap(),
            value: Some(serde_json::to_vec(&value).unwrap()),
        }
    }

    /// The record the connector writes to the schema-change topic
    /// (`<prefix>`) for this table: `kind` is `CREATE`, `ALTER` or `DROP`,
    /// made at source position `at` (`source.commit_lsn`, `change_lsn`,
    /// `event_serial_no`, null where the connector writes null).
    pub fn schema_change_at(&self, kind: &str, at: Lsns, ts_ms: i64, schemas: bool) -> Record {
        let mut record = self.schema_change(kind, ts_ms, schemas);
        let mut value: Json = serde_json::from_slice(record.value.as_deref().unwrap_or_default()).unwrap();
        let payload = if schemas { &mut value["payload"] } else { &mut value };
        let source = &mut payload["source"];
        source["snapshot"] = json!(if at.change.is_none() { "true" } else { "false" });
        source["commit_lsn"] = json!(lsn_text(at.commit));
        source["change_lsn"] = json!(at.change.map(lsn_text));
        source["event_serial_no"] = json!(at.serial);
        record.value = Some(serde_json::to_vec(&value).unwrap());
        record
    }

    /// [`Table::schema_change_at`] without a source position (no `commit_lsn`).
    pub fn schema_change(&self, kind: &str, ts_ms: i64, schemas: bool) -> Record {
        let columns: Vec<Json> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (type_name, length, scale) = sql_type(c);
                json!({"name": c.name, "jdbcType": 0, "nativeType": null, "typeName": type_name, "typeExpression": type_name,
                       "charsetName": null, "length": length, "scale": scale, "position": i + 1, "optional": c.optional,
                       "autoIncremented": false, "generated": false, "comment": null, "defaultValueExpression": null, "enumValues": null})
            })
            .collect();
        let payload = json!({
            "source": {"version": "3.5.2.Final", "connector": "sqlserver", "name": self.prefix, "ts_ms": ts_ms, "snapshot": "true", "db": self.database, "schema": self.schema, "table": self.name},
            "ts_ms": ts_ms,
            "databaseName": self.database,
            "schemaName": self.schema,
            "ddl": if kind == "CREATE" { Json::Null } else { json!("N/A") },
            "tableChanges": [{"type": kind, "id": format!("\"{}\".\"{}\".\"{}\"", self.database, self.schema, self.name),
                "table": {"defaultCharsetName": null, "primaryKeyColumnNames": self.key, "columns": columns, "comment": null}}]
        });
        let key = json!({"databaseName": self.database});
        let (key, value) = if schemas {
            (
                json!({"schema": {"type": "struct", "fields": [{"type": "string", "optional": false, "field": "databaseName"}], "optional": false, "name": "io.debezium.connector.sqlserver.SchemaChangeKey"}, "payload": key}),
                json!({"schema": {"type": "struct", "optional": false, "name": "io.debezium.connector.sqlserver.SchemaChangeValue"}, "payload": payload}),
            )
        } else {
            (key, payload)
        };
        Record {
            topic: self.prefix.to_string(),
            key: serde_json::to_vec(&key).unwrap(),
            value: Some(serde_json::to_vec(&value).unwrap()),
        }
    }

    /// The Kafka-null tombstone that follows a delete.
    pub fn tombstone(&self, before: &Image, schemas: bool) -> Record {
        let key = self.key_of(before);
        let key = if schemas { json!({"schema": self.key_schema(), "payload": key}) } else { key };
        Record { topic: self.topic(), key: serde_json::to_vec(&key).unwrap(), value: None }
    }
}

/// The SQL Server column type a fixture column stands for: (typeName, length, scale).
fn sql_type(c: &Column) -> (&'static str, i64, Option<i64>) {
    match (c.connect, c.semantic) {
        (_, Some("org.apache.kafka.connect.data.Decimal")) => {
            let (scale, precision) = c.decimal.unwrap_or((0, 18));
            ("decimal", precision as i64, Some(scale as i64))
        }
        (_, Some("io.debezium.time.NanoTimestamp")) => ("datetime2", 27, Some(7)),
        (_, Some("io.debezium.time.MicroTimestamp")) => ("datetime2", 26, Some(6)),
        (_, Some("io.debezium.time.Timestamp")) => ("datetime2", 23, Some(3)),
        (_, Some("io.debezium.time.Date")) => ("date", 10, Some(0)),
        (_, Some("io.debezium.time.ZonedTimestamp")) => ("datetimeoffset", 34, Some(7)),
        ("int16", _) => ("smallint", 5, Some(0)),
        ("int32", _) => ("int", 10, Some(0)),
        ("int64", _) => ("bigint", 19, Some(0)),
        ("boolean", _) => ("bit", 1, None),
        ("bytes", _) => ("varbinary", 8000, None),
        ("float64", _) => ("float", 53, None),
        _ => ("nvarchar", 4000, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // Grouped as SQL Server writes an LSN (8:8:4 hex digits), like the text.
    #[allow(clippy::unusual_byte_groupings)]
    fn lsn_text_matches_debezium_format() {
        assert_eq!(lsn_text(0x0000002a_00000310_0003), "0000002a:00000310:0003");
    }

    #[test]
    fn decimal_base64_is_minimal_twos_complement() {
        assert_eq!(decimal_base64(35_000_000), "AhYOwA==");
        assert_eq!(decimal_base64(-1), "/w==");
        assert_eq!(decimal_base64(128), "AIA=");
        assert_eq!(decimal_base64(-129), "/38=");
    }
}
