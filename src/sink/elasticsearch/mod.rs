//! The Elasticsearch (and OpenSearch) sink and its source-position guard.
//!
//! ## The guard
//! Every document carries its source position in `__projector.position`.
//! Before a bulk request the sink reads the stored positions of the batch's
//! ids with `_mget` (realtime), drops every write that is not strictly newer
//! ([`Outcome::Stale`]), and sends the rest as conditional writes: `index`
//! with `if_seq_no`/`if_primary_term` when the document exists, `create` when
//! it does not. If another writer got in between (a rebalance overlap, a
//! second instance), the condition fails with 409 and the write is retried,
//! which re-reads the position. So a write lands only if it is newer than
//! what it replaced, whatever order events arrive in.
//!
//! Deletes are not Elasticsearch deletes. A delete writes a small tombstone
//! document (`__projector.deleted: true`, key columns, position) that the
//! read alias filters out. A real delete would keep its version only for
//! `index.gc_deletes` (60 s), after which a late create would resurrect the
//! row; a tombstone keeps the position for as long as the index lives.
//!
//! Why not external versioning: `version_type=external` needs a 63-bit
//! version, and a SQL Server position `(commit_lsn, change_lsn, serial)` is
//! 80+80+64 bits; it does not fit without loss. Painless scripts that compare
//! positions are not available in the `integ-test-zip` distribution and are
//! slower anyway.
//!
//! Limits: readers must go through the alias (searches, counts); a `GET` by id
//! on the physical index or alias can return a tombstone, recognisable by
//! `__projector.deleted`. Tombstones take space until the index is rebuilt.
//! The guard costs one `_mget` per batch.

pub mod client;
pub mod encode;
pub mod mapping;

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Outcome, Sink, SinkError, Write};
use crate::decode::Op;
use crate::mapping::{ReadModel, TableMapping};
use crate::source::PartitionOffset;
pub use client::{Client, Current, META_FIELD};

/// Writes read-model documents to Elasticsearch or OpenSearch.
#[derive(Debug)]
pub struct Elasticsearch {
    client: Client,
    /// Fields already in each alias's mapping.
    mapped: Mutex<HashMap<String, HashSet<String>>>,
    /// Fields whose type Elasticsearch refused (a retyped column); logged once.
    refused: Mutex<HashSet<(String, String)>>,
    /// Bulk requests the pipeline may have in flight at once.
    in_flight: usize,
    /// What this process last wrote to each document.
    known: Mutex<KnownDocs>,
}

/// The `(seq_no, primary_term, position)` this process's own writes left on
/// recently written documents, so their next write needs no `_mget`.
///
/// Safe even when stale: a write made from an outdated entry fails its
/// `if_seq_no` condition (409) and is decided again from a fresh `_mget`;
/// and since a stored position only ever grows, an event older than the
/// entry's position is older than what is stored. Two generations bound it:
/// when the current one fills up it becomes the previous one.
#[derive(Debug, Default)]
struct KnownDocs {
    current: Generation,
    previous: Generation,
}

/// Documents by target, then id: a lookup borrows both, allocating nothing.
#[derive(Debug, Default)]
struct Generation {
    by_target: HashMap<Arc<str>, HashMap<String, Current>>,
    len: usize,
}

impl Generation {
    fn get(&self, target: &str, id: &str) -> Option<&Current> {
        self.by_target.get(target)?.get(id)
    }

    fn remove(&mut self, target: &str, id: &str) {
        if self.by_target.get_mut(target).and_then(|docs| docs.remove(id)).is_some() {
            self.len -= 1;
        }
    }
}

/// Documents remembered per generation (about 100 bytes each).
const KNOWN_DOCS_PER_GENERATION: usize = 50_000;

impl KnownDocs {
    fn get(&self, target: &str, id: &str) -> Option<Current> {
        self.current.get(target, id).or_else(|| self.previous.get(target, id)).cloned()
    }

    fn put(&mut self, target: &Arc<str>, id: &str, c: Current) {
        if self.current.len >= KNOWN_DOCS_PER_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        let docs = match self.current.by_target.get_mut(&**target) {
            Some(docs) => docs,
            None => self.current.by_target.entry(target.clone()).or_default(),
        };
        if docs.insert(id.to_string(), c).is_none() {
            self.current.len += 1;
        }
    }

    fn forget(&mut self, target: &str, id: &str) {
        self.current.remove(target, id);
        self.previous.remove(target, id);
    }
}

impl Elasticsearch {
    pub fn new(url: &str) -> Result<Elasticsearch, SinkError> {
        Ok(Elasticsearch {
            client: Client::new(url, Duration::from_secs(60))?,
            mapped: Mutex::default(),
            refused: Mutex::default(),
            in_flight: 1,
            known: Mutex::default(),
        })
    }

    /// Lets the pipeline write `n` batches at once. Safe for any `n`: each
    /// write is conditional on the sequence number it read, so of two
    /// overlapping writes to one document the older position loses (409,
    /// re-read, found stale) whichever lands first. A few requests in flight
    /// overlap Elasticsearch's per-request translog fsync with the next one.
    pub fn with_max_in_flight(mut self, n: usize) -> Elasticsearch {
        self.in_flight = n.max(1);
        self
    }

    /// Adds mappings for fields of this batch that have none yet, typed from
    /// their decoded values.
    async fn map_new_fields(&self, writes: &[Write]) -> Result<(), SinkError> {
        let mut new: HashMap<&str, Vec<(String, serde_json::Value)>> = HashMap::new();
        {
            let mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
            let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            for w in writes {
                let Some(body) = &w.doc.body else { continue };
                let known = mapped.get(&*w.target);
                for (name, v) in &body.columns {
                    if known.is_some_and(|k| k.contains(name)) {
                        continue;
                    }
                    // A null has no type to map; checked before `refused`,
                    // whose key would cost two allocations per null column.
                    let Some(ty) = mapping::value_type(v) else { continue };
                    if refused.contains(&(w.target.to_string(), name.clone())) {
                        continue;
                    }
                    let fields = new.entry(&w.target).or_default();
                    if !fields.iter().any(|(n, _)| n == name) {
                        fields.push((name.clone(), ty));
                    }
                }
            }
        }
        for (alias, fields) in new {
            match self.client.put_mapping(alias, &fields).await {
                Ok(()) => {
                    let mut mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
                    mapped.entry(alias.to_string()).or_default().extend(fields.into_iter().map(|(n, _)| n));
                }
                Err(e) if e.message.contains("HTTP 400") => {
                    // A field already mapped with another type (the column was
                    // retyped): leave it; writes that conflict are dead-lettered.
                    tracing::warn!(alias, error = %e, "cannot extend the index mapping; conflicting documents will be dead-lettered");
                    let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
                    refused.extend(fields.into_iter().map(|(n, _)| (alias.to_string(), n)));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Whether a write at `incoming` should replace what is stored.
pub fn is_newer(incoming: &str, stored: Option<&Current>) -> bool {
    match stored {
        None => true,
        // A document without a position was not written by projector (or by
        // an older version of it): the first positioned write takes over.
        Some(Current { position: None, .. }) => true,
        Some(Current { position: Some(p), .. }) => incoming > p.as_str(),
    }
}

impl Sink for Elasticsearch {
    fn name(&self) -> &'static str {
        client::SINK
    }

    fn max_in_flight(&self) -> usize {
        self.in_flight
    }

    fn target(&self, model: &ReadModel, topic: &str) -> Option<Arc<str>> {
        model.table(topic)?.elasticsearch.as_ref().map(|e| Arc::from(e.index.as_str()))
    }

    fn excluded<'a>(&self, table: &'a TableMapping) -> &'a [String] {
        table.elasticsearch.as_ref().map_or(&[], |e| e.exclude.as_slice())
    }

    async fn prepare(&self, model: &ReadModel) -> Result<(), SinkError> {
        self.client.health().await?;
        for table in &model.tables {
            if let Some(es) = &table.elasticsearch {
                let body = mapping::index_mapping(es, &[]);
                self.client.ensure_alias(&es.index, &body).await?;
                let fields = self.client.mapped_fields(&es.index).await?;
                self.mapped
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(es.index.clone(), fields.into_iter().collect());
            }
        }
        Ok(())
    }

    async fn write(&self, writes: &[Write], _progress: &[PartitionOffset]) -> Result<Vec<Outcome>, SinkError> {
        self.map_new_fields(writes).await?;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; writes.len()];
        let mut todo: Vec<usize> = (0..writes.len()).collect();
        // A 409 means another write (an overlapping batch, another instance)
        // landed between our read and our write: read again and decide again
        // right away; only conflicts left after a few rounds go back to the
        // pipeline's backoff.
        for round in 0..CONFLICT_ROUNDS {
            todo = self.write_round(writes, &todo, &mut outcomes, round == 0).await?;
            if todo.is_empty() {
                break;
            }
            metrics::counter!("projector_elasticsearch_conflicts_total").increment(todo.len() as u64);
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Retry("no result".into()))).collect())
    }
}

/// Read-and-write rounds for version conflicts within one `write` call.
const CONFLICT_ROUNDS: usize = 4;

impl Elasticsearch {
    /// One round for the writes at `todo`: find the stored positions, send
    /// conditional writes for what is newer, and record each outcome.
    /// Returns the indexes that hit a version conflict.
    ///
    /// On the first round a stored position comes from [`KnownDocs`] when
    /// this process wrote the document recently, and an insert (`c`) is
    /// sent as `create` without looking (it fails with 409 if the document
    /// exists after all); everything else, and every later round, reads the
    /// stored positions with one `_mget` per target.
    async fn write_round(
        &self,
        writes: &[Write],
        todo: &[usize],
        outcomes: &mut [Option<Outcome>],
        first: bool,
    ) -> Result<Vec<usize>, SinkError> {
        let mut by_target: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut current: HashMap<usize, Current> = HashMap::new();
        {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            for &i in todo {
                let w = &writes[i];
                match first.then(|| known.get(&w.target, &w.doc.id)).flatten() {
                    Some(c) => {
                        current.insert(i, c);
                    }
                    None if first && w.doc.op == Op::Create => {}
                    None => by_target.entry(&w.target).or_default().push(i),
                }
            }
        }
        for (target, idx) in &by_target {
            let ids: Vec<&str> = idx.iter().map(|i| writes[*i].doc.id.as_str()).collect();
            for (i, c) in idx.iter().zip(self.client.current(target, &ids).await?) {
                if let Some(c) = c {
                    current.insert(*i, c);
                }
            }
        }
        // Conditional writes for what is newer.
        let mut body = Vec::with_capacity(todo.len() * 512);
        let mut sent = Vec::new();
        for &i in todo {
            let w = &writes[i];
            if is_newer(w.doc.position.as_str(), current.get(&i)) {
                encode::write(&mut body, w, current.get(&i));
                sent.push(i);
            } else {
                outcomes[i] = Some(Outcome::Stale);
            }
        }
        let mut conflicts = Vec::new();
        if sent.is_empty() {
            return Ok(conflicts);
        }
        let results = self.client.bulk(body, sent.len()).await?;
        let mut missing_alias = Vec::new();
        {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            for (i, item) in sent.iter().zip(results) {
                let w = &writes[*i];
                match (item.status, item.seq_no, item.primary_term) {
                    (200 | 201, Some(seq_no), Some(primary_term)) => {
                        known.put(
                            &w.target,
                            &w.doc.id,
                            Current { seq_no, primary_term, position: Some(w.doc.position.as_str().to_string()) },
                        );
                    }
                    (409, ..) => {
                        known.forget(&w.target, &w.doc.id);
                        conflicts.push(*i);
                    }
                    _ => known.forget(&w.target, &w.doc.id),
                }
                let outcome = classify(item.status, item.error.as_ref());
                if matches!(&outcome, Outcome::Retry(m) if m.contains("index_not_found") || m.contains("alias")) {
                    missing_alias.push(w.target.clone());
                }
                outcomes[*i] = Some(outcome);
            }
            if !missing_alias.is_empty() {
                // The index is new: nothing remembered about it holds.
                *known = KnownDocs::default();
            }
        }
        // Someone deleted the alias or index: recreate it before the retry.
        missing_alias.dedup();
        for alias in missing_alias {
            self.client
                .ensure_alias(
                    &alias,
                    &serde_json::json!({"dynamic": false, "properties": {META_FIELD: mapping::meta_properties()}}),
                )
                .await?;
            self.mapped.lock().unwrap_or_else(|e| e.into_inner()).remove(&*alias);
        }
        Ok(conflicts)
    }
}

/// Reads one bulk item's status.
pub fn classify(status: u16, error: Option<&serde_json::Value>) -> Outcome {
    let reason = || {
        error
            .map(|e| {
                let ty = e.get("type").and_then(|v| v.as_str()).unwrap_or("error");
                let reason = e.get("reason").and_then(|v| v.as_str()).unwrap_or("");
                format!("{ty}: {}", client::truncate(reason, 300))
            })
            .unwrap_or_else(|| format!("HTTP {status}"))
    };
    match status {
        200 | 201 => Outcome::Applied,
        // Our if_seq_no / create condition failed: someone wrote first. Retry
        // re-reads the stored position and decides again.
        409 => Outcome::Retry(format!("concurrent write, re-checking position ({})", reason())),
        404 => Outcome::Retry(format!("alias or index missing, recreating ({})", reason())),
        429 => Outcome::Retry(format!("overloaded ({})", reason())),
        s if s >= 500 || s == 0 => Outcome::Retry(reason()),
        _ => Outcome::Rejected(reason()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn newer_position_replaces_stale_does_not() {
        let stored = Current { seq_no: 3, primary_term: 1, position: Some("0005".into()) };
        assert!(is_newer("0006", Some(&stored)));
        assert!(!is_newer("0005", Some(&stored)), "a re-delivered event is not newer");
        assert!(!is_newer("0004", Some(&stored)));
        assert!(is_newer("0001", None));
    }

    #[test]
    fn known_docs_are_per_target_forgettable_and_bounded_to_two_generations() {
        let (trips, seats): (Arc<str>, Arc<str>) = (Arc::from("trips"), Arc::from("seats"));
        let at = |seq_no| Current { seq_no, primary_term: 1, position: Some("01".into()) };
        let mut known = KnownDocs::default();
        known.put(&trips, "1", at(1));
        known.put(&trips, "1", at(2));
        assert_eq!(known.get("trips", "1").map(|c| c.seq_no), Some(2), "the newest write wins");
        assert_eq!(known.get("seats", "1"), None, "ids are per target");
        known.put(&seats, "1", at(7));
        known.forget("trips", "1");
        assert_eq!(known.get("trips", "1"), None);
        assert_eq!(known.get("seats", "1").map(|c| c.seq_no), Some(7));
        // Fill two more generations: the first entry ages out, a recent one stays.
        for i in 0..2 * KNOWN_DOCS_PER_GENERATION {
            known.put(&trips, &format!("n{i}"), at(1));
        }
        assert_eq!(known.get("seats", "1"), None, "dropped after two generations");
        assert!(known.get("trips", &format!("n{}", 2 * KNOWN_DOCS_PER_GENERATION - 1)).is_some());
        assert!(known.current.len + known.previous.len <= 2 * KNOWN_DOCS_PER_GENERATION);
    }

    #[test]
    fn bulk_item_statuses_map_to_outcomes() {
        assert_eq!(classify(201, None), Outcome::Applied);
        assert!(matches!(classify(409, None), Outcome::Retry(_)));
        assert!(matches!(classify(429, None), Outcome::Retry(_)));
        assert!(matches!(classify(503, None), Outcome::Retry(_)));
        let e = json!({"type": "document_parsing_exception", "reason": "failed to parse field [Seats] of type [long]"});
        assert_eq!(
            classify(400, Some(&e)),
            Outcome::Rejected("document_parsing_exception: failed to parse field [Seats] of type [long]".into())
        );
    }
}
