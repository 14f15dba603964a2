//! The benchmark's source: a Bookings-like SQL Server table whose change
//! events carry about 1 KB of row data, generated deterministically (same
//! seed, same events) and written to Kafka the way Kafka Connect writes them.
//!
//! The mix is a booking system's: mostly new bookings, many status and
//! amount updates of live bookings, a few deletes (each followed by its
//! tombstone). The topic uses `LogAppendTime`, so a record's timestamp is
//! the moment Kafka appended it: the start of append-to-ack latency.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::demo::bus_booking::Timeline;
use crate::demo::sqlserver::{Column, Image, Record, Table, decimal_base64};

/// The benchmark's `Bookings` table: the demo's columns plus the contact,
/// route and free-text columns a real booking row has.
pub fn bookings_table(prefix: &'static str) -> Table {
    Table {
        prefix,
        database: "vexere",
        schema: "dbo",
        name: "Bookings",
        columns: vec![
            Column::new("BookingId", "int64"),
            Column::new("TripId", "int32"),
            Column::new("SeatNo", "int16"),
            Column::new("Customer", "string"),
            Column::new("Email", "string"),
            Column::new("Phone", "string"),
            Column::new("Amount", "bytes").decimal(12, 2),
            Column::new("Currency", "string"),
            Column::new("BookedAt", "int64").semantic("io.debezium.time.Timestamp"),
            Column::new("UpdatedAt", "int64").semantic("io.debezium.time.Timestamp"),
            Column::new("Status", "string"),
            Column::new("Channel", "string"),
            Column::new("PickupPoint", "string"),
            Column::new("DropoffPoint", "string"),
            Column::new("PromoCode", "string").optional(),
            Column::new("Note", "string").optional(),
        ],
        key: vec!["BookingId"],
    }
}

const CUSTOMERS: [&str; 6] =
    ["Nguyen Van An", "Tran Thi Binh", "Le Minh Chau", "Pham Quoc Dung", "Vo Thi Em", "Hoang Gia Phuc"];
const STATUSES: [&str; 4] = ["held", "confirmed", "paid", "checked_in"];
const CHANNELS: [&str; 3] = ["web", "app", "agent"];
const POINTS: [&str; 5] = [
    "Mien Dong bus station, gate 3",
    "Pham Ngu Lao office, District 1",
    "Da Lat central station",
    "Nha Trang north terminal",
    "Can Tho ferry pier",
];
const NOTE: &str =
    "Lower-deck seat near the front, one carry-on and a folded bicycle. Call 30 minutes before departure.";

/// One version of one booking row.
fn booking(id: i64, version: u32) -> Image {
    let customer = CUSTOMERS[id as usize % CUSTOMERS.len()];
    vec![
        ("BookingId", json!(id)),
        ("TripId", json!((id % 5_000) as i32 + 1)),
        ("SeatNo", json!((id % 40) as i16 + 1)),
        ("Customer", json!(customer)),
        ("Email", json!(format!("booking{id}@example.vn"))),
        ("Phone", json!(format!("+84 90{:07}", id % 10_000_000))),
        ("Amount", json!(decimal_base64(35_000_000 + id as i128 % 1000 * 100 + version as i128 * 5_000))),
        ("Currency", json!("VND")),
        ("BookedAt", json!(1_782_000_000_000_i64 + id * 1_000)),
        ("UpdatedAt", json!(1_782_000_000_000_i64 + id * 1_000 + version as i64 * 60_000)),
        ("Status", json!(STATUSES[version as usize % STATUSES.len()])),
        ("Channel", json!(CHANNELS[id as usize % CHANNELS.len()])),
        ("PickupPoint", json!(POINTS[id as usize % POINTS.len()])),
        ("DropoffPoint", json!(POINTS[(id as usize + 2) % POINTS.len()])),
        ("PromoCode", if id % 7 == 0 { json!(format!("TET{}", id % 100)) } else { json!(null) }),
        ("Note", json!(NOTE)),
    ]
}

/// Generates the change stream: inserts, updates and deletes of bookings in
/// log order, with strictly increasing LSNs.
pub struct Workload {
    pub table: Table,
    clock: Timeline,
    /// Current version of each booking id (index = id); 0 = never inserted.
    versions: Vec<u32>,
    /// Ids of rows that exist now.
    live: Vec<i64>,
    rng: u64,
}

impl Workload {
    pub fn new(prefix: &'static str, seed: u64) -> Workload {
        Workload {
            table: bookings_table(prefix),
            clock: Timeline::default(),
            versions: vec![0],
            live: Vec::new(),
            rng: seed | 1,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: deterministic and dependency-free.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Rows that exist now, after every change handed out so far.
    pub fn live_rows(&self) -> usize {
        self.live.len()
    }

    /// The next change: one record, or a delete and its tombstone.
    pub fn next_change(&mut self) -> Vec<Record> {
        let roll = self.random() % 100;
        if self.live.len() < 1_000 || roll < 55 {
            let id = self.versions.len() as i64;
            self.versions.push(1);
            self.live.push(id);
            let at = self.clock.commit(1);
            return vec![self.table.event('c', None, Some(&booking(id, 1)), at, self.clock.ts_ms, true)];
        }
        let slot = (self.random() % self.live.len() as u64) as usize;
        let id = self.live[slot];
        let version = self.versions[id as usize];
        if roll < 96 {
            self.versions[id as usize] = version + 1;
            let at = self.clock.commit(2);
            vec![self.table.event(
                'u',
                Some(&booking(id, version)),
                Some(&booking(id, version + 1)),
                at,
                self.clock.ts_ms,
                true,
            )]
        } else {
            self.live.swap_remove(slot);
            let before = booking(id, version);
            let at = self.clock.commit(1);
            vec![
                self.table.event('d', Some(&before), None, at, self.clock.ts_ms, true),
                self.table.tombstone(&before, true),
            ]
        }
    }

    /// The next `n` records (a delete's tombstone may make it `n + 1`).
    pub fn take(&mut self, n: usize) -> Vec<Record> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            out.extend(self.next_change());
        }
        out
    }
}

/// The insert events of bookings `ids`, one per id, committed in order on
/// `clock`: what a mirror of that many live rows was written from (the
/// rebuild measurement's source).
pub fn inserts(table: &Table, clock: &mut Timeline, ids: std::ops::Range<i64>) -> Vec<Record> {
    ids.map(|id| {
        let at = clock.commit(1);
        table.event('c', None, Some(&booking(id, 1)), at, clock.ts_ms, true)
    })
    .collect()
}

/// Counts delivery failures reported by the producer.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
}

impl rdkafka::ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a produce run wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct Produced {
    pub records: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
    /// Bytes of the `payload` part of values (without the inline schema).
    pub payload_bytes: u64,
    pub elapsed: Duration,
}

/// Writes generated records to one topic, keyed and partitioned like Kafka
/// Connect (murmur2), in order, idempotently.
pub struct BenchProducer {
    producer: BaseProducer<Deliveries>,
    brokers: String,
}

impl BenchProducer {
    pub fn new(brokers: &str) -> anyhow::Result<BenchProducer> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("linger.ms", "10")
            .set("batch.size", "1000000")
            .set("message.timeout.ms", "120000")
            .create_with_context(Deliveries::default())
            .context("creating the benchmark's Kafka producer")?;
        Ok(BenchProducer { producer, brokers: brokers.to_string() })
    }

    /// Creates the topic with `LogAppendTime` timestamps.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create()?;
        let new =
            NewTopic::new(topic, partitions, TopicReplication::Fixed(1)).set("message.timestamp.type", "LogAppendTime");
        for r in
            admin.create_topics([&new], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await?
        {
            r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}; is Kafka up (scripts/stack status)?"))?;
        }
        Ok(())
    }

    fn send(&self, r: &Record, totals: &mut Produced) -> anyhow::Result<()> {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&r.topic).key(r.key.as_slice());
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    self.producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => anyhow::bail!("cannot queue a record for {}: {e}", r.topic),
            }
        }
        totals.records += 1;
        totals.key_bytes += r.key.len() as u64;
        if let Some(v) = &r.value {
            totals.value_bytes += v.len() as u64;
            totals.payload_bytes += payload_len(v) as u64;
        }
        Ok(())
    }

    fn finish(&self, mut totals: Produced, started: Instant) -> anyhow::Result<Produced> {
        self.producer.flush(Duration::from_secs(120)).context("flushing the benchmark's records")?;
        let failed = self.producer.context().failed.swap(0, Ordering::Relaxed);
        anyhow::ensure!(failed == 0, "{failed} benchmark records were not acknowledged by Kafka");
        totals.elapsed = started.elapsed();
        Ok(totals)
    }

    /// Writes `n` records as fast as Kafka takes them. Blocking.
    pub fn produce(&self, workload: &mut Workload, n: u64) -> anyhow::Result<Produced> {
        let started = Instant::now();
        let mut totals = Produced::default();
        while totals.records < n {
            for r in workload.next_change() {
                self.send(&r, &mut totals)?;
            }
            self.producer.poll(Duration::ZERO);
        }
        self.finish(totals, started)
    }

    /// Writes at a fixed offered rate (records per second) for `duration`.
    /// Blocking; records are sent in 10 ms steps.
    pub fn produce_at_rate(&self, workload: &mut Workload, rate: u64, duration: Duration) -> anyhow::Result<Produced> {
        let started = Instant::now();
        let mut totals = Produced::default();
        while started.elapsed() < duration {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            while totals.records < due {
                for r in workload.next_change() {
                    self.send(&r, &mut totals)?;
                }
            }
            self.producer.poll(Duration::from_millis(10));
        }
        self.finish(totals, started)
    }
}

/// Length of the `"payload":…` part of a `{schema, payload}` value.
fn payload_len(value: &[u8]) -> usize {
    const MARK: &[u8] = b",\"payload\":";
    value.windows(MARK.len()).rposition(|w| w == MARK).map_or(value.len(), |at| value.len() - at - MARK.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_deterministic_and_ordered() {
        let a = Workload::new("bench", 7).take(5_000);
        let b = Workload::new("bench", 7).take(5_000);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.key == y.key && x.value == y.value));
        let ops: Vec<&str> = a
            .iter()
            .filter_map(|r| r.value.as_ref())
            .map(|v| {
                let j: serde_json::Value = serde_json::from_slice(v).unwrap();
                match j["payload"]["op"].as_str().unwrap() {
                    "c" => "c",
                    "u" => "u",
                    _ => "d",
                }
            })
            .collect();
        for op in ["c", "u", "d"] {
            assert!(ops.contains(&op), "the mix has {op} events");
        }
        // Tombstones follow deletes.
        let tombstones = a.iter().filter(|r| r.value.is_none()).count();
        assert_eq!(tombstones, ops.iter().filter(|o| **o == "d").count());
    }

    #[test]
    fn payload_length_excludes_the_schema() {
        let v = br#"{"schema":{"a":1},"payload":{"op":"c"}}"#;
        assert_eq!(payload_len(v), r#"{"op":"c"}"#.len());
    }
}
