//! Any bytes split into a Kafka record's key and value, framed as
//! `projector_fuzz::framed_record` says: decoding may fail, but must not panic
//! or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use projector::decode::{DecodeOptions, decode};

fuzz_target!(|data: &[u8]| {
    projector_fuzz::report_stack_overflows();
    let Some(record) = projector_fuzz::framed_record(data) else { return };
    projector_fuzz::walk(decode(&record, &DecodeOptions::default()));
});
