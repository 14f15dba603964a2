//! Step 3 of the path: the read-model file that says which tables feed the
//! read model and how each change becomes a document or row in each sink.
//!
//! One YAML file per read model in `mappings/`. The minimal file names the
//! source topics and, per sink, where they go; with no field list a table's
//! columns become the document's fields and the Debezium key its `_id`:
//!
//! ```yaml
//! read_model: bus-booking
//! tables:
//!   - topic: vexere.vexere.dbo.Trips
//!     elasticsearch: { index: trips }
//! ```
//!
//! Errors name the file and line and say what to change.

pub mod document;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

pub use document::{Document, MappingError, document_id};

/// A parsed, validated read-model file.
#[derive(Clone, Debug)]
pub struct ReadModel {
    pub name: String,
    pub file: PathBuf,
    pub tables: Vec<TableMapping>,
}

/// How one source table feeds the read model.
#[derive(Clone, Debug)]
pub struct TableMapping {
    pub topic: String,
    /// Line in the file where this table is declared, for error messages.
    pub line: u64,
    pub elasticsearch: Option<ElasticsearchTarget>,
}

/// Where a table's documents go in Elasticsearch.
#[derive(Clone, Debug)]
pub struct ElasticsearchTarget {
    /// The alias that readers query; the physical index is `<alias>_v<N>`.
    pub index: String,
}

/// A problem found in a read-model file.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error("{file}: cannot read the read-model file: {source}")]
    Io { file: PathBuf, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Invalid { file: PathBuf, line: u64, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    read_model: Spanned<String>,
    tables: Spanned<Vec<Spanned<FileTable>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTable {
    topic: Spanned<String>,
    #[serde(default)]
    elasticsearch: Option<Spanned<FileElasticsearch>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileElasticsearch {
    index: Spanned<String>,
}

impl ReadModel {
    /// Reads and validates a read-model file.
    pub fn load(path: &Path) -> Result<ReadModel, ReadModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReadModelError::Io { file: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    /// Parses read-model YAML; `path` is used only in messages.
    pub fn parse(path: &Path, text: &str) -> Result<ReadModel, ReadModelError> {
        let invalid = |line: u64, message: String| ReadModelError::Invalid { file: path.to_path_buf(), line, message };
        let parsed: FileModel = serde_saphyr::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(0);
            invalid(line, format!("{e}; see mappings/bus_booking.yaml for the expected shape"))
        })?;
        let name = parsed.read_model.value.trim().to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(invalid(
                parsed.read_model.referenced.line(),
                format!("read_model {name:?} must be a non-empty name of letters, digits, '-' and '_' (it names consumer groups and topics)"),
            ));
        }
        if parsed.tables.value.is_empty() {
            return Err(invalid(parsed.tables.referenced.line(), "tables is empty: list at least one source topic".into()));
        }
        let mut tables: Vec<TableMapping> = Vec::new();
        for t in parsed.tables.value {
            let line = t.referenced.line();
            let topic = t.value.topic.value.trim().to_string();
            if topic.is_empty() {
                return Err(invalid(t.value.topic.referenced.line(), "topic is empty: give the Debezium topic, <prefix>.<db>.<schema>.<table>".into()));
            }
            if let Some(prev) = tables.iter().find(|p| p.topic == topic) {
                return Err(invalid(line, format!("topic {topic} is listed twice (first at line {}); merge the two entries", prev.line)));
            }
            let elasticsearch = match t.value.elasticsearch {
                None => None,
                Some(es) => {
                    let index = es.value.index.value.trim().to_string();
                    check_index_name(&index).map_err(|why| invalid(es.value.index.referenced.line(), why))?;
                    Some(ElasticsearchTarget { index })
                }
            };
            tables.push(TableMapping { topic, line, elasticsearch });
        }
        if tables.iter().all(|t| t.elasticsearch.is_none()) {
            return Err(invalid(1, "no table has a sink: add `elasticsearch: { index: <name> }` to at least one table".into()));
        }
        Ok(ReadModel { name, file: path.to_path_buf(), tables })
    }

    /// The mapping for a topic, if the read model reads it.
    pub fn table(&self, topic: &str) -> Option<&TableMapping> {
        self.tables.iter().find(|t| t.topic == topic)
    }

    /// All source topics.
    pub fn topics(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.topic.clone()).collect()
    }
}

/// Elasticsearch index names: lower case, no `\ / * ? " < > | space , #`, not starting with `-_+`.
fn check_index_name(index: &str) -> Result<(), String> {
    let bad = index.is_empty()
        || index.starts_with(['-', '_', '+'])
        || index.chars().any(|c| c.is_ascii_uppercase() || "\\/*?\"<>| ,#:".contains(c))
        || index.len() > 200;
    if bad {
        Err(format!("index {index:?} is not a valid Elasticsearch index name: use lower case letters, digits, '-' and '_' (not first)"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ReadModel, ReadModelError> {
        ReadModel::parse(Path::new("mappings/test.yaml"), text)
    }

    #[test]
    fn minimal_file_parses() {
        let m = parse("read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    elasticsearch: { index: t }\n").unwrap();
        assert_eq!(m.name, "rm");
        assert_eq!(m.tables[0].topic, "a.b.dbo.T");
        assert_eq!(m.tables[0].line, 3);
        assert_eq!(m.tables[0].elasticsearch.as_ref().unwrap().index, "t");
    }

    #[test]
    fn bad_index_name_points_at_its_line() {
        let err = parse("read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    elasticsearch:\n      index: Trips\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("mappings/test.yaml:5: index \"Trips\""), "{msg}");
    }

    #[test]
    fn unknown_key_is_reported_with_line() {
        let err = parse("read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    elastic: { index: t }\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("mappings/test.yaml:4:"), "{msg}");
        assert!(msg.contains("elastic"), "{msg}");
    }

    #[test]
    fn duplicate_topic_is_rejected() {
        let err = parse("read_model: rm\ntables:\n  - topic: x\n    elasticsearch: { index: t }\n  - topic: x\n").unwrap_err();
        assert!(err.to_string().contains("listed twice (first at line 3)"), "{err}");
    }

    #[test]
    fn example_mappings_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                ReadModel::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n > 0, "mappings/ has no example read models");
    }
}
