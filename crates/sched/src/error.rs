//! The scheduler's error type.

/// Errors of the scheduler.
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
}

/// The scheduler's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
