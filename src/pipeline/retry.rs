//! The retry policy, the same for every sink: what to do with a failed
//! write is decided from its [`ErrorKind`] alone (never from message text),
//! and how long to wait before trying again is exponential backoff with
//! jitter, capped, and never giving up. A sink that is down is a state to
//! report (health, metrics), not a reason to stop the process.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

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
        ErrorKind::Conflict => Decision::Retry { sink_down: false },
        ErrorKind::Unavailable
        | ErrorKind::Overloaded
        | ErrorKind::Configuration
        | ErrorKind::Permission
        | ErrorKind::NotFound => Decision::Retry { sink_down: true },
    }
}

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
    fn backoff_grows_is_capped_and_never_ends() {
        let v: Vec<Duration> = delays_between(Duration::from_millis(10), Duration::from_millis(80)).take(50).collect();
        assert_eq!(v.len(), 50);
        assert!(v.iter().all(|d| *d <= Duration::from_millis(80)));
        assert!(v[0] < Duration::from_millis(40));
        assert!(v[49] >= Duration::from_millis(40));
    }
}
