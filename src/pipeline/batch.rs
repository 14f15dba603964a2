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

use crate::decode::Value;
use crate::sink::Write;
use crate::source::consumer::Revoked;
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
        // Boxed: a move is rare, and two inline writes would double every action's size.
        retired: Box<Write>,
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

    /// Drops the items received under the assignments these revokes ended;
    /// the partition's owner reads them again from the last committed offset.
    /// Items received under a later assignment of the same partition stay.
    pub fn drop_partitions(&mut self, revoked: &[Revoked]) -> usize {
        let before = self.items.len();
        self.items.retain(|i| !revoked.iter().any(|r| r.covers(&i.record)));
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
            let e = next.entry((&*l.topic, l.partition)).or_insert(l.offset + 1);
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

/// Groups the writes by (target, id): each group lists the indexes (into
/// `writes`) of one key's writes, newest source position first (the earlier
/// of two at the same position first, as it arrived first), or newest Kafka
/// offset first when the group holds a compaction delete (a tombstone). Groups come in
/// the order of their newest write's index. Only a group's first write needs
/// a request; the others stand by in case the sink refuses it, and lend it
/// the values it lacks (see [`fill_unavailable`]).
pub fn per_key_newest_first(writes: &[&Write]) -> Vec<Vec<usize>> {
    let mut groups: HashMap<(&str, &str), Vec<usize>> = HashMap::with_capacity(writes.len());
    for (i, w) in writes.iter().enumerate() {
        groups.entry((&w.target, &w.doc.id)).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = groups
        .into_values()
        .map(|mut g| {
            if g.iter().any(|&i| writes[i].doc.compaction) {
                order_with_tombstones(writes, &mut g);
            } else {
                g.sort_by(|a, b| writes[*b].doc.position.cmp(&writes[*a].doc.position).then(a.cmp(b)));
            }
            g
        })
        .collect();
    groups.sort_unstable_by_key(|g| g[0]);
    groups
}

/// Orders one key's group holding a compaction delete (a tombstone), newest
/// first. A tombstone has no position, but one key's records share a
/// partition, where the Kafka offset orders them as they were written: a
/// tombstone stands just above the real write before it in the log (the one
/// with the highest lower offset), or below every real write when none is.
/// The real writes keep their order by position, so a stale re-delivery
/// after a tombstone (a lower position at a higher offset) never comes
/// before the delete the tombstone follows.
fn order_with_tombstones(writes: &[&Write], group: &mut [usize]) {
    use std::cmp::Reverse;
    let rank = |i: usize| {
        let w = writes[i];
        if !w.doc.compaction {
            return (Some(&w.doc.position), 0u8, Reverse(i as i64));
        }
        let before = group
            .iter()
            .map(|&j| writes[j])
            .filter(|r| !r.doc.compaction && r.doc.lineage.offset < w.doc.lineage.offset)
            .max_by_key(|r| r.doc.lineage.offset);
        (before.map(|r| &r.doc.position), 1u8, Reverse(-w.doc.lineage.offset))
    };
    let mut ranked: Vec<(usize, _)> = group.iter().map(|&i| (i, rank(i))).collect();
    ranked.sort_by(|(_, a), (_, b)| b.cmp(a));
    for (slot, (i, _)) in group.iter_mut().zip(ranked) {
        *slot = i;
    }
}

/// Turns `newest`, a tombstone, into the delete of the newest real write of
/// its key before it in the batch (`earlier`, newest first), if there is
/// one: sent alone, the tombstone would find no row written from them (the
/// batch sends only the newest write per key) and change nothing, so the
/// row would stay absent, or live at an older state. As their delete it
/// carries that write's position and is guarded like any delete.
pub fn settle_tombstone(newest: &mut Write, earlier: &[&Write]) {
    if !newest.doc.compaction {
        return;
    }
    if let Some(real) = earlier.iter().find(|w| !w.doc.compaction) {
        let mut doc = real.doc.clone();
        doc.body = None;
        doc.op = crate::decode::Op::Delete;
        newest.doc = doc;
    }
}

/// Gives `newest` the values of its unavailable columns (a LOB or TOAST
/// column the connector did not capture) from `earlier`, the older writes of
/// the same key, newest first: the sink would otherwise keep its stored value,
/// which is older than the one this batch carried. A delete among them ends
/// the search, since what was before it no longer exists.
pub fn fill_unavailable(newest: &mut Write, earlier: &[&Write]) {
    let Some(body) = newest.doc.body.as_mut() else { return };
    for (name, value) in body.columns.iter_mut().filter(|(_, v)| matches!(v, Value::Unavailable)) {
        let found = earlier
            .iter()
            .map_while(|w| w.doc.body.as_ref())
            .find_map(|b| b.get(name).filter(|v| !matches!(v, Value::Unavailable)));
        if let Some(v) = found {
            *value = v.clone();
        }
    }
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
            value: Some(vec![0; 10].into()),
            headers: vec![],
            timestamp_ms: None,
            generation: 0,
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
                compaction: false,
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

    fn revoked(topic: &str, partition: i32, generation: u64) -> Revoked {
        Revoked { topic: topic.into(), partition, generation }
    }

    #[test]
    fn revoked_partitions_are_dropped() {
        let mut b = Batch::default();
        for (p, o) in [(0, 5), (1, 9), (0, 6)] {
            b.push(Item { record: record("a", p, o), action: Action::Skip("test") });
        }
        assert_eq!(b.drop_partitions(&[revoked("a", 0, 0)]), 2);
        assert_eq!(b.next_offsets(), vec![offset("a", 1, 10)]);
    }

    #[test]
    fn a_revoke_drops_only_the_records_of_the_assignment_it_ended() {
        let mut b = Batch::default();
        for (generation, o) in [(1, 5), (1, 6), (2, 5), (2, 6)] {
            b.push(Item { record: SourceRecord { generation, ..record("a", 0, o) }, action: Action::Skip("test") });
        }
        assert_eq!(b.drop_partitions(&[revoked("a", 0, 1)]), 2);
        assert!(b.items.iter().all(|i| i.record.generation == 2), "the re-assignment's records stay");
        assert_eq!(b.next_offsets(), vec![offset("a", 0, 7)]);
    }

    #[test]
    fn newest_write_per_key_comes_first_regardless_of_arrival_order() {
        let w = [write("1", "0003"), write("2", "0001"), write("1", "0005"), write("1", "0004")];
        let refs: Vec<&Write> = w.iter().collect();
        assert_eq!(per_key_newest_first(&refs), vec![vec![1], vec![2, 3, 0]]);
    }

    fn at(mut w: Write, offset: i64, compaction: bool) -> Write {
        w.doc.lineage.offset = offset;
        w.doc.compaction = compaction;
        w
    }

    #[test]
    fn a_tombstone_and_the_writes_of_its_key_are_ordered_by_kafka_offset() {
        // c@10, tombstone@11, c again@12: the re-insert is the newest.
        let w = [at(write("1", "0001"), 10, false), at(write("1", ""), 11, true), at(write("1", "0003"), 12, false)];
        let refs: Vec<&Write> = w.iter().collect();
        assert_eq!(per_key_newest_first(&refs), vec![vec![2, 1, 0]]);
        // c@10 then its tombstone@11: the tombstone is the newest, although
        // its (empty) position is below every real one.
        let w = [at(write("1", "0001"), 10, false), at(write("1", ""), 11, true), at(write("2", "0001"), 12, false)];
        let refs: Vec<&Write> = w.iter().collect();
        assert_eq!(per_key_newest_first(&refs), vec![vec![1, 0], vec![2]]);
    }

    #[test]
    fn a_stale_redelivery_after_a_tombstone_does_not_hide_the_delete() {
        // d@20 (position 0009), its tombstone@21, then a re-delivered old
        // create@30 (position 0001): the real writes are ordered by position,
        // so the delete is the newest and the tombstone, after it in the log,
        // stands for it. Ordered by offset alone, the stale create came first,
        // the sink refused it as stale and the delete was never sent.
        let mut d = at(write("1", "0009"), 20, false);
        d.doc.op = Op::Delete;
        let w = [d, at(write("1", ""), 21, true), at(write("1", "0001"), 30, false)];
        let refs: Vec<&Write> = w.iter().collect();
        assert_eq!(per_key_newest_first(&refs), vec![vec![1, 0, 2]]);
        // A stale re-delivery after the tombstone of a live row's last write:
        // the tombstone (after that write in the log) is still the newest.
        let w = [at(write("1", "0005"), 10, false), at(write("1", ""), 11, true), at(write("1", "0002"), 12, false)];
        let refs: Vec<&Write> = w.iter().collect();
        assert_eq!(per_key_newest_first(&refs), vec![vec![1, 0, 2]]);
    }

    #[test]
    fn a_tombstone_newest_in_its_batch_deletes_the_writes_before_it_at_their_position() {
        let c = write("1", "0001");
        let u = with_note(write("1", "0002"), Some(Value::String("u".into())));
        let mut tombstone = at(write("1", ""), 9, true);
        settle_tombstone(&mut tombstone, &[&u, &c]);
        assert!(!tombstone.doc.compaction, "guarded by position, as a delete");
        assert_eq!(tombstone.doc.position.as_str(), "0002");
        assert!(tombstone.doc.body.is_none());
        let mut alone = at(write("1", ""), 9, true);
        settle_tombstone(&mut alone, &[]);
        assert!(alone.doc.compaction, "with nothing before it, it stays a compaction delete");
    }

    fn with_note(mut w: Write, note: Option<Value>) -> Write {
        w.doc.body = note.map(|n| Row { columns: vec![("Fare".into(), Value::Int(1)), ("Note".into(), n)].into() });
        w
    }

    #[test]
    fn an_unavailable_value_is_taken_from_the_newest_earlier_write_that_carried_it() {
        let c = with_note(write("1", "0001"), Some(Value::String("from c".into())));
        let u1 = with_note(write("1", "0002"), Some(Value::String("from u1".into())));
        let u2 = with_note(write("1", "0003"), Some(Value::Unavailable));
        let mut newest = with_note(write("1", "0004"), Some(Value::Unavailable));
        fill_unavailable(&mut newest, &[&u2, &u1, &c]);
        let body = newest.doc.body.unwrap();
        assert_eq!(body.get("Note"), Some(&Value::String("from u1".into())));
        assert_eq!(body.get("Fare"), Some(&Value::Int(1)), "captured values are the newest's own");
    }

    #[test]
    fn a_delete_in_between_leaves_an_unavailable_value_unavailable() {
        let c = with_note(write("1", "0001"), Some(Value::String("before the delete".into())));
        let d = with_note(write("1", "0002"), None);
        let mut newest = with_note(write("1", "0003"), Some(Value::Unavailable));
        fill_unavailable(&mut newest, &[&d, &c]);
        assert_eq!(newest.doc.body.unwrap().get("Note"), Some(&Value::Unavailable));
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
