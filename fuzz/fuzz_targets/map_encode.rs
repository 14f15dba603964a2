//! A Kafka record (framed as `projector_fuzz::framed_record` says) decoded,
//! mapped through a fixed read model, then encoded by every sink's encoder
//! in-process: the PostgreSQL binary COPY cell for each column type, the
//! Elasticsearch bulk lines and the BigQuery cell text for each column type.
//! Encoders may refuse a value; they must not panic, wrap or allocate
//! without bound.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use projector::decode::{DecodeOptions, Decoded, Value, decode};
use projector::mapping::ReadModel;
use projector::sink::Write;
use projector::sink::bigquery::sql::cell_text;
use projector::sink::elasticsearch::encode;
use projector::sink::postgres::binary::Cell;
use projector_fuzz::TOPIC;
use tokio_postgres::types::{ToSql, Type};

/// Every column passes through, plus a filter, a computed field and a template.
const MODEL: &str = "\
read_model: fuzz
tables:
  - topic: vexere.vexere.dbo.Seats
    where: \"SeatNo != 0\"
    computed:
      - name: code
        expr: concat('S-', TripId, SeatNo)
      - name: title
        template: \"{Deck} ({SeatNo})\"
    elasticsearch: { index: seats }
    postgres: { table: seats }
    bigquery: { table: seats }
";

const PG_TYPES: [Type; 19] = [
    Type::BOOL,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::NUMERIC,
    Type::BYTEA,
    Type::UUID,
    Type::DATE,
    Type::TIME,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
    Type::JSONB,
    Type::JSON,
    Type::TEXT,
    Type::VARCHAR,
    Type::INTERVAL,
    Type::TEXT_ARRAY,
];

const BQ_TYPES: [&str; 12] = [
    "STRING",
    "BYTES",
    "INT64",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "BOOL",
    "TIMESTAMP",
    "DATE",
    "TIME",
    "DATETIME",
    "JSON",
];

fn model() -> &'static ReadModel {
    static MODEL_ONCE: OnceLock<ReadModel> = OnceLock::new();
    MODEL_ONCE.get_or_init(|| ReadModel::parse(Path::new("fuzz.yaml"), MODEL).expect("the fuzz read model is valid"))
}

fn encode_value(column: &str, value: &Value) {
    let mut out = bytes::BytesMut::new();
    for ty in &PG_TYPES {
        out.clear();
        // Unbounded, and with a numeric(p,s) column's limits checked.
        for numeric in [None, Some((12, 2))] {
            out.clear();
            let cell = Cell { column, value, numeric };
            let _ = std::hint::black_box(cell.to_sql(ty, &mut out).map_err(|e| e.to_string()));
        }
    }
    for base in BQ_TYPES {
        std::hint::black_box(cell_text(value, base));
    }
}

fuzz_target!(|data: &[u8]| {
    projector_fuzz::report_stack_overflows();
    let Some(record) = projector_fuzz::framed_record(data) else { return };
    let Ok(Decoded::Change(event)) = decode(&record, &DecodeOptions::default()) else { return };
    let Some(table) = model().table(TOPIC) else { return };
    let doc = match table.document(event) {
        Ok(doc) => doc,
        Err(e) => {
            std::hint::black_box(e.to_string());
            return;
        }
    };
    for (column, value) in doc.key.columns.iter().chain(doc.body.iter().flat_map(|b| b.columns.iter())) {
        encode_value(column, value);
    }
    for value in projector::sink::postgres::meta_values(&doc) {
        encode_value("__meta", &value);
    }
    let write = Write { target: Arc::from("seats"), doc };
    let mut bulk = Vec::new();
    // A full document, and a partial update keeping stored fields (on_drop: keep).
    encode::write(&mut bulk, &write, None, false);
    encode::write(&mut bulk, &write, None, true);
    encode::document(&mut bulk, &write.doc);
    std::hint::black_box(bulk);
});
