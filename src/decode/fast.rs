//! The fast path for the common record: a JSON envelope (or key) whose
//! Connect schema matched the topic's cached one.
//!
//! The payload is read straight into [`Row`]s with a streaming visitor,
//! instead of a `serde_json::Value` tree (an IndexMap with a SipHash and a
//! String per key) that is then converted. Only the fields decoding needs
//! are kept (`op`, `before`, `after`, a few `source` fields); column values
//! are typed as they are read.
//!
//! This path only has to be right when it succeeds: anything unusual (no
//! `op`, a duplicate field, columns out of schema order, a value that does
//! not match its type anywhere its schema declares one, a required field
//! missing or null, a signal-table row, an error of any kind) makes it
//! return `None`, and the caller decodes the record on the general path,
//! which gives the same result or the same error as before this path
//! existed. Values that are not among the common types are typed by the
//! general [`value::typed`] itself.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::value::{self, FieldType, MAX_DECIMAL_SCALE, SEMANTIC_NAMES, UNAVAILABLE_PLACEHOLDER, Value, ValueError};
use super::{Columns, Name, Op, Row, SIGNAL_TABLE, SourcePosition, Text};

/// How a column is typed on the fast path, worked out once per schema
/// from its [`FieldType`] so that no type names are compared per value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Kind {
    Int,
    Str,
    Bool,
    /// `org.apache.kafka.connect.data.Decimal` with its scale.
    Decimal(u32),
    /// A timestamp integer and its factor to nanoseconds.
    Timestamp(i128),
    /// Everything else goes through [`value::typed`].
    Other,
}

impl Kind {
    fn of(ty: &FieldType) -> Kind {
        match ty.name.as_deref() {
            // Mirrors value::typed: semantic names first, then the Connect
            // type (which alone types names value::typed does not know, such
            // as io.debezium.data.Enum).
            Some(name) if !SEMANTIC_NAMES.contains(&name) => Kind::of(&FieldType { name: None, ..ty.clone() }),
            None => match ty.connect.as_str() {
                "int8" | "int16" | "int32" | "int64" => Kind::Int,
                "string" => Kind::Str,
                "boolean" => Kind::Bool,
                _ => Kind::Other,
            },
            Some("org.apache.kafka.connect.data.Decimal") => {
                ty.scale.filter(|s| *s <= MAX_DECIMAL_SCALE).map_or(Kind::Other, Kind::Decimal)
            }
            Some("io.debezium.time.Timestamp") | Some("org.apache.kafka.connect.data.Timestamp") => {
                Kind::Timestamp(1_000_000)
            }
            Some("io.debezium.time.MicroTimestamp") => Kind::Timestamp(1_000),
            Some("io.debezium.time.NanoTimestamp") => Kind::Timestamp(1),
            Some(_) => Kind::Other,
        }
    }

    /// The kinds of a struct's fields, or `None` when two fields share a
    /// name: the fast path's positional match then could not rule out a
    /// duplicate column in the JSON (which the general path resolves as
    /// "last value wins").
    pub(super) fn of_fields(fields: &[(Name, FieldType)]) -> Option<Box<[Kind]>> {
        let unique = fields.iter().enumerate().all(|(i, (n, _))| fields[..i].iter().all(|(m, _)| m != n));
        unique.then(|| fields.iter().map(|(_, t)| Kind::of(t)).collect())
    }
}

/// A row struct's schema as the fast path uses it.
#[derive(Clone, Copy)]
pub(super) struct RowSchema<'s> {
    pub fields: &'s [(Name, FieldType)],
    pub kinds: &'s [Kind],
    /// Fields that must be present and not null.
    pub required: &'s [bool],
}

/// An envelope's schema as the fast path uses it: the row struct, and the
/// `source` block and scalar fields when the schema declares them.
#[derive(Clone, Copy)]
pub(super) struct EnvelopeSchema<'s> {
    pub row: RowSchema<'s>,
    pub source: Option<RowSchema<'s>>,
    pub scalars: Option<RowSchema<'s>>,
}

/// The most `source` fields the fast path tracks (one bit each).
pub(super) const MAX_BLOCK_FIELDS: usize = 64;

/// What the fast path read from an envelope.
pub(super) struct Envelope {
    pub op: Op,
    pub before: Option<Row>,
    pub after: Option<Row>,
    pub position: SourcePosition,
    pub source_ts_ms: Option<i64>,
}

/// Reads an envelope payload (a part of `record`, which text values then
/// share); `None` sends the record to the general path.
pub(super) fn envelope(record: &Bytes, payload: &[u8], schema: EnvelopeSchema<'_>) -> Option<Envelope> {
    // serde_json validates UTF-8 only in the strings it reads, not in the
    // ones it skips; the general path reads every string, so check all of it.
    let text = std::str::from_utf8(payload).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = de.deserialize_map(EnvelopeVisitor(schema, record)).ok()?;
    de.end().ok()?;
    let op = match raw.op? {
        Lite::Str(s) => match &*s {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            _ => return None,
        },
        _ => return None,
    };
    let source = raw.source?;
    if let Some(Lite::Str(t)) = &source.table
        && t.eq_ignore_ascii_case(SIGNAL_TABLE)
    {
        return None;
    }
    let position = source.position()?;
    let source_ts_ms = match source.ts_ms {
        Some(Lite::I64(n)) => Some(n),
        Some(Lite::U64(n)) => i64::try_from(n).ok(),
        _ => None,
    };
    let (before, after) = (raw.before.flatten(), raw.after.flatten());
    if after.is_none() && op != Op::Delete {
        return None;
    }
    Some(Envelope { op, before, after, position, source_ts_ms })
}

/// Reads a key payload (a part of `record`; a non-empty struct of the key columns).
pub(super) fn key(record: &Bytes, payload: &[u8], fields: RowSchema<'_>) -> Option<Row> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let row = RowSeed(fields, record).deserialize(&mut de).ok()?;
    de.end().ok()?;
    (!row.columns.is_empty()).then_some(row)
}

/// A JSON value read without building a tree: scalars borrowed from the
/// input where possible; objects and arrays (rare in row images) as JSON.
#[derive(Debug)]
enum Lite<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    Json(Json),
}

impl Lite<'_> {
    /// The `serde_json::Value` the general path would have read.
    fn into_json(self) -> Json {
        match self {
            Lite::Null => Json::Null,
            Lite::Bool(b) => Json::Bool(b),
            Lite::I64(n) => Json::Number(n.into()),
            Lite::U64(n) => Json::Number(n.into()),
            // As serde_json's own Value visitor does.
            Lite::F64(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
            Lite::Str(s) => Json::String(s.into_owned()),
            Lite::Json(j) => j,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match *self {
            Lite::I64(n) => Some(n),
            Lite::U64(n) => i64::try_from(n).ok(),
            _ => None,
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match *self {
            Lite::I64(n) => u64::try_from(n).ok(),
            Lite::U64(n) => Some(n),
            _ => None,
        }
    }
}

impl<'de> de::Deserialize<'de> for Lite<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LiteVisitor)
    }
}

struct LiteVisitor;

impl<'de> Visitor<'de> for LiteVisitor {
    type Value = Lite<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Lite<'de>, E> {
        Ok(Lite::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Lite<'de>, E> {
        Ok(Lite::I64(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Lite<'de>, E> {
        Ok(Lite::U64(n))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Lite<'de>, E> {
        Ok(Lite::F64(f))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Owned(s)))
    }
    fn visit_unit<E>(self) -> Result<Lite<'de>, E> {
        Ok(Lite::Null)
    }
    fn visit_none<E>(self) -> Result<Lite<'de>, E> {
        Ok(Lite::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Lite<'de>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Lite<'de>, A::Error> {
        de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Lite::Json)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Lite<'de>, A::Error> {
        de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map)).map(Lite::Json)
    }
}

/// A field name, borrowed unless it had escapes.
struct FieldName<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Lite::deserialize(d)? {
            Lite::Str(s) => Ok(FieldName(s)),
            _ => Err(de::Error::custom("field name is not a string")),
        }
    }
}

/// Skips a value while checking it as strictly as reading it into a
/// `serde_json::Value` would (serde's `IgnoredAny` lets lone surrogates
/// and out-of-range numbers through, which the general path rejects).
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_key::<FieldName<'de>>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

/// Fills a field once; a second occurrence is an error (the general path
/// would keep the last one, the fast path leaves such records to it).
fn once<'de, A: MapAccess<'de>, T>(
    slot: &mut Option<T>,
    map: &mut A,
    read: impl FnOnce(&mut A) -> Result<T, A::Error>,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::custom("duplicate field"));
    }
    *slot = Some(read(map)?);
    Ok(())
}

struct RawEnvelope<'a> {
    op: Option<Lite<'a>>,
    /// Outer `Some`: the field was present; inner `None`: it was null.
    before: Option<Option<Row>>,
    after: Option<Option<Row>>,
    source: Option<Source<'a>>,
}

struct EnvelopeVisitor<'s>(EnvelopeSchema<'s>, &'s Bytes);

impl<'de> Visitor<'de> for EnvelopeVisitor<'_> {
    type Value = RawEnvelope<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Debezium envelope object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEnvelope<'de>, A::Error> {
        let mut env = RawEnvelope { op: None, before: None, after: None, source: None };
        while let Some(FieldName(k)) = map.next_key()? {
            match &*k {
                "op" => once(&mut env.op, &mut map, |m| m.next_value())?,
                "before" => once(&mut env.before, &mut map, |m| m.next_value_seed(ImageSeed(self.0.row, self.1)))?,
                "after" => once(&mut env.after, &mut map, |m| m.next_value_seed(ImageSeed(self.0.row, self.1)))?,
                "source" => once(&mut env.source, &mut map, |m| m.next_value_seed(SourceSeed(self.0.source)))?,
                other => match self.0.scalars.and_then(|s| declared(s, other, 0)) {
                    // A scalar the schema declares (`ts_ms`, ...) must match it.
                    Some((i, s)) => {
                        let v: Lite<'de> = map.next_value()?;
                        if !conforms(s, i, &v) {
                            return Err(de::Error::custom("envelope field does not match its schema"));
                        }
                    }
                    None => {
                        map.next_value::<Skip>()?;
                    }
                },
            }
        }
        Ok(env)
    }
}

/// A row image: a row object or null, and the record it is read from.
struct ImageSeed<'s>(RowSchema<'s>, &'s Bytes);

impl<'de> DeserializeSeed<'de> for ImageSeed<'_> {
    type Value = Option<Row>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Row>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ImageSeed<'_> {
    type Value = Option<Row>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object or null")
    }
    fn visit_none<E>(self) -> Result<Option<Row>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<Row>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Row>, D::Error> {
        RowSeed(self.0, self.1).deserialize(d).map(Some)
    }
}

/// A row object whose columns come in schema order, typed as they are
/// read, and the record it is read from (which its text values share).
struct RowSeed<'s>(RowSchema<'s>, &'s Bytes);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Row;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Row, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Row;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let (RowSchema { fields, kinds, required }, record) = (self.0, self.1);
        let mut columns = Columns::with_capacity(fields.len());
        while let Some(FieldName(name)) = map.next_key()? {
            // Debezium writes columns in schema order; anything else is left
            // to the general path. With unique schema names (see
            // Kind::of_fields) this also rules out duplicate columns.
            let i = columns.len();
            let Some(((column, ty), kind)) = fields.get(i).zip(kinds.get(i)).filter(|((n, _), _)| *n == *name) else {
                return Err(de::Error::custom("column not in schema order"));
            };
            let v: Lite<'de> = map.next_value()?;
            if matches!(v, Lite::Null) && required.get(i) == Some(&true) {
                return Err(de::Error::custom("required column is null"));
            }
            let value = typed(record, column, ty, *kind, v).map_err(de::Error::custom)?;
            columns.push((column.clone(), value));
        }
        // Columns in schema order: a short row lacks its last fields.
        if required.get(columns.len()..).is_some_and(|rest| rest.contains(&true)) {
            return Err(de::Error::custom("required column missing"));
        }
        Ok(Row { columns })
    }
}

/// [`value::typed`] for the common kinds without building a JSON value,
/// text shared with `record` where it was read unescaped from it; every
/// other case is handed to `value::typed` itself.
fn typed(record: &Bytes, field: &str, ty: &FieldType, kind: Kind, v: Lite<'_>) -> Result<Value, ValueError> {
    match (kind, v) {
        (_, Lite::Null) => Ok(Value::Null),
        (_, Lite::Str(s)) if s == UNAVAILABLE_PLACEHOLDER => Ok(Value::Unavailable),
        (Kind::Str, Lite::Str(Cow::Borrowed(s))) => Ok(Value::String(Text::within(record, s))),
        (Kind::Str, Lite::Str(Cow::Owned(s))) => Ok(Value::String(s.into())),
        (Kind::Bool, Lite::Bool(b)) => Ok(Value::Bool(b)),
        (Kind::Decimal(scale), Lite::Str(s)) => value::decimal_from_base64(field, &s, scale),
        (Kind::Int, v) if v.as_i64().is_some() => Ok(Value::Int(v.as_i64().unwrap_or_default())),
        (Kind::Timestamp(factor), v) if v.as_i64().is_some() => {
            Ok(Value::Timestamp(i128::from(v.as_i64().unwrap_or_default()) * factor))
        }
        (_, v) => value::typed(field, ty, &v.into_json()),
    }
}

/// Where `name` is declared in `s` (trying position `guess` first).
fn declared<'s>(s: RowSchema<'s>, name: &str, guess: usize) -> Option<(usize, RowSchema<'s>)> {
    match s.fields.get(guess) {
        Some((n, _)) if n == name => Some((guess, s)),
        _ => s.fields.iter().position(|(n, _)| n == name).map(|i| (i, s)),
    }
}

/// Whether field `i` of `s` would be read from `v` without error, judged
/// without building a value; `false` when unsure (the general path decides).
fn conforms(s: RowSchema<'_>, i: usize, v: &Lite<'_>) -> bool {
    let (Some(kind), Some(required)) = (s.kinds.get(i), s.required.get(i)) else { return false };
    match (kind, v) {
        (_, Lite::Null) => !required,
        (_, Lite::Str(t)) if t == UNAVAILABLE_PLACEHOLDER => true,
        (Kind::Str, Lite::Str(_)) | (Kind::Bool, Lite::Bool(_)) => true,
        (Kind::Int | Kind::Timestamp(_), v) => v.as_i64().is_some(),
        _ => false,
    }
}

/// The `source` fields decoding uses.
#[derive(Default)]
struct Source<'a> {
    connector: Option<Lite<'a>>,
    table: Option<Lite<'a>>,
    ts_ms: Option<Lite<'a>>,
    commit_lsn: Option<Lite<'a>>,
    change_lsn: Option<Lite<'a>>,
    event_serial_no: Option<Lite<'a>>,
    lsn: Option<Lite<'a>>,
}

impl<'a> Source<'a> {
    /// Where a `source` field decoding uses is kept; `None` for the others.
    fn slot(&mut self, field: &str) -> Option<&mut Option<Lite<'a>>> {
        Some(match field {
            "connector" => &mut self.connector,
            "table" => &mut self.table,
            "ts_ms" => &mut self.ts_ms,
            "commit_lsn" => &mut self.commit_lsn,
            "change_lsn" => &mut self.change_lsn,
            "event_serial_no" => &mut self.event_serial_no,
            "lsn" => &mut self.lsn,
            _ => return None,
        })
    }

    /// As [`SourcePosition::from_source`] would read it, or `None` where
    /// that would fail (the general path then reports the error).
    fn position(&self) -> Option<SourcePosition> {
        match &self.connector {
            Some(Lite::Str(c)) if c == "sqlserver" => {
                let Some(Lite::Str(commit)) = &self.commit_lsn else { return None };
                let change = match &self.change_lsn {
                    Some(Lite::Str(s)) => Some(&**s),
                    _ => None,
                };
                let serial = match &self.event_serial_no {
                    None | Some(Lite::Null) => 0,
                    Some(v) => non_negative(v)?,
                };
                SourcePosition::sqlserver_parts(commit, change, serial).ok()
            }
            Some(Lite::Str(c)) if c == "postgresql" => match &self.lsn {
                None | Some(Lite::Null) => None,
                Some(v) => non_negative(v).map(SourcePosition::postgresql_lsn),
            },
            _ => None,
        }
    }
}

/// A number or numeric string, as position.rs accepts them.
fn non_negative(v: &Lite<'_>) -> Option<u64> {
    match v {
        Lite::Str(s) => s.parse().ok(),
        Lite::F64(_) => None,
        v => v.as_u64(),
    }
}

/// Reads the `source` fields decoding uses and, when the schema declares
/// the block, checks every declared field against it.
struct SourceSeed<'s>(Option<RowSchema<'s>>);

impl<'de> DeserializeSeed<'de> for SourceSeed<'_> {
    type Value = Source<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Source<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SourceSeed<'_> {
    type Value = Source<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a source object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Source<'de>, A::Error> {
        let mut s = Source::default();
        // Declared fields seen, one bit each (at most MAX_BLOCK_FIELDS).
        let (mut seen, mut next) = (0u64, 0);
        while let Some(FieldName(k)) = map.next_key()? {
            if let Some((i, schema)) = self.0.and_then(|schema| declared(schema, &k, next)) {
                let bit = u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i)).unwrap_or(0);
                if bit == 0 || seen & bit != 0 {
                    return Err(de::Error::custom("duplicate or untracked source field"));
                }
                seen |= bit;
                next = i + 1;
                let v: Lite<'de> = map.next_value()?;
                if !conforms(schema, i, &v) {
                    return Err(de::Error::custom("source field does not match its schema"));
                }
                if let Some(slot) = s.slot(&k) {
                    once(slot, &mut map, |_| Ok(v))?;
                }
                continue;
            }
            match s.slot(&k) {
                Some(slot) => once(slot, &mut map, |m| m.next_value())?,
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        if let Some(schema) = self.0 {
            let missing = schema.required.iter().enumerate().any(|(i, r)| *r && seen & (1u64 << i) == 0);
            if missing {
                return Err(de::Error::custom("required source field missing"));
            }
        }
        Ok(s)
    }
}
