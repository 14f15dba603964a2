//! Rebuilds from Kafka (`--from kafka`): a table's topic replayed from its
//! earliest offset into one physical target, for tables the staging mirror
//! does not hold, and for the mirror itself. The replay is the live
//! pipeline ([`crate::pipeline::Pipeline`]: decode, mapping, writer, ordered
//! offsets) run by a consumer group of its own, with every write pinned to
//! the target being built ([`Versions::pinned`]). So its writes are
//! position-guarded like any other, and nothing old overwrites what the live
//! stream writes into the same target meanwhile.
//!
//! The group's committed offsets are the checkpoint: a replay killed with
//! `kill -9` and started again goes on from there, and processes running the
//! same replay share its partitions as members of one group. It is done when
//! the group has committed, on every partition, the log end it found when it
//! started; what arrives after that is the live stream's to write.

use std::sync::Arc;
use std::time::Duration;

use super::progress::Progress;
use super::{Copied, RebuildError};
use crate::decode::DecodeOptions;
use crate::mapping::ReadModel;
use crate::ops::Health;
use crate::pipeline::batch::BatchLimits;
use crate::pipeline::dead_letter::DeadLetters;
use crate::pipeline::versions::Versions;
use crate::pipeline::{ErrorTolerance, Patience, Pipeline, Shutdown};
use crate::sink::Sink;
use crate::source::consumer::{ConsumerGroup, GroupSettings, PartitionLag, group_lag};

/// How often the group's committed offsets are read for progress and the end.
const POLL: Duration = Duration::from_secs(1);

/// One process's part in replaying a topic into a target.
pub struct Replay<S: Sink> {
    pub sink: Arc<S>,
    pub model: Arc<ReadModel>,
    /// The topic of the table being rebuilt.
    pub topic: String,
    /// The physical target to fill (made by `Sink::create_version` if absent).
    pub target: String,
    /// Names the replay; its consumer group is derived from it.
    pub rebuild_id: String,
    pub brokers: String,
    pub decode: DecodeOptions,
    pub dead_letters: DeadLetters,
    pub health: Health,
    pub tolerance: ErrorTolerance,
    pub limits: BatchLimits,
}

/// The consumer group of a replay: its committed offsets are the replay's
/// checkpoint, so the same id resumes and two processes share the work.
pub fn group_of(read_model: &str, rebuild_id: &str) -> String {
    format!("projector.{read_model}.rebuild.{rebuild_id}")
}

impl<S: Sink> Replay<S> {
    /// Replays the topic until the group has committed the log end found at
    /// start on every partition. Resumes from the group's committed offsets.
    pub async fn replay(&self) -> Result<Copied, RebuildError> {
        let id = self.rebuild_id.as_str();
        let table = self
            .model
            .table(&self.topic)
            .ok_or_else(|| RebuildError::NoTable { rebuild: id.into(), topic: self.topic.clone() })?;
        let logical = self.sink.target(table).ok_or_else(|| RebuildError::Mismatch {
            rebuild: id.into(),
            detail: format!("the read model's table {} has no {} section", self.topic, self.sink.name()),
        })?;
        super::ready_to_fill(&*self.sink, table, &self.target, id).await?;
        let group_id = group_of(&self.model.name, id);
        let start = self.lag(&group_id).await?;
        let total: u64 = start.iter().map(|p| p.lag() as u64).sum();
        tracing::info!(rebuild = id, group = %group_id, topic = %self.topic, records = total, target = %self.target, "replaying the topic from its checkpoint");
        let settings = GroupSettings {
            brokers: self.brokers.clone(),
            group_id: group_id.clone(),
            client_id: format!("projector-{}-rebuild-{}", self.model.name, std::process::id()),
            auto_offset_reset: "earliest".into(),
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
        };
        let group = Arc::new(
            ConsumerGroup::join(&settings, std::slice::from_ref(&self.topic))
                .map_err(|e| RebuildError::Kafka { rebuild: id.into(), message: e.to_string() })?,
        );
        let pipeline = Pipeline {
            sink: self.sink.clone(),
            model: self.model.clone(),
            group,
            dead_letters: self.dead_letters.clone(),
            health: self.health.clone(),
            limits: self.limits.clone(),
            max_buffer_bytes: 64 * 1024 * 1024,
            decode: self.decode.clone(),
            tolerance: self.tolerance,
            shutdown_grace: Duration::from_secs(30),
            stuck_after: Duration::from_secs(60),
            versions: Versions::pinned(self.sink.name(), logical, &self.target),
            refresh: Duration::from_secs(3600),
            // A one-shot job: a misconfigured sink is reported, not waited for.
            patience: Patience::UntilMisconfigured,
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut running = tokio::spawn(pipeline.run(Shutdown::new(stopped)));
        let mut progress = Progress::new(id, total);
        let mut done = 0;
        let finished = loop {
            tokio::select! {
                ended = &mut running => break Some(ended),
                _ = tokio::time::sleep(POLL) => {}
            }
            let now = self.lag(&group_id).await?;
            let replayed = replayed(&start, &now);
            progress.copied(replayed.saturating_sub(done), replayed, total);
            done = replayed;
            if reached(&start, &now) {
                break None;
            }
        };
        let ended = match finished {
            Some(ended) => ended,
            None => {
                let _ = stop.send(true);
                running.await
            }
        };
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(RebuildError::Write { rebuild: id.into(), source }),
            Err(panic) => {
                return Err(RebuildError::Kafka {
                    rebuild: id.into(),
                    message: format!("replay task failed: {panic}"),
                });
            }
        }
        progress.finish();
        tracing::info!(rebuild = id, records = done, total, "replay finished");
        Ok(Copied { rows: done, total })
    }

    async fn lag(&self, group: &str) -> Result<Vec<PartitionLag>, RebuildError> {
        let (brokers, group, topics) = (self.brokers.clone(), group.to_string(), vec![self.topic.clone()]);
        tokio::task::spawn_blocking(move || group_lag(&brokers, &group, &topics, Duration::from_secs(10)))
            .await
            .map_err(|e| RebuildError::Kafka { rebuild: self.rebuild_id.clone(), message: e.to_string() })?
            .map_err(|e| RebuildError::Kafka {
                rebuild: self.rebuild_id.clone(),
                message: format!("reading the replay's offsets of {}: {e}", self.topic),
            })
    }
}

/// Whether every partition's committed offset has reached its end at start.
fn reached(start: &[PartitionLag], now: &[PartitionLag]) -> bool {
    start.iter().all(|s| {
        s.lag() == 0 || now.iter().any(|n| n.topic == s.topic && n.partition == s.partition && n.committed >= s.end)
    })
}

/// Records committed since start, counting each partition up to its end at start.
fn replayed(start: &[PartitionLag], now: &[PartitionLag]) -> u64 {
    start
        .iter()
        .map(|s| {
            let committed = now
                .iter()
                .find(|n| n.topic == s.topic && n.partition == s.partition)
                .map_or(s.committed, |n| n.committed);
            (committed.min(s.end) - s.committed).max(0) as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: i32, committed: i64, end: i64) -> PartitionLag {
        PartitionLag { topic: "t".into(), partition, committed, end }
    }

    #[test]
    fn a_replay_ends_when_every_partition_reached_its_end_at_start() {
        let start = [part(0, 0, 10), part(1, 4, 4), part(2, 3, 8)];
        assert!(!reached(&start, &[part(0, 10, 12), part(1, 4, 4), part(2, 7, 9)]));
        assert!(reached(&start, &[part(0, 10, 12), part(1, 4, 6), part(2, 8, 9)]));
        // Records appended since start are the live stream's: not counted.
        assert_eq!(replayed(&start, &[part(0, 12, 12), part(1, 6, 6), part(2, 5, 9)]), 10 + 2);
    }
}
