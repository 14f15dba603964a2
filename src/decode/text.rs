//! Text column values as a [`super::Value`] holds them: [`Text`]. A short
//! text (up to [`INLINE`] bytes: most codes, names, ids) is held in place,
//! with no allocation. A longer one is a slice of the Kafka record's own
//! buffer (`bytes::Bytes`) where the JSON string had no escapes, so that
//! decoding it costs a reference count instead of a `String`; a longer
//! string that had escapes (or came from Avro, a mapping expression, a
//! test) owns its buffer instead. Copying a row image (the mapping's
//! `shape`) then copies no text either.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

/// The longest text held in place. With the length byte it fits beside
/// the niche of `Bytes`, so a `Text` is no larger than a `Bytes`.
pub const INLINE: usize = 22;

/// A text value: UTF-8 bytes, held in place when short, else shared with
/// the record they were read from where possible.
#[derive(Clone)]
pub struct Text(Repr);

/// Always valid UTF-8: every constructor takes a `str` (or a `String`).
#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Bytes),
}

impl Default for Text {
    fn default() -> Text {
        Text(Repr::Inline { len: 0, bytes: [0; INLINE] })
    }
}

impl Text {
    /// `s` held in place when it is short; `None` when it is not.
    fn inline(s: &str) -> Option<Text> {
        let len = u8::try_from(s.len()).ok().filter(|l| usize::from(*l) <= INLINE)?;
        let mut bytes = [0; INLINE];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(Text(Repr::Inline { len, bytes }))
    }

    /// `s` held in place when short, else as a slice of `record` when it
    /// lies inside it (serde_json hands out such borrowed strings when they
    /// had no escapes), else a copy.
    pub fn within(record: &Bytes, s: &str) -> Text {
        if let Some(t) = Text::inline(s) {
            return t;
        }
        let (start, end) = (record.as_ptr() as usize, record.as_ptr() as usize + record.len());
        let at = s.as_ptr() as usize;
        if at >= start && at.checked_add(s.len()).is_some_and(|e| e <= end) {
            Text(Repr::Shared(record.slice_ref(s.as_bytes())))
        } else {
            Text::from(s)
        }
    }

    /// The text `value` displays as, held in place when short (a numeric
    /// document id, say), so that forming it allocates nothing.
    pub fn display(value: impl fmt::Display) -> Text {
        struct Place {
            len: usize,
            bytes: [u8; INLINE],
            spilled: Option<String>,
        }
        impl fmt::Write for Place {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                match &mut self.spilled {
                    Some(long) => long.push_str(s),
                    None if self.len + s.len() <= INLINE => {
                        self.bytes[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
                        self.len += s.len();
                    }
                    None => {
                        // Only whole `str`s were copied in, so this prefix is UTF-8.
                        let mut long = String::from_utf8_lossy(&self.bytes[..self.len]).into_owned();
                        long.push_str(s);
                        self.spilled = Some(long);
                    }
                }
                Ok(())
            }
        }
        let mut place = Place { len: 0, bytes: [0; INLINE], spilled: None };
        // Writing into memory cannot fail; a Display impl that reports an
        // error anyway leaves what it wrote so far.
        let _ = fmt::write(&mut place, format_args!("{value}"));
        match place.spilled {
            Some(long) => Text::from(long),
            // `len <= INLINE` (22) fits a u8.
            None => Text(Repr::Inline { len: place.len as u8, bytes: place.bytes }),
        }
    }

    pub fn as_str(&self) -> &str {
        let bytes = match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(b) => &b[..],
        };
        // SAFETY: the bytes came from a `str` or a `String` (see the
        // constructors: whole strs are copied in, never parts of one) and
        // are never changed, so they are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// Whether this text shares `record`'s buffer (no copy was made).
    #[cfg(test)]
    pub(crate) fn shares(&self, record: &Bytes) -> bool {
        let Repr::Shared(b) = &self.0 else { return false };
        let r = record.as_ptr_range();
        let s = b.as_ptr_range();
        r.start <= s.start && s.end <= r.end
    }

    /// Whether this text is held in place (no buffer at all).
    #[cfg(test)]
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::inline(s).unwrap_or_else(|| Text(Repr::Shared(Bytes::copy_from_slice(s.as_bytes()))))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        // A short one is copied in place (and its buffer freed); a longer
        // one's buffer is taken over, not copied.
        Text::inline(&s).unwrap_or_else(|| Text(Repr::Shared(Bytes::from(s.into_bytes()))))
    }
}

impl From<std::borrow::Cow<'_, str>> for Text {
    fn from(s: std::borrow::Cow<'_, str>) -> Text {
        match s {
            std::borrow::Cow::Borrowed(s) => Text::from(s),
            std::borrow::Cow::Owned(s) => Text::from(s),
        }
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Text {
        Text::from(s.as_str())
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.as_str().to_string()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    // As `str` hashes, so that `Borrow<str>` look-ups agree.
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Comparisons with plain strings, both ways.
macro_rules! str_eq {
    ($t:ty) => {
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                &**self == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                &**self == *other
            }
        }
        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                &**self == other.as_str()
            }
        }
        impl PartialEq<$t> for str {
            fn eq(&self, other: &$t) -> bool {
                self == &**other
            }
        }
        impl PartialEq<$t> for &str {
            fn eq(&self, other: &$t) -> bool {
                *self == &**other
            }
        }
        impl PartialEq<$t> for String {
            fn eq(&self, other: &$t) -> bool {
                self.as_str() == &**other
            }
        }
    };
}

str_eq!(Text);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_compares_prints_and_serializes_as_its_string() {
        let t = Text::from("Ünïcode \"x\"");
        assert_eq!(t, "Ünïcode \"x\"");
        assert_eq!(String::from("Ünïcode \"x\""), t);
        assert_eq!(format!("{t}"), "Ünïcode \"x\"");
        assert_eq!(format!("{t:?}"), format!("{:?}", "Ünïcode \"x\""));
        assert_eq!(serde_json::to_string(&t).unwrap(), serde_json::to_string("Ünïcode \"x\"").unwrap());
        assert_eq!(Text::from(String::from("a")), Text::from("a"));
        assert_eq!(Text::from("a").cmp(&Text::from("b")), Ordering::Less);
    }

    #[test]
    fn a_long_string_inside_the_record_is_shared_and_one_outside_is_copied() {
        let record = Bytes::from_static(br#"{"a":"Mien Dong bus station, gate 3"}"#);
        let inside = std::str::from_utf8(&record[6..35]).unwrap();
        let t = Text::within(&record, inside);
        assert_eq!(t, "Mien Dong bus station, gate 3");
        assert!(t.shares(&record));

        let outside = String::from("Mien Dong bus station, gate 3");
        let u = Text::within(&record, &outside);
        assert_eq!(u, t);
        assert!(!u.shares(&record) && !u.is_inline());
    }

    #[test]
    fn a_short_string_is_held_in_place_wherever_it_comes_from() {
        let record = Bytes::from_static(br#"{"a":"TripId"}"#);
        let t = Text::within(&record, std::str::from_utf8(&record[6..12]).unwrap());
        assert!(t.is_inline() && !t.shares(&record));
        assert_eq!(t, "TripId");
        let longest = "x".repeat(INLINE);
        for s in ["", "é", longest.as_str()] {
            assert!(Text::from(s).is_inline(), "{s:?}");
            assert!(Text::from(s.to_string()).is_inline(), "{s:?}");
            assert_eq!(Text::from(s), s);
        }
        let over = "x".repeat(INLINE + 1);
        assert!(!Text::from(over.as_str()).is_inline());
        assert_eq!(Text::from(over.as_str()), over);
        assert_eq!(Text::from("a"), Text::from("a".repeat(40)[..1].to_string()));
        assert_eq!(std::mem::size_of::<Text>(), std::mem::size_of::<Bytes>(), "held in place at no cost in size");
    }

    #[test]
    fn displayed_values_are_held_in_place_until_they_spill() {
        assert_eq!(Text::display(-9_223_372_036_854_775_808i64), "-9223372036854775808");
        assert!(Text::display(u64::MAX).is_inline());
        let spilled = Text::display(format_args!("{}-{}", "ä".repeat(10), "ü".repeat(10)));
        assert_eq!(spilled, format!("{}-{}", "ä".repeat(10), "ü".repeat(10)));
        assert!(!spilled.is_inline());
    }
}
