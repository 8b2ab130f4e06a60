//! What corral knows about a stored object beyond its bytes, and where it
//! keeps it.
//!
//! Backend calls are the currency (see `DESIGN.md`), so the metadata
//! (SHA-256, content type, original name) travels inside the object
//! wherever it can:
//!
//! - **An object stored in one call on a store that keeps attributes** (S3,
//!   GCS, Azure) carries all of it as its own attributes: its content type,
//!   and user metadata `sha256`, `name` (percent-encoded UTF-8) and
//!   `corralmeta: inline`, which says there is nothing more to read. One
//!   call stores it; one call describes it. (Azure takes metadata names
//!   that are C# identifiers only, so the marker has no hyphen, and no
//!   underscore either: proxies in front of S3-compatible stores may drop
//!   headers with one, as nginx does by default. Objects marked
//!   `corral-meta` by earlier versions, on S3 and GCS, are read as
//!   marked.)
//! - **A file with a long name** (over about 1 KiB of metadata, see
//!   [`fits_inline`]) has its document too: S3 keeps at most 2 KB of
//!   user metadata, ext4 4 KiB of extended attributes.
//! - **A multipart object** learns its SHA-256 only after its last part,
//!   when its attributes are fixed: the SHA-256 goes into a small JSON
//!   document beside it, under the reserved `.corral/meta/` prefix, which
//!   no valid [`Key`] can reach. One more call, on an object of two parts
//!   or more. (S3's own checksums of a multipart object are composites of
//!   its parts' checksums, not the SHA-256 of its bytes, so they cannot
//!   stand in for it.)
//! - **On local disk** the attributes are the file's extended attributes
//!   (`user.corral.*`), set before the file is renamed into place, so a
//!   single-call object is one file and one `fsync` (see `crate::local`).
//!   On a file system without `user.*` attributes every object has its
//!   document. The in-memory store keeps attributes as the clouds do.
//! - **Objects written by earlier releases** (attributes without the
//!   `corralmeta` marker, or none) are described by their document.
//!
//! A document is written after its object; a batch is acknowledged only
//! once both are, and a batch interrupted between the two is rolled back
//! (see [`crate::batch`]).

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::key::Key;

/// Where the metadata documents live.
pub(crate) const META_ROOT: &str = ".corral/meta";

/// A stored object, as seen by a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's key.
    pub key: Key,
    /// Its size in bytes.
    pub size: u64,
    /// The backend's entity tag, if it gives one.
    pub e_tag: Option<String>,
    /// When it was last written.
    pub last_modified: DateTime<Utc>,
    /// The content type given at upload time, if any.
    pub content_type: Option<String>,
    /// The SHA-256 of its bytes, in lower-case hex, if recorded.
    pub sha256: Option<String>,
}

/// The document stored beside each object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MetaDoc {
    pub(crate) size: u64,
    pub(crate) sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) content_type: Option<String>,
    /// The file name as the client sent it, before sanitizing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
}

/// The user metadata that says an object's attributes hold all of its
/// metadata, and its value. A valid C# identifier, as Azure requires of
/// metadata names (it refuses others with `400 InvalidMetadata`), without
/// an underscore, which some proxies drop from header names.
const INLINE: &str = "corralmeta";
const INLINE_VALUE: &str = "inline";
/// The marker as versions before Azure was tested wrote it, on S3 and GCS.
const INLINE_BEFORE: &str = "corral-meta";
const SHA256: &str = "sha256";
const NAME: &str = "name";

/// The attributes an object is created with, on a store that keeps them:
/// its content type, its SHA-256 once known, and, when `doc` is complete
/// (a single-call object), its name and the marker that no document
/// exists.
pub(crate) fn attributes(content_type: Option<&str>, complete: Option<&MetaDoc>) -> Attributes {
    let mut attributes = Attributes::new();
    if let Some(content_type) = content_type {
        attributes.insert(Attribute::ContentType, content_type.to_owned().into());
    }
    if let Some(doc) = complete {
        let metadata = |name: &str| Attribute::Metadata(name.to_owned().into());
        attributes.insert(metadata(SHA256), doc.sha256.clone().into());
        if let Some(name) = &doc.name {
            let encoded =
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
            attributes.insert(metadata(NAME), encoded.to_string().into());
        }
        attributes.insert(metadata(INLINE), INLINE_VALUE.into());
    }
    attributes
}

/// The most bytes of metadata an object carries as attributes: S3 takes
/// 2 KB of user metadata, ext4 4 KiB of extended attributes per file.
const INLINE_LIMIT: usize = 1024;

/// Whether `doc` fits in an object's attributes; a file with a longer
/// name has its document, as a multipart object does.
pub(crate) fn fits_inline(doc: &MetaDoc) -> bool {
    let name = doc.name.as_deref().unwrap_or_default();
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    let content_type = doc.content_type.as_deref().unwrap_or_default();
    encoded.map(str::len).sum::<usize>() + content_type.len() + doc.sha256.len() <= INLINE_LIMIT
}

/// What an object's attributes say: its content type, and its SHA-256 if
/// they hold all of its metadata (`None`: read its document).
pub(crate) fn from_attributes(attributes: &Attributes) -> (Option<String>, Option<String>) {
    let text = |attribute: &Attribute| attributes.get(attribute).map(|value| value.to_string());
    let metadata = |name: &str| text(&Attribute::Metadata(name.to_owned().into()));
    let content_type = text(&Attribute::ContentType);
    let inline = [INLINE, INLINE_BEFORE]
        .into_iter()
        .any(|marker| metadata(marker).is_some_and(|value| value == INLINE_VALUE));
    (content_type, metadata(SHA256).filter(|_| inline))
}

/// The path of `key`'s metadata document.
pub(crate) fn meta_path(key: &Key) -> Path {
    Path::from(format!("{META_ROOT}/{key}.json"))
}

/// What an object's listing entry or head says of it: its size, entity
/// tag and age; the rest comes from its attributes or document.
pub(crate) fn object_info(key: Key, meta: ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        key,
        size: meta.size,
        e_tag: meta.e_tag,
        last_modified: meta.last_modified,
        content_type: None,
        sha256: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_documents_live_outside_every_key() {
        let key = Key::parse("tenant/a/b.txt").unwrap();
        let path = meta_path(&key);
        assert_eq!(path.as_ref(), ".corral/meta/tenant/a/b.txt.json");
        // No key can name the reserved prefix, so no upload can overwrite a
        // document and no reader can fetch one as an object.
        assert!(Key::parse(path.as_ref()).is_err());
    }

    fn doc(name: Option<&str>) -> MetaDoc {
        MetaDoc {
            size: 3,
            sha256: "ab".repeat(32),
            content_type: Some("text/plain".into()),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn metadata_names_are_identifiers_as_azure_requires() {
        let doc = doc(Some("a b.txt"));
        let attributes = attributes(Some("text/plain"), Some(&doc));
        for (attribute, _) in &attributes {
            if let Attribute::Metadata(name) = attribute {
                let mut chars = name.chars();
                let first = chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
                let rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                assert!(first && rest, "{name} is not a C# identifier");
            }
        }
        assert_eq!(from_attributes(&attributes).1, Some(doc.sha256.clone()));
        // As an earlier version marked it.
        let mut before = Attributes::new();
        before.insert(
            Attribute::Metadata("sha256".into()),
            doc.sha256.clone().into(),
        );
        before.insert(Attribute::Metadata("corral-meta".into()), "inline".into());
        assert_eq!(from_attributes(&before).1, Some(doc.sha256));
    }

    #[test]
    fn metadata_too_long_for_attributes_goes_to_the_document() {
        let doc = |name: &str| MetaDoc {
            size: 1,
            sha256: "ab".repeat(32),
            content_type: Some("text/plain".into()),
            name: Some(name.into()),
        };
        assert!(fits_inline(&doc("report.pdf")));
        assert!(fits_inline(&doc(&"n".repeat(900))));
        assert!(!fits_inline(&doc(&"n".repeat(1000))));
        // Percent-encoded, a non-ASCII name takes three bytes a byte.
        assert!(!fits_inline(&doc(&"é".repeat(200))));
    }

    #[test]
    fn meta_documents_round_trip() {
        let doc = doc(None);
        let json = serde_json::to_vec(&doc).unwrap();
        assert_eq!(serde_json::from_slice::<MetaDoc>(&json).unwrap(), doc);
    }
}
