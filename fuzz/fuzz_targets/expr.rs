//! Any UTF-8 text as a computed-field expression and as a template: parsing
//! may fail, but must not panic or hang, and whatever parses must evaluate
//! against a row without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use projector::decode::{Row, Value};
use projector::mapping::expr::{self, Expr};

fn row() -> Row {
    Row {
        columns: vec![
            ("FirstName".into(), Value::String("An".into())),
            ("LastName".into(), Value::String("Nguyen".into())),
            ("Status".into(), Value::Int(1)),
            ("Seats".into(), Value::Int(0)),
            ("Big".into(), Value::Int(i64::MAX)),
            ("Small".into(), Value::Int(i64::MIN)),
            ("Fare".into(), Value::Decimal { unscaled: 35_000_000, scale: 2 }),
            ("Wide".into(), Value::Decimal { unscaled: i128::MAX, scale: 38 }),
            ("Ratio".into(), Value::Float(0.25)),
            ("Note".into(), Value::Null),
            ("Lob".into(), Value::Unavailable),
            ("Held".into(), Value::Bool(true)),
            ("Raw".into(), Value::Bytes(vec![0xde, 0xad])),
            ("Day".into(), Value::Date(20_000)),
            ("At".into(), Value::Time(3_600_000_000_123)),
            ("DepartAt".into(), Value::Timestamp(1_782_900_000_000_000_000)),
            ("Zoned".into(), Value::ZonedTimestamp("2026-06-01T08:00:00+07:00".into())),
            ("Extra".into(), Value::Json(Box::new(serde_json::json!({"a": [1, "b"]})))),
            ("Odd Name".into(), Value::String("x".into())),
        ].into(),
    }
}

fn check(e: &Expr, row: &Row) {
    std::hint::black_box(e.columns());
    let v = e.eval(row);
    std::hint::black_box((expr::truthy(&v), expr::text(&v)));
}

fuzz_target!(|data: &[u8]| {
    projector_fuzz::report_stack_overflows();
    let Ok(src) = std::str::from_utf8(data) else { return };
    let row = row();
    match expr::parse(src) {
        Ok(e) => check(&e, &row),
        Err(err) => {
            std::hint::black_box(err.to_string());
        }
    }
    match expr::parse_template(src) {
        Ok(e) => check(&e, &row),
        Err(err) => {
            std::hint::black_box(err.to_string());
        }
    }
});
