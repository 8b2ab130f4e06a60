//! [`TusError`]: every refusal of the resumable-upload protocols, with its
//! status and its stable code.

use axum::http::StatusCode;

/// Why a resumable-upload request is refused. Each says which header broke
/// which rule; [`Reply::refused`](super::Reply::refused) turns it into the
/// answer, in corral's JSON error shape plus the protocol's headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TusError {
    /// Neither `Tus-Resumable: 1.0.0` nor a served
    /// `Upload-Draft-Interop-Version` (`412`, with `Tus-Version`).
    #[error("{}", unsupported_version(tus_resumable.as_deref(), interop.as_deref()))]
    UnsupportedVersion {
        /// `Tus-Resumable` as sent, if it was.
        tus_resumable: Option<String>,
        /// `Upload-Draft-Interop-Version` as sent, if it was.
        interop: Option<String>,
    },

    /// `Upload-Offset` is missing from an append.
    #[error("Upload-Offset is missing: an append names the offset its bytes start at")]
    MissingOffset,

    /// `Upload-Offset` is not a non-negative integer.
    #[error("Upload-Offset is {value:?}; it must be a non-negative integer of bytes")]
    InvalidOffset {
        /// The value as sent.
        value: String,
    },

    /// The append's offset is not the upload's (`409`). The answer carries
    /// the server's offset.
    #[error(
        "Upload-Offset is {given} but the upload has {expected} bytes: send HEAD for the \
         offset and resume from there"
    )]
    OffsetMismatch {
        /// The upload's offset, where the next bytes must start.
        expected: u64,
        /// The offset the request gave.
        given: u64,
    },

    /// An append's `Content-Type` is not the protocol's (`415`).
    #[error(
        "Content-Type is {}; an append must be sent as {expected}",
        given.as_deref().map_or_else(|| "missing".to_owned(), |given| format!("{given:?}"))
    )]
    UnsupportedMediaType {
        /// `Content-Type` as sent, if it was.
        given: Option<String>,
        /// The type the protocol requires.
        expected: &'static str,
    },

    /// `Upload-Length` is not a non-negative integer.
    #[error("Upload-Length is {value:?}; it must be a non-negative integer of bytes")]
    InvalidLength {
        /// The value as sent.
        value: String,
    },

    /// `Upload-Defer-Length` is present but not `1`.
    #[error("Upload-Defer-Length is {value:?}; its only value is 1")]
    InvalidDeferLength {
        /// The value as sent.
        value: String,
    },

    /// A tus creation with both `Upload-Length` and `Upload-Defer-Length`.
    #[error("Upload-Length and Upload-Defer-Length are both sent; send exactly one")]
    LengthAndDeferLength,

    /// A tus creation with neither `Upload-Length` nor
    /// `Upload-Defer-Length: 1`.
    #[error("the creation has neither Upload-Length nor Upload-Defer-Length: 1; send exactly one")]
    MissingLength,

    /// Two lengths in one request disagree (the draft: `Upload-Length`
    /// against `Content-Length` with `Upload-Complete: ?1`).
    #[error(
        "Upload-Length is {declared} but the request completes the upload at {implied} bytes \
         (its offset plus Content-Length); the two must agree"
    )]
    InconsistentLength {
        /// `Upload-Length`.
        declared: u64,
        /// Offset plus `Content-Length`.
        implied: u64,
    },

    /// The request gives a length other than the one the upload has.
    #[error(
        "the request gives a length of {given} bytes but the upload's length is {length}; it cannot change"
    )]
    LengthChanged {
        /// The upload's length.
        length: u64,
        /// The length the request gave.
        given: u64,
    },

    /// The request gives a length below what the upload already holds.
    #[error("the request gives a length of {given} bytes but the upload already holds {offset}")]
    LengthBelowOffset {
        /// The upload's offset.
        offset: u64,
        /// The length the request gave.
        given: u64,
    },

    /// The upload would be larger than the server takes (`413`).
    #[error("the upload's length of {length} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The length declared, or reached by the body.
        length: u64,
        /// [`TusConfig::max_size`](super::TusConfig::max_size).
        max: u64,
    },

    /// The body would carry the upload past its declared length (`413`).
    #[error("the body would take the upload to {end} bytes, past its Upload-Length of {length}")]
    ExceedsLength {
        /// The upload's length.
        length: u64,
        /// Where the body would end.
        end: u64,
    },

    /// `Upload-Checksum` names an algorithm not served.
    #[error(
        "Upload-Checksum uses {name:?}; this server takes sha1, sha256 and md5 \
         (Tus-Checksum-Algorithm)"
    )]
    UnsupportedChecksumAlgorithm {
        /// The algorithm's name as sent.
        name: String,
    },

    /// `Upload-Checksum` is not `<algorithm> <base64 digest>`.
    #[error("Upload-Checksum is {value:?}: {rule}")]
    InvalidChecksum {
        /// The value as sent.
        value: String,
        /// What is wrong with it.
        rule: &'static str,
    },

    /// `Trailer: Upload-Checksum` was announced but no such trailer came.
    #[error("the request announced Trailer: Upload-Checksum but sent no Upload-Checksum trailer")]
    MissingChecksumTrailer,

    /// The body's digest is not the one `Upload-Checksum` gave (`460`). The
    /// bytes are discarded and the offset stays where it was.
    #[error(
        "the body's {algorithm} digest does not match Upload-Checksum: the bytes were \
         discarded and the offset is unchanged; send them again"
    )]
    ChecksumMismatch {
        /// The algorithm, as `Upload-Checksum` names it.
        algorithm: &'static str,
    },

    /// `Upload-Metadata` breaks its grammar.
    #[error("Upload-Metadata is not comma-separated `key base64value` pairs: {reason}")]
    InvalidMetadata {
        /// What is wrong, naming the pair.
        reason: String,
    },

    /// `Upload-Concat` breaks its grammar or its rules.
    #[error("Upload-Concat is {value:?}: {reason}")]
    InvalidConcat {
        /// The value as sent.
        value: String,
        /// What is wrong.
        reason: String,
    },

    /// A final upload names an upload that is not partial.
    #[error(
        "upload {id:?} is not a partial upload (Upload-Concat: partial); only partial uploads \
         can be concatenated"
    )]
    NotPartial {
        /// The upload's id.
        id: String,
    },

    /// A final upload names a partial upload that is not complete.
    #[error("partial upload {id:?} is not complete; finish it before creating the final upload")]
    PartialIncomplete {
        /// The upload's id.
        id: String,
    },

    /// An append to a final upload (`403`): it is made of its partial
    /// uploads and takes no bytes of its own.
    #[error("the upload is a final upload (Upload-Concat: final); it takes no appends")]
    ModifyFinal,

    /// `Upload-Complete` is not a structured-field boolean.
    #[error("Upload-Complete is {value:?}; it must be ?1 or ?0")]
    InvalidUploadComplete {
        /// The value as sent.
        value: String,
    },

    /// An append to an upload already complete (draft).
    #[error("the upload is already complete; it takes no more bytes")]
    AlreadyComplete,

    /// No upload has this id (`404`).
    #[error("no upload with id {id:?}")]
    NotFound {
        /// The id asked for.
        id: String,
    },

    /// The upload was terminated or expired (`410`): start a new one.
    #[error("upload {id:?} was terminated or has expired; create a new upload")]
    Gone {
        /// The id asked for.
        id: String,
    },

    /// A newer request for the upload stopped this one (`423`): the client
    /// resumed elsewhere, and this answer is for the logs.
    #[error("a newer request for upload {id:?} took it over; this one was stopped")]
    Superseded {
        /// The upload's id.
        id: String,
    },

    /// Another corral instance is writing the upload, or took it over as
    /// this request began (`423`, as tusd answers a locked upload; tus
    /// clients retry it). With `Retry-After` when the lease's expiry is
    /// known: the most to wait if its holder died.
    #[error(
        "upload {id:?} is being written by another request; send HEAD for its offset and \
         resume from there{}",
        retry_after.map(|s| format!(" (it is free in {s} s at the latest)")).unwrap_or_default()
    )]
    Locked {
        /// The upload's id.
        id: String,
        /// Seconds until the lease expires, if known.
        retry_after: Option<u64>,
    },
}

impl TusError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedVersion { .. } => StatusCode::PRECONDITION_FAILED,
            Self::MissingOffset
            | Self::InvalidOffset { .. }
            | Self::InvalidLength { .. }
            | Self::InvalidDeferLength { .. }
            | Self::LengthAndDeferLength
            | Self::MissingLength
            | Self::InconsistentLength { .. }
            | Self::LengthChanged { .. }
            | Self::LengthBelowOffset { .. }
            | Self::UnsupportedChecksumAlgorithm { .. }
            | Self::InvalidChecksum { .. }
            | Self::MissingChecksumTrailer
            | Self::InvalidMetadata { .. }
            | Self::InvalidConcat { .. }
            | Self::NotPartial { .. }
            | Self::PartialIncomplete { .. }
            | Self::InvalidUploadComplete { .. }
            | Self::AlreadyComplete => StatusCode::BAD_REQUEST,
            Self::OffsetMismatch { .. } => StatusCode::CONFLICT,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge { .. } | Self::ExceedsLength { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // tus checksum extension: "460 Checksum Mismatch".
            Self::ChecksumMismatch { .. } => {
                StatusCode::from_u16(460).expect("460 is in the valid status range")
            }
            Self::ModifyFinal => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Gone { .. } => StatusCode::GONE,
            Self::Superseded { .. } | Self::Locked { .. } => StatusCode::LOCKED,
        }
    }

    /// The stable, machine-readable code in the JSON body.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::MissingOffset | Self::InvalidOffset { .. } => "invalid_offset",
            Self::OffsetMismatch { .. } => "offset_mismatch",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::InvalidLength { .. } | Self::MissingLength => "invalid_length",
            Self::InvalidDeferLength { .. } => "invalid_defer_length",
            Self::LengthAndDeferLength => "ambiguous_length",
            Self::InconsistentLength { .. } => "inconsistent_length",
            Self::LengthChanged { .. } => "length_changed",
            Self::LengthBelowOffset { .. } => "length_below_offset",
            Self::TooLarge { .. } => "upload_too_large",
            Self::ExceedsLength { .. } => "exceeds_length",
            Self::UnsupportedChecksumAlgorithm { .. } => "unsupported_checksum_algorithm",
            Self::InvalidChecksum { .. } => "invalid_checksum",
            Self::MissingChecksumTrailer => "missing_checksum_trailer",
            Self::ChecksumMismatch { .. } => "checksum_mismatch",
            Self::InvalidMetadata { .. } => "invalid_metadata",
            Self::InvalidConcat { .. } => "invalid_concat",
            Self::NotPartial { .. } => "not_partial",
            Self::PartialIncomplete { .. } => "partial_incomplete",
            Self::ModifyFinal => "final_upload",
            Self::InvalidUploadComplete { .. } => "invalid_upload_complete",
            Self::AlreadyComplete => "already_complete",
            Self::NotFound { .. } => "not_found",
            Self::Gone { .. } => "gone",
            Self::Superseded { .. } => "superseded",
            Self::Locked { .. } => "locked",
        }
    }
}

fn unsupported_version(tus_resumable: Option<&str>, interop: Option<&str>) -> String {
    match (tus_resumable, interop) {
        (_, Some(interop)) => format!(
            "Upload-Draft-Interop-Version is {interop:?}; this server speaks interop versions \
             5, 6 and 8 of the IETF resumable uploads draft, and tus 1.0.0"
        ),
        (Some(tus), None) => {
            format!("Tus-Resumable is {tus:?}; this server speaks tus 1.0.0 only")
        }
        (None, None) => "the request has no Tus-Resumable header: send Tus-Resumable: 1.0.0 \
                         (tus), or Upload-Draft-Interop-Version: 5, 6 or 8 (IETF resumable \
                         uploads draft)"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_and_code() {
        let cases = [
            (TusError::MissingOffset, 400, "invalid_offset"),
            (
                TusError::InvalidOffset { value: "-1".into() },
                400,
                "invalid_offset",
            ),
            (
                TusError::OffsetMismatch {
                    expected: 5,
                    given: 9,
                },
                409,
                "offset_mismatch",
            ),
            (
                TusError::UnsupportedMediaType {
                    given: None,
                    expected: "application/offset+octet-stream",
                },
                415,
                "unsupported_media_type",
            ),
            (TusError::MissingLength, 400, "invalid_length"),
            (TusError::LengthAndDeferLength, 400, "ambiguous_length"),
            (
                TusError::LengthChanged {
                    length: 1,
                    given: 2,
                },
                400,
                "length_changed",
            ),
            (
                TusError::TooLarge { length: 2, max: 1 },
                413,
                "upload_too_large",
            ),
            (
                TusError::ExceedsLength { length: 1, end: 2 },
                413,
                "exceeds_length",
            ),
            (
                TusError::ChecksumMismatch { algorithm: "sha1" },
                460,
                "checksum_mismatch",
            ),
            (
                TusError::UnsupportedChecksumAlgorithm {
                    name: "crc32".into(),
                },
                400,
                "unsupported_checksum_algorithm",
            ),
            (TusError::ModifyFinal, 403, "final_upload"),
            (TusError::NotPartial { id: "a".into() }, 400, "not_partial"),
            (
                TusError::PartialIncomplete { id: "a".into() },
                400,
                "partial_incomplete",
            ),
            (TusError::AlreadyComplete, 400, "already_complete"),
            (TusError::NotFound { id: "a".into() }, 404, "not_found"),
            (TusError::Gone { id: "a".into() }, 410, "gone"),
            (TusError::Superseded { id: "a".into() }, 423, "superseded"),
            (
                TusError::Locked {
                    id: "a".into(),
                    retry_after: Some(3),
                },
                423,
                "locked",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.code(), code, "{error:?}");
        }
    }

    #[test]
    fn an_offset_mismatch_says_both_offsets_and_what_to_do() {
        let error = TusError::OffsetMismatch {
            expected: 100,
            given: 50,
        };
        assert_eq!(
            error.to_string(),
            "Upload-Offset is 50 but the upload has 100 bytes: send HEAD for the offset and \
             resume from there"
        );
    }

    #[test]
    fn a_wrong_content_type_names_the_one_required() {
        let missing = TusError::UnsupportedMediaType {
            given: None,
            expected: "application/offset+octet-stream",
        };
        assert_eq!(
            missing.to_string(),
            "Content-Type is missing; an append must be sent as application/offset+octet-stream"
        );
        let wrong = TusError::UnsupportedMediaType {
            given: Some("text/plain".into()),
            expected: "application/partial-upload",
        };
        assert_eq!(
            wrong.to_string(),
            "Content-Type is \"text/plain\"; an append must be sent as application/partial-upload"
        );
    }
}
