//! Durable asynchronous uploads: a local spool, a journal, and the workers
//! that carry spooled files to the store.
//!
//! # What `202` promises
//!
//! An asynchronous batch is answered `202` only once every byte of it is on
//! the local disk, `fsync`'d, and its job is committed to the journal. From
//! then on it survives the process: a deploy, a crash or `kill -9`, a
//! backend that is down for an hour. Workers upload spooled files through
//! the scheduler, as jobs of the batch's tenant, retrying every failure
//! that may go away (a throttle, a timeout, a connection reset, a 5xx) with
//! backoff for as long as it takes; a file fails only on a permanent error
//! (the store rejects the object, see [`Error::rejects_object`]). Stored
//! files are recorded in the journal (at most once a second per job, and
//! when it ends), then their spool files removed.
//!
//! # Layout and recovery
//!
//! ```text
//! {spool}/journal.redb      jobs and the state of each file (redb)
//! {spool}/{job-id}/{n}      the n-th file of a job, until stored
//! ```
//!
//! The journal is [redb](https://docs.rs/redb): an embedded ACID store in
//! one file, in pure Rust, whose commits are durable when they return. A
//! job's files are written and `fsync`'d (with their directory) before its
//! journal entry is committed, so a committed job always has its bytes. On
//! opening, every job in the journal that is not finished resumes, and
//! every directory the journal does not know (the half-written spool of a
//! request that was never answered `202`) is removed.
//!
//! Keys are chosen when the batch is spooled, so an upload repeated after a
//! crash (the object was stored, the journal had not recorded it yet)
//! writes the same bytes to the same key. Before such a repeat, the
//! multipart uploads the crashed attempt may have left open for that key
//! are aborted ([`Store::abort_unfinished`]).
//!
//! The journal keeps every job until [`SpoolConfig::keep_jobs`] after it
//! ended (so that its client can still ask how it went), then forgets it;
//! a second table indexes the unfinished ones, so resuming reads only
//! those, however many jobs the journal keeps.
//!
//! # Budget
//!
//! The spool holds at most [`SpoolConfig::max_bytes`] of file bytes not yet
//! stored; a batch that would pass it is refused ([`SpoolError::Full`],
//! `429` over HTTP) instead of filling the disk. A tenant may have a
//! budget of its own within it ([`SpoolError::TenantFull`]), so that one
//! tenant cannot fill the spool for all. At most
//! [`SpoolConfig::workers`] files are uploaded at once, so the memory
//! workers buffer is bounded too; the scheduler decides how many backend
//! calls they make.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use corral_sched::Refused;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::error::error_chain;
use crate::key::Key;
use crate::store::Store;

/// The journal's jobs: job id to the job, as JSON. Ids are UUIDv7, so the
/// table is in the order the jobs were created.
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

/// The ids of the jobs not finished.
const PENDING: TableDefinition<&str, ()> = TableDefinition::new("pending");

/// Jobs forgotten at most in one journal transaction.
const PRUNE_BATCH: usize = 10_000;

/// How often, at most, a job's progress is written to the journal.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// How often the journal is read for jobs to resume and jobs to forget.
const SCAN_EVERY: Duration = Duration::from_secs(60);

/// The journal's file name in the spool directory.
const JOURNAL: &str = "journal.redb";

/// Bytes read from a spool file at a time.
const CHUNK: usize = 64 << 10;

/// The first and the longest wait between attempts at a file.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Where the spool lives and what it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The spool directory; created if missing.
    pub dir: PathBuf,
    /// The most file bytes the spool may hold, not yet stored.
    pub max_bytes: u64,
    /// Files uploaded at once.
    pub workers: usize,
    /// How long a job's record is kept once it ended; `GET /api/jobs/{id}`
    /// answers `404` after.
    pub keep_jobs: Duration,
}

/// Why a batch cannot be spooled, or the spool cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds its budget of bytes not yet stored.
    #[error("the spool is full ({used} of {max} bytes wait to be stored)")]
    Full {
        /// Bytes waiting now.
        used: u64,
        /// The budget.
        max: u64,
    },
    /// The tenant's batches in the spool hold its budget.
    #[error("tenant {tenant:?} has {used} of its {max} bytes waiting in the spool")]
    TenantFull {
        /// The tenant.
        tenant: String,
        /// Its bytes waiting now.
        used: u64,
        /// Its budget.
        max: u64,
    },
    /// The local disk failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The journal failed.
    #[error("spool journal: {0}")]
    Journal(#[from] redb::Error),
    /// A job in the journal cannot be decoded (written by another version
    /// of corral?).
    #[error("spool journal: job {id} is unreadable: {reason}")]
    Unreadable {
        /// The job's id.
        id: String,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One asynchronous batch, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Its id, a UUIDv7.
    pub id: String,
    /// The tenant's root key segment.
    pub tenant: String,
    /// When it was accepted.
    pub created: DateTime<Utc>,
    /// When its last file was stored or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<DateTime<Utc>>,
    /// Its files, in the order they were sent.
    pub files: Vec<JobFile>,
}

/// One file of a [`Job`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    /// Its storage key (with the tenant's root).
    pub key: String,
    /// The file name the client sent.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256, in hex, computed as it was spooled.
    pub sha256: String,
    /// The content type the client gave, if any.
    pub content_type: Option<String>,
    /// Where it is.
    pub state: FileState,
    /// Attempts made to store it.
    pub attempts: u32,
    /// Why it failed, or why the last attempt failed.
    pub error: Option<String>,
}

/// Where a [`JobFile`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// In the spool, waiting or being uploaded.
    Pending,
    /// In the store; gone from the spool.
    Stored,
    /// Refused for good by the store; gone from the spool.
    Failed,
}

/// Where a [`Job`] is, from its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// No attempt made yet.
    Queued,
    /// Some files are still pending, and work on it has begun.
    Uploading,
    /// Every file is stored.
    Done,
    /// Nothing is pending and some file failed.
    Failed,
}

impl Job {
    /// Where the job is.
    pub fn state(&self) -> JobState {
        let pending = self.files.iter().any(|f| f.state == FileState::Pending);
        let failed = self.files.iter().any(|f| f.state == FileState::Failed);
        let begun = self
            .files
            .iter()
            .any(|f| f.attempts > 0 || f.state != FileState::Pending);
        match (pending, failed, begun) {
            (false, false, _) => JobState::Done,
            (false, true, _) => JobState::Failed,
            (true, _, true) => JobState::Uploading,
            (true, _, false) => JobState::Queued,
        }
    }

    fn finished(&self) -> bool {
        matches!(self.state(), JobState::Done | JobState::Failed)
    }

    /// Whether the job ended before `cutoff`.
    fn ended_before(&self, cutoff: DateTime<Utc>) -> bool {
        self.finished() && self.ended.unwrap_or(self.created) < cutoff
    }

    fn pending_bytes(&self) -> u64 {
        (self.files.iter())
            .filter(|f| f.state == FileState::Pending)
            .map(|f| f.size)
            .sum()
    }
}

/// The spool: see the [module docs](self). Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    db: Database,
    max_bytes: u64,
    keep_jobs: Duration,
    /// File bytes in the spool (or reserved by batches being spooled) not
    /// yet stored.
    used: Mutex<Usage>,
    store: Store,
    /// Jobs with a task working on them.
    running: Mutex<HashSet<String>>,
    workers: Semaphore,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Serializes writes to the journal (redb has one writer at a time;
    /// this keeps the blocking threads from queueing on its lock).
    write: tokio::sync::Mutex<()>,
}

impl Spool {
    /// Opens (or creates) the spool, removes what no journal entry owns,
    /// and starts the workers on every unfinished job, uploading to
    /// `store`.
    ///
    /// # Errors
    ///
    /// [`SpoolError`] if the directory or the journal cannot be opened
    /// (another corral using the same spool holds the journal's lock).
    pub async fn open(config: SpoolConfig, store: Store) -> Result<Self, SpoolError> {
        let dir = config.dir.clone();
        let opened = tokio::task::spawn_blocking(move || open_dir(&dir))
            .await
            .expect("opening the spool does not panic")?;
        let (db, usage) = opened;
        let spool = Self {
            inner: Arc::new(Inner {
                dir: config.dir,
                db,
                max_bytes: config.max_bytes,
                keep_jobs: config.keep_jobs,
                used: Mutex::new(usage),
                store,
                running: Mutex::new(HashSet::new()),
                workers: Semaphore::new(config.workers.max(1)),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                write: tokio::sync::Mutex::new(()),
            }),
        };
        let runner = spool.clone();
        spool.inner.tasks.spawn(async move { runner.run().await });
        Ok(spool)
    }

    /// File bytes waiting in the spool now.
    pub fn used(&self) -> u64 {
        self.usage().total
    }

    fn usage(&self) -> std::sync::MutexGuard<'_, Usage> {
        (self.inner.used.lock()).expect("no panic while holding the lock")
    }

    /// Takes `bytes` of the budget for `tenant`, whose own budget is
    /// `tenant_max` if any.
    fn reserve(&self, tenant: &str, bytes: u64, tenant_max: Option<u64>) -> Result<(), SpoolError> {
        let max = self.inner.max_bytes;
        let mut usage = self.usage();
        let total = usage.total.saturating_add(bytes);
        if total > max {
            return Err(SpoolError::Full {
                used: usage.total,
                max,
            });
        }
        let mine = usage.by_tenant.get(tenant).copied().unwrap_or(0);
        if let Some(tenant_max) = tenant_max
            && mine.saturating_add(bytes) > tenant_max
        {
            return Err(SpoolError::TenantFull {
                tenant: tenant.to_owned(),
                used: mine,
                max: tenant_max,
            });
        }
        usage.total = total;
        usage.by_tenant.insert(tenant.to_owned(), mine + bytes);
        Ok(())
    }

    fn release(&self, tenant: &str, bytes: u64) {
        let mut usage = self.usage();
        debug_assert!(usage.total >= bytes, "released more than reserved");
        usage.total = usage.total.saturating_sub(bytes);
        if let Some(mine) = usage.by_tenant.get_mut(tenant) {
            *mine = mine.saturating_sub(bytes);
            if *mine == 0 {
                usage.by_tenant.remove(tenant);
            }
        }
    }

    /// Starts spooling a batch of `tenant`'s, whose own budget is
    /// `tenant_max` if any, taking `expected` bytes of the budgets at once
    /// (the request's `Content-Length`, or 0), so that
    /// batches sent together cannot each find room and then run out of it
    /// half-way. Nothing of the batch counts as a job until
    /// [`JobWriter::commit`]; dropped before, it is removed and its budget
    /// given back.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Full`] or [`SpoolError::TenantFull`] if `expected`
    /// bytes do not fit, [`SpoolError::Io`] if its directory cannot be
    /// made.
    pub async fn begin(
        &self,
        tenant: &str,
        tenant_max: Option<u64>,
        expected: u64,
    ) -> Result<JobWriter, SpoolError> {
        self.reserve(tenant, expected, tenant_max)?;
        let id = uuid::Uuid::now_v7().to_string();
        let dir = self.inner.dir.join(&id);
        if let Err(e) = tokio::fs::create_dir(&dir).await {
            self.release(tenant, expected);
            return Err(io(&dir)(e));
        }
        Ok(JobWriter {
            spool: self.clone(),
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

    /// The job `id`, as the journal has it now.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Journal`] if the journal cannot be read.
    pub async fn job(&self, id: &str) -> Result<Option<Job>, SpoolError> {
        let spool = self.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || spool.read_job(&id))
            .await
            .expect("reading the journal does not panic")
    }

    fn read_job(&self, id: &str) -> Result<Option<Job>, SpoolError> {
        let read = self.inner.db.begin_read().map_err(redb::Error::from)?;
        let table = read.open_table(JOBS).map_err(redb::Error::from)?;
        let value = table.get(id).map_err(redb::Error::from)?;
        value.map(|value| decode(id, value.value())).transpose()
    }

    /// Every job not finished.
    async fn unfinished(&self) -> Result<Vec<Job>, SpoolError> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || unfinished(&spool.inner.db))
            .await
            .expect("reading the journal does not panic")
    }

    async fn save(&self, job: &Job) -> Result<(), SpoolError> {
        let _one_writer = self.inner.write.lock().await;
        let spool = self.clone();
        let job = job.clone();
        tokio::task::spawn_blocking(move || save(&spool.inner.db, &job))
            .await
            .expect("writing the journal does not panic")
    }

    /// Stops the workers and waits for them. Uploads in progress are
    /// cancelled (their multipart uploads aborted); their jobs resume when
    /// the spool is opened again.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Every minute, starts a task on every unfinished job that has none
    /// (those found when the spool opened, and any whose task ended early)
    /// and forgets the jobs that ended more than `keep_jobs` ago.
    async fn run(self) {
        loop {
            match self.unfinished().await {
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
                () = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// Starts a task on job `id` unless one works on it already. The task
    /// reads the job afresh: a job read before another task finished it
    /// is not redone.
    fn start(&self, id: String) {
        let fresh = (self.inner.running.lock())
            .expect("no panic while holding the lock")
            .insert(id.clone());
        if !fresh {
            return;
        }
        let spool = self.clone();
        self.inner.tasks.spawn(async move {
            match spool.job(&id).await {
                Ok(Some(job)) if !job.finished() => spool.work(job).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(job = %id, error = %error_chain(&e), "reading a job failed")
                }
            }
            (spool.inner.running.lock())
                .expect("no panic while holding the lock")
                .remove(&id);
        });
    }

    /// Forgets the jobs that ended more than `keep_jobs` ago.
    async fn prune(&self) -> Result<(), SpoolError> {
        let Some(cutoff) = chrono::Duration::from_std(self.inner.keep_jobs)
            .ok()
            .and_then(|keep| Utc::now().checked_sub_signed(keep))
        else {
            return Ok(());
        };
        loop {
            let forgotten = {
                let _one_writer = self.inner.write.lock().await;
                let spool = self.clone();
                tokio::task::spawn_blocking(move || prune(&spool.inner.db, cutoff, PRUNE_BATCH))
                    .await
                    .expect("writing the journal does not panic")?
            };
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
                let dir = self.inner.dir.join(&job.id);
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
        if let Err(e) = self.save(job).await {
            // Files stored but not recorded are stored again when the job
            // resumes, which writes the same bytes to the same keys.
            tracing::error!(job = %job.id, error = %error_chain(&e), "recording stored files failed");
            return false;
        }
        for index in unrecorded.drain(..) {
            let file = &job.files[index];
            if file.state == FileState::Stored {
                let path = self.inner.dir.join(&job.id).join(index.to_string());
                if let Err(e) = tokio::fs::remove_file(&path).await {
                    tracing::warn!(path = %path.display(), error = %e, "removing a spool file failed");
                }
            }
            self.release(&job.tenant, file.size);
        }
        true
    }

    async fn remove_job_dir(&self, id: &str) {
        let dir = self.inner.dir.join(id);
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
        let stop = &self.inner.stop;
        loop {
            let attempt = async {
                let _worker = self.inner.workers.acquire().await.expect("never closed");
                let group = match self.inner.store.scheduler().group(&job.tenant) {
                    Ok(group) => group,
                    Err(
                        Refused::Overloaded { retry_after } | Refused::Unavailable { retry_after },
                    ) => {
                        return Err(Retry::After(retry_after));
                    }
                    Err(_) => return Err(Retry::Stop),
                };
                let key = Key::parse(&file.key).map_err(|e| Retry::Never(e.to_string()))?;
                let store = &self.inner.store;
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
                let path = self.inner.dir.join(&job.id).join(index.to_string());
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
        let store = &self.inner.store;
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

/// File bytes waiting in the spool, in all and by tenant.
#[derive(Debug, Default)]
struct Usage {
    total: u64,
    by_tenant: std::collections::HashMap<String, u64>,
}

/// A batch being spooled: see [`Spool::begin`].
#[derive(Debug)]
pub struct JobWriter {
    spool: Spool,
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
        let path = self.dir.join(self.job.files.len().to_string());
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
        let dirs = [self.dir.clone(), self.spool.inner.dir.clone()];
        tokio::task::spawn_blocking(move || {
            dirs.iter().try_for_each(|dir| {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(dir))
            })
        })
        .await
        .expect("syncing a directory does not panic")?;
        self.spool.save(&self.job).await?;
        self.committed = true;
        // The job holds its files' bytes of the budget from now on.
        (self.spool).release(&self.job.tenant, self.reserved - self.written);
        self.spool.start(self.job.id.clone());
        Ok(self.job.clone())
    }
}

impl Drop for JobWriter {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        self.spool.release(&self.job.tenant, self.reserved);
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
            (writer.spool).reserve(&writer.job.tenant, more, writer.tenant_max)?;
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

/// Opens the journal in `dir`, removes the job directories the journal
/// does not know (batches never acknowledged) and those of jobs done (the
/// process died before it removed them), and returns the bytes the
/// unfinished jobs still hold. Failed jobs keep theirs until forgotten.
///
/// Only entries named as job ids are ever removed: a spool directory set
/// by mistake to one that holds other files loses none of them.
fn open_dir(dir: &Path) -> Result<(Database, Usage), SpoolError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let journal = dir.join(JOURNAL);
    let db = Database::create(&journal).map_err(redb::Error::from)?;
    // Make the tables, so that readers always find them.
    let write = db.begin_write().map_err(redb::Error::from)?;
    write.open_table(JOBS).map_err(redb::Error::from)?;
    write.open_table(PENDING).map_err(redb::Error::from)?;
    write.commit().map_err(redb::Error::from)?;

    let read = db.begin_read().map_err(redb::Error::from)?;
    let known = read.open_table(JOBS).map_err(redb::Error::from)?;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // This journal, and the instance's other journals kept beside it
        // (the batches', see `crate::batch`).
        if name.ends_with(".redb") {
            continue;
        }
        let path = entry.path();
        if uuid::Uuid::try_parse(&name).is_err() || !path.is_dir() {
            tracing::warn!(path = %path.display(), "not corral's: left alone in the spool directory");
            continue;
        }
        let job = known.get(&*name).map_err(redb::Error::from)?;
        let why = match job.map(|value| decode(&name, value.value())) {
            None => "removed a batch that was never acknowledged",
            Some(Ok(job)) if job.state() == JobState::Done => "removed the spool of a job done",
            Some(_) => continue,
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "{why}"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale spool entry")
            }
        }
    }
    drop(known);
    drop(read);
    let jobs = unfinished(&db)?;
    let mut usage = Usage::default();
    for job in &jobs {
        let bytes = job.pending_bytes();
        usage.total += bytes;
        *usage.by_tenant.entry(job.tenant.clone()).or_default() += bytes;
    }
    if !jobs.is_empty() {
        tracing::info!(
            jobs = jobs.len(),
            bytes = usage.total,
            "resuming asynchronous uploads"
        );
    }
    Ok((db, usage))
}

fn unfinished(db: &Database) -> Result<Vec<Job>, SpoolError> {
    let read = db.begin_read().map_err(redb::Error::from)?;
    let pending = read.open_table(PENDING).map_err(redb::Error::from)?;
    let jobs = read.open_table(JOBS).map_err(redb::Error::from)?;
    let mut unfinished = Vec::new();
    for entry in pending.iter().map_err(redb::Error::from)? {
        let (id, _) = entry.map_err(redb::Error::from)?;
        let id = id.value();
        let Some(value) = jobs.get(id).map_err(redb::Error::from)? else {
            tracing::error!(job = id, "a pending job is missing from the journal");
            continue;
        };
        match decode(id, value.value()) {
            Ok(job) => unfinished.push(job),
            Err(e) => tracing::error!(error = %e, "skipping an unreadable job"),
        }
    }
    Ok(unfinished)
}

fn save(db: &Database, job: &Job) -> Result<(), SpoolError> {
    let json = serde_json::to_vec(job).expect("a job always serializes");
    let write = db.begin_write().map_err(redb::Error::from)?;
    {
        let mut jobs = write.open_table(JOBS).map_err(redb::Error::from)?;
        jobs.insert(job.id.as_str(), json.as_slice())
            .map_err(redb::Error::from)?;
        let mut pending = write.open_table(PENDING).map_err(redb::Error::from)?;
        if job.finished() {
            pending.remove(job.id.as_str()).map_err(redb::Error::from)?;
        } else {
            pending
                .insert(job.id.as_str(), ())
                .map_err(redb::Error::from)?;
        }
    }
    write.commit().map_err(redb::Error::from)?;
    Ok(())
}

/// Removes at most `batch` jobs that ended before `cutoff`; their ids.
///
/// Jobs are in the order they were created, and none can have ended before
/// it was created, so the walk stops at the first job created after
/// `cutoff`.
fn prune(db: &Database, cutoff: DateTime<Utc>, batch: usize) -> Result<Vec<String>, SpoolError> {
    let write = db.begin_write().map_err(redb::Error::from)?;
    let mut old = Vec::new();
    {
        let mut jobs = write.open_table(JOBS).map_err(redb::Error::from)?;
        for entry in jobs.iter().map_err(redb::Error::from)? {
            let (id, value) = entry.map_err(redb::Error::from)?;
            let Ok(job) = decode(id.value(), value.value()) else {
                continue;
            };
            if job.created >= cutoff || old.len() == batch {
                break;
            }
            if job.ended_before(cutoff) {
                old.push(job.id);
            }
        }
        for id in &old {
            jobs.remove(id.as_str()).map_err(redb::Error::from)?;
        }
    }
    if old.is_empty() {
        write.abort().map_err(redb::Error::from)?;
    } else {
        write.commit().map_err(redb::Error::from)?;
    }
    Ok(old)
}

fn decode(id: &str, bytes: &[u8]) -> Result<Job, SpoolError> {
    serde_json::from_slice(bytes).map_err(|e| SpoolError::Unreadable {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    fn file(state: FileState, attempts: u32) -> JobFile {
        JobFile {
            key: "t/k".into(),
            name: "k".into(),
            size: 1,
            sha256: String::new(),
            content_type: None,
            state,
            attempts,
            error: None,
        }
    }

    #[test]
    fn a_job_is_where_its_files_are() {
        use FileState::{Failed, Pending, Stored};
        let job = |files| Job {
            id: "j".into(),
            tenant: "t".into(),
            created: Utc::now(),
            ended: None,
            files,
        };
        let cases = [
            (vec![file(Pending, 0), file(Pending, 0)], JobState::Queued),
            (
                vec![file(Pending, 1), file(Pending, 0)],
                JobState::Uploading,
            ),
            (vec![file(Stored, 1), file(Pending, 0)], JobState::Uploading),
            (vec![file(Failed, 1), file(Pending, 0)], JobState::Uploading),
            (vec![file(Stored, 1), file(Stored, 2)], JobState::Done),
            (vec![file(Stored, 1), file(Failed, 1)], JobState::Failed),
        ];
        for (files, state) in cases {
            let job = job(files);
            assert_eq!(job.state(), state, "{job:?}");
        }
    }

    #[test]
    fn the_journal_indexes_unfinished_jobs_and_forgets_those_ended_long_ago() {
        use FileState::{Failed, Pending, Stored};
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = open_dir(dir.path()).unwrap();
        let now = Utc::now();
        let days = |n| now - chrono::Duration::days(n);
        // Ids in the order of creation, as UUIDv7s are.
        let job = |id: &str, created, ended, state| Job {
            id: id.into(),
            tenant: "t".into(),
            created,
            ended,
            files: vec![file(state, 1)],
        };
        let jobs = [
            job("a", days(30), Some(days(29)), Stored),
            job("b", days(20), None, Pending),
            job("c", days(10), Some(days(9)), Failed),
            job("d", days(9), Some(days(1)), Stored),
            job("e", days(1), Some(days(1)), Stored),
            job("f", days(1), None, Pending),
        ];
        for job in &jobs {
            save(&db, job).unwrap();
        }
        let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(ids(unfinished(&db).unwrap()), ["b", "f"]);

        // Kept a week after they ended: "a" and "c" go, one at a time.
        let cutoff = days(7);
        assert_eq!(prune(&db, cutoff, 1).unwrap(), ["a"]);
        assert_eq!(prune(&db, cutoff, 10).unwrap(), ["c"]);
        assert!(prune(&db, cutoff, 10).unwrap().is_empty());
        let read = db.begin_read().unwrap();
        let table = read.open_table(JOBS).unwrap();
        let left: Vec<String> = (table.iter().unwrap())
            .map(|entry| entry.unwrap().0.value().to_owned())
            .collect();
        assert_eq!(left, ["b", "d", "e", "f"]);

        // A job that finishes leaves the index.
        let mut b = jobs[1].clone();
        b.files[0].state = Stored;
        b.ended = Some(now);
        save(&db, &b).unwrap();
        assert_eq!(ids(unfinished(&db).unwrap()), ["f"]);
    }

    #[test]
    fn opening_keeps_the_spool_of_unfinished_and_failed_jobs_only() {
        use FileState::{Failed, Pending, Stored};
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = open_dir(dir.path()).unwrap();
        let mut dirs = Vec::new();
        for state in [Pending, Stored, Failed] {
            let id = uuid::Uuid::now_v7().to_string();
            let job_dir = dir.path().join(&id);
            std::fs::create_dir(&job_dir).unwrap();
            std::fs::write(job_dir.join("0"), b"x").unwrap();
            let job = Job {
                id,
                tenant: "t".into(),
                created: Utc::now(),
                ended: None,
                files: vec![file(state, 1)],
            };
            save(&db, &job).unwrap();
            dirs.push(job_dir);
        }
        drop(db);
        let (_db, usage) = open_dir(dir.path()).unwrap();
        assert_eq!(usage.total, 1, "the pending file's byte");
        assert_eq!(usage.by_tenant["t"], 1);
        let kept: Vec<bool> = dirs.iter().map(|d| d.join("0").exists()).collect();
        assert_eq!(kept, [true, false, true], "pending, done, failed");
    }

    async fn spool(dir: &Path, max_bytes: u64) -> (Spool, Store) {
        let store = Store::open(
            "memory://",
            StoreConfig::default(),
            corral_sched::Scheduler::new(corral_sched::SchedConfig::default()),
        )
        .await
        .unwrap();
        let config = SpoolConfig {
            dir: dir.to_owned(),
            max_bytes,
            workers: 1,
            keep_jobs: Duration::from_secs(3600),
        };
        (Spool::open(config, store.clone()).await.unwrap(), store)
    }

    #[tokio::test]
    async fn a_committed_batch_is_stored_and_leaves_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, store) = spool(dir.path(), 1 << 20).await;
        // The request's Content-Length, taken from the budget at once.
        let mut writer = spool.begin("t", None, 100).await.unwrap();
        assert_eq!(spool.used(), 100);
        let key = Key::parse("t/a.txt").unwrap();
        let mut file = writer.file(&key, "a.txt", None).await.unwrap();
        file.write(b"hello ").await.unwrap();
        file.write(b"world").await.unwrap();
        let (size, sha256) = file.finish().await.unwrap();
        assert_eq!(size, 11);
        let job = writer.commit().await.unwrap();
        // What the batch did not use is given back; its files hold theirs
        // until stored.
        assert!(spool.used() <= 11, "{}", spool.used());
        let mut stored = None;
        for _ in 0..200 {
            stored = spool.job(&job.id).await.unwrap().filter(Job::finished);
            if stored.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stored = stored.expect("stored within 2 s");
        assert_eq!(stored.state(), JobState::Done);
        assert_eq!(stored.files[0].sha256, sha256);
        let group = store.scheduler().system_group();
        let info = store.head(&group, &key).await.unwrap();
        assert_eq!(
            (info.size, info.sha256.as_deref()),
            (11, Some(sha256.as_str()))
        );
        assert_eq!(spool.used(), 0);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "only the journal: {left:?}");
        spool.close().await;
    }

    #[tokio::test]
    async fn a_tenant_stays_within_its_own_budget_and_leaves_room_for_others() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _store) = spool(dir.path(), 100).await;
        let a = spool.begin("a", Some(10), 8).await.unwrap();
        let refused = spool.begin("a", Some(10), 5).await.unwrap_err();
        assert!(
            matches!(&refused, SpoolError::TenantFull { tenant, used: 8, max: 10 } if tenant == "a"),
            "{refused:?}"
        );
        // Another tenant is not held back by a's budget.
        let b = spool.begin("b", Some(10), 8).await.unwrap();
        assert_eq!(spool.used(), 16);
        // The spool's own budget still holds for everyone.
        let refused = spool.begin("c", None, 85).await.unwrap_err();
        assert!(
            matches!(refused, SpoolError::Full { used: 16, max: 100 }),
            "{refused:?}"
        );
        drop((a, b));
        assert_eq!(spool.used(), 0);
        assert!(spool.usage().by_tenant.is_empty());
        spool.close().await;
    }

    #[tokio::test]
    async fn the_budget_holds_and_what_was_never_acknowledged_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _store) = spool(dir.path(), 10).await;
        let refused = spool.begin("t", None, 11).await.unwrap_err();
        assert!(
            matches!(refused, SpoolError::Full { used: 0, max: 10 }),
            "{refused:?}"
        );
        assert_eq!(spool.used(), 0);
        let key = Key::parse("t/a").unwrap();
        let mut writer = spool.begin("t", None, 4).await.unwrap();
        let mut file = writer.file(&key, "a", None).await.unwrap();
        file.write(b"12345678").await.unwrap();
        let full = file.write(b"123").await.unwrap_err();
        assert!(
            matches!(full, SpoolError::Full { used: 8, max: 10 }),
            "{full:?}"
        );
        // Dropped before its commit: removed, its budget given back.
        drop(writer);
        assert_eq!(spool.used(), 0);
        spool.close().await;
        drop(spool);
        // What a batch half-spooled when the process died leaves: a
        // directory no journal entry owns. The next opening removes it.
        let crashed_dir = dir.path().join(uuid::Uuid::now_v7().to_string());
        std::fs::create_dir(&crashed_dir).unwrap();
        std::fs::write(crashed_dir.join("0"), b"1234").unwrap();
        assert!(crashed_dir.exists());
        // What is not corral's stays (a spool directory set by mistake to
        // one that holds other files).
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        std::fs::create_dir(dir.path().join("photos")).unwrap();
        let (reopened, _store) = self::spool(dir.path(), 10).await;
        assert!(!crashed_dir.exists());
        assert!(dir.path().join("notes.txt").exists());
        assert!(dir.path().join("photos").exists());
        assert_eq!(reopened.used(), 0);
        reopened.close().await;
    }
}
