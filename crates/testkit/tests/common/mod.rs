//! What the tests of the S3 servers share.

#![allow(dead_code, unreachable_pub)]

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Stores `parts` at `path` as one multipart upload, part by part in
/// order.
pub async fn put_parts(store: &impl ObjectStore, path: &Path, parts: &[Vec<u8>]) {
    let mut upload = store.put_multipart(path).await.unwrap();
    for part in parts {
        upload
            .put_part(PutPayload::from(part.clone()))
            .await
            .unwrap();
    }
    upload.complete().await.unwrap();
}
