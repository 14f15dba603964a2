//! `on_type_change: rebuild` in the running service: the writer holds a
//! target that cannot take a field retyped at the source and asks for its
//! rebuild ([`crate::pipeline::versions::RebuildRequest`]); this serves
//! those requests in the same process, one rebuild per table at a time,
//! with the engine `projector rebuild` runs ([`super::version`]). Readers
//! keep the current version meanwhile; the swap ends the hold.
//!
//! A table with a whole mirror is rebuilt from it (for the mirror itself,
//! from its topic), after the mirror holds every write of the share that
//! met the change, so the new version is typed from the new type. A rebuild
//! that fails is logged, reported by health and begun again a little later:
//! it resumes where it stopped. Several instances asking at once share the
//! one rebuild, as `projector rebuild` started twice does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::version::VersionRebuild;
use super::{RebuildError, RowSource, defaults};
use crate::decode::{DecodeOptions, SourcePosition};
use crate::mapping::ReadModel;
use crate::ops::Health;
use crate::pipeline::dead_letter::DeadLetters;
use crate::pipeline::versions::RebuildRequest;
use crate::pipeline::{ErrorTolerance, Shutdown};
use crate::sink::Sink;
use crate::sink::catalog::Catalog;
use crate::source::mirror::whole_mirror;

/// How long a failed rebuild waits before it is begun again (it resumes).
const AGAIN: Duration = Duration::from_secs(15);

/// How often the mirror is asked whether it holds a request's writes.
const MIRROR_POLL: Duration = Duration::from_millis(500);

/// What a running service needs to rebuild one sink's targets itself.
pub struct AutoRebuild<S: Sink> {
    pub sink: Arc<S>,
    pub model: Arc<ReadModel>,
    pub catalog: Arc<Catalog>,
    pub postgres_url: String,
    pub brokers: String,
    pub decode: DecodeOptions,
    pub dead_letters: DeadLetters,
    /// The service's health: a rebuild that fails is reported there.
    pub health: Health,
    /// This instance, as range owner.
    pub worker: String,
    /// The service's `--errors-tolerance`.
    pub tolerance: ErrorTolerance,
    /// `run --rebuild-max-rows-per-second`.
    pub max_rows_per_second: Option<u64>,
    /// `run --rebuild-page-rows`.
    pub page_rows: i64,
}

impl<S: Sink> AutoRebuild<S> {
    /// Serves rebuild requests until shutdown; each table's rebuild is its
    /// own task, and a request for a table already being rebuilt is moot.
    pub async fn serve(self, mut requests: UnboundedReceiver<RebuildRequest>, mut shutdown: Shutdown) {
        let this = Arc::new(self);
        let mut running: HashSet<String> = HashSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(topic) = done {
                        running.remove(&topic);
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    if running.insert(request.topic.clone()) {
                        let this = this.clone();
                        let shutdown = shutdown.clone();
                        tasks.spawn(async move {
                            let topic = request.topic.clone();
                            this.until_swapped(request, shutdown).await;
                            topic
                        });
                    }
                }
            }
        }
    }

    /// Rebuilds the request's table until it is swapped in (or shutdown).
    async fn until_swapped(&self, request: RebuildRequest, mut shutdown: Shutdown) {
        let name = self.sink.name();
        let key = format!("rebuild of {}", request.topic);
        tracing::warn!(sink = name, topic = %request.topic, reason = %request.reason, "on_type_change: rebuild: rebuilding the target as a new version while readers keep the current one");
        loop {
            let attempt = async {
                let from = self.row_source(&request.topic);
                if from == RowSource::Mirror {
                    self.wait_for_mirror(&request).await?;
                }
                self.version_rebuild(&request.topic, from).run().await
            };
            let result = tokio::select! {
                _ = shutdown.recv() => return,
                r = attempt => r,
            };
            match result {
                Ok(rebuilt) => {
                    self.health.settled(name, &key);
                    tracing::info!(sink = name, topic = %request.topic, version = rebuilt.version.version, physical = %rebuilt.version.physical, parity = %rebuilt.parity,
                        "on_type_change: rebuild: swapped; readers now see the new version, the previous one is kept until `projector gc`");
                    return;
                }
                Err(e) => {
                    let message = format!("{e}; projector begins it again in {} s", AGAIN.as_secs());
                    self.health.stuck(name, &key, &message);
                    tracing::error!(sink = name, topic = %request.topic, error = %e, "on_type_change: rebuild failed; beginning it again shortly (it resumes)");
                    tokio::select! {
                        _ = shutdown.recv() => return,
                        _ = tokio::time::sleep(AGAIN) => {}
                    }
                }
            }
        }
    }

    /// The mirror when the table has a whole one that is not this sink's
    /// own target; else the table's topic.
    fn row_source(&self, topic: &str) -> RowSource {
        let mirrored = self.model.table(topic).is_some_and(|t| whole_mirror(t).is_ok());
        if mirrored && self.sink.name() != "postgres" { RowSource::Mirror } else { RowSource::Kafka }
    }

    /// Waits until the mirror holds every write of the request at its
    /// position or later, so that its columns have the new types.
    async fn wait_for_mirror(&self, request: &RebuildRequest) -> Result<(), RebuildError> {
        let table =
            self.model.table(&request.topic).ok_or_else(|| self.failed(&request.topic, "not in the read model"))?;
        let mirror = whole_mirror(table)?;
        let client = super::connect(&self.postgres_url, &request.topic).await?;
        let ids: Vec<&str> = request.writes.iter().map(|(id, _)| id.as_str()).collect();
        let sql =
            format!("SELECT __id, __position FROM {} WHERE __id = ANY($1)", crate::sink::postgres::quote_table(mirror));
        let mut told = false;
        loop {
            let rows = client.query(&sql, &[&ids]).await.map_err(|e| self.failed(&request.topic, &e.to_string()))?;
            let held: HashMap<String, SourcePosition> =
                rows.iter().map(|r| (r.get(0), SourcePosition::from_stored(r.get::<_, String>(1)))).collect();
            let behind = request.writes.iter().filter(|(id, at)| held.get(id).is_none_or(|p| p < at)).count();
            if behind == 0 {
                return Ok(());
            }
            if !told {
                tracing::info!(sink = self.sink.name(), topic = %request.topic, mirror, behind, "waiting for the mirror to hold the writes that changed type before rebuilding from it");
                told = true;
            }
            tokio::time::sleep(MIRROR_POLL).await;
        }
    }

    fn failed(&self, topic: &str, message: &str) -> RebuildError {
        RebuildError::Postgres { rebuild: format!("{} {topic}", self.sink.name()), message: message.to_string() }
    }

    fn version_rebuild(&self, topic: &str, from: RowSource) -> VersionRebuild<S> {
        VersionRebuild {
            sink: self.sink.clone(),
            model: self.model.clone(),
            catalog: self.catalog.clone(),
            topic: topic.to_string(),
            from,
            brokers: self.brokers.clone(),
            decode: self.decode.clone(),
            worker: self.worker.clone(),
            postgres_url: self.postgres_url.clone(),
            ranges: defaults::RANGES,
            page_rows: self.page_rows,
            lease: defaults::LEASE,
            max_rows_per_second: self.max_rows_per_second,
            dead_letters: self.dead_letters.clone(),
            health: Health::default(),
            tolerance: self.tolerance,
            members_timeout: defaults::MEMBERS_TIMEOUT,
            parity_timeout: defaults::PARITY_TIMEOUT,
        }
    }
}
