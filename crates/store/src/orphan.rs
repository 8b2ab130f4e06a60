//! Finding and removing multipart uploads that nobody will complete.
//!
//! corral aborts the multipart upload of every failed, cancelled or
//! rejected upload itself. What it cannot abort is the upload of a process
//! that died (a crash, `kill -9`, a lost machine): real providers keep its
//! parts, and bill them, until someone aborts it. So on startup and then
//! every `--orphan-sweep`, the store lists the multipart uploads under its
//! prefix and aborts those started more than `--orphan-age` ago (24 h by
//! default: far longer than any live upload, so two corral processes
//! sharing a prefix never abort each other's work).
//!
//! - **S3**: `object_store` has no call that lists multipart uploads, so
//!   this module sends `ListMultipartUploads` itself, signed with AWS
//!   Signature Version 4 by `aws-sigv4` (the AWS SDK's signer) using the
//!   same credentials as `object_store`. Aborts go through `object_store`.
//!   Both are scheduler calls of the store's system group, so a sweep
//!   counts against the same limit as uploads.
//! - **Local directory**: `object_store` writes a file at `{key}#{n}` and
//!   renames it into place; a crash leaves that file. Keys never contain
//!   `#` (see [`crate::key`]), so such files are always leftovers.
//! - **GCS and Azure**: not swept (see [`Orphans::Unsupported`]).

use std::path::Path as FsPath;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use object_store::path::Path;

use crate::backend::s3_uploads::Pending;
use crate::backend::{Orphans, S3Uploads};
use crate::client::Client;
use crate::error::{Error, Result, error_chain};
use crate::key::Key;

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Abandoned uploads aborted (or staging files removed).
    pub aborted: usize,
    /// Uploads in progress left alone because they are younger than the age.
    pub young: usize,
}

impl Client {
    /// Sweeps now, then every `every`, until [`Client::close`] or until
    /// the last handle on the store is dropped.
    pub(crate) fn start_sweeper(&self, every: Duration, age: Duration) {
        let (weak, stop) = (self.downgrade(), self.stopping().clone());
        self.spawn_cleanup(async move {
            loop {
                let Some(client) = weak.upgrade() else {
                    return;
                };
                tokio::select! {
                    swept = client.sweep_orphans(age) => match swept {
                        Ok(swept) if swept.aborted > 0 => tracing::info!(
                            aborted = swept.aborted, in_progress = swept.young,
                            "swept abandoned multipart uploads"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(
                            error = %error_chain(&e), "sweeping abandoned multipart uploads failed"
                        ),
                    },
                    () = stop.cancelled() => return,
                }
                drop(client);
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// Aborts the multipart uploads under this store's prefix that were
    /// started more than `age` ago (on S3, listed with `ListMultipartUploads`;
    /// on a local disk, the staging files `object_store` leaves).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if listing fails. A failed abort is logged and
    /// the sweep goes on; the next sweep tries it again.
    pub(crate) async fn sweep_orphans(&self, age: Duration) -> Result<Swept> {
        let cutoff = SystemTime::now() - age;
        match self.orphans() {
            Orphans::None | Orphans::Unsupported(_) => Ok(Swept::default()),
            Orphans::Local(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || sweep_dir(&dir, cutoff))
                    .await
                    .map_err(|e| Error::Panicked {
                        message: e.to_string(),
                    })
            }
            Orphans::S3(uploads) => self.sweep_s3(uploads, cutoff.into()).await,
        }
    }

    /// Aborts every multipart upload still open for exactly `key`, whatever
    /// its age, and returns how many it aborted. For a writer that alone
    /// writes `key` and is about to write it again: a resumed asynchronous
    /// upload, whose earlier attempt may have died with its process.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if listing fails.
    pub(crate) async fn abort_unfinished(&self, key: &Key) -> Result<usize> {
        match self.orphans() {
            Orphans::None | Orphans::Unsupported(_) => Ok(0),
            Orphans::Local(dir) => {
                let path = dir.join(key.as_str());
                let removed = tokio::task::spawn_blocking(move || remove_staging_files(&path));
                removed.await.map_err(|e| Error::Panicked {
                    message: e.to_string(),
                })
            }
            Orphans::S3(uploads) => {
                let full_key = format!("{}{}", uploads.prefix(), key.as_str());
                self.abort_listed(uploads, key.as_str(), |upload| upload == full_key)
                    .await
            }
        }
    }

    /// Aborts every multipart upload under the directory `dir`, whatever
    /// its age: for rolling back a batch (see [`crate::batch`]). Local
    /// staging files are not looked at: those of a live process belong to
    /// uploads that abort themselves, and those of a dead one are removed
    /// when the store is opened.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if listing fails for good.
    pub(crate) async fn abort_uploads_under(&self, dir: &Key) -> Result<usize> {
        match self.orphans() {
            Orphans::S3(uploads) => {
                let under = format!("{}{}/", uploads.prefix(), dir.as_str());
                let listed = format!("{}/", dir.as_str());
                let aborted = self
                    .abort_listed(uploads, &listed, |upload| upload.starts_with(&under))
                    .await;
                match aborted {
                    // A store that cannot list multipart uploads (s3s-fs
                    // answers `501`) or will not let corral: what its
                    // uploads leave is for the provider's lifecycle rules,
                    // as for the orphan sweep.
                    Err(e) if !e.is_transient() => {
                        tracing::warn!(%dir, error = %error_chain(&e), "cannot list multipart uploads to roll a batch back; open uploads under it, if any, are left to the store's lifecycle rules");
                        Ok(0)
                    }
                    aborted => aborted,
                }
            }
            Orphans::None | Orphans::Unsupported(_) | Orphans::Local(_) => Ok(0),
        }
    }

    /// Lists the multipart uploads whose keys start with `under` (relative
    /// to the store's prefix) and aborts those whose full key `matches`.
    async fn abort_listed(
        &self,
        uploads: &S3Uploads,
        under: &str,
        matches: impl Fn(&str) -> bool,
    ) -> Result<usize> {
        let mut aborted = 0;
        let mut marker = None;
        loop {
            let page = self
                .call(self.system(), under, 0, || {
                    uploads.list(under, marker.clone())
                })
                .await?;
            for upload in page.uploads.iter().filter(|u| matches(&u.key)) {
                if self.abort_orphan(upload).await {
                    aborted += 1;
                }
            }
            marker = page.next;
            if marker.is_none() {
                return Ok(aborted);
            }
        }
    }

    async fn sweep_s3(&self, uploads: &S3Uploads, cutoff: DateTime<Utc>) -> Result<Swept> {
        let mut swept = Swept::default();
        let mut marker = None;
        loop {
            let page = self
                .call(self.system(), "", 0, || uploads.list("", marker.clone()))
                .await?;
            let (old, young) = abandoned(page.uploads, cutoff);
            swept.young += young;
            for upload in old {
                if self.abort_orphan(&upload).await {
                    swept.aborted += 1;
                }
            }
            marker = page.next;
            if marker.is_none() {
                return Ok(swept);
            }
        }
    }

    async fn abort_orphan(&self, upload: &Pending) -> bool {
        let parts = self.parts().expect("an S3 store has parts");
        let Ok(path) = Path::parse(&upload.key) else {
            tracing::warn!(key = %upload.key, "not aborting an upload whose key object_store cannot name");
            return false;
        };
        let backend = &parts.store;
        let aborted = self
            .call(self.system(), &upload.key, 0, || {
                backend.abort_multipart(&path, &upload.upload_id)
            })
            .await;
        match aborted {
            Ok(()) => {
                tracing::info!(key = %upload.key, initiated = %upload.initiated, "aborted an abandoned multipart upload");
                true
            }
            // Completed or aborted by someone else since the listing.
            Err(Error::NotFound { .. }) => false,
            Err(e) => {
                tracing::warn!(key = %upload.key, error = %error_chain(&e), "aborting an abandoned multipart upload failed");
                false
            }
        }
    }
}

/// The uploads started before `cutoff`, and how many are younger.
fn abandoned(uploads: Vec<Pending>, cutoff: DateTime<Utc>) -> (Vec<Pending>, usize) {
    let (old, young): (Vec<_>, Vec<_>) = uploads.into_iter().partition(|u| u.initiated < cutoff);
    (old, young.len())
}

/// Removes staging files older than `cutoff` under `dir`.
fn sweep_dir(dir: &FsPath, cutoff: SystemTime) -> Swept {
    let mut swept = Swept::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let path = entry.path();
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            if !is_staging_file(&entry.file_name().to_string_lossy()) {
                continue;
            }
            if meta.modified().is_ok_and(|modified| modified >= cutoff) {
                swept.young += 1;
            } else if std::fs::remove_file(&path).is_ok() {
                tracing::info!(path = %path.display(), "removed an abandoned staging file");
                swept.aborted += 1;
            }
        }
    }
    swept
}

/// Removes the staging files of the object at `path`; returns how many.
fn remove_staging_files(path: &FsPath) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let name = name.to_string_lossy();
    entries
        .flatten()
        .filter(|entry| {
            let file = entry.file_name();
            let file = file.to_string_lossy();
            is_staging_file(&file) && file.rsplit_once('#').is_some_and(|(stem, _)| stem == name)
        })
        .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
        .count()
}

/// `object_store`'s local staging files are named `{file}#{digits}`.
fn is_staging_file(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(file, suffix)| {
        !file.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_files_are_told_from_keys() {
        assert!(is_staging_file("report.pdf#1"));
        assert!(is_staging_file("a#b#42"));
        for name in ["report.pdf", "#1", "a#", "a#1x", "a#b"] {
            assert!(!is_staging_file(name), "{name}");
        }
    }

    #[test]
    fn uploads_older_than_the_cutoff_are_abandoned() {
        let upload = |key: &str, initiated: &str| Pending {
            key: key.to_owned(),
            upload_id: format!("id-{key}"),
            initiated: initiated.parse().unwrap(),
        };
        let uploads = vec![
            upload("p/t/été.bin", "2026-11-20T10:00:00Z"),
            upload("p/t/a b.bin", "2026-11-23T10:00:00Z"),
        ];
        let cutoff = "2026-11-22T00:00:00Z".parse().unwrap();
        let (old, young) = abandoned(uploads, cutoff);
        assert_eq!(young, 1);
        assert_eq!(old.len(), 1);
        assert_eq!(
            (old[0].key.as_str(), old[0].upload_id.as_str()),
            ("p/t/été.bin", "id-p/t/été.bin")
        );
    }

    #[test]
    fn old_staging_files_are_removed_and_young_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("t/2026-11-23");
        std::fs::create_dir_all(&sub).unwrap();
        let old = sub.join("a.bin#3");
        let young = sub.join("b.bin#1");
        let object = sub.join("c.bin");
        for path in [&old, &young, &object] {
            std::fs::write(path, b"x").unwrap();
        }
        let day_ago = SystemTime::now() - Duration::from_secs(25 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(day_ago)
            .unwrap();
        let object_file = std::fs::File::options().write(true).open(&object).unwrap();
        object_file.set_modified(day_ago).unwrap();

        let cutoff = SystemTime::now() - Duration::from_secs(24 * 3600);
        let swept = sweep_dir(dir.path(), cutoff);
        assert_eq!(
            swept,
            Swept {
                aborted: 1,
                young: 1
            }
        );
        assert!(!old.exists());
        assert!(young.exists());
        assert!(object.exists(), "objects are never swept, however old");
    }
}
