//! The BigQuery sink driven in-process against the local emulator
//! (`scripts/stack up`, http://127.0.0.1:9050, project `projector-local`):
//! Debezium-shaped fixtures are decoded and mapped exactly as the pipeline
//! does, then handed to `prepare` and `write`. Each test gets its own dataset
//! and drops it at the end.

use std::path::Path;
use std::sync::Arc;

use projector::decode::{DecodeOptions, Decoded, decode};
use projector::demo::sqlserver::Record;
use projector::mapping::ReadModel;
use projector::pipeline::fields::KnownFields;
use projector::pipeline::isolate::TargetCall;
use projector::sink::bigquery::{Auth, BigQuery};
use projector::sink::{Outcome, Sink, Write};
use projector::source::{Lineage, SourceRecord};
use serde_json::Value as Json;

use super::{bigquery_rows, get_json, http, unique};

pub const PROJECT: &str = "projector-local";

pub fn base_url() -> String {
    std::env::var("PROJECTOR_BIGQUERY_URL").unwrap_or_else(|_| "http://127.0.0.1:9050".into())
}

/// One test's dataset, read model and sink.
pub struct Bq {
    pub dataset: String,
    pub model: Arc<ReadModel>,
    pub sink: BigQuery,
    pub fields: KnownFields,
    offset: std::cell::Cell<i64>,
}

impl Bq {
    pub async fn new(stem: &str, topic: &str, bigquery: &str) -> Bq {
        let dataset = unique(&format!("it_{stem}_"));
        Bq::named(&dataset.clone(), dataset, topic, bigquery).await
    }

    /// A read model called `read_model` writing into `dataset`.
    pub async fn named(read_model: &str, dataset: String, topic: &str, bigquery: &str) -> Bq {
        Bq::named_with(read_model, dataset, topic, bigquery, "").await
    }

    /// The same with more top-level read-model lines (`options`, e.g. `on_drop: null\n`).
    pub async fn named_with(read_model: &str, dataset: String, topic: &str, bigquery: &str, options: &str) -> Bq {
        let yaml =
            format!("read_model: {read_model}\n{options}tables:\n  - topic: {topic}\n    bigquery: {bigquery}\n");
        let model = Arc::new(ReadModel::parse(Path::new("test.yaml"), &yaml).expect("valid read model"));
        let sink = Bq::sink(&dataset, &model).await;
        Bq { dataset, model, sink, fields: KnownFields::default(), offset: std::cell::Cell::new(0) }
    }

    /// Another sink instance on the same dataset and read model, as a second
    /// projector process in the same group would hold.
    pub async fn another_sink(&self) -> BigQuery {
        Bq::sink(&self.dataset, &self.model).await
    }

    async fn sink(dataset: &str, model: &Arc<ReadModel>) -> BigQuery {
        let sink = BigQuery::new(&base_url(), PROJECT, dataset, model.clone(), Auth::None).unwrap();
        sink.prepare(model).await.expect("the BigQuery emulator is up (scripts/stack up)");
        // What the pipeline does on start: version 1 of each table, readers on it.
        for table in &model.tables {
            let logical = sink.target(table).unwrap();
            let physical = sink.physical(logical, 1);
            sink.create_version(table, &physical).await.unwrap();
            sink.point_readers(table, logical, &physical).await.unwrap();
        }
        sink
    }

    /// Decodes and maps fixture records into writes, as the pipeline does.
    pub fn writes(&self, records: &[Record]) -> Vec<Write> {
        let mut out = Vec::new();
        for r in records {
            let offset = self.offset.get();
            self.offset.set(offset + 1);
            let rec = SourceRecord {
                lineage: Lineage { topic: r.topic.as_str().into(), partition: 0, offset },
                key: Some(r.key.clone().into()),
                value: r.value.clone().map(Into::into),
                headers: vec![],
                timestamp_ms: None,
                generation: 0,
            };
            let Decoded::Change(ev) = decode(&rec, &DecodeOptions::default()).unwrap() else { continue };
            let table = self.model.table(&r.topic).unwrap();
            let doc = table.document(ev).unwrap();
            let target = self.sink.target(table).unwrap();
            out.push(Write { target: target.into(), doc });
        }
        out
    }

    /// Writes one table's writes as the pipeline does: new fields typed
    /// and added first, a refused call split until the bad rows are alone.
    pub async fn write(&self, writes: &[Write]) -> Vec<Outcome> {
        self.write_with(&self.sink, &self.fields, writes).await
    }

    /// The same through another sink instance and its own known fields.
    pub async fn write_with(&self, sink: &BigQuery, fields: &KnownFields, writes: &[Write]) -> Vec<Outcome> {
        let table = &self.model.tables[0];
        let target = sink.target(table).unwrap();
        let call = TargetCall { sink, fields, table, target, progress: &[] };
        call.write_isolating(writes).await.expect("batch written")
    }

    pub fn table(&self, t: &str) -> String {
        format!("`{PROJECT}`.`{}`.`{}`", self.dataset, t.replace('`', "\\`"))
    }

    /// Rows of a query, cells as text (TIMESTAMPs as integer microseconds).
    pub async fn query(&self, sql: &str) -> Vec<Vec<Json>> {
        bigquery_rows(sql).await
    }

    pub async fn schema(&self, table: &str) -> Vec<(String, String)> {
        let url = format!("{}/bigquery/v2/projects/{PROJECT}/datasets/{}/tables/{table}", base_url(), self.dataset);
        get_json(&url).await["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["name"].as_str().unwrap().to_string(), f["type"].as_str().unwrap().to_string()))
            .collect()
    }

    /// Deletes a table or view behind the sink's back.
    pub async fn drop_table(&self, table: &str) {
        let url = format!("{}/bigquery/v2/projects/{PROJECT}/datasets/{}/tables/{table}", base_url(), self.dataset);
        let status = http().delete(url).send().await.unwrap().status();
        assert!(status.is_success(), "deleting table {table}: HTTP {status}");
    }

    pub async fn drop(self) {
        let _ = http()
            .delete(format!(
                "{}/bigquery/v2/projects/{PROJECT}/datasets/{}?deleteContents=true",
                base_url(),
                self.dataset
            ))
            .send()
            .await;
    }
}
