//! Real connector output, end to end: rows inserted, updated and deleted in
//! a PostgreSQL source database are captured by the real Debezium PostgreSQL
//! connector running in Kafka Connect (both from `scripts/stack up`), and
//! projector must put exactly those values into Elasticsearch.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value as Json, json};

const CONNECT: &str = "http://127.0.0.1:8083";

fn psql(db: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Removes the connector, its replication slot and the database, even when the test fails.
struct Source {
    name: String,
    db: String,
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ =
            Command::new("curl").args(["-s", "-X", "DELETE", &format!("{CONNECT}/connectors/{}", self.name)]).output();
        for _ in 0..50 {
            let out = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "projector",
                    "-tAc",
                    &format!("select count(*) from pg_replication_slots where slot_name = '{}' and active", self.name),
                ])
                .output();
            if out.map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(true) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "projector",
                "-qc",
                &format!(
                    "select pg_drop_replication_slot('{0}') from pg_replication_slots where slot_name = '{0}'",
                    self.name
                ),
            ])
            .output();
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "projector",
                "-qc",
                &format!("drop database if exists {} with (force)", self.db),
            ])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn values_captured_by_the_real_debezium_postgres_connector_reach_elasticsearch_exactly() {
    let name = unique("pgsrc").replace('x', "_");
    let source = Source { name: name.clone(), db: format!("db_{name}") };
    psql("projector", &format!("create database {}", source.db));
    psql(
        &source.db,
        "create table items (
            id bigint primary key, name text, price numeric(10,2), amount numeric, ratio double precision,
            qty integer, small smallint, active boolean, created_at timestamp(6), updated_at timestamptz,
            day date, at_time time, uid uuid, data bytea, doc jsonb, tags text[]);
         alter table items replica identity full;
         insert into items values
           (1, 'snapshot row', 12.34, 3.14159, 1.5, 7, -3, true, '2026-11-27 10:11:12.123456', '2026-11-27 10:11:12.5+02',
            '2026-11-27', '10:11:12.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\xdeadbeef', '{\"a\": [1, \"x\"]}', '{red,blue}'),
           (2, 'to be deleted', 1.00, 1, 0.5, 1, 1, false, '2026-01-01 00:00:00', '2026-01-01 00:00:00Z',
            '2026-01-01', '00:00:00', 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '\\x00', '{}', '{}');",
    );
    let prefix = format!("pg_{name}");
    let topic = format!("{prefix}.public.items");
    let config = json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "database.hostname": "127.0.0.1", "database.port": "5432", "database.user": "postgres", "database.dbname": source.db,
        "topic.prefix": prefix, "plugin.name": "pgoutput", "slot.name": name, "publication.name": format!("pub_{name}"),
        "publication.autocreate.mode": "filtered", "table.include.list": "public.items", "snapshot.mode": "initial",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter", "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "true", "value.converter.schemas.enable": "true"
    });
    let r = http().put(format!("{CONNECT}/connectors/{name}/config")).json(&config).send().await.unwrap();
    assert!(r.status().is_success(), "creating the connector: {}", r.text().await.unwrap());

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("pg.yaml");
    let index = format!("{}-items", name.replace('_', "-"));
    std::fs::write(
        &model,
        format!("read_model: {name}\ntables:\n  - topic: {topic}\n    elasticsearch: {{ index: {index} }}\n"),
    )
    .unwrap();
    // The connector creates its topic on the first snapshot record.
    wait_for(Duration::from_secs(90), "the connector's snapshot on Kafka", || {
        let topic = topic.clone();
        async move { lag(&format!("probe-{topic}"), &[topic]).is_some_and(|l| l >= 2) }
    })
    .await;
    let _p = start_projector(&model, &format!("projector.{name}"));

    // Streaming changes: an insert, an update, a delete.
    psql(&source.db, "insert into items (id, name, price, amount, ratio, qty, small, active, created_at, updated_at, day, at_time, uid, data, doc, tags)
         values (3, 'streamed', 99999999.99, -0.000001, 'NaN', 2147483647, 32767, true, '1999-12-31 23:59:59.999999', '1999-12-31 23:59:59.999999-08',
                 '1900-03-01', '23:59:59.999999', 'c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13', '\\x0001ff', '{\"n\": null}', '{\"with space\",\"\"}');
         update items set name = 'snapshot row, renamed', price = 12.35 where id = 1;
         delete from items where id = 2;");

    wait_for(Duration::from_secs(90), "the three changes in Elasticsearch", || async {
        let docs = docs(&index).await;
        docs.len() == 2 && docs.get("1").is_some_and(|d| d["name"] == "snapshot row, renamed") && docs.contains_key("3")
    })
    .await;
    let d = docs(&index).await;
    let one = &d["1"];
    assert_eq!(one["price"].to_string(), "12.35", "numeric(10,2), exact digits");
    assert_eq!(one["amount"].to_string(), "3.14159", "numeric without scale");
    assert_eq!(one["ratio"], 1.5);
    assert_eq!((one["qty"].clone(), one["small"].clone(), one["active"].clone()), (json!(7), json!(-3), json!(true)));
    assert_eq!(one["created_at"], "2026-11-27T10:11:12.123456", "timestamp: the wall clock");
    assert_eq!(one["updated_at"], "2026-11-27T08:11:12.500000Z", "timestamptz: UTC");
    assert_eq!(one["day"], "2026-11-27");
    assert_eq!(one["at_time"], "10:11:12.5");
    assert_eq!(one["uid"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(one["data"], "3q2+7w==", "bytea as base64");
    assert_eq!(one["doc"], json!({"a": [1, "x"]}));
    assert_eq!(one["tags"], json!(["red", "blue"]));
    let three = &d["3"];
    assert_eq!(three["price"].to_string(), "99999999.99");
    assert_eq!(three["amount"].as_f64(), Some(-0.000001));
    assert_eq!(three["ratio"], Json::Null, "NaN is not a JSON number");
    assert_eq!(three["qty"], 2147483647);
    assert_eq!(three["created_at"], "1999-12-31T23:59:59.999999");
    assert_eq!(three["day"], "1900-03-01");
    assert_eq!(three["data"], "AAH/");
    assert_eq!(three["doc"], json!({"n": null}));
    assert_eq!(three["tags"], json!(["with space", ""]));
    assert!(!d.contains_key("2"), "the deleted row is gone");
}

fn start_projector(model: &std::path::Path, group: &str) -> Projector {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = model.with_extension("log");
    let child = Command::new(env!("CARGO_BIN_EXE_projector"))
        .arg("run")
        .arg(model)
        .args(["--group", group, "--http-addr", &format!("127.0.0.1:{port}")])
        .env("PROJECTOR_BROKERS", brokers())
        .env("PROJECTOR_ELASTICSEARCH_URL", es_url())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Projector::from_child(child, port, log)
}

async fn docs(index: &str) -> std::collections::BTreeMap<String, Json> {
    search_all(index)
        .await
        .into_iter()
        .map(|(id, mut src, _)| {
            src.as_object_mut().unwrap().remove("__projector");
            (id, src)
        })
        .collect()
}
