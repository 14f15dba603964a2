//! Any bytes as the value of a Kafka record whose key is a valid Debezium key
//! (`{"TripId":1}`): decoding may fail, but must not panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use projector::decode::{DecodeOptions, decode};
use projector::source::{Lineage, SourceRecord};

fuzz_target!(|data: &[u8]| {
    projector_fuzz::report_stack_overflows();
    let record = SourceRecord {
        lineage: Lineage { topic: "vexere.vexere.dbo.Trips".into(), partition: 0, offset: 42 },
        key: Some(br#"{"TripId":1}"#.to_vec().into()),
        value: Some(data.to_vec().into()),
        headers: Vec::new(),
        timestamp_ms: Some(1_782_000_000_000),
        generation: 0,
    };
    projector_fuzz::walk(decode(&record, &DecodeOptions::default()));
});
