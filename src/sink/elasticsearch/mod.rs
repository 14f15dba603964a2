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
//! The guard costs one `_mget` per batch for the ids this process has not
//! written lately, except inserts, and reads into a target where reads lately
//! found nothing ([`ReadsFound`]): those are sent as `create` and re-read
//! only on a 409.

pub mod client;
pub mod dropped;
pub mod encode;
pub mod mapping;

use crate::sink::{Retype, TypeChange};
use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ErrorKind, FieldSource, NewField, Outcome, Sink, SinkError, StoredPosition, Write, compaction, shape};
use crate::decode::Op;
use crate::mapping::{OnDrop, ReadModel, TableMapping};
use crate::source::PartitionOffset;
pub use client::{Client, Current, META_FIELD};

/// Writes read-model documents to Elasticsearch or OpenSearch.
#[derive(Debug)]
pub struct Elasticsearch {
    client: Client,
    /// Fields already in each alias's mapping.
    mapped: Mutex<HashMap<String, HashMap<String, serde_json::Value>>>,
    /// The mapping each alias's index is created with (the read-model
    /// file's), kept to re-create an index deleted behind our back.
    mappings: Mutex<HashMap<String, serde_json::Value>>,
    /// Fields whose type Elasticsearch refused (a retyped column); logged once.
    refused: Mutex<HashSet<(String, String)>>,
    /// Bulk requests the pipeline may have in flight at once.
    in_flight: usize,
    /// What this process last wrote to each document.
    known: Mutex<KnownDocs>,
    /// The index this instance last pointed each alias at: a re-created
    /// index gets the readers' alias back only if it was theirs.
    readers: Mutex<HashMap<String, String>>,
    /// Each target's `on_drop` (see [`dropped`]), and the fields already
    /// logged as dropped.
    drops: Mutex<HashMap<String, dropped::DropPolicy>>,
    dropped_logged: Mutex<HashSet<(String, String)>>,
    /// How often, lately, a read (`r`: a snapshot row, a rebuild's mirror
    /// row) found its document already there, per target (see [`ReadsFound`]).
    reads_found: Mutex<HashMap<String, ReadsFound>>,
}

/// Whether a target's reads (`r` events) lately found their documents:
/// a moving share, updated from every batch. Into an empty index (an
/// initial snapshot, a rebuild's fresh version) they seldom do, so they are
/// sent as `create` without an `_mget` first, like inserts; a re-snapshot
/// over a full index finds them, and after one batch of conflicts they are
/// looked up first again. Either way each write stays conditional: a
/// `create` over an existing document fails (409) and is decided from a
/// fresh `_mget` in the next round.
#[derive(Clone, Copy, Debug, Default)]
struct ReadsFound(f32);

impl ReadsFound {
    fn look_first(self) -> bool {
        self.0 >= 0.5
    }

    /// Folds in one batch: `found` of `reads` found their document.
    fn update(&mut self, found: usize, reads: usize) {
        if reads > 0 {
            self.0 = 0.5 * self.0 + 0.5 * found as f32 / reads as f32;
        }
    }
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
            mappings: Mutex::default(),
            refused: Mutex::default(),
            in_flight: 1,
            known: Mutex::default(),
            readers: Mutex::default(),
            drops: Mutex::default(),
            dropped_logged: Mutex::default(),
            reads_found: Mutex::default(),
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

/// The file's declared field mappings of `table`, as JSON text.
fn declared(table: &TableMapping) -> Vec<(String, String)> {
    let types = table.elasticsearch.as_ref().map(|e| e.types.as_slice()).unwrap_or(&[]);
    types.iter().map(|(f, ty)| (f.clone(), ty.to_string())).collect()
}

impl Sink for Elasticsearch {
    fn name(&self) -> &'static str {
        client::SINK
    }

    fn max_in_flight(&self) -> usize {
        self.in_flight
    }

    fn target<'m>(&self, table: &'m TableMapping) -> Option<&'m str> {
        table.elasticsearch.as_ref().map(|e| e.index.as_str())
    }

    fn excluded<'a>(&self, table: &'a TableMapping) -> &'a [String] {
        table.elasticsearch.as_ref().map_or(&[], |e| e.exclude.as_slice())
    }

    async fn live_shape(&self, _: &TableMapping, physical: &str) -> Result<Option<shape::LiveShape>, SinkError> {
        let Some(mapping) = self.client.mapping(physical).await? else { return Ok(None) };
        let fields = mapping["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| *name != META_FIELD)
            .map(|(name, ty)| (name.clone(), ty.to_string()))
            .collect();
        let section = mapping.pointer(&format!("/_meta/{}", shape::SECTION_KEY)).cloned();
        Ok(Some(shape::LiveShape { fields, section }))
    }

    fn verdict(&self, table: &TableMapping, physical: &str, live: Option<&shape::LiveShape>) -> shape::Verdict {
        let add = |field: &str, ty: &str| format!("PUT {physical}/_mapping {{\"properties\": {{\"{field}\": {ty}}}}}");
        let dialect =
            shape::Dialect { target: physical, retype: &shape::elasticsearch_retype, rename: None, add: &add };
        shape::classify(live, &shape::section(table, &declared(table)), &dialect)
    }

    fn declares(&self, table: &TableMapping, field: &str) -> bool {
        table.elasticsearch.as_ref().is_some_and(|e| e.types.iter().any(|(f, _)| f == field))
    }

    async fn prepare(&self, _: &ReadModel) -> Result<(), SinkError> {
        self.client.health().await.map(|_| ())
    }

    async fn adopt(&self, _: &TableMapping, logical: &str) -> Result<Option<String>, SinkError> {
        let mut behind = self.client.aliased(logical).await?;
        match behind.len() {
            0 => Ok(None),
            1 => Ok(behind.pop()),
            _ => Err(SinkError::new(
                client::SINK,
                ErrorKind::Configuration,
                format!("alias {logical} points at several indexes ({behind:?}); point it at one, then start again"),
            )),
        }
    }

    async fn create_version(&self, table: &TableMapping, physical: &str) -> Result<(), SinkError> {
        let Some(es) = &table.elasticsearch else { return Ok(()) };
        self.learn_policy(table, physical);
        let mut body = mapping::index_mapping(es, &[]);
        // What the file said when this version was built: `plan` and `run`
        // compare it with the file later (a changed `where` shows nowhere else).
        body["_meta"] = serde_json::json!({shape::SECTION_KEY: shape::section(table, &declared(table))});
        self.mappings.lock().unwrap_or_else(|e| e.into_inner()).insert(physical.to_string(), body.clone());
        self.ensure_version(physical, &body).await
    }

    async fn point_readers(&self, _: &TableMapping, logical: &str, physical: &str) -> Result<(), SinkError> {
        // Readers search it from now on: periodic refreshes again (see `filling`).
        self.client.refresh_interval(physical, None).await?;
        self.client.point_alias(logical, physical).await?;
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).insert(logical.to_string(), physical.to_string());
        Ok(())
    }

    /// No periodic refreshes while a rebuild fills the version (each one
    /// writes a segment that merges later): the usual setting for a bulk
    /// load. The position guard reads with realtime `_mget`, which needs no
    /// refresh, and parity's count refreshes first.
    async fn filling(&self, physical: &str) -> Result<(), SinkError> {
        self.client.refresh_interval(physical, Some("-1")).await
    }

    async fn drop_version(&self, physical: &str) -> Result<(), SinkError> {
        self.client.delete_index(physical).await?;
        self.mapped.lock().unwrap_or_else(|e| e.into_inner()).remove(physical);
        Ok(())
    }

    /// Maps the fields the alias's mapping lacks. A field Elasticsearch
    /// refuses to map (already mapped with another type: the column was
    /// retyped) is left as it is; documents that conflict with it are
    /// refused one by one and dead-lettered. An index found missing is
    /// re-created with the read-model file's mapping plus these fields.
    async fn add_fields(
        &self,
        table: &TableMapping,
        target: &str,
        fields: &[NewField],
    ) -> Result<Vec<Retype>, SinkError> {
        self.learn_policy(table, target);
        let declared = table.elasticsearch.as_ref().map(|e| e.types.as_slice()).unwrap_or(&[]);
        let mut retypes = Vec::new();
        let new: Vec<(String, serde_json::Value)> = {
            let mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
            let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            let known = mapped.get(target);
            // A mapped field never changes type in place: a new source type
            // that needs another field type needs a rebuild.
            for f in fields {
                let (Some(current), FieldSource::Schema(ft)) = (known.and_then(|k| k.get(&f.name)), &f.source) else {
                    continue;
                };
                if let TypeChange::Rebuild(why) = mapping::classify(current, ft) {
                    retypes.push(Retype {
                        field: f.name.clone(),
                        from: current.to_string(),
                        to: mapping::schema_type(ft).map(|t| t.to_string()).unwrap_or_default(),
                        why,
                        source: ft.clone(),
                    });
                }
            }
            fields
                .iter()
                .filter(|f| !known.is_some_and(|k| k.contains_key(&f.name)))
                .filter(|f| !refused.contains(&(target.to_string(), f.name.clone())))
                .filter_map(|f| {
                    let ty = match &f.source {
                        FieldSource::Declared => declared.iter().find(|(n, _)| *n == f.name).map(|(_, t)| t.clone()),
                        FieldSource::Schema(ft) => mapping::schema_type(ft),
                        FieldSource::Value(v) => mapping::value_type(v),
                    };
                    Some((f.name.clone(), ty?))
                })
                .collect()
        };
        if new.is_empty() {
            return Ok(retypes);
        }
        let mut put = self.client.put_mapping(target, &new).await;
        if let (Err(SinkError { kind: ErrorKind::NotFound, .. }), Some(es)) = (&put, &table.elasticsearch) {
            self.recreate(target, &mapping::index_mapping(es, &new)).await?;
            put = Ok(());
        }
        match put {
            Ok(()) => {
                let mut mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
                mapped.entry(target.to_string()).or_default().extend(new);
                Ok(retypes)
            }
            Err(e) if e.kind.is_data() => {
                tracing::warn!(alias = target, error = %e, "cannot extend the index mapping; conflicting documents will be dead-lettered");
                let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
                refused.extend(new.into_iter().map(|(n, _)| (target.to_string(), n)));
                Ok(retypes)
            }
            Err(e) => Err(e),
        }
    }

    async fn positions(&self, target: &str, ids: &[&str]) -> Result<Vec<Option<StoredPosition>>, SinkError> {
        let current = self.client.current(target, ids).await?;
        Ok(current
            .into_iter()
            .map(|c| {
                let c = c?;
                Some(StoredPosition { position: c.position?, deleted: c.deleted })
            })
            .collect())
    }

    async fn count(&self, target: &str) -> Result<u64, SinkError> {
        self.client.count_all(target).await
    }

    async fn write(
        &self,
        target: &str,
        writes: &[Write],
        _progress: &[PartitionOffset],
    ) -> Result<Vec<Outcome>, SinkError> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; writes.len()];
        let mut todo: Vec<usize> = (0..writes.len()).collect();
        // A 409 means another write (an overlapping batch, another instance)
        // landed between our read and our write: read again and decide again
        // right away; only conflicts left after a few rounds go back to the
        // pipeline's backoff.
        for round in 0..CONFLICT_ROUNDS {
            todo = self.write_round(target, writes, &todo, &mut outcomes, round == 0).await?;
            if todo.is_empty() {
                break;
            }
            metrics::counter!("projector_elasticsearch_conflicts_total").increment(todo.len() as u64);
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Outcome::Failed(SinkError::new(client::SINK, ErrorKind::Conflict, "no result for this write"))
                })
            })
            .collect())
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
    /// this process wrote the document recently, and an insert (`c`), or a
    /// read (`r`) where reads lately found nothing ([`ReadsFound`]), is sent
    /// as `create` without looking (it fails with 409 if the document exists
    /// after all); everything else, and every later round, reads the stored
    /// positions with one `_mget` per target.
    async fn write_round(
        &self,
        target: &str,
        writes: &[Write],
        todo: &[usize],
        outcomes: &mut [Option<Outcome>],
        first: bool,
    ) -> Result<Vec<usize>, SinkError> {
        let mut lookup: Vec<usize> = Vec::new();
        let mut current: HashMap<usize, Current> = HashMap::new();
        let reads_blind = first && !self.reads_found(target).look_first();
        // Reads looked up; while `reads_blind`, every read not remembered in
        // `current` is sent as `create` without looking.
        let mut looked = 0;
        {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            for &i in todo {
                let w = &writes[i];
                match first.then(|| known.get(target, &w.doc.id)).flatten() {
                    Some(c) => {
                        current.insert(i, c);
                    }
                    None if first && w.doc.op == Op::Create => {}
                    None if reads_blind && w.doc.op == Op::Read => {}
                    None => {
                        looked += usize::from(w.doc.op == Op::Read);
                        lookup.push(i);
                    }
                }
            }
        }
        let ids: Vec<&str> = lookup.iter().map(|i| writes[*i].doc.id.as_str()).collect();
        let stored = match self.client.current(target, &ids).await {
            Err(e) if e.kind == ErrorKind::NotFound => {
                self.recreate_from_file(target).await?;
                return Err(e);
            }
            other => other?,
        };
        let mut found = 0;
        for (i, c) in lookup.iter().zip(stored) {
            if let Some(c) = c {
                found += usize::from(writes[*i].doc.op == Op::Read);
                current.insert(*i, c);
            }
        }
        if first {
            self.reads_found_update(target, found, looked);
        }
        // Conditional writes for what is newer.
        let mut body = Vec::with_capacity(todo.len() * 512);
        let mut sent = Vec::new();
        let policy = self.drops.lock().unwrap_or_else(|e| e.into_inner()).get(target).cloned();
        let on_drop = policy.as_ref().map(|p| p.on_drop).unwrap_or_default();
        {
            let mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
            let no_fields = HashMap::new();
            let mapped = mapped.get(target).unwrap_or(&no_fields);
            for &i in todo {
                let w = &writes[i];
                let settled = match w.doc.compaction {
                    true => compaction::outcome(&w.doc, current.get(&i).map(Current::stored)),
                    false => (!is_newer(w.doc.position.as_str(), current.get(&i))).then_some(Outcome::Stale),
                };
                if settled.is_some() {
                    outcomes[i] = settled;
                    continue;
                }
                let missing = dropped::missing(mapped, &w.doc);
                if let (false, OnDrop::Drop, Some(p)) = (missing.is_empty(), on_drop, &policy) {
                    dropped::log_dropped(
                        &mut self.dropped_logged.lock().unwrap_or_else(|e| e.into_inner()),
                        target,
                        &missing,
                        p,
                    );
                }
                let keep_stored = on_drop == OnDrop::Keep && !missing.is_empty();
                encode::write(&mut body, w, current.get(&i), keep_stored);
                sent.push(i);
            }
        }
        let mut conflicts = Vec::new();
        if sent.is_empty() {
            return Ok(conflicts);
        }
        let results = self.client.bulk(body, sent.len()).await?;
        let mut missing_alias = false;
        if reads_blind {
            let blind: Vec<bool> =
                sent.iter().map(|i| writes[*i].doc.op == Op::Read && !current.contains_key(i)).collect();
            let found = blind.iter().zip(&results).filter(|(b, r)| **b && r.status == 409).count();
            self.reads_found_update(target, found, blind.iter().filter(|b| **b).count());
        }
        {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            for (i, item) in sent.iter().zip(results) {
                let w = &writes[*i];
                match (item.status, item.seq_no, item.primary_term) {
                    (200 | 201, Some(seq_no), Some(primary_term)) => {
                        let position = match w.doc.compaction {
                            true => current.get(i).and_then(|c| c.position.clone()),
                            false => Some(w.doc.position.as_str().to_string()),
                        };
                        let c = Current {
                            seq_no,
                            primary_term,
                            position,
                            written_by: Some((w.doc.lineage.partition, w.doc.lineage.offset)),
                            deleted: w.doc.body.is_none(),
                        };
                        known.put(&w.target, &w.doc.id, c);
                    }
                    (409, ..) => {
                        known.forget(&w.target, &w.doc.id);
                        conflicts.push(*i);
                    }
                    _ => known.forget(&w.target, &w.doc.id),
                }
                let outcome = classify(item.status, item.error.as_ref());
                missing_alias |= matches!(&outcome, Outcome::Failed(e) if e.kind == ErrorKind::NotFound);
                outcomes[*i] = Some(outcome);
            }
        }
        if missing_alias {
            self.recreate_from_file(target).await?;
        }
        Ok(conflicts)
    }

    fn reads_found(&self, target: &str) -> ReadsFound {
        self.reads_found.lock().unwrap_or_else(|e| e.into_inner()).get(target).copied().unwrap_or_default()
    }

    fn reads_found_update(&self, target: &str, found: usize, reads: usize) {
        if reads > 0 {
            let mut all = self.reads_found.lock().unwrap_or_else(|e| e.into_inner());
            match all.get_mut(target) {
                Some(r) => r.update(found, reads),
                None => {
                    let mut r = ReadsFound::default();
                    r.update(found, reads);
                    all.insert(target.to_string(), r);
                }
            }
        }
    }

    /// Remembers `table`'s `on_drop` for its physical `target`.
    fn learn_policy(&self, table: &TableMapping, target: &str) {
        let mut drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        if !drops.contains_key(target) {
            drops.insert(target.to_string(), dropped::DropPolicy::of(table));
        }
    }

    /// Someone deleted the alias or index: re-creates it before the retry
    /// with the mapping it was first created with, so the file's declared
    /// types hold again (the pipeline then maps the other fields again,
    /// typed as before).
    async fn recreate_from_file(&self, target: &str) -> Result<(), SinkError> {
        let body = self.mappings.lock().unwrap_or_else(|e| e.into_inner()).get(target).cloned();
        let body = body.unwrap_or_else(
            || serde_json::json!({"dynamic": false, "properties": {META_FIELD: mapping::meta_properties()}}),
        );
        self.recreate(target, &body).await
    }

    async fn recreate(&self, target: &str, body: &serde_json::Value) -> Result<(), SinkError> {
        tracing::warn!(index = target, "the index is gone; re-creating it with the read model's mapping");
        // The index is new: nothing remembered about it holds.
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = KnownDocs::default();
        self.mapped.lock().unwrap_or_else(|e| e.into_inner()).remove(target);
        self.ensure_version(target, body).await
    }

    /// Makes sure version index `physical` exists with its write alias (and
    /// the readers' alias, when it was theirs), its bookkeeping fields mapped.
    async fn ensure_version(&self, physical: &str, body: &serde_json::Value) -> Result<(), SinkError> {
        let mut aliases = serde_json::Map::new();
        aliases.insert(client::write_alias(physical), serde_json::json!({"is_write_index": true}));
        let readers = self.readers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (logical, _) in readers.iter().filter(|(_, p)| *p == physical) {
            aliases.insert(logical.clone(), client::reader_alias());
        }
        self.client.ensure_index(physical, body, &serde_json::Value::Object(aliases)).await?;
        // An index created before a bookkeeping field existed gets it.
        self.client.put_mapping(physical, &[(META_FIELD.to_string(), mapping::meta_properties())]).await?;
        let fields = self.client.mapped_fields(physical).await?;
        self.mapped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(physical.to_string(), fields.into_iter().collect());
        Ok(())
    }
}

/// Reads one bulk item's status and error: its kind comes from
/// [`client::kind_of`]. A 409 is our `if_seq_no`/`create` condition failing
/// (someone wrote first): the retry re-reads the stored position.
pub fn classify(status: u16, error: Option<&serde_json::Value>) -> Outcome {
    if matches!(status, 200 | 201) {
        return Outcome::Applied;
    }
    let ty = error.and_then(|e| e.get("type")).and_then(|v| v.as_str());
    let reason = error.and_then(|e| e.get("reason")).and_then(|v| v.as_str()).unwrap_or("");
    let message = match ty {
        Some(ty) => format!("{ty}: {}", client::truncate(reason, 300)),
        None => format!("HTTP {status}"),
    };
    Outcome::Failed(SinkError::new(client::SINK, client::kind_of(status, ty), message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_go_blind_until_a_batch_finds_its_documents_and_back_when_they_stop_finding_them() {
        let mut r = ReadsFound::default();
        assert!(!r.look_first(), "a target never written: reads are sent as create");
        r.update(3, 100);
        assert!(!r.look_first(), "a few found: still blind");
        r.update(100, 100);
        assert!(r.look_first(), "a batch that found all of them: look first");
        r.update(0, 0);
        assert!(r.look_first(), "a batch with no reads changes nothing");
        r.update(0, 100);
        r.update(0, 100);
        assert!(!r.look_first(), "reads that find nothing again: blind again");
    }

    #[test]
    fn newer_position_replaces_stale_does_not() {
        let stored = Current { seq_no: 3, primary_term: 1, position: Some("0005".into()), ..Current::default() };
        assert!(is_newer("0006", Some(&stored)));
        assert!(!is_newer("0005", Some(&stored)), "a re-delivered event is not newer");
        assert!(!is_newer("0004", Some(&stored)));
        assert!(is_newer("0001", None));
    }

    #[test]
    fn known_docs_are_per_target_forgettable_and_bounded_to_two_generations() {
        let (trips, seats): (Arc<str>, Arc<str>) = (Arc::from("trips"), Arc::from("seats"));
        let at = |seq_no| Current { seq_no, primary_term: 1, position: Some("01".into()), ..Current::default() };
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

    fn kind(o: Outcome) -> Option<ErrorKind> {
        match o {
            Outcome::Failed(e) => Some(e.kind),
            _ => None,
        }
    }

    #[test]
    fn bulk_item_statuses_and_types_map_to_kinds() {
        assert_eq!(classify(201, None), Outcome::Applied);
        assert_eq!(kind(classify(409, None)), Some(ErrorKind::Conflict));
        assert_eq!(kind(classify(429, None)), Some(ErrorKind::Overloaded));
        assert_eq!(kind(classify(503, None)), Some(ErrorKind::Unavailable));
        let e = json!({"type": "document_parsing_exception", "reason": "failed to parse field [Seats] of type [long]"});
        assert_eq!(
            classify(400, Some(&e)),
            Outcome::Failed(SinkError::new(
                client::SINK,
                ErrorKind::RefusedRow,
                "document_parsing_exception: failed to parse field [Seats] of type [long]"
            ))
        );
        // Not about the document: the index is read-only, closed, or we may not write.
        let block = json!({"type": "cluster_block_exception", "reason": "index [t] blocked by: [FORBIDDEN/8/index write (api)]"});
        assert_eq!(kind(classify(403, Some(&block))), Some(ErrorKind::Unavailable));
        assert_eq!(kind(classify(400, Some(&json!({"type": "index_closed_exception"})))), Some(ErrorKind::Unavailable));
        assert_eq!(kind(classify(403, Some(&json!({"type": "security_exception"})))), Some(ErrorKind::Permission));
        assert_eq!(kind(classify(404, Some(&json!({"type": "index_not_found_exception"})))), Some(ErrorKind::NotFound));
        assert_eq!(
            kind(classify(429, Some(&json!({"type": "es_rejected_execution_exception"})))),
            Some(ErrorKind::Overloaded)
        );
    }

    /// Refusals that are not about the document are the sink being
    /// unavailable: retried with the sink reported down, never dead-lettered.
    #[test]
    fn refusals_not_about_the_document_are_retried_with_the_sink_down() {
        use crate::pipeline::retry::{Decision, decide};
        let flood = json!({"type": "cluster_block_exception", "reason": "index [t] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block]"});
        let write_block = json!({"type": "cluster_block_exception", "reason": "index [t] blocked by: [FORBIDDEN/8/index write (api)]"});
        let closed = json!({"type": "index_closed_exception", "reason": "closed"});
        let security = json!({"type": "security_exception", "reason": "action [indices:data/write/bulk[s]] is unauthorized for user [projector]"});
        let unauthenticated = json!({"type": "security_exception", "reason": "missing authentication credentials"});
        for (status, error) in [
            (429, Some(&flood)),
            (403, Some(&write_block)),
            (400, Some(&closed)),
            (403, Some(&security)),
            (401, Some(&unauthenticated)),
            (401, None),
            (403, None),
        ] {
            let outcome = classify(status, error);
            let kind = kind(outcome.clone()).unwrap_or_else(|| panic!("{status} {error:?} is a failure"));
            assert!(!kind.is_data(), "{status} {error:?} is not about the document: {outcome:?}");
            assert_eq!(decide(kind), Decision::Retry { sink_down: true }, "{status} {error:?}");
        }
        assert_eq!(kind(classify(401, Some(&unauthenticated))), Some(ErrorKind::Permission));
        assert_eq!(kind(classify(403, None)), Some(ErrorKind::Permission));
    }
}
