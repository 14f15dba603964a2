//! `projector plan`: what a read model would create in each sink, printed
//! without touching anything. Field types that the file does not fix are
//! derived from the Debezium schema of the first records, and say so.

use std::fmt::Write as _;

use super::{ReadModel, TableMapping};
use crate::sink::elasticsearch::mapping::index_mapping;

/// Renders the plan as text.
pub fn render(model: &ReadModel) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "read model {} ({})", model.name, model.file.display());
    let _ =
        writeln!(out, "consumer groups: projector.{}.<sink>   dead letters: projector.{}.dlq", model.name, model.name);
    if let Some(s) = &model.schema_changes {
        let _ = writeln!(out, "schema-change topic: {s}");
    }
    for t in &model.tables {
        let _ = writeln!(out, "\ntable {} (line {})", t.topic, t.line);
        let _ =
            writeln!(out, "  key: {}", t.key.as_ref().map_or("the Debezium record key".to_string(), |k| k.join(", ")));
        if let Some((src, _)) = &t.filter {
            let _ = writeln!(out, "  only rows where: {src}");
        }
        let _ = writeln!(out, "  fields: {}", fields(t));
        if let Some(es) = &t.elasticsearch {
            let mapping = index_mapping(es, &[]);
            let _ = writeln!(
                out,
                "  elasticsearch: alias {} -> index {}_v1 (filter: not __projector.deleted)",
                es.index, es.index
            );
            let _ = writeln!(out, "    mapping (fields not listed are added from the first records' schema types):");
            for line in serde_json::to_string_pretty(&mapping).unwrap_or_default().lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
        for (sink, target) in [("postgres", &t.postgres), ("bigquery", &t.bigquery)] {
            if let Some(tt) = target {
                let _ = writeln!(out, "  {sink}: table {}", tt.table);
                for (f, ty) in &tt.types {
                    let _ = writeln!(out, "    {f} {ty}");
                }
                if !tt.exclude.is_empty() {
                    let _ = writeln!(out, "    excluded: {}", tt.exclude.join(", "));
                }
                if let Some(p) = &tt.partition_by {
                    let _ = writeln!(out, "    partition by {p}");
                }
                if let Some(c) = &tt.cluster_by {
                    let _ = writeln!(out, "    cluster by {}", c.join(", "));
                }
                let _ =
                    writeln!(out, "    (other columns typed from the Debezium schema when they first carry a value)");
            }
        }
    }
    out
}

fn fields(t: &TableMapping) -> String {
    let mut parts: Vec<String> = match &t.fields {
        None => vec!["all columns".into()],
        Some(fs) => fs
            .iter()
            .map(|f| {
                let mut s = if f.name == f.column { f.name.to_string() } else { format!("{} <- {}", f.name, f.column) };
                if f.values.is_some() {
                    s.push_str(" (value map)");
                }
                s
            })
            .collect(),
    };
    parts.extend(t.computed.iter().map(|c| format!("{} = {}", c.name, c.source)));
    parts.extend(t.constants.iter().map(|(n, v)| format!("{n} = {}", super::expr::text(v))));
    parts.join(", ")
}
