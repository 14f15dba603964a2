//! Batches: the unit a sink pipeline writes and commits.
//!
//! A batch holds every record received since the last one, in offset order,
//! each already decoded and mapped into an [`Item`]. It is ready when it hits
//! its record count, byte size or linger time. When it is done, the next
//! offset of every partition it touched can be stored, in batch order (see
//! [`super::offsets`]), so what is stored is always a contiguous, fully
//! written prefix of each partition.

use foldhash::{HashMap, HashMapExt};
use std::time::{Duration, Instant};

use crate::sink::Write;
use crate::source::{PartitionOffset, SourceRecord};

/// Limits that close a batch.
#[derive(Clone, Debug)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub linger: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits { max_records: 2_000, max_bytes: 8 * 1024 * 1024, linger: Duration::from_millis(50) }
    }
}

/// What the sink must do for one record.
#[derive(Debug)]
pub enum Action {
    Write(Write),
    /// An update that moved its document to a new id (a `key:` mapping's
    /// columns changed): the old id's delete and the new id's write, each
    /// written like any other.
    Moved {
        retired: Write,
        write: Write,
    },
    /// Nothing to write: a tombstone, a schema-change record, a table this
    /// sink does not take.
    Skip(&'static str),
    /// Cannot be processed: send to the dead-letter queue.
    DeadLetter {
        stage: &'static str,
        kind: &'static str,
        reason: String,
    },
}

/// One record and what to do with it.
#[derive(Debug)]
pub struct Item {
    pub record: SourceRecord,
    pub action: Action,
}

/// Records collected for one write.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Item>,
    bytes: usize,
    opened: Option<Instant>,
}

impl Batch {
    pub fn push(&mut self, item: Item) {
        self.bytes += item.record.size_bytes();
        self.opened.get_or_insert_with(Instant::now);
        self.items.push(item);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Full, or old enough to send.
    pub fn is_ready(&self, limits: &BatchLimits) -> bool {
        !self.items.is_empty()
            && (self.items.len() >= limits.max_records
                || self.bytes >= limits.max_bytes
                || self.opened.is_some_and(|t| t.elapsed() >= limits.linger))
    }

    /// When the linger time of a non-empty batch runs out.
    pub fn deadline(&self, limits: &BatchLimits) -> Option<Instant> {
        self.opened.map(|t| t + limits.linger)
    }

    /// Takes the collected items, leaving an empty batch.
    pub fn take(&mut self) -> Batch {
        std::mem::take(self)
    }

    /// Drops the items of partitions this member no longer owns; their new
    /// owner reads them again from the last committed offset.
    pub fn drop_partitions(&mut self, revoked: &[(String, i32)]) -> usize {
        let before = self.items.len();
        self.items
            .retain(|i| !revoked.iter().any(|(t, p)| *t == i.record.lineage.topic && *p == i.record.lineage.partition));
        self.bytes = self.items.iter().map(|i| i.record.size_bytes()).sum();
        if self.items.is_empty() {
            self.opened = None;
        }
        before - self.items.len()
    }

    /// The offset to store per partition once the whole batch is done.
    pub fn next_offsets(&self) -> Vec<PartitionOffset> {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for i in &self.items {
            let l = &i.record.lineage;
            let e = next.entry((l.topic.as_str(), l.partition)).or_insert(l.offset + 1);
            *e = (*e).max(l.offset + 1);
        }
        let mut v: Vec<_> = next
            .into_iter()
            .map(|((t, p), next)| PartitionOffset { topic: t.to_string(), partition: p, next })
            .collect();
        v.sort();
        v
    }
}

/// Picks, for each (target, id), the write with the highest source position.
/// Returns the indexes (into `writes`) of the winners; the others are
/// superseded within the batch and need no request.
pub fn newest_per_key(writes: &[&Write]) -> Vec<usize> {
    let mut best: HashMap<(&str, &str), usize> = HashMap::with_capacity(writes.len());
    for (i, w) in writes.iter().enumerate() {
        best.entry((&w.target, &w.doc.id))
            .and_modify(|b| {
                if writes[*b].doc.position < w.doc.position {
                    *b = i;
                }
            })
            .or_insert(i);
    }
    let mut winners: Vec<usize> = best.into_values().collect();
    winners.sort_unstable();
    winners
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Op, Row, SourcePosition};
    use crate::mapping::Document;
    use crate::source::Lineage;

    fn record(topic: &str, partition: i32, offset: i64) -> SourceRecord {
        SourceRecord {
            lineage: Lineage { topic: topic.into(), partition, offset },
            key: None,
            value: Some(vec![0; 10]),
            headers: vec![],
            timestamp_ms: None,
        }
    }

    fn offset(topic: &str, partition: i32, next: i64) -> PartitionOffset {
        PartitionOffset { topic: topic.into(), partition, next }
    }

    fn write(id: &str, pos: &str) -> Write {
        Write {
            target: "t".into(),
            doc: Document {
                id: id.into(),
                position: SourcePosition::from_stored(pos),
                op: Op::Update,
                source_ts_ms: None,
                lineage: Lineage { topic: "x".into(), partition: 0, offset: 0 },
                key: Row::default(),
                body: None,
                source_types: None,
            },
        }
    }

    #[test]
    fn next_offsets_cover_each_partition() {
        let mut b = Batch::default();
        for (p, o) in [(0, 5), (1, 9), (0, 6), (0, 7)] {
            b.push(Item { record: record("a", p, o), action: Action::Skip("test") });
        }
        assert_eq!(b.next_offsets(), vec![offset("a", 0, 8), offset("a", 1, 10)]);
    }

    #[test]
    fn revoked_partitions_are_dropped() {
        let mut b = Batch::default();
        for (p, o) in [(0, 5), (1, 9), (0, 6)] {
            b.push(Item { record: record("a", p, o), action: Action::Skip("test") });
        }
        assert_eq!(b.drop_partitions(&[("a".into(), 0)]), 2);
        assert_eq!(b.next_offsets(), vec![offset("a", 1, 10)]);
    }

    #[test]
    fn newest_write_per_key_wins_regardless_of_arrival_order() {
        let w = [write("1", "0003"), write("2", "0001"), write("1", "0005"), write("1", "0004")];
        let refs: Vec<&Write> = w.iter().collect();
        assert_eq!(newest_per_key(&refs), vec![1, 2]);
    }

    #[test]
    fn batch_is_ready_by_count_or_bytes() {
        let limits = BatchLimits { max_records: 2, max_bytes: 1_000_000, linger: Duration::from_secs(60) };
        let mut b = Batch::default();
        b.push(Item { record: record("a", 0, 0), action: Action::Skip("test") });
        assert!(!b.is_ready(&limits));
        b.push(Item { record: record("a", 0, 1), action: Action::Skip("test") });
        assert!(b.is_ready(&limits));
        let small = BatchLimits { max_records: 100, max_bytes: 10, linger: Duration::from_secs(60) };
        assert!(b.is_ready(&small));
    }
}
