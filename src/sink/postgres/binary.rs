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

/// A value to encode for the column type PostgreSQL asks for.
#[derive(Debug)]
pub struct Cell<'a>(pub &'a Value);

type BoxError = Box<dyn Error + Sync + Send>;

fn bad(v: &Value, ty: &Type) -> BoxError {
    format!("cannot store {v:?} in a {ty} column").into()
}

impl ToSql for Cell<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let v = self.0;
        if matches!(v, Value::Null | Value::Unavailable) {
            return Ok(IsNull::Yes);
        }
        match *ty {
            Type::BOOL => out.put_u8(match v {
                Value::Bool(b) => *b as u8,
                Value::Int(i) => (*i != 0) as u8,
                _ => return Err(bad(v, ty)),
            }),
            Type::INT2 => out.put_i16(i16::try_from(int(v).ok_or_else(|| bad(v, ty))?)?),
            Type::INT4 => out.put_i32(i32::try_from(int(v).ok_or_else(|| bad(v, ty))?)?),
            Type::INT8 => out.put_i64(int(v).ok_or_else(|| bad(v, ty))?),
            Type::FLOAT4 => out.put_f32(float(v).ok_or_else(|| bad(v, ty))? as f32),
            Type::FLOAT8 => out.put_f64(float(v).ok_or_else(|| bad(v, ty))?),
            Type::NUMERIC => match v {
                Value::Decimal { unscaled, scale } => numeric(out, *unscaled, *scale),
                Value::Int(i) => numeric(out, *i as i128, 0),
                Value::Float(f) if f.is_nan() => {
                    out.put_i16(0);
                    out.put_i16(0);
                    out.put_u16(0xC000);
                    out.put_u16(0);
                }
                Value::String(s) => match value::parse_decimal_text(s) {
                    Some(Value::Decimal { unscaled, scale }) => numeric(out, unscaled, scale),
                    _ => return Err(bad(v, ty)),
                },
                _ => return Err(bad(v, ty)),
            },
            Type::BYTEA => match v {
                Value::Bytes(b) => out.put_slice(b),
                _ => return Err(bad(v, ty)),
            },
            Type::UUID => out.put_slice(&uuid(&expr::text(v)).ok_or_else(|| bad(v, ty))?),
            Type::DATE => match v {
                Value::Date(d) => out.put_i32((*d as i64 - PG_EPOCH_DAYS) as i32),
                _ => return Err(bad(v, ty)),
            },
            Type::TIME => match v {
                Value::Time(ns) => out.put_i64(ns / 1_000),
                _ => return Err(bad(v, ty)),
            },
            Type::TIMESTAMP => match v {
                Value::Timestamp(ns) => out.put_i64(pg_micros(*ns).ok_or_else(|| bad(v, ty))?),
                _ => return Err(bad(v, ty)),
            },
            Type::TIMESTAMPTZ => match v {
                Value::ZonedTimestamp(s) => out.put_i64(zoned_micros(s).ok_or_else(|| bad(v, ty))? - PG_EPOCH_MICROS),
                // A wall clock stored as timestamptz: taken as UTC, as Debezium encodes it.
                Value::Timestamp(ns) => out.put_i64(pg_micros(*ns).ok_or_else(|| bad(v, ty))?),
                _ => return Err(bad(v, ty)),
            },
            Type::JSONB => {
                out.put_u8(1);
                match v {
                    Value::Json(j) => out.put_slice(serde_json::to_string(j)?.as_bytes()),
                    Value::String(s) if serde_json::from_str::<serde_json::Value>(s).is_ok() => {
                        out.put_slice(s.as_bytes())
                    }
                    other => out.put_slice(serde_json::to_string(&expr::text(other))?.as_bytes()),
                }
            }
            Type::JSON => match v {
                Value::Json(j) => out.put_slice(serde_json::to_string(j)?.as_bytes()),
                other => out.put_slice(serde_json::to_string(&expr::text(other))?.as_bytes()),
            },
            // text, varchar, char, xml and anything else textual.
            _ => match v {
                Value::Json(j) => out.put_slice(serde_json::to_string(j)?.as_bytes()),
                other => out.put_slice(expr::text(other).as_bytes()),
            },
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Nanoseconds since 1970 → microseconds since 2000 (PostgreSQL keeps µs).
fn pg_micros(ns: i128) -> Option<i64> {
    i64::try_from(ns.div_euclid(1_000) - PG_EPOCH_MICROS as i128).ok()
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(*b as i64),
        Value::String(s) => s.trim().parse().ok(),
        Value::Decimal { unscaled, scale: 0 } => i64::try_from(*unscaled).ok(),
        _ => None,
    }
}

fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        Value::Decimal { unscaled, scale } => value::decimal_text(*unscaled, *scale).parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `numeric` binary: ndigits, weight, sign, dscale, then base-10000 digits.
fn numeric(out: &mut BytesMut, unscaled: i128, scale: u32) {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
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
        s.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or("0").parse::<i16>().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    let mut groups = group(&int_part);
    let mut weight = groups.len() as i16 - 1;
    groups.extend(group(&frac_part));
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight);
    out.put_u16(if unscaled < 0 { 0x4000 } else { 0 });
    out.put_u16(scale as u16);
    for g in groups {
        out.put_i16(g);
    }
}

fn uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2018-07-13T12:23:45.456+11:00` / `...Z` → microseconds since 1970 UTC.
pub fn zoned_micros(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, dd): (i64, u32, u32) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let (clock, offset_secs) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else {
        let pos = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let mut hm = off[1..].split(':');
        let h: i64 = hm.next()?.parse().ok()?;
        let mi: i64 = hm.next().unwrap_or("0").parse().ok()?;
        (c, sign * (h * 3600 + mi * 60))
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let (h, mi, sec): (i64, i64, i64) =
        (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next().unwrap_or("0").parse().ok()?);
    let micros: i64 = if frac.is_empty() { 0 } else { format!("{:0<6}", &frac[..frac.len().min(6)]).parse().ok()? };
    let secs = days_from_civil(y, m, dd) * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Some(secs * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: Value, ty: Type) -> Vec<u8> {
        let mut out = BytesMut::new();
        Cell(&v).to_sql(&ty, &mut out).unwrap();
        out.to_vec()
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
        assert_eq!(days_from_civil(2000, 1, 1), PG_EPOCH_DAYS);
    }

    #[test]
    fn timestamps_use_the_2000_epoch_and_truncate_nanoseconds() {
        assert_eq!(enc(Value::Timestamp(946_684_800_000_001_999), Type::TIMESTAMP), 1i64.to_be_bytes().to_vec());
        assert_eq!(enc(Value::Date(PG_EPOCH_DAYS as i32 + 1), Type::DATE), 1i32.to_be_bytes().to_vec());
    }

    #[test]
    fn a_value_that_does_not_fit_is_an_error_not_a_wrap() {
        let mut out = BytesMut::new();
        assert!(Cell(&Value::Int(40_000)).to_sql(&Type::INT2, &mut out).is_err());
        assert!(Cell(&Value::String("x".into())).to_sql(&Type::INT8, &mut out).is_err());
    }
}
