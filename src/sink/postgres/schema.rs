//! Names and types in the mirror: every identifier mapped to one PostgreSQL
//! keeps whole and quoted, and the column type each Debezium schema type (or,
//! lacking one, each decoded value) gets.
//!
//! PostgreSQL cuts identifiers to 63 bytes (NAMEDATALEN - 1) without an
//! error, while SQL Server allows 128 characters. A cut name never matches
//! the catalog again (so columns were re-added on every batch) and two long
//! names that share 63 bytes become one. A name over 63 bytes is therefore
//! mapped, here and only here, to its first 46 bytes (cut at a character
//! boundary) + `_` + 16 hex digits of a stable hash of the whole name.

use std::borrow::Cow;

use crate::decode::{FieldType, Value};
use crate::sink::TypeChange;
use crate::sink::bigquery::sql::stable_hash;

/// The longest identifier PostgreSQL keeps whole, in bytes.
pub const MAX_IDENTIFIER: usize = 63;
const HASH_DIGITS: usize = 16;

/// The name PostgreSQL stores for a table, view or column name from the
/// source or the read model: the name itself when it fits in 63 bytes, else
/// a deterministic 63-byte form (see the module doc).
pub fn identifier(name: &str) -> Cow<'_, str> {
    if name.len() <= MAX_IDENTIFIER {
        return Cow::Borrowed(name);
    }
    let mut cut = MAX_IDENTIFIER - HASH_DIGITS - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = stable_hash(&[name]);
    Cow::Owned(format!("{}_{}", &name[..cut], &hash[..HASH_DIGITS]))
}

/// A quoted identifier, mapped by [`identifier`]: `a "b"` → `"a ""b"""`.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", identifier(name).replace('"', "\"\""))
}

/// A table name from the read model, `table` or `schema.table`, quoted.
pub fn quote_table(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, table)) => format!("{}.{}", quote(schema), quote(table)),
        None => quote(name),
    }
}

/// `CREATE SCHEMA IF NOT EXISTS` for a schema-qualified table, else nothing.
pub fn create_schema(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, _)) => format!("CREATE SCHEMA IF NOT EXISTS {}; ", quote(schema)),
        None => String::new(),
    }
}

/// The column type for a Connect field type, as faithful as PostgreSQL allows.
/// Nanosecond timestamps and times keep microseconds (PostgreSQL's limit).
pub fn pg_type_of_field(ft: &FieldType) -> String {
    match ft.name.as_deref() {
        Some("org.apache.kafka.connect.data.Decimal") => match (ft.precision, ft.scale) {
            (Some(p), Some(s)) if p > 0 && p <= 1000 => format!("numeric({p},{s})"),
            _ => "numeric".into(),
        },
        Some("io.debezium.data.VariableScaleDecimal") => "numeric".into(),
        Some("io.debezium.time.Date") | Some("org.apache.kafka.connect.data.Date") => "date".into(),
        Some("io.debezium.time.Time") | Some("org.apache.kafka.connect.data.Time") => "time(3)".into(),
        Some("io.debezium.time.MicroTime") | Some("io.debezium.time.NanoTime") => "time(6)".into(),
        Some("io.debezium.time.Timestamp") | Some("org.apache.kafka.connect.data.Timestamp") => "timestamp(3)".into(),
        Some("io.debezium.time.MicroTimestamp") | Some("io.debezium.time.NanoTimestamp") => "timestamp(6)".into(),
        Some("io.debezium.time.ZonedTimestamp") => "timestamptz".into(),
        Some("io.debezium.data.Uuid") => "uuid".into(),
        Some("io.debezium.data.Json") => "jsonb".into(),
        Some("io.debezium.time.MicroDuration") => "bigint".into(),
        _ => match ft.connect.as_str() {
            "int8" | "int16" => "smallint".into(),
            "int32" => "integer".into(),
            "int64" => "bigint".into(),
            "float" | "float32" => "real".into(),
            "float64" | "double" => "double precision".into(),
            "boolean" => "boolean".into(),
            "bytes" => "bytea".into(),
            "string" => "text".into(),
            _ => "jsonb".into(),
        },
    }
}

/// The column type for a field known only by a decoded value (computed
/// fields, constants, schemaless records); `None` for null.
pub fn pg_type_of_value(v: &Value) -> Option<String> {
    Some(
        match v {
            Value::Null | Value::Unavailable => return None,
            Value::Bool(_) => "boolean",
            Value::Int(_) => "bigint",
            Value::Float(_) => "double precision",
            Value::Decimal { .. } => "numeric",
            Value::String(_) => "text",
            Value::Bytes(_) => "bytea",
            Value::Date(_) => "date",
            Value::Time(_) => "time(6)",
            Value::Timestamp(_) => "timestamp(6)",
            Value::ZonedTimestamp(_) => "timestamptz",
            Value::Json(_) => "jsonb",
        }
        .to_string(),
    )
}

/// A column type as far as widening goes: what `format_type` prints or a
/// type [`pg_type_of_field`] gives, read into its kind and limits.
#[derive(Clone, Debug, PartialEq)]
enum Shape {
    /// smallint, integer, bigint: their width in bytes.
    Int(u8),
    /// numeric(p,s), or unconstrained numeric.
    Numeric(Option<(u32, u32)>),
    /// varchar(n), or varchar without a limit.
    Varchar(Option<u32>),
    Text,
    /// timestamp(p) / time(p) without time zone.
    Timestamp(u32),
    Time(u32),
    Other(String),
}

fn shape(ty: &str) -> Shape {
    let t = ty.trim().to_ascii_lowercase();
    let t = t.strip_suffix(" without time zone").unwrap_or(&t);
    let (base, args) = match t.split_once('(') {
        Some((b, rest)) => {
            (b.trim(), rest.trim_end_matches(')').split(',').map(|a| a.trim().parse::<u32>().ok()).collect())
        }
        None => (t, Vec::new()),
    };
    match (base, args.as_slice()) {
        ("smallint" | "int2", []) => Shape::Int(2),
        ("integer" | "int" | "int4", []) => Shape::Int(4),
        ("bigint" | "int8", []) => Shape::Int(8),
        ("numeric" | "decimal", []) => Shape::Numeric(None),
        ("numeric" | "decimal", [Some(p)]) => Shape::Numeric(Some((*p, 0))),
        ("numeric" | "decimal", [Some(p), Some(s)]) => Shape::Numeric(Some((*p, *s))),
        ("character varying" | "varchar", []) => Shape::Varchar(None),
        ("character varying" | "varchar", [Some(n)]) => Shape::Varchar(Some(*n)),
        ("text", []) => Shape::Text,
        ("timestamp", []) => Shape::Timestamp(6),
        ("timestamp", [Some(p)]) => Shape::Timestamp(*p),
        ("time", []) => Shape::Time(6),
        ("time", [Some(p)]) => Shape::Time(*p),
        ("timestamp with time zone" | "timestamptz", []) => Shape::Other("timestamptz".into()),
        ("double precision" | "float8", []) => Shape::Other("double precision".into()),
        ("real" | "float4", []) => Shape::Other("real".into()),
        ("boolean" | "bool", []) => Shape::Other("boolean".into()),
        _ => Shape::Other(t.split_whitespace().collect::<Vec<_>>().join(" ")),
    }
}

/// The decimal digits of the widest value of an integer `width` bytes wide.
fn integer_digits(width: u8) -> u32 {
    match width {
        2 => 5,
        4 => 10,
        _ => 19,
    }
}

/// The precision and scale a `numeric(p,s)` column type holds, if limited.
pub fn numeric_limits(ty: &str) -> Option<(u32, u32)> {
    match shape(ty) {
        Shape::Numeric(limits) => limits,
        _ => None,
    }
}

/// How column `column` of `table`, of type `current`, follows a source
/// type that now needs `wanted`: unchanged when `current` holds every
/// value of `wanted`; in place for integer widening (to a wider integer,
/// or to numeric with as many integer digits), numeric precision or
/// scale up (no fewer integer digits), varchar longer or to text and
/// timestamp/time precision up (`ALTER COLUMN ... TYPE`); else a rebuild.
pub fn classify(table: &str, column: &str, current: &str, wanted: &str) -> TypeChange {
    let (from, to) = (shape(current), shape(wanted));
    let widen = || {
        TypeChange::InPlace(format!("ALTER TABLE {} ALTER COLUMN {} TYPE {wanted}", quote_table(table), quote(column)))
    };
    let rebuild = |why: &str| TypeChange::Rebuild(why.to_string());
    match (&from, &to) {
        _ if from == to => TypeChange::Unchanged,
        // The binary encoder writes any value's text into a text column.
        (Shape::Text, _) => TypeChange::Unchanged,
        (Shape::Int(a), Shape::Int(b)) if a > b => TypeChange::Unchanged,
        (Shape::Int(_), Shape::Int(_)) => widen(),
        (Shape::Numeric(None), Shape::Numeric(_)) => TypeChange::Unchanged,
        (Shape::Numeric(Some((p, s))), Shape::Numeric(Some((p2, s2)))) => {
            let (int, int2) = (p.saturating_sub(*s), p2.saturating_sub(*s2));
            if s >= s2 && int >= int2 {
                TypeChange::Unchanged
            } else if s2 >= s && int2 >= int {
                widen()
            } else {
                rebuild("fewer decimal places or integer digits would round or refuse stored values")
            }
        }
        (Shape::Numeric(Some(_)), Shape::Numeric(None)) => widen(),
        // An integer column becomes numeric when every stored value keeps
        // its digits (smallint → numeric(7,2), as after an ALTER to decimal).
        (Shape::Int(width), Shape::Numeric(limits)) => match limits {
            Some((p, s)) if p.saturating_sub(*s) < integer_digits(*width) => {
                rebuild("the numeric type has fewer integer digits than the integer column's values may have")
            }
            _ => widen(),
        },
        (Shape::Varchar(None), Shape::Varchar(_)) => TypeChange::Unchanged,
        (Shape::Varchar(Some(n)), Shape::Varchar(Some(m))) if m <= n => TypeChange::Unchanged,
        (Shape::Varchar(_), Shape::Varchar(_) | Shape::Text) => widen(),
        (Shape::Timestamp(p), Shape::Timestamp(q)) | (Shape::Time(p), Shape::Time(q)) => {
            if q <= p {
                TypeChange::Unchanged
            } else {
                widen()
            }
        }
        _ => rebuild("PostgreSQL cannot convert the stored values to the new kind of value in place"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote("Trips"), "\"Trips\"");
        assert_eq!(quote("a \"b\"; drop table x"), "\"a \"\"b\"\"; drop table x\"");
        assert_eq!(quote_table("staging.Trips"), "\"staging\".\"Trips\"");
    }

    #[test]
    fn long_identifiers_map_to_63_bytes_deterministically_and_distinctly() {
        let fits = "c".repeat(MAX_IDENTIFIER);
        assert_eq!(identifier(&fits), fits.as_str());
        let a = format!("{}Nº1", "é".repeat(60));
        let b = format!("{}Nº2", "é".repeat(60));
        let (ma, mb) = (identifier(&a), identifier(&b));
        assert!(ma.len() <= MAX_IDENTIFIER && mb.len() <= MAX_IDENTIFIER, "{ma} {mb}");
        assert_ne!(ma, mb);
        assert_eq!(ma, identifier(&a), "the same name always maps the same way");
        assert!(ma.starts_with(&"é".repeat(23)) && !ma.starts_with(&"é".repeat(24)), "{ma}");
        assert_eq!(quote_table(&format!("s.{a}")), format!("\"s\".\"{ma}\""));
    }

    #[test]
    fn widening_is_in_place_and_anything_else_is_a_rebuild() {
        let c = |a: &str, b: &str| classify("t", "c", a, b);
        assert_eq!(
            c("smallint", "integer"),
            TypeChange::InPlace("ALTER TABLE \"t\" ALTER COLUMN \"c\" TYPE integer".into())
        );
        assert!(matches!(c("integer", "bigint"), TypeChange::InPlace(_)));
        assert_eq!(c("bigint", "integer"), TypeChange::Unchanged, "a wider column holds the narrower values");
        assert!(matches!(c("numeric(10,2)", "numeric(12,4)"), TypeChange::InPlace(_)));
        assert_eq!(c("numeric(12,4)", "numeric(10,2)"), TypeChange::Unchanged);
        assert!(matches!(c("numeric(10,2)", "numeric(10,4)"), TypeChange::Rebuild(_)), "integer digits 8 → 6");
        assert_eq!(c("numeric", "numeric(12,4)"), TypeChange::Unchanged);
        assert!(matches!(c("character varying(10)", "text"), TypeChange::InPlace(_)));
        assert!(matches!(c("character varying(10)", "varchar(20)"), TypeChange::InPlace(_)));
        assert!(matches!(c("timestamp(3) without time zone", "timestamp(6)"), TypeChange::InPlace(_)));
        assert_eq!(c("timestamp(6) without time zone", "timestamp(3)"), TypeChange::Unchanged);
        assert_eq!(c("text", "integer"), TypeChange::Unchanged, "text holds any value's text");
        assert!(matches!(c("integer", "text"), TypeChange::Rebuild(_)));
        assert!(matches!(c("integer", "numeric(12,2)"), TypeChange::InPlace(_)), "10 integer digits kept");
        assert!(matches!(c("smallint", "numeric(7,2)"), TypeChange::InPlace(_)));
        assert!(matches!(c("smallint", "numeric"), TypeChange::InPlace(_)));
        assert!(matches!(c("integer", "numeric(10,2)"), TypeChange::Rebuild(_)), "8 integer digits < 10");
        // What format_type prints matches what the sink creates.
        for (printed, created) in [
            ("timestamp with time zone", "timestamptz"),
            ("time(3) without time zone", "time(3)"),
            ("double precision", "double precision"),
            ("numeric(12,2)", "numeric(12,2)"),
            ("jsonb", "jsonb"),
        ] {
            assert_eq!(c(printed, created), TypeChange::Unchanged, "{printed}");
        }
        assert_eq!(numeric_limits("numeric(12,4)"), Some((12, 4)));
        assert_eq!(numeric_limits("integer"), None);
    }

    #[test]
    fn debezium_types_map_faithfully() {
        let ft = |connect: &str, name: Option<&str>, scale, precision| FieldType {
            connect: connect.into(),
            name: name.map(Into::into),
            scale,
            precision,
        };
        assert_eq!(
            pg_type_of_field(&ft("bytes", Some("org.apache.kafka.connect.data.Decimal"), Some(2), Some(12))),
            "numeric(12,2)"
        );
        assert_eq!(pg_type_of_field(&ft("int64", Some("io.debezium.time.NanoTimestamp"), None, None)), "timestamp(6)");
        assert_eq!(pg_type_of_field(&ft("string", Some("io.debezium.time.ZonedTimestamp"), None, None)), "timestamptz");
        assert_eq!(pg_type_of_field(&ft("int16", None, None, None)), "smallint");
        assert_eq!(pg_type_of_field(&ft("string", Some("io.debezium.data.Uuid"), None, None)), "uuid");
    }
}
