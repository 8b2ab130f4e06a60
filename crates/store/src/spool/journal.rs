//! The journal: a [redb](https://docs.rs/redb) file in the spool
//! directory that keeps every [`Job`] and indexes the unfinished ones. It
//! knows tables and records, not spool files, budgets or workers; its
//! writes go one at a time through [`Journal`], which runs redb's blocking
//! calls off the async threads.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::error::SpoolError;
use super::job::Job;

/// The journal's jobs: job id to the job, as JSON. Ids are UUIDv7, so the
/// table is in the order the jobs were created.
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

/// The ids of the jobs not finished.
const PENDING: TableDefinition<&str, ()> = TableDefinition::new("pending");

/// The journal's file name in the spool directory.
const JOURNAL: &str = "journal.redb";

/// Jobs forgotten at most in one journal transaction.
pub(super) const PRUNE_BATCH: usize = 10_000;

/// The spool's journal.
#[derive(Debug)]
pub(super) struct Journal {
    db: Arc<Database>,
    /// Serializes writes to the journal (redb has one writer at a time;
    /// this keeps the blocking threads from queueing on its lock).
    write: tokio::sync::Mutex<()>,
}

impl Journal {
    /// Opens (or creates) the journal in the spool directory `dir`, which
    /// exists. Blocking.
    pub(super) fn open(dir: &Path) -> Result<Self, SpoolError> {
        let path = dir.join(JOURNAL);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => SpoolError::InUse { path },
            e => redb::Error::from(e).into(),
        })?;
        // Make the tables, so that readers always find them.
        let write = db.begin_write().map_err(redb::Error::from)?;
        write.open_table(JOBS).map_err(redb::Error::from)?;
        write.open_table(PENDING).map_err(redb::Error::from)?;
        write.commit().map_err(redb::Error::from)?;
        Ok(Self {
            db: Arc::new(db),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// The job `id`, as the journal has it now.
    pub(super) async fn job(&self, id: &str) -> Result<Option<Job>, SpoolError> {
        let id = id.to_owned();
        self.off_thread(move |db| read_job(db, &id)).await
    }

    /// [`Journal::job`], blocking.
    pub(super) fn blocking_job(&self, id: &str) -> Result<Option<Job>, SpoolError> {
        read_job(&self.db, id)
    }

    /// Every job not finished.
    pub(super) async fn unfinished(&self) -> Result<Vec<Job>, SpoolError> {
        self.off_thread(unfinished).await
    }

    /// [`Journal::unfinished`], blocking.
    pub(super) fn blocking_unfinished(&self) -> Result<Vec<Job>, SpoolError> {
        unfinished(&self.db)
    }

    /// Writes `job`, and adds it to the unfinished or removes it.
    pub(super) async fn save(&self, job: &Job) -> Result<(), SpoolError> {
        let _one_writer = self.write.lock().await;
        let job = job.clone();
        self.off_thread(move |db| save(db, &job)).await
    }

    /// Forgets at most [`PRUNE_BATCH`] jobs that ended before `cutoff`;
    /// their ids.
    pub(super) async fn prune(&self, cutoff: DateTime<Utc>) -> Result<Vec<String>, SpoolError> {
        let _one_writer = self.write.lock().await;
        self.off_thread(move |db| prune(db, cutoff, PRUNE_BATCH))
            .await
    }

    /// Runs `f`, which blocks, on a blocking thread.
    async fn off_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> T + Send + 'static,
    ) -> T {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .expect("the journal does not panic")
    }
}

fn read_job(db: &Database, id: &str) -> Result<Option<Job>, SpoolError> {
    let read = db.begin_read().map_err(redb::Error::from)?;
    let table = read.open_table(JOBS).map_err(redb::Error::from)?;
    let value = table.get(id).map_err(redb::Error::from)?;
    value.map(|value| decode(id, value.value())).transpose()
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
    use crate::spool::job::{FileState, JobFile};

    #[test]
    fn the_journal_indexes_unfinished_jobs_and_forgets_those_ended_long_ago() {
        use FileState::{Failed, Pending, Stored};
        let dir = tempfile::tempdir().unwrap();
        let db = Journal::open(dir.path()).unwrap().db;
        let now = Utc::now();
        let days = |n| now - chrono::Duration::days(n);
        // Ids in the order of creation, as UUIDv7s are.
        let job = |id: &str, created, ended, state| Job {
            id: id.into(),
            tenant: "t".into(),
            created,
            ended,
            files: vec![JobFile::fake(state, 1)],
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
}
