//! The storage layer's error type.

use corral_sched::{Class, Classify, JobError};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key or key segment breaks the rules of [`crate::Key`].
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// No object has this key.
    #[error("no object with key {key:?}")]
    NotFound {
        /// The key that was looked up.
        key: String,
    },

    /// The requested byte range lies outside the object.
    #[error("range not satisfiable for {key:?} of {size} bytes")]
    RangeNotSatisfiable {
        /// The object's key.
        key: String,
        /// The object's size.
        size: u64,
    },

    /// The store URL could not be understood or opened.
    #[error("cannot open store {url:?}: {reason}")]
    Open {
        /// The URL as given.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// The backend failed a call, for good: a permanent error, or the
    /// retries ran out.
    #[error("storage backend failed on {key:?} after {attempts} attempt(s)")]
    Backend {
        /// The key the call was about (empty for listings of the root).
        key: String,
        /// Attempts made.
        attempts: u32,
        /// The backend's error.
        #[source]
        source: object_store::Error,
    },

    /// The scheduler's queue is full: try again after `retry_after`.
    #[error("overloaded: retry after {} s", retry_after.as_secs())]
    Overloaded {
        /// A wait after which the queue has likely drained enough.
        retry_after: std::time::Duration,
    },

    /// The call's group was cancelled: another call of the request failed,
    /// the request went away, or shutdown gave up waiting.
    #[error("cancelled")]
    Cancelled,

    /// The call panicked (a bug); the panic was caught.
    #[error("a storage call panicked: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
    },

    /// An object's bytes do not match the SHA-256 recorded when it was
    /// stored.
    #[error("stored object {key:?} does not match its recorded SHA-256")]
    ChecksumMismatch {
        /// The object's key.
        key: String,
    },

    /// The metadata stored beside an object could not be read.
    #[error("metadata of {key:?} is unreadable")]
    CorruptMetadata {
        /// The object's key.
        key: String,
        /// Why it could not be decoded.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn backend(key: &str, source: object_store::Error, attempts: u32) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Self::NotFound {
                key: key.to_owned(),
            },
            source => Self::Backend {
                key: key.to_owned(),
                attempts,
                source,
            },
        }
    }

    pub(crate) fn job(key: &str, error: JobError<BackendError>) -> Self {
        match error {
            JobError::Failed { source, attempts } => Self::backend(key, source.0, attempts),
            JobError::Overloaded { retry_after } => Self::Overloaded { retry_after },
            JobError::Panicked { message } => Self::Panicked { message },
            // Cancelled, and whatever the scheduler adds later.
            _ => Self::Cancelled,
        }
    }
}

/// An `object_store` error, classified for the scheduler.
#[derive(Debug)]
pub(crate) struct BackendError(pub(crate) object_store::Error);

impl Classify for BackendError {
    fn classify(&self) -> Class {
        use object_store::Error as E;
        match &self.0 {
            // Local and in-memory stores fail only for reasons that do not
            // go away by themselves (no space, no permission).
            E::Generic { store, .. } if matches!(*store, "LocalFileSystem" | "InMemory") => {
                Class::Permanent
            }
            E::Generic { source, .. } => {
                let text = crate::store::error_chain(source.as_ref()).to_ascii_lowercase();
                let throttled = [
                    "429",
                    "503",
                    "slowdown",
                    "slow down",
                    "timed out",
                    "timeout",
                ]
                .iter()
                .any(|sign| text.contains(sign));
                if throttled {
                    Class::Throttled { retry_after: None }
                } else {
                    Class::Transient { retry_after: None }
                }
            }
            _ => Class::Permanent,
        }
    }
}

/// The storage layer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
