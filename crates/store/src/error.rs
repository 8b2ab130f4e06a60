//! The storage layer's error type.

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

    /// The backend failed a call.
    #[error("storage backend failed on {key:?}")]
    Backend {
        /// The key the call was about (empty for listings of the root).
        key: String,
        /// The backend's error.
        #[source]
        source: object_store::Error,
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
    pub(crate) fn backend(key: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Self::NotFound {
                key: key.to_owned(),
            },
            source => Self::Backend {
                key: key.to_owned(),
                source,
            },
        }
    }
}

/// The storage layer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
