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
//!
//! A letter too large for the producer (its `message.max.bytes`, checked
//! before sending) or for the broker (refused with MessageSizeTooLarge or
//! MessageBatchTooLarge, read from the error code) would otherwise be retried
//! for ever with its partition stopped. It is cut instead, in two steps:
//! first to a bounded prefix of the key and value, then to no key, value or
//! own headers at all. A cut letter keeps its lineage and reason headers and
//! says so: `projector.truncated=true`, `projector.original` (the
//! `topic/partition@offset` to fetch the original from),
//! `projector.original.key.bytes` and `projector.original.value.bytes`.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::retry::{self, StuckWatch};
use crate::source::SourceRecord;

/// The DLQ producer's `message.max.bytes` (librdkafka's default, set
/// explicitly so the pre-check and the producer agree).
const MAX_LETTER_BYTES: usize = 1_000_000;
/// What a cut letter keeps of the value, of the key and of the reason.
const VALUE_PREFIX: usize = 64 * 1024;
const KEY_PREFIX: usize = 4 * 1024;
const MESSAGE_PREFIX: usize = 4 * 1024;
/// Room for our own headers and the record's framing.
const FRAMING_BYTES: usize = 8 * 1024;

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

/// How much of the original record a letter carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Key, value and headers unchanged.
    Whole,
    /// A bounded prefix of the key, value and reason.
    Prefix,
    /// Lineage and reason only.
    Bare,
}

impl Cut {
    /// The cut to try first: whole when the letter fits the producer's limit.
    fn first(record: &SourceRecord, reason: &Reason) -> Cut {
        let len = |b: Option<&[u8]>| b.map_or(0, <[u8]>::len);
        let headers: usize = record.headers.iter().map(|(k, v)| k.len() + len(v.as_deref())).sum();
        let size =
            len(record.key.as_deref()) + len(record.value.as_deref()) + headers + reason.message.len() + FRAMING_BYTES;
        if size > MAX_LETTER_BYTES { Cut::Prefix } else { Cut::Whole }
    }

    /// The next smaller cut, after the producer or broker refused this one as too large.
    fn smaller(self) -> Option<Cut> {
        match self {
            Cut::Whole => Some(Cut::Prefix),
            Cut::Prefix => Some(Cut::Bare),
            Cut::Bare => None,
        }
    }

    fn bytes(self, b: &[u8], prefix: usize) -> Option<&[u8]> {
        match self {
            Cut::Whole => Some(b),
            Cut::Prefix => Some(&b[..b.len().min(prefix)]),
            Cut::Bare => None,
        }
    }

    fn message(self, m: &str) -> &str {
        if self == Cut::Whole {
            return m;
        }
        let mut end = m.len().min(MESSAGE_PREFIX);
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        &m[..end]
    }
}

/// Whether the producer or broker refused a letter for its size.
fn too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

impl DeadLetters {
    pub fn new(brokers: &str, topic: &str, read_model: &str) -> Result<DeadLetters, DeadLetterError> {
        DeadLetters::with_timeout(brokers, topic, read_model, Duration::from_secs(30))
    }

    /// `timeout`: how long the producer tries one letter before the error
    /// comes back here (and is retried).
    fn with_timeout(
        brokers: &str,
        topic: &str,
        read_model: &str,
        timeout: Duration,
    ) -> Result<DeadLetters, DeadLetterError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .set("message.max.bytes", MAX_LETTER_BYTES.to_string())
            .create()
            .map_err(|source| DeadLetterError { topic: topic.to_string(), source })?;
        Ok(DeadLetters { producer, topic: topic.to_string(), read_model: read_model.to_string() })
    }

    /// Sends one dead letter and waits until the broker has it, retrying
    /// for as long as the broker is unreachable (reported stuck through
    /// `watch` past its threshold: the partition waits, so health must say
    /// so), and cutting it when it is too large to be written whole.
    pub async fn send(&self, record: &SourceRecord, sink: &str, reason: &Reason, watch: &mut StuckWatch<'_>) {
        let l = &record.lineage;
        let mut delays = retry::delays();
        let mut cut = Cut::first(record, reason);
        loop {
            match self.producer.send(self.letter(record, sink, reason, cut), Duration::from_secs(30)).await {
                Ok(_) => {
                    metrics::counter!("projector_dead_letters_total", "sink" => sink.to_string(), "stage" => reason.stage, "kind" => reason.kind).increment(1);
                    tracing::warn!(record = %l, sink, stage = reason.stage, kind = reason.kind, reason = %reason.message, dlq = %self.topic, cut = ?cut, "record sent to the dead-letter queue");
                    return;
                }
                Err((e, _)) if too_large(&e) && cut.smaller().is_some() => {
                    tracing::warn!(record = %l, dlq = %self.topic, error = %e, cut = ?cut, "dead letter too large for the DLQ; cutting it (the original stays on its topic)");
                    cut = cut.smaller().unwrap_or(Cut::Bare);
                }
                Err((e, _)) => {
                    let wait = delays.next().unwrap_or(Duration::from_secs(30));
                    let why = format!("its dead letter cannot be written to {}: {e}", self.topic);
                    let wait = watch.failed(&l.to_string(), 1, &why, wait);
                    tracing::error!(record = %l, dlq = %self.topic, error = %e, retry_in = ?wait, "cannot write dead letter; retrying (the partition waits)");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The letter for `record`, carrying as much of it as `cut` allows.
    fn letter<'a>(
        &'a self,
        record: &'a SourceRecord,
        sink: &str,
        reason: &Reason,
        cut: Cut,
    ) -> FutureRecord<'a, [u8], [u8]> {
        let l = &record.lineage;
        let mut headers = OwnedHeaders::new();
        if cut != Cut::Bare {
            for (k, v) in &record.headers {
                headers = headers.insert(Header { key: k, value: v.as_deref() });
            }
        }
        let (partition, offset) = (l.partition.to_string(), l.offset.to_string());
        let meta: [(&str, &str); 8] = [
            ("__connect.errors.topic", &l.topic),
            ("__connect.errors.partition", &partition),
            ("__connect.errors.offset", &offset),
            ("__connect.errors.stage", reason.stage),
            ("__connect.errors.exception.class.name", reason.kind),
            ("__connect.errors.exception.message", cut.message(&reason.message)),
            ("projector.sink", sink),
            ("projector.read_model", &self.read_model),
        ];
        for (k, v) in meta {
            headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
        }
        if cut != Cut::Whole {
            let len = |b: Option<&[u8]>| b.map_or(0, <[u8]>::len).to_string();
            let (original, key_bytes, value_bytes) =
                (l.to_string(), len(record.key.as_deref()), len(record.value.as_deref()));
            let truncation: [(&str, &str); 4] = [
                ("projector.truncated", "true"),
                ("projector.original", &original),
                ("projector.original.key.bytes", &key_bytes),
                ("projector.original.value.bytes", &value_bytes),
            ];
            for (k, v) in truncation {
                headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
            }
        }
        let mut msg: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = record.key.as_deref().and_then(|k| cut.bytes(k, KEY_PREFIX)) {
            msg = msg.key(k);
        }
        if let Some(v) = record.value.as_deref().and_then(|v| cut.bytes(v, VALUE_PREFIX)) {
            msg = msg.payload(v);
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Lineage;

    fn record(key: usize, value: usize) -> SourceRecord {
        SourceRecord {
            lineage: Lineage { topic: "t".into(), partition: 0, offset: 7 },
            key: Some(vec![b'k'; key].into()),
            value: Some(vec![b'v'; value].into()),
            headers: vec![],
            timestamp_ms: None,
            generation: 0,
        }
    }

    fn reason() -> Reason {
        Reason { stage: "decode", kind: "too_large", message: "é".repeat(10_000) }
    }

    #[test]
    fn a_letter_over_the_producer_limit_is_cut_before_it_is_sent() {
        assert_eq!(Cut::first(&record(10, 100_000), &reason()), Cut::Whole);
        assert_eq!(Cut::first(&record(10, MAX_LETTER_BYTES), &reason()), Cut::Prefix);
    }

    #[test]
    fn cuts_shrink_to_bounded_prefixes_then_to_nothing() {
        let big = vec![1u8; 100_000];
        assert_eq!(Cut::Whole.bytes(&big, KEY_PREFIX).map(<[u8]>::len), Some(100_000));
        assert_eq!(Cut::Prefix.bytes(&big, KEY_PREFIX).map(<[u8]>::len), Some(KEY_PREFIX));
        assert_eq!(Cut::Prefix.bytes(&big[..10], KEY_PREFIX).map(<[u8]>::len), Some(10));
        assert_eq!(Cut::Bare.bytes(&big, KEY_PREFIX), None);
        assert_eq!(Cut::Whole.smaller(), Some(Cut::Prefix));
        assert_eq!(Cut::Prefix.smaller(), Some(Cut::Bare));
        assert_eq!(Cut::Bare.smaller(), None);
        // The reason is cut on a character boundary.
        let m = reason().message;
        let cut = Cut::Prefix.message(&m);
        assert!(cut.len() <= MESSAGE_PREFIX && m.starts_with(cut));
    }

    #[tokio::test]
    async fn a_dead_letter_that_cannot_be_written_is_reported_stuck() {
        // The partition waits for the letter, so health must not say ready.
        let health = crate::ops::Health::default();
        health.sink_up("es");
        let letters = DeadLetters::with_timeout("127.0.0.1:1", "dlq", "m", Duration::from_millis(200)).unwrap();
        let (h, r) = (health.clone(), reason());
        let sending = tokio::spawn(async move {
            let mut watch = StuckWatch::new(&h, "es", Duration::ZERO);
            letters.send(&record(1, 1), "es", &r, &mut watch).await;
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while health.ready() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sending.abort();
        assert!(!health.ready(), "a letter retried past the threshold is reported");
        let detail = &health.snapshot()["es"].detail;
        assert!(detail.contains("t/0@7") && detail.contains("dlq"), "names the record and the DLQ: {detail}");
    }

    #[test]
    fn only_size_error_codes_count_as_too_large() {
        assert!(too_large(&KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)));
        assert!(too_large(&KafkaError::MessageProduction(RDKafkaErrorCode::MessageBatchTooLarge)));
        assert!(!too_large(&KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)));
    }
}
