//! Writing one batch to completion, in small steps: sort the batch's items
//! into writes and dead letters, keep the newest write per key, group the
//! writes by target, fan each target's share out to the physical target of
//! every live version ([`super::versions`]) and apply each (see [`super::isolate`];
//! what the sink failed is retried for as long as it lasts, what the data
//! caused is dead-lettered, decided by [`retry::decide`]), then send the
//! dead letters. Only then may the batch's offsets be stored.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::batch::{Action, Batch, fill_unavailable, per_key_newest_first, settle_tombstone};
use super::dead_letter::{DeadLetters, Reason};
use super::fields::KnownFields;
use super::isolate::TargetCall;
use super::offsets::WriteResult;
use super::retry::{Decision, StuckWatch};
use super::versions::{RebuildRequest, Versions};
use super::{ErrorTolerance, Patience, PipelineError, retry};
use crate::mapping::ReadModel;
use crate::ops::Health;
use crate::sink::{ErrorKind, Outcome, Sink, SinkError, Write};
use crate::source::{PartitionOffset, SourceRecord};

/// Writes one batch to completion.
pub struct Writer<S: Sink> {
    pub sink: Arc<S>,
    pub model: Arc<ReadModel>,
    pub fields: KnownFields,
    pub dead_letters: DeadLetters,
    pub health: Health,
    pub tolerance: ErrorTolerance,
    /// How long a share may fail before its sink is reported stuck.
    pub stuck_after: Duration,
    /// The physical targets of each logical one.
    pub versions: Versions,
    /// Whether a configuration or permission error is retried or stops the batch.
    pub patience: Patience,
}

/// A write still to apply, and the index of the record it came from.
#[derive(Clone)]
struct Pending {
    write: Write,
    record: usize,
}

/// The newest write of one key in the batch, and the older ones standing by,
/// newest first: if the sink refuses the newest for its data, the next one
/// is applied instead, so a bad update does not cost the good create before it.
struct Newest {
    pending: Pending,
    standby: Vec<Pending>,
}

impl Newest {
    /// The newest of `group` (newest first), its unavailable values filled
    /// from the others.
    fn of(mut group: Vec<Pending>) -> Option<Newest> {
        if group.is_empty() {
            return None;
        }
        let mut pending = group.remove(0);
        let earlier: Vec<&Write> = group.iter().map(|p| &p.write).collect();
        fill_unavailable(&mut pending.write, &earlier);
        settle_tombstone(&mut pending.write, &earlier);
        Some(Newest { pending, standby: group })
    }
}

/// One target's writes; `records[i]` is the index of the record `writes[i]`
/// came from and `standby[i]` the older writes of its key (kept apart so the
/// writes go to the sink as one slice).
#[derive(Clone, Default)]
struct Share {
    target: Arc<str>,
    writes: Vec<Write>,
    records: Vec<usize>,
    standby: Vec<Vec<Pending>>,
}

impl Share {
    fn push(&mut self, newest: Newest) {
        self.writes.push(newest.pending.write);
        self.records.push(newest.pending.record);
        self.standby.push(newest.standby);
    }
}

impl Share {
    /// This share addressed to one physical target.
    fn to(mut self, physical: &Arc<str>) -> Share {
        if self.target != *physical {
            self.target = physical.clone();
            let standby = self.standby.iter_mut().flatten().map(|p| &mut p.write);
            for w in self.writes.iter_mut().chain(standby) {
                w.target = physical.clone();
            }
        }
        self
    }

    /// Groups writes by target, targets in first-seen order.
    fn by_target(pending: Vec<Newest>) -> Vec<Share> {
        let mut shares: Vec<Share> = Vec::new();
        for p in pending {
            let i = match shares.iter().position(|s| s.target == p.pending.write.target) {
                Some(i) => i,
                None => {
                    shares.push(Share { target: p.pending.write.target.clone(), ..Share::default() });
                    shares.len() - 1
                }
            };
            shares[i].push(p);
        }
        shares
    }
}

/// Attempts in a row that met a configuration or permission error: a
/// one-shot job stops at the [`Strikes::OUT`]th, so that what a retry
/// settles (two writers creating the same index or column at once) never
/// stops it, and what an operator must fix is reported within seconds.
#[derive(Default)]
struct Strikes(u32);

impl Strikes {
    const OUT: u32 = 5;

    /// Books one more; true when the job should stop.
    fn failed(&mut self) -> bool {
        self.0 += 1;
        self.0 >= Strikes::OUT
    }

    fn passed(&mut self) {
        self.0 = 0;
    }
}

/// A record that goes to the dead-letter queue, by index, and why.
struct DeadLetter {
    record: usize,
    reason: Reason,
}

/// A batch taken apart: its records (kept for dead letters and latency),
/// what to write, and what is already known to be a dead letter.
struct Sorted {
    records: Vec<SourceRecord>,
    writes: Vec<Pending>,
    dead: Vec<DeadLetter>,
}

/// `projector_events_total` counts gathered per (topic, op, outcome) and
/// added once per call: a labelled counter lookup per event costs more than
/// the event.
#[derive(Default)]
struct EventTally(Vec<((String, &'static str, &'static str), u64)>);

impl EventTally {
    fn add(&mut self, topic: &str, op: &'static str, outcome: &'static str) {
        match self.0.iter_mut().find(|((t, o, l), _)| t == topic && *o == op && *l == outcome) {
            Some((_, n)) => *n += 1,
            None => self.0.push(((topic.to_string(), op, outcome), 1)),
        }
    }

    fn count(self, sink: &'static str) {
        for ((topic, op, outcome), n) in self.0 {
            metrics::counter!("projector_events_total", "sink" => sink, "topic" => topic, "op" => op, "outcome" => outcome).increment(n);
        }
    }
}

/// A batch written: what is left to do before its offsets may be stored.
struct Settled {
    offsets: Vec<PartitionOffset>,
    records: Vec<SourceRecord>,
    /// At most one per record.
    dead: Vec<DeadLetter>,
    /// The newest source timestamp applied.
    freshest: Option<i64>,
    /// Writes not sent because a newer one of their key was applied or stale.
    superseded: usize,
    /// The configuration or permission error that stopped the batch
    /// ([`Patience::UntilMisconfigured`]).
    misconfigured: Option<SinkError>,
}

/// What applying writes came to.
#[derive(Default)]
struct Applied {
    /// The newest source timestamp applied.
    freshest: Option<i64>,
    superseded: usize,
    /// Set when a configuration or permission error stopped the writes.
    misconfigured: Option<SinkError>,
    /// A held current version's share, left to its building version.
    deferred: Option<(Arc<str>, Share)>,
}

impl Applied {
    fn add(&mut self, other: Applied) {
        self.freshest = self.freshest.max(other.freshest);
        self.superseded += other.superseded;
        self.misconfigured = self.misconfigured.take().or(other.misconfigured);
    }

    /// Writing stopped at a configuration or permission error.
    fn stopped(e: SinkError) -> Applied {
        Applied { misconfigured: Some(e), ..Applied::default() }
    }
}

impl<S: Sink> Writer<S> {
    pub async fn write(self, batch: Batch) -> WriteResult {
        let started = Instant::now();
        let Settled { offsets, records, dead, freshest, superseded, misconfigured } = self.settle(batch).await;
        // Nothing of a stopped batch counts as done: its dead letters would
        // be sent again when the job is run again, so none is sent now.
        if let Some(source) = misconfigured {
            return Err(PipelineError::Misconfigured { source });
        }
        let name = self.sink.name();
        tracing::debug!(sink = name, records = records.len(), dead = dead.len(), superseded, "batch written");
        self.send_dead_letters(dead, &records).await?;
        if let Some(ts) = freshest {
            metrics::gauge!("projector_freshness_seconds", "sink" => name).set((now_ms() - ts).max(0) as f64 / 1000.0);
        }
        metrics::histogram!("projector_batch_seconds", "sink" => name).record(started.elapsed().as_secs_f64());
        Ok(offsets)
    }

    /// Writes the batch until every write is applied, stale or dead.
    async fn settle(&self, batch: Batch) -> Settled {
        let offsets = batch.next_offsets();
        let Sorted { records, writes, mut dead } = self.sort(batch);
        let pending = self.collapse(writes);
        let Applied { freshest, superseded, misconfigured, .. } =
            self.apply(pending, &offsets, &records, &mut dead).await;
        Settled { offsets, records, dead: one_per_record(dead), freshest, superseded, misconfigured }
    }

    /// Splits the batch's items into writes and dead letters; skips are
    /// counted and dropped.
    fn sort(&self, batch: Batch) -> Sorted {
        let mut sorted =
            Sorted { records: Vec::with_capacity(batch.len()), writes: Vec::with_capacity(batch.len()), dead: vec![] };
        let mut skipped = EventTally::default();
        for item in batch.items {
            let record = sorted.records.len();
            match item.action {
                Action::Write(write) => sorted.writes.push(Pending { write, record }),
                Action::Moved { retired, write } => {
                    sorted.writes.push(Pending { write: *retired, record });
                    sorted.writes.push(Pending { write, record });
                }
                Action::Skip(why) if why.starts_with("tombstone") => {
                    skipped.add(&item.record.lineage.topic, "-", "tombstone_skipped");
                    if first_time(self.sink.name(), "skipped", &item.record.lineage.topic) {
                        tracing::warn!(sink = self.sink.name(), record = %item.record.lineage, why, "tombstones of this topic are skipped (logged once per topic)");
                    }
                }
                Action::Skip(why) => {
                    skipped.add(&item.record.lineage.topic, "-", "skipped");
                    tracing::trace!(record = %item.record.lineage, why, "skipped");
                }
                Action::DeadLetter { stage, kind, reason } => {
                    sorted.dead.push(DeadLetter { record, reason: Reason { stage, kind, message: reason } })
                }
            }
            sorted.records.push(item.record);
        }
        skipped.count(self.sink.name());
        sorted
    }

    /// Within a batch only the newest write per key is sent, carrying the
    /// values it lacks from the older ones, which stand by in case the sink
    /// refuses it (they are counted superseded once it is applied or stale).
    fn collapse(&self, writes: Vec<Pending>) -> Vec<Newest> {
        let refs: Vec<&Write> = writes.iter().map(|p| &p.write).collect();
        let groups = per_key_newest_first(&refs);
        let mut slots: Vec<Option<Pending>> = writes.into_iter().map(Some).collect();
        groups
            .into_iter()
            .filter_map(|g| Newest::of(g.into_iter().filter_map(|i| slots.get_mut(i).and_then(Option::take)).collect()))
            .collect()
    }

    /// Applies the writes, one physical target at a time, until each is
    /// applied, stale or dead (then it joins `dead`). Every live version of
    /// a target gets the share, each under its own position guard; only the
    /// counted version's results are counted (the others are copies).
    async fn apply(
        &self,
        pending: Vec<Newest>,
        offsets: &[PartitionOffset],
        records: &[SourceRecord],
        dead: &mut Vec<DeadLetter>,
    ) -> Applied {
        let mut applied = Applied::default();
        for share in Share::by_target(pending) {
            let logical = share.target.clone();
            let plan = self.plan_versions(&share, &logical).await;
            let mut share = Some(share);
            let mut done: Vec<Arc<str>> = Vec::new();
            let last = plan.len().saturating_sub(1);
            for (i, (physical, counted)) in plan.into_iter().enumerate() {
                if done.contains(&physical) {
                    continue;
                }
                let copy = if i == last { share.take() } else { share.clone() };
                let Some(copy) = copy else { break };
                done.push(physical.clone());
                let mut result = self.apply_share(copy.to(&physical), &logical, offsets, records, dead, counted).await;
                // A held version met one that can take its writes while it
                // waited (see `successor`): that one takes them, unless it
                // has them already.
                if let Some((next, rest)) = result.deferred.take()
                    && !done.contains(&next)
                {
                    done.push(next.clone());
                    result = self.apply_share(rest.to(&next), &logical, offsets, records, dead, counted).await;
                }
                applied.add(result);
                if applied.misconfigured.is_some() {
                    return applied;
                }
            }
        }
        applied
    }

    /// The versions a share goes to, in order, and which one's results
    /// count. A version held for its shape ([`super::shape`]) is not
    /// written while it is not current (a rollback to it would be stale,
    /// and the log says so once). A held current version is written last,
    /// so the others are written while it waits; once a building version
    /// exists, the building one takes its place and is counted, and readers
    /// keep the current version as it was until the swap.
    async fn plan_versions(&self, share: &Share, logical: &Arc<str>) -> Vec<(Arc<str>, bool)> {
        let name = self.sink.name();
        let targets = self.versions.targets(logical);
        let Some((current, others)) = targets.split_first() else { return Vec::new() };
        let shapes = self.versions.shapes();
        let held = match self.table_of(share) {
            Some(table) => shapes.held(&*self.sink, &self.model, table, current).await,
            None => None,
        };
        let mut plan: Vec<(Arc<str>, bool)> = Vec::new();
        for physical in others {
            if let Some(reason) = shapes.known(physical) {
                if first_time(name, "held-not-current", physical) {
                    tracing::warn!(sink = name, target = %physical, reason, "this version cannot take the read model's shape and is no longer current: it is not written any more, so a rollback to it would be stale (logged once)");
                }
                self.health.settled(name, &super::shape::health_key(physical));
                continue;
            }
            plan.push((physical.clone(), false));
        }
        let Some(reason) = held else {
            plan.insert(0, (current.clone(), true));
            return plan;
        };
        match self.versions.building(logical) {
            Some(building) if plan.iter().any(|(p, _)| *p == building) => {
                if first_time(name, "held-building", current) {
                    tracing::warn!(sink = name, target = %current, building = %building, "the current version is held for its shape: its writes go to the building version, and readers see the current one as it was until the swap (logged once)");
                }
                self.health.stuck(
                    name,
                    &super::shape::health_key(current),
                    &format!("{reason}; rebuilding as {building}: readers see {current} as it was until the swap"),
                );
                for entry in plan.iter_mut().filter(|(p, _)| *p == building) {
                    entry.1 = true;
                }
            }
            _ => plan.push((current.clone(), true)),
        }
        plan
    }

    /// Whether `e` may stop the batch instead of being retried (once it
    /// has failed [`Strikes::OUT`] attempts in a row).
    fn gives_up_on(&self, e: &SinkError) -> bool {
        self.patience == Patience::UntilMisconfigured
            && matches!(e.kind, ErrorKind::Configuration | ErrorKind::Permission | ErrorKind::NeedsRebuild)
    }

    /// The table mapping of a share's writes.
    fn table_of(&self, share: &Share) -> Option<&crate::mapping::TableMapping> {
        share.writes.first().and_then(|w| self.model.table(&w.doc.lineage.topic))
    }

    /// Applies one physical target's writes, retrying what the sink failed
    /// (not the data) with backoff for as long as it lasts, or until the
    /// target is no longer a version of `logical`. Only a `counted` share
    /// adds to the event metrics and the result.
    async fn apply_share(
        &self,
        mut share: Share,
        logical: &str,
        offsets: &[PartitionOffset],
        records: &[SourceRecord],
        dead: &mut Vec<DeadLetter>,
        counted: bool,
    ) -> Applied {
        let name = self.sink.name();
        let Some(table) = self.table_of(&share) else {
            return Applied::default();
        };
        let target = share.target.clone();
        let call = TargetCall { sink: &*self.sink, fields: &self.fields, table, target: &target, progress: offsets };
        let mut applied = Applied::default();
        let mut delays = retry::delays();
        let mut stuck = StuckWatch::new(&self.health, name, self.stuck_after);
        let first = |share: &Share| share.records.first().map(|&r| records[r].lineage.to_string()).unwrap_or_default();
        let hold_key = super::shape::health_key(&target);
        let mut holding = false;
        let mut strikes = Strikes::default();
        while !share.writes.is_empty() {
            let started = Instant::now();
            let is_current = self.versions.targets(&Arc::from(logical)).first().is_some_and(|c| **c == *target);
            let hold = match is_current {
                true => self.versions.shapes().held(&*self.sink, &self.model, table, &target).await,
                false => self.versions.shapes().known(&target),
            };
            if let Some(reason) = &hold {
                // A version that can take these writes now (the building
                // one, or the current one after a swap) takes them instead.
                if let Some(next) = self.successor(logical, &target) {
                    if !is_current {
                        self.health.settled(name, &hold_key);
                    }
                    return Applied { deferred: Some((next, share)), ..Applied::default() };
                }
                self.health.stuck(name, &hold_key, reason);
                holding = true;
            } else if holding {
                self.health.settled(name, &hold_key);
                holding = false;
            }
            let written = match hold {
                Some(reason) => Err(SinkError::new(name, ErrorKind::Configuration, reason)),
                None => call.write_isolating(&share.writes).await,
            };
            let outcomes = match written {
                Ok(o) => o,
                // The target cannot take a retyped field: held from now on,
                // and rebuilt by the running service if the policy says so.
                Err(e) if e.kind == ErrorKind::NeedsRebuild && self.patience == Patience::Forever => {
                    self.hold_for_rebuild(table, &target, &share, &e);
                    continue;
                }
                // A held target is a verdict on its shape, waited out in
                // any case; an error of the sink's own setup is not.
                Err(e) if !holding && self.gives_up_on(&e) && strikes.failed() => return Applied::stopped(e),
                Err(e) => {
                    if e.kind == ErrorKind::NotFound
                        && !self.versions.still_written(&*self.sink, &self.model, logical, &share.target).await
                    {
                        tracing::info!(sink = name, target = %share.target, "the version was dropped (gc); its writes are moot");
                        return Applied::default();
                    }
                    self.retry_later(&e, &share.target, share.writes.len());
                    let wait = delays.next().unwrap_or(Duration::from_secs(30));
                    // A held target is reported not ready already, by target.
                    let wait = if holding {
                        wait
                    } else {
                        stuck.failed(&first(&share), share.writes.len(), &e.to_string(), wait)
                    };
                    // A held target said why once, when it was checked.
                    if !holding {
                        tracing::warn!(sink = name, target = %share.target, error = %e, items = share.writes.len(), retry_in = ?wait, "sink write failed; retrying");
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            metrics::histogram!("projector_sink_request_seconds", "sink" => name)
                .record(started.elapsed().as_secs_f64());
            if !outcomes.iter().any(sink_failed) {
                self.health.sink_up(name);
            }
            let mut again = Share { target: share.target.clone(), ..Share::default() };
            let mut last_failure = None;
            let mut tally = EventTally::default();
            let items = share.writes.into_iter().zip(share.records).zip(share.standby);
            for (((w, record), standby), outcome) in items.zip(outcomes) {
                tally.add(&w.doc.lineage.topic, w.doc.op.as_str(), label(&outcome));
                if matches!(outcome, Outcome::Applied | Outcome::Stale) {
                    applied.superseded += standby.len();
                    for s in &standby {
                        tally.add(&s.write.doc.lineage.topic, s.write.doc.op.as_str(), "superseded");
                    }
                }
                match outcome {
                    Outcome::Applied => {
                        applied.freshest = applied.freshest.max(w.doc.source_ts_ms);
                        if let Some(ts) = records[record].timestamp_ms {
                            metrics::histogram!("projector_append_to_ack_seconds", "sink" => name)
                                .record((now_ms() - ts).max(0) as f64 / 1000.0);
                        }
                    }
                    Outcome::Stale => tracing::debug!(record = %w.doc.lineage, id = %w.doc.id, "stale event ignored"),
                    Outcome::Unmatched => {
                        if first_time(name, "unmatched", &share.target) {
                            tracing::warn!(sink = name, target = %share.target, record = %w.doc.lineage, id = %w.doc.id,
                                "a tombstone found a live row written before projector stored Kafka offsets, or from another partition; the row is kept (rebuild the target to apply compaction deletes to it; logged once per target)");
                        }
                    }
                    Outcome::Failed(e) => match retry::decide(e.kind) {
                        Decision::DeadLetter => {
                            dead.push(DeadLetter {
                                record,
                                reason: Reason {
                                    stage: "sink",
                                    kind: "rejected",
                                    message: format!(
                                        "{}: document {:?} refused by {} target {} ({}): {}",
                                        records[record].lineage, w.doc.id, name, share.target, e.kind, e.message
                                    ),
                                },
                            });
                            // The next newest write of the key is now the newest valid one.
                            if let Some(next) = Newest::of(standby) {
                                again.push(next);
                            }
                        }
                        Decision::Retry { .. } => {
                            again.push(Newest { pending: Pending { write: w, record }, standby });
                            // An error that stops the batch is the one kept.
                            if !last_failure.as_ref().is_some_and(|f| self.gives_up_on(f)) {
                                last_failure = Some(e);
                            }
                        }
                    },
                }
            }
            if counted {
                tally.count(name);
            }
            share = again;
            match last_failure {
                Some(e) if self.gives_up_on(&e) && strikes.failed() => return Applied::stopped(e),
                Some(ref e) if self.gives_up_on(e) => {}
                _ => strikes.passed(),
            }
            if let Some(e) = last_failure {
                self.retry_later(&e, &share.target, share.writes.len());
                let wait = delays.next().unwrap_or(Duration::from_secs(30));
                let wait = stuck.failed(&first(&share), share.writes.len(), &e.to_string(), wait);
                tracing::warn!(sink = name, target = %share.target, items = share.writes.len(), error = %e, retry_in = ?wait, "retrying items");
                tokio::time::sleep(wait).await;
            }
        }
        if counted { applied } else { Applied::default() }
    }

    /// The version of `logical` that takes a held `target`'s writes: the
    /// building one, else the current one if it is another; never a held one.
    fn successor(&self, logical: &str, target: &str) -> Option<Arc<str>> {
        let shapes = self.versions.shapes();
        let current = self.versions.targets(&Arc::from(logical)).first().cloned();
        [self.versions.building(logical), current]
            .into_iter()
            .flatten()
            .find(|v| **v != *target && shapes.known(v).is_none())
    }

    /// Holds `target` (it cannot take a retyped field) and, the first time,
    /// says so and asks for its rebuild under `on_type_change: rebuild`.
    fn hold_for_rebuild(&self, table: &crate::mapping::TableMapping, target: &str, share: &Share, e: &SinkError) {
        if !self.versions.shapes().hold(target, &e.message) {
            return;
        }
        let name = self.sink.name();
        tracing::error!(sink = name, target, "{}", e.message);
        if table.policy.on_type_change == crate::mapping::OnTypeChange::Rebuild {
            let writes = share.writes.iter().map(|w| (w.doc.id.to_string(), w.doc.position.clone())).collect();
            let request = RebuildRequest { topic: table.topic.clone(), writes, reason: e.message.clone() };
            if !self.versions.request_rebuild(request) {
                tracing::warn!(
                    sink = name,
                    target,
                    "nobody here takes rebuild requests: run the command the error names"
                );
            }
        }
    }

    /// Books a retry: the sink is reported down unless the kind is mere
    /// concurrency, and a missing target's fields are typed again.
    fn retry_later(&self, e: &SinkError, target: &str, items: usize) {
        let name = self.sink.name();
        if e.kind == ErrorKind::NotFound {
            self.fields.forget(target);
        }
        if let Decision::Retry { sink_down: true } = retry::decide(e.kind) {
            self.health.sink_down(name, &e.to_string());
        }
        metrics::counter!("projector_sink_retries_total", "sink" => name, "kind" => e.kind.as_str())
            .increment(items as u64);
    }

    /// Sends the dead letters, or stops the pipeline at the first one when
    /// errors are not tolerated.
    async fn send_dead_letters(&self, dead: Vec<DeadLetter>, records: &[SourceRecord]) -> Result<(), PipelineError> {
        let name = self.sink.name();
        for d in dead {
            if self.tolerance == ErrorTolerance::None {
                return Err(PipelineError::Intolerable {
                    sink: name,
                    lineage: records[d.record].lineage.clone(),
                    reason: d.reason.message,
                });
            }
            let mut watch = StuckWatch::new(&self.health, name, self.stuck_after);
            self.dead_letters.send(&records[d.record], name, &d.reason, &mut watch).await;
        }
        Ok(())
    }
}

/// Whether the sink (not the data) failed this item, so it is not up.
fn sink_failed(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed(e) if retry::decide(e.kind) == Decision::Retry { sink_down: true })
}

/// A record both of whose writes (a moved document's delete and write) were
/// refused is one dead letter, whose reason names both.
fn one_per_record(dead: Vec<DeadLetter>) -> Vec<DeadLetter> {
    let mut out: Vec<DeadLetter> = Vec::with_capacity(dead.len());
    for d in dead {
        match out.iter_mut().find(|o| o.record == d.record) {
            Some(o) if o.reason.message != d.reason.message => {
                o.reason.message = format!("{}; and {}", o.reason.message, d.reason.message);
            }
            Some(_) => {}
            None => out.push(d),
        }
    }
    out
}

fn label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Applied => "applied",
        Outcome::Stale => "stale",
        Outcome::Unmatched => "tombstone_unmatched",
        Outcome::Failed(e) if e.kind.is_data() => "rejected",
        Outcome::Failed(_) => "retry",
    }
}

/// Whether this is the first time `(sink, what, name)` is seen here: for
/// warnings that would otherwise repeat for every record.
fn first_time(sink: &'static str, what: &'static str, name: &str) -> bool {
    type Seen = Vec<(&'static str, &'static str, String)>;
    static SEEN: std::sync::Mutex<Seen> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.iter().any(|(s, w, n)| *s == sink && *w == what && n == name) {
        return false;
    }
    seen.push((sink, what, name.to_string()));
    true
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests;
