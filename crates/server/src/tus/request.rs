//! The typed requests: [`Creation`] (`POST`) and [`Append`] (`PATCH`), parsed
//! from headers, and the checks an append makes against the upload's state
//! ([`Append::check`]) and a final upload against its parts
//! ([`final_length`]).

use std::time::SystemTime;

use axum::http::HeaderMap;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};

use super::{ExpectedChecksum, Metadata, Protocol, TusConfig, TusError, UPLOADS_PATH, text};

/// The media type of a tus append and of creation-with-upload.
pub(crate) const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// The media type of a draft append, from interop 6 on.
pub(crate) const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// What an upload is to the concatenation extension (tus only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Concat {
    /// `Upload-Concat: partial`: a piece of a final upload to come.
    Partial,
    /// `Upload-Concat: final;URL1 URL2`: the concatenation of these partial
    /// uploads, by id, in order.
    Final(Vec<String>),
}

impl Concat {
    /// Parses `partial` or `final;` and a space-separated list of upload
    /// URLs, each absolute (`https://host/api/uploads/ID`) or a path
    /// (`/api/uploads/ID`).
    ///
    /// # Errors
    ///
    /// [`TusError::InvalidConcat`] for another value, an empty list, or a
    /// URL that is not an upload's.
    pub(crate) fn parse(value: &str) -> Result<Self, TusError> {
        let invalid = |reason: String| TusError::InvalidConcat {
            value: value.to_owned(),
            reason,
        };
        let value = value.trim();
        if value == "partial" {
            return Ok(Self::Partial);
        }
        let Some(urls) = value.strip_prefix("final;") else {
            return Err(invalid(
                "it must be `partial`, or `final;` and the partial uploads' URLs separated by \
                 spaces"
                    .to_owned(),
            ));
        };
        let ids = (urls.split(' ').filter(|url| !url.is_empty()))
            .map(|url| {
                upload_id(url).map(str::to_owned).ok_or_else(|| {
                    invalid(format!(
                        "{url:?} is not an upload's URL ({UPLOADS_PATH}/ID, absolute or a path)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() {
            return Err(invalid(
                "a final upload lists at least one partial upload".to_owned(),
            ));
        }
        Ok(Self::Final(ids))
    }

    /// The `Upload-Concat` value for a `HEAD` answer, with the partial
    /// uploads as paths.
    pub(crate) fn header_value(&self) -> String {
        match self {
            Self::Partial => "partial".to_owned(),
            Self::Final(ids) => {
                let urls: Vec<String> = (ids.iter())
                    .map(|id| format!("{UPLOADS_PATH}/{id}"))
                    .collect();
                format!("final;{}", urls.join(" "))
            }
        }
    }
}

/// The id in an upload's URL, absolute or a path; `None` for any other URL.
fn upload_id(url: &str) -> Option<&str> {
    let path = match url.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            &rest[rest.find('/')?..]
        }
        Some(_) => return None,
        None => url,
    };
    let id = path.strip_prefix(UPLOADS_PATH)?.strip_prefix('/')?;
    let id = id.strip_suffix('/').unwrap_or(id);
    (!id.is_empty() && !id.contains(['/', '?', '#'])).then_some(id)
}

/// A request to create an upload (`POST /api/uploads`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Creation {
    /// The upload's length, when known now. `None`: deferred (tus
    /// `Upload-Defer-Length: 1`, a draft creation without a length), a
    /// final upload (the sum of its parts, [`final_length`]), or a draft
    /// creation that [`completes`](Self::completes) without
    /// `Content-Length`, whose length is the body's.
    pub(crate) length: Option<u64>,
    /// `Upload-Metadata`; for the draft, also `filetype` from
    /// `Content-Type` and `filename` from `Content-Disposition` when the
    /// metadata does not give them.
    pub(crate) metadata: Metadata,
    /// `Upload-Concat` (tus only).
    pub(crate) concat: Option<Concat>,
    /// Whether the body is the upload's first bytes: tus creation-with-upload
    /// (`Content-Type: application/offset+octet-stream`), and every draft
    /// creation (its body may be empty).
    pub(crate) carries_data: bool,
    /// Draft `Upload-Complete: ?1`: the body is the whole upload, which is
    /// complete once it is stored. Always `false` for tus, where an upload
    /// is complete when its offset reaches its length.
    pub(crate) completes: bool,
    /// `Content-Length`, when sent.
    pub(crate) content_length: Option<u64>,
    /// The body's checksum, when the request carries data and gives one.
    pub(crate) checksum: Option<ExpectedChecksum>,
}

impl Creation {
    /// Reads a creation request's headers.
    ///
    /// # Errors
    ///
    /// `400` for a malformed or contradictory length, metadata, concat,
    /// checksum or `Upload-Complete`; `413` ([`TusError::TooLarge`],
    /// [`TusError::ExceedsLength`]) when the length or the body is over
    /// the limit or past the length.
    pub(crate) fn parse(
        protocol: Protocol,
        headers: &HeaderMap,
        config: &TusConfig,
    ) -> Result<Self, TusError> {
        let content_length = content_length(headers);
        let metadata = match text(headers, "upload-metadata") {
            Some(value) => Metadata::parse(value)?,
            None if headers.contains_key("upload-metadata") => {
                return Err(TusError::InvalidMetadata {
                    reason: "the header is not visible ASCII".to_owned(),
                });
            }
            None => Metadata::default(),
        };
        let creation = match protocol {
            Protocol::Tus => Self::tus(headers, content_length, metadata)?,
            Protocol::Draft(_) => Self::draft(headers, content_length, metadata)?,
        };
        if let Some(length) = creation.length {
            check_max(length, config)?;
        }
        if creation.carries_data
            && let Some(size) = content_length
        {
            check_room(0, size, creation.length, config)?;
        }
        Ok(creation)
    }

    fn tus(
        headers: &HeaderMap,
        content_length: Option<u64>,
        metadata: Metadata,
    ) -> Result<Self, TusError> {
        let concat_value = text(headers, "upload-concat");
        let concat = concat_value.map(Concat::parse).transpose()?;
        let carries_data = is_media_type(headers, OFFSET_OCTET_STREAM);
        let length = if let Some(Concat::Final(_)) = concat {
            let invalid = |reason: &str| TusError::InvalidConcat {
                value: concat_value.unwrap_or_default().to_owned(),
                reason: reason.to_owned(),
            };
            if headers.contains_key("upload-length") || headers.contains_key("upload-defer-length")
            {
                return Err(invalid(
                    "a final upload takes its length from its partial uploads: send neither \
                     Upload-Length nor Upload-Defer-Length",
                ));
            }
            if carries_data || content_length.is_some_and(|size| size > 0) {
                return Err(invalid(
                    "a final upload is made of its partial uploads and takes no body",
                ));
            }
            None
        } else {
            match (upload_length(headers)?, defer_length(headers)?) {
                (Some(_), true) => return Err(TusError::LengthAndDeferLength),
                (None, false) => return Err(TusError::MissingLength),
                (length, _) => length,
            }
        };
        let checksum = if carries_data {
            ExpectedChecksum::from_headers(headers)?
        } else {
            None
        };
        Ok(Self {
            length,
            metadata,
            concat,
            carries_data,
            completes: false,
            content_length,
            checksum,
        })
    }

    fn draft(
        headers: &HeaderMap,
        content_length: Option<u64>,
        mut metadata: Metadata,
    ) -> Result<Self, TusError> {
        if let Some(value) = text(headers, "upload-concat") {
            return Err(TusError::InvalidConcat {
                value: value.to_owned(),
                reason: "concatenation is a tus 1.0.0 extension; the IETF draft has none (send \
                         Tus-Resumable: 1.0.0 to use it)"
                    .to_owned(),
            });
        }
        let completes = upload_complete(headers)?;
        let declared = match (upload_length(headers)?, defer_length(headers)?) {
            (Some(_), true) => return Err(TusError::LengthAndDeferLength),
            (declared, _) => declared,
        };
        let implied = content_length.filter(|_| completes);
        let length = agree(declared, implied)?;
        if let Some(filetype) = text(headers, CONTENT_TYPE)
            .map(media_type)
            .filter(|essence| !is_transfer_type(essence))
        {
            metadata.insert_missing("filetype", filetype);
        }
        if let Some(filename) = text(headers, CONTENT_DISPOSITION).and_then(disposition_filename) {
            metadata.insert_missing("filename", filename);
        }
        Ok(Self {
            length,
            metadata,
            concat: None,
            carries_data: true,
            completes,
            content_length,
            checksum: ExpectedChecksum::from_headers(headers)?,
        })
    }

    /// The most bytes the creation's body may carry: up to the length, or
    /// to the limit when the length is not known.
    pub(crate) fn room(&self, config: &TusConfig) -> u64 {
        self.length.unwrap_or(config.max_size)
    }
}

/// A request to append to an upload (`PATCH /api/uploads/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Append {
    /// The protocol it speaks.
    pub(crate) protocol: Protocol,
    /// `Upload-Offset`: where the body's bytes start.
    pub(crate) offset: u64,
    /// The upload's length as this request gives it: `Upload-Length`
    /// (tus, once, on an upload whose length was deferred; the draft, any
    /// time), or for the draft the offset plus `Content-Length` when it
    /// completes the upload.
    pub(crate) length: Option<u64>,
    /// Draft `Upload-Complete: ?1`: the upload is complete once this body
    /// is stored, its length then the offset reached. Always `false` for
    /// tus.
    pub(crate) completes: bool,
    /// `Content-Length`, when sent.
    pub(crate) content_length: Option<u64>,
    /// The body's checksum, given or announced as a trailer.
    pub(crate) checksum: Option<ExpectedChecksum>,
}

/// What an append may do, once checked against its upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The length to record before storing the body: the request gives it
    /// and the upload had none.
    pub(crate) declare_length: Option<u64>,
    /// The most bytes the body may carry: to the length, or to the limit
    /// when the length is still unknown. A body that goes on past it is
    /// refused with [`TusError::ExceedsLength`] or [`TusError::TooLarge`].
    pub(crate) room: u64,
}

impl Append {
    /// Reads an append request's headers.
    ///
    /// # Errors
    ///
    /// `415` for the wrong `Content-Type` (tus: it must be
    /// `application/offset+octet-stream`; draft, interop 6 and 8:
    /// `application/partial-upload`); `400` for a missing or malformed
    /// `Upload-Offset`, a malformed `Upload-Length`, `Upload-Complete` or
    /// checksum, or lengths that disagree; `413` for a length over the
    /// limit.
    pub(crate) fn parse(
        protocol: Protocol,
        headers: &HeaderMap,
        config: &TusConfig,
    ) -> Result<Self, TusError> {
        let required = match protocol {
            Protocol::Tus => Some(OFFSET_OCTET_STREAM),
            Protocol::Draft(version) if version.requires_partial_upload_type() => {
                Some(PARTIAL_UPLOAD)
            }
            Protocol::Draft(_) => None,
        };
        if let Some(expected) = required.filter(|expected| !is_media_type(headers, expected)) {
            return Err(TusError::UnsupportedMediaType {
                given: text(headers, CONTENT_TYPE).map(str::to_owned),
                expected,
            });
        }
        let Some(offset) = headers.get("upload-offset") else {
            return Err(TusError::MissingOffset);
        };
        let offset = String::from_utf8_lossy(offset.as_bytes());
        let offset = integer(&offset).ok_or_else(|| TusError::InvalidOffset {
            value: offset.clone().into_owned(),
        })?;
        let content_length = content_length(headers);
        let declared = upload_length(headers)?;
        let (length, completes) = match protocol {
            Protocol::Tus => (declared, false),
            Protocol::Draft(_) => {
                let completes = upload_complete(headers)?;
                let implied = content_length
                    .filter(|_| completes)
                    .map(|size| offset.saturating_add(size));
                (agree(declared, implied)?, completes)
            }
        };
        if let Some(length) = length {
            check_max(length, config)?;
        }
        Ok(Self {
            protocol,
            offset,
            length,
            completes,
            content_length,
            checksum: ExpectedChecksum::from_headers(headers)?,
        })
    }

    /// Checks the append against the upload's state, before its body is
    /// read: the rules of tus core, creation-defer-length and
    /// concatenation, and of the draft's append.
    ///
    /// # Errors
    ///
    /// `403` [`TusError::ModifyFinal`] for a final upload; `409`
    /// [`TusError::OffsetMismatch`] when the offsets differ; `400`
    /// [`TusError::AlreadyComplete`] for a complete draft upload,
    /// [`TusError::LengthChanged`] or [`TusError::LengthBelowOffset`] for a
    /// length that contradicts the upload; `413` when `Content-Length`
    /// already goes past the room.
    pub(crate) fn check(&self, upload: &UploadInfo, config: &TusConfig) -> Result<Plan, TusError> {
        if let Some(Concat::Final(_)) = upload.concat {
            return Err(TusError::ModifyFinal);
        }
        if self.offset != upload.offset {
            return Err(TusError::OffsetMismatch {
                expected: upload.offset,
                given: self.offset,
            });
        }
        if matches!(self.protocol, Protocol::Draft(_)) && upload.complete {
            return Err(TusError::AlreadyComplete);
        }
        let declare_length = match (upload.length, self.length) {
            (Some(length), Some(given)) if length != given => {
                return Err(TusError::LengthChanged { length, given });
            }
            (None, Some(given)) if given < upload.offset => {
                return Err(TusError::LengthBelowOffset {
                    offset: upload.offset,
                    given,
                });
            }
            (None, given) => given,
            (Some(_), _) => None,
        };
        let length = upload.length.or(declare_length);
        if let Some(size) = self.content_length {
            check_room(upload.offset, size, length, config)?;
        }
        let room = length
            .unwrap_or(config.max_size)
            .saturating_sub(upload.offset);
        Ok(Plan {
            declare_length,
            room,
        })
    }
}

/// What the store knows of an upload: what `HEAD` answers and what an
/// append is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadInfo {
    /// Bytes stored so far.
    pub(crate) offset: u64,
    /// The length, once known.
    pub(crate) length: Option<u64>,
    /// Whether the upload is complete: its offset reached its length, or a
    /// draft request with `Upload-Complete: ?1` was stored whole.
    pub(crate) complete: bool,
    /// The metadata given at creation.
    pub(crate) metadata: Metadata,
    /// Partial or final (tus concatenation).
    pub(crate) concat: Option<Concat>,
    /// When the unfinished upload expires, if it does.
    pub(crate) expires: Option<SystemTime>,
}

/// The length of a final upload made of completed partial uploads of
/// `sizes`: the sum of theirs.
///
/// # Errors
///
/// `413` [`TusError::TooLarge`] when the sum is over the limit.
pub(crate) fn final_length(sizes: &[u64], config: &TusConfig) -> Result<u64, TusError> {
    let total = sizes
        .iter()
        .fold(0u64, |total, size| total.saturating_add(*size));
    check_max(total, config)?;
    Ok(total)
}

fn check_max(length: u64, config: &TusConfig) -> Result<(), TusError> {
    if length > config.max_size {
        return Err(TusError::TooLarge {
            length,
            max: config.max_size,
        });
    }
    Ok(())
}

/// Refuses a body of `size` bytes at `offset` that would go past `length`,
/// or past the limit when the length is unknown.
fn check_room(
    offset: u64,
    size: u64,
    length: Option<u64>,
    config: &TusConfig,
) -> Result<(), TusError> {
    let end = offset.saturating_add(size);
    match length {
        Some(length) if end > length => Err(TusError::ExceedsLength { length, end }),
        None => check_max(end, config),
        Some(_) => Ok(()),
    }
}

/// The one length two indicators give, or `InconsistentLength`.
fn agree(declared: Option<u64>, implied: Option<u64>) -> Result<Option<u64>, TusError> {
    match (declared, implied) {
        (Some(declared), Some(implied)) if declared != implied => {
            Err(TusError::InconsistentLength { declared, implied })
        }
        (declared, implied) => Ok(declared.or(implied)),
    }
}

/// A non-negative integer of digits only (no sign, no spaces inside).
fn integer(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn upload_length(headers: &HeaderMap) -> Result<Option<u64>, TusError> {
    let Some(value) = headers.get("upload-length") else {
        return Ok(None);
    };
    let value = String::from_utf8_lossy(value.as_bytes());
    integer(&value)
        .map(Some)
        .ok_or_else(|| TusError::InvalidLength {
            value: value.into_owned(),
        })
}

/// `Upload-Defer-Length: 1`; any other value is refused.
fn defer_length(headers: &HeaderMap) -> Result<bool, TusError> {
    match headers.get("upload-defer-length") {
        None => Ok(false),
        Some(value) if value.as_bytes().trim_ascii() == b"1" => Ok(true),
        Some(value) => Err(TusError::InvalidDeferLength {
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        }),
    }
}

/// `Upload-Complete` (a structured-field boolean); absent means `?0`, as
/// tusd reads it.
fn upload_complete(headers: &HeaderMap) -> Result<bool, TusError> {
    match headers
        .get("upload-complete")
        .map(|value| value.as_bytes().trim_ascii())
    {
        None | Some(b"?0") => Ok(false),
        Some(b"?1") => Ok(true),
        Some(value) => Err(TusError::InvalidUploadComplete {
            value: String::from_utf8_lossy(value).into_owned(),
        }),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    text(headers, CONTENT_LENGTH).and_then(integer)
}

/// A `Content-Type`'s media type, without parameters, lower case.
fn media_type(value: &str) -> String {
    let essence = value.split(';').next().unwrap_or_default();
    essence.trim().to_ascii_lowercase()
}

fn is_media_type(headers: &HeaderMap, expected: &str) -> bool {
    text(headers, CONTENT_TYPE).is_some_and(|value| media_type(value) == expected)
}

/// Whether a media type describes the transfer, not the file.
fn is_transfer_type(essence: &str) -> bool {
    essence.is_empty() || essence == PARTIAL_UPLOAD || essence == OFFSET_OCTET_STREAM
}

/// The `filename` parameter of a `Content-Disposition`, quoted or a token.
/// (`filename*`, RFC 8187, is not read.)
fn disposition_filename(value: &str) -> Option<String> {
    let (_, mut rest) = value.split_once(';')?;
    loop {
        rest = rest.trim_start_matches([' ', ';']);
        let (name, after) = rest.split_once('=')?;
        let (parameter, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut parameter = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => parameter.push(chars.next()?.1),
                    (index, '"') => break index + 1,
                    (_, c) => parameter.push(c),
                }
            };
            (parameter, &quoted[end..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        if name.trim().eq_ignore_ascii_case("filename") {
            return (!parameter.is_empty()).then_some(parameter);
        }
        rest = remaining;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tus::Interop;
    use crate::tus::tests::headers;

    fn config() -> TusConfig {
        TusConfig {
            max_size: 1000,
            ..TusConfig::default()
        }
    }

    const TUS: Protocol = Protocol::Tus;
    const V5: Protocol = Protocol::Draft(Interop::V5);
    const V6: Protocol = Protocol::Draft(Interop::V6);
    const V8: Protocol = Protocol::Draft(Interop::V8);

    fn create(protocol: Protocol, pairs: &[(&str, &str)]) -> Result<Creation, TusError> {
        Creation::parse(protocol, &headers(pairs), &config())
    }

    fn append(protocol: Protocol, pairs: &[(&str, &str)]) -> Result<Append, TusError> {
        Append::parse(protocol, &headers(pairs), &config())
    }

    fn upload(offset: u64, length: Option<u64>) -> UploadInfo {
        UploadInfo {
            offset,
            length,
            complete: length == Some(offset),
            metadata: Metadata::default(),
            concat: None,
            expires: None,
        }
    }

    // Creation, tus.

    #[test]
    fn a_tus_creation_with_a_length_and_metadata_parses() {
        let creation = create(
            TUS,
            &[
                ("Upload-Length", "100"),
                ("Upload-Metadata", "filename YS50eHQ="),
            ],
        )
        .unwrap();
        assert_eq!(creation.length, Some(100));
        assert_eq!(creation.metadata.filename(), Some("a.txt"));
        assert!(!creation.carries_data);
        assert!(!creation.completes);
        assert_eq!(creation.concat, None);
        assert_eq!(creation.checksum, None);
        assert_eq!(creation.room(&config()), 100);
    }

    #[test]
    fn a_tus_creation_may_defer_its_length() {
        let creation = create(TUS, &[("Upload-Defer-Length", "1")]).unwrap();
        assert_eq!(creation.length, None);
        assert_eq!(creation.room(&config()), 1000);
    }

    #[test]
    fn a_tus_creation_with_both_lengths_is_refused() {
        let error =
            create(TUS, &[("Upload-Length", "5"), ("Upload-Defer-Length", "1")]).unwrap_err();
        assert_eq!(error, TusError::LengthAndDeferLength);
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(error.code(), "ambiguous_length");
    }

    #[test]
    fn a_tus_creation_with_neither_length_is_refused() {
        let error = create(TUS, &[]).unwrap_err();
        assert_eq!(error, TusError::MissingLength);
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(
            error.to_string(),
            "the creation has neither Upload-Length nor Upload-Defer-Length: 1; send exactly one"
        );
    }

    #[test]
    fn a_defer_length_other_than_1_is_refused() {
        let error = create(TUS, &[("Upload-Defer-Length", "0")]).unwrap_err();
        assert_eq!(error.code(), "invalid_defer_length");
        assert_eq!(
            error.to_string(),
            "Upload-Defer-Length is \"0\"; its only value is 1"
        );
    }

    #[test]
    fn a_length_that_is_not_a_non_negative_integer_is_refused() {
        for value in ["-1", "+5", "1e3", "", "12 3", "99999999999999999999999"] {
            let error = create(TUS, &[("Upload-Length", value)]).unwrap_err();
            assert_eq!(
                error,
                TusError::InvalidLength {
                    value: value.to_owned()
                },
                "{value:?}"
            );
            assert_eq!(error.status().as_u16(), 400);
        }
    }

    #[test]
    fn a_length_over_the_limit_is_refused_with_413() {
        let error = create(TUS, &[("Upload-Length", "1001")]).unwrap_err();
        assert_eq!(
            error,
            TusError::TooLarge {
                length: 1001,
                max: 1000
            }
        );
        assert_eq!(error.status().as_u16(), 413);
        assert_eq!(
            error.to_string(),
            "the upload's length of 1001 bytes is over the limit of 1000 bytes"
        );
        assert!(create(TUS, &[("Upload-Length", "1000")]).is_ok());
    }

    #[test]
    fn tus_creation_with_upload_carries_data_and_its_checksum() {
        let creation = create(
            TUS,
            &[
                ("Upload-Length", "11"),
                ("Content-Type", "application/offset+octet-stream"),
                ("Content-Length", "11"),
                ("Upload-Checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            ],
        )
        .unwrap();
        assert!(creation.carries_data);
        assert_eq!(creation.content_length, Some(11));
        assert!(matches!(
            creation.checksum,
            Some(ExpectedChecksum::Header(_))
        ));
    }

    #[test]
    fn a_tus_creation_of_another_content_type_carries_no_data() {
        let creation = create(
            TUS,
            &[("Upload-Length", "11"), ("Content-Type", "text/plain")],
        )
        .unwrap();
        assert!(!creation.carries_data);
    }

    #[test]
    fn a_creation_body_longer_than_the_length_is_refused_with_413() {
        let error = create(
            TUS,
            &[
                ("Upload-Length", "10"),
                ("Content-Type", "application/offset+octet-stream"),
                ("Content-Length", "11"),
            ],
        )
        .unwrap_err();
        assert_eq!(
            error,
            TusError::ExceedsLength {
                length: 10,
                end: 11
            }
        );
        assert_eq!(error.status().as_u16(), 413);
    }

    #[test]
    fn bad_metadata_refuses_the_creation() {
        let error =
            create(TUS, &[("Upload-Length", "1"), ("Upload-Metadata", "a b c")]).unwrap_err();
        assert_eq!(error.code(), "invalid_metadata");
        assert_eq!(error.status().as_u16(), 400);
    }

    // Concatenation.

    #[test]
    fn a_partial_creation_parses() {
        let creation =
            create(TUS, &[("Upload-Concat", "partial"), ("Upload-Length", "5")]).unwrap();
        assert_eq!(creation.concat, Some(Concat::Partial));
        assert_eq!(creation.length, Some(5));
    }

    #[test]
    fn a_final_creation_takes_ids_from_full_urls_and_paths() {
        let creation = create(
            TUS,
            &[(
                "Upload-Concat",
                "final;https://corral.example/api/uploads/a1 /api/uploads/b2  http://x:8080/api/uploads/c3/",
            )],
        )
        .unwrap();
        assert_eq!(
            creation.concat,
            Some(Concat::Final(vec!["a1".into(), "b2".into(), "c3".into()]))
        );
        assert_eq!(creation.length, None);
        assert_eq!(
            creation.concat.unwrap().header_value(),
            "final;/api/uploads/a1 /api/uploads/b2 /api/uploads/c3"
        );
    }

    #[test]
    fn a_final_creation_with_a_length_or_a_body_is_refused() {
        let with_length = create(
            TUS,
            &[
                ("Upload-Concat", "final;/api/uploads/a"),
                ("Upload-Length", "5"),
            ],
        )
        .unwrap_err();
        assert_eq!(with_length.code(), "invalid_concat");
        assert_eq!(
            with_length.to_string(),
            "Upload-Concat is \"final;/api/uploads/a\": a final upload takes its length from its \
             partial uploads: send neither Upload-Length nor Upload-Defer-Length"
        );
        let with_body = create(
            TUS,
            &[
                ("Upload-Concat", "final;/api/uploads/a"),
                ("Content-Type", "application/offset+octet-stream"),
            ],
        )
        .unwrap_err();
        assert_eq!(with_body.status().as_u16(), 400);
        assert!(
            with_body.to_string().ends_with("takes no body"),
            "{with_body}"
        );
    }

    #[test]
    fn a_concat_that_is_not_partial_or_a_list_of_upload_urls_is_refused() {
        for (value, reason) in [
            (
                "parts",
                "it must be `partial`, or `final;` and the partial uploads' URLs separated by spaces",
            ),
            ("final;", "a final upload lists at least one partial upload"),
            (
                "final;/api/files/a",
                "\"/api/files/a\" is not an upload's URL (/api/uploads/ID, absolute or a path)",
            ),
            (
                "final;ftp://x/api/uploads/a",
                "\"ftp://x/api/uploads/a\" is not an upload's URL (/api/uploads/ID, absolute or a path)",
            ),
            (
                "final;/api/uploads/a/b",
                "\"/api/uploads/a/b\" is not an upload's URL (/api/uploads/ID, absolute or a path)",
            ),
        ] {
            assert_eq!(
                Concat::parse(value).unwrap_err(),
                TusError::InvalidConcat {
                    value: value.to_owned(),
                    reason: reason.to_owned()
                }
            );
        }
    }

    #[test]
    fn a_final_upload_is_as_long_as_its_partial_uploads_and_no_longer_than_the_limit() {
        assert_eq!(final_length(&[5, 6, 5], &config()), Ok(16));
        assert_eq!(final_length(&[], &config()), Ok(0));
        let error = final_length(&[600, 600], &config()).unwrap_err();
        assert_eq!(error.status().as_u16(), 413);
        let error = final_length(&[u64::MAX, 1], &config()).unwrap_err();
        assert_eq!(error.code(), "upload_too_large");
    }

    // Creation, draft.

    #[test]
    fn a_draft_creation_that_completes_takes_its_length_from_content_length() {
        for protocol in [V5, V6, V8] {
            let creation = create(
                protocol,
                &[("Upload-Complete", "?1"), ("Content-Length", "42")],
            )
            .unwrap();
            assert_eq!(creation.length, Some(42), "{protocol:?}");
            assert!(creation.completes);
            assert!(creation.carries_data);
        }
    }

    #[test]
    fn a_draft_creation_that_completes_without_content_length_has_the_bodys_length() {
        let creation = create(V8, &[("Upload-Complete", "?1")]).unwrap();
        assert_eq!(creation.length, None);
        assert!(creation.completes);
    }

    #[test]
    fn a_draft_creation_that_does_not_complete_has_the_declared_length_or_none() {
        let creation = create(
            V6,
            &[
                ("Upload-Complete", "?0"),
                ("Content-Length", "10"),
                ("Upload-Length", "100"),
            ],
        )
        .unwrap();
        assert_eq!(creation.length, Some(100));
        assert!(!creation.completes);
        // tus-js-client's draft mode announces a deferred length the tus way.
        let deferred = create(
            V5,
            &[("Upload-Complete", "?0"), ("Upload-Defer-Length", "1")],
        )
        .unwrap();
        assert_eq!(deferred.length, None);
    }

    #[test]
    fn a_draft_creation_whose_lengths_disagree_is_refused() {
        let error = create(
            V8,
            &[
                ("Upload-Complete", "?1"),
                ("Content-Length", "10"),
                ("Upload-Length", "100"),
            ],
        )
        .unwrap_err();
        assert_eq!(
            error,
            TusError::InconsistentLength {
                declared: 100,
                implied: 10
            }
        );
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(error.code(), "inconsistent_length");
    }

    #[test]
    fn an_upload_complete_that_is_not_a_boolean_is_refused() {
        let error = create(V8, &[("Upload-Complete", "true")]).unwrap_err();
        assert_eq!(
            error,
            TusError::InvalidUploadComplete {
                value: "true".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "Upload-Complete is \"true\"; it must be ?1 or ?0"
        );
    }

    #[test]
    fn a_draft_creation_names_the_file_from_content_type_and_disposition() {
        let creation = create(
            V8,
            &[
                ("Upload-Complete", "?1"),
                ("Content-Type", "image/jpeg; q=1"),
                (
                    "Content-Disposition",
                    "inline; filename*=UTF-8''x.jpg; filename=\"file \\\"name\\\".jpg\"",
                ),
            ],
        )
        .unwrap();
        assert_eq!(creation.metadata.filetype(), Some("image/jpeg"));
        assert_eq!(creation.metadata.filename(), Some("file \"name\".jpg"));

        let partial = create(
            V6,
            &[
                ("Upload-Complete", "?0"),
                ("Content-Type", "application/partial-upload"),
                ("Content-Disposition", "attachment; filename=a.txt"),
                ("Upload-Metadata", "filename Yi50eHQ="),
            ],
        )
        .unwrap();
        assert_eq!(partial.metadata.filetype(), None);
        assert_eq!(partial.metadata.filename(), Some("b.txt"));
    }

    #[test]
    fn a_draft_creation_with_upload_concat_is_refused() {
        let error = create(V8, &[("Upload-Concat", "partial")]).unwrap_err();
        assert_eq!(error.code(), "invalid_concat");
        assert_eq!(error.status().as_u16(), 400);
    }

    #[test]
    fn a_draft_creation_body_over_the_limit_is_refused_with_413() {
        let error =
            create(V8, &[("Upload-Complete", "?0"), ("Content-Length", "1001")]).unwrap_err();
        assert_eq!(
            error,
            TusError::TooLarge {
                length: 1001,
                max: 1000
            }
        );
    }

    // Append, parsing.

    #[test]
    fn a_tus_append_parses_offset_length_and_checksum() {
        let append = append(
            TUS,
            &[
                ("Content-Type", "application/offset+octet-stream"),
                ("Upload-Offset", "5"),
                ("Upload-Length", "20"),
                ("Content-Length", "15"),
                ("Upload-Checksum", "md5 XrY7u+Ae7tCTyyK7j1rNww=="),
            ],
        )
        .unwrap();
        assert_eq!(append.offset, 5);
        assert_eq!(append.length, Some(20));
        assert_eq!(append.content_length, Some(15));
        assert!(!append.completes);
        assert!(matches!(append.checksum, Some(ExpectedChecksum::Header(_))));
    }

    #[test]
    fn a_tus_append_of_another_content_type_is_refused_with_415() {
        for content_type in [None, Some("application/octet-stream")] {
            let mut pairs = vec![("Upload-Offset", "0")];
            pairs.extend(content_type.map(|value| ("Content-Type", value)));
            let error = append(TUS, &pairs).unwrap_err();
            assert_eq!(error.status().as_u16(), 415);
            assert_eq!(
                error,
                TusError::UnsupportedMediaType {
                    given: content_type.map(str::to_owned),
                    expected: OFFSET_OCTET_STREAM
                }
            );
        }
    }

    #[test]
    fn a_missing_or_malformed_offset_is_refused_with_400() {
        let ct = ("Content-Type", "application/offset+octet-stream");
        let error = append(TUS, &[ct]).unwrap_err();
        assert_eq!(error, TusError::MissingOffset);
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(error.code(), "invalid_offset");
        for value in ["-1", "abc", "", "1.5"] {
            let error = append(TUS, &[ct, ("Upload-Offset", value)]).unwrap_err();
            assert_eq!(
                error,
                TusError::InvalidOffset {
                    value: value.to_owned()
                }
            );
        }
    }

    #[test]
    fn a_draft_append_at_interop_6_and_8_must_be_a_partial_upload() {
        for protocol in [V6, V8] {
            let error = append(
                protocol,
                &[("Upload-Offset", "0"), ("Upload-Complete", "?0")],
            )
            .unwrap_err();
            assert_eq!(error.status().as_u16(), 415, "{protocol:?}");
            assert_eq!(
                error.to_string(),
                "Content-Type is missing; an append must be sent as application/partial-upload"
            );
            let ok = append(
                protocol,
                &[
                    ("Content-Type", "application/partial-upload"),
                    ("Upload-Offset", "0"),
                    ("Upload-Complete", "?0"),
                ],
            );
            assert!(ok.is_ok(), "{protocol:?}");
        }
    }

    #[test]
    fn a_draft_append_at_interop_5_takes_any_content_type() {
        let append = append(V5, &[("Upload-Offset", "3"), ("Upload-Complete", "?0")]).unwrap();
        assert_eq!(append.offset, 3);
        assert!(!append.completes);
    }

    #[test]
    fn a_draft_append_that_completes_gives_the_length() {
        let append = append(
            V8,
            &[
                ("Content-Type", "application/partial-upload"),
                ("Upload-Offset", "30"),
                ("Upload-Complete", "?1"),
                ("Content-Length", "12"),
            ],
        )
        .unwrap();
        assert!(append.completes);
        assert_eq!(append.length, Some(42));
    }

    #[test]
    fn a_draft_append_whose_lengths_disagree_is_refused() {
        let error = append(
            V6,
            &[
                ("Content-Type", "application/partial-upload"),
                ("Upload-Offset", "30"),
                ("Upload-Complete", "?1"),
                ("Content-Length", "12"),
                ("Upload-Length", "50"),
            ],
        )
        .unwrap_err();
        assert_eq!(
            error,
            TusError::InconsistentLength {
                declared: 50,
                implied: 42
            }
        );
    }

    // Append, checked against the upload.

    fn tus_append(offset: u64, length: Option<u64>, size: Option<u64>) -> Append {
        Append {
            protocol: TUS,
            offset,
            length,
            completes: false,
            content_length: size,
            checksum: None,
        }
    }

    #[test]
    fn an_append_at_the_uploads_offset_may_fill_it_to_its_length() {
        let plan = tus_append(4, None, Some(6)).check(&upload(4, Some(10)), &config());
        assert_eq!(
            plan,
            Ok(Plan {
                declare_length: None,
                room: 6
            })
        );
    }

    #[test]
    fn an_append_at_another_offset_is_refused_with_409_carrying_the_uploads() {
        let error = tus_append(3, None, None)
            .check(&upload(4, Some(10)), &config())
            .unwrap_err();
        assert_eq!(
            error,
            TusError::OffsetMismatch {
                expected: 4,
                given: 3
            }
        );
        assert_eq!(error.status().as_u16(), 409);
    }

    #[test]
    fn an_append_past_the_length_is_refused_with_413() {
        let error = tus_append(4, None, Some(7))
            .check(&upload(4, Some(10)), &config())
            .unwrap_err();
        assert_eq!(
            error,
            TusError::ExceedsLength {
                length: 10,
                end: 11
            }
        );
        assert_eq!(
            error.to_string(),
            "the body would take the upload to 11 bytes, past its Upload-Length of 10"
        );
    }

    #[test]
    fn an_append_to_a_deferred_upload_past_the_limit_is_refused_with_413() {
        let error = tus_append(900, None, Some(101))
            .check(&upload(900, None), &config())
            .unwrap_err();
        assert_eq!(
            error,
            TusError::TooLarge {
                length: 1001,
                max: 1000
            }
        );
        let plan = tus_append(900, None, None).check(&upload(900, None), &config());
        assert_eq!(plan.unwrap().room, 100);
    }

    #[test]
    fn a_deferred_length_is_declared_once_and_may_be_repeated_but_not_changed() {
        let plan = tus_append(4, Some(10), Some(6))
            .check(&upload(4, None), &config())
            .unwrap();
        assert_eq!(plan.declare_length, Some(10));
        assert_eq!(plan.room, 6);

        let same = tus_append(4, Some(10), None).check(&upload(4, Some(10)), &config());
        assert_eq!(same.unwrap().declare_length, None);

        let error = tus_append(4, Some(12), None)
            .check(&upload(4, Some(10)), &config())
            .unwrap_err();
        assert_eq!(
            error,
            TusError::LengthChanged {
                length: 10,
                given: 12
            }
        );
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(error.code(), "length_changed");
    }

    #[test]
    fn a_declared_length_below_the_offset_is_refused() {
        let error = tus_append(4, Some(3), None)
            .check(&upload(4, None), &config())
            .unwrap_err();
        assert_eq!(
            error,
            TusError::LengthBelowOffset {
                offset: 4,
                given: 3
            }
        );
        assert_eq!(error.status().as_u16(), 400);
    }

    #[test]
    fn an_append_to_a_final_upload_is_refused_with_403() {
        let mut last = upload(11, Some(11));
        last.concat = Some(Concat::Final(vec!["a".into(), "b".into()]));
        let error = tus_append(11, None, None)
            .check(&last, &config())
            .unwrap_err();
        assert_eq!(error, TusError::ModifyFinal);
        assert_eq!(error.status().as_u16(), 403);
    }

    #[test]
    fn a_draft_append_to_a_complete_upload_is_refused_with_400() {
        let mut append = tus_append(10, None, Some(0));
        append.protocol = V8;
        let error = append.check(&upload(10, Some(10)), &config()).unwrap_err();
        assert_eq!(error, TusError::AlreadyComplete);
        assert_eq!(error.status().as_u16(), 400);
    }

    #[test]
    fn an_empty_tus_append_to_a_complete_upload_is_harmless() {
        let plan = tus_append(10, None, Some(0)).check(&upload(10, Some(10)), &config());
        assert_eq!(plan.unwrap().room, 0);
    }

    #[test]
    fn an_append_may_announce_its_checksum_as_a_trailer() {
        let append = append(
            TUS,
            &[
                ("Content-Type", "application/offset+octet-stream"),
                ("Upload-Offset", "0"),
                ("Trailer", "Upload-Checksum"),
            ],
        )
        .unwrap();
        assert_eq!(append.checksum, Some(ExpectedChecksum::Trailer));
    }

    #[test]
    fn a_bad_checksum_refuses_the_append() {
        let error = append(
            TUS,
            &[
                ("Content-Type", "application/offset+octet-stream"),
                ("Upload-Offset", "0"),
                ("Upload-Checksum", "crc32 AAAAAA=="),
            ],
        )
        .unwrap_err();
        assert_eq!(error.code(), "unsupported_checksum_algorithm");
        assert_eq!(error.status().as_u16(), 400);
    }

    #[test]
    fn a_tus_creation_without_data_ignores_upload_checksum() {
        let creation = create(
            TUS,
            &[
                ("Upload-Length", "5"),
                ("Upload-Checksum", "crc32 AAAAAA=="),
            ],
        )
        .unwrap();
        assert_eq!(creation.checksum, None);
    }

    #[test]
    fn a_draft_creation_may_give_a_checksum_too() {
        let creation = create(
            V6,
            &[
                ("Upload-Complete", "?1"),
                (
                    "Upload-Checksum",
                    "sha256 uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
                ),
            ],
        )
        .unwrap();
        assert!(matches!(
            creation.checksum,
            Some(ExpectedChecksum::Header(_))
        ));
    }
}
