//! [`SpoolConfig`]: where the spool lives and what it may hold. Plain data
//! with public fields, read once when the spool opens; at the bottom so
//! that the parts it sizes (the budget, the workers) need nothing above
//! them to know their limits.

use std::path::PathBuf;
use std::time::Duration;

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
