//! Step 4 of the path: the loop that ties it together for one sink: consume
//! → decode → map → batch → write → store offsets. Each sink runs its own pipeline with
//! its own consumer group, so each moves at its own pace: a slow or down sink
//! holds back only its own offsets.
//!
//! Up to [`Sink::max_in_flight`] batches are written at once (one for sinks
//! whose concurrent writes would contend) while the next one is being
//! collected. Offsets are stored only after every item of a batch, and of
//! every batch before it, is settled: applied, found stale, or durably
//! dead-lettered. Overlapping batches stay correct because every sink write
//! is guarded by the source position. Transient failures are retried with
//! backoff for as long as they last, with the sink reported down meanwhile.
//! When the buffer is full, the consumer pauses its partitions (it keeps
//! polling, so it stays in the group) instead of letting writes time out.

//!
//! The steps, one file each: [`batch`] (collecting records), [`writer`]
//! (writing one batch), [`isolate`] (one target's share of it, splitting a
//! refused call), [`fields`] (typing new fields), [`retry`] (retry or
//! dead-letter, and backoff), [`dead_letter`] (the DLQ), [`offsets`]
//! (storing offsets in order), [`versions`] (the physical targets of each
//! logical one), [`shutdown`].

pub mod batch;
pub mod dead_letter;
pub mod fields;
pub mod isolate;
pub mod offsets;
pub mod retry;
pub mod retype;
pub mod shape;
pub mod shutdown;
#[cfg(test)]
mod testing;
pub mod versions;
pub mod writer;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use batch::{Action, Batch, BatchLimits, Item};
use dead_letter::DeadLetters;
use fields::KnownFields;
use offsets::{OrderedOffsets, WriteResult};
pub use shutdown::Shutdown;
use versions::Versions;
use writer::Writer;

use crate::decode::{DecodeOptions, Decoded, decode};
use crate::mapping::ReadModel;
use crate::ops::Health;
use crate::sink::{Sink, SinkError, Write};
use crate::source::consumer::ConsumerGroup;
use crate::source::{Lineage, SourceRecord};

/// What to do with a record that cannot be processed (Kafka Connect's
/// `errors.tolerance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ErrorTolerance {
    /// Send it to the dead-letter queue and carry on.
    All,
    /// Stop the pipeline with an error naming the record; nothing after it
    /// is committed.
    None,
}

/// How long a writer keeps retrying what the sink (not the data) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patience {
    /// For as long as it lasts, the sink reported down meanwhile: the live
    /// path, whose operator fixes a setting or a grant without a restart.
    Forever,
    /// The same, except that a configuration or permission error met on
    /// five attempts in a row (a few seconds) stops the batch: a one-shot
    /// job (a rebuild) reports it to the person who started it instead of
    /// waiting for ever. Nothing of the batch is counted done, so a re-run
    /// resumes before it.
    UntilMisconfigured,
}

/// A pipeline stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "{source}; this is the sink's configuration or permissions, not the data: fix it, then run the same command again (it resumes from its last checkpoint)"
    )]
    Misconfigured { source: SinkError },
    #[error(
        "{sink}: stopped at {lineage} because errors.tolerance is none: {reason}. Fix the record or mapping, or run with --errors-tolerance all to dead-letter it"
    )]
    Intolerable { sink: &'static str, lineage: Lineage, reason: String },
    #[error("{sink}: writer task failed: {0}", sink = .1)]
    Writer(String, &'static str),
}

/// A running fetch of the Avro schemas a held record needs.
type SchemaFetch = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Everything one sink's pipeline needs.
pub struct Pipeline<S: Sink> {
    pub sink: Arc<S>,
    pub model: Arc<ReadModel>,
    pub group: Arc<ConsumerGroup>,
    pub dead_letters: DeadLetters,
    pub health: Health,
    pub limits: BatchLimits,
    /// Pause consumption when this many bytes are buffered.
    pub max_buffer_bytes: usize,
    pub decode: DecodeOptions,
    pub tolerance: ErrorTolerance,
    /// How long shutdown waits for an in-flight batch before abandoning it.
    pub shutdown_grace: Duration,
    /// How long one record (or batch) may be retried before its sink is
    /// reported down naming it.
    pub stuck_after: Duration,
    /// The versions of the sink's targets, from the catalog.
    pub versions: Versions,
    /// How often the catalog is read again for new versions.
    pub refresh: Duration,
    /// Whether a configuration error stops the pipeline (a replay) or is
    /// retried until fixed (the live path).
    pub patience: Patience,
}

/// How long a full buffer may stop consumption before partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(2);

impl<S: Sink> Pipeline<S> {
    /// Runs until `shutdown` turns true, then flushes and commits.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), PipelineError> {
        let name = self.sink.name();
        let fields = KnownFields::default();
        self.health.register(name);
        if !self.prepare(&mut shutdown).await {
            self.group.close();
            return Ok(());
        }
        let lag_task = tokio::spawn(report_lag(self.group.clone(), name, shutdown.clone()));
        let refresh_task = tokio::spawn(self.versions.clone().keep_fresh(
            self.sink.clone(),
            self.model.clone(),
            self.health.clone(),
            self.refresh,
            shutdown.clone(),
        ));
        let mut batch = Batch::default();
        // Batches being written, oldest first. Offsets are stored strictly in
        // this order, so what is committed is always fully written.
        let mut in_flight = OrderedOffsets::new(self.group.clone(), name);
        let max_in_flight = self.sink.max_in_flight().max(1);
        let mut paused = false;
        let mut full_since: Option<tokio::time::Instant> = None;
        // Records whose Avro schemas are being fetched, in arrival order, and
        // the fetch for the first of them. The loop goes on polling (and
        // pauses, as for a full buffer) so a long registry outage never
        // costs the group membership.
        let mut held: VecDeque<SourceRecord> = VecDeque::new();
        let mut schema_fetch: Option<SchemaFetch> = None;
        loop {
            let revoked = self.group.take_revoked();
            if !revoked.is_empty() {
                let dropped = batch.drop_partitions(&revoked);
                held.retain(|r| !revoked.iter().any(|rev| rev.covers(r)));
                tracing::info!(sink = name, dropped, "dropped buffered records of revoked partitions");
            }
            if self.group.rebalanced() && paused {
                self.group.pause_all();
            }
            if in_flight.len() < max_in_flight && batch.is_ready(&self.limits) {
                in_flight.push(self.spawn_write(batch.take(), &fields));
            }
            // Backpressure. A full buffer first just stops taking records:
            // the write in flight usually makes room within milliseconds,
            // and librdkafka's own prefetch queue (bounded) holds what
            // arrives meanwhile. Only if it stays full (the sink is slow or
            // down) are the partitions paused, so the consumer keeps polling
            // and stays in its group. Pausing at once cost a fetch restart
            // per batch and capped throughput at a few thousand events/s.
            // Full: a whole batch is waiting for a free writer (or the byte
            // bound is hit); taking more records would only add memory.
            let full =
                batch.bytes() >= self.max_buffer_bytes || batch.len() >= self.limits.max_records || !held.is_empty();
            full_since = match (full, full_since) {
                (false, _) => None,
                (true, since) => Some(since.unwrap_or_else(tokio::time::Instant::now)),
            };
            let pause_at = full_since.map(|t| t + PAUSE_AFTER);
            let should_pause = pause_at.is_some_and(|t| t <= tokio::time::Instant::now());
            if should_pause != paused {
                if should_pause {
                    self.group.pause_all()
                } else {
                    self.group.resume_all()
                }
                paused = should_pause;
                tracing::debug!(sink = name, paused, "backpressure");
            }
            let hold = full && !paused;
            let linger = batch.deadline(&self.limits).filter(|_| in_flight.len() < max_in_flight);
            tokio::select! {
                _ = shutdown.recv() => break,
                settled = in_flight.settle_oldest(), if !in_flight.is_empty() => settled?,
                _ = tokio::time::sleep_until(linger.map(tokio::time::Instant::from_std).unwrap_or_else(tokio::time::Instant::now)), if linger.is_some() => {}
                _ = tokio::time::sleep_until(pause_at.unwrap_or_else(tokio::time::Instant::now)), if hold => {}
                _ = async { schema_fetch.as_mut().expect("guarded").await }, if schema_fetch.is_some() => {
                    schema_fetch = None;
                    self.release_held(&mut held, &mut batch, &mut schema_fetch);
                }
                next = self.group.next(Duration::from_millis(200)), if !hold => match next {
                    Ok(Some(record)) => {
                        held.push_back(record);
                        if schema_fetch.is_none() {
                            self.release_held(&mut held, &mut batch, &mut schema_fetch);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        metrics::counter!("projector_consumer_errors_total", "sink" => name).increment(1);
                        tracing::warn!(sink = name, group = %self.group.group_id, error = %e, "Kafka consumer error; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
            }
        }
        lag_task.abort();
        refresh_task.abort();
        self.finish(in_flight, batch, &fields).await
    }

    /// Connects the sink and establishes its targets' versions, retrying
    /// while the sink or the catalog is down.
    async fn prepare(&self, shutdown: &mut Shutdown) -> bool {
        let name = self.sink.name();
        let mut delays = retry::delays();
        loop {
            let ready = match self.sink.prepare(&self.model).await {
                Ok(()) => self.versions.establish(&*self.sink, &self.model).await,
                Err(e) => Err(e),
            };
            match ready {
                Ok(()) => {
                    self.health.sink_up(name);
                    return true;
                }
                Err(e) => {
                    self.health.sink_down(name, &e.to_string());
                    let wait = delays.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(sink = name, error = %e, retry_in = ?wait, "sink not ready; retrying");
                    tokio::select! {
                        _ = shutdown.recv() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Shutdown: stop fetching, finish the batches in flight and then the
    /// buffered one, store and commit. A batch that cannot be written within
    /// the grace period is abandoned uncommitted; the next run redoes it.
    async fn finish(
        self,
        mut in_flight: OrderedOffsets,
        batch: Batch,
        fields: &KnownFields,
    ) -> Result<(), PipelineError> {
        let name = self.sink.name();
        self.group.pause_all();
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        let mut result = in_flight.settle_all_by(deadline).await;
        // The buffered batch goes last, and only if everything before it settled.
        if matches!(result, Ok(true)) && !batch.is_empty() {
            in_flight.push(self.spawn_write(batch, fields));
            result = in_flight.settle_all_by(deadline).await;
        }
        self.group.commit_now();
        self.group.close();
        self.versions.leave().await;
        tracing::info!(sink = name, "pipeline stopped; offsets committed");
        result.map(|_| ())
    }

    /// Moves held records, oldest first, into the batch until one names an
    /// Avro schema that is not cached yet; for that one a fetch starts (the
    /// decode itself is synchronous and reads only the cache).
    fn release_held(
        &self,
        held: &mut VecDeque<SourceRecord>,
        batch: &mut Batch,
        schema_fetch: &mut Option<SchemaFetch>,
    ) {
        while let Some(record) = held.front() {
            if let Some(registry) = &self.decode.registry {
                let wanted = registry.wanted(record);
                if !wanted.is_empty() {
                    let (registry, lineage, health) = (registry.clone(), record.lineage.clone(), self.health.clone());
                    *schema_fetch =
                        Some(Box::pin(async move { registry.fetch_wanted(&wanted, &lineage, &health).await }));
                    return;
                }
            }
            let record = held.pop_front().expect("front exists");
            batch.push(self.item(record));
        }
    }

    /// Decodes and maps one record into what the sink must do with it.
    fn item(&self, record: SourceRecord) -> Item {
        let mut decoded = decode(&record, &self.decode);
        if let (Err(crate::decode::DecodeError::NoSchema { gap, .. }), Some(history)) = (&decoded, &self.decode.history)
            && gap.catch_up_may_help()
        {
            // The table's CREATE/ALTER may be newer than what we read: catch up once.
            match tokio::task::block_in_place(|| history.catch_up(Duration::from_secs(30))) {
                Ok(n) => tracing::info!(applied = n, topic = history.topic(), "schema history refreshed"),
                Err(e) => tracing::warn!(error = %e, "schema history refresh failed"),
            }
            decoded = decode(&record, &self.decode);
        }
        let action = match decoded {
            Ok(Decoded::Change(event)) => {
                let table = self.model.table(&event.lineage.topic);
                match table.and_then(|t| Some((t, self.sink.target(t)?))) {
                    Some((table, target)) => match table.documents(event) {
                        Ok((mut doc, retired)) => {
                            let excluded = self.sink.excluded(table);
                            if let Some(body) = doc.body.as_mut().filter(|_| !excluded.is_empty()) {
                                body.columns.retain(|(n, _)| !excluded.iter().any(|e| e == n));
                            }
                            let target: Arc<str> = Arc::from(target);
                            match retired {
                                Some(old) => Action::Moved {
                                    retired: Box::new(Write { target: target.clone(), doc: old }),
                                    write: Write { target, doc },
                                },
                                None => Action::Write(Write { target, doc }),
                            }
                        }
                        Err(e) => Action::DeadLetter { stage: "mapping", kind: e.kind(), reason: e.to_string() },
                    },
                    None => Action::Skip("table not written by this sink"),
                }
            }
            Ok(Decoded::Tombstone) => self.compaction_delete(&record),
            Ok(Decoded::NotAChange(what)) => Action::Skip(what),
            Err(e) => Action::DeadLetter { stage: "decode", kind: e.kind(), reason: e.to_string() },
        };
        Item { record, action }
    }

    /// A tombstone becomes a compaction delete (see
    /// [`crate::mapping::TableMapping::compaction_delete`]), or a counted skip
    /// when the read model's id cannot be formed from the Kafka key alone.
    fn compaction_delete(&self, record: &SourceRecord) -> Action {
        let lineage = &record.lineage;
        let Some((table, target)) = self.model.table(&lineage.topic).and_then(|t| Some((t, self.sink.target(t)?)))
        else {
            return Action::Skip("table not written by this sink");
        };
        let key = match crate::decode::tombstone_key(record, &self.decode) {
            Ok(key) => key,
            Err(e) => return Action::DeadLetter { stage: "decode", kind: e.kind(), reason: e.to_string() },
        };
        match table.compaction_delete(lineage, key) {
            Ok(Some(doc)) => Action::Write(Write { target: Arc::from(target), doc }),
            Ok(None) => Action::Skip(
                "tombstone: the read model's `key:` names columns the Kafka key lacks, so its document id cannot be formed",
            ),
            Err(e) => Action::DeadLetter { stage: "mapping", kind: e.kind(), reason: e.to_string() },
        }
    }

    fn spawn_write(&self, batch: Batch, fields: &KnownFields) -> JoinHandle<WriteResult> {
        let writer = Writer {
            sink: self.sink.clone(),
            model: self.model.clone(),
            fields: fields.clone(),
            dead_letters: self.dead_letters.clone(),
            health: self.health.clone(),
            tolerance: self.tolerance,
            stuck_after: self.stuck_after,
            versions: self.versions.clone(),
            patience: self.patience,
        };
        tokio::spawn(writer.write(batch))
    }
}

/// Publishes `projector_consumer_lag{sink,topic,partition}` every 10 s.
async fn report_lag(group: Arc<ConsumerGroup>, sink: &'static str, mut shutdown: Shutdown) {
    loop {
        let g = group.clone();
        if let Ok(lags) = tokio::task::spawn_blocking(move || g.lag(Duration::from_secs(2))).await {
            for b in lags {
                metrics::gauge!("projector_consumer_lag", "sink" => sink, "topic" => b.topic, "partition" => b.partition.to_string()).set(b.records as f64);
            }
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}
