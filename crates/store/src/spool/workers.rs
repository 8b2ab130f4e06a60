//! The workers: tasks that carry the files of committed jobs from the
//! spool to the store, retrying whatever may go away, record the outcomes
//! in the journal, and give the stored bytes back to the budget; and the
//! runner that every minute resumes the jobs nobody works on and forgets
//! those ended long ago. They work on the [`Shared`] state alone, so that
//! a batch just committed can start its upload from below the `Spool`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::Utc;
use corral_sched::Refused;
use tokio::io::AsyncReadExt;

use super::error::SpoolError;
use super::job::{FileState, Job, JobFile, JobState};
use super::journal::PRUNE_BATCH;
use super::shared::Shared;
use crate::error::{Error, error_chain};
use crate::key::Key;

/// How often, at most, a job's progress is written to the journal.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// How often the journal is read for jobs to resume and jobs to forget.
const SCAN_EVERY: Duration = Duration::from_secs(60);

/// Bytes read from a spool file at a time.
const CHUNK: usize = 64 << 10;

/// The first and the longest wait between attempts at a file.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Shared {
    /// Every minute, starts a task on every unfinished job that has none
    /// (those found when the spool opened, and any whose task ended early)
    /// and forgets the jobs that ended more than `keep_jobs` ago.
    pub(super) async fn run(self: Arc<Self>) {
        loop {
            match self.journal.unfinished().await {
                Ok(jobs) => jobs.into_iter().for_each(|job| self.start(job.id)),
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "reading the spool journal failed")
                }
            }
            if let Err(e) = self.prune().await {
                tracing::error!(error = %error_chain(&e), "forgetting old jobs failed");
            }
            tokio::select! {
                () = tokio::time::sleep(SCAN_EVERY) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Starts a task on job `id` unless one works on it already. The task
    /// reads the job afresh: a job read before another task finished it
    /// is not redone.
    pub(super) fn start(self: &Arc<Self>, id: String) {
        let fresh = (self.running.lock())
            .expect("no panic while holding the lock")
            .insert(id.clone());
        if !fresh {
            return;
        }
        let shared = Arc::clone(self);
        self.tasks.spawn(async move {
            match shared.journal.job(&id).await {
                Ok(Some(job)) if !job.finished() => shared.work(job).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(job = %id, error = %error_chain(&e), "reading a job failed")
                }
            }
            (shared.running.lock())
                .expect("no panic while holding the lock")
                .remove(&id);
        });
    }

    /// Forgets the jobs that ended more than `keep_jobs` ago.
    async fn prune(&self) -> Result<(), SpoolError> {
        let Some(cutoff) = chrono::Duration::from_std(self.keep_jobs)
            .ok()
            .and_then(|keep| Utc::now().checked_sub_signed(keep))
        else {
            return Ok(());
        };
        loop {
            let forgotten = self.journal.prune(cutoff).await?;
            // Failed jobs keep their refused files until now.
            for id in &forgotten {
                self.remove_job_dir(id).await;
            }
            if !forgotten.is_empty() {
                tracing::info!(jobs = forgotten.len(), "forgot jobs that ended long ago");
            }
            if forgotten.len() < PRUNE_BATCH {
                return Ok(());
            }
        }
    }

    /// Stores each pending file of `job`, one after another, recording
    /// outcomes in the journal at most every [`RECORD_EVERY`] and when the
    /// job ends (a batch of a thousand small files is not a thousand
    /// rewrites of its job).
    async fn work(&self, mut job: Job) {
        let mut unrecorded = Vec::new();
        let mut recorded_at = Instant::now();
        for index in 0..job.files.len() {
            if job.files[index].state != FileState::Pending {
                continue;
            }
            let Some(outcome) = self.store_file(&job, index).await else {
                // Stopping: what was done is recorded, the rest resumes.
                self.record(&job, &mut unrecorded).await;
                return;
            };
            let file = &mut job.files[index];
            file.attempts = outcome.attempts;
            match outcome.error {
                None => {
                    file.state = FileState::Stored;
                    file.error = None;
                }
                Some(error) => {
                    file.state = FileState::Failed;
                    file.error = Some(error);
                }
            }
            unrecorded.push(index);
            if job.finished() {
                job.ended = Some(Utc::now());
            }
            if job.finished() || recorded_at.elapsed() >= RECORD_EVERY {
                if !self.record(&job, &mut unrecorded).await {
                    return;
                }
                recorded_at = Instant::now();
            }
        }
        match job.state() {
            JobState::Failed => {
                let dir = self.job_dir(&job.id);
                tracing::warn!(job = %job.id, kept = %dir.display(), "asynchronous upload failed; the refused files stay in the spool until the job is forgotten");
            }
            _ => {
                self.remove_job_dir(&job.id).await;
                tracing::info!(job = %job.id, files = job.files.len(), "asynchronous upload done");
            }
        }
    }

    /// Saves `job` with the outcomes of its files `unrecorded`, then
    /// removes the spool files of those stored and gives their bytes back
    /// to the budget. A file the store refused keeps its bytes in the
    /// spool (out of the budget) until the job is forgotten, for an
    /// operator to recover. False if the journal failed.
    async fn record(&self, job: &Job, unrecorded: &mut Vec<usize>) -> bool {
        if unrecorded.is_empty() {
            return true;
        }
        if let Err(e) = self.journal.save(job).await {
            // Files stored but not recorded are stored again when the job
            // resumes, which writes the same bytes to the same keys.
            tracing::error!(job = %job.id, error = %error_chain(&e), "recording stored files failed");
            return false;
        }
        for index in unrecorded.drain(..) {
            let file = &job.files[index];
            if file.state == FileState::Stored {
                let path = self.file_path(&job.id, index);
                if let Err(e) = tokio::fs::remove_file(&path).await {
                    tracing::warn!(path = %path.display(), error = %e, "removing a spool file failed");
                }
            }
            self.budget.release(&job.tenant, file.size);
        }
        true
    }

    async fn remove_job_dir(&self, id: &str) {
        let dir = self.job_dir(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "removing a job's spool directory failed")
            }
        }
    }

    /// Tries to store file `index` of `job` until it is stored or fails for
    /// good; `None` if the spool is stopping first.
    async fn store_file(&self, job: &Job, index: usize) -> Option<Outcome> {
        let file = &job.files[index];
        let mut attempts = file.attempts;
        let mut backoff = BACKOFF_FIRST;
        let stop = &self.stop;
        loop {
            let attempt = async {
                let _worker = self.workers.acquire().await.expect("never closed");
                let group = match self.store.scheduler().group(&job.tenant) {
                    Ok(group) => group,
                    Err(
                        Refused::Overloaded { retry_after } | Refused::Unavailable { retry_after },
                    ) => {
                        return Err(Retry::After(retry_after));
                    }
                    Err(_) => return Err(Retry::Stop),
                };
                let key = Key::parse(&file.key).map_err(|e| Retry::Never(e.to_string()))?;
                let store = &self.store;
                // The last attempt's cleanup first: a late delete of it must
                // not remove this attempt's object.
                store.settled(&key).await;
                if file.size > store.config().multipart_threshold as u64 {
                    // An earlier attempt, maybe in a process that died, may
                    // have left a multipart upload open. (Attempts are
                    // recorded only when a file is done, so a resumed job
                    // cannot tell; one listing per large file is cheap.)
                    if let Err(e) = store.abort_unfinished(&key).await {
                        tracing::warn!(key = %file.key, error = %error_chain(&e), "aborting earlier uploads failed");
                    }
                }
                attempts += 1;
                let path = self.file_path(&job.id, index);
                self.upload(&group, key, file, &path).await
            };
            let result = tokio::select! {
                result = attempt => result,
                () = stop.cancelled() => return None,
            };
            let wait = match result {
                Ok(()) => {
                    return Some(Outcome {
                        attempts,
                        error: None,
                    });
                }
                Err(Retry::Never(error)) => {
                    tracing::warn!(job = %job.id, key = %file.key, %error, "the store refused a spooled file");
                    return Some(Outcome {
                        attempts,
                        error: Some(error),
                    });
                }
                Err(Retry::Stop) => return None,
                Err(Retry::After(wait)) => wait,
                Err(Retry::Backoff(error)) => {
                    tracing::warn!(job = %job.id, key = %file.key, attempts, %error, "storing a spooled file failed; retrying");
                    let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    /// One attempt at storing `file` from `path` as `key`.
    async fn upload(
        &self,
        group: &corral_sched::Group,
        key: Key,
        file: &JobFile,
        path: &Path,
    ) -> Result<(), Retry> {
        // Only a missing spool file is final; the disk may recover from
        // anything else (too many open files, an I/O error).
        let mut source = tokio::fs::File::open(path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Retry::Never(format!("its spool file is gone: {e}"))
            } else {
                Retry::Backoff(format!("opening its spool file failed: {e}"))
            }
        })?;
        let store = &self.store;
        let mut upload = store.upload(
            group,
            key,
            Some(file.size),
            file.content_type.clone(),
            Some(file.name.clone()),
        );
        loop {
            let mut chunk = BytesMut::with_capacity(CHUNK);
            let read = source
                .read_buf(&mut chunk)
                .await
                .map_err(|e| Retry::Backoff(format!("reading its spool file failed: {e}")))?;
            if read == 0 {
                break;
            }
            upload.write(chunk.freeze()).await.map_err(Retry::from)?;
        }
        let stored = upload.finish().await.map_err(Retry::from)?;
        if stored.sha256 != file.sha256 || stored.size != file.size {
            // The spool file changed after it was acknowledged: what was
            // stored is not what the client sent.
            let key = Key::parse(&file.key).expect("checked above");
            store.delete_all(vec![key]).await;
            return Err(Retry::Never(format!(
                "its spool file was damaged: SHA-256 {} instead of {}",
                stored.sha256, file.sha256
            )));
        }
        Ok(())
    }
}

/// How a file's attempt ended, when it did not store it.
enum Retry {
    /// Try again after this long.
    After(Duration),
    /// Try again after the file's backoff.
    Backoff(String),
    /// It will never be stored.
    Never(String),
    /// The spool is stopping.
    Stop,
}

impl From<Error> for Retry {
    fn from(error: Error) -> Self {
        match error {
            Error::Overloaded { retry_after } | Error::Unavailable { retry_after } => {
                Self::After(retry_after)
            }
            Error::Cancelled => Self::Stop,
            error if error.rejects_object() => Self::Never(error_chain(&error)),
            error => Self::Backoff(error_chain(&error)),
        }
    }
}

/// The end of a file's attempts.
struct Outcome {
    attempts: u32,
    /// Why it failed for good; `None` if stored.
    error: Option<String>,
}
