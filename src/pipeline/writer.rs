//! Writing one batch to completion, in small steps: sort the batch's items
//! into writes and dead letters, keep the newest write per key, apply the
//! writes (retrying what is transient, for as long as it lasts), then send
//! the dead letters. Only then may the batch's offsets be stored.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::batch::{Action, Batch, newest_per_key};
use super::dead_letter::{DeadLetters, Reason};
use super::offsets::WriteResult;
use super::{ErrorTolerance, PipelineError, retry};
use crate::ops::Health;
use crate::sink::{Outcome, Sink, Write};
use crate::source::{PartitionOffset, SourceRecord};

/// Writes one batch to completion.
pub struct Writer<S: Sink> {
    pub sink: Arc<S>,
    pub dead_letters: DeadLetters,
    pub health: Health,
    pub tolerance: ErrorTolerance,
}

/// A write still to apply, and the index of the record it came from.
struct Pending {
    write: Write,
    record: usize,
}

/// A record that goes to the dead-letter queue, by index, and why.
struct DeadLetter {
    record: usize,
    reason: Reason,
}

/// A batch taken apart: its records (kept for dead letters and latency),
/// what to write, and what is already known to be a dead letter.
struct Sorted {
    records: Vec<SourceRecord>,
    writes: Vec<Pending>,
    dead: Vec<DeadLetter>,
}

/// `projector_events_total` counts gathered per (topic, op, outcome) and
/// added once per call: a labelled counter lookup per event costs more than
/// the event.
#[derive(Default)]
struct EventTally(Vec<((String, &'static str, &'static str), u64)>);

impl EventTally {
    fn add(&mut self, topic: &str, op: &'static str, outcome: &'static str) {
        match self.0.iter_mut().find(|((t, o, l), _)| t == topic && *o == op && *l == outcome) {
            Some((_, n)) => *n += 1,
            None => self.0.push(((topic.to_string(), op, outcome), 1)),
        }
    }

    fn count(self, sink: &'static str) {
        for ((topic, op, outcome), n) in self.0 {
            metrics::counter!("projector_events_total", "sink" => sink, "topic" => topic, "op" => op, "outcome" => outcome).increment(n);
        }
    }
}

impl<S: Sink> Writer<S> {
    pub async fn write(self, batch: Batch) -> WriteResult {
        let started = Instant::now();
        let offsets = batch.next_offsets();
        let Sorted { records, writes, mut dead } = self.sort(batch);
        let pending = self.collapse(writes);
        let freshest = self.apply(pending, &offsets, &records, &mut dead).await;
        self.send_dead_letters(dead, &records).await?;
        let name = self.sink.name();
        if let Some(ts) = freshest {
            metrics::gauge!("projector_freshness_seconds", "sink" => name).set((now_ms() - ts).max(0) as f64 / 1000.0);
        }
        metrics::histogram!("projector_batch_seconds", "sink" => name).record(started.elapsed().as_secs_f64());
        Ok(offsets)
    }

    /// Splits the batch's items into writes and dead letters; skips are
    /// counted and dropped.
    fn sort(&self, batch: Batch) -> Sorted {
        let mut sorted =
            Sorted { records: Vec::with_capacity(batch.len()), writes: Vec::with_capacity(batch.len()), dead: vec![] };
        let mut skipped = EventTally::default();
        for item in batch.items {
            let record = sorted.records.len();
            match item.action {
                Action::Write(write) => sorted.writes.push(Pending { write, record }),
                Action::Skip(why) => {
                    skipped.add(&item.record.lineage.topic, "-", "skipped");
                    tracing::trace!(record = %item.record.lineage, why, "skipped");
                }
                Action::DeadLetter { stage, kind, reason } => {
                    sorted.dead.push(DeadLetter { record, reason: Reason { stage, kind, message: reason } })
                }
            }
            sorted.records.push(item.record);
        }
        skipped.count(self.sink.name());
        sorted
    }

    /// Within a batch only the newest write per key matters.
    fn collapse(&self, writes: Vec<Pending>) -> Vec<Pending> {
        let refs: Vec<&Write> = writes.iter().map(|p| &p.write).collect();
        let winners = newest_per_key(&refs);
        let superseded = writes.len() - winners.len();
        if superseded > 0 {
            metrics::counter!("projector_events_total", "sink" => self.sink.name(), "topic" => "*", "op" => "-", "outcome" => "superseded").increment(superseded as u64);
        }
        let mut winners = winners.into_iter().peekable();
        writes.into_iter().enumerate().filter(|(pos, _)| winners.next_if_eq(pos).is_some()).map(|(_, p)| p).collect()
    }

    /// Applies the writes until each is applied, stale or refused (then it
    /// joins `dead`). Returns the newest source timestamp applied.
    async fn apply(
        &self,
        mut pending: Vec<Pending>,
        offsets: &[PartitionOffset],
        records: &[SourceRecord],
        dead: &mut Vec<DeadLetter>,
    ) -> Option<i64> {
        let name = self.sink.name();
        let mut freshest: Option<i64> = None;
        let mut delays = retry::delays();
        while !pending.is_empty() {
            let call = Instant::now();
            let writes: Vec<Write> = pending.iter().map(|p| p.write.clone()).collect();
            let outcomes = match self.sink.write(&writes, offsets).await {
                Ok(o) => o,
                Err(e) => {
                    self.health.sink_down(name, &e.to_string());
                    let wait = delays.next().unwrap_or(Duration::from_secs(30));
                    metrics::counter!("projector_sink_retries_total", "sink" => name).increment(pending.len() as u64);
                    tracing::warn!(sink = name, error = %e, items = pending.len(), retry_in = ?wait, "sink write failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            metrics::histogram!("projector_sink_request_seconds", "sink" => name).record(call.elapsed().as_secs_f64());
            self.health.sink_up(name);
            let mut again = Vec::new();
            let mut last_retry_reason = String::new();
            let mut tally = EventTally::default();
            for (p, outcome) in pending.into_iter().zip(outcomes) {
                tally.add(&p.write.doc.lineage.topic, p.write.doc.op.as_str(), label(&outcome));
                match outcome {
                    Outcome::Applied => {
                        freshest = freshest.max(p.write.doc.source_ts_ms);
                        if let Some(ts) = records[p.record].timestamp_ms {
                            metrics::histogram!("projector_append_to_ack_seconds", "sink" => name)
                                .record((now_ms() - ts).max(0) as f64 / 1000.0);
                        }
                    }
                    Outcome::Stale => {
                        tracing::debug!(record = %p.write.doc.lineage, id = %p.write.doc.id, "stale event ignored")
                    }
                    Outcome::Retry(reason) => {
                        last_retry_reason = reason;
                        again.push(p);
                    }
                    Outcome::Rejected(reason) => dead.push(DeadLetter {
                        record: p.record,
                        reason: Reason {
                            stage: "sink",
                            kind: "rejected",
                            message: format!("{}: document {}: {reason}", records[p.record].lineage, p.write.doc.id),
                        },
                    }),
                }
            }
            tally.count(name);
            pending = again;
            if !pending.is_empty() {
                let wait = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(sink = name, items = pending.len(), reason = %last_retry_reason, retry_in = ?wait, "retrying items");
                metrics::counter!("projector_sink_retries_total", "sink" => name).increment(pending.len() as u64);
                tokio::time::sleep(wait).await;
            }
        }
        freshest
    }

    /// Sends the dead letters, or stops the pipeline at the first one when
    /// errors are not tolerated.
    async fn send_dead_letters(&self, dead: Vec<DeadLetter>, records: &[SourceRecord]) -> Result<(), PipelineError> {
        let name = self.sink.name();
        for d in dead {
            if self.tolerance == ErrorTolerance::None {
                return Err(PipelineError::Intolerable {
                    sink: name,
                    lineage: records[d.record].lineage.clone(),
                    reason: d.reason.message,
                });
            }
            self.dead_letters.send(&records[d.record], name, &d.reason).await;
        }
        Ok(())
    }
}

fn label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Applied => "applied",
        Outcome::Stale => "stale",
        Outcome::Retry(_) => "retry",
        Outcome::Rejected(_) => "rejected",
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}
