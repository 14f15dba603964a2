//! Health tells the truth, against the real stack: a pipeline that stops for
//! good ends the process with a non-zero exit (and it never reports ready
//! after), and a record stuck retrying past `--stuck-after` shows its sink
//! down in /health/ready, naming the record, until it lands.

mod common;

use std::time::{Duration, Instant};

use common::*;
use projector::demo::bus_booking::{Timeline, trip};
use projector::demo::sqlserver::Record;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_stopped_for_good_ends_the_process_non_zero_and_is_never_ready_after() {
    let w = World::new("exitnz", 1).await;
    // Two sinks: Elasticsearch stops on the bad trip; PostgreSQL (seats) has
    // nothing wrong and would keep the process running if it could.
    let pg_table = format!("{}_seats", w.name.replace('-', "_"));
    w.set_model(&format!(
        "read_model: {}\ntables:\n  - topic: {}\n    elasticsearch: {{ index: {} }}\n  - topic: {}\n    postgres: {{ table: '{}' }}\n",
        w.name,
        w.db.trips.topic(),
        w.indexes[0],
        w.db.seats.topic(),
        pg_table
    ));
    let mut t = Timeline::default();
    let at = t.commit(1);
    let good = w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), at, t.ts_ms, true);
    let bad =
        Record { topic: w.db.trips.topic(), key: br#"{"TripId":2}"#.to_vec(), value: Some(b"{not json".to_vec()) };
    w.produce(&[good, bad]).await;
    let mut p = w.start_with(&w.group, &[("PROJECTOR_ERRORS_TOLERANCE", "none")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready_after_failure = None;
    while p.is_running() {
        assert!(
            Instant::now() < deadline,
            "projector still runs 60 s after a pipeline stopped for good; log: {}",
            log_tail(&p.log_text(), 20)
        );
        let failed = p.log_text().contains("errors.tolerance is none");
        if let (true, Some((200, body))) = (failed, p.ready().await) {
            ready_after_failure.get_or_insert(body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = p.log_text();
    assert_eq!(p.exit_code(), Some(1), "exit code; log: {}", log_tail(&log, 20));
    assert!(log.contains(&format!("{}/0@1", w.db.trips.topic())), "the error names the record: {log}");
    assert_eq!(ready_after_failure, None, "reported ready after the failure");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_stuck_retrying_shows_its_sink_down_naming_it_until_it_lands() {
    let w = World::new("wblock", 1).await;
    let trips = w.db.trips.topic();
    let index = &w.indexes[0];
    let mut t = Timeline::default();
    let at = t.commit(1);
    w.produce(&[w.db.trips.event('c', None, Some(&trip(1, 1000, 1)), at, t.ts_ms, true)]).await;
    let p = w.start_with(&w.group, &[("PROJECTOR_STUCK_AFTER_MS", "3000")]);
    w.wait_caught_up(&w.group, Duration::from_secs(60)).await;
    wait_for(Duration::from_secs(30), "ready", || async { matches!(p.ready().await, Some((200, _))) }).await;

    let settings = format!("{}/{index}/_settings", es_url());
    let r = http().put(&settings).json(&json!({"index.blocks.write": true})).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let at = t.commit(1);
    // The clock starts before the record exists: projector may take and fail
    // it before `produce` returns, so a later start could read under 3 s.
    let started = Instant::now();
    w.produce(&[w.db.trips.event('c', None, Some(&trip(2, 2000, 1)), at, t.ts_ms, true)]).await;
    let stuck = format!("{trips}/0@1");
    wait_for(Duration::from_secs(60), "/health/ready 503 naming the stuck record", || async {
        matches!(p.ready().await, Some((503, body)) if body["sinks"]["elasticsearch"]["detail"].as_str().is_some_and(|d| d.contains(&stuck) && d.starts_with("stuck:")))
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(3), "down only after the threshold");
    assert_eq!(sum_metric(&p.metrics().await, "projector_sink_up", &["elasticsearch"]), 0.0);
    // It stays down on every look while the record keeps retrying.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let status = p.ready().await;
        assert!(matches!(status, Some((503, _))), "up again while the record is stuck: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let r = http().put(&settings).json(&json!({"index.blocks.write": null})).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    wait_for(Duration::from_secs(60), "ready again once the record lands", || async {
        matches!(p.ready().await, Some((200, _)))
    })
    .await;
    assert!(w.docs(index).await.contains_key("2"), "the stuck record landed");
    assert_eq!(sum_metric(&p.metrics().await, "projector_sink_up", &["elasticsearch"]), 1.0);
}
