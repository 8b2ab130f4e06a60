//! [`Metadata`]: the `Upload-Metadata` header of tus creation, parsed
//! strictly, and written back for `HEAD`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::TusError;

/// An upload's metadata: keys and their decoded values, in the order the
/// client sent them. Values are bytes (the header carries base64, so any
/// bytes); [`Metadata::filename`] and [`Metadata::filetype`] read the two
/// keys clients agree on as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Metadata {
    pairs: Vec<(String, Vec<u8>)>,
}

impl Metadata {
    /// Parses an `Upload-Metadata` value: comma-separated pairs, each a key,
    /// a space and the base64 (standard alphabet, padded) of its value; a
    /// pair may be a key alone, for an empty value. Spaces around a pair
    /// are ignored. A header that is empty or only spaces is no metadata.
    ///
    /// # Errors
    ///
    /// [`TusError::InvalidMetadata`] for an empty pair, a key that is not
    /// visible ASCII without commas, a pair with more than one space, a
    /// value that is not base64, or a key given twice.
    pub(crate) fn parse(header: &str) -> Result<Self, TusError> {
        let mut metadata = Self::default();
        if header.trim().is_empty() {
            return Ok(metadata);
        }
        for (index, pair) in header.split(',').enumerate() {
            let pair = pair.trim_matches(' ');
            let invalid = |reason: String| TusError::InvalidMetadata { reason };
            if pair.is_empty() {
                return Err(invalid(format!(
                    "pair {} is empty (two commas in a row, or a comma at an end)",
                    index + 1
                )));
            }
            let (key, value) = match pair.split_once(' ') {
                Some((key, value)) => (key, value),
                None => (pair, ""),
            };
            if value.contains(' ') {
                return Err(invalid(format!(
                    "pair {pair:?} has more than one space; a key has no spaces and a value is \
                     base64"
                )));
            }
            if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "key {key:?} is not visible ASCII; a key has no spaces, commas or control \
                     characters"
                )));
            }
            let value = STANDARD.decode(value).map_err(|error| {
                invalid(format!(
                    "the value of {key:?} is not padded standard base64 ({error})"
                ))
            })?;
            if metadata.get(key).is_some() {
                return Err(invalid(format!("key {key:?} is given twice")));
            }
            metadata.pairs.push((key.to_owned(), value));
        }
        Ok(metadata)
    }

    /// Metadata made of `pairs`, in order; for tests and for the draft,
    /// whose creation carries no `Upload-Metadata`.
    #[cfg(test)]
    pub(crate) fn from_pairs<K: Into<String>, V: Into<Vec<u8>>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            pairs: (pairs.into_iter())
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        }
    }

    /// The value of `key`, if given.
    pub(crate) fn get(&self, key: &str) -> Option<&[u8]> {
        (self.pairs.iter())
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_slice())
    }

    /// Sets `key` to `value`, unless it is already given: the client's own
    /// metadata wins over what the server infers.
    pub(crate) fn insert_missing(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        if self.get(key).is_none() {
            self.pairs.push((key.to_owned(), value.into()));
        }
    }

    /// The `filename` value, when given and UTF-8 (tus-js-client and Uppy
    /// send the file's name under this key).
    pub(crate) fn filename(&self) -> Option<&str> {
        self.text("filename")
    }

    /// The `filetype` value (a media type), when given and UTF-8.
    pub(crate) fn filetype(&self) -> Option<&str> {
        self.text("filetype")
    }

    /// Whether there are no pairs.
    pub(crate) fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The `Upload-Metadata` value for a `HEAD` answer: the pairs in order,
    /// each value base64-encoded; an empty value is the key alone.
    pub(crate) fn encode(&self) -> String {
        let pairs = self.pairs.iter().map(|(key, value)| {
            if value.is_empty() {
                key.clone()
            } else {
                format!("{key} {}", STANDARD.encode(value))
            }
        });
        pairs.collect::<Vec<_>>().join(",")
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|value| std::str::from_utf8(value).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(header: &str) -> String {
        match Metadata::parse(header).unwrap_err() {
            TusError::InvalidMetadata { reason } => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pairs_decode_in_order_with_filename_and_filetype() {
        // "photo.jpg", "image/jpeg": what tus-js-client sends.
        let metadata = Metadata::parse("filename cGhvdG8uanBn,filetype aW1hZ2UvanBlZw==").unwrap();
        assert_eq!(metadata.filename(), Some("photo.jpg"));
        assert_eq!(metadata.filetype(), Some("image/jpeg"));
        assert_eq!(
            metadata.encode(),
            "filename cGhvdG8uanBn,filetype aW1hZ2UvanBlZw=="
        );
    }

    #[test]
    fn a_key_alone_or_with_a_trailing_space_has_an_empty_value() {
        let metadata = Metadata::parse("is_confidential,empty ,name Ym9i").unwrap();
        assert_eq!(metadata.get("is_confidential"), Some(&b""[..]));
        assert_eq!(metadata.get("empty"), Some(&b""[..]));
        assert_eq!(metadata.get("name"), Some(&b"bob"[..]));
        assert_eq!(metadata.encode(), "is_confidential,empty,name Ym9i");
    }

    #[test]
    fn spaces_around_pairs_are_ignored_and_an_empty_header_is_no_metadata() {
        let metadata = Metadata::parse(" a YQ== , b Yg== ").unwrap();
        assert_eq!(metadata.get("a"), Some(&b"a"[..]));
        assert_eq!(metadata.get("b"), Some(&b"b"[..]));
        assert!(Metadata::parse("").unwrap().is_empty());
        assert!(Metadata::parse("   ").unwrap().is_empty());
    }

    #[test]
    fn a_value_that_is_not_base64_is_refused_naming_the_key() {
        let error = Metadata::parse("filename not*base64").unwrap_err();
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(error.code(), "invalid_metadata");
        assert!(
            reason("filename not*base64")
                .starts_with("the value of \"filename\" is not padded standard base64"),
            "{error}"
        );
        // Unpadded base64 is refused too: tus clients pad.
        assert!(reason("name Ym9").contains("\"name\""));
    }

    #[test]
    fn a_duplicate_key_is_refused() {
        assert_eq!(reason("a YQ==,a Yg=="), "key \"a\" is given twice");
    }

    #[test]
    fn a_space_inside_a_pair_is_refused() {
        assert_eq!(
            reason("file name Ym9i"),
            "pair \"file name Ym9i\" has more than one space; a key has no spaces and a value is \
             base64"
        );
    }

    #[test]
    fn an_empty_pair_is_refused() {
        assert_eq!(
            reason("a YQ==,,b Yg=="),
            "pair 2 is empty (two commas in a row, or a comma at an end)"
        );
        assert_eq!(
            reason("a YQ==,"),
            "pair 2 is empty (two commas in a row, or a comma at an end)"
        );
    }

    #[test]
    fn a_key_with_a_control_or_non_ascii_character_is_refused() {
        assert!(reason("ke\ty YQ==").starts_with("key \"ke\\ty\" is not visible ASCII"));
    }

    #[test]
    fn binary_values_round_trip_and_are_not_text() {
        let metadata = Metadata::from_pairs([("filename", vec![0xff, 0xfe])]);
        assert_eq!(metadata.filename(), None);
        let encoded = metadata.encode();
        assert_eq!(encoded, "filename //4=");
        assert_eq!(Metadata::parse(&encoded).unwrap(), metadata);
    }

    #[test]
    fn inferred_values_do_not_replace_the_clients() {
        let mut metadata = Metadata::from_pairs([("filetype", "text/plain")]);
        metadata.insert_missing("filetype", "image/png");
        metadata.insert_missing("filename", "a.txt");
        assert_eq!(metadata.filetype(), Some("text/plain"));
        assert_eq!(metadata.filename(), Some("a.txt"));
    }
}
