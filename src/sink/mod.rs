//! Step 5 of the path: sinks. Every sink shares one contract: given a batch
//! of [`Write`]s (already collapsed to one per key by the pipeline), apply
//! the newer ones and report an [`Outcome`] for each. Batching, retries,
//! dead letters and offset commits are the [`crate::pipeline`]'s job, the
//! same for all.

pub mod bigquery;
pub mod elasticsearch;
pub mod postgres;

use std::future::Future;
use std::sync::Arc;

use crate::mapping::{Document, ReadModel, TableMapping};
use crate::source::PartitionOffset;

/// One document to apply to one target (index or table) of a sink.
#[derive(Clone, Debug)]
pub struct Write {
    /// The sink-specific target: an Elasticsearch alias, a table name.
    pub target: Arc<str>,
    pub doc: Document,
}

/// What happened to one write.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The sink now holds this write's state.
    Applied,
    /// The sink already held the same or a newer position; nothing changed.
    Stale,
    /// A transient failure (overload, conflict, unavailable): try again.
    Retry(String),
    /// The sink refused this write for good (mapping conflict, bad value):
    /// it goes to the dead-letter queue.
    Rejected(String),
}

/// A failure of the whole request (connection refused, timeout, 5xx on the
/// batch). Always retried.
#[derive(Debug, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct SinkError {
    pub sink: &'static str,
    pub message: String,
}

/// What a sink implements: its name, how to prepare its targets, and how to
/// apply a batch.
pub trait Sink: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// The target a table's documents go to, or `None` if this sink does not
    /// take that table.
    fn target(&self, model: &ReadModel, topic: &str) -> Option<Arc<str>>;

    /// Output fields of `table` this sink does not take (`exclude:`).
    fn excluded<'a>(&self, table: &'a TableMapping) -> &'a [String];

    /// How many batches the pipeline may write at once. Writes of different
    /// batches may overlap for the same key: only sinks whose guard settles
    /// that (the newest position wins whatever the order) may return more than 1.
    fn max_in_flight(&self) -> usize {
        1
    }

    /// Creates indexes/tables before the first write. Idempotent.
    fn prepare(&self, model: &ReadModel) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Applies the writes (at most one per target and id) and returns one
    /// outcome per write, in order. `progress` is the next offset of each
    /// partition the batch covers, for sinks that record it atomically with
    /// the rows (Kafka's commit still follows the batch).
    fn write(
        &self,
        writes: &[Write],
        progress: &[PartitionOffset],
    ) -> impl Future<Output = Result<Vec<Outcome>, SinkError>> + Send;
}
