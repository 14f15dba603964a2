//! The Connect schemas of JSON records, parsed once per topic: JsonConverter
//! repeats a record's schema (a few KB) in every record, so [`SchemaCache`]
//! keeps the last one seen per topic (for values and for keys) and a byte
//! comparison replaces parsing it; [`ValueSchema`] holds what decoding needs
//! from one (the row struct, the fields the fast path reads).

use foldhash::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value as Json;
use serde_json::value::RawValue;

use super::conform::StructSchema;
use super::{FieldType, Name, avro, fast};

/// A row struct's fields and their Connect types, shared by every event of a schema.
pub type RowFields = Arc<[(Name, FieldType)]>;

/// The Connect schema of a JSON value, with what decoding needs from it.
#[derive(Debug)]
pub struct ValueSchema {
    /// The schema's JSON text exactly as it appears in the record, when known.
    pub(super) text: Option<Box<[u8]>>,
    /// The envelope's row struct (`after`).
    pub(super) row: Option<StructSchema>,
    /// Top-level struct fields (the row itself, for unwrapped records; a key's columns).
    pub(super) fields: Option<StructSchema>,
    /// The envelope's `source` block.
    pub(super) source: Option<StructSchema>,
    /// The envelope's other scalar fields (`ts_ms`, ...), checked like `source`.
    pub(super) scalars: Option<StructSchema>,
}

/// Envelope fields read on their own, not checked as scalars.
const ENVELOPE_PARTS: [&str; 4] = ["op", "before", "after", "source"];

impl ValueSchema {
    pub(super) fn new(schema: &Json, text: Option<&[u8]>) -> ValueSchema {
        let top = schema.get("fields").and_then(Json::as_array);
        let field = |name: &str| top?.iter().find(|f| f.get("field").and_then(Json::as_str) == Some(name));
        let scalars = top.and_then(|t| {
            StructSchema::from_fields(t.iter().filter(|f| {
                let name = f.get("field").and_then(Json::as_str).unwrap_or("");
                !ENVELOPE_PARTS.contains(&name) && f.get("type").and_then(Json::as_str) != Some("struct")
            }))
        });
        ValueSchema {
            text: text.map(Box::from),
            row: field("after").and_then(StructSchema::of),
            fields: StructSchema::of(schema),
            source: field("source").and_then(StructSchema::of),
            scalars,
        }
    }

    pub(super) fn fast_envelope(&self) -> Option<fast::EnvelopeSchema<'_>> {
        let fits = |s: &Option<StructSchema>| s.as_ref().is_none_or(|s| s.fields.len() <= fast::MAX_BLOCK_FIELDS);
        // The fast path reads the envelope's scalars without noting which
        // were present, so a schema that requires one is left to the general path.
        let scalars_optional = self.scalars.as_ref().is_none_or(|s| s.required.iter().all(|r| !r));
        if !fits(&self.source) || !scalars_optional {
            return None;
        }
        Some(fast::EnvelopeSchema {
            row: self.row.as_ref()?.fast()?,
            source: match &self.source {
                Some(s) => Some(s.fast()?),
                None => None,
            },
            scalars: match &self.scalars {
                Some(s) => Some(s.fast()?),
                None => None,
            },
        })
    }

    pub(super) fn fast_fields(&self) -> Option<fast::RowSchema<'_>> {
        self.fields.as_ref()?.fast()
    }
}

/// The last Connect schema seen on each topic, for values and for keys.
/// JsonConverter repeats the same schema (a few KB) in every record, so a
/// byte comparison with the previous record's schema replaces parsing it;
/// a schema change simply misses once and replaces the entry.
#[derive(Debug, Default)]
pub struct SchemaCache {
    by_topic: Mutex<HashMap<String, Arc<ValueSchema>>>,
    keys_by_topic: Mutex<HashMap<String, Arc<ValueSchema>>>,
}

const SCHEMA_PREFIX: &[u8] = b"{\"schema\":";
const PAYLOAD_MARK: &[u8] = b",\"payload\":";

/// The schema and payload texts of a JsonConverter `{"schema":S,"payload":P}`
/// value, borrowed; `None` if the bytes are not that shape.
pub(super) fn schema_and_payload(bytes: &[u8]) -> Option<(&str, &str)> {
    #[derive(serde::Deserialize)]
    struct Parts<'a> {
        #[serde(borrow)]
        schema: &'a RawValue,
        #[serde(borrow)]
        payload: &'a RawValue,
    }
    serde_json::from_slice::<Parts<'_>>(bytes).ok().map(|p| (p.schema.get(), p.payload.get()))
}

impl SchemaCache {
    fn map(&self, part: avro::Part) -> &Mutex<HashMap<String, Arc<ValueSchema>>> {
        match part {
            avro::Part::Value => &self.by_topic,
            avro::Part::Key => &self.keys_by_topic,
        }
    }

    /// If `bytes` is exactly `{"schema":<the topic's cached schema>,"payload":P}`,
    /// the cached schema and P's bytes.
    pub(super) fn split<'a>(
        &self,
        part: avro::Part,
        topic: &str,
        bytes: &'a [u8],
    ) -> Option<(Arc<ValueSchema>, &'a [u8])> {
        let rest = bytes.strip_prefix(SCHEMA_PREFIX)?;
        let cached = self.map(part).lock().ok()?.get(topic).cloned()?;
        let rest = rest.strip_prefix(cached.text.as_deref()?)?.strip_prefix(PAYLOAD_MARK)?;
        let payload = rest.trim_ascii_end().strip_suffix(b"}")?;
        Some((cached, payload))
    }

    /// Parses a `{"schema":S,"payload":P}` value's schema and remembers it
    /// for the topic when the value has the converter's compact layout.
    pub(super) fn learn(&self, part: avro::Part, topic: &str, bytes: &[u8], schema: &Json) -> Arc<ValueSchema> {
        let text = schema_and_payload(bytes).and_then(|(s, pl)| {
            let (s, pl) = (s.as_bytes(), pl.as_bytes());
            let compact = bytes.len() == SCHEMA_PREFIX.len() + s.len() + PAYLOAD_MARK.len() + pl.len() + 1
                && bytes.starts_with(SCHEMA_PREFIX)
                && bytes[SCHEMA_PREFIX.len()..].starts_with(s);
            compact.then_some(s)
        });
        let parsed = Arc::new(ValueSchema::new(schema, text));
        if text.is_some()
            && let Ok(mut cache) = self.map(part).lock()
        {
            cache.insert(topic.to_string(), parsed.clone());
        }
        parsed
    }
}
