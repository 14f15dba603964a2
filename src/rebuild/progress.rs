//! How a rebuild shows its progress: a log line every few seconds with the
//! rows copied (by every worker of the rebuild, read from its ranges), the
//! rate of this process and the ETA, and the metrics
//! `projector_rebuild_rows_total` and `projector_rebuild_eta_seconds`.

use std::time::{Duration, Instant};

/// Progress of one worker on one rebuild.
#[derive(Debug)]
pub struct Progress {
    rebuild: String,
    started: Instant,
    last_log: Option<Instant>,
    /// Rows this process copied.
    pub copied: u64,
}

const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub fn new(rebuild: &str) -> Progress {
        Progress { rebuild: rebuild.to_string(), started: Instant::now(), last_log: None, copied: 0 }
    }

    /// Books `rows` copied by this process; `done` and `total` are the
    /// whole rebuild's (every worker).
    pub fn copied(&mut self, rows: u64, done: u64, total: u64) {
        self.copied += rows;
        metrics::counter!("projector_rebuild_rows_total", "rebuild" => self.rebuild.clone()).increment(rows);
        let rate = self.copied as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let eta = eta_seconds(done, total, rate);
        metrics::gauge!("projector_rebuild_eta_seconds", "rebuild" => self.rebuild.clone()).set(eta);
        if self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            self.last_log = Some(Instant::now());
            tracing::info!(rebuild = %self.rebuild, done, total, rows_per_second = rate.round(), eta_seconds = eta.round(), "rebuild progress");
        }
    }
}

/// Seconds left at `rate` rows/s for the rows not done yet.
pub fn eta_seconds(done: u64, total: u64, rate: f64) -> f64 {
    if rate <= 0.0 {
        return 0.0;
    }
    total.saturating_sub(done) as f64 / rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_is_the_rows_left_at_the_rate() {
        assert_eq!(eta_seconds(250, 1_250, 100.0), 10.0);
        assert_eq!(eta_seconds(2_000, 1_000, 100.0), 0.0, "more done than counted at the start");
        assert_eq!(eta_seconds(0, 1_000, 0.0), 0.0);
    }
}
