//! For the pipeline's unit tests: a sink that answers each call from a
//! script and notes what it was sent, and the small read model and writes
//! the tests share.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::decode::{Op, Row, SourcePosition};
use crate::mapping::{Document, ReadModel, TableMapping};
use crate::ops::Health;
use crate::sink::{NewField, Outcome, Retype, Sink, SinkError, Write};
use crate::source::{Lineage, PartitionOffset};

/// The sink's name, in health and errors.
pub const NAME: &str = "scripted";

/// What one call to [`Scripted::write`] was sent and saw.
#[derive(Clone, Debug)]
pub struct Call {
    /// The physical target it wrote.
    pub target: String,
    pub writes: usize,
    /// The sink's health as the call began: up, and since when.
    pub up: Option<(bool, u128)>,
}

/// Answers call number `n` (from 1) with `answer(n, writes)`.
pub struct Scripted {
    pub health: Health,
    pub answer: fn(usize, &[Write]) -> Result<Vec<Outcome>, SinkError>,
    /// The fields the read-model file declares a type for.
    pub declared: &'static [&'static str],
    pub calls: Mutex<Vec<Call>>,
}

impl Scripted {
    pub fn new(answer: fn(usize, &[Write]) -> Result<Vec<Outcome>, SinkError>) -> Scripted {
        Scripted { health: Health::default(), answer, declared: &[], calls: Mutex::default() }
    }

    /// The physical target of each call so far.
    pub fn call_targets(&self) -> Vec<String> {
        self.calls.lock().unwrap().iter().map(|c| c.target.clone()).collect()
    }

    /// The number of writes of each call so far.
    pub fn call_sizes(&self) -> Vec<usize> {
        self.calls.lock().unwrap().iter().map(|c| c.writes).collect()
    }
}

impl Sink for Scripted {
    fn name(&self) -> &'static str {
        NAME
    }
    fn target<'m>(&self, _: &'m TableMapping) -> Option<&'m str> {
        Some("t")
    }
    fn excluded<'a>(&self, _: &'a TableMapping) -> &'a [String] {
        &[]
    }
    fn declares(&self, _: &TableMapping, field: &str) -> bool {
        self.declared.contains(&field)
    }
    async fn live_shape(&self, _: &TableMapping, _: &str) -> Result<Option<crate::sink::shape::LiveShape>, SinkError> {
        Ok(None)
    }
    fn verdict(
        &self,
        _: &TableMapping,
        _: &str,
        _: Option<&crate::sink::shape::LiveShape>,
    ) -> crate::sink::shape::Verdict {
        crate::sink::shape::Verdict::Unchanged
    }
    async fn prepare(&self, _: &ReadModel) -> Result<(), SinkError> {
        Ok(())
    }
    async fn adopt(&self, _: &TableMapping, _: &str) -> Result<Option<String>, SinkError> {
        Ok(None)
    }
    async fn create_version(&self, _: &TableMapping, _: &str) -> Result<(), SinkError> {
        Ok(())
    }
    async fn point_readers(&self, _: &TableMapping, _: &str, _: &str) -> Result<(), SinkError> {
        Ok(())
    }
    async fn drop_version(&self, _: &str) -> Result<(), SinkError> {
        Ok(())
    }
    async fn add_fields(&self, _: &TableMapping, _: &str, _: &[NewField]) -> Result<Vec<Retype>, SinkError> {
        Ok(Vec::new())
    }
    async fn write(&self, target: &str, writes: &[Write], _: &[PartitionOffset]) -> Result<Vec<Outcome>, SinkError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let up = self.health.snapshot().get(NAME).map(|s| (s.up, s.since_ms));
            calls.push(Call { target: target.to_string(), writes: writes.len(), up });
            calls.len()
        };
        // Time passes within a call, as it does on a real server, so a
        // state change during it shows in `since_ms`.
        tokio::time::sleep(Duration::from_millis(5)).await;
        (self.answer)(call, writes)
    }
}

/// A read model of one table, topic `x`.
pub fn model() -> ReadModel {
    ReadModel::parse(Path::new("t.yaml"), "read_model: m\ntables:\n  - topic: x\n    postgres: { table: t }\n").unwrap()
}

/// A write of `id` to target `t`, from topic `x` partition 0 at `offset`.
pub fn write(id: &str, position: &str, op: Op, offset: i64) -> Write {
    Write {
        target: "t".into(),
        doc: Document {
            id: id.into(),
            position: SourcePosition::from_stored(position),
            op,
            source_ts_ms: None,
            lineage: Lineage { topic: "x".into(), partition: 0, offset },
            key: Row::default(),
            body: None,
            source_types: None,
            compaction: false,
        },
    }
}
