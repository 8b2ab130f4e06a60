//! [`Reply`]: typed outcomes in, responses out, in the protocol the request
//! spoke.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::checksum::Algorithm;
use super::{
    Protocol, TUS_EXTENSIONS, TUS_RESUMABLE, TUS_VERSION, TusConfig, TusError,
    UPLOAD_DRAFT_INTEROP_VERSION, UploadInfo,
};

const TUS_VERSION_HEADER: HeaderName = HeaderName::from_static("tus-version");
const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_COMPLETE: HeaderName = HeaderName::from_static("upload-complete");
const UPLOAD_LIMIT: HeaderName = HeaderName::from_static("upload-limit");

/// Builds the answers to one request, in the protocol it spoke. Every
/// answer carries `Tus-Resumable: 1.0.0` (tus) or echoes
/// `Upload-Draft-Interop-Version` (draft).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply<'a> {
    /// The protocol of the request, from [`detect`](super::detect).
    pub(crate) protocol: Protocol,
    /// What the answers advertise.
    pub(crate) config: &'a TusConfig,
    /// The time of the answer, for `max-age` in `Upload-Limit`.
    pub(crate) now: SystemTime,
}

impl Reply<'_> {
    /// `OPTIONS`: `204` advertising both protocols, since one endpoint
    /// serves both: tus's `Tus-Version`, `Tus-Extension`, `Tus-Max-Size`,
    /// `Tus-Checksum-Algorithm`, and the draft's `Upload-Limit`.
    pub(crate) fn options(&self) -> Response {
        let mut response = self.answer(StatusCode::NO_CONTENT);
        let headers = response.headers_mut();
        headers.insert(TUS_VERSION_HEADER, HeaderValue::from_static(TUS_VERSION));
        headers.insert(TUS_EXTENSION, HeaderValue::from_static(TUS_EXTENSIONS));
        headers.insert(TUS_MAX_SIZE, number(self.config.max_size));
        let algorithms: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        headers.insert(TUS_CHECKSUM_ALGORITHM, value(&algorithms.join(",")));
        headers.insert(
            UPLOAD_LIMIT,
            value(&format!("max-size={}", self.config.max_size)),
        );
        response
    }

    /// `201` to a creation: `Location`, `Upload-Offset` after the body
    /// stored with it; tus: `Upload-Expires` while the upload is unfinished;
    /// draft: `Upload-Complete` and `Upload-Limit`.
    pub(crate) fn created(
        &self,
        location: &str,
        offset: u64,
        expires: Option<SystemTime>,
        complete: bool,
    ) -> Response {
        let mut response = self.answer(StatusCode::CREATED);
        let headers = response.headers_mut();
        headers.insert(LOCATION, value(location));
        headers.insert(UPLOAD_OFFSET, number(offset));
        self.progress(headers, expires, complete);
        response
    }

    /// `204` to an append: `Upload-Offset` after the body; tus:
    /// `Upload-Expires` while unfinished; draft: `Upload-Complete`.
    pub(crate) fn appended(
        &self,
        offset: u64,
        expires: Option<SystemTime>,
        complete: bool,
    ) -> Response {
        let mut response = self.answer(StatusCode::NO_CONTENT);
        let headers = response.headers_mut();
        headers.insert(UPLOAD_OFFSET, number(offset));
        match self.protocol {
            Protocol::Tus => insert_expires(headers, expires, complete),
            Protocol::Draft(_) => {
                headers.insert(UPLOAD_COMPLETE, boolean(complete));
            }
        }
        response
    }

    /// The answer to `HEAD`, never cached (`Cache-Control: no-store`).
    /// tus: `200` with `Upload-Offset`, `Upload-Length` or
    /// `Upload-Defer-Length: 1`, `Upload-Metadata`, `Upload-Concat`,
    /// `Upload-Expires`. Draft: `204` with `Upload-Offset`,
    /// `Upload-Complete`, `Upload-Length` when known, `Upload-Limit`.
    pub(crate) fn status(&self, upload: &UploadInfo) -> Response {
        let status = match self.protocol {
            Protocol::Tus => StatusCode::OK,
            Protocol::Draft(_) => StatusCode::NO_CONTENT,
        };
        let mut response = self.answer(status);
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(UPLOAD_OFFSET, number(upload.offset));
        match upload.length {
            Some(length) => {
                headers.insert(UPLOAD_LENGTH, number(length));
            }
            None if self.protocol == Protocol::Tus => {
                headers.insert(UPLOAD_DEFER_LENGTH, HeaderValue::from_static("1"));
            }
            None => {}
        }
        if self.protocol == Protocol::Tus {
            if !upload.metadata.is_empty() {
                headers.insert(UPLOAD_METADATA, value(&upload.metadata.encode()));
            }
            if let Some(concat) = &upload.concat {
                headers.insert(UPLOAD_CONCAT, value(&concat.header_value()));
            }
        }
        self.progress(headers, upload.expires, upload.complete);
        response
    }

    /// `204` to a termination (`DELETE`).
    pub(crate) fn terminated(&self) -> Response {
        self.answer(StatusCode::NO_CONTENT)
    }

    /// The answer to a refusal: its status, corral's JSON error body
    /// (`{"error":{"code","message"}}`) and the protocol's headers, with
    /// `Tus-Version` on `412` and `Upload-Offset` on `409`. A draft
    /// refusal says `Upload-Complete: ?0` (the answer is the protocol's,
    /// not the processing of a complete upload) and a draft `413` carries
    /// `Upload-Limit`.
    pub(crate) fn refused(&self, error: &TusError) -> Response {
        let body = serde_json::json!({
            "error": { "code": error.code(), "message": error.to_string() }
        });
        let mut response = self.answer(error.status());
        *response.body_mut() = Body::from(body.to_string());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match error {
            TusError::UnsupportedVersion { .. } => {
                headers.insert(TUS_VERSION_HEADER, HeaderValue::from_static(TUS_VERSION));
            }
            TusError::OffsetMismatch { expected, .. } => {
                headers.insert(UPLOAD_OFFSET, number(*expected));
            }
            TusError::Locked {
                retry_after: Some(seconds),
                ..
            } => {
                headers.insert(RETRY_AFTER, number(*seconds));
            }
            TusError::TooLarge { .. } | TusError::ExceedsLength { .. } => {
                if matches!(self.protocol, Protocol::Draft(version) if version.has_limits()) {
                    headers.insert(
                        UPLOAD_LIMIT,
                        value(&format!("max-size={}", self.config.max_size)),
                    );
                }
            }
            _ => {}
        }
        if let Protocol::Draft(_) = self.protocol {
            headers.insert(UPLOAD_COMPLETE, boolean(false));
        }
        response
    }

    /// An empty answer with `status` and the protocol's header.
    fn answer(&self, status: StatusCode) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = status;
        stamp(self.protocol, response.headers_mut());
        response
    }

    /// tus: `Upload-Expires`; draft: `Upload-Complete` and, from interop
    /// 6, `Upload-Limit`.
    fn progress(&self, headers: &mut HeaderMap, expires: Option<SystemTime>, complete: bool) {
        match self.protocol {
            Protocol::Tus => insert_expires(headers, expires, complete),
            Protocol::Draft(version) => {
                headers.insert(UPLOAD_COMPLETE, boolean(complete));
                if version.has_limits() {
                    headers.insert(UPLOAD_LIMIT, value(&self.limit(version, expires)));
                }
            }
        }
    }

    /// `Upload-Limit`, a structured-field dictionary: `max-size`, and from
    /// interop 8 `max-age`, the seconds the upload has left.
    fn limit(&self, version: super::Interop, expires: Option<SystemTime>) -> String {
        let mut limit = format!("max-size={}", self.config.max_size);
        if version >= super::Interop::V8
            && let Some(expires) = expires
        {
            let left = expires.duration_since(self.now).unwrap_or_default();
            limit.push_str(&format!(", max-age={}", left.as_secs()));
        }
        limit
    }
}

/// Adds `protocol`'s header (`Tus-Resumable`, or the draft's
/// `Upload-Draft-Interop-Version`) to an answer, made here or elsewhere.
pub(crate) fn stamp(protocol: Protocol, headers: &mut HeaderMap) {
    match protocol {
        Protocol::Tus => {
            headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
        }
        Protocol::Draft(version) => {
            headers.insert(
                UPLOAD_DRAFT_INTEROP_VERSION,
                number(version.number().into()),
            );
        }
    }
}

/// `Upload-Expires` while the upload is unfinished and expires.
fn insert_expires(headers: &mut HeaderMap, expires: Option<SystemTime>, complete: bool) {
    if let Some(expires) = expires.filter(|_| !complete) {
        headers.insert(UPLOAD_EXPIRES, value(&http_date(expires)));
    }
}

/// An HTTP-date (RFC 9110, IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(time: SystemTime) -> String {
    let time: DateTime<Utc> = time.into();
    time.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// A structured-field boolean.
fn boolean(value: bool) -> HeaderValue {
    HeaderValue::from_static(if value { "?1" } else { "?0" })
}

fn number(value: u64) -> HeaderValue {
    HeaderValue::from(value)
}

/// A header value made from text corral built: visible ASCII (base64,
/// digits, ids from its own URLs).
fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("corral builds header values from visible ASCII")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tus::{Concat, Interop, Metadata};

    const NOW: Duration = Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT

    fn config() -> TusConfig {
        TusConfig {
            max_size: 1000,
            expiry: Duration::from_secs(3600),
        }
    }

    fn reply(protocol: Protocol, config: &TusConfig) -> Reply<'_> {
        Reply {
            protocol,
            config,
            now: SystemTime::UNIX_EPOCH + NOW,
        }
    }

    fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    async fn body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn upload() -> UploadInfo {
        UploadInfo {
            offset: 25,
            length: Some(100),
            complete: false,
            metadata: Metadata::from_pairs([("filename", "a.txt")]),
            concat: None,
            expires: Some(SystemTime::UNIX_EPOCH + NOW + Duration::from_secs(3600)),
        }
    }

    #[test]
    fn upload_expires_is_an_http_date() {
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH + NOW),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_403_712_000)),
            "Wed, 25 Jun 2014 16:00:00 GMT"
        );
    }

    #[test]
    fn tus_options_advertise_version_extensions_size_and_algorithms() {
        let config = config();
        let response = reply(Protocol::Tus, &config).options();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, "tus-resumable"), Some("1.0.0"));
        assert_eq!(header(&response, "tus-version"), Some("1.0.0"));
        assert_eq!(
            header(&response, "tus-extension"),
            Some(
                "creation,creation-with-upload,creation-defer-length,expiration,checksum,\
                 checksum-trailer,termination,concatenation"
            )
        );
        assert_eq!(header(&response, "tus-max-size"), Some("1000"));
        assert_eq!(
            header(&response, "tus-checksum-algorithm"),
            Some("sha1,sha256,md5")
        );
        assert_eq!(header(&response, "upload-limit"), Some("max-size=1000"));
    }

    #[test]
    fn draft_options_echo_the_interop_version_and_announce_the_limit() {
        let config = config();
        let response = reply(Protocol::Draft(Interop::V8), &config).options();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, "upload-draft-interop-version"), Some("8"));
        assert_eq!(header(&response, "upload-limit"), Some("max-size=1000"));
        assert_eq!(header(&response, "tus-resumable"), None);
    }

    #[test]
    fn a_tus_creation_answers_201_with_location_offset_and_expiry() {
        let config = config();
        let expires = SystemTime::UNIX_EPOCH + NOW + Duration::from_secs(3600);
        let response =
            reply(Protocol::Tus, &config).created("/api/uploads/abc", 11, Some(expires), false);
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(header(&response, "tus-resumable"), Some("1.0.0"));
        assert_eq!(header(&response, "location"), Some("/api/uploads/abc"));
        assert_eq!(header(&response, "upload-offset"), Some("11"));
        assert_eq!(
            header(&response, "upload-expires"),
            Some("Sun, 06 Nov 1994 09:49:37 GMT")
        );
        assert_eq!(header(&response, "upload-complete"), None);
    }

    #[test]
    fn a_complete_tus_upload_has_no_expiry() {
        let config = config();
        let expires = SystemTime::UNIX_EPOCH + NOW;
        let response = reply(Protocol::Tus, &config).appended(100, Some(expires), true);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, "upload-offset"), Some("100"));
        assert_eq!(header(&response, "upload-expires"), None);
    }

    #[test]
    fn a_draft_creation_answers_per_interop_version() {
        let config = config();
        let expires = Some(SystemTime::UNIX_EPOCH + NOW + Duration::from_secs(3600));
        let cases = [
            (Interop::V5, None),
            (Interop::V6, Some("max-size=1000")),
            (Interop::V8, Some("max-size=1000, max-age=3600")),
        ];
        for (version, limit) in cases {
            let response = reply(Protocol::Draft(version), &config).created(
                "https://corral.example/api/uploads/abc",
                10,
                expires,
                false,
            );
            assert_eq!(response.status(), StatusCode::CREATED, "{version:?}");
            assert_eq!(
                header(&response, "upload-draft-interop-version"),
                Some(version.number().to_string().as_str())
            );
            assert_eq!(
                header(&response, "location"),
                Some("https://corral.example/api/uploads/abc")
            );
            assert_eq!(header(&response, "upload-offset"), Some("10"));
            assert_eq!(header(&response, "upload-complete"), Some("?0"));
            assert_eq!(header(&response, "upload-limit"), limit, "{version:?}");
            assert_eq!(header(&response, "upload-expires"), None);
            assert_eq!(header(&response, "tus-resumable"), None);
        }
    }

    #[test]
    fn a_draft_append_that_completes_says_so() {
        let config = config();
        let response = reply(Protocol::Draft(Interop::V6), &config).appended(100, None, true);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, "upload-offset"), Some("100"));
        assert_eq!(header(&response, "upload-complete"), Some("?1"));
    }

    #[test]
    fn tus_head_answers_200_uncached_with_offset_length_metadata_and_expiry() {
        let config = config();
        let response = reply(Protocol::Tus, &config).status(&upload());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "cache-control"), Some("no-store"));
        assert_eq!(header(&response, "upload-offset"), Some("25"));
        assert_eq!(header(&response, "upload-length"), Some("100"));
        assert_eq!(header(&response, "upload-defer-length"), None);
        assert_eq!(
            header(&response, "upload-metadata"),
            Some("filename YS50eHQ=")
        );
        assert_eq!(
            header(&response, "upload-expires"),
            Some("Sun, 06 Nov 1994 09:49:37 GMT")
        );
        assert_eq!(header(&response, "upload-concat"), None);
    }

    #[test]
    fn tus_head_of_a_deferred_final_upload_says_defer_length_and_concat() {
        let config = config();
        let mut deferred = upload();
        deferred.length = None;
        deferred.metadata = Metadata::default();
        let response = reply(Protocol::Tus, &config).status(&deferred);
        assert_eq!(header(&response, "upload-defer-length"), Some("1"));
        assert_eq!(header(&response, "upload-length"), None);
        assert_eq!(header(&response, "upload-metadata"), None);

        let mut last = upload();
        last.concat = Some(Concat::Final(vec!["a".into(), "b".into()]));
        let response = reply(Protocol::Tus, &config).status(&last);
        assert_eq!(
            header(&response, "upload-concat"),
            Some("final;/api/uploads/a /api/uploads/b")
        );
    }

    #[test]
    fn draft_head_answers_204_with_completeness_and_limit() {
        let config = config();
        let response = reply(Protocol::Draft(Interop::V8), &config).status(&upload());
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, "cache-control"), Some("no-store"));
        assert_eq!(header(&response, "upload-offset"), Some("25"));
        assert_eq!(header(&response, "upload-complete"), Some("?0"));
        assert_eq!(header(&response, "upload-length"), Some("100"));
        assert_eq!(
            header(&response, "upload-limit"),
            Some("max-size=1000, max-age=3600")
        );
        assert_eq!(header(&response, "upload-draft-interop-version"), Some("8"));
        assert_eq!(header(&response, "upload-metadata"), None);
        assert_eq!(header(&response, "upload-defer-length"), None);

        let mut deferred = upload();
        deferred.length = None;
        let response = reply(Protocol::Draft(Interop::V5), &config).status(&deferred);
        assert_eq!(header(&response, "upload-length"), None);
        assert_eq!(header(&response, "upload-limit"), None);
        assert_eq!(header(&response, "upload-draft-interop-version"), Some("5"));
    }

    #[test]
    fn a_termination_answers_204_with_the_protocol_header() {
        let config = config();
        let response = reply(Protocol::Tus, &config).terminated();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, "tus-resumable"), Some("1.0.0"));
        let response = reply(Protocol::Draft(Interop::V6), &config).terminated();
        assert_eq!(header(&response, "upload-draft-interop-version"), Some("6"));
    }

    #[tokio::test]
    async fn a_refusal_is_corrals_json_error_with_the_protocol_header() {
        let config = config();
        let error = TusError::NotFound { id: "abc".into() };
        let response = reply(Protocol::Tus, &config).refused(&error);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        assert_eq!(header(&response, "tus-resumable"), Some("1.0.0"));
        assert_eq!(
            body(response).await,
            serde_json::json!({
                "error": { "code": "not_found", "message": "no upload with id \"abc\"" }
            })
        );
    }

    #[tokio::test]
    async fn a_412_names_the_served_tus_version() {
        let config = config();
        let error = super::super::detect(&HeaderMap::new()).unwrap_err();
        let response = reply(Protocol::Tus, &config).refused(&error);
        assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(header(&response, "tus-version"), Some("1.0.0"));
        assert_eq!(body(response).await["error"]["code"], "unsupported_version");
    }

    #[test]
    fn a_409_carries_the_uploads_offset_and_in_the_draft_upload_complete_false() {
        let config = config();
        let error = TusError::OffsetMismatch {
            expected: 25,
            given: 30,
        };
        let response = reply(Protocol::Draft(Interop::V8), &config).refused(&error);
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(header(&response, "upload-offset"), Some("25"));
        assert_eq!(header(&response, "upload-complete"), Some("?0"));
        assert_eq!(header(&response, "upload-draft-interop-version"), Some("8"));

        let response = reply(Protocol::Tus, &config).refused(&error);
        assert_eq!(header(&response, "upload-offset"), Some("25"));
        assert_eq!(header(&response, "upload-complete"), None);
    }

    #[test]
    fn a_423_locked_says_when_the_lease_expires_when_it_is_known() {
        let config = config();
        let locked = |retry_after| TusError::Locked {
            id: "u".into(),
            retry_after,
        };
        let response = reply(Protocol::Tus, &config).refused(&locked(Some(7)));
        assert_eq!(response.status(), StatusCode::LOCKED);
        assert_eq!(header(&response, "retry-after"), Some("7"));
        let response = reply(Protocol::Tus, &config).refused(&locked(None));
        assert_eq!(response.status(), StatusCode::LOCKED);
        assert_eq!(header(&response, "retry-after"), None);
    }

    #[test]
    fn a_460_keeps_its_status_and_code() {
        let config = config();
        let error = TusError::ChecksumMismatch {
            algorithm: "sha256",
        };
        let response = reply(Protocol::Tus, &config).refused(&error);
        assert_eq!(response.status().as_u16(), 460);
        assert_eq!(header(&response, "upload-offset"), None);
    }

    #[test]
    fn a_draft_413_carries_the_limit() {
        let config = config();
        let error = TusError::TooLarge {
            length: 1001,
            max: 1000,
        };
        let response = reply(Protocol::Draft(Interop::V6), &config).refused(&error);
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(header(&response, "upload-limit"), Some("max-size=1000"));
        let response = reply(Protocol::Tus, &config).refused(&error);
        assert_eq!(header(&response, "upload-limit"), None);
    }
}
