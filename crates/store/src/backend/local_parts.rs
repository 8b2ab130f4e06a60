//! [`LocalParts`]: numbered parts for the local backend, so that a
//! resumable upload on local disk can stop between requests and go on
//! later, in another process.
//!
//! `LocalFileSystem`'s own multipart upload writes one staging file
//! through a handle that lives in the process: nothing of it can be found
//! again after a restart. Here each part is a file of its own,
//! `.corral/parts/{upload}/{index}`, written whole, `fsync`'d and renamed
//! into place, so a part is either complete or absent. Completing an
//! upload copies the parts in order into a staging file beside the object
//! (`{file}#{digits}`, the name the orphan sweep already knows), `fsync`s
//! it, renames it into place and removes the parts. The copy costs a read
//! and a write of every byte once more: a local disk does that at hundreds
//! of MiB/s, and the batch API, which has no need to stop half-way, keeps
//! `LocalFileSystem`'s single staging file.
//!
//! Only resumable uploads use this: see [`crate::backend::Backend`]'s
//! `resumable_parts`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path as FsPath, PathBuf};

use async_trait::async_trait;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, PutPayload, PutResult};

/// Where the parts of uploads in progress live, under the store's root.
pub(crate) const PARTS_DIR: &str = ".corral/parts";

/// Numbered parts in files under a local directory.
#[derive(Debug)]
pub(crate) struct LocalParts {
    root: PathBuf,
}

impl LocalParts {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn upload_dir(&self, id: &MultipartId) -> object_store::Result<PathBuf> {
        // Ids are made here (a UUID); one from elsewhere must not reach
        // outside the parts directory.
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(object_store::Error::NotFound {
                path: id.clone(),
                source: "no such multipart upload".into(),
            });
        }
        Ok(self.root.join(PARTS_DIR).join(id))
    }

    fn file(&self, path: &Path) -> PathBuf {
        self.root.join(path.as_ref())
    }
}

/// Runs blocking file work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    path: String,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> object_store::Result<T> {
    let joined = tokio::task::spawn_blocking(work).await;
    let result = joined.map_err(|e| object_store::Error::Generic {
        store: "LocalParts",
        source: Box::new(e),
    })?;
    result.map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => object_store::Error::NotFound {
            path,
            source: Box::new(source),
        },
        _ => object_store::Error::Generic {
            store: "LocalParts",
            source: Box::new(source),
        },
    })
}

/// Writes `bytes` to `path` whole: a staging file, `fsync`'d, renamed into
/// place, its directory `fsync`'d.
fn write_whole(path: &FsPath, payload: &PutPayload) -> io::Result<()> {
    let dir = path.parent().expect("a part has a directory");
    fs::create_dir_all(dir)?;
    let staging = path.with_extension("partial");
    let mut file = File::create(&staging)?;
    for chunk in payload.iter() {
        file.write_all(chunk)?;
    }
    file.sync_all()?;
    fs::rename(&staging, path)?;
    File::open(dir)?.sync_all()
}

#[async_trait]
impl MultipartStore for LocalParts {
    async fn create_multipart(&self, _path: &Path) -> object_store::Result<MultipartId> {
        let id = uuid::Uuid::now_v7().to_string();
        let dir = self.upload_dir(&id)?;
        blocking(id.clone(), move || fs::create_dir_all(dir)).await?;
        Ok(id)
    }

    async fn put_part(
        &self,
        _path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        let dir = self.upload_dir(id)?;
        let file = dir.join(part_idx.to_string());
        blocking(id.clone(), move || {
            // A part of an aborted or completed upload has nowhere to go.
            if !dir.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no such multipart upload",
                ));
            }
            write_whole(&file, &data)
        })
        .await?;
        Ok(PartId {
            content_id: part_idx.to_string(),
        })
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        let dir = self.upload_dir(id)?;
        let target = self.file(path);
        // `{file}#{digits}`: the staging name the orphan sweep removes.
        let digits = u128::from_str_radix(&id.replace('-', ""), 16).unwrap_or_default();
        let staging = PathBuf::from(format!("{}#{digits}", target.display()));
        blocking(id.clone(), move || {
            let parent = target.parent().expect("an object has a directory");
            fs::create_dir_all(parent)?;
            let mut out = File::create(&staging)?;
            for part in &parts {
                let mut input = File::open(dir.join(&part.content_id))?;
                io::copy(&mut input, &mut out)?;
            }
            out.sync_all()?;
            fs::rename(&staging, &target)?;
            File::open(parent)?.sync_all()?;
            fs::remove_dir_all(&dir)
        })
        .await?;
        Ok(PutResult {
            e_tag: None,
            version: None,
            extensions: Default::default(),
        })
    }

    async fn abort_multipart(&self, _path: &Path, id: &MultipartId) -> object_store::Result<()> {
        let dir = self.upload_dir(id)?;
        blocking(id.clone(), move || match fs::remove_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(bytes: &'static [u8]) -> PutPayload {
        PutPayload::from_static(bytes)
    }

    #[tokio::test]
    async fn parts_survive_their_handle_and_complete_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = Path::from("t/a/file.bin");
        let id = LocalParts::new(dir.path().into())
            .create_multipart(&path)
            .await
            .unwrap();
        // Written by one handle, completed by another: a restart between.
        let first = LocalParts::new(dir.path().into());
        let second_part = first.put_part(&path, &id, 1, payload(b"world")).await;
        let first_part = first.put_part(&path, &id, 0, payload(b"hello ")).await;
        let parts = vec![first_part.unwrap(), second_part.unwrap()];
        let second = LocalParts::new(dir.path().into());
        second.complete_multipart(&path, &id, parts).await.unwrap();
        let stored = fs::read(dir.path().join("t/a/file.bin")).unwrap();
        assert_eq!(stored, b"hello world");
        assert!(!dir.path().join(PARTS_DIR).join(&id).exists());
        let late = second.put_part(&path, &id, 2, payload(b"!")).await;
        assert!(matches!(late, Err(object_store::Error::NotFound { .. })));
    }

    #[tokio::test]
    async fn an_abort_removes_every_part_and_a_strange_id_reaches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let parts = LocalParts::new(dir.path().into());
        let path = Path::from("f");
        let id = parts.create_multipart(&path).await.unwrap();
        parts.put_part(&path, &id, 0, payload(b"x")).await.unwrap();
        parts.abort_multipart(&path, &id).await.unwrap();
        assert!(!dir.path().join(PARTS_DIR).join(&id).exists());
        // Twice is no error.
        parts.abort_multipart(&path, &id).await.unwrap();
        let escape = "../../etc".to_owned();
        let refused = parts.put_part(&path, &escape, 0, payload(b"x")).await;
        assert!(matches!(refused, Err(object_store::Error::NotFound { .. })));
    }
}
