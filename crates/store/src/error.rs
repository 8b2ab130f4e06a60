//! The storage layer's error type.

use std::sync::Arc;

use corral_sched::{Class, Classify, JobError};

/// Errors of the storage layer. Cheap to clone, so that readers sharing
/// one backend call (see [`crate::hot`]) each get its error.
#[derive(Debug, Clone, thiserror::Error)]
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

    /// A file of this instance's own state (the journal of batches) is
    /// held by another process: another corral with the same directory.
    #[error("{} is in use by another process (its lock is held)", path.display())]
    InUse {
        /// The file.
        path: std::path::PathBuf,
    },

    /// The store URL could not be understood or opened.
    #[error("cannot open store {url:?}: {reason}")]
    Open {
        /// The URL as given.
        url: String,
        /// What went wrong, for people.
        reason: String,
        /// The failure underneath, if there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
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
        source: Arc<object_store::Error>,
    },

    /// The scheduler's queue is full: try again after `retry_after`.
    #[error("overloaded: retry after {} s", retry_after.as_secs())]
    Overloaded {
        /// A wait after which the queue has likely drained enough.
        retry_after: std::time::Duration,
    },

    /// The backend is down: corral's circuit breaker refuses calls until a
    /// probe finds it answering again, after about `retry_after`.
    #[error("the storage backend is unavailable: retry after {} s", retry_after.as_secs())]
    Unavailable {
        /// When the backend is next probed.
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

    /// The journal of batch intents failed (see [`crate::batch`]).
    #[error("the journal of batches failed to record {dir:?}")]
    Journal {
        /// The batch's directory.
        dir: String,
        /// What the journal said.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// The metadata stored beside an object could not be read.
    #[error("metadata of {key:?} is unreadable")]
    CorruptMetadata {
        /// The object's key.
        key: String,
        /// Why it could not be decoded.
        #[source]
        source: Arc<serde_json::Error>,
    },

    /// The saved state of a resumable upload cannot be used.
    #[error("the saved state of upload {key:?} is unusable: {reason}")]
    CorruptState {
        /// The upload's state object, or its object's key.
        key: String,
        /// Why.
        reason: String,
    },

    /// The resumable upload has expired: it is removed, or about to be.
    #[error("upload {upload:?} has expired")]
    Expired {
        /// The upload's id.
        upload: String,
    },

    /// Bytes for a resumable upload were sent for another offset than the
    /// one it is at.
    #[error("the upload is at byte {offset}, not at the offset given")]
    OffsetMismatch {
        /// The offset the upload is at.
        offset: u64,
    },

    /// Another instance holds the resumable upload's lease: a request of
    /// its is writing the upload (see [`crate::resumable`]). Try again once
    /// it is released, or at `until` when it expires.
    #[error("upload {upload:?} is being written by another instance")]
    Leased {
        /// The upload's id.
        upload: String,
        /// When the lease expires if its holder neither renews nor
        /// releases it (the holder died).
        until: std::time::SystemTime,
    },

    /// The resumable upload's state changed under this request: another
    /// instance took the upload over (this one's lease had expired), or
    /// ended it. A conditional write of the state was refused, so nothing
    /// was overwritten; this request's bytes are not part of the upload.
    #[error("upload {upload:?} was taken over by another request; ask for its offset")]
    LeaseLost {
        /// The upload's id.
        upload: String,
    },

    /// An object written only if its key was free found another object
    /// there (see [`crate::resumable`]): nothing was written.
    #[error("object {key:?} exists already")]
    Exists {
        /// The object's key.
        key: String,
    },
}

impl Error {
    /// Whether the store refused this object for good: the key breaks the
    /// rules, or the backend refused the call for a reason of its own (a
    /// `4xx` other than a throttle, such as `403 AccessDenied` on this key).
    ///
    /// Not so when the store as a whole fails, for a reason an operator
    /// can fix: credentials refused or expired, a missing bucket, a full
    /// or read-only local disk. Those fail a request at once (retrying
    /// within it would not help), but the spool waits them out rather than
    /// give up on files it has acknowledged. Throttles, timeouts, `5xx`,
    /// cancellations and missing objects are not refusals either.
    pub fn rejects_object(&self) -> bool {
        match self {
            Self::InvalidKey { .. } => true,
            Self::Backend { source, .. } => {
                matches!(classify(source), Class::Permanent) && !store_wide(source)
            }
            _ => false,
        }
    }

    /// Whether the failure may pass by itself: the backend is down, busy
    /// or failed transiently, and the retries ran out before it recovered.
    /// A request that meets one is answered `503` with `Retry-After`, not
    /// `500`: trying again later may well work.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Overloaded { .. } => true,
            Self::Backend { source, .. } => !matches!(classify(source), Class::Permanent),
            _ => false,
        }
    }

    pub(crate) fn backend(key: &str, source: object_store::Error, attempts: u32) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Self::NotFound {
                key: key.to_owned(),
            },
            source => Self::Backend {
                key: key.to_owned(),
                attempts,
                source: Arc::new(source),
            },
        }
    }

    pub(crate) fn job(key: &str, error: JobError<BackendError>) -> Self {
        match error {
            JobError::Failed { source, attempts } => Self::backend(key, source.0, attempts),
            JobError::Overloaded { retry_after } => Self::Overloaded { retry_after },
            JobError::Unavailable { retry_after } => Self::Unavailable { retry_after },
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
        classify(&self.0)
    }
}

fn classify(error: &object_store::Error) -> Class {
    use object_store::Error as E;
    match error {
        // Local and in-memory stores fail only for reasons that do not go
        // away by themselves (no space, no permission).
        E::Generic { store, .. } if is_local(store) => Class::Permanent,
        E::Generic { source, .. } => classify_remote(source.as_ref()),
        _ => Class::Permanent,
    }
}

/// Classifies a failed call to a remote store by the HTTP status it got or,
/// when it got none, by what went wrong on the connection.
///
/// `object_store` keeps its request error type private, so the status is
/// read from the one message that carries it ("... status code: 503 ...");
/// transport failures are its public [`HttpError`]. S3 can also answer
/// `200 OK` with an error document, reported as "error response: <body>",
/// whose `<Code>` tells a throttle from an internal error.
///
/// [`HttpError`]: object_store::client::HttpError
fn classify_remote(error: &(dyn std::error::Error + 'static)) -> Class {
    use object_store::client::{HttpError, HttpErrorKind};
    let throttled = Class::Throttled { retry_after: None };
    let transient = Class::Transient { retry_after: None };
    for error in sources(error) {
        if let Some(answer) = error.downcast_ref::<StatusError>() {
            return class_of_status(answer.status);
        }
        if let Some(http) = error.downcast_ref::<HttpError>() {
            return match http.kind() {
                // A backend too busy to answer in time is overloaded.
                HttpErrorKind::Timeout => throttled,
                _ => transient,
            };
        }
        let text = error.to_string();
        if let Some(status) = status_in(&text) {
            return class_of_status(status);
        }
        if text.contains("<Code>SlowDown</Code>") {
            return throttled;
        }
        if text.contains("<Code>InternalError</Code>") {
            return transient;
        }
    }
    transient
}

/// The class of a backend's answer with a non-2xx `status`.
fn class_of_status(status: u16) -> Class {
    match status {
        429 | 503 => Class::Throttled { retry_after: None },
        408 | 500 | 502 | 504 => Class::Transient { retry_after: None },
        // Other statuses say the request itself is wrong (a bad checksum,
        // a missing bucket, refused credentials).
        _ => Class::Permanent,
    }
}

/// Whether a failed ranged GET may be the backend refusing the range: a
/// `416`, a `200` with the whole object instead of the range (S3 and moto
/// answer so for an empty object), an answer that `object_store` finds
/// outside the object (Azurite's to a range past the end) or cannot parse
/// (`Content-Range: bytes 0--1/0`, from Azurite and fake-gcs-server for
/// an empty object), or a local
/// store's invalid range. The object's size, learned by one more call,
/// then decides. `object_store` reports none of them in a public type,
/// so the remote ones are read from their messages.
pub(crate) fn refuses_range(error: &object_store::Error) -> bool {
    const REFUSALS: [&str; 3] = [
        "non-partial response",
        "Wanted range starting at",
        "CONTENT_RANGE header",
    ];
    match error {
        // A range the store does not take (Azure: suffixes).
        object_store::Error::NotSupported { .. } => true,
        object_store::Error::Generic { store, .. } if is_local(store) => true,
        object_store::Error::Generic { source, .. } => sources(source.as_ref()).any(|e| {
            let text = e.to_string();
            status_in(&text) == Some(416) || REFUSALS.iter().any(|refusal| text.contains(refusal))
        }),
        _ => false,
    }
}

/// Whether `store` is one of `object_store`'s stores on this machine.
fn is_local(store: &str) -> bool {
    matches!(store, "LocalFileSystem" | "InMemory")
}

/// `error` and its sources, outermost first.
pub fn sources<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| error.source())
}

/// S3 error codes that concern the whole store or its credentials, not one
/// object.
const STORE_WIDE_CODES: [&str; 7] = [
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "NoSuchBucket",
    "AllAccessDisabled",
];

/// Whether a permanent `error` concerns the whole store (see
/// [`Error::rejects_object`]).
fn store_wide(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    let E::Generic { store, source } = error else {
        return false;
    };
    if is_local(store) {
        return true;
    }
    let is_store_wide_code = |text: &str| {
        (STORE_WIDE_CODES.iter()).any(|code| text.contains(&format!("<Code>{code}</Code>")))
    };
    sources(source.as_ref()).any(|error| {
        if let Some(answer) = error.downcast_ref::<StatusError>() {
            return answer.status == 401 || is_store_wide_code(&answer.body);
        }
        let text = error.to_string();
        status_in(&text) == Some(401) || is_store_wide_code(&text)
    })
}

/// The HTTP status in `object_store`'s message for a non-2xx response.
fn status_in(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}

/// A backend's answer with a non-2xx status, to a call corral makes
/// itself (see [`crate::backend::s3_uploads`]): classified by its status,
/// where `object_store`'s own answers can only be read from their text.
#[derive(Debug, thiserror::Error)]
#[error("{call}: the store answered {status}: {body}")]
pub(crate) struct StatusError {
    pub(crate) call: &'static str,
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// `error: cause: cause`: an error and its sources on one line, for logs
/// and messages to people, each cause once. Many errors already say their
/// source in their own message (`spool journal: {0}`), and printing the
/// chain as it is would repeat it.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The storage layer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(message: &str) -> BackendError {
        BackendError(object_store::Error::Generic {
            store: "S3",
            source: message.to_owned().into(),
        })
    }

    #[test]
    fn remote_errors_are_classified_by_their_status() {
        let status = |code: &str| {
            generic(&format!(
                "Error performing PUT http://h/b/503/k in 1s - Server returned non-2xx \
                 status code: {code}: <Error/>"
            ))
            .classify()
        };
        // The key in the URL contains "503"; only the status counts.
        assert_eq!(status("404 Not Found"), Class::Permanent);
        assert!(matches!(
            status("503 Service Unavailable"),
            Class::Throttled { .. }
        ));
        assert!(matches!(
            status("429 Too Many Requests"),
            Class::Throttled { .. }
        ));
        assert!(matches!(
            status("500 Internal Server Error"),
            Class::Transient { .. }
        ));
        assert!(matches!(status("502 Bad Gateway"), Class::Transient { .. }));
        assert_eq!(status("400 Bad Request"), Class::Permanent);
        assert_eq!(status("403 Forbidden"), Class::Permanent);
    }

    #[test]
    fn error_documents_and_transport_failures_are_classified() {
        let slow = generic("Server returned error response: <Error><Code>SlowDown</Code></Error>");
        assert!(matches!(slow.classify(), Class::Throttled { .. }));
        let internal =
            generic("Server returned error response: <Error><Code>InternalError</Code></Error>");
        assert!(matches!(internal.classify(), Class::Transient { .. }));

        use object_store::client::{HttpError, HttpErrorKind};
        let http = |kind| {
            BackendError(object_store::Error::Generic {
                store: "S3",
                source: Box::new(HttpError::new(kind, std::io::Error::other("cut"))),
            })
            .classify()
        };
        assert!(matches!(
            http(HttpErrorKind::Timeout),
            Class::Throttled { .. }
        ));
        assert!(matches!(
            http(HttpErrorKind::Connect),
            Class::Transient { .. }
        ));
        let local = BackendError(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: "no space left on device".into(),
        });
        assert_eq!(local.classify(), Class::Permanent);
    }

    #[test]
    fn only_refusals_of_the_object_itself_reject_it() {
        let backend = |source| Error::Backend {
            key: "k".into(),
            attempts: 1,
            source: Arc::new(source),
        };
        let s3 = |text: &str| {
            backend(object_store::Error::Generic {
                store: "S3",
                source: text.to_owned().into(),
            })
        };
        let refused = |code: &str, status: &str| {
            s3(&format!(
                "Server returned non-2xx status code: {status}: \
                 <Error><Code>{code}</Code></Error>"
            ))
        };
        assert!(refused("AccessDenied", "403 Forbidden").rejects_object());
        assert!(refused("InvalidDigest", "400 Bad Request").rejects_object());
        assert!(refused("EntityTooLarge", "400 Bad Request").rejects_object());
        for (code, status) in [
            ("InvalidAccessKeyId", "403 Forbidden"),
            ("SignatureDoesNotMatch", "403 Forbidden"),
            ("ExpiredToken", "400 Bad Request"),
            ("NoSuchBucket", "404 Not Found"),
            ("Unauthorized", "401 Unauthorized"),
            ("SlowDown", "503 Slow Down"),
            ("InternalError", "500 Internal Server Error"),
        ] {
            assert!(!refused(code, status).rejects_object(), "{code}");
        }
        let local = backend(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: "no space left on device".into(),
        });
        assert!(!local.rejects_object());
        let invalid = Error::InvalidKey {
            key: "../x".into(),
            reason: "traversal",
        };
        assert!(invalid.rejects_object());
        assert!(!Error::Cancelled.rejects_object());
    }
}
