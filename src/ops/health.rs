//! Health as an operator reads it: is each sink taking writes right now, and
//! if not, since when and why. `/health/ready` is 200 only when every sink
//! is up; the body says which one is not.

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
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

impl Health {
    /// Registers a sink as starting (not ready until its first success).
    pub fn register(&self, sink: &str) {
        self.lock().insert(sink.to_string(), SinkHealth { up: false, detail: "starting".into(), since_ms: now_ms(), last_write_ms: None });
    }

    pub fn sink_up(&self, sink: &str) {
        let mut m = self.lock();
        let e = m.entry(sink.to_string()).or_insert(SinkHealth { up: false, detail: String::new(), since_ms: now_ms(), last_write_ms: None });
        if !e.up {
            e.since_ms = now_ms();
            tracing::info!(sink, "sink is up");
        }
        e.up = true;
        e.detail = "ok".into();
        e.last_write_ms = Some(now_ms());
        metrics::gauge!("projector_sink_up", "sink" => sink.to_string()).set(1.0);
    }

    pub fn sink_down(&self, sink: &str, detail: &str) {
        let mut m = self.lock();
        let e = m.entry(sink.to_string()).or_insert(SinkHealth { up: true, detail: String::new(), since_ms: now_ms(), last_write_ms: None });
        if e.up {
            e.since_ms = now_ms();
        }
        e.up = false;
        e.detail = detail.to_string();
        metrics::gauge!("projector_sink_up", "sink" => sink.to_string()).set(0.0);
    }

    pub fn ready(&self) -> bool {
        let m = self.lock();
        !m.is_empty() && m.values().all(|s| s.up)
    }

    pub fn snapshot(&self) -> BTreeMap<String, SinkHealth> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SinkHealth>> {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }
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
}
