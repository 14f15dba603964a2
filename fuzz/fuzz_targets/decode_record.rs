//! Any bytes split into a Kafka record's key and value: the first byte is the
//! key's length (0xff: no key; the value is then everything after it), and a
//! value of exactly "\0" stands for a Kafka-null value (a tombstone).
#![no_main]

use libfuzzer_sys::fuzz_target;
use projector::decode::{DecodeOptions, Decoded, decode};
use projector::source::{Lineage, SourceRecord};

fuzz_target!(|data: &[u8]| {
    projector_fuzz::report_stack_overflows();
    let Some((&split, rest)) = data.split_first() else { return };
    let (key, value) = if split == 0xff {
        (None, rest)
    } else {
        let at = (split as usize).min(rest.len());
        (Some(rest[..at].to_vec()), &rest[at..])
    };
    let value = if value == b"\0" { None } else { Some(value.to_vec()) };
    let record = SourceRecord {
        lineage: Lineage { topic: "vexere.vexere.dbo.Seats".into(), partition: 3, offset: 7 },
        key,
        value,
        headers: Vec::new(),
        timestamp_ms: None,
        generation: 0,
    };
    match decode(&record, &DecodeOptions::default()) {
        Ok(Decoded::Change(event)) => {
            std::hint::black_box(format!("{event:?}"));
        }
        Ok(_) => {}
        Err(e) => {
            std::hint::black_box((e.to_string(), e.kind()));
        }
    }
});
