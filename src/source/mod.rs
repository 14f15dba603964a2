//! Step 1 of the path: Kafka. A consumer-group member that hands owned
//! records to a sink pipeline and stores offsets only when told they are
//! durable downstream. [`mirror`] is the other source, for rebuilds: the
//! staging PostgreSQL mirror of a table read back as change events.

pub mod consumer;
pub mod mirror;
pub mod record;

pub use record::{Lineage, PartitionBacklog, PartitionOffset, SourceRecord};
