//! A schema registry outage through the real stack. Avro records whose
//! schemas projector has not fetched yet wait while the registry is down:
//! /health/ready says so, the retry metric moves, and the consumer keeps
//! polling, so it stays in its group past max.poll.interval.ms. Once the
//! registry is back, every record lands. (Its own file: it stops the
//! registry that other Avro tests need.)

mod common;

use std::time::{Duration, Instant};

use common::avro::{registry_url, to_avro};
use common::*;
use projector::demo::bus_booking::{Timeline, trip};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Members of `group` as the broker sees them.
fn members(group: &str) -> usize {
    let admin: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let list = admin.fetch_group_list(Some(group), Duration::from_secs(10)).unwrap();
    list.groups().iter().find(|g| g.name() == group).map_or(0, |g| g.members().len())
}

/// Starts the registry again even if the test fails half-way.
struct RegistryBack;
impl Drop for RegistryBack {
    fn drop(&mut self) {
        stack(&["start-service", "registry"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_outage_holds_avro_records_reports_it_and_keeps_the_group() {
    let w = World::new("regdown", 1).await;
    let mut t = Timeline::default();
    let mut json_records = Vec::new();
    for id in 1..=5 {
        let at = t.commit(1);
        json_records.push(w.db.trips.event('c', None, Some(&trip(id, 1000 * id as i128, 1)), at, t.ts_ms, true));
    }
    let records = to_avro(&json_records).await;
    w.produce(&records).await;

    // projector has never fetched these schemas, and now cannot.
    stack(&["stop-service", "registry"]);
    let back = RegistryBack;
    let url = registry_url();
    let max_poll = Duration::from_secs(10);
    let p = w.start_with(
        &w.group,
        &[("PROJECTOR_SCHEMA_REGISTRY_URL", url.as_str()), ("PROJECTOR_MAX_POLL_INTERVAL_MS", "10000")],
    );
    wait_for(Duration::from_secs(60), "/health/ready to name the schema registry as down", || async {
        p.ready()
            .await
            .is_some_and(|(status, body)| status == 503 && body["upstreams"]["schema_registry"]["up"] == false)
    })
    .await;
    let (_, body) = p.ready().await.unwrap();
    let detail = body["upstreams"]["schema_registry"]["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains("8081") && detail.contains(&w.db.trips.topic()),
        "names the registry and the waiting record: {detail}"
    );
    assert!(p.counter("projector_schema_registry_requests_total", &["outcome=\"error\""]).await >= 1.0);
    assert!(w.docs(&w.indexes[0]).await.is_empty(), "nothing is decoded without its schema");

    // Outlast max.poll.interval.ms: a loop that stopped polling while it
    // waited would be dropped from the group by now.
    let down_since = Instant::now();
    while down_since.elapsed() < max_poll + Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let group = format!("{}.elasticsearch", w.group);
    let g = group.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || members(&g)).await.unwrap(),
        1,
        "still in the group; log: {}",
        log_tail(&p.log_text(), 30)
    );
    assert!(!p.log_text().contains("max.poll.interval"), "librdkafka never saw the poll loop stall");

    drop(back);
    w.wait_caught_up(&w.group, Duration::from_secs(120)).await;
    let docs = w.docs(&w.indexes[0]).await;
    assert_eq!(docs.keys().collect::<Vec<_>>(), ["1", "2", "3", "4", "5"]);
    assert_eq!(docs["3"]["Fare"].as_f64(), Some(30.0), "decoded with the fetched schema");
    wait_for(Duration::from_secs(30), "/health/ready to be 200 again", || async {
        p.ready().await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert_eq!(p.counter("projector_dead_letters_total", &[]).await, 0.0, "nothing dead-lettered");
}
