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
//! (the store rejects the object, see
//! [`Error::rejects_object`](crate::Error::rejects_object)). Stored
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

// The parts, from the bottom up: each uses only those listed before it.
mod config;
mod error;
mod job;

mod budget;
mod journal;

mod shared;

mod workers;

mod writer;

use std::path::Path;
use std::sync::Arc;

pub use config::SpoolConfig;
pub use error::SpoolError;
pub use job::{FileState, Job, JobFile, JobState};
pub use writer::{FileWriter, JobWriter};

use budget::Usage;
use error::io;
use journal::Journal;
use shared::Shared;

use crate::store::Store;

/// The spool: see the [module docs](self). Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Spool {
    shared: Arc<Shared>,
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
        let (journal, usage) = opened;
        let spool = Self {
            shared: Arc::new(Shared::new(config, journal, usage, store)),
        };
        let runner = Arc::clone(&spool.shared);
        spool.shared.tasks.spawn(runner.run());
        Ok(spool)
    }

    /// File bytes waiting in the spool now.
    pub fn used(&self) -> u64 {
        self.shared.budget.used()
    }

    /// The most file bytes the spool may hold ([`SpoolConfig::max_bytes`]).
    pub fn max_bytes(&self) -> u64 {
        self.shared.budget.max_bytes()
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
        JobWriter::begin(Arc::clone(&self.shared), tenant, tenant_max, expected).await
    }

    /// The job `id`, as the journal has it now.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Journal`] if the journal cannot be read.
    pub async fn job(&self, id: &str) -> Result<Option<Job>, SpoolError> {
        self.shared.journal.job(id).await
    }

    /// Stops the workers and waits for them. Uploads in progress are
    /// cancelled (their multipart uploads aborted); their jobs resume when
    /// the spool is opened again.
    pub async fn close(&self) {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

/// Opens the journal in `dir`, removes the job directories the journal
/// does not know (batches never acknowledged) and those of jobs done (the
/// process died before it removed them), and returns the bytes the
/// unfinished jobs still hold. Failed jobs keep theirs until forgotten.
///
/// Only entries named as job ids are ever removed: a spool directory set
/// by mistake to one that holds other files loses none of them.
fn open_dir(dir: &Path) -> Result<(Journal, Usage), SpoolError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let journal = Journal::open(dir)?;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // This journal, the instance's other journals kept beside it
        // (the batches', see `crate::batch`), and its id (see
        // `StoreConfig::instance_file`).
        if name.ends_with(".redb") || name.starts_with("instance.") {
            continue;
        }
        let path = entry.path();
        if uuid::Uuid::try_parse(&name).is_err() || !path.is_dir() {
            tracing::warn!(path = %path.display(), "not corral's: left alone in the spool directory");
            continue;
        }
        let why = match journal.blocking_job(&name) {
            Ok(None) => "removed a batch that was never acknowledged",
            Ok(Some(job)) if job.state() == JobState::Done => "removed the spool of a job done",
            Ok(Some(_)) | Err(SpoolError::Unreadable { .. }) => continue,
            Err(e) => return Err(e),
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "{why}"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale spool entry")
            }
        }
    }
    let jobs = journal.blocking_unfinished()?;
    let usage = Usage::of(&jobs);
    if !jobs.is_empty() {
        tracing::info!(
            jobs = jobs.len(),
            bytes = usage.total,
            "resuming asynchronous uploads"
        );
    }
    Ok((journal, usage))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::StoreConfig;
    use crate::key::Key;

    #[tokio::test]
    async fn opening_keeps_the_spool_of_unfinished_and_failed_jobs_only() {
        use FileState::{Failed, Pending, Stored};
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open_dir(dir.path()).unwrap();
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
                files: vec![JobFile::fake(state, 1)],
            };
            journal.save(&job).await.unwrap();
            dirs.push(job_dir);
        }
        drop(journal);
        let (_journal, usage) = open_dir(dir.path()).unwrap();
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
        assert!(spool.shared.budget.usage().by_tenant.is_empty());
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
