//! A member of a Kafka consumer group (cooperative-sticky) that delivers
//! owned [`SourceRecord`]s and stores offsets only when told to.
//!
//! The commit protocol, in one place:
//! - `enable.auto.offset.store=false`: librdkafka never marks a record done
//!   by itself. The pipeline calls [`ConsumerGroup::store`] with the next
//!   offset of each partition only after every write for the records before
//!   it is durable in the sink (or in the dead-letter queue).
//! - `enable.auto.commit=true`: librdkafka commits what was stored, every
//!   second, before partitions are revoked, and on close. It never commits
//!   more than was stored.
//! - On revoke the [`GroupContext`] records the partitions; the pipeline drops
//!   what it had buffered for them. Their new owner reads them again from the
//!   last commit; the sinks' position guard makes that replay harmless.
//!   The pipeline learns of a revoke only between polls, and by then the
//!   partition may be assigned to this member again and already fetched from:
//!   each assignment of a partition bumps its generation, every record is
//!   stamped with its partition's generation when received, and a revoke
//!   drops only the records of the generations it ended.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, TopicPartitionList as Tpl};

use super::{Lineage, PartitionBacklog, PartitionOffset, SourceRecord};

/// A partition taken from this member: the records it received for it up to
/// `generation` are no longer its to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub topic: String,
    pub partition: i32,
    /// The generation of the assignment that the revoke ended.
    pub generation: u64,
}

impl Revoked {
    /// Whether `record` was received under the ended assignment (or before).
    pub fn covers(&self, record: &SourceRecord) -> bool {
        record.lineage.partition == self.partition
            && *record.lineage.topic == *self.topic
            && record.generation <= self.generation
    }
}

/// Rebalance bookkeeping shared between librdkafka's callbacks and the pipeline.
#[derive(Default)]
pub struct GroupContext {
    revoked: Mutex<Vec<Revoked>>,
    /// The generation of each partition's latest assignment.
    generations: Mutex<HashMap<(String, i32), u64>>,
    rebalances: AtomicU64,
    member: String,
}

impl GroupContext {
    /// Books a new assignment of these partitions.
    pub fn assigned(&self, parts: &[(String, i32)]) {
        let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        for p in parts {
            *generations.entry(p.clone()).or_insert(0) += 1;
        }
    }

    /// Books the revoke of these partitions, ending their current generation.
    pub fn revoked(&self, parts: &[(String, i32)]) {
        let generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        let ended = parts.iter().map(|(topic, partition)| Revoked {
            topic: topic.clone(),
            partition: *partition,
            generation: generations.get(&(topic.clone(), *partition)).copied().unwrap_or(0),
        });
        self.revoked.lock().unwrap_or_else(|e| e.into_inner()).extend(ended);
    }

    /// The generation a record of this partition received now belongs to.
    pub fn generation(&self, topic: &str, partition: i32) -> u64 {
        let generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        generations.get(&(topic.to_string(), partition)).copied().unwrap_or(0)
    }

    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<Revoked> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = partitions(tpl);
            tracing::info!(member = %self.member, partitions = ?parts, "partitions revoked");
            self.revoked(&parts);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = partitions(tpl);
                self.assigned(&parts);
                tracing::info!(member = %self.member, partitions = ?parts, "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(member = %self.member, error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

/// Settings for joining a group.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    pub brokers: String,
    pub group_id: String,
    pub client_id: String,
    /// `earliest` for a new group: a read model starts from the beginning.
    pub auto_offset_reset: String,
    pub session_timeout: Duration,
    /// Longest gap between polls before librdkafka leaves the group
    /// (at least the session timeout).
    pub max_poll_interval: Duration,
}

/// Why the consumer could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot create Kafka consumer for group {group}: {source}; check --brokers and the group id")]
    Create { group: String, source: rdkafka::error::KafkaError },
    #[error("cannot subscribe group {group} to {topics:?}: {source}")]
    Subscribe { group: String, topics: Vec<String>, source: rdkafka::error::KafkaError },
}

/// One member of a consumer group.
pub struct ConsumerGroup {
    consumer: StreamConsumer<GroupContext>,
    pub group_id: String,
    seen_rebalances: AtomicU64,
}

impl ConsumerGroup {
    // A large error is fine here: join runs once per group member, and
    // boxing would only hide the variants from callers.
    #[allow(clippy::result_large_err)]
    pub fn join(settings: &GroupSettings, topics: &[String]) -> Result<ConsumerGroup, ConsumerError> {
        let context = GroupContext { member: settings.client_id.clone(), ..Default::default() };
        let consumer: StreamConsumer<GroupContext> = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group_id)
            .set("client.id", &settings.client_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &settings.auto_offset_reset)
            .set("session.timeout.ms", settings.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (settings.session_timeout.as_millis() / 3).max(500).to_string())
            .set(
                "max.poll.interval.ms",
                settings.max_poll_interval.max(settings.session_timeout).as_millis().to_string(),
            )
            .set("topic.metadata.refresh.interval.ms", "10000")
            // Backpressure is by pause/resume; keep librdkafka's own prefetch modest.
            .set("queued.max.messages.kbytes", "16384")
            // When that prefetch queue is full, librdkafka (2.1+) waits
            // fetch.queue.backoff.ms before fetching again: 1 s by default,
            // which capped a backlog at one queue-full (~3,000 5 KB records)
            // per second. Fetch again as soon as the queue drains.
            .set("fetch.queue.backoff.ms", "10")
            .create_with_context(context)
            .map_err(|source| ConsumerError::Create { group: settings.group_id.clone(), source })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|source| ConsumerError::Subscribe {
            group: settings.group_id.clone(),
            topics: topics.to_vec(),
            source,
        })?;
        Ok(ConsumerGroup { consumer, group_id: settings.group_id.clone(), seen_rebalances: AtomicU64::new(0) })
    }

    /// Waits up to `wait` for the next record. `Ok(None)` on timeout; errors
    /// are transient broker/consumer errors to report, not to stop on.
    pub async fn next(&self, wait: Duration) -> Result<Option<SourceRecord>, rdkafka::error::KafkaError> {
        match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => Ok(None),
            Ok(Err(e)) => Err(e),
            Ok(Ok(m)) => Ok(Some(SourceRecord {
                lineage: Lineage { topic: m.topic().into(), partition: m.partition(), offset: m.offset() },
                key: m.key().map(Bytes::copy_from_slice),
                value: m.payload().map(Bytes::copy_from_slice),
                headers: m
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
                    .unwrap_or_default(),
                timestamp_ms: m.timestamp().to_millis(),
                generation: self.consumer.context().generation(m.topic(), m.partition()),
            })),
        }
    }

    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<Revoked> {
        self.consumer.context().take_revoked()
    }

    /// True once per rebalance that happened since the last call.
    pub fn rebalanced(&self) -> bool {
        let now = self.consumer.context().rebalances.load(Ordering::SeqCst);
        self.seen_rebalances.swap(now, Ordering::SeqCst) != now
    }

    /// Marks records before these offsets as durably written. Partitions no
    /// longer assigned are skipped: their new owner will redo them.
    pub fn store(&self, next_offsets: &[PartitionOffset]) {
        let assigned = self.assignment();
        let mut tpl = Tpl::new();
        for o in next_offsets {
            if assigned.iter().any(|(t, p)| *t == o.topic && *p == o.partition) {
                let _ = tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            tracing::warn!(group = %self.group_id, error = %e, "storing offsets failed; the records will be re-read and re-checked");
        }
    }

    /// Commits stored offsets now and waits (used on shutdown).
    pub fn commit_now(&self) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            // Nothing stored since the last commit.
            Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(group = %self.group_id, error = %e, "final commit failed; uncommitted records will be re-read and re-checked")
            }
        }
    }

    /// Currently assigned partitions.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.consumer.assignment().map(|t| partitions(&t)).unwrap_or_default()
    }

    /// Stops fetching from every assigned partition (backpressure).
    pub fn pause_all(&self) {
        if let Ok(tpl) = self.consumer.assignment() {
            let _ = self.consumer.pause(&tpl);
        }
    }

    /// Resumes fetching.
    pub fn resume_all(&self) {
        if let Ok(tpl) = self.consumer.assignment() {
            let _ = self.consumer.resume(&tpl);
        }
    }

    /// Records behind the log end per assigned partition: end − position.
    /// Blocking (asks the broker for watermarks): call from a blocking thread.
    pub fn lag(&self, timeout: Duration) -> Vec<PartitionBacklog> {
        let Ok(positions) = self.consumer.position() else { return vec![] };
        positions
            .elements()
            .iter()
            .filter_map(|e| {
                let (low, end) = self.consumer.fetch_watermarks(e.topic(), e.partition(), timeout).ok()?;
                // Nothing fetched yet: everything from the log start is behind.
                let pos = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => low,
                };
                Some(PartitionBacklog {
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                    records: (end - pos).max(0),
                })
            })
            .collect()
    }

    /// Leaves the group cleanly.
    pub fn close(&self) {
        self.consumer.unsubscribe();
    }
}

/// One partition's progress for a group: committed offset vs. end of log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Next offset the group will read (0 when it has committed nothing).
    pub committed: i64,
    /// High watermark: the offset the next appended record will get.
    pub end: i64,
}

impl PartitionLag {
    pub fn lag(&self) -> i64 {
        (self.end - self.committed).max(0)
    }
}

/// Reads a group's committed offsets and the log ends of `topics`. Blocking:
/// call it from a blocking thread.
pub fn group_lag(
    brokers: &str,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<PartitionLag>, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create()?;
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), timeout)?;
        let parts = md.topics().first().map(|t| t.partitions().len() as i32).unwrap_or(0);
        let mut tpl = Tpl::new();
        for p in 0..parts {
            tpl.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(tpl, timeout)?;
        for p in 0..parts {
            let (_, end) = consumer.fetch_watermarks(topic, p, timeout)?;
            let committed = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            out.push(PartitionLag { topic: topic.clone(), partition: p, committed, end });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::batch::{Action, Batch, Item};

    /// A record as `ConsumerGroup::next` builds it: stamped with the
    /// generation its partition has when it is received.
    fn received(ctx: &GroupContext, offset: i64) -> Item {
        let record = SourceRecord {
            lineage: Lineage { topic: "t".into(), partition: 0, offset },
            key: None,
            value: Some(Bytes::from_static(&[1])),
            headers: vec![],
            timestamp_ms: None,
            generation: ctx.generation("t", 0),
        };
        Item { record, action: Action::Skip("test") }
    }

    #[test]
    fn a_partition_revoked_and_assigned_again_within_one_poll_keeps_what_the_new_assignment_fetched() {
        let ctx = GroupContext::default();
        let part = [("t".to_string(), 0)];
        let mut batch = Batch::default();
        ctx.assigned(&part);
        batch.push(received(&ctx, 10));
        // Both callbacks run inside one poll; the pipeline sees the revoke
        // only afterwards, once the new assignment has already delivered.
        ctx.revoked(&part);
        ctx.assigned(&part);
        batch.push(received(&ctx, 10));
        batch.push(received(&ctx, 11));
        assert_eq!(batch.drop_partitions(&ctx.take_revoked()), 1, "only the old assignment's record");
        let kept: Vec<(i64, u64)> =
            batch.items.iter().map(|i| (i.record.lineage.offset, i.record.generation)).collect();
        assert_eq!(kept, vec![(10, 2), (11, 2)]);
        assert!(ctx.take_revoked().is_empty(), "a revoke is handed over once");
    }
}
