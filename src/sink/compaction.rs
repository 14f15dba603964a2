//! Compaction deletes, the rule every sink applies: a Kafka tombstone
//! (whose `d` event may have been compacted away) carries no source
//! position, so it is ordered by Kafka offset against the record that last
//! wrote the row. It deletes only a live row last written from its own
//! partition at a lower offset, and leaves the row's stored position as it
//! was. How a sink reads what it stores and sends the delete is its own.

use crate::mapping::Document;
use crate::sink::Outcome;

/// What a sink holds for one id, as a compaction delete reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Whether the row is already deleted (a tombstone row or document).
    pub deleted: bool,
    /// The Kafka partition and offset of the record that last wrote it;
    /// `None` for a row written before projector stored them.
    pub written_by: Option<(i32, i64)>,
}

/// What a compaction delete does to the stored row without being sent:
/// `None` when it must be sent (a live row last written from its partition
/// at a lower offset); `Unmatched` when offsets cannot order the two.
pub fn outcome(tombstone: &Document, stored: Option<Stored>) -> Option<Outcome> {
    let stored = match stored {
        None => return Some(Outcome::Stale),
        Some(s) if s.deleted => return Some(Outcome::Stale),
        Some(s) => s,
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
    fn a_compaction_delete_applies_only_over_a_live_row_written_earlier_on_its_partition() {
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
        let stored = |written_by, deleted| Some(Stored { written_by, deleted });
        assert_eq!(outcome(&tombstone, stored(Some((1, 9)), false)), None, "sent");
        assert_eq!(outcome(&tombstone, stored(Some((1, 11)), false)), Some(Outcome::Stale));
        assert_eq!(outcome(&tombstone, stored(Some((1, 9)), true)), Some(Outcome::Stale));
        assert_eq!(outcome(&tombstone, None), Some(Outcome::Stale));
        assert_eq!(outcome(&tombstone, stored(Some((0, 3)), false)), Some(Outcome::Unmatched));
        assert_eq!(outcome(&tombstone, stored(None, false)), Some(Outcome::Unmatched));
    }
}
