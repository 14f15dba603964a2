//! Whether a target's live shape agrees with the read-model file: what
//! `projector plan` prints per target, and what `run` checks before it
//! writes. Two things are compared:
//!
//! - the shape the server shows (index mapping, columns and types) against
//!   the types the file declares and the fields it writes;
//! - the file's section of the table *as it was when the version was built*
//!   (its [`section`]: `where`, fields, computed expressions, constants and
//!   the sink's declared types, as canonical JSON) against the section now.
//!   Each sink records it in the physical target's own metadata when it
//!   creates the version (Elasticsearch mapping `_meta`, PostgreSQL
//!   `COMMENT ON TABLE`, BigQuery table description), so a changed `where`
//!   or a changed expression, which no shape reveals, is seen too. A target
//!   without it (adopted, or built by an older projector) is compared by
//!   shape only, and the verdict says so.
//!
//! Each sink brings its own rules ([`Dialect`]): how to compare one field's
//! type, and which changes it can make in place (PostgreSQL renames a
//! column, Elasticsearch cannot).

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::TypeChange;
use crate::mapping::TableMapping;
use crate::mapping::expr::text;

/// The key under which a sink records the section in its target's metadata.
pub const SECTION_KEY: &str = "projector_section";

/// What a target shows of itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveShape {
    /// Data fields (bookkeeping fields left out) and their type, as the sink
    /// writes them in its DDL or mapping (an Elasticsearch type as JSON text).
    pub fields: BTreeMap<String, String>,
    /// The file's section recorded when the version was created, if any.
    pub section: Option<Json>,
}

/// The verdict for one target.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Unchanged,
    /// What `run` applies where the target stands (DDL or mapping changes,
    /// or notes on what happens to the existing values).
    InPlace(Vec<String>),
    /// Why the target must be rebuilt.
    Rebuild(Vec<String>),
}

/// Writes the statement for one field change: `(field, type)` to add, or
/// `(old name, new name)` to rename.
pub type Statement<'a> = &'a dyn Fn(&str, &str) -> String;

/// What a sink can do in place, and how it compares a field's type.
pub struct Dialect<'a> {
    /// The physical target, as its DDL names it.
    pub target: &'a str,
    /// How a field of type `current` takes the type the file now declares.
    pub retype: &'a dyn Fn(&str, &str, &str) -> TypeChange,
    /// The statement that renames a field, if the sink can.
    pub rename: Option<Statement<'a>>,
    /// The statement that adds a declared field, if one is needed before the
    /// first value (else the field is added when it first carries a value).
    pub add: Statement<'a>,
}

/// The canonical JSON of `table`'s section as one sink sees it:
/// `declared` is that sink's `types:` (field → type text).
pub fn section(table: &TableMapping, declared: &[(String, String)]) -> Json {
    let fields = table.fields.as_ref().map(|fs| {
        fs.iter()
            .map(|f| {
                let values =
                    f.values.as_ref().map(|vs| vs.iter().map(|(k, v)| json!([k, text(v)])).collect::<Vec<_>>());
                json!({"name": f.name.to_string(), "column": f.column, "values": values,
                       "default": f.default.as_ref().map(|d| text(d).into_owned())})
            })
            .collect::<Vec<_>>()
    });
    let computed: serde_json::Map<String, Json> =
        table.computed.iter().map(|c| (c.name.to_string(), Json::String(c.source.clone()))).collect();
    let constants: serde_json::Map<String, Json> =
        table.constants.iter().map(|(n, v)| (n.to_string(), Json::String(text(v).into_owned()))).collect();
    let types: serde_json::Map<String, Json> =
        declared.iter().map(|(f, t)| (f.clone(), Json::String(t.clone()))).collect();
    json!({
        "where": table.filter.as_ref().map(|(src, _)| src.clone()),
        "fields": fields,
        "computed": computed,
        "constants": constants,
        "types": types,
    })
}

/// Compares a target's live shape (`None`: the target does not exist yet)
/// with what the file wants now (`wanted`, from [`section`]).
pub fn classify(live: Option<&LiveShape>, wanted: &Json, dialect: &Dialect<'_>) -> Verdict {
    let Some(live) = live else {
        return Verdict::InPlace(vec![format!("create {} (it does not exist yet)", dialect.target)]);
    };
    let mut in_place = Vec::new();
    let mut rebuild = Vec::new();
    if let Some(was) = &live.section {
        compare_sections(was, wanted, live, dialect, &mut in_place, &mut rebuild);
    }
    let declared = wanted["types"].as_object().cloned().unwrap_or_default();
    for (field, ty) in &declared {
        let ty = ty.as_str().unwrap_or_default();
        match live.fields.get(field) {
            None => in_place.push((dialect.add)(field, ty)),
            Some(current) => match (dialect.retype)(field, current, ty) {
                // The column holds every value of the declared type; when the
                // file itself narrowed it, only a rebuild gives the new type.
                TypeChange::Unchanged => {
                    let was = live.section.as_ref().and_then(|s| s["types"][field.as_str()].as_str());
                    if was.is_some_and(|w| w != ty) && (dialect.retype)(field, ty, current) != TypeChange::Unchanged {
                        rebuild.push(format!(
                            "field {field}: the file narrowed it from {} to {ty}; the target keeps {current} until rebuilt",
                            was.unwrap_or_default()
                        ));
                    }
                }
                TypeChange::InPlace(ddl) => in_place.push(ddl),
                TypeChange::Rebuild(why) => rebuild.push(format!("field {field}: {current} -> {ty}: {why}")),
            },
        }
    }
    // Without a recorded section, removed fields show only in an explicit field list.
    if live.section.is_none()
        && let Some(fields) = wanted["fields"].as_array()
    {
        let written: Vec<&str> = fields
            .iter()
            .filter_map(|f| f["name"].as_str())
            .chain(wanted["computed"].as_object().into_iter().flat_map(|c| c.keys().map(String::as_str)))
            .chain(wanted["constants"].as_object().into_iter().flat_map(|c| c.keys().map(String::as_str)))
            .collect();
        for f in live.fields.keys().filter(|f| !written.contains(&f.as_str())) {
            in_place.push(format!("field {f} is no longer written; its stored values stay"));
        }
    }
    if !rebuild.is_empty() {
        Verdict::Rebuild(rebuild)
    } else if in_place.is_empty() {
        Verdict::Unchanged
    } else {
        Verdict::InPlace(in_place)
    }
}

fn compare_sections(
    was: &Json,
    now: &Json,
    live: &LiveShape,
    dialect: &Dialect<'_>,
    in_place: &mut Vec<String>,
    rebuild: &mut Vec<String>,
) {
    if was["where"] != now["where"] {
        rebuild.push(format!(
            "`where` changed from {} to {}: existing rows may enter or leave the target",
            shown(&was["where"]),
            shown(&now["where"])
        ));
    }
    let (old_c, new_c) = (objects(&was["computed"]), objects(&now["computed"]));
    for (name, source) in &new_c {
        match old_c.get(name) {
            Some(old) if old != source => rebuild.push(format!(
                "computed field {name} changed from {} to {}: existing rows hold the old values",
                shown(old),
                shown(source)
            )),
            Some(_) => {}
            None => in_place.push(format!(
                "new computed field {name} = {}: added with its first value; existing rows get it when next changed",
                shown(source)
            )),
        }
    }
    for name in old_c.keys().filter(|n| !new_c.contains_key(*n)) {
        in_place.push(format!("computed field {name} removed: no longer written; its stored values stay"));
    }
    let (old_k, new_k) = (objects(&was["constants"]), objects(&now["constants"]));
    for (name, v) in &new_k {
        match old_k.get(name) {
            Some(old) if old != v => rebuild.push(format!(
                "constant {name} changed from {} to {}: existing rows hold the old value",
                shown(old),
                shown(v)
            )),
            Some(_) => {}
            None => in_place.push(format!("new constant {name} = {}: added with the next write of each row", shown(v))),
        }
    }
    compare_fields(&was["fields"], &now["fields"], live, dialect, in_place, rebuild);
}

/// Fields by source column: a column under a new name is a rename, a
/// column no longer listed is a removal, a new one an addition.
fn compare_fields(
    was: &Json,
    now: &Json,
    live: &LiveShape,
    dialect: &Dialect<'_>,
    in_place: &mut Vec<String>,
    rebuild: &mut Vec<String>,
) {
    let by_column = |j: &Json| -> BTreeMap<String, Json> {
        j.as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["column"].as_str()?.to_string(), f.clone())))
            .collect()
    };
    match (was.is_null(), now.is_null()) {
        (true, true) => return,
        (true, false) => {
            in_place.push("fields: the file now lists its fields; columns not listed are no longer written, their stored values stay".into());
        }
        (false, true) => {
            in_place.push("fields: the file now writes all columns; new ones are added with their first value".into());
            return;
        }
        (false, false) => {}
    }
    let (old, new) = (by_column(was), by_column(now));
    for (column, f) in &new {
        let name = f["name"].as_str().unwrap_or(column);
        match old.get(column) {
            None if !was.is_null() => {
                in_place.push(format!("new field {name} (column {column}): added with its first value"))
            }
            None => {}
            Some(o) => {
                let old_name = o["name"].as_str().unwrap_or(column);
                if old_name != name {
                    match (dialect.rename, live.fields.contains_key(old_name)) {
                        (Some(rename), true) => in_place.push(rename(old_name, name)),
                        (None, true) => rebuild.push(format!(
                            "field {old_name} renamed to {name}: stored documents hold it under the old name"
                        )),
                        // Never written: nothing stored under the old name.
                        (_, false) => {
                            in_place.push(format!("field {old_name} renamed to {name} (no values stored yet)"))
                        }
                    }
                }
                if o["values"] != f["values"] || o["default"] != f["default"] {
                    rebuild.push(format!(
                        "field {name}: its value map or default changed: existing rows hold the old values"
                    ));
                }
            }
        }
    }
    for (column, o) in old.iter().filter(|(c, _)| !new.contains_key(*c)) {
        let name = o["name"].as_str().unwrap_or(column);
        in_place.push(format!("field {name} (column {column}) removed: no longer written; its stored values stay"));
    }
}

fn objects(j: &Json) -> serde_json::Map<String, Json> {
    j.as_object().cloned().unwrap_or_default()
}

fn shown(j: &Json) -> String {
    match j {
        Json::Null => "(none)".into(),
        Json::String(s) => format!("`{s}`"),
        other => other.to_string(),
    }
}

/// What a verdict on `live` could not see: said beside it.
pub fn blind_spot(live: Option<&LiveShape>) -> Option<&'static str> {
    live.filter(|l| l.section.is_none()).map(|_| {
        "this target records no read-model section (adopted, or built before projector recorded one): compared by shape only; a changed `where` or expression cannot be seen"
    })
}

/// Elasticsearch's rule for a declared field: unchanged when every setting
/// the file declares is what the live mapping holds, else a rebuild (a
/// field's type or analyzer never changes in place).
pub fn elasticsearch_retype(field: &str, current: &str, wanted: &str) -> TypeChange {
    let (Ok(current), Ok(wanted)) = (serde_json::from_str::<Json>(current), serde_json::from_str::<Json>(wanted))
    else {
        return TypeChange::Rebuild(format!("field {field}: cannot read its mapping"));
    };
    let differs: Vec<String> = wanted
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| current.get(k.as_str()) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    if differs.is_empty() {
        TypeChange::Unchanged
    } else {
        TypeChange::Rebuild(format!(
            "its {} changed; Elasticsearch never changes a mapped field in place",
            differs.join(" and ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml_table: &str) -> TableMapping {
        let dir = std::env::temp_dir().join(format!(
            "projector-shape-{}-{}",
            std::process::id(),
            crate::sink::bigquery::sql::stable_hash(&[yaml_table])
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.yaml");
        std::fs::write(&path, format!("read_model: shape\ntables:\n{yaml_table}")).unwrap();
        crate::mapping::ReadModel::load(&path).unwrap().tables.remove(0)
    }

    fn es(t: &TableMapping) -> Vec<(String, String)> {
        t.elasticsearch
            .as_ref()
            .map(|e| e.types.iter().map(|(f, ty)| (f.clone(), ty.to_string())).collect())
            .unwrap_or_default()
    }

    const ES_ADD: &dyn Fn(&str, &str) -> String = &|f, t| format!("PUT _mapping {{\"{f}\": {t}}}");

    fn es_dialect() -> Dialect<'static> {
        Dialect { target: "trips_v1", retype: &elasticsearch_retype, rename: None, add: ES_ADD }
    }

    fn built(t: &TableMapping, fields: &[(&str, &str)]) -> LiveShape {
        LiveShape {
            fields: fields.iter().map(|(f, ty)| (f.to_string(), ty.to_string())).collect(),
            section: Some(section(t, &es(t))),
        }
    }

    const BASE: &str = "  - topic: t\n    fields: [Id, Route]\n    elasticsearch:\n      index: trips\n      types:\n        Route: text(standard)\n";

    #[test]
    fn the_same_file_is_unchanged() {
        let t = table(BASE);
        let live = built(&t, &[("Id", r#"{"type":"long"}"#), ("Route", r#"{"type":"text","analyzer":"standard"}"#)]);
        assert_eq!(classify(Some(&live), &section(&t, &es(&t)), &es_dialect()), Verdict::Unchanged);
    }

    #[test]
    fn an_added_field_is_in_place_and_an_analyzer_change_a_rebuild() {
        let was = table(BASE);
        let live = built(&was, &[("Id", r#"{"type":"long"}"#), ("Route", r#"{"type":"text","analyzer":"standard"}"#)]);
        let added = table(&BASE.replace("[Id, Route]", "[Id, Route, Fare]"));
        let Verdict::InPlace(steps) = classify(Some(&live), &section(&added, &es(&added)), &es_dialect()) else {
            panic!("an added field is in place")
        };
        assert!(steps.iter().any(|s| s.contains("new field Fare")), "{steps:?}");
        let analyzer = table(&BASE.replace("text(standard)", "text(english)"));
        let Verdict::Rebuild(why) = classify(Some(&live), &section(&analyzer, &es(&analyzer)), &es_dialect()) else {
            panic!("an analyzer change is a rebuild")
        };
        assert!(why.iter().any(|w| w.contains("analyzer")), "{why:?}");
    }

    fn filtered(where_: &str, computed: &[(&str, &str)]) -> TableMapping {
        let mut yaml = format!("{BASE}    where: \"{where_}\"\n    computed:\n");
        for (name, expr) in computed {
            yaml.push_str(&format!("      - name: {name}\n        expr: \"{expr}\"\n"));
        }
        table(&yaml)
    }

    #[test]
    fn a_changed_where_or_expression_is_a_rebuild_a_new_computed_field_in_place() {
        let was = filtered("Route != 'x'", &[("Label", "concat(Route, '!')")]);
        let live = built(&was, &[("Route", r#"{"type":"text","analyzer":"standard"}"#)]);
        let where_ = filtered("Route != 'y'", &[("Label", "concat(Route, '!')")]);
        let Verdict::Rebuild(why) = classify(Some(&live), &section(&where_, &es(&where_)), &es_dialect()) else {
            panic!("a changed where is a rebuild")
        };
        assert!(why[0].contains("`where` changed"), "{why:?}");
        let expr = filtered("Route != 'x'", &[("Label", "concat(Route, '?')")]);
        assert!(matches!(classify(Some(&live), &section(&expr, &es(&expr)), &es_dialect()), Verdict::Rebuild(_)));
        let more = filtered("Route != 'x'", &[("Label", "concat(Route, '!')"), ("Shout", "concat(Route, '!!')")]);
        assert!(matches!(classify(Some(&live), &section(&more, &es(&more)), &es_dialect()), Verdict::InPlace(_)));
    }

    #[test]
    fn a_rename_is_in_place_where_the_sink_renames_and_a_rebuild_where_it_cannot() {
        let was = table("  - topic: t\n    fields: [Id, Route]\n    elasticsearch: {index: trips}\n");
        let live = built(&was, &[("Route", r#"{"type":"keyword"}"#)]);
        let renamed =
            table("  - topic: t\n    fields: [Id, {column: Route, as: Path}]\n    elasticsearch: {index: trips}\n");
        let wanted = section(&renamed, &[]);
        assert!(matches!(classify(Some(&live), &wanted, &es_dialect()), Verdict::Rebuild(_)));
        let rename: &dyn Fn(&str, &str) -> String = &|a, b| format!("ALTER TABLE t RENAME COLUMN {a} TO {b}");
        let pg = Dialect { rename: Some(rename), ..es_dialect() };
        assert_eq!(
            classify(Some(&live), &wanted, &pg),
            Verdict::InPlace(vec!["ALTER TABLE t RENAME COLUMN Route TO Path".into()])
        );
    }

    #[test]
    fn a_target_without_a_recorded_section_is_compared_by_shape_and_says_so() {
        let t = table(BASE);
        let live =
            LiveShape { fields: [("Route".to_string(), r#"{"type":"keyword"}"#.to_string())].into(), section: None };
        let Verdict::Rebuild(why) = classify(Some(&live), &section(&t, &es(&t)), &es_dialect()) else {
            panic!("a keyword field declared text is a rebuild")
        };
        assert!(why[0].contains("type"), "{why:?}");
        let same = LiveShape {
            fields: [("Route".to_string(), r#"{"type":"text","analyzer":"standard"}"#.to_string())].into(),
            section: None,
        };
        assert_eq!(classify(Some(&same), &section(&t, &es(&t)), &es_dialect()), Verdict::Unchanged);
        assert!(matches!(classify(None, &section(&t, &es(&t)), &es_dialect()), Verdict::InPlace(_)));
    }
}
