//! The retry policy, the same for every sink: what to do with a failed
//! write is decided from its [`ErrorKind`] alone (never from message text),
//! and how long to wait before trying again is [`crate::backoff`], which
//! never gives up. A sink that is down is a state to report (health,
//! metrics), not a reason to stop the process. A write retried past
//! `--stuck-after` is reported too, naming its record, by a [`StuckWatch`].

use std::time::{Duration, Instant};

use crate::ops::Health;
use crate::sink::ErrorKind;

/// What the pipeline does with a write that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The data caused it: the write goes to the dead-letter queue.
    DeadLetter,
    /// The sink caused it: try again after a backoff.
    Retry {
        /// Whether the sink is reported down meanwhile. A version conflict
        /// is concurrency, not an outage.
        sink_down: bool,
    },
}

/// Decides from the kind alone.
pub fn decide(kind: ErrorKind) -> Decision {
    match kind {
        ErrorKind::RefusedRow | ErrorKind::BadData => Decision::DeadLetter,
        // The sink is up; the target's shape waits for its rebuild.
        ErrorKind::Conflict | ErrorKind::NeedsRebuild => Decision::Retry { sink_down: false },
        ErrorKind::Unavailable
        | ErrorKind::Overloaded
        | ErrorKind::Configuration
        | ErrorKind::Permission
        | ErrorKind::NotFound => Decision::Retry { sink_down: true },
    }
}

pub use crate::backoff::delays;

/// Watches one share of a batch being retried: once it has failed for
/// longer than `after`, the sink is reported down naming the record the
/// share starts at, whatever other requests do, until the share settles.
pub struct StuckWatch<'a> {
    health: &'a Health,
    sink: &'static str,
    after: Duration,
    failing_since: Option<Instant>,
    /// The record reported stuck, once reported.
    reported: Option<String>,
}

impl<'a> StuckWatch<'a> {
    pub fn new(health: &'a Health, sink: &'static str, after: Duration) -> StuckWatch<'a> {
        StuckWatch { health, sink, after, failing_since: None, reported: None }
    }

    /// Books a failed attempt at `items` writes starting at `record`;
    /// returns how long to wait before the next one: `wait`, shortened so
    /// that the threshold is checked on time.
    pub fn failed(&mut self, record: &str, items: usize, reason: &str, wait: Duration) -> Duration {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let failing = since.elapsed();
        if failing < self.after {
            return wait.min(self.after - failing);
        }
        let detail = format!(
            "stuck: {record} ({items} item(s)) retried for {} s: {reason}; it is retried until the sink takes it",
            failing.as_secs()
        );
        if self.reported.is_none() {
            tracing::error!(sink = self.sink, record, items, failing = ?failing, reason, "write stuck retrying; sink reported down");
        }
        self.health.stuck(self.sink, record, &detail);
        self.reported = Some(record.to_string());
        wait
    }

    /// The share is written (or dead-lettered).
    pub fn settled(&mut self) {
        if let Some(record) = self.reported.take() {
            self.health.settled(self.sink, &record);
            tracing::info!(sink = self.sink, record, "stuck write settled");
        }
        self.failing_since = None;
    }
}

impl Drop for StuckWatch<'_> {
    fn drop(&mut self) {
        self.settled();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_data_kinds_are_dead_lettered() {
        assert_eq!(decide(ErrorKind::RefusedRow), Decision::DeadLetter);
        assert_eq!(decide(ErrorKind::BadData), Decision::DeadLetter);
        for kind in [
            ErrorKind::Unavailable,
            ErrorKind::Overloaded,
            ErrorKind::Configuration,
            ErrorKind::Permission,
            ErrorKind::NotFound,
        ] {
            assert_eq!(decide(kind), Decision::Retry { sink_down: true }, "{kind}");
        }
        assert_eq!(decide(ErrorKind::Conflict), Decision::Retry { sink_down: false });
    }

    #[test]
    fn a_share_failing_past_the_threshold_is_stuck_until_it_settles() {
        let h = Health::default();
        h.sink_up("es");
        let mut watch = StuckWatch::new(&h, "es", Duration::from_millis(30));
        let wait = watch.failed("t/0@1", 1, "blocked", Duration::from_secs(30));
        assert!(wait <= Duration::from_millis(30), "the wait ends at the threshold: {wait:?}");
        assert!(h.ready(), "not stuck before the threshold");
        std::thread::sleep(wait);
        watch.failed("t/0@1", 1, "blocked", Duration::from_secs(30));
        assert!(!h.ready());
        assert!(h.snapshot()["es"].detail.contains("t/0@1"));
        drop(watch);
        assert!(h.ready(), "settled when the share is done");
    }
}
