//! Health as an operator reads it: is each sink taking writes right now, and
//! if not, since when and why; likewise for the services records are read
//! through (the schema registry). `/health/ready` is 200 only when every
//! sink and every such upstream is up; the body says which one is not.

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
        metrics::gauge!("projector_sink_up", "sink" => sink.to_string()).set(1.0);
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
        let m = self.lock();
        !m.is_empty() && m.values().all(|s| s.up) && lock(&self.upstreams).values().all(|s| s.up)
    }

    pub fn snapshot(&self) -> BTreeMap<String, SinkHealth> {
        self.lock().clone()
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

fn lock(m: &Mutex<BTreeMap<String, SinkHealth>>) -> std::sync::MutexGuard<'_, BTreeMap<String, SinkHealth>> {
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
