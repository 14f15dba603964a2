//! One rebuild of one table's target in one sink, from start to swap: the
//! target's building version is resumed if the catalog has one, else
//! version N+1 is begun ([`crate::pipeline::versions::begin_version`]);
//! the rebuild waits until every running instance writes it (so nothing
//! that arrives from then on is missed), copies the bulk of it from its
//! row source, checks parity against that source, and swaps it in exactly
//! once. The rebuild id is derived from read model, sink, target and
//! version, so the same command started in several processes shares the
//! ranges and a re-run after a crash resumes from their checkpoints.
//!
//! Parity runs while the live stream moves both the source and the target:
//! a difference is checked again until the two agree or a deadline passes;
//! then every difference is printed and the version stays building, not
//! swapped. Two workers reaching the swap at once are ordered by the
//! catalog's lock: the second finds the version current and says so.

use std::sync::Arc;
use std::time::Duration;

use super::parity::{ParityReport, parity, recheck};
use super::{Copied, Rebuild, RebuildError, RowSource, connect};
use crate::mapping::{ReadModel, TableMapping};
use crate::ops::Health;
use crate::pipeline::ErrorTolerance;
use crate::pipeline::dead_letter::DeadLetters;
use crate::pipeline::versions::{begin_version, swap};
use crate::sink::catalog::{Catalog, State, TargetName, Version};
use crate::sink::{ErrorKind, Sink, SinkError};
use crate::source::mirror::{Mirror, whole_mirror};

/// How running instances are taken for gone: not seen in the catalog for this long.
const LIVE: Duration = Duration::from_secs(60);

/// One worker's part in rebuilding `topic`'s target of `sink` as a new version.
pub struct VersionRebuild<S: Sink> {
    pub sink: Arc<S>,
    pub model: Arc<ReadModel>,
    pub catalog: Arc<Catalog>,
    /// The topic whose table is rebuilt.
    pub topic: String,
    pub from: RowSource,
    /// With [`RowSource::Kafka`]: where the topic is, and how it is decoded.
    pub brokers: String,
    pub decode: crate::decode::DecodeOptions,
    /// This process, as range owner; unique per worker.
    pub worker: String,
    /// The staging PostgreSQL: the mirror, the ranges and the catalog.
    pub postgres_url: String,
    pub ranges: usize,
    pub page_rows: i64,
    pub lease: Duration,
    pub max_rows_per_second: Option<u64>,
    pub dead_letters: DeadLetters,
    pub health: Health,
    pub tolerance: ErrorTolerance,
    /// How long to wait for running instances to write the new version.
    pub members_timeout: Duration,
    /// How long parity may check differences again before it fails.
    pub parity_timeout: Duration,
}

/// How a rebuild ended.
#[derive(Clone, Debug)]
pub struct Rebuilt {
    pub target: TargetName,
    /// The rebuilt version, now current.
    pub version: Version,
    /// The version readers saw before, kept for rollback.
    pub previous: Option<Version>,
    pub rebuild_id: String,
    pub copied: Copied,
    pub parity: ParityReport,
    /// Whether this worker swapped it, rather than another worker of the same rebuild.
    pub swapped_here: bool,
}

/// The rebuild id of `version` of `target`: the same in every worker.
pub fn rebuild_id(target: &TargetName, version: i32) -> String {
    format!("{}/{}/{}/v{version}", target.read_model, target.sink, target.logical)
}

impl<S: Sink> VersionRebuild<S> {
    fn sink_error(&self, rebuild: &str, source: SinkError) -> RebuildError {
        RebuildError::Sink { rebuild: rebuild.to_string(), source }
    }

    fn table(&self) -> Result<&TableMapping, RebuildError> {
        self.model
            .table(&self.topic)
            .ok_or_else(|| RebuildError::NoTable { rebuild: self.model.name.clone(), topic: self.topic.clone() })
    }

    /// The target's name in the catalog.
    pub fn target_name(&self) -> Result<TargetName, RebuildError> {
        let table = self.table()?;
        let logical = self.sink.target(table).ok_or_else(|| RebuildError::NoTable {
            rebuild: format!("{} {}", self.model.name, self.sink.name()),
            topic: self.topic.clone(),
        })?;
        Ok(TargetName { read_model: self.model.name.clone(), sink: self.sink.name().into(), logical: logical.into() })
    }

    /// Carries the rebuild out (or this worker's share of it).
    pub async fn run(&self) -> Result<Rebuilt, RebuildError> {
        let table = self.table()?;
        let name = self.target_name()?;
        let version = self.building(table, &name).await?;
        let id = rebuild_id(&name, version.version);
        tracing::info!(rebuild = %id, physical = %version.physical, "rebuilding {name} as version {}", version.version);
        self.wait_for_members(&name, &version, &id).await?;
        let copied = match self.from {
            RowSource::Mirror => self.copy_from_mirror(table, &version, &id).await?,
            RowSource::Kafka => self.replay_topic(&version, &id).await?,
        };
        // Parity is with the mirror whenever the table is mirrored (for the
        // mirror itself, its current version); else by row count against the
        // current version, which the live stream keeps as fresh.
        let report = match (self.from, whole_mirror(table)) {
            (RowSource::Kafka, Err(_)) => self.parity_by_count(&name, &version, &id).await?,
            _ => self.parity_with_mirror(table, &version, &id).await?,
        };
        let (swapped_here, previous) = self.swap_once(table, &name, &version, &id).await?;
        let version = self.catalog_version(&name, version.version, &id).await?;
        Ok(Rebuilt { target: name, version, previous, rebuild_id: id, copied, parity: report, swapped_here })
    }

    /// The building version: the catalog's, or a new one begun now.
    async fn building(&self, table: &TableMapping, name: &TargetName) -> Result<Version, RebuildError> {
        let label = name.to_string();
        if let Some(v) = self.versions(name, &label).await?.into_iter().find(|v| v.state == State::Building) {
            tracing::info!(target = %name, version = v.version, "resuming the building version");
            return Ok(v);
        }
        match begin_version(&self.catalog, &*self.sink, &self.model.name, table).await {
            Ok(v) => {
                tracing::info!(target = %name, version = v.version, physical = %v.physical, "began a new version");
                Ok(v)
            }
            // Another worker of the same command began it a moment ago.
            Err(e) if e.kind == ErrorKind::Configuration => {
                match self.versions(name, &label).await?.into_iter().find(|v| v.state == State::Building) {
                    Some(v) => Ok(v),
                    None => Err(self.sink_error(&label, e)),
                }
            }
            Err(e) => Err(self.sink_error(&label, e)),
        }
    }

    async fn versions(&self, name: &TargetName, rebuild: &str) -> Result<Vec<Version>, RebuildError> {
        self.catalog.versions(name).await.map_err(|e| RebuildError::Postgres {
            rebuild: rebuild.to_string(),
            message: format!("reading the version catalog: {e}"),
        })
    }

    async fn catalog_version(&self, name: &TargetName, version: i32, id: &str) -> Result<Version, RebuildError> {
        self.versions(name, id).await?.into_iter().find(|v| v.version == version).ok_or_else(|| {
            RebuildError::Postgres {
                rebuild: id.into(),
                message: format!("version {version} left the catalog meanwhile (a gc?)"),
            }
        })
    }

    /// Waits until no running instance of the sink is behind the version's
    /// start: from then on every live write reaches it too.
    async fn wait_for_members(&self, name: &TargetName, version: &Version, id: &str) -> Result<(), RebuildError> {
        let deadline = tokio::time::Instant::now() + self.members_timeout;
        let mut told: Vec<String> = vec![];
        loop {
            let behind = self
                .catalog
                .members_behind(&name.read_model, &name.sink, version.created_ms, LIVE)
                .await
                .map_err(|e| RebuildError::Postgres { rebuild: id.into(), message: e.to_string() })?;
            if behind.is_empty() {
                return Ok(());
            }
            if behind != told {
                println!(
                    "rebuild {id}: waiting for running instances {behind:?} to start writing {} (they read the catalog every --version-refresh-ms)",
                    version.physical
                );
                told = behind.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RebuildError::MembersBehind {
                    rebuild: id.into(),
                    physical: version.physical.clone(),
                    members: behind,
                    waited: self.members_timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn mirror(&self, table: &TableMapping) -> Result<String, RebuildError> {
        Ok(whole_mirror(table)?.to_string())
    }

    async fn copy_from_mirror(
        &self,
        table: &TableMapping,
        version: &Version,
        id: &str,
    ) -> Result<Copied, RebuildError> {
        let mirror = self.mirror(table)?;
        if self.sink.name() == "postgres" && self.sink.target(table) == Some(mirror.as_str()) {
            tracing::warn!(rebuild = id, mirror = %mirror, "rebuilding the mirror from its own current version: values it lost (rounded, truncated) cannot come back; that needs --from kafka");
        }
        Rebuild {
            sink: self.sink.clone(),
            model: self.model.clone(),
            topic: self.topic.clone(),
            mirror,
            target: version.physical.clone(),
            rebuild_id: id.into(),
            worker: self.worker.clone(),
            postgres_url: self.postgres_url.clone(),
            ranges: self.ranges,
            page_rows: self.page_rows,
            lease: self.lease,
            max_rows_per_second: self.max_rows_per_second,
            dead_letters: self.dead_letters.clone(),
            health: self.health.clone(),
            tolerance: self.tolerance,
        }
        .copy()
        .await
    }

    /// Replays the table's topic into the version ([`super::replay`]).
    async fn replay_topic(&self, version: &Version, id: &str) -> Result<Copied, RebuildError> {
        super::replay::Replay {
            sink: self.sink.clone(),
            model: self.model.clone(),
            topic: self.topic.clone(),
            target: version.physical.clone(),
            rebuild_id: id.into(),
            brokers: self.brokers.clone(),
            decode: self.decode.clone(),
            dead_letters: self.dead_letters.clone(),
            health: self.health.clone(),
            tolerance: self.tolerance,
            limits: Default::default(),
        }
        .replay()
        .await
    }

    /// For a table with no mirror: the version's rows (tombstones included)
    /// against the current version's, checked again until they agree or
    /// `parity_timeout`; ids cannot be compared without a source to list them.
    async fn parity_by_count(
        &self,
        name: &TargetName,
        version: &Version,
        id: &str,
    ) -> Result<ParityReport, RebuildError> {
        let label = name.to_string();
        let current =
            self.versions(name, &label).await?.into_iter().find(|v| v.state == State::Current).ok_or_else(|| {
                RebuildError::Mismatch { rebuild: id.into(), detail: format!("{name} has no current version") }
            })?;
        let deadline = tokio::time::Instant::now() + self.parity_timeout;
        loop {
            let count = |p: String| async move { self.sink.count(&p).await.map_err(|e| self.sink_error(id, e)) };
            let report = ParityReport {
                mirror_rows: count(current.physical.clone()).await?,
                target_rows: count(version.physical.clone()).await?,
                against: super::parity::Against::CurrentVersion,
                ..Default::default()
            };
            if report.passed() {
                tracing::info!(rebuild = id, current = %current.physical, "parity by row count passed (the table is not mirrored, so ids were not compared): {report}");
                return Ok(report);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RebuildError::Parity {
                    rebuild: id.into(),
                    summary: format!(
                        "{report} (rows of the current version {} against the rebuilt one)",
                        current.physical
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Parity with the mirror, checked again while they differ (the live
    /// stream may be moving either side) until `parity_timeout`.
    async fn parity_with_mirror(
        &self,
        table: &TableMapping,
        version: &Version,
        id: &str,
    ) -> Result<ParityReport, RebuildError> {
        let client = connect(&self.postgres_url, id).await?;
        let mirror = Mirror::open(&client, &self.mirror(table)?).await?;
        let deadline = tokio::time::Instant::now() + self.parity_timeout;
        let mut checks = 0;
        let mut report = ParityReport::default();
        loop {
            report = if checks > 0 && report.recheckable() {
                recheck(&client, &mirror, &*self.sink, &version.physical, &report).await?
            } else {
                parity(&client, &mirror, &*self.sink, &version.physical, self.page_rows.max(100)).await?
            };
            checks += 1;
            if report.passed() {
                tracing::info!(rebuild = id, checks, "parity passed: {report}");
                return Ok(report);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RebuildError::Parity { rebuild: id.into(), summary: report.to_string() });
            }
            tracing::info!(
                rebuild = id,
                differing = report.differing,
                mirror_rows = report.mirror_rows,
                target_rows = report.target_rows,
                "parity: differences left, checking again as the live stream settles"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Swaps the version in unless another worker did; returns whether this
    /// one did, and the previous version.
    async fn swap_once(
        &self,
        table: &TableMapping,
        name: &TargetName,
        version: &Version,
        id: &str,
    ) -> Result<(bool, Option<Version>), RebuildError> {
        let mine = self.catalog_version(name, version.version, id).await?;
        if mine.state == State::Building {
            match swap(&self.catalog, &*self.sink, &self.model.name, table).await {
                Ok(_) => return Ok((true, self.previous(name, id).await?)),
                // Refused: another worker swapped between the read and the lock.
                Err(e) if e.kind == ErrorKind::Configuration => {
                    if self.catalog_version(name, version.version, id).await?.state != State::Current {
                        return Err(self.sink_error(id, e));
                    }
                }
                Err(e) => return Err(self.sink_error(id, e)),
            }
        } else if mine.state != State::Current {
            return Err(RebuildError::Mismatch {
                rebuild: id.into(),
                detail: format!(
                    "version {} is {} now, not building; see `projector versions`",
                    mine.version,
                    mine.state.as_str()
                ),
            });
        }
        // Swapped by another worker: readers were pointed by it; pointing
        // again is harmless and covers a worker killed between the two.
        let logical = &name.logical;
        self.sink.point_readers(table, logical, &version.physical).await.map_err(|e| self.sink_error(id, e))?;
        Ok((false, self.previous(name, id).await?))
    }

    async fn previous(&self, name: &TargetName, id: &str) -> Result<Option<Version>, RebuildError> {
        Ok(self.versions(name, id).await?.into_iter().find(|v| v.state == State::Previous))
    }
}
