//! PostgreSQL's binary wire format for the values projector writes with
//! `COPY ... (FORMAT binary)`. Each column is encoded for the type the
//! mirror table declares, converting from the decoded [`Value`] exactly:
//! decimals into `numeric`'s base-10000 digits, wall-clock timestamps into
//! microseconds since 2000-01-01 (nanoseconds are truncated: PostgreSQL
//! keeps microseconds), zoned timestamps into UTC.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::decode::{Value, value};
use crate::mapping::expr;

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400_000_000;

/// `numeric`'s largest display scale (NUMERIC_DSCALE_MASK): a larger scale
/// cannot be stored, and would only make the encoder allocate.
pub const MAX_NUMERIC_SCALE: u32 = 0x3FFF;
/// `time` runs from 00:00 to 24:00 inclusive, in microseconds.
const MAX_TIME_MICROS: i64 = 86_400_000_000;

/// A value to encode for the column type PostgreSQL asks for, with the name
/// of its column for messages.
#[derive(Debug)]
pub struct Cell<'a> {
    pub column: &'a str,
    pub value: &'a Value,
    /// The column's `numeric(p,s)` limits: PostgreSQL rounds a value with
    /// more decimals silently, so one that does not fit is refused here.
    pub numeric: Option<(u32, u32)>,
}

type BoxError = Box<dyn Error + Sync + Send>;

/// A refused value: names the column and the value (cut to a readable
/// length), and says what to do. The pipeline treats it as bad data.
fn bad(column: &str, v: &Value, ty: &Type, why: &str) -> BoxError {
    let mut shown = format!("{v:?}");
    if shown.len() > 120 {
        let mut cut = 120;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push('…');
    }
    let why = if why.is_empty() { String::new() } else { format!(" ({why})") };
    format!(
        "column {column:?}: cannot store {shown} in a {ty} column{why}; fix the value at the source or declare another type under postgres.types"
    )
    .into()
}

impl ToSql for Cell<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let v = self.value;
        let bad = |why: &str| bad(self.column, v, ty, why);
        if matches!(v, Value::Null | Value::Unavailable) {
            return Ok(IsNull::Yes);
        }
        match *ty {
            Type::BOOL => out.put_u8(match v {
                Value::Bool(b) => u8::from(*b),
                Value::Int(i) => u8::from(*i != 0),
                _ => return Err(bad("")),
            }),
            Type::INT2 => out.put_i16(int(v).and_then(|i| i16::try_from(i).ok()).ok_or_else(|| bad("out of range"))?),
            Type::INT4 => out.put_i32(int(v).and_then(|i| i32::try_from(i).ok()).ok_or_else(|| bad("out of range"))?),
            Type::INT8 => out.put_i64(int(v).ok_or_else(|| bad(""))?),
            Type::FLOAT4 => {
                let f = float(v).ok_or_else(|| bad(""))?;
                #[allow(clippy::cast_possible_truncation)] // checked just below
                let narrow = f as f32;
                if f.is_finite() && !narrow.is_finite() {
                    return Err(bad("out of real's range"));
                }
                out.put_f32(narrow)
            }
            Type::FLOAT8 => out.put_f64(float(v).ok_or_else(|| bad(""))?),
            Type::NUMERIC => match v {
                Value::Decimal { unscaled, scale } => {
                    self.fits(*unscaled, *scale, ty)?;
                    numeric(out, *unscaled, *scale).ok_or_else(|| bad("scale over 16383"))?
                }
                Value::Int(i) => {
                    self.fits(i128::from(*i), 0, ty)?;
                    numeric(out, i128::from(*i), 0).ok_or_else(|| bad(""))?
                }
                Value::Float(f) if f.is_nan() => {
                    out.put_i16(0);
                    out.put_i16(0);
                    out.put_u16(0xC000);
                    out.put_u16(0);
                }
                Value::String(s) => match value::parse_decimal_text(s) {
                    Some(Value::Decimal { unscaled, scale }) => {
                        self.fits(unscaled, scale, ty)?;
                        numeric(out, unscaled, scale).ok_or_else(|| bad("scale over 16383"))?
                    }
                    _ => return Err(bad("not a decimal")),
                },
                _ => return Err(bad("")),
            },
            Type::BYTEA => match v {
                Value::Bytes(b) => out.put_slice(b),
                _ => return Err(bad("")),
            },
            Type::UUID => out.put_slice(&uuid(&expr::text(v)).ok_or_else(|| bad("not a uuid"))?),
            Type::DATE => match v {
                Value::Date(d) => {
                    out.put_i32(i32::try_from(i64::from(*d) - PG_EPOCH_DAYS).map_err(|_| bad("date out of range"))?)
                }
                _ => return Err(bad("")),
            },
            Type::TIME => match v {
                Value::Time(ns) if (0..=MAX_TIME_MICROS * 1_000).contains(ns) => out.put_i64(ns / 1_000),
                Value::Time(_) => return Err(bad("not a time of day")),
                _ => return Err(bad("")),
            },
            Type::TIMESTAMP => match v {
                Value::Timestamp(ns) => out.put_i64(pg_micros(*ns).ok_or_else(|| bad("timestamp out of range"))?),
                _ => return Err(bad("")),
            },
            Type::TIMESTAMPTZ => match v {
                Value::ZonedTimestamp(s) => out.put_i64(
                    zoned_micros(s)
                        .and_then(|m| m.checked_sub(PG_EPOCH_MICROS))
                        .ok_or_else(|| bad("not an ISO-8601 time with offset in range"))?,
                ),
                // A wall clock stored as timestamptz: taken as UTC, as Debezium encodes it.
                Value::Timestamp(ns) => out.put_i64(pg_micros(*ns).ok_or_else(|| bad("timestamp out of range"))?),
                _ => return Err(bad("")),
            },
            Type::JSONB => {
                out.put_u8(1);
                match v {
                    Value::Json(j) => serde_json::to_writer(out.writer(), j)?,
                    Value::String(s) if serde_json::from_str::<serde_json::Value>(s).is_ok() => {
                        out.put_slice(s.as_bytes())
                    }
                    other => serde_json::to_writer(out.writer(), &expr::text(other))?,
                }
            }
            Type::JSON => match v {
                Value::Json(j) => serde_json::to_writer(out.writer(), j)?,
                other => serde_json::to_writer(out.writer(), &expr::text(other))?,
            },
            // Binary text types are the UTF-8 bytes themselves.
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::XML | Type::UNKNOWN => match v {
                Value::Json(j) => serde_json::to_writer(out.writer(), j)?,
                other => out.put_slice(expr::text(other).as_bytes()),
            },
            // Any other binary format (arrays, interval, inet, ...) is not
            // text: writing text bytes would corrupt the COPY stream.
            _ => {
                return Err(bad("projector encodes no values of this type; see mappings/README.md for postgres.types"));
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl Cell<'_> {
    /// Refuses a decimal its `numeric(p,s)` column would round or overflow.
    fn fits(&self, unscaled: i128, scale: u32, ty: &Type) -> Result<(), BoxError> {
        let Some((precision, column_scale)) = self.numeric else { return Ok(()) };
        value::decimal_fits(unscaled, scale, precision, column_scale).map_err(|why| {
            let shown = Value::Decimal { unscaled, scale };
            let column = format!("numeric({precision},{column_scale})");
            bad(self.column, &shown, ty, &format!("{why} in {column}; it is never rounded: widen the column (`ALTER TABLE ... ALTER COLUMN ... TYPE numeric(p,s)`) or declare a wider type under postgres.types"))
        })
    }
}

/// Nanoseconds since 1970 → microseconds since 2000 (PostgreSQL keeps µs).
fn pg_micros(ns: i128) -> Option<i64> {
    i64::try_from(ns.div_euclid(1_000) - i128::from(PG_EPOCH_MICROS)).ok()
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Decimal { unscaled, scale: 0 } => i64::try_from(*unscaled).ok(),
        _ => None,
    }
}

fn float(v: &Value) -> Option<f64> {
    match v {
        #[allow(clippy::cast_precision_loss)] // a double column holds the nearest double, as PostgreSQL's cast does
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Decimal { unscaled, scale } if *scale <= MAX_NUMERIC_SCALE => {
            value::decimal_text(*unscaled, *scale).parse().ok()
        }
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `numeric` binary: ndigits, weight, sign, dscale, then base-10000 digits.
/// `None` for a scale PostgreSQL cannot store.
fn numeric(out: &mut BytesMut, unscaled: i128, scale: u32) -> Option<()> {
    if scale > MAX_NUMERIC_SCALE {
        return None;
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = usize::try_from(scale).ok()?;
    let (int_part, frac_part) = if digits.len() > scale {
        (digits[..digits.len() - scale].to_string(), digits[digits.len() - scale..].to_string())
    } else {
        (String::new(), format!("{}{digits}", "0".repeat(scale - digits.len())))
    };
    let int_pad = (4 - int_part.len() % 4) % 4;
    let int_part = format!("{}{int_part}", "0".repeat(int_pad));
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let frac_part = format!("{frac_part}{}", "0".repeat(frac_pad));
    let group = |s: &str| {
        s.as_bytes().chunks(4).map(|c| c.iter().fold(0i16, |g, d| g * 10 + i16::from(d - b'0'))).collect::<Vec<_>>()
    };
    let mut groups = group(&int_part);
    let mut weight = i16::try_from(groups.len()).ok()? - 1;
    groups.extend(group(&frac_part));
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= i16::try_from(leading).ok()?;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(i16::try_from(groups.len()).ok()?);
    out.put_i16(weight);
    out.put_u16(if unscaled < 0 { 0x4000 } else { 0 });
    out.put_u16(u16::try_from(scale).ok()?);
    for g in groups {
        out.put_i16(g);
    }
    Some(())
}

fn uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|c| *c != b'-').collect();
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 16];
    for (b, pair) in out.iter_mut().zip(hex.chunks(2)) {
        *b = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Days since 1970-01-01 of a civil date; `None` for a date that does not exist.
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d == 0 || d > *month_days.get(usize::try_from(m - 1).ok()?)? {
        return None;
    }
    // PostgreSQL's range is 4713 BC to 294276 AD; beyond it nothing is stored.
    if !(-4713..=294_276).contains(&y) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Digits only, parsed; `None` for a sign, space or anything else.
fn number(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `2018-07-13T12:23:45.456+11:00` / `...Z` → microseconds since 1970 UTC.
/// Offsets are `±HH[:MM]` or `±HHMM` up to 18 hours; anything else is `None`.
pub fn zoned_micros(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let (neg_year, date) = match date.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, date),
    };
    let mut d = date.split('-');
    let year = number(d.next()?)?;
    let (y, m, dd) = (if neg_year { -year } else { year }, number(d.next()?)?, number(d.next()?)?);
    if d.next().is_some() {
        return None;
    }
    let (clock, offset_secs) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else {
        let pos = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let off = &off[1..];
        let (h, mi) = match off.split_once(':') {
            Some((h, mi)) if h.len() == 2 && mi.len() == 2 => (number(h)?, number(mi)?),
            None if off.len() == 2 => (number(off)?, 0),
            None if off.len() == 4 => (number(&off[..2])?, number(&off[2..])?),
            _ => return None,
        };
        if h > 18 || mi > 59 {
            return None;
        }
        (c, sign * (h * 3600 + mi * 60))
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let (h, mi, sec) = (number(t.next()?)?, number(t.next()?)?, t.next().map_or(Some(0), number)?);
    if t.next().is_some() || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (clock.contains('.') && frac.is_empty()) {
        return None;
    }
    // Microseconds are kept; finer digits are cut, as PostgreSQL's own input rounds below them.
    let micros: i64 = format!("{:0<6}", &frac[..frac.len().min(6)]).parse().ok()?;
    let days = days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(dd).ok()?)?;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: Value, ty: Type) -> Vec<u8> {
        let mut out = BytesMut::new();
        Cell { column: "c", value: &v, numeric: None }.to_sql(&ty, &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn text_and_json_cells_are_the_bytes_postgres_reads() {
        let jsonb = |text: &str| [&[1u8][..], text.as_bytes()].concat();
        assert_eq!(enc(Value::String("Phương \"Trang\"".into()), Type::TEXT), "Phương \"Trang\"".as_bytes());
        assert_eq!(
            enc(Value::ZonedTimestamp("2026-01-02T03:04:05+07:00".into()), Type::VARCHAR),
            b"2026-01-02T03:04:05+07:00"
        );
        assert_eq!(enc(Value::Int(5), Type::TEXT), b"5");
        assert_eq!(enc(Value::Json(Box::new(serde_json::json!({"a": 1}))), Type::TEXT), br#"{"a":1}"#);
        assert_eq!(enc(Value::Json(Box::new(serde_json::json!({"a": 1}))), Type::JSONB), jsonb(r#"{"a":1}"#));
        assert_eq!(enc(Value::String(r#"{"b":2}"#.into()), Type::JSONB), jsonb(r#"{"b":2}"#));
        assert_eq!(enc(Value::String("x\"y".into()), Type::JSONB), jsonb(r#""x\"y""#));
        assert_eq!(enc(Value::Int(5), Type::JSON), br#""5""#);
        assert_eq!(enc(Value::Json(Box::new(serde_json::json!([1, 2]))), Type::JSON), b"[1,2]");
    }

    #[test]
    fn numeric_matches_postgres_binary_layout() {
        // 350000.00: digits [35, 0] weight 1, dscale 2 -> trailing zero group stripped -> [35] weight 1.
        assert_eq!(
            enc(Value::Decimal { unscaled: 35_000_000, scale: 2 }, Type::NUMERIC),
            vec![0, 1, 0, 1, 0, 0, 0, 2, 0, 35]
        );
        // -12.34: [12, 3400] weight 0, neg, dscale 2.
        assert_eq!(
            enc(Value::Decimal { unscaled: -1234, scale: 2 }, Type::NUMERIC),
            vec![0, 2, 0, 0, 0x40, 0, 0, 2, 0, 12, 0x0d, 0x48]
        );
        // 0.000001: [0, 0, 100] -> leading zero groups stripped: [100] weight -2, dscale 6.
        assert_eq!(
            enc(Value::Decimal { unscaled: 1, scale: 6 }, Type::NUMERIC),
            vec![0, 1, 0xff, 0xfe, 0, 0, 0, 6, 0, 100]
        );
        assert_eq!(enc(Value::Decimal { unscaled: 0, scale: 2 }, Type::NUMERIC), vec![0, 0, 0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn zoned_timestamps_convert_to_utc() {
        assert_eq!(zoned_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(zoned_micros("2018-07-13T12:23:45.456+11:00"), Some(1_531_445_025_456_000));
        assert_eq!(zoned_micros("1999-12-31T23:59:59.999999-08:00"), Some(946_713_599_999_999));
        assert_eq!(days_from_civil(2000, 1, 1), Some(PG_EPOCH_DAYS));
    }

    #[test]
    fn timestamps_use_the_2000_epoch_and_truncate_nanoseconds() {
        assert_eq!(enc(Value::Timestamp(946_684_800_000_001_999), Type::TIMESTAMP), 1i64.to_be_bytes().to_vec());
        assert_eq!(enc(Value::Date(PG_EPOCH_DAYS as i32 + 1), Type::DATE), 1i32.to_be_bytes().to_vec());
    }

    /// The message a value gets, or the bytes it encodes to.
    fn refused(v: Value, ty: Type) -> String {
        let mut out = BytesMut::new();
        match (Cell { column: "Seat", value: &v, numeric: None }).to_sql(&ty, &mut out) {
            Ok(_) => panic!("{v:?} encoded as {ty} to {:?}", out.to_vec()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_value_that_does_not_fit_is_an_error_not_a_wrap() {
        assert!(refused(Value::Int(40_000), Type::INT2).contains("out of range"));
        assert!(refused(Value::String("x".into()), Type::INT8).contains("column \"Seat\""));
        assert!(refused(Value::Float(1e300), Type::FLOAT4).contains("real"));
    }

    #[test]
    fn uuid_text_that_is_not_a_uuid_is_refused_naming_column_and_value() {
        // 32 bytes of non-hex multi-byte text once panicked on a slice boundary.
        let m = refused(Value::String("éééééééééééééééé".into()), Type::UUID);
        assert!(m.contains("column \"Seat\"") && m.contains("ééé") && m.contains("not a uuid"), "{m}");
        refused(Value::String("zz345678-1234-1234-1234-123456789abc".into()), Type::UUID);
        refused(Value::String("+1345678-1234-1234-1234-123456789abc".into()), Type::UUID);
        assert_eq!(
            enc(Value::String("00112233-4455-6677-8899-AABBCCDDEEFF".into()), Type::UUID),
            (0u8..16).map(|i| i * 0x11).collect::<Vec<_>>()
        );
    }

    #[test]
    fn times_outside_a_day_are_refused() {
        refused(Value::Time(-1), Type::TIME);
        refused(Value::Time(86_400_000_000_001), Type::TIME);
        assert_eq!(enc(Value::Time(86_400_000_000_000), Type::TIME), 86_400_000_000i64.to_be_bytes().to_vec());
        assert_eq!(enc(Value::Time(1_999), Type::TIME), 1i64.to_be_bytes().to_vec());
    }

    #[test]
    fn zoned_timestamps_with_odd_offsets_or_text_are_refused() {
        for s in [
            "2018-07-13T12:23:45.4é6+11:00",
            "2018-07-13T12:23:45.éééééé+11:00",
            "2018-07-13T12:23:45.-12Z",
            "2018-07-13T12:23:45+530",
            "2018-07-13T12:23:45+99:00",
            "2018-07-13T12:23:45+05:3",
            "2018-13-13T12:23:45Z",
            "2018-02-30T12:23:45Z",
            "2018-07-13T25:23:45Z",
            "2018-07-13T12:23Z+01:00",
            "2018-07-13T12:23:45",
            "99999999999999999-07-13T12:23:45Z",
            "+2018-07-13T12:23:45Z",
            "2018-07-13T12:23:45.Z",
        ] {
            assert_eq!(zoned_micros(s), None, "{s}");
            refused(Value::ZonedTimestamp(s.into()), Type::TIMESTAMPTZ);
        }
        assert_eq!(zoned_micros("2018-07-13T12:23:45+0530"), zoned_micros("2018-07-13T12:23:45+05:30"));
        assert_eq!(zoned_micros("2018-07-13T12:23:45+05"), zoned_micros("2018-07-13T12:23:45+05:00"));
        assert_eq!(zoned_micros("2018-07-13T12:23:45.1234567Z"), Some(1_531_484_625_123_456));
    }

    #[test]
    fn dates_and_timestamps_out_of_range_are_refused_not_wrapped() {
        refused(Value::Date(i32::MIN), Type::DATE);
        refused(Value::Timestamp(i128::MAX), Type::TIMESTAMP);
        refused(Value::Timestamp(i128::MIN), Type::TIMESTAMPTZ);
    }

    #[test]
    fn numeric_scales_postgres_cannot_store_are_refused_without_allocating() {
        let m = refused(Value::Decimal { unscaled: 1, scale: u32::MAX }, Type::NUMERIC);
        assert!(m.contains("scale"), "{m}");
        refused(Value::Decimal { unscaled: 1, scale: 70_000 }, Type::NUMERIC);
        refused(Value::Decimal { unscaled: 1, scale: u32::MAX }, Type::FLOAT8);
        let top = enc(Value::Decimal { unscaled: -1, scale: MAX_NUMERIC_SCALE }, Type::NUMERIC);
        assert_eq!(top[6..8], 0x3FFFu16.to_be_bytes());
    }

    #[test]
    fn types_without_an_encoder_are_refused_not_sent_as_text() {
        let m = refused(Value::String("1 day".into()), Type::INTERVAL);
        assert!(m.contains("postgres.types"), "{m}");
        refused(Value::String("{a,b}".into()), Type::TEXT_ARRAY);
    }
}
