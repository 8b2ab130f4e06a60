//! The records the journal keeps: a [`Job`] (one asynchronous batch), its
//! [`JobFile`]s, and the states derived from them. They are what the
//! spool's API answers with and what every other part of the spool reads
//! and updates, so they depend on nothing of it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

    pub(super) fn finished(&self) -> bool {
        matches!(self.state(), JobState::Done | JobState::Failed)
    }

    /// Whether the job ended before `cutoff`.
    pub(super) fn ended_before(&self, cutoff: DateTime<Utc>) -> bool {
        self.finished() && self.ended.unwrap_or(self.created) < cutoff
    }

    pub(super) fn pending_bytes(&self) -> u64 {
        (self.files.iter())
            .filter(|f| f.state == FileState::Pending)
            .map(|f| f.size)
            .sum()
    }
}

#[cfg(test)]
impl JobFile {
    /// A one-byte file `t/k` in `state` after `attempts`.
    pub(super) fn fake(state: FileState, attempts: u32) -> Self {
        Self {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_where_its_files_are() {
        use FileState::{Failed, Pending, Stored};
        let file = JobFile::fake;
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
}
