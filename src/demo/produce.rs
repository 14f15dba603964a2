//! Writes fixture records to Kafka the way Kafka Connect would: keyed,
//! partitioned with the Java client's murmur2 partitioner (so a key lands
//! where Debezium would put it), idempotent and in order.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::sqlserver::Record;

/// A producer for fixtures.
pub struct FixtureProducer {
    producer: FutureProducer,
    brokers: String,
}

impl FixtureProducer {
    pub fn new(brokers: &str) -> anyhow::Result<FixtureProducer> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "60000")
            .create()?;
        Ok(FixtureProducer { producer, brokers: brokers.to_string() })
    }

    /// Creates topics (ignoring "already exists").
    pub async fn create_topics(&self, topics: &[String], partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create()?;
        let new: Vec<NewTopic<'_>> =
            topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
        for r in
            admin.create_topics(&new, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await?
        {
            match r {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => anyhow::bail!("cannot create topic {t}: {e}"),
            }
        }
        Ok(())
    }

    /// Sends records in order and waits for every acknowledgement.
    pub async fn send_all(&self, records: &[Record]) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(records.len());
        for r in records {
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&r.topic).key(r.key.as_slice());
            if let Some(v) = &r.value {
                rec = rec.payload(v.as_slice());
            }
            loop {
                match self.producer.send_result(rec) {
                    Ok(f) => {
                        acks.push(f);
                        break;
                    }
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        back,
                    )) => {
                        rec = back;
                        self.producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => anyhow::bail!("cannot queue record for {}: {e}", r.topic),
                }
            }
        }
        for a in acks {
            a.await
                .map_err(|_| anyhow::anyhow!("producer dropped"))?
                .map_err(|(e, _)| anyhow::anyhow!("record not acknowledged: {e}"))?;
        }
        self.producer.flush(Duration::from_secs(30))?;
        Ok(())
    }
}
