//! A row's ordered columns as a [`super::Row`] holds them: [`Columns`], a
//! vector that holds a single column in place. A record key is nearly
//! always one column, and decoding it then costs no allocation; a row image
//! with more columns has one buffer, sized once from its schema.

use std::fmt;
use std::ops::{Deref, DerefMut};

use super::{Name, Value};

/// One column: its name and value.
pub type Column = (Name, Value);

/// Ordered columns; one of them is held in place.
#[derive(Clone, Default)]
pub struct Columns(Repr);

#[derive(Clone, Default)]
enum Repr {
    #[default]
    Empty,
    One([Column; 1]),
    Many(Vec<Column>),
}

impl Columns {
    /// Room for `n` columns: none is allocated for one.
    pub fn with_capacity(n: usize) -> Columns {
        Columns(if n <= 1 { Repr::Empty } else { Repr::Many(Vec::with_capacity(n)) })
    }

    #[inline]
    pub fn push(&mut self, column: Column) {
        if let Repr::Many(many) = &mut self.0 {
            many.push(column);
            return;
        }
        self.0 = match std::mem::take(&mut self.0) {
            Repr::One([first]) => {
                let mut many = Vec::with_capacity(4);
                many.extend([first, column]);
                Repr::Many(many)
            }
            _ => Repr::One([column]),
        };
    }

    /// Keeps the columns for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Column) -> bool) {
        match &mut self.0 {
            Repr::Empty => {}
            Repr::One([c]) => {
                if !keep(c) {
                    self.0 = Repr::Empty;
                }
            }
            Repr::Many(many) => many.retain(keep),
        }
    }

    #[inline]
    pub fn as_slice(&self) -> &[Column] {
        match &self.0 {
            Repr::Empty => &[],
            Repr::One(one) => one,
            Repr::Many(many) => many,
        }
    }

    #[inline]
    fn as_mut_slice(&mut self) -> &mut [Column] {
        match &mut self.0 {
            Repr::Empty => &mut [],
            Repr::One(one) => one,
            Repr::Many(many) => many,
        }
    }
}

impl Deref for Columns {
    type Target = [Column];
    fn deref(&self) -> &[Column] {
        self.as_slice()
    }
}

impl DerefMut for Columns {
    fn deref_mut(&mut self) -> &mut [Column] {
        self.as_mut_slice()
    }
}

impl Extend<Column> for Columns {
    fn extend<I: IntoIterator<Item = Column>>(&mut self, columns: I) {
        for c in columns {
            self.push(c);
        }
    }
}

impl FromIterator<Column> for Columns {
    fn from_iter<I: IntoIterator<Item = Column>>(columns: I) -> Columns {
        let columns = columns.into_iter();
        let mut out = Columns::with_capacity(columns.size_hint().0);
        out.extend(columns);
        out
    }
}

impl From<Vec<Column>> for Columns {
    fn from(many: Vec<Column>) -> Columns {
        Columns(Repr::Many(many))
    }
}

/// The owned columns, in order.
pub enum IntoIter {
    One(std::option::IntoIter<Column>),
    Many(std::vec::IntoIter<Column>),
}

impl Iterator for IntoIter {
    type Item = Column;
    fn next(&mut self) -> Option<Column> {
        match self {
            IntoIter::One(one) => one.next(),
            IntoIter::Many(many) => many.next(),
        }
    }
}

impl IntoIterator for Columns {
    type Item = Column;
    type IntoIter = IntoIter;
    fn into_iter(self) -> IntoIter {
        match self.0 {
            Repr::Empty => IntoIter::One(None.into_iter()),
            Repr::One([c]) => IntoIter::One(Some(c).into_iter()),
            Repr::Many(many) => IntoIter::Many(many.into_iter()),
        }
    }
}

impl<'a> IntoIterator for &'a Columns {
    type Item = &'a Column;
    type IntoIter = std::slice::Iter<'a, Column>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl<'a> IntoIterator for &'a mut Columns {
    type Item = &'a mut Column;
    type IntoIter = std::slice::IterMut<'a, Column>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_mut_slice().iter_mut()
    }
}

impl PartialEq for Columns {
    fn eq(&self, other: &Columns) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<Vec<Column>> for Columns {
    fn eq(&self, other: &Vec<Column>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for Columns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, i: i64) -> Column {
        (Name::from(name), Value::Int(i))
    }

    #[test]
    fn columns_keep_their_order_through_every_size() {
        let mut c = Columns::default();
        assert!(c.is_empty());
        c.push(col("a", 1));
        assert_eq!(c, vec![col("a", 1)]);
        c.push(col("b", 2));
        c.extend([col("c", 3), col("d", 4), col("e", 5)]);
        assert_eq!(c.iter().map(|(n, _)| n.as_str()).collect::<String>(), "abcde");
        c.retain(|(n, _)| n != "b" && n != "d");
        assert_eq!(c.clone().into_iter().collect::<Vec<_>>(), vec![col("a", 1), col("c", 3), col("e", 5)]);
        for (_, v) in &mut c {
            *v = Value::Null;
        }
        assert!(c.iter().all(|(_, v)| *v == Value::Null));

        let mut one: Columns = [col("k", 7)].into_iter().collect();
        assert_eq!(one.as_slice(), &[col("k", 7)]);
        assert_eq!(one.clone().into_iter().count(), 1);
        one.retain(|_| false);
        assert_eq!(one, Columns::default());
        assert_eq!(format!("{:?}", Columns::from(vec![col("a", 1)])), format!("{:?}", vec![col("a", 1)]));
    }
}
