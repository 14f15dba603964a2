//! projector keeps CQRS read models in step with a SQL Server database.
//!
//! The modules follow one change from Kafka record to sink write:
//! [`source`] (consumer group) → [`decode`] (Debezium envelope → change
//! event) → [`mapping`] (read-model file → document) → [`pipeline`]
//! (batching, retry, dead letters, ordered offset commits) → [`sink`] (one
//! target's writes, guarded by the source position). [`ops`] sits beside
//! the path: health, metrics. [`rebuild`] sits beside it too: it fills a
//! new target from the staging PostgreSQL mirror
//! ([`source::mirror`]) through the same mapping and writer.
//! [`demo`] makes SQL Server-shaped events for the demo and tests;
//! [`bench`] measures the whole path against yardsticks.

pub mod backoff;
pub mod bench;
pub mod decode;
pub mod demo;
pub mod mapping;
pub mod ops;
pub mod pipeline;
pub mod rebuild;
pub mod sink;
pub mod source;

/// Installs rustls' `ring` crypto provider for HTTPS clients; reqwest is
/// built without a default provider to avoid the aws-lc C build. Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
