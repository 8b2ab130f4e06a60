//! Object keys, and how client-supplied file names become safe keys.
//!
//! # The rule
//!
//! A [`Key`] is one or more segments joined by `/`. A segment is valid when
//! it follows these rules, which [`sanitize_file_name`] applies (so it
//! leaves a valid segment of up to 200 bytes unchanged; longer ones, up to
//! the segment limit, it shortens):
//!
//! - it is not empty, at most [`MAX_SEGMENT_BYTES`] bytes long, and is not
//!   `.` or `..`;
//! - it does not start with `.` (no hidden files, and `.corral/` stays
//!   reserved for metadata) and neither starts nor ends with white space or
//!   ends with `.`;
//! - it holds no control character (this includes NUL and DEL), no `/` or
//!   `\`, and none of `{ } [ ] < > ^ % ~ # | * ? : " `` ` ``, the characters
//!   that S3, GCS, Windows or macOS reserve or that `object_store` would
//!   percent-encode.
//!
//! A whole key is at most [`MAX_KEY_BYTES`] bytes (S3's limit).
//!
//! [`sanitize_file_name`] turns any file name a client sends into one valid
//! segment: it keeps only the last component of a path (split on `/` and
//! `\`, so `../../etc/passwd` and `C:\Users\me\cv.pdf` become `passwd` and
//! `cv.pdf`), replaces forbidden characters with `_`, trims leading dots and
//! surrounding white space and trailing dots, shortens it to fit (keeping the
//! extension), and names an empty result `file`. Because a sanitized name is
//! a single segment without `..`, no name can reach outside the prefix it is
//! placed under, whatever the backend.

use std::fmt;

use crate::error::{Error, Result};

/// Longest segment, in bytes: what common filesystems allow for a name.
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest name [`sanitize_file_name`] produces, leaving room in the segment
/// for a de-duplicating suffix such as ` (12)`.
const MAX_NAME_BYTES: usize = 200;
/// Longest extension kept whole when a name is shortened.
const MAX_EXTENSION_BYTES: usize = 16;

const FORBIDDEN: &[char] = &[
    '/', '\\', '{', '}', '[', ']', '<', '>', '^', '%', '~', '#', '|', '*', '?', ':', '"', '`',
];

fn is_forbidden(c: char) -> bool {
    c.is_control() || FORBIDDEN.contains(&c)
}

/// A validated object key: see the [module docs](self) for the rule.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Key(String);

/// Where the store keeps objects of its own that are no tenant's: the
/// completed parts of a concatenation (see [`crate::resumable`]).
pub(crate) const RESERVED: &str = ".corral/objects";

impl TryFrom<String> for Key {
    type Error = Error;

    /// A key as the store saved it: a valid key, or a valid key under
    /// [`RESERVED`].
    fn try_from(key: String) -> Result<Self> {
        match key
            .strip_prefix(RESERVED)
            .and_then(|rest| rest.strip_prefix('/'))
        {
            Some(rest) => Self::parse(rest).map(|rest| Self::reserved(&rest)),
            None => Self::parse(&key),
        }
    }
}

impl From<Key> for String {
    fn from(key: Key) -> Self {
        key.0
    }
}

impl Key {
    /// Checks `key` against the rule.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] naming the rule it breaks.
    pub fn parse(key: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidKey {
            key: key.to_owned(),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("it is empty"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(invalid("it is longer than 1024 bytes"));
        }
        for segment in key.split('/') {
            check_segment(segment).map_err(invalid)?;
        }
        Ok(Self(key.to_owned()))
    }

    /// `key` under [`RESERVED`]: an object no tenant's key can name.
    pub(crate) fn reserved(key: &Key) -> Self {
        Self(format!("{RESERVED}/{key}"))
    }

    /// A key made of one segment.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] if `segment` is not a valid segment.
    pub fn segment(segment: &str) -> Result<Self> {
        check_segment(segment).map_err(|reason| Error::InvalidKey {
            key: segment.to_owned(),
            reason,
        })?;
        Ok(Self(segment.to_owned()))
    }

    /// `self/other`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] if the result is longer than [`MAX_KEY_BYTES`].
    pub fn join(&self, other: &Key) -> Result<Self> {
        let joined = format!("{}/{}", self.0, other.0);
        if joined.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidKey {
                key: joined,
                reason: "it is longer than 1024 bytes",
            });
        }
        Ok(Self(joined))
    }

    /// The part of the key after `prefix/`, if it lies under `prefix`.
    pub fn strip_prefix(&self, prefix: &Key) -> Option<&str> {
        self.0.strip_prefix(&prefix.0)?.strip_prefix('/')
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_segment(segment: &str) -> Result<(), &'static str> {
    if segment.is_empty() {
        return Err("it has an empty segment");
    }
    if segment.len() > MAX_SEGMENT_BYTES {
        return Err("a segment is longer than 255 bytes");
    }
    if segment.starts_with('.') {
        return Err("a segment starts with '.'");
    }
    if segment.ends_with('.') {
        return Err("a segment ends with '.'");
    }
    if segment.starts_with(char::is_whitespace) || segment.ends_with(char::is_whitespace) {
        return Err("a segment starts or ends with white space");
    }
    if segment.contains(is_forbidden) {
        return Err(
            "it contains a control character or one of \\ { } [ ] < > ^ % ~ # | * ? : \" `",
        );
    }
    Ok(())
}

/// Makes a client-supplied file name into one valid key segment; see the
/// [module docs](self) for the rule.
pub fn sanitize_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let replaced: String = last
        .chars()
        .map(|c| if is_forbidden(c) { '_' } else { c })
        .collect();
    let trimmed = replaced
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    let short = shorten(trimmed, MAX_NAME_BYTES);
    if short.is_empty() {
        "file".to_owned()
    } else {
        short
    }
}

/// Cuts `name` to at most `max` bytes on a character boundary, keeping a
/// short extension whole.
fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let (stem, extension) = match name.rfind('.') {
        Some(dot) if name.len() - dot <= MAX_EXTENSION_BYTES && dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    let mut cut = max - extension.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let stem = stem[..cut].trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    format!("{stem}{extension}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_names_into_one_safe_segment() {
        let cases = [
            ("report.pdf", "report.pdf"),
            ("holiday photo (1).jpg", "holiday photo (1).jpg"),
            ("résumé – 2026.pdf", "résumé – 2026.pdf"),
            ("../../etc/passwd", "passwd"),
            ("..", "file"),
            ("../..", "file"),
            ("/etc/shadow", "shadow"),
            ("C:\\Users\\me\\cv.pdf", "cv.pdf"),
            ("..\\..\\boot.ini", "boot.ini"),
            ("dir/", "file"),
            ("", "file"),
            ("evil\0.php", "evil_.php"),
            ("line\nbreak\r.txt", "line_break_.txt"),
            ("tab\there", "tab_here"),
            ("del\u{7f}.txt", "del_.txt"),
            ("c1\u{85}.txt", "c1_.txt"),
            (".htaccess", "htaccess"),
            ("...hidden...", "hidden"),
            ("  spaced  ", "spaced"),
            ("a%2e%2e.txt", "a_2e_2e.txt"),
            ("what?*<>|:\"`.txt", "what________.txt"),
            ("q[1]{2}^~#.txt", "q_1__2____.txt"),
        ];
        for (name, expected) in cases {
            let sanitized = sanitize_file_name(name);
            assert_eq!(sanitized, expected, "sanitizing {name:?}");
            Key::segment(&sanitized).unwrap_or_else(|e| panic!("{name:?} -> {e}"));
        }
    }

    #[test]
    fn shortens_long_names_keeping_the_extension() {
        let long = format!("{}.tar.gz", "x".repeat(500));
        let sanitized = sanitize_file_name(&long);
        assert!(sanitized.len() <= MAX_NAME_BYTES);
        assert!(sanitized.ends_with("xx.gz"), "{sanitized}");
        // Multi-byte characters are never cut in half.
        let wide = "é".repeat(300);
        let sanitized = sanitize_file_name(&wide);
        assert!(sanitized.len() <= MAX_NAME_BYTES);
        assert!(sanitized.chars().all(|c| c == 'é'));
        // An over-long extension is not treated as one.
        let odd = format!("a.{}", "b".repeat(400));
        assert_eq!(sanitize_file_name(&odd).len(), MAX_NAME_BYTES);
    }

    #[test]
    fn a_segment_is_valid_exactly_when_sanitizing_keeps_it() {
        for segment in ["a", "a b.txt", "日本語.md", "x (2).jpg", "2026-11-23"] {
            assert_eq!(sanitize_file_name(segment), segment);
            Key::segment(segment).unwrap();
        }
        for segment in [
            "",
            ".",
            "..",
            ".hidden",
            "trail.",
            " lead",
            "nul\0",
            "back\\slash",
            "a/b",
            "%2e",
        ] {
            assert_ne!(sanitize_file_name(segment), segment);
            assert!(Key::segment(segment).is_err(), "{segment:?} accepted");
        }
    }

    #[test]
    fn parses_keys_and_rejects_traversal() {
        let key = Key::parse("anonymous/2026-11-23/batch/a.txt").unwrap();
        let tenant = Key::segment("anonymous").unwrap();
        assert_eq!(key.strip_prefix(&tenant), Some("2026-11-23/batch/a.txt"));
        assert_eq!(key.strip_prefix(&Key::segment("anon").unwrap()), None);
        for bad in [
            "",
            "/abs",
            "trailing/",
            "a//b",
            "a/../b",
            "../a",
            "a/./b",
            "a/.corral/b",
            "a\\..\\b",
            "a/b\0c",
        ] {
            assert!(Key::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Key::parse(&"a/".repeat(600)).is_err());
    }

    #[test]
    fn join_respects_the_length_limit() {
        let a = Key::segment(&"a".repeat(255)).unwrap();
        let mut key = a.clone();
        for _ in 0..3 {
            key = key.join(&a).unwrap();
        }
        assert!(key.join(&a).is_err());
    }
}
