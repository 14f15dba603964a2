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
//!
//! Every event and document carries one, so the hex text lives in a fixed
//! inline buffer: reading a position from a record and copying it into a
//! document allocate nothing. Only a stored form longer than any position
//! projector writes (read back from a sink) is kept on the heap.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A totally ordered position in one source database's change log.
#[derive(Clone)]
pub struct SourcePosition(Repr);

/// Width of one SQL Server LSN in hex digits (10 bytes).
const LSN_HEX: usize = 20;

/// The longest position projector writes: SQL Server's two LSNs and a
/// 16-digit serial number.
const INLINE: usize = 2 * LSN_HEX + 16;

#[derive(Clone)]
enum Repr {
    /// `len` bytes of text (ASCII hex, or any stored form that fits).
    Inline { len: u8, text: [u8; INLINE] },
    /// A stored form longer than [`INLINE`]: not one projector wrote, but
    /// still compared as the text it is.
    Long(Arc<str>),
}

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

/// A position's hex text as it is written, in place.
struct HexText {
    len: usize,
    text: [u8; INLINE],
}

impl HexText {
    fn new() -> HexText {
        HexText { len: 0, text: [0; INLINE] }
    }

    /// Appends `n` copies of `b`. The writers below never exceed [`INLINE`]
    /// (a SQL Server position is exactly that long); a write past it is
    /// dropped rather than panicking.
    fn pad(&mut self, b: u8, n: usize) {
        if let Some(slots) = self.text.get_mut(self.len..self.len + n) {
            slots.fill(b);
            self.len += n;
        }
    }

    /// Appends `bytes` in lower case, or nothing when they would not fit.
    fn extend_lower(&mut self, bytes: &[u8]) {
        if let Some(slots) = self.text.get_mut(self.len..self.len + bytes.len()) {
            slots.copy_from_slice(bytes);
            slots.make_ascii_lowercase();
            self.len += bytes.len();
        }
    }

    fn finish(self) -> SourcePosition {
        // `len` never exceeds INLINE (56), so it fits a u8.
        let len = u8::try_from(self.len.min(INLINE)).unwrap_or(0);
        SourcePosition(Repr::Inline { len, text: self.text })
    }
}

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
        let mut out = HexText::new();
        match source.get("commit_lsn") {
            Some(serde_json::Value::String(s)) => push_lsn(&mut out, "commit_lsn", s)?,
            _ => return Err(PositionError::Missing { field: "commit_lsn" }),
        }
        match source.get("change_lsn") {
            Some(serde_json::Value::String(s)) => push_lsn(&mut out, "change_lsn", s)?,
            // Snapshot reads have no change_lsn: all zeroes sorts first.
            _ => push_zero_lsn(&mut out),
        }
        let serial = match source.get("event_serial_no") {
            None | Some(serde_json::Value::Null) => 0,
            Some(v) => non_negative("event_serial_no", v)?,
        };
        push_hex16(&mut out, serial);
        Ok(out.finish())
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
        let mut out = HexText::new();
        push_lsn(&mut out, "commit_lsn", commit_lsn)?;
        match change_lsn {
            Some(s) => push_lsn(&mut out, "change_lsn", s)?,
            None => push_zero_lsn(&mut out),
        }
        push_hex16(&mut out, serial);
        Ok(out.finish())
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
        let mut out = HexText::new();
        push_hex16(&mut out, lsn);
        out.finish()
    }

    /// The canonical hex form stored by sinks.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, text } => {
                let text = text.get(..usize::from(*len)).unwrap_or_default();
                // SAFETY: the bytes are either ASCII hex written by HexText,
                // or a whole `str` copied by `from_stored`, so valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(text) }
            }
            Repr::Long(s) => s,
        }
    }

    /// Rebuilds a position from its stored form (as read back from a sink).
    pub fn from_stored(s: impl AsRef<str>) -> Self {
        let s = s.as_ref();
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= INLINE => {
                let mut text = [0; INLINE];
                text[..s.len()].copy_from_slice(s.as_bytes());
                SourcePosition(Repr::Inline { len, text })
            }
            _ => SourcePosition(Repr::Long(Arc::from(s))),
        }
    }
}

impl PartialEq for SourcePosition {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SourcePosition {}

impl PartialOrd for SourcePosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SourcePosition {
    /// Byte order of the hex text, which is log order.
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for SourcePosition {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourcePosition({})", self.as_str())
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Appends an LSN `xxxxxxxx:xxxxxxxx:xxxx` as 20 lower-case hex digits,
/// each part left-padded with zeroes.
fn push_lsn(out: &mut HexText, field: &'static str, s: &str) -> Result<(), PositionError> {
    let bad = || PositionError::BadLsn { field, value: s.to_string() };
    let mut rest = s.as_bytes();
    for (i, width) in [8, 8, 4].into_iter().enumerate() {
        // The last part runs to the end: a third ':' makes it non-hex.
        let end = if i < 2 { rest.iter().position(|b| *b == b':').ok_or_else(bad)? } else { rest.len() };
        let part = &rest[..end];
        if part.is_empty() || part.len() > width || !part.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad());
        }
        out.pad(b'0', width - part.len());
        out.extend_lower(part);
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    Ok(())
}

fn push_zero_lsn(out: &mut HexText) {
    out.pad(b'0', LSN_HEX);
}

/// Appends `n` as 16 lower-case hex digits (`{n:016x}`).
fn push_hex16(out: &mut HexText, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((n >> ((15 - i) * 4)) & 0xf) as usize];
    }
    out.extend_lower(&digits);
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
            assert_eq!(SourcePosition::postgresql_lsn(n).as_str(), format!("{n:016x}"));
        }
        let p = ss("A:B1:c", Some("0000002a:00000310:0003"), Some(300));
        assert_eq!(p.as_str(), "0000000a000000b1000c0000002a000003100003000000000000012c");
        assert_eq!(SourcePosition::sqlserver_parts("A:B1:c", Some("0000002a:00000310:0003"), 300).unwrap(), p);
        assert_eq!(SourcePosition::sqlserver_parts("A:B1:c", None, 0).unwrap(), ss("A:B1:c", None, None));
        for bad in [
            "1:2",
            "1:2:3:4",
            "1::3",
            "123456789:0:0",
            "1:2:12345",
            "g:0:0",
            "",
            ":1:2",
            "1:2:",
            "1:2:3:",
            "1:2:3 ",
            "é:0:0",
        ] {
            assert!(
                matches!(pos(json!({"connector": "sqlserver", "commit_lsn": bad})), Err(PositionError::BadLsn { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn stored_forms_of_any_length_compare_as_their_text() {
        let long = "f".repeat(INLINE + 1);
        let (short, full) = (SourcePosition::from_stored("ff"), SourcePosition::from_stored(&long));
        assert_eq!(full.as_str(), long);
        assert!(SourcePosition::from_stored("") < short && short < full);
        let written = ss("0000002a:00000310:0003", Some("0000002a:00000308:0002"), Some(1));
        assert_eq!(SourcePosition::from_stored(written.as_str()), written);
        assert_eq!(written.as_str().len(), INLINE);
    }

    #[test]
    fn postgresql_orders_by_lsn() {
        let a = pos(json!({"connector": "postgresql", "lsn": 9})).unwrap();
        let b = pos(json!({"connector": "postgresql", "lsn": 16})).unwrap();
        assert!(a < b);
    }
}
