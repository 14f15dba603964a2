//! The ordered offset store: the one owner of "what may be committed".
//!
//! Batches are written concurrently (up to the sink's `max_in_flight`) but
//! settled strictly in arrival order: the oldest batch in flight is awaited,
//! and only then are its next offsets stored. So what is stored is always a
//! fully written prefix of each partition, as in rdkafka's
//! `examples/at_least_once.rs` (store after the downstream write succeeded)
//! and Vector's `OrderedFinalizer`.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::PipelineError;
use crate::source::PartitionOffset;
use crate::source::consumer::ConsumerGroup;

/// What writing one batch ends with: the offsets it makes committable.
pub type WriteResult = Result<Vec<PartitionOffset>, PipelineError>;

/// Batches in flight, oldest first, and the group their offsets go to.
pub struct OrderedOffsets {
    group: Arc<ConsumerGroup>,
    sink: &'static str,
    batches: VecDeque<JoinHandle<WriteResult>>,
}

impl OrderedOffsets {
    pub fn new(group: Arc<ConsumerGroup>, sink: &'static str) -> OrderedOffsets {
        OrderedOffsets { group, sink, batches: VecDeque::new() }
    }

    /// A batch whose write has started; it settles after every earlier one.
    pub fn push(&mut self, write: JoinHandle<WriteResult>) {
        self.batches.push_back(write);
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Waits for the oldest batch and stores its offsets. Pending for ever
    /// when nothing is in flight. Cancel-safe: the batch leaves the queue
    /// only once it is done.
    pub async fn settle_oldest(&mut self) -> Result<(), PipelineError> {
        let Some(oldest) = self.batches.front_mut() else { return std::future::pending().await };
        let done = oldest.await;
        self.batches.pop_front();
        let offsets = done.map_err(|e| PipelineError::Writer(e.to_string(), self.sink))??;
        self.group.store(&offsets);
        Ok(())
    }

    /// Settles every batch, oldest first, until `deadline`; `Ok(true)` when
    /// all did. A batch not done by then is abandoned uncommitted (the next
    /// run redoes it), and so is every batch after it or after a failed one.
    pub async fn settle_all_by(&mut self, deadline: tokio::time::Instant) -> Result<bool, PipelineError> {
        let mut result = Ok(true);
        while !self.batches.is_empty() {
            match tokio::time::timeout_at(deadline, self.settle_oldest()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    result = Err(e);
                    break;
                }
                Err(_) => {
                    result = Ok(false);
                    tracing::warn!(
                        sink = self.sink,
                        "shutdown grace period over; abandoning the unwritten batch (it stays uncommitted and is redone on restart)"
                    );
                    break;
                }
            }
        }
        for task in self.batches.drain(..) {
            task.abort();
        }
        result
    }
}
