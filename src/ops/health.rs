//! Health as an operator reads it: is each sink taking writes right now, and
//! if not, since when and why; likewise for the services records are read
//! through (the schema registry). `/health/ready` is 200 only when every
//! sink and every such upstream is up; the body says which one is not.
//!
//! Two states override a sink's last request: a record (or batch) stuck
//! retrying past `--stuck-after` keeps the sink down, naming the record,
//! even while other requests succeed, until it settles; and a pipeline that
//! stopped for good stays down until the process exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One sink's state.
#[derive(Clone, Debug, Serialize)]
pub struct SinkHealth {
    pub up: bool,
    /// Last error while down; "ok" while up.
    pub detail: String,
    /// Unix ms of the last state change.
    pub since_ms: u128,
    /// Unix ms of the last successfully written batch.
    pub last_write_ms: Option<u128>,
}

/// Shared health of the process.
#[derive(Clone, Debug, Default)]
pub struct Health {
    sinks: Arc<Mutex<BTreeMap<String, SinkHealth>>>,
    /// Services on the read side (the schema registry), listed once asked.
    upstreams: Arc<Mutex<BTreeMap<String, SinkHealth>>>,
    /// Per sink: what is stuck retrying (by the record it starts at) and why.
    stuck: Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>>,
    /// Sinks whose pipeline stopped for good, and why.
    stopped: Arc<Mutex<BTreeMap<String, String>>>,
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

impl Health {
    /// Registers a sink as starting (not ready until its first success).
    pub fn register(&self, sink: &str) {
        self.lock().insert(
            sink.to_string(),
            SinkHealth { up: false, detail: "starting".into(), since_ms: now_ms(), last_write_ms: None },
        );
    }

    pub fn sink_up(&self, sink: &str) {
        if mark(&self.sinks, sink, None) {
            tracing::info!(sink, "sink is up");
        }
        self.publish(sink);
    }

    /// A record (or batch) starting at `record` has been retried past the
    /// threshold: the sink is down until [`Health::settled`].
    pub fn stuck(&self, sink: &str, record: &str, detail: &str) {
        lock(&self.stuck).entry(sink.to_string()).or_default().insert(record.to_string(), detail.to_string());
        self.publish(sink);
    }

    /// What [`Health::stuck`] reported for `record` has been written or dead-lettered.
    pub fn settled(&self, sink: &str, record: &str) {
        if let Some(m) = lock(&self.stuck).get_mut(sink) {
            m.remove(record);
        }
        self.publish(sink);
    }

    /// The sink's pipeline stopped for good; it stays down.
    pub fn stopped(&self, sink: &str, reason: &str) {
        lock(&self.stopped).insert(sink.to_string(), reason.to_string());
        self.publish(sink);
    }

    /// Sets `projector_sink_up` from everything known about the sink.
    fn publish(&self, sink: &str) {
        let up = self.snapshot().get(sink).is_some_and(|s| s.up);
        metrics::gauge!("projector_sink_up", "sink" => sink.to_string()).set(if up { 1.0 } else { 0.0 });
    }

    pub fn sink_down(&self, sink: &str, detail: &str) {
        mark(&self.sinks, sink, Some(detail));
        metrics::gauge!("projector_sink_up", "sink" => sink.to_string()).set(0.0);
    }

    /// An upstream (the schema registry) answered.
    pub fn upstream_up(&self, name: &str) {
        if mark(&self.upstreams, name, None) {
            tracing::info!(upstream = name, "upstream is up");
        }
        metrics::gauge!("projector_upstream_up", "upstream" => name.to_string()).set(1.0);
    }

    /// An upstream cannot be reached; records that need it wait.
    pub fn upstream_down(&self, name: &str, detail: &str) {
        mark(&self.upstreams, name, Some(detail));
        metrics::gauge!("projector_upstream_up", "upstream" => name.to_string()).set(0.0);
    }

    pub fn ready(&self) -> bool {
        let m = self.snapshot();
        !m.is_empty() && m.values().all(|s| s.up) && lock(&self.upstreams).values().all(|s| s.up)
    }

    /// Each sink's state, with what is stuck and what stopped taking precedence.
    pub fn snapshot(&self) -> BTreeMap<String, SinkHealth> {
        let mut m = self.lock().clone();
        let stuck = lock(&self.stuck);
        let stopped = lock(&self.stopped);
        for (sink, s) in m.iter_mut() {
            let stuck: Vec<&str> =
                stuck.get(sink).map(|r| r.values().map(String::as_str).collect()).unwrap_or_default();
            if let Some(reason) = stopped.get(sink) {
                s.up = false;
                s.detail = format!("stopped: {reason}");
            } else if !stuck.is_empty() {
                s.up = false;
                s.detail = stuck.join("; ");
            }
        }
        m
    }

    pub fn upstreams(&self) -> BTreeMap<String, SinkHealth> {
        lock(&self.upstreams).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SinkHealth>> {
        lock(&self.sinks)
    }
}

/// Marks `name` up (`down` is None) or down with its reason; true when it
/// was down (or unknown) and is now up.
fn mark(m: &Mutex<BTreeMap<String, SinkHealth>>, name: &str, down: Option<&str>) -> bool {
    let mut m = lock(m);
    let e = m.entry(name.to_string()).or_insert(SinkHealth {
        up: down.is_some(),
        detail: String::new(),
        since_ms: now_ms(),
        last_write_ms: None,
    });
    let came_up = !e.up && down.is_none();
    if e.up != down.is_none() {
        e.since_ms = now_ms();
    }
    e.up = down.is_none();
    e.detail = down.unwrap_or("ok").to_string();
    if e.up {
        e.last_write_ms = Some(now_ms());
    }
    came_up
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_sink_is_up() {
        let h = Health::default();
        assert!(!h.ready());
        h.register("elasticsearch");
        assert!(!h.ready());
        h.sink_up("elasticsearch");
        assert!(h.ready());
        h.sink_down("elasticsearch", "connection refused");
        assert!(!h.ready());
        assert_eq!(h.snapshot()["elasticsearch"].detail, "connection refused");
    }

    #[test]
    fn a_stuck_record_keeps_the_sink_down_while_other_requests_succeed() {
        let h = Health::default();
        h.sink_up("elasticsearch");
        h.stuck("elasticsearch", "t/0@1", "stuck: t/0@1 retrying for 60 s");
        h.sink_up("elasticsearch");
        assert!(!h.ready());
        assert!(h.snapshot()["elasticsearch"].detail.contains("t/0@1"));
        h.settled("elasticsearch", "t/0@1");
        assert!(h.ready());
    }

    #[test]
    fn a_stopped_pipeline_stays_down() {
        let h = Health::default();
        h.sink_up("elasticsearch");
        h.stopped("elasticsearch", "errors.tolerance is none");
        h.sink_up("elasticsearch");
        assert!(!h.ready());
        assert_eq!(h.snapshot()["elasticsearch"].detail, "stopped: errors.tolerance is none");
    }

    #[test]
    fn a_down_upstream_makes_the_service_unready() {
        let h = Health::default();
        h.sink_up("elasticsearch");
        h.upstream_down("schema_registry", "connection refused");
        assert!(!h.ready());
        assert_eq!(h.upstreams()["schema_registry"].detail, "connection refused");
        h.upstream_up("schema_registry");
        assert!(h.ready());
    }
}
