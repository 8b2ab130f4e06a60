//! Spooling a batch: a [`JobWriter`] writes each of its files to the spool
//! directory through a [`FileWriter`], hashing them and taking bytes of the
//! budget as they come, then syncs them and commits the job to the journal
//! before handing it to the workers. Until that commit nothing of the
//! batch is a job: a writer dropped before removes its directory and gives
//! its bytes back, which is what makes a `202` mean "on disk".

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::{SpoolError, io};
use super::job::{FileState, Job, JobFile};
use super::shared::Shared;
use crate::key::Key;

/// A batch being spooled: see [`Spool::begin`](super::Spool::begin).
#[derive(Debug)]
pub struct JobWriter {
    shared: Arc<Shared>,
    job: Job,
    dir: PathBuf,
    /// The tenant's own budget.
    tenant_max: Option<u64>,
    /// Bytes of the budget this batch holds.
    reserved: u64,
    /// File bytes written so far.
    written: u64,
    committed: bool,
}

impl JobWriter {
    /// Takes `expected` bytes of the budgets and makes the batch's
    /// directory: [`Spool::begin`](super::Spool::begin).
    pub(super) async fn begin(
        shared: Arc<Shared>,
        tenant: &str,
        tenant_max: Option<u64>,
        expected: u64,
    ) -> Result<Self, SpoolError> {
        shared.budget.reserve(tenant, expected, tenant_max)?;
        let id = uuid::Uuid::now_v7().to_string();
        let dir = shared.job_dir(&id);
        if let Err(e) = tokio::fs::create_dir(&dir).await {
            shared.budget.release(tenant, expected);
            return Err(io(&dir)(e));
        }
        Ok(Self {
            shared,
            job: Job {
                id,
                tenant: tenant.to_owned(),
                created: Utc::now(),
                ended: None,
                files: Vec::new(),
            },
            dir,
            tenant_max,
            reserved: expected,
            written: 0,
            committed: false,
        })
    }

    /// Starts the next file, to be stored as `key`.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Io`] if the file cannot be created.
    pub async fn file(
        &mut self,
        key: &Key,
        name: &str,
        content_type: Option<String>,
    ) -> Result<FileWriter<'_>, SpoolError> {
        let path = self.shared.file_path(&self.job.id, self.job.files.len());
        let out = tokio::fs::File::create(&path).await.map_err(io(&path))?;
        self.job.files.push(JobFile {
            key: key.as_str().to_owned(),
            name: name.to_owned(),
            size: 0,
            sha256: String::new(),
            content_type,
            state: FileState::Pending,
            attempts: 0,
            error: None,
        });
        Ok(FileWriter {
            writer: self,
            out,
            path,
            hasher: Sha256::new(),
        })
    }

    /// Makes the batch durable: syncs its directory and the spool's, and
    /// commits its job to the journal, then starts its upload. Only after
    /// this may the batch be acknowledged.
    ///
    /// The commit runs to its end even if the caller is dropped half-way
    /// (the client went away): a job the journal holds always has its
    /// files.
    ///
    /// # Errors
    ///
    /// [`SpoolError`] if the disk or the journal fails; the batch is then
    /// removed.
    pub async fn commit(self) -> Result<Job, SpoolError> {
        tokio::spawn(self.commit_to_end())
            .await
            .expect("committing a batch does not panic")
    }

    async fn commit_to_end(mut self) -> Result<Job, SpoolError> {
        let dirs = [self.dir.clone(), self.shared.dir.clone()];
        tokio::task::spawn_blocking(move || {
            dirs.iter().try_for_each(|dir| {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(dir))
            })
        })
        .await
        .expect("syncing a directory does not panic")?;
        self.shared.journal.save(&self.job).await?;
        self.committed = true;
        // The job holds its files' bytes of the budget from now on.
        (self.shared.budget).release(&self.job.tenant, self.reserved - self.written);
        self.shared.start(self.job.id.clone());
        Ok(self.job.clone())
    }
}

impl Drop for JobWriter {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        self.shared.budget.release(&self.job.tenant, self.reserved);
        let dir = self.dir.clone();
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(path = %dir.display(), error = %e, "removing an unfinished spool directory failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// One file being spooled.
#[derive(Debug)]
pub struct FileWriter<'w> {
    writer: &'w mut JobWriter,
    out: tokio::fs::File,
    path: PathBuf,
    hasher: Sha256,
}

impl FileWriter<'_> {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.writer.job.files.last().expect("this file").size
    }

    /// Appends `chunk`.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Full`] if the spool's budget is spent,
    /// [`SpoolError::Io`] if the disk fails.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        let len = chunk.len() as u64;
        let writer = &mut *self.writer;
        if writer.written + len > writer.reserved {
            let more = writer.written + len - writer.reserved;
            (writer.shared.budget).reserve(&writer.job.tenant, more, writer.tenant_max)?;
            writer.reserved += more;
        }
        writer.written += len;
        self.out.write_all(chunk).await.map_err(io(&self.path))?;
        self.hasher.update(chunk);
        self.writer.job.files.last_mut().expect("this file").size += len;
        Ok(())
    }

    /// Syncs the file to disk; returns its size and SHA-256.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Io`] if the disk fails.
    pub async fn finish(mut self) -> Result<(u64, String), SpoolError> {
        self.out.flush().await.map_err(io(&self.path))?;
        self.out.sync_all().await.map_err(io(&self.path))?;
        let sha256 = hex::encode(self.hasher.finalize_reset());
        let file = self.writer.job.files.last_mut().expect("this file");
        file.sha256.clone_from(&sha256);
        Ok((file.size, sha256))
    }
}
