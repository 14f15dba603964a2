//! Fields the source dropped, in Elasticsearch: a field the index maps that
//! a document no longer carries (its column disappeared from the Debezium
//! records, as after `ALTER TABLE ... DROP COLUMN`).
//!
//! A full-document `index` replaces `_source`, so it would lose the field's
//! stored value. Under `on_drop: keep` (the default) such a write goes out as
//! the conditional partial `update` the sink already sends for values the
//! connector could not capture: the stored value stays, and the position
//! guard (`if_seq_no`) is the same. Under `null` and `drop` the full
//! document is written and the field is gone from it (null to searches).
//! Elasticsearch cannot remove a mapped field in place: under `drop` the
//! mapping keeps the field until a rebuild, which is logged once per index
//! and field, with the rebuild command.

use foldhash::{HashMap, HashSet};
use serde_json::Value as Json;

use super::client::META_FIELD;
use crate::mapping::{Document, OnDrop, TableMapping};

/// What the sink knows of a target's `on_drop`, learnt when the target is
/// created or first given fields.
#[derive(Clone, Debug)]
pub struct DropPolicy {
    pub on_drop: OnDrop,
    /// The command that rebuilds the target (named in the drop log).
    pub rebuild: String,
}

impl DropPolicy {
    pub fn of(table: &TableMapping) -> DropPolicy {
        DropPolicy { on_drop: table.policy.on_drop, rebuild: table.rebuild_command(super::client::SINK) }
    }
}

/// The fields `mapped` has that `doc` does not carry (neither in its row
/// nor its key); empty for a tombstone or a compaction delete, which never
/// carry the row's columns. One hash lookup per column when nothing is
/// missing, the steady state.
pub fn missing<'m>(mapped: &'m HashMap<String, Json>, doc: &Document) -> Vec<&'m str> {
    let Some(body) = doc.body.as_ref().filter(|_| !doc.compaction) else { return Vec::new() };
    let present = body.columns.iter().filter(|(n, _)| mapped.contains_key(n.as_str())).count();
    let expected = mapped.len() - usize::from(mapped.contains_key(META_FIELD));
    if present >= expected {
        return Vec::new();
    }
    mapped
        .keys()
        .map(String::as_str)
        .filter(|f| *f != META_FIELD && body.get(f).is_none() && doc.key.get(f).is_none())
        .collect()
}

/// Logs, once per index and field, a field documents stopped carrying
/// under `on_drop: drop` (its mapping stays until a rebuild).
pub fn log_dropped(logged: &mut HashSet<(String, String)>, target: &str, fields: &[&str], policy: &DropPolicy) {
    for f in fields {
        if logged.insert((target.to_string(), f.to_string())) {
            tracing::warn!(
                sink = super::client::SINK,
                index = target,
                field = f,
                policy = "on_drop: drop",
                "the source dropped this column: documents written from now on no longer carry the field; Elasticsearch cannot remove a mapped field in place, so the index mapping keeps it until a rebuild ({})",
                policy.rebuild
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Op, Row, SourcePosition, Value};
    use crate::source::Lineage;
    use serde_json::json;

    fn doc(columns: &[&str]) -> Document {
        Document {
            id: "1".into(),
            position: SourcePosition::from_stored("01"),
            op: Op::Update,
            source_ts_ms: None,
            lineage: Lineage { topic: "t".into(), partition: 0, offset: 1 },
            key: Row { columns: vec![("Id".into(), Value::Int(1))].into() },
            body: Some(Row { columns: columns.iter().map(|c| ((*c).into(), Value::Int(1))).collect() }),
            source_types: None,
            compaction: false,
        }
    }

    #[test]
    fn a_mapped_field_the_document_lacks_is_missing_and_bookkeeping_never_is() {
        let mapped: HashMap<String, Json> =
            ["Id", "Note", "Seats", META_FIELD].iter().map(|f| (f.to_string(), json!({}))).collect();
        assert!(missing(&mapped, &doc(&["Id", "Note", "Seats"])).is_empty());
        assert!(missing(&mapped, &doc(&["Id", "Note", "Seats", "New"])).is_empty(), "a new field is not a drop");
        assert_eq!(missing(&mapped, &doc(&["Id", "Seats"])), vec!["Note"]);
        assert_eq!(missing(&mapped, &doc(&["Seats", "Note"])), Vec::<&str>::new(), "the key carries Id");
        let mut tombstone = doc(&[]);
        tombstone.body = None;
        assert!(missing(&mapped, &tombstone).is_empty());
    }
}
