//! The scheduler's error types.

use std::time::Duration;

/// A configuration of the scheduler is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A limit specification (such as `fixed:16`) could not be parsed.
    #[error("invalid concurrency limit {spec:?}: {reason}")]
    InvalidLimit {
        /// The text that was given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The adaptive limit's minimum is 0: it could stop every call.
    #[error("the adaptive limit's minimum must be at least 1")]
    AdaptiveMinZero,
    /// The adaptive limit's range is empty.
    #[error("the adaptive limit's minimum ({min}) is above its maximum ({max})")]
    AdaptiveMinAboveMax {
        /// The minimum given.
        min: usize,
        /// The maximum given.
        max: usize,
    },
    /// The adaptive limit would start outside its range.
    #[error("the adaptive limit's initial value ({initial}) is outside its range {min}-{max}")]
    AdaptiveInitialOutOfRange {
        /// The start given.
        initial: usize,
        /// The minimum.
        min: usize,
        /// The maximum.
        max: usize,
    },
    /// The adaptive limit would probe the no-load latency without pause.
    #[error("the adaptive limit's probe interval must be longer than zero")]
    AdaptiveProbeIntervalZero,
}

/// Why a job did not produce a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError<E> {
    /// The job failed for good: a permanent error, or the attempts or the
    /// retry budget ran out. `source` is the last attempt's error.
    #[error("failed after {attempts} attempt(s)")]
    Failed {
        /// The last attempt's error.
        source: E,
        /// Attempts made.
        attempts: u32,
    },
    /// The job's group was cancelled: another job failed, the request went
    /// away, or shutdown gave up waiting.
    #[error("cancelled")]
    Cancelled,
    /// The queue is full.
    #[error("overloaded: retry after {} s", retry_after.as_secs())]
    Overloaded {
        /// A wait after which the queue has likely drained enough.
        retry_after: Duration,
    },
    /// The backend is down (see [`crate::breaker`]): the job was not
    /// tried. The group is cancelled.
    #[error("the storage backend is unavailable: retry after {} s", retry_after.as_secs())]
    Unavailable {
        /// When the breaker next probes the backend.
        retry_after: Duration,
    },
    /// The job panicked; the panic was caught and its group cancelled.
    #[error("the job panicked: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
    },
}

/// The scheduler's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
