//! Step 5 of the path: sinks. Every sink shares one narrow contract: given
//! one target's writes (already grouped by target and collapsed to one per
//! key by the [`crate::pipeline`]), apply the newer ones and report an
//! [`Outcome`] for each. Grouping, isolating the bad rows of a refused call,
//! typing new fields, retry versus dead-letter and offset commits are the
//! pipeline's, the same for every sink. A sink keeps what is its own: its
//! targets, how to add typed fields to them, how to encode, send and read
//! each item's outcome, and one table that maps its server's error codes to
//! an [`ErrorKind`].
//!
//! Every sink stores, beside each row, the Kafka partition and offset of the
//! record that wrote it. A compaction delete ([`Document::compaction`], a
//! Kafka tombstone) has no source position and is guarded by those instead:
//! it marks the row deleted only when the row was written from the same
//! partition at a lower offset, and it keeps the row's stored position, so
//! a later real event still applies and an older one still cannot revive it.

pub mod bigquery;
pub mod catalog;
pub mod compaction;
pub mod elasticsearch;
pub mod postgres;
pub mod shape;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::decode::{FieldType, Value};
use crate::mapping::{Document, ReadModel, TableMapping};
use crate::source::PartitionOffset;

/// One document to apply to one target (index or table) of a sink.
#[derive(Clone, Debug)]
pub struct Write {
    /// The sink-specific target: the logical name (an Elasticsearch alias,
    /// a table name) until the pipeline fans the write out to the physical
    /// target of each version (see [`catalog`]).
    pub target: Arc<str>,
    pub doc: Document,
}

/// What happened to one write.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The sink now holds this write's state.
    Applied,
    /// The sink already held the same or a newer position; nothing changed.
    /// For a compaction delete: the row was already deleted, written at a
    /// later offset, or not there at all.
    Stale,
    /// A compaction delete found a live row it cannot order itself against:
    /// the row's stored offset is unknown (written before sinks stored it)
    /// or from another partition. The row is left as it is.
    Unmatched,
    /// The sink did not apply it; the error's kind tells the pipeline
    /// whether to retry it or dead-letter it.
    Failed(SinkError),
}

/// What kind of failure a sink met: the one thing the pipeline's retry
/// policy reads (`pipeline::retry::decide`). Only [`ErrorKind::RefusedRow`]
/// and [`ErrorKind::BadData`] are about the data; every other kind is the
/// sink (or its server) being wrong for now, so the write is retried with
/// the sink reported down, never dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The server is unreachable or not taking writes: connection refused,
    /// timeout, 5xx, a read-only transaction or index, a closed index.
    Unavailable,
    /// The server refuses for load: HTTP 429, rejected execution, rate or
    /// quota limits, too many connections.
    Overloaded,
    /// Another writer changed the same thing at once: a version conflict, a
    /// serialization failure, a deadlock. Retrying decides again.
    Conflict,
    /// The server refused this one write for its values (a value that does
    /// not fit its field's mapping or column). Dead-lettered once alone.
    RefusedRow,
    /// The server refused the call for the data it carried, without naming
    /// the write: the pipeline splits the call until the bad write is alone.
    BadData,
    /// The sink is configured wrongly (URL, dataset, a read-model setting
    /// the server refuses): fix the configuration; retried meanwhile.
    Configuration,
    /// Credentials are missing or lack a privilege: grant it; retried meanwhile.
    Permission,
    /// A table, column or index the sink owns is missing (dropped behind
    /// its back): the sink re-creates it and the write is retried.
    NotFound,
    /// The target cannot take the write's shape in place (a field retyped
    /// at the source that it cannot follow): it must be rebuilt as a new
    /// version. The read model's `on_type_change` decides what waits.
    NeedsRebuild,
}

impl ErrorKind {
    /// Whether the data caused it (the write is dead-lettered) rather than
    /// the sink (the write is retried).
    pub fn is_data(self) -> bool {
        matches!(self, ErrorKind::RefusedRow | ErrorKind::BadData)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RefusedRow => "refused_row",
            ErrorKind::BadData => "bad_data",
            ErrorKind::Configuration => "configuration",
            ErrorKind::Permission => "permission",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NeedsRebuild => "needs_rebuild",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of a sink call or of one write in it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{sink} ({kind}): {message}")]
pub struct SinkError {
    pub sink: &'static str,
    pub kind: ErrorKind,
    pub message: String,
}

impl SinkError {
    pub fn new(sink: &'static str, kind: ErrorKind, message: impl Into<String>) -> SinkError {
        SinkError { sink, kind, message: message.into() }
    }
}

/// Where the type of a new field comes from, chosen by the pipeline in
/// this order; the sink translates it into its own type vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldSource {
    /// The sink's own section of the read-model file declares it
    /// (`postgres.types`, `bigquery.types`, `elasticsearch.types`).
    Declared,
    /// The Debezium schema's type of the column behind the field.
    Schema(FieldType),
    /// Neither: a non-null value of this batch.
    Value(Value),
}

/// A field a target may lack, typed by the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct NewField {
    pub name: String,
    pub source: FieldSource,
}

/// What a target holds for one id, as parity reads it: the source position
/// stored beside the row and whether the row is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPosition {
    pub position: String,
    pub deleted: bool,
}

/// How a target can follow a field whose source type changed, in the
/// sink's own type vocabulary (each sink has one function that decides it).
#[derive(Clone, Debug, PartialEq)]
pub enum TypeChange {
    /// The target's type already holds every value of the new type.
    Unchanged,
    /// The target can be widened where it stands, by this DDL or mapping change.
    InPlace(String),
    /// The target cannot hold the new type without being rebuilt, and why.
    Rebuild(String),
}

/// A field of a target whose new source type the target cannot take in
/// place: its writes with the new type follow the read model's `on_type_change`.
#[derive(Clone, Debug, PartialEq)]
pub struct Retype {
    pub field: String,
    /// The target's type and the type the new source type needs, as the sink names them.
    pub from: String,
    pub to: String,
    pub why: String,
    /// The new source type, as the writes that carry it say.
    pub source: FieldType,
}

/// Whether `physical` is `logical` itself (a target adopted under its own
/// name) or one of its version tables, `<logical>_v<N>`: how a sink finds
/// the table mapping, and so the read model's policies, of a version it writes.
pub fn is_version_of(physical: &str, logical: &str) -> bool {
    physical == logical
        || physical
            .strip_prefix(logical)
            .and_then(|rest| rest.strip_prefix("_v"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// What a sink implements: its name and targets, how to prepare them, how
/// to add typed fields to one, and how to apply one target's writes.
pub trait Sink: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// The target a table's documents go to, or `None` if this sink does not
    /// take that table.
    fn target<'m>(&self, table: &'m TableMapping) -> Option<&'m str>;

    /// Output fields of `table` this sink does not take (`exclude:`).
    fn excluded<'a>(&self, table: &'a TableMapping) -> &'a [String];

    /// Whether this sink's section of `table` declares `field`'s type.
    fn declares(&self, table: &TableMapping, field: &str) -> bool;

    /// How many batches the pipeline may write at once. Writes of different
    /// batches may overlap for the same key: only sinks whose guard settles
    /// that (the newest position wins whatever the order) may return more than 1.
    fn max_in_flight(&self) -> usize {
        1
    }

    /// Connects and checks the server before the first write. Idempotent.
    /// The targets themselves are versions (see [`catalog`]), created by
    /// [`Sink::create_version`].
    fn prepare(&self, model: &ReadModel) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The physical target that holds version `version` of `logical`.
    fn physical(&self, logical: &str, version: i32) -> String {
        format!("{logical}_v{version}")
    }

    /// A target `logical` had before versions existed (an unversioned table
    /// named `logical`, the index behind the alias), made ready to be
    /// version 1: its physical name, or `None` on a fresh target.
    fn adopt(
        &self,
        table: &TableMapping,
        logical: &str,
    ) -> impl Future<Output = Result<Option<String>, SinkError>> + Send;

    /// Creates a version's physical target with `table`'s shape unless it
    /// exists, and learns what it holds. Idempotent.
    fn create_version(
        &self,
        table: &TableMapping,
        physical: &str,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Points the readers of `logical` at `physical` in one atomic step.
    fn point_readers(
        &self,
        table: &TableMapping,
        logical: &str,
        physical: &str,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Drops a version's physical target (gone already is fine).
    fn drop_version(&self, physical: &str) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Readies a version no reader sees yet for a rebuild's bulk fill, where
    /// the sink can trade how soon writes are searchable for indexing speed.
    /// [`Sink::point_readers`] undoes it. Idempotent; nothing by default.
    fn filling(&self, physical: &str) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = physical;
        std::future::ready(Ok(()))
    }

    /// Makes sure physical `target` (of `table`) has these fields with the type
    /// their source gives: adds those it lacks (re-creating the target if it
    /// is gone), widens in place a field whose new source type needs it, and
    /// returns the fields it cannot change in place (they need a rebuild).
    /// Idempotent. A field it cannot type is left out.
    fn add_fields(
        &self,
        table: &TableMapping,
        target: &str,
        fields: &[NewField],
    ) -> impl Future<Output = Result<Vec<Retype>, SinkError>> + Send;

    /// Applies one physical target's writes (at most one per id) and returns one
    /// outcome per write, in order. `progress` is the next offset of each
    /// partition the batch covers, for sinks that record it beside the rows
    /// (Kafka's commit still follows the batch). A data-kind error for the
    /// whole call makes the pipeline split it to find the bad writes.
    fn write(
        &self,
        target: &str,
        writes: &[Write],
        progress: &[PartitionOffset],
    ) -> impl Future<Output = Result<Vec<Outcome>, SinkError>> + Send;

    /// The stored position of each of `ids` in `target` (a tombstone counts,
    /// with `deleted`), `None` for an id the target lacks: what a rebuild's
    /// parity check compares with its source. A sink that cannot answer says
    /// so as a configuration error.
    fn positions(
        &self,
        target: &str,
        ids: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<StoredPosition>>, SinkError>> + Send {
        let (name, message) = (self.name(), format!("{target}: this sink cannot read stored positions for parity"));
        let _ = ids;
        async move { Err(SinkError::new(name, ErrorKind::Configuration, message)) }
    }

    /// What physical target `physical` of `table` shows of itself: its
    /// data fields and types and the read-model section recorded when it
    /// was created (see [`shape`]); `None` when it does not exist. Reads only.
    fn live_shape(
        &self,
        table: &TableMapping,
        physical: &str,
    ) -> impl Future<Output = Result<Option<shape::LiveShape>, SinkError>> + Send;

    /// Whether `physical` (showing `live`) agrees with `table` as the file
    /// has it now, by this sink's rules: see [`shape::classify`].
    fn verdict(&self, table: &TableMapping, physical: &str, live: Option<&shape::LiveShape>) -> shape::Verdict;

    /// How many rows `target` holds, tombstones included: parity's check
    /// for ids the source does not have.
    fn count(&self, target: &str) -> impl Future<Output = Result<u64, SinkError>> + Send {
        let (name, message) = (self.name(), format!("{target}: this sink cannot count rows for parity"));
        async move { Err(SinkError::new(name, ErrorKind::Configuration, message)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tables_policy_follows_it_into_every_version_table() {
        assert!(is_version_of("trips", "trips"));
        assert!(is_version_of("trips_v1", "trips"));
        assert!(is_version_of("trips_v12", "trips"));
        assert!(!is_version_of("trips_v", "trips"));
        assert!(!is_version_of("trips_v1x", "trips"));
        assert!(!is_version_of("trips_archive", "trips"));
        assert!(!is_version_of("other_v1", "trips"));
    }
}
