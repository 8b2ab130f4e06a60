//! What corral knows about a stored object beyond its bytes.
//!
//! The local filesystem backend of `object_store` keeps no per-object
//! attributes, so corral keeps its metadata (SHA-256, content type, original
//! name) in a small JSON document beside each object, under the reserved
//! `.corral/meta/` prefix, which no valid [`Key`] can reach. The document is
//! written after the object, and a client is told an object is stored only
//! once both are; a crash between the two leaves an object without a
//! document (it is still served, without its SHA-256) that no client was
//! told of.

use chrono::{DateTime, Utc};
use object_store::path::Path;
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

/// The path of `key`'s metadata document.
pub(crate) fn meta_path(key: &Key) -> Path {
    Path::from(format!("{META_ROOT}/{key}.json"))
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

    #[test]
    fn meta_documents_round_trip() {
        let doc = MetaDoc {
            size: 3,
            sha256: "ab".repeat(32),
            content_type: Some("text/plain".into()),
            name: None,
        };
        let json = serde_json::to_vec(&doc).unwrap();
        assert_eq!(serde_json::from_slice::<MetaDoc>(&json).unwrap(), doc);
    }
}
