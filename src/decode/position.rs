//! Source positions: where in the source database's log a change happened.
//!
//! Every sink's guard compares positions to decide whether an event is newer
//! than what the sink already holds. A position is kept as a fixed-width,
//! lower-case hex string so that byte order equals log order; sinks can store
//! it as an opaque keyword/text column and compare it without knowing which
//! connector produced it.
//!
//! SQL Server orders changes by `(commit_lsn, change_lsn, event_serial_no)`.
//! Each LSN is 10 bytes (`%08x:%08x:%04x`). Snapshot reads carry the snapshot's
//! `commit_lsn` and a null `change_lsn`/`event_serial_no`; they sort before any
//! streamed change with the same `commit_lsn`, which is what we want: a
//! streamed change committed at that LSN is newer than the snapshot's image.
//! PostgreSQL (used by the real-connector tests) orders by the 64-bit `lsn`.

use std::fmt;

/// A totally ordered position in one source database's change log.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePosition(String);

/// Why a `source` block could not be turned into a position.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PositionError {
    #[error("source.{field} is missing; a Debezium SQL Server event needs it to be ordered")]
    Missing { field: &'static str },
    #[error("source.{field} = {value:?} is not an LSN of the form xxxxxxxx:xxxxxxxx:xxxx")]
    BadLsn { field: &'static str, value: String },
    #[error("source.{field} = {value} is not a non-negative integer")]
    BadNumber { field: &'static str, value: String },
    #[error("source.connector = {0:?} is not supported; projector orders sqlserver and postgresql events")]
    UnsupportedConnector(String),
}

/// Width of one SQL Server LSN in hex digits (10 bytes).
const LSN_HEX: usize = 20;

impl SourcePosition {
    /// Reads the position out of a Debezium `source` block.
    pub fn from_source(source: &serde_json::Map<String, serde_json::Value>) -> Result<Self, PositionError> {
        let connector = source.get("connector").and_then(|v| v.as_str()).unwrap_or("");
        match connector {
            "sqlserver" => Self::sqlserver(source),
            "postgresql" => Self::postgresql(source),
            other => Err(PositionError::UnsupportedConnector(other.to_string())),
        }
    }

    fn sqlserver(source: &serde_json::Map<String, serde_json::Value>) -> Result<Self, PositionError> {
        // One buffer for the whole position: this runs once per event.
        let mut out = String::with_capacity(2 * LSN_HEX + 16);
        match source.get("commit_lsn") {
            Some(serde_json::Value::String(s)) => push_lsn(&mut out, "commit_lsn", s)?,
            _ => return Err(PositionError::Missing { field: "commit_lsn" }),
        }
        match source.get("change_lsn") {
            Some(serde_json::Value::String(s)) => push_lsn(&mut out, "change_lsn", s)?,
            // Snapshot reads have no change_lsn: all zeroes sorts first.
            _ => out.push_str(ZERO_LSN),
        }
        let serial = match source.get("event_serial_no") {
            None | Some(serde_json::Value::Null) => 0,
            Some(v) => non_negative("event_serial_no", v)?,
        };
        push_hex16(&mut out, serial);
        Ok(SourcePosition(out))
    }

    /// A SQL Server position from `source` fields the caller already read
    /// (the decoder's fast path): `change_lsn` is `None` when it was not a
    /// string, `serial` is 0 when `event_serial_no` was absent or null.
    /// Same result as [`SourcePosition::from_source`] on those fields.
    pub(crate) fn sqlserver_parts(
        commit_lsn: &str,
        change_lsn: Option<&str>,
        serial: u64,
    ) -> Result<Self, PositionError> {
        let mut out = String::with_capacity(2 * LSN_HEX + 16);
        push_lsn(&mut out, "commit_lsn", commit_lsn)?;
        match change_lsn {
            Some(s) => push_lsn(&mut out, "change_lsn", s)?,
            None => out.push_str(ZERO_LSN),
        }
        push_hex16(&mut out, serial);
        Ok(SourcePosition(out))
    }

    fn postgresql(source: &serde_json::Map<String, serde_json::Value>) -> Result<Self, PositionError> {
        let lsn = match source.get("lsn") {
            None | Some(serde_json::Value::Null) => return Err(PositionError::Missing { field: "lsn" }),
            Some(v) => non_negative("lsn", v)?,
        };
        Ok(Self::postgresql_lsn(lsn))
    }

    /// A PostgreSQL position from an `lsn` the caller already read.
    pub(crate) fn postgresql_lsn(lsn: u64) -> Self {
        let mut out = String::with_capacity(16);
        push_hex16(&mut out, lsn);
        SourcePosition(out)
    }

    /// The canonical hex form stored by sinks.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a position from its stored form (as read back from a sink).
    pub fn from_stored(s: impl Into<String>) -> Self {
        SourcePosition(s.into())
    }
}

impl fmt::Debug for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourcePosition({})", self.0)
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const ZERO_LSN: &str = "00000000000000000000";

/// Appends an LSN `xxxxxxxx:xxxxxxxx:xxxx` as 20 lower-case hex digits,
/// each part left-padded with zeroes.
fn push_lsn(out: &mut String, field: &'static str, s: &str) -> Result<(), PositionError> {
    let bad = || PositionError::BadLsn { field, value: s.to_string() };
    let mut parts = s.split(':');
    for width in [8, 8, 4] {
        let part = parts.next().ok_or_else(bad)?;
        if part.is_empty() || part.len() > width || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        for _ in part.len()..width {
            out.push('0');
        }
        out.extend(part.chars().map(|c| c.to_ascii_lowercase()));
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(())
}

/// Appends `n` as 16 lower-case hex digits (`{n:016x}`).
fn push_hex16(out: &mut String, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((n >> (shift * 4)) & 0xf) as usize] as char);
    }
}

fn non_negative(field: &'static str, v: &serde_json::Value) -> Result<u64, PositionError> {
    let bad = || PositionError::BadNumber { field, value: v.to_string() };
    match v {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(bad),
        // Debezium's docs show event_serial_no as a string; accept both.
        serde_json::Value::String(s) => s.parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pos(v: serde_json::Value) -> Result<SourcePosition, PositionError> {
        SourcePosition::from_source(v.as_object().unwrap())
    }

    fn ss(commit: &str, change: Option<&str>, serial: Option<u64>) -> SourcePosition {
        pos(json!({"connector": "sqlserver", "commit_lsn": commit, "change_lsn": change, "event_serial_no": serial}))
            .unwrap()
    }

    #[test]
    fn sqlserver_orders_by_commit_then_change_then_serial() {
        let a = ss("0000002a:00000310:0003", Some("0000002a:00000308:0002"), Some(1));
        let b = ss("0000002a:00000310:0003", Some("0000002a:00000308:0002"), Some(2));
        let c = ss("0000002a:00000310:0003", Some("0000002a:00000309:0001"), Some(1));
        let d = ss("0000002a:00000311:0000", Some("0000002a:00000300:0000"), Some(1));
        assert!(a < b && b < c && c < d);
    }

    #[test]
    fn lsn_hex_compares_numerically_not_textually() {
        // 0x10 > 0x9 although "10" < "9" as text in a non-padded form.
        let small = ss("00000009:00000000:0001", None, None);
        let big = ss("00000010:00000000:0001", None, None);
        assert!(small < big);
        let upper = ss("0000000A:00000000:0001", None, None);
        assert_eq!(upper, ss("0000000a:00000000:0001", None, None));
    }

    #[test]
    fn snapshot_read_sorts_before_streamed_change_at_same_commit() {
        let snapshot = ss("0000002a:00000310:0003", None, None);
        let streamed = ss("0000002a:00000310:0003", Some("0000002a:00000310:0002"), Some(1));
        assert!(snapshot < streamed);
    }

    #[test]
    fn serial_above_nine_orders_numerically() {
        let nine = ss("00000001:00000001:0001", Some("00000001:00000001:0001"), Some(9));
        let ten = ss("00000001:00000001:0001", Some("00000001:00000001:0001"), Some(10));
        assert!(nine < ten);
    }

    #[test]
    fn string_serial_is_accepted() {
        let p = pos(json!({"connector": "sqlserver", "commit_lsn": "00000001:00000001:0001", "change_lsn": "00000001:00000001:0001", "event_serial_no": "2"})).unwrap();
        assert_eq!(p, ss("00000001:00000001:0001", Some("00000001:00000001:0001"), Some(2)));
    }

    #[test]
    fn malformed_lsn_is_named() {
        let err = pos(json!({"connector": "sqlserver", "commit_lsn": "zz:00:00"})).unwrap_err();
        assert_eq!(err, PositionError::BadLsn { field: "commit_lsn", value: "zz:00:00".into() });
        let err = pos(json!({"connector": "sqlserver"})).unwrap_err();
        assert_eq!(err, PositionError::Missing { field: "commit_lsn" });
        let err = pos(json!({"connector": "mysql"})).unwrap_err();
        assert!(matches!(err, PositionError::UnsupportedConnector(_)));
    }

    #[test]
    fn hex_forms_match_format() {
        for n in [0, 1, 0xabc, u64::MAX, 1 << 63] {
            let mut s = String::new();
            push_hex16(&mut s, n);
            assert_eq!(s, format!("{n:016x}"));
        }
        let p = ss("A:B1:c", Some("0000002a:00000310:0003"), Some(300));
        assert_eq!(p.as_str(), "0000000a000000b1000c0000002a000003100003000000000000012c");
        assert_eq!(SourcePosition::sqlserver_parts("A:B1:c", Some("0000002a:00000310:0003"), 300).unwrap(), p);
        assert_eq!(SourcePosition::sqlserver_parts("A:B1:c", None, 0).unwrap(), ss("A:B1:c", None, None));
        for bad in ["1:2", "1:2:3:4", "1::3", "123456789:0:0", "1:2:12345", "g:0:0"] {
            assert!(
                matches!(pos(json!({"connector": "sqlserver", "commit_lsn": bad})), Err(PositionError::BadLsn { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn postgresql_orders_by_lsn() {
        let a = pos(json!({"connector": "postgresql", "lsn": 9})).unwrap();
        let b = pos(json!({"connector": "postgresql", "lsn": 16})).unwrap();
        assert!(a < b);
    }
}
