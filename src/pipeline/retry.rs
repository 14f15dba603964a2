//! The retry policy, the same for every sink: what to do with a failed
//! write is decided from its [`ErrorKind`] alone (never from message text),
//! and how long to wait before trying again is [`crate::backoff`], which
//! never gives up. A sink that is down is a state to report (health,
//! metrics), not a reason to stop the process.

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

pub use crate::backoff::delays;

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
}
