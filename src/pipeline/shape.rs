//! `run`'s shape check: before the first write to a target's current
//! version (on start, and after the catalog names a new current version),
//! its live shape is compared with the read-model file
//! ([`crate::sink::shape`]). What can change in place is applied there and
//! then (the file's declared fields, added or widened through
//! [`Sink::add_fields`]); a target that needs a rebuild is never written
//! with a disagreeing shape: one log line names the rebuild command,
//! /health/ready reports the target not ready with the reason, and its
//! writes are held (retried, offsets not committed) until it is rebuilt and
//! swapped. A write that finds a field retyped at the source beyond what the
//! target can follow holds it the same way ([`ShapeCheck::hold`]). What the
//! writer does with a held version is in [`super::writer`]: a current one
//! waits until a building version exists and then leaves its writes to it;
//! one that is no longer current is not written any more.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::mapping::{ReadModel, TableMapping};
use crate::sink::shape::Verdict;
use crate::sink::{FieldSource, NewField, Sink};

/// The verdict on each physical target this instance has checked:
/// `Some(reason)` for one whose writes are held.
#[derive(Default)]
pub struct ShapeCheck {
    checked: Mutex<HashMap<String, Option<String>>>,
}

impl ShapeCheck {
    /// Why writes to current version `physical` of `table` must wait, if
    /// they must; checks it the first time it is asked. A target whose
    /// shape cannot be read now is written (and checked again next time).
    pub async fn held<S: Sink>(
        &self,
        sink: &S,
        model: &ReadModel,
        table: &TableMapping,
        physical: &str,
    ) -> Option<String> {
        if let Some(known) = self.checked.lock().unwrap_or_else(|e| e.into_inner()).get(physical) {
            return known.clone();
        }
        let name = sink.name();
        let live = match sink.live_shape(table, physical).await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(sink = name, target = physical, error = %e, "cannot read the target's shape to check it against the read model; writing, and checking again with the next batch");
                return None;
            }
        };
        let held = match sink.verdict(table, physical, live.as_ref()) {
            Verdict::Unchanged => None,
            Verdict::InPlace(steps) => {
                let declared: Vec<NewField> = shape_fields(sink, table);
                if let Err(e) = sink.add_fields(table, physical, &declared).await {
                    tracing::warn!(sink = name, target = physical, error = %e, "cannot apply the read model's in-place changes yet; retrying with the next batch");
                    return None;
                }
                tracing::info!(sink = name, target = physical, changes = ?steps, "applied the read model's in-place changes");
                None
            }
            Verdict::Rebuild(why) => {
                let command = table.rebuild_command(name);
                let reason = format!(
                    "{name} target {physical} disagrees with {}: {}; its writes are held until it is rebuilt: run `{command}`",
                    model.file.display(),
                    why.join("; ")
                );
                tracing::error!(sink = name, target = physical, "{reason}");
                Some(reason)
            }
        };
        self.checked.lock().unwrap_or_else(|e| e.into_inner()).insert(physical.to_string(), held.clone());
        held
    }

    /// Holds `physical` for `reason` (a write found it cannot take a
    /// retyped field); true the first time.
    pub fn hold(&self, physical: &str, reason: &str) -> bool {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        let first = !matches!(checked.get(physical), Some(Some(_)));
        checked.insert(physical.to_string(), Some(reason.to_string()));
        first
    }

    /// Every physical target this instance holds.
    pub fn held_targets(&self) -> Vec<String> {
        let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked.iter().filter(|(_, held)| held.is_some()).map(|(p, _)| p.clone()).collect()
    }

    /// Why `physical` is held, if this instance has found it must be;
    /// checks nothing.
    pub fn known(&self, physical: &str) -> Option<String> {
        self.checked.lock().unwrap_or_else(|e| e.into_inner()).get(physical).cloned().flatten()
    }
}

/// The key under which `/health/ready` reports a held target.
pub fn health_key(physical: &str) -> String {
    format!("target {physical}")
}

/// The fields the file declares for this sink, typed as declared.
fn shape_fields<S: Sink>(sink: &S, table: &TableMapping) -> Vec<NewField> {
    let mut names: Vec<&str> = Vec::new();
    if let Some(es) = &table.elasticsearch {
        names.extend(es.types.iter().map(|(f, _)| f.as_str()));
    }
    for t in [&table.postgres, &table.bigquery].into_iter().flatten() {
        names.extend(t.types.iter().map(|(f, _)| f.as_str()));
    }
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter(|f| sink.declares(table, f))
        .map(|f| NewField { name: f.to_string(), source: FieldSource::Declared })
        .collect()
}
