//! [`ApiError`]: every way a request can fail, and the one place that turns
//! each into an HTTP answer.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use corral_store::error_chain;
use serde::Serialize;

use crate::admission::refusal::{BACKEND_RETRY_AFTER, Refusal};
use crate::body::BodyError;

/// Why a request failed. A 4xx says exactly what was wrong with the request;
/// a 5xx logs its cause and tells the client only that the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is not what the route expects (a malformed multipart
    /// body, a bad query parameter).
    #[error("{0}")]
    BadRequest(String),

    /// A key, prefix or cursor breaks the key rules.
    #[error("{0}")]
    InvalidKey(#[source] corral_store::Error),

    /// The body is not `multipart/form-data`.
    #[error("{0}")]
    UnsupportedMediaType(String),

    /// No object has this key (or it belongs to another tenant).
    #[error("no file with key {0:?}")]
    NotFound(String),

    /// No job of the tenant has this id.
    #[error("no job with id {0:?}")]
    NoJob(String),

    /// No route has this path.
    #[error("no route for {0}")]
    NoRoute(String),

    /// The route exists, not with this method.
    #[error(
        "{method} is not allowed on {path}, which takes {allowed}{}",
        hint.map(|hint| format!(": {hint}")).unwrap_or_default()
    )]
    MethodNotAllowed {
        /// The method the request used.
        method: String,
        /// The request's path.
        path: String,
        /// The methods the route takes, as the `Allow` header lists them.
        allowed: &'static str,
        /// What to do instead, when the method says what the client meant
        /// (a `PUT` meant to upload).
        hint: Option<&'static str>,
    },

    /// The query string has a parameter the route does not take: refused
    /// rather than ignored, so that a misspelt `prefix` does not put files
    /// where the client did not mean them.
    #[error(
        "unknown query parameter {name:?}{}; {route} takes {}",
        did_you_mean(name, accepted),
        list(accepted, "no query parameter")
    )]
    UnknownParameter {
        /// The parameter as given.
        name: String,
        /// The route, as `METHOD /path`.
        route: &'static str,
        /// The parameters it takes.
        accepted: &'static [&'static str],
    },

    /// An upload's form has a text field it does not take.
    #[error(
        "unknown form field {name:?}{}; the upload form takes {} and file parts, each \
         with a filename (curl -F file=@PATH)",
        did_you_mean(name, accepted),
        list(accepted, "no text field")
    )]
    UnknownField {
        /// The field's name as given.
        name: String,
        /// The text fields the form takes.
        accepted: &'static [&'static str],
    },

    /// hyper could not parse the request line or a header (a raw space in
    /// the path, a control character, a header name that is not a token);
    /// see [`crate::serve`].
    #[error(
        "the request line or a header could not be parsed: percent-encode spaces and other \
         special characters in the path and query (a space is %20), and check the method, \
         the HTTP version and the header names"
    )]
    MalformedHead,

    /// The request target is longer than hyper takes.
    #[error("the request's path and query are too long: send long data in the body")]
    UriTooLong,

    /// The request line and headers are larger than the limit.
    #[error(
        "the request line and headers are larger than {limit} bytes: send large data in the \
         body, not in headers or the URL"
    )]
    HeadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },

    /// One file is larger than the limit.
    #[error("larger than the limit of {limit} bytes")]
    FileTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },

    /// The whole request body is larger than the limit.
    #[error("the batch is larger than the limit of {limit} bytes")]
    BatchTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },

    /// An asynchronous batch larger than all the spool may ever hold: no
    /// retry can succeed.
    #[error(
        "this asynchronous batch of {size} bytes is larger than the {limit} bytes the spool \
         may hold for it (--spool-max, or the tenant's max_spooled_bytes), so it can never be \
         accepted: send smaller batches, or send it without Prefer: respond-async to have it \
         stored while you wait"
    )]
    TooLargeForSpool {
        /// The batch's size (its `Content-Length`).
        size: u64,
        /// The most the spool may hold for it.
        limit: u64,
    },

    /// The batch has more files than the limit.
    #[error("the batch has more than {limit} files")]
    TooManyFiles {
        /// The limit.
        limit: usize,
    },

    /// The client sent nothing for too long.
    #[error("the client sent nothing for {} s", timeout.as_secs())]
    SlowClient {
        /// How long the server waited.
        timeout: Duration,
    },

    /// The client went away before the request was read; nobody reads the
    /// answer, it only shows in the logs.
    #[error("the client closed the connection")]
    ClientGone,

    /// The requested range lies outside the object.
    #[error("range not satisfiable: the file has {size} bytes")]
    RangeNotSatisfiable {
        /// The object's size.
        size: u64,
    },

    /// The request has no valid bearer token.
    #[error("{reason}")]
    Unauthorized {
        /// What is wrong, for the client.
        reason: &'static str,
        /// Whether a token was given (and is not known).
        token_given: bool,
    },

    /// New work was refused: the server is busy, or cannot work now (see
    /// [`crate::admission`]).
    #[error("{0}")]
    Refused(Refusal),

    /// The local spool or its journal failed.
    #[error("spooling the upload failed")]
    Spool(#[source] corral_store::SpoolError),

    /// The request's work was cancelled before it finished: the server is
    /// stopping and its grace period ran out. Answered as `shutting_down`,
    /// like a request refused at the door: for the client, the same cause
    /// and the same remedy.
    #[error(
        "the server is stopping: this request was still running when its grace period \
         ended, and was cancelled; nothing of it was kept, send it again"
    )]
    Cancelled,

    /// The storage backend failed.
    #[error("storing or reading failed")]
    Storage(#[source] corral_store::Error),

    /// The handler panicked.
    #[error("the server failed")]
    Panic,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_)
            | Self::InvalidKey(_)
            | Self::UnknownParameter { .. }
            | Self::UnknownField { .. }
            | Self::MalformedHead => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound(_) | Self::NoJob(_) | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::FileTooLarge { .. }
            | Self::BatchTooLarge { .. }
            | Self::TooLargeForSpool { .. }
            | Self::TooManyFiles { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::SlowClient { .. } => StatusCode::REQUEST_TIMEOUT,
            // Not a standard status; the client is gone and never sees it.
            Self::ClientGone => StatusCode::from_u16(499).expect("499 is a valid status"),
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Refused(refusal) => refusal.status(),
            Self::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(_) | Self::Spool(_) | Self::Panic => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::InvalidKey(_) => "invalid_key",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::NotFound(_) | Self::NoJob(_) => "not_found",
            Self::NoRoute(_) => "no_route",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::UnknownParameter { .. } => "unknown_parameter",
            Self::UnknownField { .. } => "unknown_field",
            Self::MalformedHead => "malformed_request",
            Self::UriTooLong => "uri_too_long",
            Self::HeadTooLarge { .. } => "headers_too_large",
            Self::FileTooLarge { .. } => "file_too_large",
            Self::BatchTooLarge { .. } | Self::TooLargeForSpool { .. } => "batch_too_large",
            Self::TooManyFiles { .. } => "too_many_files",
            Self::SlowClient { .. } => "slow_client",
            Self::ClientGone => "client_gone",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Refused(refusal) => refusal.code(),
            Self::Spool(_) => "spool_error",
            Self::Cancelled => "shutting_down",
            Self::Storage(_) => "storage_error",
            Self::Panic => "internal_error",
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::Idle(timeout) => Self::SlowClient { timeout },
            BodyError::Transport(_) => Self::ClientGone,
            error @ (BodyError::Malformed(_) | BodyError::Incomplete(_)) => {
                Self::BadRequest(error.to_string())
            }
        }
    }
}

impl From<corral_store::SpoolError> for ApiError {
    fn from(error: corral_store::SpoolError) -> Self {
        match Refusal::of_spool(error) {
            Ok(refusal) => Self::Refused(refusal),
            Err(error) => Self::Spool(error),
        }
    }
}

impl From<corral_store::Error> for ApiError {
    fn from(error: corral_store::Error) -> Self {
        use corral_store::Error as E;
        match error {
            E::NotFound { key } => Self::NotFound(key),
            E::InvalidKey { .. } => Self::InvalidKey(error),
            E::RangeNotSatisfiable { size, .. } => Self::RangeNotSatisfiable { size },
            E::Overloaded { retry_after } => Self::Refused(Refusal::QueueFull { retry_after }),
            E::Unavailable { retry_after } => {
                Self::Refused(Refusal::BackendUnavailable { retry_after })
            }
            E::Cancelled => Self::Cancelled,
            error if error.is_transient() => {
                tracing::warn!(error = %error_chain(&error), "a backend call failed transiently until its retries ran out");
                Self::Refused(Refusal::BackendUnavailable {
                    retry_after: BACKEND_RETRY_AFTER,
                })
            }
            error => Self::Storage(error),
        }
    }
}

/// An error of a batch upload; when it is tied to one file, the answer
/// names the file.
#[derive(Debug)]
pub(crate) struct FileError {
    pub(crate) name: Option<String>,
    pub(crate) error: ApiError,
}

impl From<ApiError> for FileError {
    fn from(error: ApiError) -> Self {
        Self { name: None, error }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
}

/// `, did you mean "prefix"?` when `name` is one or two edits away from an
/// accepted name (a typo), else nothing.
fn did_you_mean(name: &str, accepted: &[&str]) -> String {
    accepted
        .iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| format!(" (did you mean {candidate:?}?)"))
        .unwrap_or_default()
}

/// `"a", "b"`, or `none` for an empty list.
fn list(names: &[&str], none: &str) -> String {
    match names {
        [] => none.to_owned(),
        names => (names.iter())
            .map(|name| format!("{name:?}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The Levenshtein distance between `a` and `b`, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The JSON body of `error`'s answer.
pub(crate) fn body(error: &ApiError, file: Option<&str>) -> Vec<u8> {
    let message = match file {
        Some(file) => format!("file {file:?}: {error}"),
        None => error.to_string(),
    };
    let body = Body {
        error: Detail {
            code: error.code(),
            message,
            file,
        },
    };
    serde_json::to_vec(&body).expect("the error body serializes")
}

/// `error`'s whole answer as written on a socket, for the answers made
/// without hyper (see [`crate::serve`]): its status, `lines` (header lines,
/// each ending in CRLF), `Retry-After` for a refusal, and the JSON body; it
/// closes the connection.
pub(crate) fn raw_answer(error: &ApiError, lines: &str) -> Vec<u8> {
    let body = body(error, None);
    let status = error.status();
    let retry_after = match error {
        ApiError::Refused(refusal) => {
            format!("retry-after: {}\r\n", refusal.retry_after_seconds())
        }
        _ => String::new(),
    };
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n{retry_after}{lines}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or_default(),
        body.len(),
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

fn respond(error: &ApiError, file: Option<&str>) -> Response {
    let status = error.status();
    match error {
        // Expected while stopping or while the backend is down, and
        // counted by reason in the metrics: not an error of the server.
        ApiError::Refused(_) | ApiError::Cancelled => {
            tracing::debug!(code = error.code(), "request refused: {error}");
        }
        error if status.is_server_error() => {
            tracing::error!(error = %error_chain(error), file, "request failed");
        }
        _ => {}
    }
    let content_type = HeaderValue::from_static("application/json");
    let mut response = (
        status,
        [(header::CONTENT_TYPE, content_type)],
        body(error, file),
    )
        .into_response();
    let headers = response.headers_mut();
    match error {
        ApiError::RangeNotSatisfiable { size } => {
            headers.insert(header::CONTENT_RANGE, number(&format!("bytes */{size}")));
        }
        ApiError::Unauthorized { token_given, .. } => {
            // RFC 6750: the scheme, and `invalid_token` when one was given.
            let challenge = if *token_given {
                r#"Bearer realm="corral", error="invalid_token""#
            } else {
                r#"Bearer realm="corral""#
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        ApiError::Refused(refusal) => {
            let seconds = refusal.retry_after_seconds().to_string();
            headers.insert(header::RETRY_AFTER, number(&seconds));
            if *refusal == Refusal::ShuttingDown {
                // Whatever comes next on this connection would be refused
                // too.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // For the metrics middleware to count, by reason.
            response.extensions_mut().insert(refusal.clone());
        }
        ApiError::Cancelled => {
            headers.insert(header::RETRY_AFTER, number("1"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

/// A header value of digits and ASCII punctuation.
fn number(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("digits make a valid header value")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        respond(&self, None)
    }
}

impl IntoResponse for FileError {
    fn into_response(self) -> Response {
        respond(&self.error, self.name.as_deref())
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_name_it_is_close_to() {
        const ACCEPTED: &[&str] = &["prefix", "limit", "cursor"];
        assert_eq!(
            did_you_mean("perfix", ACCEPTED),
            " (did you mean \"prefix\"?)"
        );
        assert_eq!(
            did_you_mean("prefx", ACCEPTED),
            " (did you mean \"prefix\"?)"
        );
        assert_eq!(did_you_mean("limt", ACCEPTED), " (did you mean \"limit\"?)");
        assert_eq!(did_you_mean("page", ACCEPTED), "");
        assert_eq!(did_you_mean("x", &[]), "");
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn unknown_names_are_named_with_what_is_accepted() {
        let error = ApiError::UnknownParameter {
            name: "perfix".into(),
            route: "POST /api/files",
            accepted: &["prefix"],
        };
        assert_eq!(
            error.to_string(),
            "unknown query parameter \"perfix\" (did you mean \"prefix\"?); \
             POST /api/files takes \"prefix\""
        );
        let error = ApiError::UnknownParameter {
            name: "v".into(),
            route: "GET /api/jobs/{id}",
            accepted: &[],
        };
        assert!(
            error.to_string().ends_with("takes no query parameter"),
            "{error}"
        );
    }
}
