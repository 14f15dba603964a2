//! Rebuilds, beside the path: filling an empty new physical target (an
//! Elasticsearch index, a PostgreSQL or BigQuery table) from the staging
//! PostgreSQL mirror while the live stream also writes to it. Every row of
//! the mirror ([`crate::source::mirror`]) goes through the same mapping
//! ([`crate::mapping::TableMapping::document`]) and the same writer as a
//! live batch ([`crate::pipeline::writer::Writer`]: field typing, isolation,
//! retry, dead letters), so its writes are guarded by the source position
//! like any other: nothing old overwrites anything new, whichever lands first.
//!
//! The files: [`version`] (one rebuild from the new version to the swap,
//! what `projector rebuild` runs), [`ranges`] (the key space, leases and
//! checkpoints), [`throttle`], [`progress`], [`parity`] (the check before a
//! swap), [`replay`] (the rows from the table's topic instead of the mirror:
//! `--from kafka`).

pub mod auto;
pub mod parity;
pub mod progress;
pub mod ranges;
pub mod replay;
pub mod throttle;
pub mod version;

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::mapping::{ReadModel, TableMapping};
use crate::ops::Health;
use crate::pipeline::batch::{Action, Batch, Item};
use crate::pipeline::dead_letter::DeadLetters;
use crate::pipeline::fields::KnownFields;
use crate::pipeline::versions::Versions;
use crate::pipeline::writer::Writer;
use crate::pipeline::{ErrorTolerance, Patience, PipelineError};
use crate::sink::{Sink, SinkError, Write};
use crate::source::SourceRecord;
use crate::source::mirror::{KeyColumns, Mirror, MirrorError};
use progress::Progress;
use ranges::{Claim, Plan};
use throttle::Throttle;

/// The defaults of a rebuild's settings, for `projector rebuild`'s flags and
/// the rebuilds a running service begins itself ([`auto`]).
pub mod defaults {
    use std::time::Duration;

    /// Ranges the key space is split into, for workers to share.
    pub const RANGES: usize = 8;
    pub const PAGE_ROWS: i64 = 1000;
    /// How long a range stays claimed without a checkpoint.
    pub const LEASE: Duration = Duration::from_secs(30);
    /// How long to wait for running instances to write the new version.
    pub const MEMBERS_TIMEOUT: Duration = Duration::from_secs(90);
    /// How long parity checks differences again before it fails.
    pub const PARITY_TIMEOUT: Duration = Duration::from_secs(30);
}

/// Where a rebuild's rows come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RowSource {
    /// The staging PostgreSQL mirror of the table.
    Mirror,
    /// The table's topic, replayed from its earliest offset (see `replay.rs`):
    /// for tables the mirror does not hold, and for the mirror itself.
    Kafka,
}

/// The sinks a rebuild can fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RebuildSink {
    Elasticsearch,
    Postgres,
    Bigquery,
}

impl RebuildSink {
    /// The sink's name, as `Sink::name` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            RebuildSink::Elasticsearch => "elasticsearch",
            RebuildSink::Postgres => "postgres",
            RebuildSink::Bigquery => "bigquery",
        }
    }
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(
        "rebuild {rebuild}: staging PostgreSQL: {message}; check that it is up, then run the rebuild again (it resumes)"
    )]
    Postgres { rebuild: String, message: String },
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("rebuild {rebuild}: the read model has no table for topic {topic}; check --table")]
    NoTable { rebuild: String, topic: String },
    #[error("rebuild {rebuild} exists with other settings: {detail}; use a new rebuild id")]
    Mismatch { rebuild: String, detail: String },
    #[error("rebuild {rebuild}: {source}")]
    Write { rebuild: String, source: PipelineError },
    #[error("rebuild {rebuild}: {source}; fix the sink, then run the rebuild again (it resumes)")]
    Sink { rebuild: String, source: SinkError },
    #[error("rebuild {rebuild}: Kafka: {message}; check --brokers, then run the rebuild again (it resumes)")]
    Kafka { rebuild: String, message: String },
    #[error(
        "rebuild {rebuild}: the parity check failed, so the version was not swapped in and stays building: {summary}\nfix the differences (or let the live stream settle), then run the same command again: it resumes and checks again"
    )]
    Parity { rebuild: String, summary: String },
    #[error(
        "rebuild {rebuild}: running instances {members:?} have not started writing {physical} after {waited} s (they have not read the version catalog since it began), so live changes could miss it; check that they are up and reach the staging PostgreSQL, or stop them, then run the same command again: it resumes (or raise --members-timeout-seconds)"
    )]
    MembersBehind { rebuild: String, physical: String, members: Vec<String>, waited: u64 },
}

/// One worker's share of a rebuild: copy `topic`'s mirror into `target`.
pub struct Rebuild<S: Sink> {
    pub sink: Arc<S>,
    pub model: Arc<ReadModel>,
    /// The topic whose table is rebuilt.
    pub topic: String,
    /// The mirror table (see [`crate::source::mirror::whole_mirror`]).
    pub mirror: String,
    /// The physical target to fill: a version of the table's target, made
    /// by `copy` (`Sink::create_version`) when it is not there yet.
    pub target: String,
    pub rebuild_id: String,
    /// This process, as range owner; unique per worker.
    pub worker: String,
    /// The staging PostgreSQL holding the mirror and the rebuild's ranges.
    pub postgres_url: String,
    /// Ranges the key space is split into when the rebuild is registered.
    pub ranges: usize,
    pub page_rows: i64,
    pub lease: Duration,
    pub max_rows_per_second: Option<u64>,
    pub dead_letters: DeadLetters,
    pub health: Health,
    pub tolerance: ErrorTolerance,
}

/// What one worker did.
#[derive(Clone, Debug, PartialEq)]
pub struct Copied {
    /// Mirror rows this worker read and wrote.
    pub rows: u64,
    /// The mirror's rows when the rebuild was registered.
    pub total: u64,
}

async fn connect(url: &str, rebuild: &str) -> Result<Client, RebuildError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| RebuildError::Postgres { rebuild: rebuild.into(), message: format!("cannot connect: {e}") })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "rebuild's PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Makes the version `target` of `table` (if it is not there yet) with the
/// file's shape, as every version is, and readies it for the bulk fill: no
/// reader sees it before the swap (`point_readers` undoes that).
async fn ready_to_fill<S: Sink>(
    sink: &S,
    table: &TableMapping,
    target: &str,
    rebuild: &str,
) -> Result<(), RebuildError> {
    let failed = |source| RebuildError::Sink { rebuild: rebuild.into(), source };
    sink.create_version(table, target).await.map_err(failed)?;
    sink.filling(target).await.map_err(failed)
}

impl<S: Sink> Rebuild<S> {
    /// Copies ranges until every range of the rebuild is done (by this
    /// worker or another). Safe to run again after a crash: it resumes
    /// from the ranges' checkpoints.
    pub async fn copy(&self) -> Result<Copied, RebuildError> {
        let id = self.rebuild_id.as_str();
        let mut client = connect(&self.postgres_url, id).await?;
        crate::sink::postgres::migrate(&mut client)
            .await
            .map_err(|source| RebuildError::Sink { rebuild: id.into(), source })?;
        let table = self
            .model
            .table(&self.topic)
            .ok_or_else(|| RebuildError::NoTable { rebuild: id.into(), topic: self.topic.clone() })?;
        let mirror = Mirror::open(&client, &self.mirror).await?;
        mirror.check_covers(table)?;
        ready_to_fill(&*self.sink, table, &self.target, id).await?;
        let plan = Plan {
            rebuild_id: id,
            read_model: &self.model.name,
            topic: &self.topic,
            sink: self.sink.name(),
            mirror: &self.mirror,
            target: &self.target,
            ranges: self.ranges,
        };
        let total = ranges::register(&mut client, &plan).await?;
        let fields = KnownFields::default();
        let mut throttle = Throttle::new(self.max_rows_per_second);
        let mut progress = Progress::new(id, total);
        let mut key: Option<KeyColumns> = None;
        loop {
            match ranges::claim(&client, id, &self.worker, self.lease).await? {
                Claim::Finished => break,
                // Another worker holds the rest; its lease runs out if it died.
                Claim::Busy => tokio::time::sleep(self.lease / 4).await,
                Claim::Range(mut range) => {
                    let (lo, hi) = (range.lo.clone(), range.hi.clone());
                    // One page of the range after `after`, mapped: the rows
                    // it holds, its last id and its batch.
                    let read = |after: Option<String>, key: Option<KeyColumns>| {
                        let (lo, hi, client, mirror) = (lo.clone(), hi.clone(), &client, &mirror);
                        async move {
                            let page = mirror
                                .page(client, lo.as_deref(), hi.as_deref(), after.as_deref(), self.page_rows)
                                .await?;
                            let key = key.or_else(|| KeyColumns::infer(&page));
                            let (rows, last) = (page.len(), page.last().map(|r| r.id.clone()));
                            let batch =
                                self.map_page(mirror, table, page, key.as_ref().unwrap_or(&KeyColumns::default()))?;
                            Ok::<_, RebuildError>((rows, last, batch, key))
                        }
                    };
                    let mut page = read(range.last_id.clone(), key.clone()).await?;
                    loop {
                        let (rows, last, batch, page_key) = page;
                        if rows == 0 {
                            ranges::checkpoint(&client, id, &self.worker, &range, 0, true, self.lease).await?;
                            break;
                        }
                        if key.is_none() {
                            key = page_key;
                        }
                        throttle.admit(rows as u64).await;
                        // The next page is read and mapped while this one is written.
                        let (written, next) =
                            tokio::join!(self.write_batch(&fields, batch), read(last.clone(), key.clone()));
                        written?;
                        range.last_id = last;
                        let n = i64::try_from(rows).unwrap_or(i64::MAX);
                        if !ranges::checkpoint(&client, id, &self.worker, &range, n, false, self.lease).await? {
                            tracing::warn!(
                                rebuild = id,
                                range = range.range_no,
                                "lease lost to another worker; leaving the range to it"
                            );
                            break;
                        }
                        let (done, _) = ranges::totals(&client, id).await?;
                        progress.copied(rows as u64, done, total);
                        page = next?;
                    }
                }
            }
        }
        progress.finish();
        ranges::finish(&client, id).await?;
        tracing::info!(rebuild = id, rows = progress.copied, total, "rebuild copy finished");
        Ok(Copied { rows: progress.copied, total })
    }

    /// Maps one page into one batch: a write of each row to the target, or
    /// a dead letter for a row the mapping refuses.
    fn map_page(
        &self,
        mirror: &Mirror,
        table: &crate::mapping::TableMapping,
        page: Vec<crate::source::mirror::MirrorRow>,
        key: &KeyColumns,
    ) -> Result<Batch, RebuildError> {
        let topic: Arc<str> = Arc::from(self.topic.as_str());
        let target: Arc<str> = Arc::from(self.target.as_str());
        let excluded = self.sink.excluded(table);
        let mut batch = Batch::default();
        for row in page {
            let event = mirror.event(&topic, row, key)?;
            let record = SourceRecord {
                lineage: event.lineage.clone(),
                key: None,
                value: None,
                headers: vec![],
                timestamp_ms: None,
                generation: 0,
            };
            let action = match table.document(event) {
                Ok(mut doc) => {
                    if let Some(body) = doc.body.as_mut().filter(|_| !excluded.is_empty()) {
                        body.columns.retain(|(n, _)| !excluded.iter().any(|e| e == n));
                    }
                    Action::Write(Write { target: target.clone(), doc })
                }
                Err(e) => Action::DeadLetter { stage: "mapping", kind: e.kind(), reason: e.to_string() },
            };
            batch.push(Item { record, action });
        }
        Ok(batch)
    }

    /// Writes one page's batch through the pipeline's writer.
    async fn write_batch(&self, fields: &KnownFields, batch: Batch) -> Result<(), RebuildError> {
        let writer = Writer {
            sink: self.sink.clone(),
            model: self.model.clone(),
            fields: fields.clone(),
            dead_letters: self.dead_letters.clone(),
            health: self.health.clone(),
            tolerance: self.tolerance,
            stuck_after: Duration::from_secs(60),
            // The rebuild names the physical target itself.
            versions: Versions::unversioned(self.sink.name()),
            // A one-shot job: a misconfigured sink is reported, not waited for.
            patience: Patience::UntilMisconfigured,
        };
        writer
            .write(batch)
            .await
            .map(|_| ())
            .map_err(|source| RebuildError::Write { rebuild: self.rebuild_id.clone(), source })
    }
}
