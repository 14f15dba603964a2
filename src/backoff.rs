//! How long to wait before trying something again: exponential backoff with
//! jitter, capped, and never giving up. Used wherever projector waits out an
//! outage — a sink write (`pipeline::retry`), a dead letter, the schema
//! registry — so it sits beside the path rather than inside one step of it.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// An endless sequence of delays: 100 ms doubling up to 30 s, with jitter.
pub fn delays() -> impl Iterator<Item = Duration> + Send {
    delays_between(Duration::from_millis(100), Duration::from_secs(30))
}

/// Endless backoff between `min` and `max`.
pub fn delays_between(min: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .map(move |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_never_ends() {
        let v: Vec<Duration> = delays_between(Duration::from_millis(10), Duration::from_millis(80)).take(50).collect();
        assert_eq!(v.len(), 50);
        assert!(v.iter().all(|d| *d <= Duration::from_millis(80)));
        assert!(v[0] < Duration::from_millis(40));
        assert!(v[49] >= Duration::from_millis(40));
    }
}
