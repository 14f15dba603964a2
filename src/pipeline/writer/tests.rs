//! The writer against a scripted sink: what reaches health, the dead letters
//! and the superseded count when the sink refuses or fails some items.

use super::*;
use crate::decode::Op;
use crate::pipeline::batch::Item;
use crate::pipeline::testing::{self, Scripted, write};
use crate::pipeline::{Action, ErrorTolerance};
use crate::source::Lineage;

fn refused(message: &str) -> Outcome {
    Outcome::Failed(SinkError::new(testing::NAME, ErrorKind::RefusedRow, message))
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

/// A writer to a sink that answers each call with `answer(call, writes)`.
fn writer(answer: fn(usize, &[Write]) -> Result<Vec<Outcome>, SinkError>) -> Writer<Scripted> {
    let sink = Scripted::new(answer);
    let health = sink.health.clone();
    health.register(testing::NAME);
    Writer {
        sink: Arc::new(sink),
        model: Arc::new(testing::model()),
        fields: KnownFields::default(),
        // Never reached: nothing here sends a dead letter.
        dead_letters: DeadLetters::new("127.0.0.1:1", "dlq", "m").unwrap(),
        health,
        tolerance: ErrorTolerance::All,
        stuck_after: Duration::from_secs(600),
        versions: crate::pipeline::versions::Versions::unversioned(testing::NAME),
        patience: Patience::Forever,
    }
}

#[tokio::test]
async fn a_sink_failing_every_item_stays_down_since_its_first_failure() {
    // The server answers, but every item fails for the sink (a read-only
    // index): the sink is down from the first answer until one is taken,
    // not "up" again for a moment at every retry.
    let w = writer(|call, writes| {
        let outcome = if call < 4 {
            Outcome::Failed(SinkError::new(testing::NAME, ErrorKind::Unavailable, "read-only"))
        } else {
            Outcome::Applied
        };
        Ok(vec![outcome; writes.len()])
    });
    let settled = w.settle(batch(vec![Action::Write(write("1", "01", Op::Create, 0))])).await;
    assert!(settled.dead.is_empty());
    let seen: Vec<(bool, u128)> = w.sink.calls.lock().unwrap().iter().filter_map(|c| c.up).collect();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen[1..].iter().all(|(up, _)| !up), "down during the retries: {seen:?}");
    assert!(seen[1..].iter().all(|(_, since)| *since == seen[1].1), "down since the first failure: {seen:?}");
    assert!(w.health.ready(), "up once the write is taken");
}

#[tokio::test]
async fn a_moved_record_whose_two_writes_are_refused_is_one_dead_letter() {
    let w = writer(|_, writes| Ok(writes.iter().map(|w| refused(&format!("no {}", w.doc.id))).collect()));
    let moved = Action::Moved {
        retired: Box::new(write("old", "02", Op::Delete, 0)),
        write: write("new", "02", Op::Update, 0),
    };
    let settled = w.settle(batch(vec![moved])).await;
    assert_eq!(settled.dead.len(), 1, "one record, one letter");
    let message = &settled.dead[0].reason.message;
    assert!(message.contains("no old") && message.contains("no new"), "the letter names both refusals: {message}");
}

#[tokio::test]
async fn an_older_write_applied_after_its_newer_one_was_refused_is_not_superseded() {
    // "2" (the update) is refused, so "1" (its create) is applied instead:
    // nothing was superseded. Where both are good, the create is.
    type Answer = fn(usize, &[Write]) -> Result<Vec<Outcome>, SinkError>;
    let refuse_update: Answer = |_, writes| {
        Ok(writes.iter().map(|w| if w.doc.op == Op::Update { refused("bad") } else { Outcome::Applied }).collect())
    };
    let apply_all: Answer = |_, writes| Ok(vec![Outcome::Applied; writes.len()]);
    for (answer, superseded) in [(refuse_update, 0), (apply_all, 1)] {
        let w = writer(answer);
        let b =
            batch(vec![Action::Write(write("k", "01", Op::Create, 0)), Action::Write(write("k", "02", Op::Update, 1))]);
        let settled = w.settle(b).await;
        assert_eq!(settled.superseded, superseded);
        assert_eq!(settled.dead.len(), 1 - superseded, "the refused update is a dead letter");
    }
}

/// A writer of a one-shot job (a rebuild), which stops at a configuration
/// or permission error instead of retrying it.
fn one_shot(answer: fn(usize, &[Write]) -> Result<Vec<Outcome>, SinkError>) -> Writer<Scripted> {
    Writer { patience: Patience::UntilMisconfigured, ..writer(answer) }
}

#[tokio::test]
async fn a_one_shot_job_stops_at_a_configuration_error_instead_of_retrying_it() {
    // The sink's own setup is wrong (a refused setting for the whole call,
    // a missing grant per item): whoever started the job hears it within
    // seconds, and nothing of the batch counts as done, so a re-run resumes
    // before it.
    let whole = one_shot(|_, _| {
        Err(SinkError::new(testing::NAME, ErrorKind::Configuration, "limit of total fields [1000] exceeded"))
    });
    let per_item = one_shot(|_, writes| {
        let denied = SinkError::new(testing::NAME, ErrorKind::Permission, "permission denied for table t");
        Ok(vec![Outcome::Failed(denied); writes.len()])
    });
    for (w, said) in [(whole, "limit of total fields"), (per_item, "permission denied")] {
        let sink = w.sink.clone();
        let one = batch(vec![Action::Write(write("1", "01", Op::Create, 0))]);
        let ended = tokio::time::timeout(Duration::from_secs(20), w.write(one)).await;
        let Ok(ended) = ended else { panic!("{said}: retried instead of stopping") };
        match ended {
            Ok(_) => panic!("{said}: the batch counted as written"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains(said) && text.contains("run the same command again"), "{text}");
            }
        }
        assert_eq!(sink.call_sizes(), vec![1; 5], "{said}: five attempts, then stopped");
    }
}

#[tokio::test]
async fn the_live_path_retries_a_configuration_error_until_it_is_fixed() {
    let w = writer(|call, writes| match call {
        1 | 2 => Err(SinkError::new(testing::NAME, ErrorKind::Configuration, "limit of total fields [1000] exceeded")),
        _ => Ok(vec![Outcome::Applied; writes.len()]),
    });
    let settled = w.settle(batch(vec![Action::Write(write("1", "01", Op::Create, 0))])).await;
    assert!(settled.misconfigured.is_none(), "the live path does not give up");
    assert_eq!(w.sink.call_sizes(), vec![1, 1, 1], "retried until the sink took it");
    assert!(w.health.ready(), "up again once the write is taken");
}

#[tokio::test]
async fn a_retyped_field_holds_the_current_version_asks_for_its_rebuild_once_and_then_leaves_its_writes_to_it() {
    // t_v1 cannot take a field retyped at the source; t_v2, the rebuild's
    // version, can. The batch waits on t_v1 only until t_v2 exists, then
    // is written there and counts as done; from the swap on t_v1 is not
    // written at all.
    let w = writer(|_, writes| match &*writes[0].target {
        "t_v1" => Err(SinkError::new(testing::NAME, ErrorKind::NeedsRebuild, "column \"Seats\" changed type")),
        _ => Ok(vec![Outcome::Applied; writes.len()]),
    });
    let (to, mut requests) = tokio::sync::mpsc::unbounded_channel();
    w.versions.ask_rebuilds_of(to);
    w.versions.stage("t", &["t_v1"], None);
    let w = Arc::new(w);
    let first = settle_in_background(&w, write("1", "07", Op::Update, 0));
    let request = tokio::time::timeout(Duration::from_secs(10), requests.recv()).await.unwrap().unwrap();
    assert_eq!(request.topic, "x");
    assert_eq!(request.writes.len(), 1);
    assert_eq!((request.writes[0].0.as_str(), request.writes[0].1.as_str()), ("1", "07"));
    assert!(request.reason.contains("Seats"), "{}", request.reason);
    assert!(!first.is_finished(), "held until a building version exists");
    assert!(!w.health.ready(), "a held target is not ready");
    w.versions.stage("t", &["t_v1", "t_v2"], Some("t_v2"));
    let settled = tokio::time::timeout(Duration::from_secs(20), first).await.unwrap().unwrap();
    assert!(settled.dead.is_empty() && settled.misconfigured.is_none());
    assert_eq!(w.sink.call_targets(), vec!["t_v1", "t_v2"], "waited on t_v1 once, then written to t_v2");

    let next = w.settle(batch(vec![Action::Write(write("2", "08", Op::Create, 1))])).await;
    assert!(next.dead.is_empty());
    assert_eq!(w.sink.call_targets()[2..], ["t_v2"], "the held current version is left to the building one");
    assert!(!w.health.ready(), "readers see the held version as it was until the swap");
    assert!(requests.try_recv().is_err(), "asked once");

    w.versions.stage("t", &["t_v2", "t_v1"], None);
    w.settle(batch(vec![Action::Write(write("3", "09", Op::Create, 2))])).await;
    assert_eq!(w.sink.call_targets()[3..], ["t_v2"], "once swapped, the old version is not written");
    assert!(w.health.ready(), "ready again after the swap");
}

#[tokio::test]
async fn a_held_share_goes_to_the_new_current_version_when_the_swap_comes_before_it_saw_the_building_one() {
    // The rebuild began, filled and swapped t_v2 within one backoff of the
    // held share: its writes must reach t_v2 all the same.
    let w = writer(|_, writes| match &*writes[0].target {
        "t_v1" => Err(SinkError::new(testing::NAME, ErrorKind::NeedsRebuild, "column \"Seats\" changed type")),
        _ => Ok(vec![Outcome::Applied; writes.len()]),
    });
    w.versions.stage("t", &["t_v1"], None);
    let w = Arc::new(w);
    let held = settle_in_background(&w, write("1", "07", Op::Update, 0));
    wait_until(|| !w.sink.call_targets().is_empty()).await;
    w.versions.stage("t", &["t_v2", "t_v1"], None);
    let settled = tokio::time::timeout(Duration::from_secs(20), held).await.unwrap().unwrap();
    assert!(settled.dead.is_empty());
    assert_eq!(w.sink.call_targets(), vec!["t_v1", "t_v2"], "the held share was written to the new current version");
    assert!(w.health.ready());
}

async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "condition not met in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Settles a batch of one write on its own task (it may be held).
fn settle_in_background(w: &Arc<Writer<Scripted>>, one: Write) -> tokio::task::JoinHandle<Settled> {
    let w = w.clone();
    tokio::spawn(async move { w.settle(batch(vec![Action::Write(one)])).await })
}
