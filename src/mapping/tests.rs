//! Read-model file tests: every problem is reported with its line, and the
//! mapping does what the file says.

use super::*;
use crate::decode::{ChangeEvent, Name, Op, Row, SourcePosition};
use crate::source::Lineage;

fn parse(text: &str) -> Result<ReadModel, ReadModelError> {
    ReadModel::parse(Path::new("mappings/test.yaml"), text)
}

fn lines(err: ReadModelError) -> Vec<(u64, String)> {
    err.problems().iter().map(|p| (p.line, p.message.clone())).collect()
}

#[test]
fn minimal_file_parses() {
    let m = parse("read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    elasticsearch: { index: t }\n").unwrap();
    assert_eq!(m.name, "rm");
    assert_eq!(m.tables[0].topic, "a.b.dbo.T");
    assert_eq!(m.tables[0].line, 3);
    assert_eq!(m.tables[0].elasticsearch.as_ref().unwrap().index, "t");
}

#[test]
fn bad_index_name_points_at_its_line() {
    let err =
        parse("read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    elasticsearch:\n      index: Trips\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("mappings/test.yaml:5: index \"Trips\""), "{msg}");
}

#[test]
fn unknown_key_is_reported_with_line() {
    let err = parse("read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    elastic: { index: t }\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("mappings/test.yaml:4:"), "{msg}");
    assert!(msg.contains("elastic"), "{msg}");
}

#[test]
fn duplicate_topic_is_rejected() {
    let err = parse("read_model: rm\ntables:\n  - topic: x\n    elasticsearch: { index: t }\n  - topic: x\n    elasticsearch: { index: u }\n").unwrap_err();
    assert!(err.to_string().contains("listed twice (first at line 3)"), "{err}");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = "\
read_model: rm
tables:
  - topic: a.b.dbo.T
    where: \"Status = 1\"
    fields:
      - TripId
      - column: Fare
        source_type: money
    computed:
      - name: title
        template: \"{Route\"
    elasticsearch:
      index: t
      types:
        TripId: strng
        Nope: keyword
    bigquery:
      table: t
      types:
        TripId: VARCHAR
";
    let problems = lines(parse(text).unwrap_err());
    let at: Vec<u64> = problems.iter().map(|p| p.0).collect();
    assert_eq!(at, vec![4, 7, 10, 15, 16, 20], "{problems:#?}");
    assert!(problems[0].1.contains("compare with '=='"));
    assert!(problems[1].1.contains("unknown source_type"));
    assert!(problems[2].1.contains("unclosed"));
    assert!(problems[3].1.contains("unknown Elasticsearch type"));
    assert!(problems[4].1.contains("not an output field"));
    assert!(problems[5].1.contains("unknown BigQuery type"));
}

fn event(op: Op, after: Option<Vec<(&str, Value)>>) -> ChangeEvent {
    let row = |cols: Vec<(&str, Value)>| Row { columns: cols.into_iter().map(|(n, v)| (Name::from(n), v)).collect() };
    ChangeEvent {
        lineage: Lineage { topic: "a.b.dbo.T".into(), partition: 0, offset: 9 },
        op,
        key: row(vec![("TripId", Value::Int(7))]),
        after: after.map(row),
        before: None,
        position: SourcePosition::from_stored("01"),
        source_ts_ms: None,
        types: None,
    }
}

#[test]
fn fields_renames_value_maps_computed_and_constants() {
    let m = parse(
        "\
read_model: rm
tables:
  - topic: a.b.dbo.T
    where: Status != 9
    fields:
      - TripId
      - column: Route
        as: route
      - column: Status
        as: status
        values: {0: draft, 1: scheduled, 9: cancelled}
        default: unknown
      - column: Fare
        source_type: decimal(12,2)
    computed:
      - name: title
        template: \"{Route} #{TripId}\"
      - name: code
        expr: concat('T-', TripId)
    constants:
      source_system: vexere
    elasticsearch: { index: t, exclude: [code] }
",
    )
    .unwrap();
    let t = &m.tables[0];
    let doc = t
        .document(event(
            Op::Update,
            Some(vec![
                ("TripId", Value::Int(7)),
                ("Route", Value::String("Da Nang → Hue".into())),
                ("Status", Value::Int(1)),
                ("Fare", Value::String("AhYOwA==".into())),
                ("Secret", Value::String("x".into())),
            ]),
        ))
        .unwrap();
    let body = doc.body.unwrap();
    let names: Vec<&str> = body.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["TripId", "route", "status", "Fare", "title", "code", "source_system"]);
    assert_eq!(body.get("status"), Some(&Value::String("scheduled".into())));
    assert_eq!(body.get("Fare"), Some(&Value::Decimal { unscaled: 35_000_000, scale: 2 }));
    assert_eq!(body.get("title"), Some(&Value::String("Da Nang → Hue #7".into())));
    assert_eq!(body.get("code"), Some(&Value::String("T-7".into())));
    assert_eq!(body.get("source_system"), Some(&Value::String("vexere".into())));
    assert_eq!(t.elasticsearch.as_ref().unwrap().exclude, ["code"]);
    // An unmapped status uses the default.
    let doc = t.document(event(Op::Update, Some(vec![("TripId", Value::Int(7)), ("Status", Value::Int(5))]))).unwrap();
    assert_eq!(doc.body.unwrap().get("status"), Some(&Value::String("unknown".into())));
}

#[test]
fn a_row_that_stops_matching_the_filter_leaves_the_read_model() {
    let m = parse(
        "read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    where: Status != 9\n    elasticsearch: { index: t }\n",
    )
    .unwrap();
    let t = &m.tables[0];
    let live = t.document(event(Op::Update, Some(vec![("TripId", Value::Int(7)), ("Status", Value::Int(1))]))).unwrap();
    assert!(live.body.is_some());
    let gone = t.document(event(Op::Update, Some(vec![("TripId", Value::Int(7)), ("Status", Value::Int(9))]))).unwrap();
    assert!(gone.body.is_none(), "filtered out = absent, written as a tombstone");
    assert_eq!(gone.id, "7");
}

#[test]
fn key_override_reads_the_row() {
    let m = parse(
        "read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    key: [Code, TripId]\n    elasticsearch: { index: t }\n",
    )
    .unwrap();
    let doc = m.tables[0]
        .document(event(Op::Create, Some(vec![("TripId", Value::Int(7)), ("Code", Value::String("HN".into()))])))
        .unwrap();
    assert_eq!(doc.id, "HN|7");
    let err = m.tables[0].document(event(Op::Create, Some(vec![("TripId", Value::Int(7))]))).unwrap_err();
    assert!(err.to_string().contains("\"Code\""), "{err}");
}

#[test]
fn an_update_that_changes_key_columns_retires_the_old_id_at_its_position() {
    let m = parse(
        "read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    key: [Code, TripId]\n    elasticsearch: { index: t }\n",
    )
    .unwrap();
    let table = &m.tables[0];
    let image = |code: &str| vec![("TripId", Value::Int(7)), ("Code", Value::String(code.into()))];
    let mut moved = event(Op::Update, Some(image("SG")));
    moved.before = event(Op::Update, Some(image("HN"))).after;
    let doc = table.document(moved.clone()).unwrap();
    assert_eq!(doc.id, "SG|7");
    let old = table.retired(&moved, &doc).expect("the key columns changed");
    assert_eq!((old.id.as_str(), old.op, old.body.is_none()), ("HN|7", Op::Delete, true));
    assert_eq!(old.position, doc.position, "guarded by the update's own position");
    assert_eq!(old.key.get("Code"), Some(&Value::String("HN".into())), "the tombstone keeps its old key");
    let (doc, old) = table.documents(moved.clone()).unwrap();
    assert_eq!(
        (doc.id.as_str(), old.map(|o| o.id).as_deref()),
        ("SG|7", Some("HN|7")),
        "documents = document + retired"
    );

    let mut same = event(Op::Update, Some(image("HN")));
    same.before = same.after.clone();
    assert!(table.retired(&same, &table.document(same.clone()).unwrap()).is_none(), "key unchanged");
    let created = event(Op::Create, Some(image("HN")));
    assert!(table.retired(&created, &table.document(created.clone()).unwrap()).is_none(), "no before-image");
    let plain = parse("read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    elasticsearch: { index: t }\n").unwrap();
    let doc = plain.tables[0].document(moved.clone()).unwrap();
    assert!(plain.tables[0].retired(&moved, &doc).is_none(), "Debezium's own key change is a d + c pair");
    assert!(plain.tables[0].documents(moved).unwrap().1.is_none(), "no key: mapping, nothing retired");
}

#[test]
fn example_mappings_load_and_plan() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let m = ReadModel::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let plan = plan::render(&m);
            assert!(plan.contains(&m.name), "{plan}");
            n += 1;
        }
    }
    assert!(n >= 2, "mappings/ should hold the example read models");
}

#[test]
fn pass_through_keeps_every_column_then_computed_and_constants() {
    // No `fields`: the body is the after-image as decoded (taken without a
    // retyping copy), computed fields still read the source row.
    let m = parse(
        "read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    computed:\n      - name: code\n        expr: concat('T-', TripId)\n    constants:\n      source_system: vexere\n    elasticsearch: { index: t }\n",
    )
    .unwrap();
    let cols = vec![
        ("TripId", Value::Int(7)),
        ("Note", Value::Unavailable),
        ("Promo", Value::Null),
        ("Fare", Value::Decimal { unscaled: 1, scale: 2 }),
    ];
    let ev = event(Op::Update, Some(cols.clone()));
    let doc = m.tables[0].document(ev.clone()).unwrap();
    let body = doc.body.unwrap();
    let mut expected: Vec<(Name, Value)> = cols.into_iter().map(|(n, v)| (Name::from(n), v)).collect();
    expected.push(("code".into(), Value::String("T-7".into())));
    expected.push(("source_system".into(), Value::String("vexere".into())));
    assert_eq!(body.columns, expected);
    assert_eq!(ev.after.unwrap().columns.len(), 4, "the event is left as it was");
    assert_eq!((doc.id.as_str(), doc.key), ("7", ev.key));
}

#[test]
fn postgres_types_without_an_encoder_are_refused_at_their_line() {
    let text = "\
read_model: rm
tables:
  - topic: a.b.dbo.T
    postgres:
      table: t
      types:
        Span: interval
        Tags: text[]
        Ids: integer[]
        Fare: numeric(12,2)
";
    let problems = lines(parse(text).unwrap_err());
    let at: Vec<u64> = problems.iter().map(|p| p.0).collect();
    assert_eq!(at, vec![7, 8, 9], "{problems:#?}");
    for (_, message) in &problems {
        assert!(message.contains("timestamptz") && message.contains("is not supported"), "{message}");
    }
    assert!(problems[1].1.contains("arrays"), "{problems:#?}");
}

#[test]
fn schema_change_policies_default_to_rebuild_and_keep_and_bad_ones_name_their_line() {
    let m = parse("read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    postgres: { table: t }\n").unwrap();
    assert_eq!(m.tables[0].policy.on_type_change, OnTypeChange::Rebuild);
    assert_eq!(m.tables[0].policy.on_drop, OnDrop::Keep);
    let m = parse(
        "read_model: rm\non_type_change: dead_letter\non_drop: null\ntables:\n  - topic: a.b.dbo.T\n    postgres: { table: t }\n",
    )
    .unwrap();
    assert_eq!(m.tables[0].policy.on_type_change, OnTypeChange::DeadLetter);
    assert_eq!(m.tables[0].policy.on_drop, OnDrop::Null);
    assert_eq!(
        m.tables[0].rebuild_command("postgres"),
        "projector rebuild mappings/test.yaml --sink postgres --table a.b.dbo.T"
    );
    let unmirrored = parse("read_model: rm\ntables:\n  - topic: a.b.dbo.T\n    elasticsearch: { index: t }\n").unwrap();
    assert_eq!(
        unmirrored.tables[0].rebuild_command("elasticsearch"),
        "projector rebuild mappings/test.yaml --sink elasticsearch --table a.b.dbo.T --from kafka",
        "a table with no whole mirror is rebuilt from its topic"
    );
    let text = "read_model: rm\non_type_change: ignore\non_drop: forget\ntables:\n  - topic: a.b.dbo.T\n    postgres: { table: t }\n";
    let problems = lines(parse(text).unwrap_err());
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, 2);
    assert!(
        problems[0].1.contains("on_type_change \"ignore\"") && problems[0].1.contains("dead_letter"),
        "{problems:?}"
    );
    assert_eq!(problems[1].0, 3);
    assert!(problems[1].1.contains("on_drop \"forget\""), "{problems:?}");
    assert!(problems[1].1.contains("null or drop"), "the message lists every policy: {problems:?}");
    let m =
        parse("read_model: rm\non_drop: drop\ntables:\n  - topic: a.b.dbo.T\n    postgres: { table: t }\n").unwrap();
    assert_eq!(m.tables[0].policy.on_drop, OnDrop::Drop);
}
