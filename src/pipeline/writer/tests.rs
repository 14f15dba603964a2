//! The writer against a scripted sink: what reaches health, the dead letters
//! and the superseded count when the sink refuses or fails some items.

use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::decode::{Op, Row, SourcePosition};
use crate::mapping::{Document, TableMapping};
use crate::pipeline::batch::Item;
use crate::pipeline::{Action, ErrorTolerance};
use crate::sink::NewField;
use crate::source::Lineage;

/// Answers each call with `script(call number, write)` per write, and
/// notes the sink's health as each call begins.
struct Scripted {
    health: Health,
    script: fn(usize, &Write) -> Outcome,
    seen: Mutex<Vec<(bool, u128)>>,
}

impl Sink for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn target<'m>(&self, _: &'m TableMapping) -> Option<&'m str> {
        Some("t")
    }
    fn excluded<'a>(&self, _: &'a TableMapping) -> &'a [String] {
        &[]
    }
    fn declares(&self, _: &TableMapping, _: &str) -> bool {
        false
    }
    async fn prepare(&self, _: &ReadModel) -> Result<(), SinkError> {
        Ok(())
    }
    async fn add_fields(&self, _: &TableMapping, _: &str, _: &[NewField]) -> Result<(), SinkError> {
        Ok(())
    }
    async fn write(&self, _: &str, writes: &[Write], _: &[PartitionOffset]) -> Result<Vec<Outcome>, SinkError> {
        let call = {
            let mut seen = self.seen.lock().unwrap();
            let s = &self.health.snapshot()["scripted"];
            seen.push((s.up, s.since_ms));
            seen.len()
        };
        // Time passes within a call, as it does on a real server, so a
        // state change during it shows in `since_ms`.
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(writes.iter().map(|w| (self.script)(call, w)).collect())
    }
}

fn refused(message: &str) -> Outcome {
    Outcome::Failed(SinkError::new("scripted", ErrorKind::RefusedRow, message))
}

fn write(id: &str, position: &str, op: Op, offset: i64) -> Write {
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

fn batch(actions: Vec<Action>) -> Batch {
    let mut batch = Batch::default();
    for (offset, action) in actions.into_iter().enumerate() {
        let offset = i64::try_from(offset).unwrap();
        let record = SourceRecord {
            lineage: Lineage { topic: "x".into(), partition: 0, offset },
            key: None,
            value: None,
            headers: vec![],
            timestamp_ms: None,
            generation: 0,
        };
        batch.push(Item { record, action });
    }
    batch
}

fn writer(script: fn(usize, &Write) -> Outcome) -> Writer<Scripted> {
    let model =
        ReadModel::parse(Path::new("t.yaml"), "read_model: m\ntables:\n  - topic: x\n    postgres: { table: t }\n")
            .unwrap();
    let health = Health::default();
    health.register("scripted");
    Writer {
        sink: Arc::new(Scripted { health: health.clone(), script, seen: Mutex::default() }),
        model: Arc::new(model),
        fields: KnownFields::default(),
        // Never reached: nothing here sends a dead letter.
        dead_letters: DeadLetters::new("127.0.0.1:1", "dlq", "m").unwrap(),
        health,
        tolerance: ErrorTolerance::All,
        stuck_after: Duration::from_secs(600),
    }
}

#[tokio::test]
async fn a_sink_failing_every_item_stays_down_since_its_first_failure() {
    // The server answers, but every item fails for the sink (a read-only
    // index): the sink is down from the first answer until one is taken,
    // not "up" again for a moment at every retry.
    let w = writer(|call, _| {
        if call < 4 {
            Outcome::Failed(SinkError::new("scripted", ErrorKind::Unavailable, "read-only"))
        } else {
            Outcome::Applied
        }
    });
    let settled = w.settle(batch(vec![Action::Write(write("1", "01", Op::Create, 0))])).await;
    assert!(settled.dead.is_empty());
    let seen = w.sink.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen[1..].iter().all(|(up, _)| !up), "down during the retries: {seen:?}");
    assert!(seen[1..].iter().all(|(_, since)| *since == seen[1].1), "down since the first failure: {seen:?}");
    assert!(w.health.ready(), "up once the write is taken");
}

#[tokio::test]
async fn a_moved_record_whose_two_writes_are_refused_is_one_dead_letter() {
    let w = writer(|_, w| refused(&format!("no {}", w.doc.id)));
    let moved = Action::Moved { retired: write("old", "02", Op::Delete, 0), write: write("new", "02", Op::Update, 0) };
    let settled = w.settle(batch(vec![moved])).await;
    assert_eq!(settled.dead.len(), 1, "one record, one letter");
    let message = &settled.dead[0].reason.message;
    assert!(message.contains("no old") && message.contains("no new"), "the letter names both refusals: {message}");
}

#[tokio::test]
async fn an_older_write_applied_after_its_newer_one_was_refused_is_not_superseded() {
    // "2" (the update) is refused, so "1" (its create) is applied instead:
    // nothing was superseded. Where both are good, the create is.
    let refuse_update = |_, w: &Write| if w.doc.op == Op::Update { refused("bad") } else { Outcome::Applied };
    for (script, superseded) in
        [(refuse_update as fn(usize, &Write) -> Outcome, 0), (|_, _: &Write| Outcome::Applied, 1)]
    {
        let w = writer(script);
        let b =
            batch(vec![Action::Write(write("k", "01", Op::Create, 0)), Action::Write(write("k", "02", Op::Update, 1))]);
        let settled = w.settle(b).await;
        assert_eq!(settled.superseded, superseded);
        assert_eq!(settled.dead.len(), 1 - superseded, "the refused update is a dead letter");
    }
}
