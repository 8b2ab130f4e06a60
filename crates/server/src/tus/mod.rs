//! The protocol layer of resumable uploads: tus 1.0.0 and the IETF draft
//! "Resumable Uploads for HTTP", on one endpoint.
//!
//! This layer turns request headers into typed requests ([`Creation`],
//! [`Append`]) and typed outcomes into responses ([`Reply`]). It does no
//! I/O and knows no storage: the handlers read the body and call the store,
//! and ask this layer only what a header means and what to answer.
//!
//! # Why a layer of its own
//!
//! Two protocols, three draft versions and eight tus extensions meet in a
//! handful of headers, and every status code and header value is part of
//! the contract a client library relies on. Kept pure, each rule is a
//! function from headers to a value or a [`TusError`], tested without a
//! socket or a bucket; the handlers stay about bytes and storage, and a
//! rule changes in one place.
//!
//! # Which protocol
//!
//! [`detect`] decides from the request: a supported
//! `Upload-Draft-Interop-Version` means the IETF draft (see [`Interop`]),
//! `Tus-Resumable: 1.0.0` means tus; anything else is refused with `412`.
//! `OPTIONS` needs neither ([`detect_options`]). The answer to a request
//! speaks the protocol it was asked in ([`Reply::protocol`]).
//!
//! See `docs/design/TUS.md` for the header-to-type mapping and the status
//! codes, with the decisions taken where the specifications disagree.

mod checksum;
mod error;
mod metadata;
mod reply;
mod request;

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, Method};

pub(crate) use checksum::{ExpectedChecksum, Verifier, trailer_checksum};
pub(crate) use error::TusError;
pub(crate) use metadata::Metadata;
pub(crate) use reply::{Reply, stamp};
pub(crate) use request::{Append, Concat, Creation, UploadInfo, final_length};

/// The tus version this server speaks, and the only one it takes.
pub(crate) const TUS_VERSION: &str = "1.0.0";

/// The tus extensions served, as `Tus-Extension` lists them.
pub(crate) const TUS_EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,\
     expiration,checksum,checksum-trailer,termination,concatenation";

/// The path uploads are created at; an upload's URL is this path, `/`, and
/// its id.
pub(crate) const UPLOADS_PATH: &str = "/api/uploads";

/// The request headers a browser must be allowed to send
/// (`Access-Control-Allow-Headers` of a preflight answer).
pub(crate) const CORS_ALLOW_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-disposition",
    "tus-resumable",
    "upload-checksum",
    "upload-complete",
    "upload-concat",
    "upload-defer-length",
    "upload-draft-interop-version",
    "upload-length",
    "upload-metadata",
    "upload-offset",
    "x-http-method-override",
    "x-request-id",
    "x-requested-with",
];

/// The response headers a browser's script must be allowed to read
/// (`Access-Control-Expose-Headers` of every other answer).
pub(crate) const CORS_EXPOSE_HEADERS: &[&str] = &[
    "location",
    "retry-after",
    "tus-checksum-algorithm",
    "tus-extension",
    "tus-max-size",
    "tus-resumable",
    "tus-version",
    "upload-complete",
    "upload-concat",
    "upload-defer-length",
    "upload-draft-interop-version",
    "upload-expires",
    "upload-length",
    "upload-limit",
    "upload-metadata",
    "upload-offset",
];

/// The methods of the upload routes, for `Access-Control-Allow-Methods`.
pub(crate) const CORS_ALLOW_METHODS: &str = "POST, HEAD, PATCH, DELETE, OPTIONS";

/// What the answers advertise and the parsers enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TusConfig {
    /// Largest upload, in bytes: `Tus-Max-Size`, `Upload-Limit: max-size`;
    /// a larger declared length is refused with `413`.
    pub(crate) max_size: u64,
    /// How long an unfinished upload lives after its creation:
    /// `Upload-Expires` (tus), `Upload-Limit: max-age` (draft, interop 8).
    pub(crate) expiry: Duration,
}

impl Default for TusConfig {
    fn default() -> Self {
        Self {
            max_size: 5 << 30,
            expiry: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// A version of the IETF draft, by the interop version its clients send in
/// `Upload-Draft-Interop-Version`. Only the versions below are served: the
/// two tus-js-client 4.x speaks and the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Interop {
    /// Interop 5: draft -03, tus-js-client's `protocol: "ietf-draft-03"`.
    /// `Upload-Complete`, no `Upload-Limit`, any `Content-Type` on `PATCH`.
    V5,
    /// Interop 6: drafts -04 and -05, tus-js-client's
    /// `protocol: "ietf-draft-05"`. Adds `Upload-Limit` and requires
    /// `Content-Type: application/partial-upload` on `PATCH`.
    V6,
    /// Interop 8: drafts -09 to -12, the current one. As 6, and
    /// `Upload-Limit` carries `max-age`.
    V8,
}

impl Interop {
    /// Every version served, oldest first.
    pub(crate) const ALL: [Self; 3] = [Self::V5, Self::V6, Self::V8];

    /// The version's number, as `Upload-Draft-Interop-Version` carries it.
    pub(crate) fn number(self) -> u8 {
        match self {
            Self::V5 => 5,
            Self::V6 => 6,
            Self::V8 => 8,
        }
    }

    /// Whether answers carry `Upload-Limit` (from draft -04 on).
    pub(crate) fn has_limits(self) -> bool {
        self >= Self::V6
    }

    /// Whether `PATCH` must say `Content-Type: application/partial-upload`
    /// (from draft -04 on).
    pub(crate) fn requires_partial_upload_type(self) -> bool {
        self >= Self::V6
    }

    fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|version| value.trim() == version.number().to_string())
    }
}

/// The protocol a request speaks, and so the one its answer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// tus 1.0.0 with its extensions.
    Tus,
    /// The IETF draft at an interop version.
    Draft(Interop),
}

/// `Tus-Resumable`: the tus version of a request or answer.
pub(crate) const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
/// `Upload-Draft-Interop-Version`: the draft version of a request or answer.
pub(crate) const UPLOAD_DRAFT_INTEROP_VERSION: HeaderName =
    HeaderName::from_static("upload-draft-interop-version");

/// The protocol of a request other than `OPTIONS`.
///
/// A supported `Upload-Draft-Interop-Version` wins over `Tus-Resumable`
/// (tusd does the same), so a draft client that also sends tus headers is
/// answered as a draft client.
///
/// # Errors
///
/// `412` ([`TusError::UnsupportedVersion`]) when `Tus-Resumable` is missing
/// or is not `1.0.0`, or when `Upload-Draft-Interop-Version` names a
/// version not served and no `Tus-Resumable: 1.0.0` is there instead.
pub(crate) fn detect(headers: &HeaderMap) -> Result<Protocol, TusError> {
    let interop = text(headers, &UPLOAD_DRAFT_INTEROP_VERSION);
    if let Some(version) = interop.and_then(Interop::parse) {
        return Ok(Protocol::Draft(version));
    }
    match text(headers, &TUS_RESUMABLE) {
        Some(value) if value.trim() == TUS_VERSION => Ok(Protocol::Tus),
        tus_resumable => Err(TusError::UnsupportedVersion {
            tus_resumable: tus_resumable.map(str::to_owned),
            interop: interop.map(str::to_owned),
        }),
    }
}

/// The protocol an `OPTIONS` answer speaks: the draft's when the request
/// names a served interop version, else tus. tus says an `OPTIONS` request
/// need not carry `Tus-Resumable` and the server must ignore it, so this
/// never refuses.
pub(crate) fn detect_options(headers: &HeaderMap) -> Protocol {
    match text(headers, &UPLOAD_DRAFT_INTEROP_VERSION).and_then(Interop::parse) {
        Some(version) => Protocol::Draft(version),
        None => Protocol::Tus,
    }
}

/// The method a request means: a `POST` with `X-HTTP-Method-Override`
/// means the method the header names (tus core, for clients that cannot
/// send `PATCH` or `DELETE`); any other request means its own method. An
/// override that is not a method token leaves the request a `POST`.
pub(crate) fn effective_method(method: &Method, headers: &HeaderMap) -> Method {
    if method != Method::POST {
        return method.clone();
    }
    text(headers, "x-http-method-override")
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .and_then(|name| Method::from_bytes(name.to_ascii_uppercase().as_bytes()).ok())
        .unwrap_or(Method::POST)
}

/// A header's value as text, `None` when absent or not visible ASCII.
fn text(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn tus_resumable_1_0_0_is_tus() {
        let protocol = detect(&headers(&[("Tus-Resumable", "1.0.0")])).unwrap();
        assert_eq!(protocol, Protocol::Tus);
    }

    #[test]
    fn each_served_interop_version_is_the_draft_at_that_version() {
        for (value, version) in [("5", Interop::V5), ("6", Interop::V6), ("8", Interop::V8)] {
            let protocol = detect(&headers(&[("Upload-Draft-Interop-Version", value)])).unwrap();
            assert_eq!(protocol, Protocol::Draft(version));
            assert_eq!(version.number().to_string(), value);
        }
    }

    #[test]
    fn a_served_interop_version_wins_over_tus_resumable() {
        let both = headers(&[
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Draft-Interop-Version", "6"),
        ]);
        assert_eq!(detect(&both).unwrap(), Protocol::Draft(Interop::V6));
    }

    #[test]
    fn an_unserved_interop_version_with_tus_resumable_is_tus() {
        let both = headers(&[
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Draft-Interop-Version", "7"),
        ]);
        assert_eq!(detect(&both).unwrap(), Protocol::Tus);
    }

    #[test]
    fn a_request_with_neither_version_header_is_refused_with_412() {
        let error = detect(&HeaderMap::new()).unwrap_err();
        assert_eq!(error.status().as_u16(), 412);
        assert_eq!(error.code(), "unsupported_version");
        assert_eq!(
            error.to_string(),
            "the request has no Tus-Resumable header: send Tus-Resumable: 1.0.0 (tus), or \
             Upload-Draft-Interop-Version: 5, 6 or 8 (IETF resumable uploads draft)"
        );
    }

    #[test]
    fn another_tus_version_is_refused_with_412_naming_it() {
        let error = detect(&headers(&[("Tus-Resumable", "0.2.2")])).unwrap_err();
        assert_eq!(error.status().as_u16(), 412);
        assert_eq!(
            error.to_string(),
            "Tus-Resumable is \"0.2.2\"; this server speaks tus 1.0.0 only"
        );
    }

    #[test]
    fn an_unserved_interop_version_alone_is_refused_with_412_listing_the_served_ones() {
        for value in ["3", "4", "7", "9", "six"] {
            let error = detect(&headers(&[("Upload-Draft-Interop-Version", value)])).unwrap_err();
            assert_eq!(error.status().as_u16(), 412);
            assert_eq!(error.code(), "unsupported_version");
            assert_eq!(
                error.to_string(),
                format!(
                    "Upload-Draft-Interop-Version is {value:?}; this server speaks interop \
                     versions 5, 6 and 8 of the IETF resumable uploads draft, and tus 1.0.0"
                )
            );
        }
    }

    #[test]
    fn options_needs_no_version_header_and_is_tus_without_one() {
        assert_eq!(detect_options(&HeaderMap::new()), Protocol::Tus);
        assert_eq!(
            detect_options(&headers(&[("Tus-Resumable", "0.2.2")])),
            Protocol::Tus
        );
        assert_eq!(
            detect_options(&headers(&[("Upload-Draft-Interop-Version", "8")])),
            Protocol::Draft(Interop::V8)
        );
    }

    #[test]
    fn a_post_with_method_override_means_the_named_method() {
        let patch = headers(&[("X-HTTP-Method-Override", "PATCH")]);
        assert_eq!(effective_method(&Method::POST, &patch), Method::PATCH);
        let delete = headers(&[("X-HTTP-Method-Override", "delete")]);
        assert_eq!(effective_method(&Method::POST, &delete), Method::DELETE);
    }

    #[test]
    fn method_override_is_ignored_on_anything_but_post() {
        let patch = headers(&[("X-HTTP-Method-Override", "DELETE")]);
        assert_eq!(effective_method(&Method::PATCH, &patch), Method::PATCH);
        assert_eq!(effective_method(&Method::HEAD, &patch), Method::HEAD);
    }

    #[test]
    fn a_post_without_or_with_an_empty_override_stays_post() {
        assert_eq!(
            effective_method(&Method::POST, &HeaderMap::new()),
            Method::POST
        );
        let empty = headers(&[("X-HTTP-Method-Override", " ")]);
        assert_eq!(effective_method(&Method::POST, &empty), Method::POST);
        let not_a_method = headers(&[("X-HTTP-Method-Override", "PATCH DELETE")]);
        assert_eq!(effective_method(&Method::POST, &not_a_method), Method::POST);
    }

    #[test]
    fn interop_versions_gain_limits_and_the_partial_upload_type_from_6_on() {
        assert!(!Interop::V5.has_limits());
        assert!(!Interop::V5.requires_partial_upload_type());
        for version in [Interop::V6, Interop::V8] {
            assert!(version.has_limits());
            assert!(version.requires_partial_upload_type());
        }
    }

    #[test]
    fn cors_lists_are_lowercase_header_names() {
        for name in CORS_ALLOW_HEADERS.iter().chain(CORS_EXPOSE_HEADERS) {
            assert_eq!(HeaderName::from_static(name).as_str(), *name);
        }
        assert!(CORS_EXPOSE_HEADERS.contains(&"upload-offset"));
        assert!(CORS_ALLOW_HEADERS.contains(&"upload-draft-interop-version"));
    }
}
