//! The rebuild's throttle (`--max-rows-per-second`): a rebuild shares the
//! target with the live stream, so it may be held to a row rate. The
//! limiter is a pure schedule (how long to wait before the next page given
//! the rows already sent and the time elapsed) so its arithmetic is tested
//! without a clock; [`Throttle::admit`] does the waiting.

use std::time::{Duration, Instant};

/// Holds a copy to at most `rows_per_second` on average since it started.
#[derive(Debug)]
pub struct Throttle {
    rows_per_second: Option<u64>,
    started: Instant,
    sent: u64,
}

impl Throttle {
    /// `None` or 0: no limit.
    pub fn new(rows_per_second: Option<u64>) -> Throttle {
        Throttle { rows_per_second: rows_per_second.filter(|r| *r > 0), started: Instant::now(), sent: 0 }
    }

    /// How long to wait before sending more, having sent `sent` rows in
    /// `elapsed`: until `sent` rows are what the rate allows.
    pub fn wait_for(rows_per_second: Option<u64>, sent: u64, elapsed: Duration) -> Duration {
        let Some(rate) = rows_per_second.filter(|r| *r > 0) else { return Duration::ZERO };
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        due.saturating_sub(elapsed)
    }

    /// Waits until `rows` more may be sent, then counts them as sent.
    pub async fn admit(&mut self, rows: u64) {
        let wait = Self::wait_for(self.rows_per_second, self.sent, self.started.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.sent += rows;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_waits_until_the_rows_sent_fit_the_rate() {
        let ms = Duration::from_millis;
        // 1,000 rows at 500 rows/s are due at 2 s: at 0.5 s wait 1.5 s more.
        assert_eq!(Throttle::wait_for(Some(500), 1_000, ms(500)), ms(1_500));
        // Behind schedule: no wait.
        assert_eq!(Throttle::wait_for(Some(500), 1_000, ms(2_500)), Duration::ZERO);
        assert_eq!(Throttle::wait_for(Some(500), 0, ms(0)), Duration::ZERO, "the first page goes at once");
        assert_eq!(Throttle::wait_for(None, 1_000_000, ms(0)), Duration::ZERO, "no limit");
        assert_eq!(Throttle::wait_for(Some(0), 1_000_000, ms(0)), Duration::ZERO, "0 means no limit");
    }
}
