//! Which physical targets each write goes to: every live version (current,
//! building, previous) of its logical target, as the version catalog
//! ([`crate::sink::catalog`]) records them. On start the sink's targets
//! are established (a fresh target becomes version 1, an unversioned one is
//! adopted as version 1, and readers are pointed at the current version);
//! then the catalog is read again every few seconds, and at once when a
//! write finds its target gone, so every instance starts writing a new
//! version within one refresh. Each refresh is recorded per instance
//! (`projector.members`), so a rebuild can wait until all of them write it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use super::Shutdown;
use crate::mapping::ReadModel;
use crate::sink::catalog::{Catalog, CatalogError, State, TargetName, Version};
use crate::sink::{ErrorKind, Sink, SinkError};

/// The versions of one sink's logical targets, as this instance last read them.
#[derive(Clone)]
pub struct Versions {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: no catalog (unit tests); writes go to the logical target.
    catalog: Option<Arc<Catalog>>,
    read_model: String,
    sink: &'static str,
    member: String,
    /// The physical targets of each logical one, current first.
    by_logical: RwLock<HashMap<String, Vec<Arc<str>>>>,
    /// The building version of each logical target that has one.
    building: RwLock<HashMap<String, Arc<str>>>,
    /// Where `on_type_change: rebuild` asks for a rebuild (set by `run`).
    rebuilds: OnceLock<tokio::sync::mpsc::UnboundedSender<RebuildRequest>>,
    /// Whether each current version agrees with the file (see [`super::shape`]).
    shapes: super::shape::ShapeCheck,
}

impl Versions {
    pub fn new(catalog: Arc<Catalog>, read_model: &str, sink: &'static str, member: &str) -> Versions {
        Versions::with(Some(catalog), read_model, sink, member)
    }

    /// Without a catalog: every write goes to its logical target as named.
    pub fn unversioned(sink: &'static str) -> Versions {
        Versions::with(None, "", sink, "")
    }

    /// Without a catalog, every write to `logical` goes to `physical` alone:
    /// a rebuild's replay fills the one version it builds.
    pub fn pinned(sink: &'static str, logical: &str, physical: &str) -> Versions {
        let versions = Versions::with(None, "", sink, "");
        versions
            .inner
            .by_logical
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(logical.to_string(), vec![Arc::from(physical)]);
        versions
    }

    fn with(catalog: Option<Arc<Catalog>>, read_model: &str, sink: &'static str, member: &str) -> Versions {
        Versions {
            inner: Arc::new(Inner {
                catalog,
                read_model: read_model.to_string(),
                sink,
                member: member.to_string(),
                by_logical: RwLock::default(),
                building: RwLock::default(),
                rebuilds: OnceLock::new(),
                shapes: Default::default(),
            }),
        }
    }

    fn name(&self, logical: &str) -> TargetName {
        target_name(&self.inner.read_model, self.inner.sink, logical)
    }

    fn failed(&self, e: CatalogError) -> SinkError {
        failed(self.inner.sink, e)
    }

    /// The shape check of the current versions this instance writes.
    pub fn shapes(&self) -> &super::shape::ShapeCheck {
        &self.inner.shapes
    }

    /// Sends this sink's rebuild requests to `to` (see [`Versions::request_rebuild`]).
    pub fn ask_rebuilds_of(&self, to: tokio::sync::mpsc::UnboundedSender<RebuildRequest>) {
        let _ = self.inner.rebuilds.set(to);
    }

    /// Asks the running service to rebuild a target (`on_type_change:
    /// rebuild`); false when nobody takes requests (only `run` does).
    pub fn request_rebuild(&self, request: RebuildRequest) -> bool {
        self.inner.rebuilds.get().is_some_and(|to| to.send(request).is_ok())
    }

    /// The building version of `logical`, if it has one.
    pub fn building(&self, logical: &str) -> Option<Arc<str>> {
        self.inner.building.read().unwrap_or_else(|e| e.into_inner()).get(logical).cloned()
    }

    /// Without a catalog, as if it had been read: `physical` are the
    /// versions of `logical`, current first, and `building` is building.
    #[cfg(test)]
    pub fn stage(&self, logical: &str, physical: &[&str], building: Option<&str>) {
        self.record(logical, physical.iter().map(|p| Arc::from(*p)).collect(), building.map(Arc::from));
    }

    /// Notes what the catalog holds for `logical`: its versions, current
    /// first, and the building one if any.
    fn record(&self, logical: &str, physical: Vec<Arc<str>>, building: Option<Arc<str>>) {
        let mut known = self.inner.building.write().unwrap_or_else(|e| e.into_inner());
        match building {
            Some(b) => known.insert(logical.to_string(), b),
            None => known.remove(logical),
        };
        drop(known);
        self.inner.by_logical.write().unwrap_or_else(|e| e.into_inner()).insert(logical.to_string(), physical);
    }

    /// The physical targets a write to `logical` goes to, the current
    /// version first; `logical` itself when no version is known.
    pub fn targets(&self, logical: &Arc<str>) -> Vec<Arc<str>> {
        let known = self.inner.by_logical.read().unwrap_or_else(|e| e.into_inner());
        match known.get(&**logical) {
            Some(physical) if !physical.is_empty() => physical.clone(),
            _ => vec![logical.clone()],
        }
    }

    /// Whether `physical` is still a version of `logical` after reading the
    /// catalog again (a `gc` may have dropped it).
    pub async fn still_written<S: Sink>(&self, sink: &S, model: &ReadModel, logical: &str, physical: &str) -> bool {
        if self.inner.catalog.is_none() {
            return true;
        }
        if let Err(e) = self.refresh(sink, model).await {
            tracing::warn!(sink = self.inner.sink, error = %e, "cannot read the version catalog; keeping what is known");
            return true;
        }
        self.targets(&Arc::from(logical)).iter().any(|p| &**p == physical)
    }

    /// On start: gives every logical target a current version (adopting
    /// an unversioned target as version 1, else creating version 1), points
    /// its readers at it, and creates every live version's target.
    pub async fn establish<S: Sink>(&self, sink: &S, model: &ReadModel) -> Result<(), SinkError> {
        let Some(catalog) = &self.inner.catalog else { return Ok(()) };
        for table in &model.tables {
            let Some(logical) = sink.target(table) else { continue };
            let name = self.name(logical);
            let mut current = match catalog.current(&name).await.map_err(|e| self.failed(e))? {
                Some(v) => v,
                None => {
                    let physical = match sink.adopt(table, logical).await? {
                        Some(adopted) => {
                            tracing::info!(sink = sink.name(), target = logical, physical = %adopted, "adopting the existing target as version 1");
                            adopted
                        }
                        None => sink.physical(logical, 1),
                    };
                    sink.create_version(table, &physical).await?;
                    catalog.first(&name, &physical).await.map_err(|e| self.failed(e))?
                }
            };
            // A swap by another instance between the read and the pointing
            // would be undone: point again until the catalog agrees.
            loop {
                sink.create_version(table, &current.physical).await?;
                sink.point_readers(table, logical, &current.physical).await?;
                match catalog.current(&name).await.map_err(|e| self.failed(e))? {
                    Some(now) if now.physical != current.physical => current = now,
                    _ => break,
                }
            }
        }
        self.refresh(sink, model).await
    }

    /// Reads the catalog: creates (or learns) the target of every version
    /// not seen before, and notes what this instance has seen.
    pub async fn refresh<S: Sink>(&self, sink: &S, model: &ReadModel) -> Result<(), SinkError> {
        let Some(catalog) = &self.inner.catalog else { return Ok(()) };
        let mut epoch = 0;
        for table in &model.tables {
            let Some(logical) = sink.target(table) else { continue };
            let mut versions = catalog.versions(&self.name(logical)).await.map_err(|e| self.failed(e))?;
            // Current first: it is the one readers wait for.
            versions.sort_by_key(|v| (v.state != State::Current, v.version));
            let known: Vec<String> = {
                let map = self.inner.by_logical.read().unwrap_or_else(|e| e.into_inner());
                map.get(logical).map(|ps| ps.iter().map(|p| p.to_string()).collect()).unwrap_or_default()
            };
            for v in versions.iter().filter(|v| !known.contains(&v.physical)) {
                sink.create_version(table, &v.physical).await?;
                tracing::info!(sink = sink.name(), target = logical, version = v.version, physical = %v.physical, state = v.state.as_str(), "writing a new version");
            }
            epoch = versions.iter().map(Version::epoch).fold(epoch, i64::max);
            let entry: Vec<Arc<str>> = versions.iter().map(|v| Arc::from(v.physical.as_str())).collect();
            let building = versions.iter().find(|v| v.state == State::Building).map(|v| Arc::from(v.physical.as_str()));
            self.record(logical, entry, building);
        }
        catalog
            .seen(&self.inner.read_model, self.inner.sink, &self.inner.member, epoch)
            .await
            .map_err(|e| self.failed(e))
    }

    /// On a clean stop: this instance no longer writes, so a rebuild need
    /// not wait for it to see a new version.
    pub async fn leave(&self) {
        let Some(catalog) = &self.inner.catalog else { return };
        if let Err(e) = catalog.leave(&self.inner.read_model, self.inner.sink, &self.inner.member).await {
            tracing::warn!(sink = self.inner.sink, error = %e, "cannot leave the version catalog's members; a rebuild waits a minute for this instance");
        }
    }

    /// Clears what `/health/ready` reports of each held version that is no
    /// longer current: the swap ended its hold (it is not written any more).
    fn settle_swapped(&self, health: &crate::ops::Health) {
        let currents: Vec<Arc<str>> = {
            let known = self.inner.by_logical.read().unwrap_or_else(|e| e.into_inner());
            known.values().filter_map(|physical| physical.first().cloned()).collect()
        };
        for held in self.inner.shapes.held_targets() {
            if !currents.iter().any(|c| **c == *held) {
                health.settled(self.inner.sink, &super::shape::health_key(&held));
            }
        }
    }

    /// Refreshes every `every` until shutdown.
    pub async fn keep_fresh<S: Sink>(
        self,
        sink: Arc<S>,
        model: Arc<ReadModel>,
        health: crate::ops::Health,
        every: Duration,
        mut shutdown: Shutdown,
    ) {
        if self.inner.catalog.is_none() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.refresh(&*sink, &model).await {
                Ok(()) => self.settle_swapped(&health),
                Err(e) => {
                    tracing::warn!(sink = sink.name(), error = %e, "cannot refresh the version catalog; retrying")
                }
            }
        }
    }
}

/// A rebuild the writer asks for: `topic`'s target cannot take a retyped
/// field, met in a share of `writes` (document id and source position).
/// A rebuild from the mirror first waits until the mirror holds each of
/// them, and so the new type.
#[derive(Clone, Debug)]
pub struct RebuildRequest {
    pub topic: String,
    pub writes: Vec<(String, crate::decode::SourcePosition)>,
    pub reason: String,
}

/// Begins version N+1 of `table`'s target in `sink`: recorded as building
/// and its physical target created, empty. Running instances write it from
/// their next refresh on (see `projector.members` for who has).
pub async fn begin_version<S: Sink>(
    catalog: &Catalog,
    sink: &S,
    read_model: &str,
    table: &crate::mapping::TableMapping,
) -> Result<Version, SinkError> {
    let logical = written(sink, table)?;
    let name = target_name(read_model, sink.name(), logical);
    let version =
        catalog.begin_version(&name, |n| sink.physical(logical, n)).await.map_err(|e| failed(sink.name(), e))?;
    // Running instances create it too as soon as they see it: a race the
    // server may answer with a conflict, which the next attempt settles.
    let mut delays = super::retry::delays().take(5);
    loop {
        match sink.create_version(table, &version.physical).await {
            Ok(()) => return Ok(version),
            Err(e) if !e.kind.is_data() && e.kind != ErrorKind::Configuration => match delays.next() {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// Swaps `table`'s target in `sink`: the building version becomes current
/// (readers pointed at it in one step) and the current one previous.
pub async fn swap<S: Sink>(
    catalog: &Catalog,
    sink: &S,
    read_model: &str,
    table: &crate::mapping::TableMapping,
) -> Result<Version, SinkError> {
    let logical = written(sink, table)?;
    let name = target_name(read_model, sink.name(), logical);
    let (current, _) = catalog.swap(&name).await.map_err(|e| failed(sink.name(), e))?;
    sink.point_readers(table, logical, &current.physical).await?;
    Ok(current)
}

/// The logical target `sink` writes `table` to.
fn written<'m, S: Sink>(sink: &S, table: &'m crate::mapping::TableMapping) -> Result<&'m str, SinkError> {
    sink.target(table).ok_or_else(|| {
        SinkError::new(
            sink.name(),
            ErrorKind::Configuration,
            format!("{}:{}: topic {} has no {} section", "read model", table.line, table.topic, sink.name()),
        )
    })
}

fn target_name(read_model: &str, sink: &str, logical: &str) -> TargetName {
    TargetName { read_model: read_model.into(), sink: sink.into(), logical: logical.into() }
}

/// A catalog failure as the sink's: unavailable is retried, a refusal is configuration.
fn failed(sink: &'static str, e: CatalogError) -> SinkError {
    let kind = match e {
        CatalogError::Unavailable { .. } => ErrorKind::Unavailable,
        CatalogError::Refused { .. } => ErrorKind::Configuration,
    };
    SinkError::new(sink, kind, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Health;
    use crate::pipeline::shape::health_key;

    #[test]
    fn a_swap_clears_the_health_report_of_the_held_version_it_retired() {
        // No batch needs to come after the swap for health to tell the truth.
        let versions = Versions::unversioned("s");
        let health = Health::default();
        health.register("s");
        health.sink_up("s");
        versions.stage("t", &["t_v1", "t_v2"], Some("t_v2"));
        versions.shapes().hold("t_v1", "cannot take the new type");
        health.stuck("s", &health_key("t_v1"), "cannot take the new type; rebuilding as t_v2");
        versions.settle_swapped(&health);
        assert!(!health.ready(), "still current, so still held");
        versions.stage("t", &["t_v2", "t_v1"], None);
        versions.settle_swapped(&health);
        assert!(health.ready(), "swapped out: the hold is over");
    }
}
