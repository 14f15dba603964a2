//! Any UTF-8 text as a read-model YAML file: loading may report problems,
//! but must not panic or hang; a model that loads must render its plan.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use projector::mapping::{ReadModel, plan};

fuzz_target!(|data: &[u8]| {
    projector_fuzz::report_stack_overflows();
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ReadModel::parse(Path::new("fuzz.yaml"), text) {
        Ok(model) => {
            std::hint::black_box(plan::render(&model));
            std::hint::black_box(model.topics());
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
});
