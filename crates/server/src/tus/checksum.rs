//! The tus checksum and checksum-trailer extensions: `Upload-Checksum`
//! parsed into a [`Checksum`], and a [`Verifier`] fed the body as it
//! streams.
//!
//! A checksum announced as a trailer (`Trailer: Upload-Checksum`) names its
//! algorithm only after the body, so its verifier hashes with every
//! algorithm served ([`Verifier::every`]): three digests instead of one, the
//! price of not buffering the body.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::Digest as _;

use super::{TusError, text};

/// The `Upload-Checksum` header (and trailer).
pub(crate) const UPLOAD_CHECKSUM: &str = "upload-checksum";

/// A digest algorithm of the checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// `sha1`, which tus requires every server to take.
    Sha1,
    /// `sha256`.
    Sha256,
    /// `md5`.
    Md5,
}

impl Algorithm {
    /// Every algorithm served, as `Tus-Checksum-Algorithm` lists them.
    pub(crate) const ALL: [Self; 3] = [Self::Sha1, Self::Sha256, Self::Md5];

    /// The name in `Upload-Checksum` and `Tus-Checksum-Algorithm`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Md5 => "md5",
        }
    }

    /// The digest's length in bytes.
    fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Md5 => 16,
        }
    }
}

/// A checksum the client gave for a request's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checksum {
    /// The algorithm.
    pub(crate) algorithm: Algorithm,
    /// The digest the body must have.
    pub(crate) digest: Vec<u8>,
}

impl Checksum {
    /// Parses `<algorithm> <base64 digest>`. Algorithm names are lower
    /// case, as tus requires.
    ///
    /// # Errors
    ///
    /// [`TusError::UnsupportedChecksumAlgorithm`] for an algorithm not
    /// served; [`TusError::InvalidChecksum`] for a value without the space,
    /// a digest that is not padded standard base64, or one of the wrong
    /// length for its algorithm.
    pub(crate) fn parse(value: &str) -> Result<Self, TusError> {
        let invalid = |rule| TusError::InvalidChecksum {
            value: value.to_owned(),
            rule,
        };
        let Some((name, digest)) = value.trim().split_once(' ') else {
            return Err(invalid(
                "it must be an algorithm name, a space and the base64 of the digest",
            ));
        };
        let algorithm = Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.name() == name)
            .ok_or_else(|| TusError::UnsupportedChecksumAlgorithm {
                name: name.to_owned(),
            })?;
        let digest = STANDARD
            .decode(digest)
            .map_err(|_| invalid("the digest is not padded standard base64"))?;
        if digest.len() != algorithm.digest_len() {
            return Err(invalid("the digest's length is not its algorithm's"));
        }
        Ok(Self { algorithm, digest })
    }

    /// A verifier for this checksum's algorithm.
    pub(crate) fn verifier(&self) -> Verifier {
        Verifier::of(self.algorithm)
    }
}

/// Where a request's checksum comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpectedChecksum {
    /// The `Upload-Checksum` header.
    Header(Checksum),
    /// A trailer, announced with `Trailer: Upload-Checksum`; read it with
    /// [`trailer_checksum`] once the body has been read.
    Trailer,
}

impl ExpectedChecksum {
    /// The request's checksum, if it gives or announces one.
    ///
    /// # Errors
    ///
    /// As [`Checksum::parse`], for the header.
    pub(crate) fn from_headers(headers: &axum::http::HeaderMap) -> Result<Option<Self>, TusError> {
        if let Some(value) = headers.get(UPLOAD_CHECKSUM) {
            let value = value.to_str().map_err(|_| TusError::InvalidChecksum {
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                rule: "it must be visible ASCII",
            })?;
            return Checksum::parse(value).map(|checksum| Some(Self::Header(checksum)));
        }
        let announced = (headers.get_all(axum::http::header::TRAILER).iter())
            .filter_map(|value| value.to_str().ok())
            .flat_map(|names| names.split(','))
            .any(|name| name.trim().eq_ignore_ascii_case(UPLOAD_CHECKSUM));
        Ok(announced.then_some(Self::Trailer))
    }

    /// A verifier to feed the body to: one algorithm for a header, every
    /// algorithm for a trailer.
    pub(crate) fn verifier(&self) -> Verifier {
        match self {
            Self::Header(checksum) => checksum.verifier(),
            Self::Trailer => Verifier::every(),
        }
    }
}

/// The checksum in a request's trailers.
///
/// # Errors
///
/// [`TusError::MissingChecksumTrailer`] when the trailers carry no
/// `Upload-Checksum`; otherwise as [`Checksum::parse`].
pub(crate) fn trailer_checksum(
    trailers: Option<&axum::http::HeaderMap>,
) -> Result<Checksum, TusError> {
    let value = trailers
        .and_then(|trailers| text(trailers, UPLOAD_CHECKSUM))
        .ok_or(TusError::MissingChecksumTrailer)?;
    Checksum::parse(value)
}

/// Digests of a body, computed as its chunks stream by.
#[derive(Debug, Clone)]
pub(crate) struct Verifier {
    sha1: Option<sha1::Sha1>,
    sha256: Option<sha2::Sha256>,
    md5: Option<md5::Md5>,
}

impl Verifier {
    /// A verifier that hashes with `algorithm` only.
    pub(crate) fn of(algorithm: Algorithm) -> Self {
        let mut verifier = Self {
            sha1: None,
            sha256: None,
            md5: None,
        };
        match algorithm {
            Algorithm::Sha1 => verifier.sha1 = Some(sha1::Sha1::new()),
            Algorithm::Sha256 => verifier.sha256 = Some(sha2::Sha256::new()),
            Algorithm::Md5 => verifier.md5 = Some(md5::Md5::new()),
        }
        verifier
    }

    /// A verifier that hashes with every algorithm served, for a checksum
    /// whose algorithm is known only at the end.
    pub(crate) fn every() -> Self {
        Self {
            sha1: Some(sha1::Sha1::new()),
            sha256: Some(sha2::Sha256::new()),
            md5: Some(md5::Md5::new()),
        }
    }

    /// Feeds the next bytes of the body.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        if let Some(hasher) = &mut self.sha1 {
            hasher.update(bytes);
        }
        if let Some(hasher) = &mut self.sha256 {
            hasher.update(bytes);
        }
        if let Some(hasher) = &mut self.md5 {
            hasher.update(bytes);
        }
    }

    /// Whether the bytes fed so far have `expected`'s digest; `false` when
    /// this verifier does not hash with its algorithm.
    pub(crate) fn matches(&self, expected: &Checksum) -> bool {
        let digest = match expected.algorithm {
            Algorithm::Sha1 => self.sha1.clone().map(|h| h.finalize().to_vec()),
            Algorithm::Sha256 => self.sha256.clone().map(|h| h.finalize().to_vec()),
            Algorithm::Md5 => self.md5.clone().map(|h| h.finalize().to_vec()),
        };
        digest.is_some_and(|digest| digest == expected.digest)
    }

    /// [`Self::matches`], or the `460` refusal.
    ///
    /// # Errors
    ///
    /// [`TusError::ChecksumMismatch`] when the digests differ.
    pub(crate) fn verify(&self, expected: &Checksum) -> Result<(), TusError> {
        if self.matches(expected) {
            Ok(())
        } else {
            Err(TusError::ChecksumMismatch {
                algorithm: expected.algorithm.name(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tus::tests::headers;

    /// The digests of `hello world`, base64.
    const HELLO: [(&str, &str); 3] = [
        ("sha1", "Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
        ("sha256", "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="),
        ("md5", "XrY7u+Ae7tCTyyK7j1rNww=="),
    ];

    #[test]
    fn each_algorithm_matches_the_right_body_fed_in_pieces() {
        for (name, digest) in HELLO {
            let checksum = Checksum::parse(&format!("{name} {digest}")).unwrap();
            assert_eq!(checksum.algorithm.name(), name);
            let mut verifier = checksum.verifier();
            verifier.update(b"hello");
            verifier.update(b" ");
            verifier.update(b"world");
            assert!(verifier.matches(&checksum), "{name}");
            assert_eq!(verifier.verify(&checksum), Ok(()));
        }
    }

    #[test]
    fn each_algorithm_refuses_a_wrong_body_with_460() {
        for (name, digest) in HELLO {
            let checksum = Checksum::parse(&format!("{name} {digest}")).unwrap();
            let mut verifier = checksum.verifier();
            verifier.update(b"hello world!");
            assert!(!verifier.matches(&checksum), "{name}");
            let error = verifier.verify(&checksum).unwrap_err();
            assert_eq!(error.status().as_u16(), 460);
            assert_eq!(error.code(), "checksum_mismatch");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("the body's {name} digest"))
            );
        }
    }

    #[test]
    fn a_verifier_of_every_algorithm_matches_whichever_comes_in_the_trailer() {
        let mut verifier = Verifier::every();
        verifier.update(b"hello world");
        for (name, digest) in HELLO {
            let checksum = Checksum::parse(&format!("{name} {digest}")).unwrap();
            assert!(verifier.matches(&checksum), "{name}");
        }
    }

    #[test]
    fn a_verifier_of_one_algorithm_does_not_match_another() {
        let mut verifier = Verifier::of(Algorithm::Md5);
        verifier.update(b"hello world");
        let sha1 = Checksum::parse("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert!(!verifier.matches(&sha1));
    }

    #[test]
    fn an_unknown_algorithm_is_refused_with_400_naming_it() {
        let error = Checksum::parse("crc32 AAAAAA==").unwrap_err();
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(error.code(), "unsupported_checksum_algorithm");
        assert_eq!(
            error.to_string(),
            "Upload-Checksum uses \"crc32\"; this server takes sha1, sha256 and md5 \
             (Tus-Checksum-Algorithm)"
        );
        // Names are lower case.
        assert_eq!(
            Checksum::parse("SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
                .unwrap_err()
                .code(),
            "unsupported_checksum_algorithm"
        );
    }

    #[test]
    fn a_digest_that_is_not_base64_or_of_the_wrong_length_is_refused_with_400() {
        let error = Checksum::parse("sha1 !!!").unwrap_err();
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(error.code(), "invalid_checksum");
        assert_eq!(
            error.to_string(),
            "Upload-Checksum is \"sha1 !!!\": the digest is not padded standard base64"
        );
        let md5_as_sha1 = Checksum::parse("sha1 XrY7u+Ae7tCTyyK7j1rNww==").unwrap_err();
        assert_eq!(
            md5_as_sha1.to_string(),
            "Upload-Checksum is \"sha1 XrY7u+Ae7tCTyyK7j1rNww==\": the digest's length is not \
             its algorithm's"
        );
        let no_space = Checksum::parse("sha1").unwrap_err();
        assert_eq!(no_space.code(), "invalid_checksum");
    }

    #[test]
    fn a_checksum_comes_from_the_header_or_is_announced_as_a_trailer() {
        let header = headers(&[("Upload-Checksum", "md5 XrY7u+Ae7tCTyyK7j1rNww==")]);
        let Some(ExpectedChecksum::Header(checksum)) =
            ExpectedChecksum::from_headers(&header).unwrap()
        else {
            panic!("no header checksum");
        };
        assert_eq!(checksum.algorithm, Algorithm::Md5);

        let trailer = headers(&[("Trailer", "Expires, upload-checksum")]);
        assert_eq!(
            ExpectedChecksum::from_headers(&trailer).unwrap(),
            Some(ExpectedChecksum::Trailer)
        );
        assert_eq!(ExpectedChecksum::from_headers(&headers(&[])).unwrap(), None);
    }

    #[test]
    fn the_trailer_checksum_is_read_from_the_trailers_or_is_missing() {
        let trailers = headers(&[("Upload-Checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")]);
        let checksum = trailer_checksum(Some(&trailers)).unwrap();
        assert_eq!(checksum.algorithm, Algorithm::Sha1);
        let mut verifier = ExpectedChecksum::Trailer.verifier();
        verifier.update(b"hello world");
        assert!(verifier.matches(&checksum));

        let error = trailer_checksum(None).unwrap_err();
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(error.code(), "missing_checksum_trailer");
        assert_eq!(
            trailer_checksum(Some(&headers(&[("Other", "x")])))
                .unwrap_err()
                .code(),
            "missing_checksum_trailer"
        );
    }
}
