//! Elasticsearch goes away for 30 s under load. projector must say so on
//! /health/ready and in metrics, retry without a restart, and catch up with
//! nothing lost. This file stops the shared Elasticsearch, so it is its own
//! test binary (cargo runs test binaries one after another).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use projector::demo::bus_booking::{Timeline, trip};

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_down_for_30s_under_load_is_reported_retried_and_caught_up() {
    let w = World::new("outage", 3).await;
    let p = w.start(&w.group);
    wait_for(Duration::from_secs(60), "projector ready", || async { p.ready().await.is_some_and(|(s, _)| s == 200) })
        .await;

    // Load: fare updates for 100 trips, a round every 200 ms, for the whole outage.
    let mut t = Timeline::default();
    let mut expect = BTreeMap::new();
    let mut round = 0i128;
    let produce_round = async |t: &mut Timeline, expect: &mut BTreeMap<String, i128>, round: i128| {
        let mut recs = Vec::new();
        for id in 1..=100 {
            let at = t.commit(if round == 0 { 1 } else { 2 });
            let op = if round == 0 { 'c' } else { 'u' };
            let before = (round > 0).then(|| trip(id, round - 1, 1));
            recs.push(w.db.trips.event(op, before.as_ref(), Some(&trip(id, round, 1)), at, t.ts_ms, true));
            expect.insert(id.to_string(), round);
        }
        w.produce(&recs).await;
    };
    produce_round(&mut t, &mut expect, round).await;

    stack(&["stop-service", "search"]);
    let down_at = Instant::now();
    let mut saw_not_ready = false;
    while down_at.elapsed() < Duration::from_secs(30) {
        round += 1;
        produce_round(&mut t, &mut expect, round).await;
        if let Some((status, body)) = p.ready().await
            && status == 503
            && body["sinks"]["elasticsearch"]["up"] == false
        {
            saw_not_ready = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(saw_not_ready, "/health/ready reported the sink down during the outage");
    assert!(p.counter("projector_sink_retries_total", &["sink=\"elasticsearch\""]).await > 0.0);
    assert_eq!(p.counter("projector_sink_up", &["sink=\"elasticsearch\""]).await, 0.0);
    stack(&["start-service", "search"]);

    w.wait_caught_up(&w.group, Duration::from_secs(180)).await;
    let docs = w.docs(&w.indexes[0]).await;
    let got: BTreeMap<String, i128> =
        docs.iter().map(|(id, d)| (id.clone(), (d["Fare"].as_f64().unwrap() * 100.0).round() as i128)).collect();
    assert_eq!(got, expect, "every trip has its last fare");
    wait_for(Duration::from_secs(30), "ready again", || async { p.ready().await.is_some_and(|(s, _)| s == 200) }).await;
    assert!(round > 20, "load kept flowing during the outage ({round} rounds)");
}
