//! The rebuild measurement of `projector bench`: a staging PostgreSQL
//! mirror of `--rebuild-rows` bookings (written by the PostgreSQL sink
//! itself, as the running service writes it) is rebuilt into a fresh
//! physical target per sink with [`Rebuild::copy`], the library call the
//! `rebuild` command runs, by `--rebuild-workers` workers sharing its key
//! ranges (one for BigQuery, whose emulator runs one statement at a time). Each rebuild is checked (the target holds every mirror row) and
//! set against that sink's direct bulk ceiling, measured in the same run on
//! the same rows with [`ceiling`]: `_bulk`, COPY + upsert, and for BigQuery
//! `tabledata.insertAll`. BigQuery runs on the local emulator with its own,
//! smaller row count (`--bigquery-rebuild-rows`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::ceiling::{self, Cell3};
use super::workload;
use crate::decode::{DecodeOptions, Decoded, decode};
use crate::demo::bus_booking::Timeline;
use crate::mapping::{Document, ReadModel};
use crate::ops::Health;
use crate::pipeline::ErrorTolerance;
use crate::pipeline::dead_letter::DeadLetters;
use crate::pipeline::fields::KnownFields;
use crate::pipeline::isolate::TargetCall;
use crate::rebuild::Rebuild;
use crate::sink::bigquery::{Auth, BigQuery};
use crate::sink::elasticsearch::Elasticsearch;
use crate::sink::postgres::Postgres;
use crate::sink::{Outcome, Sink, Write};
use crate::source::{Lineage, SourceRecord};

/// The emulator's project, as the sink phase uses it.
const BIGQUERY_PROJECT: &str = "projector-local";
/// Mirror rows per rebuild page (one sink write each).
const PAGE_ROWS: i64 = 2_000;
/// Mirror rows per sink write while the mirror is filled.
const FILL_CHUNK: i64 = 10_000;

/// Where the rebuild measurement runs, and how big it is.
pub struct Settings<'a> {
    /// Names its topic, mirror, targets and rebuild ids.
    pub run: &'static str,
    pub brokers: &'a str,
    pub elasticsearch_url: &'a str,
    pub postgres_url: &'a str,
    pub bigquery_url: &'a str,
    pub sinks: &'a [String],
    pub rows: u64,
    pub bigquery_rows: u64,
    pub workers: usize,
    /// Rows each ceiling cell writes (the mirror's first ones).
    pub ceiling_docs: usize,
}

/// One sink's rebuild and its ceiling.
#[derive(Clone, Debug)]
pub struct Figures {
    pub sink: String,
    pub rows: u64,
    pub elapsed: Duration,
    pub ceiling: Option<(String, f64)>,
}

impl Figures {
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn step(what: &str) {
    eprintln!("[bench] rebuild: {what}");
}

impl Settings<'_> {
    fn topic(&self) -> String {
        workload::bookings_table(self.run).topic()
    }

    fn mirror_logical(&self) -> String {
        format!("{}_mirror", self.run)
    }

    /// The read model the rebuilds run under: the mirror named, one target per sink.
    fn rebuild_model(&self, mirror: &str) -> anyhow::Result<Arc<ReadModel>> {
        let yaml = format!(
            "read_model: {run}-rebuild\ntables:\n  - topic: {topic}\n    mirror: {mirror}\n    elasticsearch: {{ index: {run}_rebuilt }}\n    postgres: {{ table: {run}_rebuilt }}\n    bigquery: {{ table: rebuilt }}\n",
            run = self.run,
            topic = self.topic()
        );
        Ok(Arc::new(ReadModel::parse(Path::new("bench-rebuild.yaml"), &yaml)?))
    }

    /// Runs the measurement for every sink asked for; returns one row each.
    pub async fn measure(&self, http: &reqwest::Client) -> anyhow::Result<Vec<Figures>> {
        let rows = self.sinks.iter().map(|s| if s == "bigquery" { self.bigquery_rows } else { self.rows }).max();
        let Some(rows) = rows.filter(|n| *n > 0) else { return Ok(Vec::new()) };
        step(&format!("writing a {rows}-row mirror through the PostgreSQL sink"));
        let (mirror, docs) = self.fill_mirror(rows).await?;
        let filled = rows;
        let model = self.rebuild_model(&mirror)?;
        let mut out = Vec::new();
        for sink in self.sinks {
            let f = match sink.as_str() {
                "elasticsearch" => {
                    let es = Arc::new(Elasticsearch::new(self.elasticsearch_url)?);
                    let (target, n, elapsed) = self.rebuild(es.clone(), &model, &mirror, filled, rows).await?;
                    step("ceiling: direct _bulk into an index with the rebuilt mapping");
                    let cells = ceiling::elasticsearch_bulk(
                        http,
                        self.elasticsearch_url,
                        &target,
                        &docs,
                        &[1_000, 2_000, 5_000],
                        &[1, 2, 4],
                    )
                    .await?;
                    let best = best(&cells)
                        .map(|c| (format!("_bulk {} docs x {} in flight", c.batch, c.concurrency), c.docs_per_s));
                    let _ = es.drop_version(&target).await;
                    Figures { sink: sink.clone(), rows: n, elapsed, ceiling: best }
                }
                "postgres" => {
                    let pg = Arc::new(Postgres::new(self.postgres_url, model.clone()));
                    pg.prepare(&model).await?;
                    let (target, n, elapsed) = self.rebuild(pg.clone(), &model, &mirror, filled, rows).await?;
                    step("ceiling: direct COPY + INSERT ON CONFLICT into a copy of the rebuilt table");
                    let cells = ceiling::postgres_copy(self.postgres_url, &target, &docs, &[2_000, 10_000]).await?;
                    let best = best(&cells).map(|c| (format!("COPY+upsert {} rows/tx", c.batch), c.docs_per_s));
                    let _ = pg.drop_version(&target).await;
                    Figures { sink: sink.clone(), rows: n, elapsed, ceiling: best }
                }
                "bigquery" if self.bigquery_rows > 0 => {
                    let bq = Arc::new(BigQuery::new(
                        self.bigquery_url,
                        BIGQUERY_PROJECT,
                        self.run,
                        model.clone(),
                        Auth::None,
                    )?);
                    bq.prepare(&model).await?;
                    let n = self.bigquery_rows.min(rows);
                    let (target, n, elapsed) = self.rebuild(bq.clone(), &model, &mirror, filled, n).await?;
                    step("ceiling: direct tabledata.insertAll into a copy of the rebuilt table");
                    let docs = &docs[..docs.len().min(n as usize)];
                    let cells = ceiling::bigquery_insert_all(
                        http,
                        self.bigquery_url,
                        BIGQUERY_PROJECT,
                        self.run,
                        &target,
                        docs,
                    )
                    .await?;
                    let best = best(&cells).map(|c| (format!("insertAll {} rows/request", c.batch), c.docs_per_s));
                    let _ = bq.drop_version(&target).await;
                    Figures { sink: sink.clone(), rows: n, elapsed, ceiling: best }
                }
                _ => continue,
            };
            step(&format!(
                "{}: {} rows in {:.1} s = {:.0} rows/s; ceiling {}",
                f.sink,
                f.rows,
                f.elapsed.as_secs_f64(),
                f.rows_per_s(),
                f.ceiling.as_ref().map_or("–".into(), |(how, v)| format!("{v:.0}/s ({how})"))
            ));
            out.push(f);
        }
        Ok(out)
    }

    /// Writes `rows` bookings (ids 1..=rows, one insert each) into the
    /// mirror's version table through the PostgreSQL sink; returns the
    /// table and the first `ceiling_docs` documents.
    async fn fill_mirror(&self, rows: u64) -> anyhow::Result<(String, Vec<Document>)> {
        let logical = self.mirror_logical();
        let yaml = format!(
            "read_model: {}-mirror\ntables:\n  - topic: {}\n    postgres: {{ table: {logical} }}\n",
            self.run,
            self.topic()
        );
        let model = Arc::new(ReadModel::parse(Path::new("bench-mirror.yaml"), &yaml)?);
        let table = &model.tables[0];
        let pg = Postgres::new(self.postgres_url, model.clone());
        pg.prepare(&model).await?;
        let physical = pg.physical(&logical, 1);
        pg.create_version(table, &physical).await?;
        pg.point_readers(table, &logical, &physical).await?;
        let source = workload::bookings_table(self.run);
        let target: Arc<str> = Arc::from(physical.as_str());
        let fields = KnownFields::default();
        let (mut clock, mut next, mut docs) = (Timeline::default(), 1_i64, Vec::new());
        let last = i64::try_from(rows)?;
        let started = Instant::now();
        while next <= last {
            let end = (next + FILL_CHUNK).min(last + 1);
            let mut writes = Vec::with_capacity((end - next) as usize);
            for (i, r) in workload::inserts(&source, &mut clock, next..end).into_iter().enumerate() {
                let rec = SourceRecord {
                    lineage: Lineage { topic: r.topic.into(), partition: 0, offset: next - 1 + i as i64 },
                    key: Some(r.key.into()),
                    value: r.value.map(Into::into),
                    headers: Vec::new(),
                    timestamp_ms: None,
                    generation: 0,
                };
                let Decoded::Change(event) = decode(&rec, &DecodeOptions::default())? else { continue };
                let doc = table.document(event).map_err(|e| anyhow::anyhow!("{}: {e}", rec.lineage))?;
                if docs.len() < self.ceiling_docs {
                    docs.push(doc.clone());
                }
                writes.push(Write { target: target.clone(), doc });
            }
            let call = TargetCall { sink: &pg, fields: &fields, table, target: &physical, progress: &[] };
            let outcomes = call.write_isolating(&writes).await?;
            anyhow::ensure!(
                outcomes.iter().all(|o| *o == Outcome::Applied),
                "filling the mirror {physical}: not every row was applied: {:?}",
                outcomes.iter().find(|o| **o != Outcome::Applied)
            );
            next = end;
        }
        step(&format!("mirror {physical}: {rows} rows in {:.1} s", started.elapsed().as_secs_f64()));
        Ok((physical, docs))
    }

    /// Rebuilds `rows` of the mirror into a fresh version of the sink's
    /// target with `workers` workers on one rebuild id; checks that the
    /// target holds them; returns the target, the rows and the time taken.
    async fn rebuild<S: Sink>(
        &self,
        sink: Arc<S>,
        model: &Arc<ReadModel>,
        mirror: &str,
        filled: u64,
        rows: u64,
    ) -> anyhow::Result<(String, u64, Duration)> {
        let table = &model.tables[0];
        let logical = sink.target(table).context("the rebuild model has a target for every sink")?;
        // A fresh physical target, never one that exists from an earlier run.
        let target = sink.physical(logical, 1);
        let _ = sink.drop_version(&target).await;
        let name = sink.name();
        let id = format!("{}-{name}", self.run);
        let limit = if rows < filled {
            // BigQuery's smaller share: a view of the mirror's first rows.
            let view = format!("{mirror}_first_{rows}");
            let (client, conn) = tokio_postgres::connect(self.postgres_url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client
                .batch_execute(&format!(
                    "CREATE OR REPLACE VIEW \"{view}\" AS SELECT * FROM \"{mirror}\" ORDER BY __id LIMIT {rows}"
                ))
                .await?;
            view
        } else {
            mirror.to_string()
        };
        // The emulator runs one DML statement at a time (two writers only
        // conflict and retry): BigQuery's rebuild has one worker. A worker
        // with no range left waits a quarter lease for the others, so the
        // lease is short where pages are fast (it is renewed every page).
        // BigQuery's one range is one MERGE per page.
        let (workers, ranges, lease) = match name {
            "bigquery" => (1, 1, Duration::from_secs(120)),
            _ => (self.workers.max(1), self.workers.max(1) * 4, Duration::from_secs(4)),
        };
        step(&format!("{name}: {rows} rows from {limit} into {target}, {workers} workers"));
        let dead_letters = DeadLetters::new(self.brokers, &format!("{}.rebuild.dlq", self.run), &model.name)?;
        let started = Instant::now();
        let mut running = tokio::task::JoinSet::new();
        for w in 0..workers {
            let r = Rebuild {
                sink: sink.clone(),
                model: model.clone(),
                topic: table.topic.clone(),
                mirror: limit.clone(),
                target: target.clone(),
                rebuild_id: id.clone(),
                worker: format!("{id}-w{w}"),
                postgres_url: self.postgres_url.to_string(),
                ranges,
                page_rows: PAGE_ROWS,
                lease,
                max_rows_per_second: None,
                dead_letters: dead_letters.clone(),
                health: Health::default(),
                tolerance: ErrorTolerance::None,
            };
            running.spawn(async move { r.copy().await });
        }
        let mut copied = 0;
        while let Some(done) = running.join_next().await {
            copied += done??.rows;
        }
        let elapsed = started.elapsed();
        anyhow::ensure!(copied == rows, "{name}: the rebuild copied {copied} rows of {rows}");
        let held = sink.count(&target).await?;
        anyhow::ensure!(
            held == rows,
            "{name}: the rebuilt {target} holds {held} rows, the mirror {rows}: the benchmark's result is wrong"
        );
        Ok((target, rows, elapsed))
    }
}

fn best(cells: &[Cell3]) -> Option<Cell3> {
    cells.iter().copied().max_by(|a, b| a.docs_per_s.total_cmp(&b.docs_per_s))
}
