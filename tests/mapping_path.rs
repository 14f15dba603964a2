//! The read-model file's language against the real Elasticsearch: selected,
//! renamed and value-mapped fields, computed fields and constants, a row
//! filter that removes rows, per-sink exclusions, and an explicit index
//! mapping typed from the Debezium schema (not Elasticsearch's guesses),
//! extended when a column is added at the source.

mod common;

use std::time::Duration;

use common::*;
use projector::demo::bus_booking::{Timeline, trip};
use projector::demo::sqlserver::Column;
use serde_json::{Value as Json, json};

#[tokio::test(flavor = "multi_thread")]
async fn a_mapped_read_model_shapes_documents_and_types_its_index() {
    let w = World::new("shape", 2).await;
    let index = format!("{}-search", w.name);
    w.set_model(&format!(
        "\
read_model: {name}
tables:
  - topic: {topic}
    where: Status != 9
    fields:
      - TripId
      - column: Route
        as: route
      - column: Status
        as: status
        values: {{1: scheduled, 2: departed, 9: cancelled}}
      - column: Fare
        as: fare
      - column: DepartAt
        as: depart_at
    computed:
      - name: title
        template: \"{{Route}} ({{Operator}})\"
      - name: code
        expr: concat('T-', TripId)
    constants:
      source_system: vexere
    elasticsearch:
      index: {index}
      types:
        route: text
      exclude: [code]
",
        name = w.name,
        topic = w.db.trips.topic(),
    ));
    let mut t = Timeline::default();
    let mut records = Vec::new();
    for id in 1..=3 {
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 1000 * id as i128, 1)), at, t.ts_ms, true));
    }
    // Trip 2 is cancelled: it must leave the read model.
    let at = t.commit(2);
    records.push(w.db.trips.event('u', Some(&trip(2, 2000, 1)), Some(&trip(2, 2000, 9)), at, t.ts_ms, true));
    w.produce(&records).await;
    let _p = w.start(&w.group);
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;

    let docs = w.docs(&index).await;
    assert_eq!(docs.keys().collect::<Vec<_>>(), ["1", "3"], "the cancelled trip is filtered out");
    let d = &docs["3"];
    assert_eq!(d["route"], "Ho Chi Minh City → Nha Trang");
    assert_eq!(d["status"], "scheduled");
    assert_eq!(d["fare"].as_f64(), Some(30.0));
    assert_eq!(d["title"], "Ho Chi Minh City → Nha Trang (Sao Viet)");
    assert_eq!(d["source_system"], "vexere");
    assert!(d.get("code").is_none(), "excluded from this sink");
    assert!(d.get("Operator").is_none() && d.get("Note").is_none(), "only selected fields");

    // The index mapping is explicit and typed from the schema.
    let mapping = index_properties(&index).await;
    assert_eq!(mapping["route"]["type"], "text", "type fixed in the file");
    assert_eq!(mapping["TripId"]["type"], "long");
    assert_eq!(mapping["fare"]["type"], "double", "a decimal, not a guessed long");
    assert_eq!(mapping["depart_at"]["type"], "date_nanos", "a datetime2(7), not a guessed long");
    assert_eq!(mapping["status"]["type"], "keyword");
    // Full-text search works on the text field through the alias.
    let hits = search(&index, json!({"match": {"route": "trang"}})).await;
    assert_eq!(hits, ["3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_added_at_the_source_is_mapped_when_it_first_appears() {
    let mut w = World::new("addcol", 1).await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), at, t.ts_ms, true)]).await;
    let _p = w.start(&w.group);
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    assert!(index_properties(&w.indexes[0]).await.get("Stops").is_none());

    // ALTER TABLE Trips ADD Stops int; a new capture instance; the value
    // schema gains the column. No restart, no dummy updates.
    w.db.trips.columns.push(Column::new("Stops", "int32").optional());
    let mut img = trip(2, 2000, 1);
    img.push(("Stops", json!(3)));
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&img), at, t.ts_ms, true)]).await;
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    assert_eq!(index_properties(&w.indexes[0]).await["Stops"]["type"], "long");
    assert_eq!(search(&w.indexes[0], json!({"term": {"Stops": 3}})).await, ["2"]);
}

/// A type declared in `elasticsearch.types` for a column the index does not
/// have yet (added to the file after the index was created, before the
/// column exists at the source) is the type the column gets when it first
/// appears, not the type of its value.
#[tokio::test(flavor = "multi_thread")]
async fn a_declared_type_applies_to_a_column_that_first_appears_later() {
    let mut w = World::new("latedecl", 1).await;
    let mut t = Timeline::default();
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), at, t.ts_ms, true)]).await;
    {
        let _p = w.start(&w.group);
        w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    }
    assert!(index_properties(&w.indexes[0]).await.get("Stops").is_none());
    w.set_model(&format!(
        "read_model: {name}\ntables:\n  - topic: {topic}\n    elasticsearch:\n      index: {index}\n      types:\n        Stops: keyword\n",
        name = w.name,
        topic = w.db.trips.topic(),
        index = w.indexes[0],
    ));
    let _p = w.start(&w.group);
    // ALTER TABLE Trips ADD Stops int: schema and value both say long.
    w.db.trips.columns.push(Column::new("Stops", "int32").optional());
    let mut img = trip(2, 2000, 1);
    img.push(("Stops", json!(3)));
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&img), at, t.ts_ms, true)]).await;
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    assert_eq!(index_properties(&w.indexes[0]).await["Stops"]["type"], "keyword", "declared, not typed from the value");
    assert_eq!(search(&w.indexes[0], json!({"term": {"Stops": "3"}})).await, ["2"]);
}

/// An index deleted behind the running sink's back is re-created with the
/// read-model file's mapping: its declared types, including one for a field
/// no event carries yet, and never a dynamic mapping.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_deleted_while_running_is_recreated_with_the_declared_types() {
    let w = World::new("recreate", 1).await;
    w.set_model(&format!(
        "read_model: {name}\ntables:\n  - topic: {topic}\n    elasticsearch:\n      index: {index}\n      types:\n        Route: text\n        Stops: keyword\n",
        name = w.name,
        topic = w.db.trips.topic(),
        index = w.indexes[0],
    ));
    let mut t = Timeline::default();
    let mut records = Vec::new();
    for id in 1..=2 {
        let at = t.commit(1);
        records.push(w.db.trips.event('c', None, Some(&trip(id, 1000, 1)), at, t.ts_ms, true));
    }
    w.produce(&records).await;
    let p = w.start_with(&w.group, &[("PROJECTOR_LINGER_MS", "1")]);
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    let before = index_properties(&w.indexes[0]).await;
    assert_eq!((&before["Route"]["type"], &before["Stops"]["type"]), (&json!("text"), &json!("keyword")));

    // First a new row (the bulk request finds the index gone), then an
    // update of a row this process never wrote (its stored position is read
    // from the index first, and that read finds it gone).
    let at = t.commit(1);
    let create = w.db.trips.event('c', None, Some(&trip(4, 4000, 1)), at, t.ts_ms, true);
    let at = t.commit(2);
    let update = w.db.trips.event('u', Some(&trip(3, 1000, 1)), Some(&trip(3, 1300, 1)), at, t.ts_ms, true);
    for (event, live) in [(create, ["4"]), (update, ["3"])] {
        let r = http().delete(format!("{}/{}_v1", es_url(), w.indexes[0])).send().await.unwrap();
        assert!(r.status().is_success(), "deleting the index: {}", r.text().await.unwrap());
        w.produce(&[event]).await;
        w.wait_caught_up(&w.group, Duration::from_secs(90)).await;
        let after = index_properties(&w.indexes[0]).await;
        assert_eq!(after["Route"]["type"], "text", "declared type kept: {after}");
        assert_eq!(after["Stops"]["type"], "keyword", "a declared field no event carried yet: {after}");
        assert_eq!(after["TripId"]["type"], "long", "the schema type for the rest: {after}");
        assert_eq!(w.docs(&w.indexes[0]).await.keys().collect::<Vec<_>>(), live);
    }
    assert_eq!(search(&w.indexes[0], json!({"match": {"Route": "trang"}})).await, ["3"], "full-text on Route works");
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 0.0);
}

async fn index_properties(alias: &str) -> Json {
    let body = get_json(&format!("{}/{alias}/_mapping", es_url())).await;
    let (_, idx) = body.as_object().unwrap().iter().next().unwrap();
    assert_eq!(idx["mappings"]["dynamic"], "false", "no dynamic guessing");
    idx["mappings"]["properties"].clone()
}

async fn search(alias: &str, query: Json) -> Vec<String> {
    refresh(alias).await;
    let body = post_json(&format!("{}/{alias}/_search", es_url()), &json!({"query": query})).await;
    body["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn schemaless_records_take_exact_types_from_the_schema_change_topic() {
    let mut w = World::new("ddl", 1).await;
    w.set_model(&format!(
        "read_model: {name}\nschema_changes: {prefix}\ntables:\n  - topic: {topic}\n    elasticsearch: {{ index: {index} }}\n",
        name = w.name,
        prefix = w.db.trips.prefix,
        topic = w.db.trips.topic(),
        index = w.indexes[0],
    ));
    let mut t = Timeline::default();
    // The connector's CREATE, then rows without schemas.
    w.produce(&[w.db.trips.schema_change("CREATE", t.ts_ms, true)]).await;
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&trip(1, 123_456_789, 1)), at, t.ts_ms, false)]).await;
    let p = w.start(&w.group);
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    let docs = w.docs(&w.indexes[0]).await;
    assert_eq!(docs["1"]["Fare"].to_string(), "1234567.89", "decimal scale from tableChanges, exact digits");
    assert!(docs["1"]["DepartAt"].as_str().unwrap().starts_with("2026-"), "datetime2(7) nanoseconds, not a number");

    // ALTER TABLE ADD Stops decimal(4,1), announced while projector runs.
    w.db.trips.columns.push(Column::new("Stops", "bytes").decimal(4, 1).optional());
    w.produce(&[w.db.trips.schema_change("ALTER", t.ts_ms, true)]).await;
    let mut img = trip(2, 100, 1);
    img.push(("Stops", json!(projector::demo::sqlserver::decimal_base64(25))));
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&img), at, t.ts_ms, false)]).await;
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    assert_eq!(w.docs(&w.indexes[0]).await["2"]["Stops"].to_string(), "2.5");
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 0.0);
}

/// Issue 8 §3: a replay from the earliest offset, after an ALTER widened
/// Fare from decimal(12,2) to decimal(14,4) and dropped Stops, decodes each
/// schemaless event with the schema in force at its source position: the old
/// events keep their digits and their dropped column, the new ones get scale 4.
#[tokio::test(flavor = "multi_thread")]
async fn a_schemaless_replay_across_an_alter_decodes_each_event_with_its_own_schema() {
    let mut w = World::new("replay", 1).await;
    w.set_model(&format!(
        "read_model: {name}\nschema_changes: {prefix}\ntables:\n  - topic: {topic}\n    elasticsearch: {{ index: {index} }}\n",
        name = w.name,
        prefix = w.db.trips.prefix,
        topic = w.db.trips.topic(),
        index = w.indexes[0],
    ));
    // One partition, as Debezium requires of its schema-change topic.
    let producer = projector::demo::produce::FixtureProducer::new(&brokers()).unwrap();
    producer.create_topics(&[w.db.trips.prefix.to_string()], 1).await.unwrap();
    let mut t = Timeline::default();
    // v1 from the snapshot: Fare decimal(12,2), Stops smallint.
    w.db.trips.columns.push(Column::new("Stops", "int16").optional());
    let mut records = vec![w.db.trips.schema_change_at("CREATE", t.snapshot(), t.ts_ms, false)];
    let mut one = trip(1, 123_456_789, 1);
    one.push(("Stops", json!(3)));
    records.push(w.db.trips.event('c', None, Some(&one), t.commit(1), t.ts_ms, false));
    let mut two = trip(2, 5, 1);
    two.push(("Stops", json!(0)));
    records.push(w.db.trips.event('c', None, Some(&two), t.commit(1), t.ts_ms, false));
    // v2: ALTER COLUMN Fare decimal(14,4), DROP COLUMN Stops, positioned at
    // the first change captured with the new columns.
    w.db.trips.columns.pop();
    w.db.trips.columns.iter_mut().filter(|c| c.name == "Fare").for_each(|c| c.decimal = Some((4, 14)));
    let alter_at = t.commit(1);
    records.push(w.db.trips.schema_change_at("ALTER", alter_at, t.ts_ms, false));
    records.push(w.db.trips.event('c', None, Some(&trip(3, 12_345_678_912, 1)), alter_at, t.ts_ms, false));
    // Trip 2's update: its before image in the new shape, 0.05 at scale 4.
    let (before, after) = (trip(2, 500, 1), trip(2, 98_765_432_123, 2));
    records.push(w.db.trips.event('u', Some(&before), Some(&after), t.commit(2), t.ts_ms, false));
    w.produce(&records).await;

    // A new group reads from the earliest offset: the whole history is known
    // before the first event, as in any replay.
    let p = w.start(&w.group);
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    let docs = w.docs(&w.indexes[0]).await;
    assert_eq!(docs["1"]["Fare"].to_string(), "1234567.89", "written at scale 2, decoded at scale 2");
    assert_eq!(docs["1"]["Stops"], json!(3), "a column dropped later is decoded in the events before the drop");
    assert_eq!(docs["3"]["Fare"].to_string(), "1234567.8912", "written at scale 4");
    assert_eq!(docs["2"]["Fare"].to_string(), "9876543.2123", "an update after the ALTER");
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 0.0);
}

/// The README's first command: `mappings/bus_booking.yaml` and the phrase
/// search `scripts/demo` prints, on this world's own topics and indexes.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_read_model_finds_trips_by_a_phrase_in_their_route() {
    let w = World::new("demo", 3).await;
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/bus_booking.yaml")).unwrap();
    let topic_prefix = w.db.trips.topic().trim_end_matches("Trips").to_string();
    let mut yaml = shipped
        .replace("read_model: bus-booking", &format!("read_model: {}", w.name))
        .replace("vexere.vexere.dbo.", &topic_prefix);
    for (alias, mine) in ["trips", "bookings", "seats"].iter().zip(&w.indexes) {
        yaml = yaml.replace(&format!("index: {alias}\n"), &format!("index: {mine}\n"));
    }
    yaml = yaml.replace("      table: trips\n", &format!("      table: {}_trips\n", w.name));
    assert!(yaml.contains(&format!("table: {}_trips", w.name)), "the demo mirrors trips: {yaml}");
    assert_ne!(yaml, shipped);
    w.set_model(&yaml);
    w.produce(&projector::demo::bus_booking::demo_story(&w.db, &mut Timeline::default(), 12, true)).await;
    let _p = w.start(&w.group);
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;

    let index = &w.indexes[0];
    refresh(index).await;
    let query = json!({"query": {"match_phrase": {"Route": "Da Lat"}}, "sort": [{"TripId": "asc"}]});
    let body = post_json(&format!("{}/{index}/_search", es_url()), &query).await;
    let routes: Vec<&str> =
        body["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_source"]["Route"].as_str().unwrap()).collect();
    assert!(!routes.is_empty(), "the demo's search finds trips to Da Lat: {body}");
    assert!(routes.iter().all(|r| r.contains("Da Lat")), "{routes:?}");
    let live = w.docs(index).await;
    let expect = live.values().filter(|d| d["Route"].as_str().is_some_and(|r| r.contains("Da Lat"))).count();
    assert_eq!(routes.len(), expect, "every live trip to Da Lat, and only those");
}

/// Issue 7 item 3.11: with a `key:` mapping the id comes from chosen
/// columns, which Debezium does not treat as the key, so an update may
/// change it. The document under the old id is removed (in every sink),
/// whether the create and the update share a batch or not.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_that_changes_the_key_columns_removes_the_old_document_in_every_sink() {
    let w = World::new("rekey", 1).await;
    let table = format!("{}_trips", w.name);
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    key: [TripId, Status]\n    elasticsearch: {{ index: {} }}\n    postgres: {{ table: {table} }}\n",
        w.name,
        w.db.trips.topic(),
        w.indexes[0],
    ));
    let mut t = Timeline::default();
    let mut event = |op, before: Option<(i32, i16)>, after: (i32, i16)| {
        let at = t.commit(1);
        let before = before.map(|(id, status)| trip(id, 1000, status));
        w.db.trips.event(op, before.as_ref(), Some(&trip(after.0, 1000, after.1)), at, t.ts_ms, true)
    };
    // Trip 1 is created and re-keyed in one batch; trip 2 is re-keyed later.
    let first = [event('c', None, (1, 1)), event('u', Some((1, 1)), (1, 2)), event('c', None, (2, 1))];
    let later = [event('u', Some((2, 1)), (2, 3))];
    w.produce(&first).await;
    let _p = w.start(&w.group);
    for sink in ["elasticsearch", "postgres"] {
        w.wait_sink_caught_up(&w.group, sink, Duration::from_secs(120)).await;
    }
    w.produce(&later).await;
    for sink in ["elasticsearch", "postgres"] {
        w.wait_sink_caught_up(&w.group, sink, Duration::from_secs(120)).await;
    }
    let live = ["1|2".to_string(), "2|3".to_string()];
    assert_eq!(w.docs(&w.indexes[0]).await.into_keys().collect::<Vec<_>>(), live, "Elasticsearch");
    let sql =
        format!("SELECT __id FROM {} ORDER BY 1", projector::sink::postgres::quote_table(&format!("{table}_live")));
    let rows: Vec<String> = pg().await.query(&sql, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(rows, live, "PostgreSQL");
}
