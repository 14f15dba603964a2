//! The raw Kafka record as projector received it, before any decoding.
//!
//! Everything downstream keeps a [`Lineage`] so that an error, a dead letter
//! or a log line can always name the record it came from.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Where a record came from: enough to find it again with any Kafka tool.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lineage {
    /// Shared: every event, document and error of a record names its topic,
    /// and a reference count is cheaper than a copy per event.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Lineage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// An owned copy of one Kafka record.
#[derive(Clone, Debug)]
pub struct SourceRecord {
    pub lineage: Lineage,
    /// The key and value as received; decoded text values share these
    /// buffers (see [`crate::decode::Text`]) instead of copying them.
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Broker/producer timestamp in ms, used for append-to-ack latency.
    pub timestamp_ms: Option<i64>,
    /// Which assignment of its partition this member received it under
    /// (see [`crate::source::consumer::Revoked`]): a partition revoked and
    /// assigned again within one poll must keep what the new assignment fetched.
    pub generation: u64,
}

impl SourceRecord {
    /// Approximate memory held by this record, for byte-bounded batching.
    pub fn size_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self.lineage.topic.len()
            + 64
    }
}

/// The next offset to read in one partition: everything before it is done.
/// What the pipeline stores once a batch is written, and the progress a sink
/// may record beside its rows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
}

/// How many records of one assigned partition this consumer has not read
/// yet: log end minus its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionBacklog {
    pub topic: String,
    pub partition: i32,
    pub records: i64,
}
