//! How a rebuild shows its progress: on a terminal an indicatif bar of the
//! rows copied (by every worker of the rebuild, read from its ranges) with
//! rate and ETA; otherwise a log line every few seconds with the same; and
//! always the metrics `projector_rebuild_rows_total` and
//! `projector_rebuild_eta_seconds`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of one worker on one rebuild.
#[derive(Debug)]
pub struct Progress {
    rebuild: String,
    started: Instant,
    last_log: Option<Instant>,
    bar: Option<ProgressBar>,
    /// Rows this process copied.
    pub copied: u64,
}

const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// A bar of `total` rows when stderr is a terminal.
    pub fn new(rebuild: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            // The template is a constant: a bad one is a bug caught by any run on a tty.
            if let Ok(style) = ProgressStyle::with_template("{prefix} {wide_bar} {pos}/{len} rows {per_sec} ETA {eta}")
            {
                bar.set_style(style);
            }
            bar.set_prefix(rebuild.to_string());
            bar
        });
        Progress { rebuild: rebuild.to_string(), started: Instant::now(), last_log: None, bar, copied: 0 }
    }

    /// Closes the bar, if any.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    /// Books `rows` copied by this process; `done` and `total` are the
    /// whole rebuild's (every worker).
    pub fn copied(&mut self, rows: u64, done: u64, total: u64) {
        self.copied += rows;
        metrics::counter!("projector_rebuild_rows_total", "rebuild" => self.rebuild.clone()).increment(rows);
        let rate = self.copied as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let eta = eta_seconds(done, total, rate);
        metrics::gauge!("projector_rebuild_eta_seconds", "rebuild" => self.rebuild.clone()).set(eta);
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
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
