//! The dead-letter queue: where a record goes when it cannot be decoded,
//! mapped or written, so that its partition keeps moving and nothing is lost.
//!
//! A dead letter is the original key and value, unchanged, on the DLQ topic,
//! with headers that say what went wrong and where the record came from
//! (the names follow Kafka Connect's `__connect.errors.*` convention so that
//! existing tooling reads them):
//! `__connect.errors.topic`, `.partition`, `.offset`, `.stage`,
//! `.exception.class.name` (our error kind), `.exception.message`, plus
//! `projector.sink` and `projector.read_model`. The record's own headers are
//! kept. The pipeline waits for the DLQ write to be acknowledged before it
//! stores the record's offset.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::retry;
use crate::source::SourceRecord;

/// Why a record is a dead letter.
#[derive(Clone, Debug)]
pub struct Reason {
    /// `decode`, `mapping` or `sink`.
    pub stage: &'static str,
    /// Short kind, e.g. `invalid_json`, `rejected`.
    pub kind: &'static str,
    pub message: String,
}

/// Producer for one read model's DLQ topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    pub topic: String,
    read_model: String,
}

/// The DLQ producer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the dead-letter producer for {topic}: {source}")]
pub struct DeadLetterError {
    topic: String,
    source: rdkafka::error::KafkaError,
}

impl DeadLetters {
    pub fn new(brokers: &str, topic: &str, read_model: &str) -> Result<DeadLetters, DeadLetterError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|source| DeadLetterError { topic: topic.to_string(), source })?;
        Ok(DeadLetters { producer, topic: topic.to_string(), read_model: read_model.to_string() })
    }

    /// Sends one dead letter and waits until the broker has it, retrying
    /// for as long as the broker is unreachable.
    pub async fn send(&self, record: &SourceRecord, sink: &str, reason: &Reason) {
        let l = &record.lineage;
        let partition = l.partition.to_string();
        let offset = l.offset.to_string();
        let mut delays = retry::delays();
        loop {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &record.headers {
                headers = headers.insert(Header { key: k, value: v.as_deref() });
            }
            let meta: [(&str, &str); 8] = [
                ("__connect.errors.topic", &l.topic),
                ("__connect.errors.partition", &partition),
                ("__connect.errors.offset", &offset),
                ("__connect.errors.stage", reason.stage),
                ("__connect.errors.exception.class.name", reason.kind),
                ("__connect.errors.exception.message", &reason.message),
                ("projector.sink", sink),
                ("projector.read_model", &self.read_model),
            ];
            for (k, v) in meta {
                headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
            }
            let mut msg: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = &record.key {
                msg = msg.key(k.as_slice());
            }
            if let Some(v) = &record.value {
                msg = msg.payload(v.as_slice());
            }
            match self.producer.send(msg, Duration::from_secs(30)).await {
                Ok(_) => {
                    metrics::counter!("projector_dead_letters_total", "sink" => sink.to_string(), "stage" => reason.stage, "kind" => reason.kind).increment(1);
                    tracing::warn!(record = %l, sink, stage = reason.stage, kind = reason.kind, reason = %reason.message, dlq = %self.topic, "record sent to the dead-letter queue");
                    return;
                }
                Err((e, _)) => {
                    let wait = delays.next().unwrap_or(Duration::from_secs(30));
                    tracing::error!(record = %l, dlq = %self.topic, error = %e, retry_in = ?wait, "cannot write dead letter; retrying (the partition waits)");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
