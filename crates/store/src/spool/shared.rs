//! What a [`Spool`](super::Spool), its workers and its batches being
//! written share: the directory, the journal, the budget, the store and the
//! workers' bookkeeping. It sits below all of them (rather than inside the
//! `Spool` they would all reach back into), so that a batch can hand its
//! job to the workers and the workers can give bytes back to the budget
//! without any part importing the one above it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::budget::{Budget, Usage};
use super::config::SpoolConfig;
use super::journal::Journal;
use crate::store::Store;

/// The spool's state, behind one `Arc` held by the [`Spool`](super::Spool)
/// and its clones, each batch being written and each worker task.
#[derive(Debug)]
pub(super) struct Shared {
    /// The spool directory: the journal, and `{job-id}/{n}`, the n-th file
    /// of a job until it is stored.
    pub(super) dir: PathBuf,
    pub(super) journal: Journal,
    pub(super) budget: Budget,
    pub(super) keep_jobs: Duration,
    pub(super) store: Store,
    /// Jobs with a task working on them: a worker task adds its job and
    /// removes it when it ends.
    pub(super) running: Mutex<HashSet<String>>,
    /// A permit per file being uploaded, held for one attempt.
    pub(super) workers: Semaphore,
    /// Cancelled by [`Spool::close`](super::Spool::close): the workers stop.
    pub(super) stop: CancellationToken,
    /// The worker tasks and the runner, waited for on closing.
    pub(super) tasks: TaskTracker,
}

impl Shared {
    /// The state of a spool configured by `config` whose journal is open
    /// and of whose budget `usage` is taken; no task started.
    pub(super) fn new(config: SpoolConfig, journal: Journal, usage: Usage, store: Store) -> Self {
        Self {
            dir: config.dir,
            journal,
            budget: Budget::new(config.max_bytes, usage),
            keep_jobs: config.keep_jobs,
            store,
            running: Mutex::new(HashSet::new()),
            workers: Semaphore::new(config.workers.max(1)),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// The directory of job `id`'s files.
    pub(super) fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// File `index` of job `id`.
    pub(super) fn file_path(&self, id: &str, index: usize) -> PathBuf {
        self.job_dir(id).join(index.to_string())
    }
}
