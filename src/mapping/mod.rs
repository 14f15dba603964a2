//! Step 3 of the path: the read-model file that says which tables feed the
//! read model and how each change becomes a document or row in each sink.
//!
//! One YAML file per read model in `mappings/`; the examples there are the
//! reference. With no `fields` list a table's columns become the document's
//! fields and the Debezium key its id. A table may select, rename and
//! value-map columns, declare source types for schemaless records, add
//! computed fields (expressions or templates, see [`expr`]) and constants,
//! keep only rows matching a `where` filter, and shape each sink in its own
//! section (`elasticsearch`, `postgres`, `bigquery`).
//!
//! Loading checks everything it can without a server and reports every
//! problem with file:line and a hint.

pub mod document;
pub mod expr;
mod file;
pub mod plan;
pub mod policy;
pub mod types;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Spanned;

pub use document::{Document, MappingError, document_id};
use expr::Expr;
use file::{FileField, FileModel, FileSink, FileTable};
pub use policy::{OnDrop, OnTypeChange, SchemaPolicy};
pub use types::SourceType;

use crate::decode::schema_history::TimePrecision;
use crate::decode::{Name, Value};

/// A parsed, validated read-model file.
#[derive(Clone, Debug)]
pub struct ReadModel {
    pub name: String,
    pub file: PathBuf,
    pub schema_changes: Option<String>,
    pub time_precision: TimePrecision,
    pub tables: Vec<TableMapping>,
}

/// How one source table feeds the read model.
#[derive(Clone, Debug)]
pub struct TableMapping {
    pub topic: String,
    /// Line in the file where this table is declared, for error messages.
    pub line: u64,
    /// Key columns overriding the Debezium key.
    pub key: Option<Vec<Name>>,
    /// Row filter: rows for which it is not true are absent from the read
    /// model (an update that stops matching removes the row).
    pub filter: Option<(String, Expr)>,
    /// Selected fields in order; `None` keeps every column.
    pub fields: Option<Vec<FieldMapping>>,
    /// Source types for columns of schemaless records.
    pub source_types: Vec<(String, SourceType)>,
    pub computed: Vec<Computed>,
    pub constants: Vec<(Name, Value)>,
    pub elasticsearch: Option<ElasticsearchTarget>,
    pub postgres: Option<TableTarget>,
    pub bigquery: Option<TableTarget>,
    /// `mirror:`: the staging table a rebuild reads this topic from, when
    /// it is not this table's own postgres target.
    pub mirror: Option<String>,
    /// The read model's `on_type_change` and `on_drop`.
    pub policy: SchemaPolicy,
}

impl TableMapping {
    /// The table a rebuild copies this topic from: the one `mirror:` names
    /// (its columns are checked when it is opened), else the read model's
    /// own postgres target if it copies the table whole. `Err` says what
    /// that target lacks, or is `None` when there is no postgres target.
    pub fn mirror_table(&self) -> Result<&str, Option<String>> {
        if let Some(mirror) = &self.mirror {
            return Ok(mirror);
        }
        let Some(pg) = &self.postgres else { return Err(None) };
        let why = [
            (self.fields.is_some(), "fields:"),
            (!self.computed.is_empty(), "computed:"),
            (self.filter.is_some(), "where:"),
            (self.key.is_some(), "key:"),
            (!self.constants.is_empty(), "constants"),
            (!pg.exclude.is_empty(), "postgres.exclude:"),
        ]
        .iter()
        .filter(|(bad, _)| *bad)
        .map(|(_, what)| *what)
        .collect::<Vec<_>>();
        if why.is_empty() {
            Ok(&pg.table)
        } else {
            Err(Some(format!("its mapping (line {}) has {}, so it lacks source columns", self.line, why.join(", "))))
        }
    }

    /// The command that rebuilds this table's target in `sink` as a new
    /// version: from its topic when it has no whole mirror to copy.
    pub fn rebuild_command(&self, sink: &str) -> String {
        let from = if self.mirror_table().is_ok() { "" } else { " --from kafka" };
        format!("projector rebuild {} --sink {sink} --table {}{from}", self.policy.file.display(), self.topic)
    }
}

/// One selected column.
#[derive(Clone, Debug)]
pub struct FieldMapping {
    pub column: String,
    /// Output name.
    pub name: Name,
    pub values: Option<Vec<(String, Value)>>,
    pub default: Option<Value>,
}

/// A computed output field.
#[derive(Clone, Debug)]
pub struct Computed {
    pub name: Name,
    pub source: String,
    pub expr: Expr,
}

/// Where a table's documents go in Elasticsearch.
#[derive(Clone, Debug)]
pub struct ElasticsearchTarget {
    /// The alias that readers query; the physical index is `<alias>_v<N>`.
    pub index: String,
    /// Explicit field mappings by output field name.
    pub types: Vec<(String, serde_json::Value)>,
    pub exclude: Vec<String>,
}

/// Where a table's rows go in PostgreSQL or BigQuery.
#[derive(Clone, Debug)]
pub struct TableTarget {
    pub table: String,
    pub types: Vec<(String, String)>,
    pub exclude: Vec<String>,
    pub partition_by: Option<String>,
    pub cluster_by: Option<Vec<String>>,
}

/// One problem in a read-model file.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub line: u64,
    pub message: String,
}

/// Everything wrong with a read-model file.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error("{file}: cannot read the read-model file: {source}")]
    Io { file: PathBuf, source: std::io::Error },
    #[error("{}", render(.file, .problems))]
    Invalid { file: PathBuf, problems: Vec<Problem> },
}

fn render(file: &Path, problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("{}:{}: {}", file.display(), p.line, p.message)).collect::<Vec<_>>().join("\n")
}

impl ReadModelError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ReadModelError::Io { .. } => &[],
            ReadModelError::Invalid { problems, .. } => problems,
        }
    }
}

/// Collects problems while checking a file.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn add(&mut self, line: u64, message: impl fmt::Display) {
        self.problems.push(Problem { line, message: message.to_string() });
    }
}

impl ReadModel {
    /// Reads and validates a read-model file.
    pub fn load(path: &Path) -> Result<ReadModel, ReadModelError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ReadModelError::Io { file: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    /// Parses read-model YAML; `path` is used only in messages.
    pub fn parse(path: &Path, text: &str) -> Result<ReadModel, ReadModelError> {
        let invalid = |problems| ReadModelError::Invalid { file: path.to_path_buf(), problems };
        let parsed: FileModel = serde_saphyr::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(0);
            let first = e.to_string().lines().next().unwrap_or("").to_string();
            let first = first
                .split_once(": ")
                .filter(|(l, _)| l.starts_with("error"))
                .map(|(_, m)| m.to_string())
                .unwrap_or(first);
            invalid(vec![Problem {
                line,
                message: format!("{first} (hint: see mappings/README.md for the file format)"),
            }])
        })?;
        let mut c = Checker::default();
        let name = parsed.read_model.value.trim().to_string();
        if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
            c.add(parsed.read_model.referenced.line(), format!("read_model {name:?} must be a non-empty name of letters, digits, '-' and '_' (it names consumer groups and topics)"));
        }
        if parsed.tables.value.is_empty() {
            c.add(parsed.tables.referenced.line(), "tables is empty: list at least one source topic");
        }
        let mut tables: Vec<TableMapping> = Vec::new();
        for t in parsed.tables.value {
            let line = t.referenced.line();
            if let Some(table) = table(&mut c, line, t.value) {
                if let Some(prev) = tables.iter().find(|p| p.topic == table.topic) {
                    c.add(
                        line,
                        format!(
                            "topic {} is listed twice (first at line {}); merge the two entries",
                            table.topic, prev.line
                        ),
                    );
                }
                tables.push(table);
            }
        }
        if !tables.is_empty()
            && tables.iter().all(|t| t.elasticsearch.is_none() && t.postgres.is_none() && t.bigquery.is_none())
        {
            c.add(1, "no table has a sink: add `elasticsearch: { index: <name> }` (or postgres/bigquery) to at least one table");
        }
        let schema_changes = parsed.schema_changes.map(|s| s.value);
        let time_precision = match parsed.time_precision_mode.as_ref().map(|m| (m.referenced.line(), m.value.as_str()))
        {
            None | Some((_, "adaptive")) => TimePrecision::Adaptive,
            Some((_, "connect")) => TimePrecision::Connect,
            Some((line, other)) => {
                c.add(
                    line,
                    format!(
                        "time_precision_mode {other:?} is not supported; use adaptive (Debezium's default) or connect"
                    ),
                );
                TimePrecision::Adaptive
            }
        };
        let mut policy = SchemaPolicy { file: Arc::from(path), ..SchemaPolicy::default() };
        if let Some(p) = &parsed.on_type_change {
            match OnTypeChange::parse(&p.value) {
                Ok(v) => policy.on_type_change = v,
                Err(e) => c.add(p.referenced.line(), e),
            }
        }
        if let Some(p) = &parsed.on_drop {
            match OnDrop::parse(&p.value.0) {
                Ok(v) => policy.on_drop = v,
                Err(e) => c.add(p.referenced.line(), e),
            }
        }
        for t in &mut tables {
            t.policy = policy.clone();
        }
        if c.problems.is_empty() {
            Ok(ReadModel { name, file: path.to_path_buf(), schema_changes, time_precision, tables })
        } else {
            c.problems.sort_by_key(|p| p.line);
            Err(invalid(c.problems))
        }
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

fn table(c: &mut Checker, line: u64, t: FileTable) -> Option<TableMapping> {
    let topic = t.topic.value.trim().to_string();
    if topic.is_empty() {
        c.add(t.topic.referenced.line(), "topic is empty: give the Debezium topic, <prefix>.<db>.<schema>.<table>");
    }
    let key = t.key.map(|k| {
        if k.value.is_empty() {
            c.add(k.referenced.line(), "key is empty: list the key columns, or leave key out to use the Debezium key");
        }
        k.value.iter().map(Name::from).collect()
    });
    let filter = t.filter.and_then(|f| match expr::parse(&f.value) {
        Ok(e) => Some((f.value.clone(), e)),
        Err(e) => {
            c.add(
                f.referenced.line(),
                format!("where {:?}: {e} (hint: e.g. `Status != 9 and SeatCount > 0`)", f.value),
            );
            None
        }
    });
    let mut source_types = Vec::new();
    let fields = t.fields.map(|fields| {
        let mut out: Vec<FieldMapping> = Vec::new();
        for f in fields {
            let fl = f.referenced.line();
            let m = match f.value {
                FileField::Column(column) => {
                    FieldMapping { name: Name::from(&column), column, values: None, default: None }
                }
                FileField::Full(full) => {
                    if let Some(st) = &full.source_type {
                        match SourceType::parse(st) {
                            Ok(st) => source_types.push((full.column.clone(), st)),
                            Err(e) => c.add(fl, e),
                        }
                    }
                    FieldMapping {
                        name: Name::from(full.name.as_ref().unwrap_or(&full.column)),
                        values: full.values.map(|v| v.into_iter().map(|(k, v)| (k.0, json_value(&v))).collect()),
                        default: full.default.as_ref().map(json_value),
                        column: full.column,
                    }
                }
            };
            if m.column.trim().is_empty() {
                c.add(fl, "field has an empty column name");
            }
            if let Some(prev) = out.iter().find(|p| p.name == m.name) {
                c.add(
                    fl,
                    format!(
                        "output field {:?} is defined twice (also from column {:?}); rename one with `as:`",
                        m.name, prev.column
                    ),
                );
            }
            out.push(m);
        }
        out
    });
    let mut computed = Vec::new();
    for cf in t.computed {
        let cl = cf.referenced.line();
        let cf = cf.value;
        let parsed = match (&cf.expr, &cf.template) {
            (Some(e), None) => expr::parse(e).map(|x| (e.clone(), x)),
            (None, Some(tpl)) => expr::parse_template(tpl).map(|x| (tpl.clone(), x)),
            _ => {
                c.add(cl, format!("computed field {:?} needs exactly one of `expr:` or `template:`", cf.name));
                continue;
            }
        };
        match parsed {
            Ok((source, expr)) => computed.push(Computed { name: Name::from(cf.name), source, expr }),
            Err(e) => c.add(cl, format!("computed field {:?}: {e}", cf.name)),
        }
    }
    let constants = t.constants.iter().map(|(k, v)| (Name::from(k), json_value(&v.value))).collect::<Vec<_>>();
    let outputs = output_names(&fields, &computed, &constants);
    for (name, v) in &t.constants {
        if computed.iter().any(|cf| cf.name == *name) {
            c.add(v.referenced.line(), format!("constant {name:?} has the name of a computed field; rename one"));
        }
    }
    let elasticsearch = t.elasticsearch.and_then(|s| {
        let sl = s.referenced.line();
        let s = s.value;
        let index = match &s.index {
            Some(i) => i.value.trim().to_string(),
            None => {
                c.add(sl, "elasticsearch needs `index: <alias name>`");
                return None;
            }
        };
        if let Err(why) = check_index_name(&index) {
            c.add(s.index.as_ref().map_or(sl, |i| i.referenced.line()), why);
        }
        sink_common(c, "elasticsearch", &s, &outputs);
        let mut types = Vec::new();
        for (field, ty) in &s.types {
            match types::elasticsearch_type(&ty.value) {
                Ok(m) => types.push((field.clone(), m)),
                Err(e) => c.add(ty.referenced.line(), e),
            }
        }
        Some(ElasticsearchTarget { index, types, exclude: s.exclude })
    });
    let postgres = t.postgres.and_then(|s| table_target(c, "postgres", s, &outputs, types::postgres_type));
    let mirror = t.mirror.map(|m| m.value.trim().to_string());
    let bigquery = t.bigquery.and_then(|s| table_target(c, "bigquery", s, &outputs, types::bigquery_type));
    Some(TableMapping {
        topic,
        line,
        key,
        filter,
        fields,
        source_types,
        computed,
        constants,
        elasticsearch,
        postgres,
        bigquery,
        mirror,
        policy: SchemaPolicy::default(),
    })
}

/// Output names known from the file (None when all columns pass through).
fn output_names(
    fields: &Option<Vec<FieldMapping>>,
    computed: &[Computed],
    constants: &[(Name, Value)],
) -> Option<Vec<String>> {
    let fields = fields.as_ref()?;
    Some(
        fields
            .iter()
            .map(|f| f.name.to_string())
            .chain(computed.iter().map(|c| c.name.to_string()))
            .chain(constants.iter().map(|c| c.0.to_string()))
            .collect(),
    )
}

fn sink_common(c: &mut Checker, sink: &str, s: &FileSink, outputs: &Option<Vec<String>>) {
    let Some(outputs) = outputs else { return };
    for (field, ty) in &s.types {
        if !outputs.contains(field) {
            c.add(ty.referenced.line(), format!("{sink}.types names {field:?}, which is not an output field ({}); check the spelling or add it to fields", outputs.join(", ")));
        }
    }
}

fn table_target(
    c: &mut Checker,
    sink: &str,
    s: Spanned<FileSink>,
    outputs: &Option<Vec<String>>,
    check: fn(&str) -> Result<String, String>,
) -> Option<TableTarget> {
    let sl = s.referenced.line();
    let s = s.value;
    let Some(table) = s.table.as_ref().map(|t| t.value.clone()) else {
        c.add(sl, format!("{sink} needs `table: <name>`"));
        return None;
    };
    if s.index.is_some() {
        c.add(sl, format!("{sink} takes `table:`, not `index:`"));
    }
    sink_common(c, sink, &s, outputs);
    let mut types = Vec::new();
    for (field, ty) in &s.types {
        match check(&ty.value) {
            Ok(t) => types.push((field.clone(), t)),
            Err(e) => c.add(ty.referenced.line(), e),
        }
    }
    if sink != "bigquery" && (s.partition_by.is_some() || s.cluster_by.is_some()) {
        c.add(sl, format!("partition_by and cluster_by are BigQuery options; remove them from {sink}"));
    }
    Some(TableTarget {
        table,
        types,
        exclude: s.exclude,
        partition_by: s.partition_by.map(|p| p.value),
        cluster_by: s.cluster_by,
    })
}

/// A YAML scalar from the file as a column value.
fn json_value(v: &serde_json::Value) -> Value {
    crate::decode::value::untyped(v)
}

/// Elasticsearch index names: lower case, no `\ / * ? " < > | space , #`, not starting with `-_+`.
fn check_index_name(index: &str) -> Result<(), String> {
    let bad = index.is_empty()
        || index.starts_with(['-', '_', '+'])
        || index.chars().any(|c| c.is_ascii_uppercase() || "\\/*?\"<>| ,#:".contains(c))
        || index.len() > 200;
    if bad {
        Err(format!(
            "index {index:?} is not a valid Elasticsearch index name: use lower case letters, digits, '-' and '_' (not first)"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
