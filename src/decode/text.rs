//! Text column values as a [`super::Value`] holds them: [`Text`], a slice of
//! the Kafka record's own buffer (`bytes::Bytes`) where the JSON string had
//! no escapes, so that decoding a text column costs a reference count
//! instead of a `String`; a string that had escapes (or came from Avro, a
//! mapping expression, a test) owns its buffer instead. Copying a row image
//! (the mapping's `shape`) then copies no text either.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

/// A text value: UTF-8 bytes, shared with the record they were read from
/// where possible.
#[derive(Clone, Default)]
pub struct Text(
    /// Always valid UTF-8: every constructor takes a `str` (or a `String`).
    Bytes,
);

impl Text {
    /// `s` as a slice of `record` when it lies inside it (serde_json hands
    /// out such borrowed strings when they had no escapes), else a copy.
    pub fn within(record: &Bytes, s: &str) -> Text {
        let (start, end) = (record.as_ptr() as usize, record.as_ptr() as usize + record.len());
        let at = s.as_ptr() as usize;
        if at >= start && at.checked_add(s.len()).is_some_and(|e| e <= end) {
            Text(record.slice_ref(s.as_bytes()))
        } else {
            Text::from(s)
        }
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: the bytes came from a `str` or a `String` (see the
        // constructors) and are never changed, so they are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// Whether this text shares `record`'s buffer (no copy was made).
    #[cfg(test)]
    pub(crate) fn shares(&self, record: &Bytes) -> bool {
        let r = record.as_ptr_range();
        let s = self.0.as_ptr_range();
        r.start <= s.start && s.end <= r.end
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
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        // Takes over the String's buffer: no copy.
        Text(Bytes::from(s.into_bytes()))
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
        self.0 == other.0
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
    fn a_string_inside_the_record_is_shared_and_one_outside_is_copied() {
        let record = Bytes::from_static(br#"{"a":"TripId"}"#);
        let inside = std::str::from_utf8(&record[6..12]).unwrap();
        let t = Text::within(&record, inside);
        assert_eq!(t, "TripId");
        assert!(t.shares(&record));

        let outside = String::from("TripId");
        let u = Text::within(&record, &outside);
        assert_eq!(u, "TripId");
        assert!(!u.shares(&record));
    }
}
