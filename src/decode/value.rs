//! Column values, typed by the Kafka Connect schema that Debezium attached.
//!
//! JSON alone cannot say whether `1578000000000` is a count or a timestamp,
//! or whether `"AVQ="` is text or a decimal. When the message carries its
//! schema we use the field's type and semantic name (`io.debezium.time.*`,
//! `org.apache.kafka.connect.data.Decimal`) to build a [`Value`] that each
//! sink then encodes in its own terms. Decimals stay exact (i128 unscaled +
//! scale); nothing goes through f64 unless the source column was a float.

use std::fmt;

use base64::Engine;
use serde_json::Value as Json;

use super::Text;

/// One decoded column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Exact decimal: `unscaled × 10^-scale`.
    Decimal {
        unscaled: i128,
        scale: u32,
    },
    /// Text, shared with the record where possible (see [`Text`]).
    String(Text),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Nanoseconds past midnight.
    Time(i64),
    /// Wall-clock timestamp in nanoseconds since the epoch (i128: the whole
    /// 0001–9999 range of `datetime2` fits). Debezium encodes SQL Server
    /// `datetime`/`datetime2` wall clocks *as if* they were UTC; we keep that
    /// meaning: the value has no real time zone.
    Timestamp(i128),
    /// `datetimeoffset`: ISO-8601 text that keeps its original offset.
    ZonedTimestamp(Text),
    /// The connector could not read the value (LOB before-images); never data.
    Unavailable,
    /// Anything we have no schema for (nested structs, arrays, schemaless maps).
    /// Boxed: rare, and a JSON value in place would make every value of
    /// every row two and a half times as large.
    Json(Box<Json>),
}

/// Debezium's placeholder for a value it could not capture (3.6+).
pub const UNAVAILABLE_PLACEHOLDER: &str = "__debezium_unavailable_value";

/// Why a value did not match its declared schema.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValueError {
    #[error("field {field:?}: expected {expected}, found {found}")]
    WrongType { field: String, expected: &'static str, found: String },
    #[error("field {field:?}: decimal bytes are not valid base64 ({detail})")]
    BadDecimal { field: String, detail: String },
    #[error("field {field:?}: decimal has {digits} bytes, more than the 16 that precision 38 needs")]
    DecimalTooWide { field: String, digits: usize },
    #[error("field {field:?}: decimal schema has no usable 'scale' parameter")]
    MissingScale { field: String },
    #[error(
        "field {field:?}: decimal scale {scale} is outside 0..={MAX_DECIMAL_SCALE} (PostgreSQL numeric's limit); the schema or the value is corrupt, fix the producer"
    )]
    ScaleOutOfRange { field: String, scale: String },
    #[error(
        "field {field:?} is missing although its schema requires it (optional: false); fix the producer, or make the field optional in the connector's schema"
    )]
    Missing { field: String },
    #[error(
        "field {field:?} is null although its schema requires it (optional: false); fix the producer, or make the field optional in the connector's schema"
    )]
    RequiredNull { field: String },
    #[error(
        "field {field:?}: found {found} where the schema says Decimal bytes (base64); the value and its schema disagree, check the converter's decimal.format (BASE64 goes with this schema)"
    )]
    DecimalNotBytes { field: String, found: String },
}

impl ValueError {
    /// Short machine-readable reason for DLQ headers and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ValueError::WrongType { .. }
            | ValueError::BadDecimal { .. }
            | ValueError::DecimalTooWide { .. }
            | ValueError::MissingScale { .. } => "bad_value",
            ValueError::ScaleOutOfRange { .. } => "bad_schema",
            ValueError::Missing { .. } => "missing_field",
            ValueError::RequiredNull { .. } => "required_null",
            ValueError::DecimalNotBytes { .. } => "decimal_not_bytes",
        }
    }

    /// The same error for a field of a nested block (`source.ts_ms`).
    pub(crate) fn within(mut self, block: &str) -> ValueError {
        match &mut self {
            ValueError::WrongType { field, .. }
            | ValueError::BadDecimal { field, .. }
            | ValueError::DecimalTooWide { field, .. }
            | ValueError::MissingScale { field }
            | ValueError::ScaleOutOfRange { field, .. }
            | ValueError::Missing { field }
            | ValueError::RequiredNull { field }
            | ValueError::DecimalNotBytes { field, .. } => *field = format!("{block}.{field}"),
        }
        self
    }
}

/// The largest decimal scale accepted: PostgreSQL numeric's display-scale
/// limit. Larger ones only come from corrupt schemas, and would make a
/// decimal's text (and a sink's buffer) gigabytes long.
pub const MAX_DECIMAL_SCALE: u32 = 16_383;

/// The semantic names [`typed`] reads specially; any other name is typed
/// by its Connect type alone (the fast path relies on this list).
pub(crate) const SEMANTIC_NAMES: &[&str] = &[
    "org.apache.kafka.connect.data.Decimal",
    "io.debezium.time.Date",
    "org.apache.kafka.connect.data.Date",
    "io.debezium.time.Time",
    "org.apache.kafka.connect.data.Time",
    "io.debezium.time.MicroTime",
    "io.debezium.time.NanoTime",
    "io.debezium.time.Timestamp",
    "org.apache.kafka.connect.data.Timestamp",
    "io.debezium.time.MicroTimestamp",
    "io.debezium.time.NanoTimestamp",
    "io.debezium.time.ZonedTimestamp",
    "io.debezium.data.VariableScaleDecimal",
    "io.debezium.data.Json",
    "io.debezium.time.MicroDuration",
];

/// A decimal scale from a schema or a record, checked against [`MAX_DECIMAL_SCALE`].
fn checked_scale(field: &str, scale: impl TryInto<u32> + fmt::Display + Copy) -> Result<u32, ValueError> {
    scale
        .try_into()
        .ok()
        .filter(|s| *s <= MAX_DECIMAL_SCALE)
        .ok_or_else(|| ValueError::ScaleOutOfRange { field: field.to_string(), scale: scale.to_string() })
}

/// The part of a Connect field schema that decides how a value is read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldType {
    /// Connect type: int8..int64, float32/64, boolean, string, bytes, struct, ...
    pub connect: String,
    /// Semantic name such as `io.debezium.time.MicroTimestamp`.
    pub name: Option<String>,
    /// Decimal scale when the schema names one.
    pub scale: Option<u32>,
    /// Decimal precision (`connect.decimal.precision`) when the schema names one.
    pub precision: Option<u32>,
}

impl FieldType {
    /// Reads a field entry of a Connect struct schema (`{"type": .., "name": .., "parameters": ..}`).
    pub fn from_schema(schema: &Json) -> FieldType {
        let connect = schema.get("type").and_then(Json::as_str).unwrap_or("").to_string();
        let name = schema.get("name").and_then(Json::as_str).map(str::to_string);
        let param = |key: &str| {
            schema.get("parameters").and_then(|p| p.get(key)).and_then(|s| match s {
                Json::String(s) => s.parse().ok(),
                // Out of u32 (negative, 2^32 + 2) is no scale, never a wrapped one.
                Json::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                _ => None,
            })
        };
        FieldType { connect, name, scale: param("scale"), precision: param("connect.decimal.precision") }
    }
}

fn found(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(_) => "a boolean".into(),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
        Json::String(s) => format!("the string {s:?}"),
        Json::Array(_) => "an array".into(),
        Json::Object(_) => "an object".into(),
    }
}

/// Converts one JSON column value using its schema.
pub fn typed(field: &str, ty: &FieldType, v: &Json) -> Result<Value, ValueError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    if v.as_str() == Some(UNAVAILABLE_PLACEHOLDER) {
        return Ok(Value::Unavailable);
    }
    let wrong = |expected: &'static str| ValueError::WrongType { field: field.to_string(), expected, found: found(v) };
    let int = || v.as_i64().ok_or_else(|| wrong("an integer"));
    // Scales a time past midnight to nanoseconds; out of range is bad data, not a wrap.
    let time = |factor: i64| {
        int()?
            .checked_mul(factor)
            .filter(|n| (0..=86_400_000_000_000).contains(n))
            .map(Value::Time)
            .ok_or_else(|| wrong("a time of day"))
    };
    match ty.name.as_deref() {
        Some("org.apache.kafka.connect.data.Decimal") => {
            let scale = ty.scale.ok_or_else(|| ValueError::MissingScale { field: field.to_string() })?;
            let scale = checked_scale(field, scale)?;
            return match v {
                Json::String(s) => decimal_from_base64(field, s, scale),
                // A number (decimal.format=NUMERIC) does not match a bytes
                // schema, and its written scale need not be the schema's.
                Json::Number(_) => Err(ValueError::DecimalNotBytes { field: field.to_string(), found: found(v) }),
                _ => Err(wrong("base64 decimal bytes")),
            };
        }
        Some("io.debezium.time.Date") | Some("org.apache.kafka.connect.data.Date") => {
            return i32::try_from(int()?).map(Value::Date).map_err(|_| wrong("a date (days since 1970)"));
        }
        Some("io.debezium.time.Time") | Some("org.apache.kafka.connect.data.Time") => {
            return time(1_000_000);
        }
        Some("io.debezium.time.MicroTime") => return time(1_000),
        Some("io.debezium.time.NanoTime") => return time(1),
        Some("io.debezium.time.Timestamp") | Some("org.apache.kafka.connect.data.Timestamp") => {
            return Ok(Value::Timestamp(i128::from(int()?) * 1_000_000));
        }
        Some("io.debezium.time.MicroTimestamp") => return Ok(Value::Timestamp(i128::from(int()?) * 1_000)),
        Some("io.debezium.time.NanoTimestamp") => return Ok(Value::Timestamp(i128::from(int()?))),
        Some("io.debezium.time.ZonedTimestamp") => {
            return v
                .as_str()
                .map(|s| Value::ZonedTimestamp(s.into()))
                .ok_or_else(|| wrong("a zoned timestamp string"));
        }
        // PostgreSQL `numeric` without a declared scale: {"scale": n, "value": base64}.
        Some("io.debezium.data.VariableScaleDecimal") => {
            let scale = match v.get("scale") {
                Some(Json::Number(n)) => match n.as_i64() {
                    Some(s) => checked_scale(field, s)?,
                    None => return Err(ValueError::ScaleOutOfRange { field: field.to_string(), scale: n.to_string() }),
                },
                _ => return Err(wrong("a {scale, value} decimal")),
            };
            let bytes = v.get("value").and_then(Json::as_str).ok_or_else(|| wrong("a {scale, value} decimal"))?;
            return decimal_from_base64(field, bytes, scale);
        }
        // json/jsonb: the document as text; keep it as a document.
        Some("io.debezium.data.Json") => {
            let text = v.as_str().ok_or_else(|| wrong("JSON text"))?;
            return Ok(serde_json::from_str(text)
                .map(|j| Value::Json(Box::new(j)))
                .unwrap_or_else(|_| Value::String(text.into())));
        }
        // interval: microseconds, a month counted as 30.4375 days.
        Some("io.debezium.time.MicroDuration") => return Ok(Value::Int(int()?)),
        _ => {}
    }
    match ty.connect.as_str() {
        "int8" | "int16" | "int32" | "int64" => Ok(Value::Int(int()?)),
        "float" | "float32" | "float64" | "double" => match v {
            // PostgreSQL's special values arrive as text.
            Json::String(s) if s == "NaN" => Ok(Value::Float(f64::NAN)),
            Json::String(s) if s == "Infinity" => Ok(Value::Float(f64::INFINITY)),
            Json::String(s) if s == "-Infinity" => Ok(Value::Float(f64::NEG_INFINITY)),
            _ => v.as_f64().map(Value::Float).ok_or_else(|| wrong("a number")),
        },
        "boolean" => v.as_bool().map(Value::Bool).ok_or_else(|| wrong("a boolean")),
        "string" => v.as_str().map(|s| Value::String(s.into())).ok_or_else(|| wrong("a string")),
        "bytes" => {
            let s = v.as_str().ok_or_else(|| wrong("base64 bytes"))?;
            base64::engine::general_purpose::STANDARD.decode(s).map(Value::Bytes).map_err(|_| wrong("base64 bytes"))
        }
        _ => Ok(untyped(v)),
    }
}

/// Converts a JSON value that came without a schema (`schemas.enable=false`).
/// [`untyped`] for a value the caller no longer needs (no copy of strings).
pub fn untyped_owned(v: Json) -> Value {
    match v {
        Json::String(s) if s != UNAVAILABLE_PLACEHOLDER => Value::String(s.into()),
        other => untyped(&other),
    }
}

pub fn untyped(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => n.as_f64().map(Value::Float).unwrap_or_else(|| Value::Json(Box::new(v.clone()))),
        },
        Json::String(s) if s == UNAVAILABLE_PLACEHOLDER => Value::Unavailable,
        Json::String(s) => Value::String(s.into()),
        other => Value::Json(Box::new(other.clone())),
    }
}

pub(crate) fn decimal_from_base64(field: &str, s: &str, scale: u32) -> Result<Value, ValueError> {
    if scale > MAX_DECIMAL_SCALE {
        return Err(ValueError::ScaleOutOfRange { field: field.to_string(), scale: scale.to_string() });
    }
    let engine = &base64::engine::general_purpose::STANDARD;
    // Up to 24 base64 characters (18 bytes, more than the 16 allowed) decode
    // on the stack: this runs for every decimal of every row. Longer texts,
    // and every error, take the allocating decode, whose error text is the one users see.
    let mut buf = [0u8; 18];
    let small = if s.len() <= 24 { engine.decode_slice(s, &mut buf).ok() } else { None };
    let owned;
    let bytes: &[u8] = match small.and_then(|n| buf.get(..n)) {
        Some(bytes) => bytes,
        None => {
            owned = engine
                .decode(s)
                .map_err(|e| ValueError::BadDecimal { field: field.to_string(), detail: e.to_string() })?;
            &owned
        }
    };
    if bytes.len() > 16 {
        return Err(ValueError::DecimalTooWide { field: field.to_string(), digits: bytes.len() });
    }
    if bytes.is_empty() {
        return Err(ValueError::BadDecimal { field: field.to_string(), detail: "no bytes".into() });
    }
    // Big-endian two's complement: sign-extend into 16 bytes.
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    Ok(Value::Decimal { unscaled: i128::from_be_bytes(buf), scale })
}

/// Parses `-123.4500` into an exact decimal, keeping the written scale.
pub fn parse_decimal_text(s: &str) -> Option<Value> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut unscaled: i128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        unscaled = unscaled.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    let scale = u32::try_from(frac_part.len()).ok().filter(|s| *s <= MAX_DECIMAL_SCALE)?;
    Some(Value::Decimal { unscaled: if neg { -unscaled } else { unscaled }, scale })
}

/// Whether a decimal fits a `(precision, scale)` column without rounding:
/// the digits past the column's scale are zeros, and its integer digits fit
/// in `precision - scale`. `Err` says why not, with the value's digits.
pub fn decimal_fits(unscaled: i128, scale: u32, precision: u32, column_scale: u32) -> Result<(), String> {
    let text = decimal_text(unscaled, scale);
    if scale > column_scale {
        let cut = 10i128.checked_pow(scale - column_scale);
        if cut.is_none_or(|c| unscaled % c != 0) {
            return Err(format!("{text} has more than {column_scale} decimal places"));
        }
    }
    let digits = u32::try_from(unscaled.unsigned_abs().to_string().len()).unwrap_or(u32::MAX);
    let integer_digits = digits.saturating_sub(scale);
    if unscaled != 0 && integer_digits > precision.saturating_sub(column_scale) {
        return Err(format!("{text} has more than {} integer digits", precision.saturating_sub(column_scale)));
    }
    Ok(())
}

/// Writes an exact decimal as plain text (`-1234.50`).
pub fn decimal_text(unscaled: i128, scale: u32) -> String {
    DecimalText(unscaled, scale).to_string()
}

/// An exact decimal (`unscaled × 10^-scale`) displayed as plain text
/// (`-1234.50`), written without an allocation (the sinks' encoders write
/// it straight into their request bodies).
pub struct DecimalText(pub i128, pub u32);

impl fmt::Display for DecimalText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let DecimalText(unscaled, scale) = *self;
        // u128::MAX has 39 digits.
        let mut buf = [0u8; 39];
        let mut at = buf.len();
        let mut n = unscaled.unsigned_abs();
        loop {
            at -= 1;
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // Only ASCII digits were written.
        let digits = std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?;
        if unscaled < 0 {
            f.write_str("-")?;
        }
        // Decoding bounds scales by MAX_DECIMAL_SCALE; clamp anything else
        // rather than write gigabytes of zeros.
        let scale = usize::try_from(scale.min(MAX_DECIMAL_SCALE)).unwrap_or(0);
        if scale == 0 {
            return f.write_str(digits);
        }
        if digits.len() > scale {
            let (i, frac) = digits.split_at(digits.len() - scale);
            f.write_str(i)?;
            f.write_str(".")?;
            return f.write_str(frac);
        }
        f.write_str("0.")?;
        const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
        let mut pad = scale - digits.len();
        while pad > 0 {
            let n = pad.min(ZEROS.len());
            f.write_str(&ZEROS[..n])?;
            pad -= n;
        }
        f.write_str(digits)
    }
}

/// Civil date from days since the epoch (proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // doy is 0..=365 and mp 0..=11, so day and month are 1..=31 and 1..=12.
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD`.
pub fn date_text(days: i32) -> String {
    DateText(days).to_string()
}

/// `HH:MM:SS[.fffffffff]` with trailing zeros trimmed.
pub fn time_text(nanos: i64) -> String {
    TimeText(nanos).to_string()
}

/// `YYYY-MM-DDTHH:MM:SS[.fffffffff]` without an offset: a wall clock.
pub fn timestamp_text(nanos: i128) -> String {
    TimestampText(nanos).to_string()
}

/// A date (days since the epoch) displayed as `YYYY-MM-DD`, with no allocation.
pub struct DateText(pub i32);

impl fmt::Display for DateText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(i64::from(self.0));
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// A time of day (nanoseconds past midnight) displayed as
/// `HH:MM:SS[.fffffffff]`, trailing zeros trimmed, with no allocation.
pub struct TimeText(pub i64);

impl fmt::Display for TimeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000_000);
        let frac = self.0.rem_euclid(1_000_000_000);
        let (h, mi, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        write!(f, "{h:02}:{mi:02}:{s:02}{}", Fraction(frac))
    }
}

/// A wall-clock timestamp (nanoseconds since the epoch) displayed as
/// `YYYY-MM-DDTHH:MM:SS[.fffffffff]` without an offset, with no allocation.
pub struct TimestampText(pub i128);

impl fmt::Display for TimestampText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0;
        // Decoded timestamps are an i64 count scaled up, so the seconds fit an
        // i64; a Value built elsewhere beyond that clamps instead of wrapping.
        let secs = nanos.div_euclid(1_000_000_000);
        let secs = i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN / 1_000_000 } else { i64::MAX / 1_000_000 });
        let frac = i64::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
        let days = secs.div_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let tod = secs.rem_euclid(86_400);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{}", tod / 3600, (tod / 60) % 60, tod % 60, Fraction(frac))
    }
}

/// `.fffffffff` of a nanosecond count below one second, trailing zeros
/// trimmed; nothing for zero.
struct Fraction(i64);

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return Ok(());
        }
        let mut buf = *b".000000000";
        let mut n = self.0.rem_euclid(1_000_000_000);
        for slot in buf[1..].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let end = buf.iter().rposition(|b| *b != b'0').map_or(1, |i| i + 1);
        // Only ASCII was written.
        f.write_str(std::str::from_utf8(&buf[..end]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_is_exact_at_every_sign_scale_and_width() {
        // The text as plain string arithmetic gives it.
        fn oracle(unscaled: i128, scale: u32) -> String {
            let digits = unscaled.unsigned_abs().to_string();
            let sign = if unscaled < 0 { "-" } else { "" };
            let scale = scale.min(MAX_DECIMAL_SCALE) as usize;
            match scale {
                0 => format!("{sign}{digits}"),
                s if digits.len() > s => {
                    format!("{sign}{}.{}", &digits[..digits.len() - s], &digits[digits.len() - s..])
                }
                s => format!("{sign}0.{}{digits}", "0".repeat(s - digits.len())),
            }
        }
        let values = [0, 1, -1, 7, -50, 12_345, -35_000_000, i128::from(i64::MAX), i128::MAX, i128::MIN, i128::MIN + 1];
        for unscaled in values {
            for scale in [0, 1, 2, 4, 9, 38, 39, 40, 100, MAX_DECIMAL_SCALE, MAX_DECIMAL_SCALE + 1, u32::MAX] {
                assert_eq!(decimal_text(unscaled, scale), oracle(unscaled, scale), "{unscaled} scale {scale}");
            }
        }
        assert_eq!(decimal_text(-35_000_050, 2), "-350000.50");
        assert_eq!(decimal_text(5, 3), "0.005");
    }

    #[test]
    fn time_fractions_are_trimmed_and_whole_seconds_have_none() {
        assert_eq!(time_text(0), "00:00:00");
        assert_eq!(time_text(1), "00:00:00.000000001");
        assert_eq!(time_text(45_296_120_000_000), "12:34:56.12");
        assert_eq!(timestamp_text(1_500_000_000), "1970-01-01T00:00:01.5");
        assert_eq!(timestamp_text(-1), "1969-12-31T23:59:59.999999999");
        assert_eq!(date_text(-1), "1969-12-31");
    }
    use serde_json::json;

    fn ty(connect: &str, name: Option<&str>, scale: Option<u32>) -> FieldType {
        FieldType { connect: connect.into(), name: name.map(Into::into), scale, precision: None }
    }

    #[test]
    fn decimal_scales_beyond_what_a_sink_stores_are_refused_not_wrapped() {
        let decimal = |scale| ty("bytes", Some("org.apache.kafka.connect.data.Decimal"), Some(scale));
        let err = typed("Price", &decimal(u32::MAX), &json!("AQ==")).unwrap_err();
        assert!(
            matches!(err, ValueError::ScaleOutOfRange { ref field, ref scale } if field == "Price" && *scale == u32::MAX.to_string())
        );
        assert!(typed("Price", &decimal(MAX_DECIMAL_SCALE), &json!("AQ==")).is_ok());
        let vsd = ty("struct", Some("io.debezium.data.VariableScaleDecimal"), None);
        for scale in [4_294_967_298u64, 70_000] {
            let err = typed("Price", &vsd, &json!({"scale": scale, "value": "AQ=="})).unwrap_err();
            assert!(matches!(err, ValueError::ScaleOutOfRange { .. }), "{scale}: {err:?}");
        }
        // A scale parameter beyond u32 is no scale, not a wrapped one.
        let schema = json!({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": 4_294_967_298u64}});
        assert_eq!(FieldType::from_schema(&schema).scale, None);
    }

    #[test]
    fn decimal_base64_is_exact() {
        // 350000.00 at scale 2 = 35000000 = 0x0216_0EC0
        let v =
            typed("Price", &ty("bytes", Some("org.apache.kafka.connect.data.Decimal"), Some(2)), &json!("AhYOwA=="))
                .unwrap();
        assert_eq!(v, Value::Decimal { unscaled: 35_000_000, scale: 2 });
        let Value::Decimal { unscaled, scale } = v else { unreachable!() };
        assert_eq!(decimal_text(unscaled, scale), "350000.00");
    }

    #[test]
    fn decimal_bytes_read_on_the_stack_match_the_allocating_decode() {
        use base64::Engine;
        let engine = &base64::engine::general_purpose::STANDARD;
        // What decimal_from_base64 returned when it always decoded into a Vec.
        let reference = |s: &str| -> Result<Value, ValueError> {
            let field = "Price".to_string();
            let bytes =
                engine.decode(s).map_err(|e| ValueError::BadDecimal { field: field.clone(), detail: e.to_string() })?;
            match bytes.len() {
                0 => Err(ValueError::BadDecimal { field, detail: "no bytes".into() }),
                n if n > 16 => Err(ValueError::DecimalTooWide { field, digits: n }),
                n => {
                    let mut buf = [if bytes[0] & 0x80 != 0 { 0xff } else { 0 }; 16];
                    buf[16 - n..].copy_from_slice(&bytes);
                    Ok(Value::Decimal { unscaled: i128::from_be_bytes(buf), scale: 2 })
                }
            }
        };
        let mut inputs: Vec<String> = (0..=20).map(|n| engine.encode(vec![0x9c; n])).collect();
        inputs.extend(["", "A", "AA=", "AA==x", "!!!!", "AAAA====", "/w==", "AP8="].map(String::from));
        for s in &inputs {
            assert_eq!(decimal_from_base64("Price", s, 2), reference(s), "{s:?}");
        }
    }

    #[test]
    fn negative_decimal_sign_extends() {
        // -1 as one byte 0xff, scale 4 -> -0.0001
        let v =
            typed("Fee", &ty("bytes", Some("org.apache.kafka.connect.data.Decimal"), Some(4)), &json!("/w==")).unwrap();
        assert_eq!(v, Value::Decimal { unscaled: -1, scale: 4 });
        assert_eq!(decimal_text(-1, 4), "-0.0001");
    }

    #[test]
    fn decimal_precision_38_round_trips() {
        // 10^38 - 1 (38 nines) needs 17 bytes? No: it is < 2^127, so 16 bytes.
        let n: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;
        let b64 = base64::engine::general_purpose::STANDARD.encode(n.to_be_bytes());
        let v =
            typed("Big", &ty("bytes", Some("org.apache.kafka.connect.data.Decimal"), Some(10)), &json!(b64)).unwrap();
        assert_eq!(v, Value::Decimal { unscaled: n, scale: 10 });
        assert_eq!(decimal_text(n, 10), "9999999999999999999999999999.9999999999");
    }

    #[test]
    fn bad_decimal_is_named() {
        let err = typed("Price", &ty("bytes", Some("org.apache.kafka.connect.data.Decimal"), Some(2)), &json!("%%%"))
            .unwrap_err();
        assert!(matches!(err, ValueError::BadDecimal { ref field, .. } if field == "Price"));
        let err = typed("Price", &ty("bytes", Some("org.apache.kafka.connect.data.Decimal"), None), &json!("AQ=="))
            .unwrap_err();
        assert_eq!(err, ValueError::MissingScale { field: "Price".into() });
    }

    #[test]
    fn int64_never_goes_through_f64() {
        let v = typed("Id", &ty("int64", None, None), &json!(9_007_199_254_740_993_i64)).unwrap();
        assert_eq!(v, Value::Int(9_007_199_254_740_993));
    }

    #[test]
    fn temporal_types_scale_to_nanos() {
        let nano = typed(
            "t",
            &ty("int64", Some("io.debezium.time.NanoTimestamp"), None),
            &json!(1_700_000_000_123_456_789_i64),
        )
        .unwrap();
        assert_eq!(
            timestamp_text(match nano {
                Value::Timestamp(n) => n,
                _ => 0,
            }),
            "2023-11-14T22:13:20.123456789"
        );
        let milli =
            typed("t", &ty("int64", Some("io.debezium.time.Timestamp"), None), &json!(1_700_000_000_120_i64)).unwrap();
        assert_eq!(milli, Value::Timestamp(1_700_000_000_120_000_000));
        let date = typed("d", &ty("int32", Some("io.debezium.time.Date"), None), &json!(19_000)).unwrap();
        assert_eq!(
            date_text(match date {
                Value::Date(d) => d,
                _ => 0,
            }),
            "2022-01-08"
        );
        let time =
            typed("t", &ty("int64", Some("io.debezium.time.MicroTime"), None), &json!(3_723_000_001_i64)).unwrap();
        assert_eq!(
            time_text(match time {
                Value::Time(n) => n,
                _ => 0,
            }),
            "01:02:03.000001"
        );
    }

    #[test]
    fn far_dates_fit_and_absurd_values_are_errors_not_wraps() {
        // datetime2(3) 9999-12-31T23:59:59.999, the usual "no end date" sentinel.
        let end =
            typed("ValidTo", &ty("int64", Some("io.debezium.time.Timestamp"), None), &json!(253_402_300_799_999_i64))
                .unwrap();
        assert_eq!(
            timestamp_text(match end {
                Value::Timestamp(n) => n,
                _ => 0,
            }),
            "9999-12-31T23:59:59.999"
        );
        let start = typed(
            "ValidFrom",
            &ty("int64", Some("io.debezium.time.MicroTimestamp"), None),
            &json!(-62_135_596_800_000_000_i64),
        )
        .unwrap();
        assert_eq!(
            timestamp_text(match start {
                Value::Timestamp(n) => n,
                _ => 0,
            }),
            "0001-01-01T00:00:00"
        );
        assert!(typed("t", &ty("int32", Some("io.debezium.time.Time"), None), &json!(i64::MAX)).is_err());
        assert!(typed("d", &ty("int32", Some("io.debezium.time.Date"), None), &json!(i64::MAX)).is_err());
    }

    #[test]
    fn dates_before_epoch() {
        assert_eq!(date_text(-1), "1969-12-31");
        assert_eq!(timestamp_text(-1), "1969-12-31T23:59:59.999999999");
    }

    #[test]
    fn wrong_type_names_field_and_value() {
        let err = typed("Seats", &ty("int32", None, None), &json!("twelve")).unwrap_err();
        assert_eq!(err.to_string(), r#"field "Seats": expected an integer, found the string "twelve""#);
    }

    #[test]
    fn placeholder_is_unavailable_not_data() {
        assert_eq!(
            typed("Note", &ty("string", None, None), &json!(UNAVAILABLE_PLACEHOLDER)).unwrap(),
            Value::Unavailable
        );
        assert_eq!(untyped(&json!(UNAVAILABLE_PLACEHOLDER)), Value::Unavailable);
    }

    #[test]
    fn postgres_semantic_types() {
        let vsd = typed(
            "amount",
            &ty("struct", Some("io.debezium.data.VariableScaleDecimal"), None),
            &json!({"scale": 5, "value": "BMsv"}),
        )
        .unwrap();
        assert_eq!(vsd, Value::Decimal { unscaled: 0x04cb2f, scale: 5 });
        let doc =
            typed("doc", &ty("string", Some("io.debezium.data.Json"), None), &json!("{\"a\": [1, \"x\"]}")).unwrap();
        assert_eq!(doc, Value::Json(Box::new(json!({"a": [1, "x"]}))));
        assert_eq!(
            typed("span", &ty("int64", Some("io.debezium.time.MicroDuration"), None), &json!(93_784_000_000_i64))
                .unwrap(),
            Value::Int(93_784_000_000)
        );
        assert!(matches!(typed("r", &ty("double", None, None), &json!("NaN")).unwrap(), Value::Float(f) if f.is_nan()));
        assert_eq!(
            typed("tags", &ty("array", None, None), &json!(["red", "blue"])).unwrap(),
            Value::Json(Box::new(json!(["red", "blue"])))
        );
    }

    #[test]
    fn decimal_text_parses_back() {
        assert_eq!(parse_decimal_text("-12.340"), Some(Value::Decimal { unscaled: -12340, scale: 3 }));
        assert_eq!(parse_decimal_text("1e5"), None);
    }
}
