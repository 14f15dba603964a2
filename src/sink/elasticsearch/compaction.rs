//! Compaction deletes in the Elasticsearch sink: a Kafka tombstone (whose
//! `d` may have been compacted away) marks its document deleted, guarded by
//! the stored `__projector.partition`/`.offset` instead of the position; the
//! encoding is in [`super::encode::write`].

use super::client::Current;
use crate::mapping::Document;
use crate::sink::Outcome;

/// What a compaction delete (a Kafka tombstone) does to the stored
/// document without being sent: `None` when it must be sent (a live
/// document last written from its partition at a lower offset).
pub fn compaction_outcome(tombstone: &Document, stored: Option<&Current>) -> Option<Outcome> {
    let stored = match stored {
        None => return Some(Outcome::Stale),
        Some(c) if c.deleted => return Some(Outcome::Stale),
        Some(c) => c,
    };
    match stored.written_by {
        Some((partition, offset)) if partition == tombstone.lineage.partition => {
            (offset >= tombstone.lineage.offset).then_some(Outcome::Stale)
        }
        _ => Some(Outcome::Unmatched),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Op;

    #[test]
    fn a_compaction_delete_applies_only_over_a_live_document_written_earlier_on_its_partition() {
        let tombstone = Document {
            id: "1".into(),
            position: crate::decode::SourcePosition::from_stored(""),
            op: Op::Delete,
            source_ts_ms: None,
            lineage: crate::source::Lineage { topic: "t".into(), partition: 1, offset: 10 },
            key: crate::decode::Row::default(),
            body: None,
            source_types: None,
            compaction: true,
        };
        let stored = |written_by, deleted| Current { written_by, deleted, ..Current::default() };
        assert_eq!(compaction_outcome(&tombstone, Some(&stored(Some((1, 9)), false))), None, "sent");
        assert_eq!(compaction_outcome(&tombstone, Some(&stored(Some((1, 11)), false))), Some(Outcome::Stale));
        assert_eq!(compaction_outcome(&tombstone, Some(&stored(Some((1, 9)), true))), Some(Outcome::Stale));
        assert_eq!(compaction_outcome(&tombstone, None), Some(Outcome::Stale));
        assert_eq!(compaction_outcome(&tombstone, Some(&stored(Some((0, 3)), false))), Some(Outcome::Unmatched));
        assert_eq!(compaction_outcome(&tombstone, Some(&stored(None, false))), Some(Outcome::Unmatched));
    }
}
