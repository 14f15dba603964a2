//! The read-model file as written: YAML structures with their line numbers.
//! [`super::ReadModel::parse`] turns this into the checked model, collecting
//! every problem (not just the first) with its line and a hint.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileModel {
    pub read_model: Spanned<String>,
    /// Debezium's schema-change topic (`<topic.prefix>`), read for decimal
    /// scale and column types when records come without schemas.
    #[serde(default)]
    pub schema_changes: Option<Spanned<String>>,
    /// The connector's `time.precision.mode`: `adaptive` (default) or `connect`.
    #[serde(default)]
    pub time_precision_mode: Option<Spanned<String>>,
    /// A source column retyped in a way a sink cannot follow in place:
    /// `rebuild` (default), `dead_letter` or `stop`.
    #[serde(default)]
    pub on_type_change: Option<Spanned<String>>,
    /// A column dropped at the source: `keep` (default), `null` or `drop`
    /// (`on_drop: null` is YAML's null, taken as the word).
    #[serde(default, deserialize_with = "null_is_a_word")]
    pub on_drop: Option<Spanned<Word>>,
    pub tables: Spanned<Vec<Spanned<FileTable>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTable {
    pub topic: Spanned<String>,
    /// Key columns; default: the Debezium record key.
    #[serde(default)]
    pub key: Option<Spanned<Vec<String>>>,
    /// Only rows for which this expression is true are in the read model.
    #[serde(default, rename = "where")]
    pub filter: Option<Spanned<String>>,
    /// Columns to keep, in order; default: all.
    #[serde(default)]
    pub fields: Option<Vec<Spanned<FileField>>>,
    #[serde(default)]
    pub computed: Vec<Spanned<FileComputed>>,
    #[serde(default)]
    pub constants: BTreeMap<String, Spanned<serde_json::Value>>,
    #[serde(default)]
    pub elasticsearch: Option<Spanned<FileSink>>,
    #[serde(default)]
    pub postgres: Option<Spanned<FileSink>>,
    #[serde(default)]
    pub bigquery: Option<Spanned<FileSink>>,
    /// The staging PostgreSQL table that mirrors this topic whole (written by
    /// another read model), for rebuilds; default: this table's own
    /// `postgres` target when it copies every column.
    #[serde(default)]
    pub mirror: Option<Spanned<String>>,
}

/// A field entry: a bare column name, or a map with options.
pub enum FileField {
    Column(String),
    Full(FileFieldFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFieldFull {
    pub column: String,
    /// Output name; default: the column name.
    #[serde(default, rename = "as")]
    pub name: Option<String>,
    /// Source type for records without a schema, e.g. `decimal(12,2)`.
    #[serde(default)]
    pub source_type: Option<String>,
    /// Value map, e.g. status codes to names.
    #[serde(default)]
    pub values: Option<BTreeMap<ScalarKey, serde_json::Value>>,
    /// Output for a value the map does not list; default: the value itself.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for FileField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FileField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a column name, or a map with `column` and optional `as`, `source_type`, `values`, `default`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileField, E> {
                Ok(FileField::Column(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FileField, A::Error> {
                FileFieldFull::deserialize(de::value::MapAccessDeserializer::new(map)).map(FileField::Full)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileComputed {
    pub name: String,
    /// An expression, e.g. `concat('T-', TripId)`.
    #[serde(default)]
    pub expr: Option<String>,
    /// A template, e.g. `"{FirstName} {LastName}"`.
    #[serde(default)]
    pub template: Option<String>,
}

/// A sink section of a table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    /// Elasticsearch alias.
    #[serde(default)]
    pub index: Option<Spanned<String>>,
    /// PostgreSQL or BigQuery table.
    #[serde(default)]
    pub table: Option<Spanned<String>>,
    /// Sink types per output field, e.g. `Route: text`.
    #[serde(default)]
    pub types: BTreeMap<String, Spanned<String>>,
    /// Output fields this sink does not get.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// BigQuery: partition column (DATE/TIMESTAMP).
    #[serde(default)]
    pub partition_by: Option<Spanned<String>>,
    /// BigQuery: clustering columns (default: the key).
    #[serde(default)]
    pub cluster_by: Option<Vec<String>>,
}

/// A policy word, where YAML's `null` is the word "null".
pub struct Word(pub String);

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Word;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a word")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Word, E> {
                Ok(Word(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Word, E> {
                Ok(Word("null".into()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Word, E> {
                Ok(Word("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A present field is always `Some`, even when its value is YAML's null.
fn null_is_a_word<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Spanned<Word>>, D::Error> {
    Spanned::<Word>::deserialize(d).map(Some)
}

/// A map key written as any YAML scalar (`0: draft` or `'0': draft`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScalarKey(pub String);

impl<'de> Deserialize<'de> for ScalarKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ScalarKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar value-map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarKey, E> {
                Ok(ScalarKey(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
