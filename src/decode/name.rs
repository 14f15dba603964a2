//! Column names as a [`super::Row`] holds them: [`Name`], interned once per
//! schema by the decoder, so that each row image shares its schema's names
//! (a reference count each) instead of copying a `String` per column; a row
//! then costs one allocation for its names (its column vector).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A column name, interned per schema.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(Arc<str>);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name(Arc::from(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name(Arc::from(s))
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Name {
        Name(Arc::from(s.as_str()))
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0.to_string()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Comparisons with plain strings, both ways, for [`Name`].
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

str_eq!(Name);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_print_and_serialize_as_their_strings() {
        let n = Name::from("TripId");
        assert_eq!(n, "TripId");
        assert_eq!(String::from("TripId"), n);
        assert_eq!(format!("{n:?} {n}"), "\"TripId\" TripId");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"TripId\"");
    }

    #[test]
    fn clones_share_one_buffer() {
        let n = Name::from("TripId");
        let m = n.clone();
        assert!(std::ptr::eq(n.as_str(), m.as_str()));
    }
}
